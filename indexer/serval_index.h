/* serval_index.h — the repository indexer: crawl a repository, chunk its source, embed the
 * chunks, store them (SQLite + FTS5, vectors in FAISS) and answer hybrid searches. */
#ifndef SERVAL_INDEX_H
#define SERVAL_INDEX_H

/*
 * One index = one data directory holding index.db (SQLite: repositories, files, chunks with
 * their vectors, an FTS5 table) and vectors-<generation>.faiss (the vector index, rebuilt from
 * the vectors SQLite stores whenever it is missing or does not match). SQLite is the truth:
 * every file's chunks and vectors are written in one transaction, so a process killed at any
 * moment leaves an index that opens and answers, and the next run finishes the work.
 *
 * Usage:
 *   idx_embedder emb = {my_embed, my_state, 384, "all-MiniLM-L6-v2"};
 *   idx_index *ix;
 *   if (idx_open("/var/lib/serval/index", &emb, &ix, &err) != ENG_OK) ...;
 *   idx_stats st;
 *   idx_index_repo(ix, "/src/app", "https://github.com/org/app", NULL, NULL, &st, &err);
 *   idx_query q = {.text = "parse the config file", .top_k = 5};
 *   idx_hit *hits; size_t n;
 *   idx_search(ix, &q, &hits, &n, &err);  ...  idx_hits_free(hits, n);
 *   idx_close(ix);
 *
 * Incremental: a file whose content hash is already stored (unchanged, renamed, or a copy)
 * reuses its chunks and vectors; only new contents are chunked and embedded. Files gone from
 * the repository disappear at the end of the run.
 *
 * Thread-safety: idx_search, idx_has_repo and idx_stats_get may run from any thread at once,
 * also while one idx_index_repo runs (searches see the last committed state; the vector index
 * is swapped in when a run ends). Runs of idx_index_repo on one index are serialised.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct idx_index idx_index;

/* The embedding model, as a function: rows of out (n x dim floats, caller-owned) receive the
 * L2-normalised vectors of texts[i] (lens[i] bytes). Called from the indexing thread and from
 * searching threads at once: it must be thread-safe. */
typedef eng_status (*idx_embed_fn)(void *user, const char *const *texts, const size_t *lens,
                                   size_t n, float *out, eng_err *err);

typedef struct idx_embedder {
    idx_embed_fn embed;
    void *user;          /* borrowed: outlives the index */
    int32_t dim;         /* vector length, > 0 */
    const char *model;   /* the model's name, stored with the vectors: an index built with
                          * another model (or dim) is re-embedded, never mixed */
} idx_embedder;

/* The engine's embedding model (engine/serval_embed.h) as an idx_embedder; e is borrowed and
 * must outlive every index that uses it. */
typedef struct eng_embedder eng_embedder;
idx_embedder idx_embedder_from_engine(eng_embedder *e);

/* Opens (creating when absent) the index in directory dir (created too). *out is owned by
 * the caller: free with idx_close. Errors: ENG_ERR_IO (cannot create or open), ENG_ERR_FORMAT
 * (index.db is not an index), ENG_ERR_INVALID (bad embedder). The embedder is copied; its
 * `user` is borrowed. */
eng_status idx_open(const char *dir, const idx_embedder *emb, idx_index **out, eng_err *err);
void idx_close(idx_index *ix);

/* ---- indexing --------------------------------------------------------------------------- */

/* What a run saw and did. */
typedef struct idx_stats {
    int64_t files_seen;        /* candidate files in the repository */
    int64_t files_indexed;     /* files kept in the index */
    int64_t files_embedded;    /* files whose content was new: chunked and embedded */
    int64_t files_deleted;     /* files gone since the last run */
    int64_t skipped_binary, skipped_generated, skipped_vendored, skipped_huge;
    int64_t chunks_total;      /* the repository's chunks after the run */
    int64_t chunks_embedded;   /* chunks embedded in this run */
    double seconds;
    char commit[48];           /* HEAD's hex id for a git repository, "" otherwise */
    bool git;                  /* files came from git's index (tracked files) */
} idx_stats;

/* Progress during a run (called from the indexing thread, at most a few times a second and
 * once at the end with done set). */
typedef struct idx_progress {
    int64_t files_done, files_total;
    int64_t chunks_done;        /* chunks stored so far (new and reused) */
    int64_t embeddings_done;    /* chunks embedded so far in this run */
    double seconds;
    bool done;
} idx_progress;
typedef void (*idx_progress_fn)(void *user, const idx_progress *p);

/* Indexes the repository at path (a git work tree: its tracked files, HEAD recorded; any other
 * folder: an ignore-aware walk honouring .gitignore files) under git_url (NULL: the absolute
 * path). Skips binary, generated, vendored and huge (> 1 MiB) files. Re-running after an edit
 * re-embeds only changed contents. stop (may be NULL) is polled: when it becomes true the run
 * ends early with ENG_ERR_CANCELLED, leaving a consistent index. */
eng_status idx_index_repo(idx_index *ix, const char *path, const char *git_url,
                          idx_progress_fn progress, void *progress_user,
                          const volatile bool *stop, idx_stats *st, eng_err *err);

/* ---- retrieval -------------------------------------------------------------------------- */

typedef enum idx_mode {
    IDX_MODE_HYBRID = 0, /* BM25 and vector ranks fused by reciprocal rank (k = 60); a code
                          * query's called names' definitions first (indexer/README.md) */
    IDX_MODE_BM25,
    IDX_MODE_VECTOR
} idx_mode;

#define IDX_MAX_QUERY_BYTES ((size_t)64 << 10) /* longer queries are refused */

