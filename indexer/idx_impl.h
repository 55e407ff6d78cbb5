/* idx_impl.h — the indexer's private pieces: the chunker, the code tokenizer behind FTS5, the
 * repository walk, and the index struct that indexing (build.c) and search (search.c) share. */
#ifndef SERVAL_INDEXER_IMPL_H
#define SERVAL_INDEXER_IMPL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "faiss_c.h"
#include "serval_index.h"

/* ---- chunk.c ---------------------------------------------------------------------------- */

#define IDX_CHUNK_CHARS 512     /* Tabby's chunk size: a chunk grows to about this */
#define IDX_CHUNK_MIN_CHARS 256 /* a top-level definition starts a new chunk past this */

typedef struct idx_chunk {
    size_t off, len;              /* bytes of the file's text */
    int32_t start_line, end_line; /* 1-based, inclusive */
} idx_chunk;

/* The language id (for prompt_language_keywords) a file's name implies, or NULL. */
const char *idx_language_of(const char *path);

/* Splits text (len bytes; path picks the language) into chunks on line boundaries: each grows
 * to about IDX_CHUNK_CHARS, cut preferably before a top-level definition (the languages
 * table's keywords at column 0) or a blank line; blank-only chunks are dropped. *out is
 * malloc'd (caller frees); returns the count, or -1 when out of memory. */
int64_t idx_chunk_text(const char *path, const char *text, size_t len, idx_chunk **out);

/* ---- fts_tok.c -------------------------------------------------------------------------- */

/* Calls cb for each identifier-like token of text (letters, digits, '_', non-ASCII bytes),
 * lower-cased, at most 64 bytes; with parts, also for each camelCase / snake_case / digit
 * part of a token that has more than one (part = true). */
typedef void (*idx_token_cb)(void *user, const char *tok, size_t len, bool part);
void idx_tokens(const char *text, size_t len, bool parts, idx_token_cb cb, void *user);

/* Registers the FTS5 tokenizer "serval_code" on db: whole identifiers, plus their parts as
 * colocated tokens in documents (queries get whole tokens only), and the ranking function
 * serval_bm25(chunks_fts, idf BLOB) (see fts_tok.c). SQLITE_OK or an error. */
int idx_fts_register(sqlite3 *db);

/* ---- walk.c ----------------------------------------------------------------------------- */

typedef struct idx_walk {
    char *root;             /* absolute, no trailing '/' (the work tree for git) */
    char **paths;           /* relative to root, sorted */
    size_t n, cap;
    int64_t skipped_vendored, skipped_generated, skipped_binary;
    char commit[48];
    bool git;
} idx_walk;

/* Lists the candidate files under path: a git work tree's tracked files (libgit2), else an
 * ignore-aware walk. Vendored and generated names are counted and left out. */
eng_status idx_walk_run(const char *path, idx_walk *w, eng_err *err);
void idx_walk_clear(idx_walk *w);

/* Why a file's content is not indexed: 0 (it is), 'b' binary, 'g' generated, 'h' huge. */
#define IDX_MAX_FILE_BYTES (1 << 20)
int idx_content_skip(const char *text, size_t len);

/* ---- the index (index.c, build.c, search.c) --------------------------------------------- */

struct idx_index {
    char *dir;
    idx_embedder emb;
    char model_key[160];      /* "<model>/<dim>" */
    sqlite3 *wdb;             /* indexing (under run_mu) */
    sqlite3 *rdb;             /* searching (under read_mu) */
#define IDX_N_READ_STMTS 4
    sqlite3_stmt *rst[IDX_N_READ_STMTS]; /* search.c's statements on rdb, prepared once */
    pthread_mutex_t run_mu, read_mu;
    pthread_rwlock_t vec_lock; /* guards vec */
    idx_faiss *vec;
    struct idx_df_cache *dfc;  /* search.c's document frequencies (under read_mu); owned */
};

/* Frees search.c's per-index state (the document-frequency cache). NULL does nothing. */
void idx_search_state_free(struct idx_df_cache *dfc);

/* The chunk-version stamp of the vectors: stored in SQLite, bumped by every transaction that
 * adds or removes chunks; vectors-<version>.faiss matches that state. */
int64_t idx_meta_int(sqlite3 *db, const char *key, int64_t dflt);
int idx_meta_set_int(sqlite3 *db, const char *key, int64_t v);

/* Brings ix->vec up to the stored chunks: loads vectors-<version>.faiss when it matches, else
 * rebuilds from SQLite's vectors and writes it (temp file + rename). Called with run_mu held. */
eng_status idx_vectors_sync(idx_index *ix, eng_err *err);

#endif