typedef struct idx_query {
    const char *text;          /* natural language or code (required) */
    size_t len;                /* 0: strlen(text) */
    size_t top_k;              /* 0: 10; at most 100 */
    const char *git_url;       /* restrict to this repository; NULL or "": all */
    idx_mode mode;
    /* The current file: its chunks that overlap what the request already shows are left out:
     * those within lines [exclude_start, exclude_end] (1-based, when exclude_end > 0), or, when
     * exclude_text is set, those sharing a line (8+ characters) with that text. */
    const char *exclude_path;
    int32_t exclude_start, exclude_end;
    const char *exclude_text;
    float min_similarity;      /* drop hits whose cosine similarity to the query is lower
                                * (0: keep all), except (hybrid) a definition of a name called
                                * on a code query's last line */
} idx_query;

/* One hit. Strings are owned by the hit array (idx_hits_free). */
typedef struct idx_hit {
    char *git_url;
    char *filepath;            /* relative to the repository root */
    char *body;
    int32_t start_line, end_line; /* 1-based, inclusive */
    float score;               /* fused RRF score (or the single list's score) */
    float similarity;          /* cosine similarity of query and chunk */
    int32_t bm25_rank, vector_rank; /* 1-based ranks in each list; 0: absent from it */
} idx_hit;

/* Searches; *hits (caller-owned, free with idx_hits_free) holds *n <= top_k hits, best first.
 * An empty index or no match gives *n = 0 and ENG_OK. ENG_ERR_INVALID (the message says which)
 * for an empty query, one over IDX_MAX_QUERY_BYTES, or top_k over 100: both front ends answer
 * with it. */
eng_status idx_search(idx_index *ix, const idx_query *q, idx_hit **hits, size_t *n,
                      eng_err *err);
void idx_hits_free(idx_hit *hits, size_t n);

/* Whether git_url names a repository with indexed files. */
bool idx_has_repo(idx_index *ix, const char *git_url);

/* ---- retrieval for completion requests (the rule both front ends call) ---------------- */

#define IDX_RETRIEVE_QUERY_LINES 10       /* the query: the prefix's last lines */
#define IDX_RETRIEVE_TOP_K 5              /* hits considered */
#define IDX_RETRIEVE_MIN_SIMILARITY 0.35f /* below this cosine a hit is not relevant (measured:
                                           * bench/RESULTS.md, "Indexer") */

typedef struct idx_retrieve_input {
    const char *git_url;          /* segments.git_url: nothing is retrieved unless indexed */
    const char *filepath;         /* the current file (its overlapping chunks are left out) */
    const char *prefix, *suffix;  /* suffix may be NULL */
    size_t prefix_len, suffix_len;
    const char *const *client_bodies; /* the client's own snippets: not repeated, and their
                                       * length counts against the budget */
    size_t n_client;
    size_t budget;                /* snippet characters the prompt takes */
    float min_similarity;         /* 0: IDX_RETRIEVE_MIN_SIMILARITY */
} idx_retrieve_input;

/* Snippets for a completion request: best first, none below the similarity floor, none
 * repeating a client snippet, all together within the budget left by the client's snippets.
 * ix NULL, an unindexed git_url or nothing relevant: *n = 0 and ENG_OK. Free with
 * idx_hits_free. */
eng_status idx_retrieve(idx_index *ix, const idx_retrieve_input *in, idx_hit **hits, size_t *n,
                        eng_err *err);

/* ---- indexing in the background of a server -------------------------------------------- */

typedef struct idx_repo_spec {
    const char *path;             /* the repository's folder */
    const char *git_url;          /* NULL: its absolute path */
} idx_repo_spec;

typedef struct idx_service idx_service;
typedef void (*idx_log_fn)(void *user, const char *line);

/* Starts a thread that indexes repos (copied) into ix at once and then every interval_s
 * seconds; ix is borrowed and must outlive the service. log (may be NULL: stderr) gets one line
 * per run that changed something, and errors. *out: free with idx_service_stop. */
eng_status idx_service_start(idx_index *ix, const idx_repo_spec *repos, size_t n,
                             int interval_s, idx_log_fn log, void *log_user, idx_service **out,
                             eng_err *err);
/* Waits until the first round over every repository has finished (true) or timeout_ms. */
bool idx_service_wait_first(idx_service *s, int timeout_ms);
/* Stops a run in progress at its next file (what is committed stays), joins the thread, frees
 * the service. NULL does nothing. */
void idx_service_stop(idx_service *s);

/* Totals over the whole index. */
typedef struct idx_totals {
    int64_t repos, files, chunks, vectors_in_faiss;
    bool approximate;          /* the vector index is approximate (IVF), not exact */
} idx_totals;
void idx_totals_get(idx_index *ix, idx_totals *t);

/* One indexed repository, as the index last recorded it. */
typedef struct idx_repo_info {
    char git_url[256];  /* its name in search results (clipped to fit) */
    char root[256];     /* the folder indexed (clipped to fit) */
    char commit[48];    /* HEAD's hex id at the last finished run; "" for a plain folder */
    int64_t indexed_at; /* Unix seconds when the last run finished; 0: never finished */
    int64_t files;      /* files indexed */
} idx_repo_info;
/* Fills out[0 .. min(n, cap)) with the index's repositories in git_url order and returns n,
 * their number (0 when the database cannot be read). */
size_t idx_repos_get(idx_index *ix, idx_repo_info *out, size_t cap);

/* Chunks above this count get an approximate vector index (IVF), below it an exact one. */
#define IDX_EXACT_MAX_VECTORS 20000

#ifdef __cplusplus
}
#endif

#endif
