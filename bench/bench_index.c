/* bench_index.c — the indexer's benchmark: indexing speed (files/s, chunks/s, embeddings/s) and
 * index size, retrieval quality on a labelled set (bench/index_dataset.py: Recall@5 and MRR@10 for
 * BM25 alone, vectors alone and the hybrid, per query kind: nl, code, code_cut), search latency
 * p50/p95 with the query's embedding timed apart, and what retrieval adds to a completion
 * request (idx_retrieve: its cost, and how many code prefixes got the target's definition).
 *
 * usage: bench_index --db DIR [--repo DIR [--git-url URL]] [--queries FILE.jsonl]
 *                    (--embedding-model GGUF | --hash-embedder DIM) [--latency N] [--threads N]
 *                    [--latency-only]
 * --latency-only skips the quality and retrieval passes, so the latency pass starts cold (the
 * search's caches empty) and its queries are the labelled set's. BENCH_INDEX_MODE=0|1|2 times
 * one mode (hybrid, BM25, vector) instead of all three.
 * The hash embedder (hashed bag of words) stands in for the model where only speed matters
 * (search latency over 100k chunks that the CPU cannot embed in the time available). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serval_embed.h"
#include "serval_index.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* This thread's CPU time: on a shared, loaded machine the wall clock also counts waiting for a
 * core; both are reported. */
static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* ---- embedders: the model or the stand-in, both timed ----------------------------------- */

typedef struct timed_embedder {
    idx_embedder inner;
    int32_t hash_dim;  /* > 0: the hash stand-in */
    double ms;         /* time spent embedding (single-threaded bench) */
    double cpu;        /* this thread's CPU time in it (the model's own threads not counted) */
    long texts;
} timed_embedder;

static eng_status hash_embed(int32_t dim, const char *const *texts, const size_t *lens, size_t n,
                             float *out)
{
    for (size_t t = 0; t < n; t++) {
        float *v = out + t * (size_t)dim;
        memset(v, 0, (size_t)dim * sizeof *v);
        for (size_t i = 0; i < lens[t];) {
            while (i < lens[t] && !((texts[t][i] | 32) >= 'a' && (texts[t][i] | 32) <= 'z'))
                i++;
            uint32_t h = 2166136261u;
            size_t a = i;
            while (i < lens[t] && (((texts[t][i] | 32) >= 'a' && (texts[t][i] | 32) <= 'z') ||
                                   texts[t][i] == '_'))
                h = (h ^ (uint32_t)(texts[t][i++] | 32)) * 16777619u;
            if (i > a)
                v[h % (uint32_t)dim] += (h & 0x10000) ? 1.0f : -1.0f;
        }
        float norm = 0;
        for (int32_t k = 0; k < dim; k++)
            norm += v[k] * v[k];
        for (int32_t k = 0; norm > 0 && k < dim; k++)
            v[k] /= sqrtf(norm);
    }
    return ENG_OK;
}

static eng_status timed_embed(void *user, const char *const *texts, const size_t *lens, size_t n,
                              float *out, eng_err *err)
{
    timed_embedder *te = user;
    double t0 = now_ms(), c0 = cpu_ms();
    eng_status s = te->hash_dim ? hash_embed(te->hash_dim, texts, lens, n, out)
                                : te->inner.embed(te->inner.user, texts, lens, n, out, err);
    te->ms += now_ms() - t0;
    te->cpu += cpu_ms() - c0;
    te->texts += (long)n;
    return s;
}

/* ---- statistics ------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

static long long du_bytes(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "du -sb '%s' 2>/dev/null", dir);
    FILE *p = popen(cmd, "r");
    long long b = 0;
    if (p && fscanf(p, "%lld", &b) != 1)
        b = 0;
    if (p)
        pclose(p);
    return b;
}

/* ---- retrieval quality ------------------------------------------------------------------ */

typedef struct query {
    const char *kind, *text, *file, *from;
    int line;
} query;

typedef struct quality {
    double recall5, mrr10;
    int n;
} quality;

static const char *const mode_names[3] = {"hybrid", "bm25", "vector"};

/* Rank (1-based) of the first hit holding the target's def line; 0 when not in the top 10. */
static int rank_of(idx_index *ix, const query *q, const char *url, idx_mode mode,
                   timed_embedder *te, double *search_ms, double *embed_ms, double *search_cpu)
{
    idx_query iq = {.text = q->text, .top_k = 10, .git_url = url, .mode = mode};
    if (q->from) { /* code -> code: the query's own file is the current file */
        iq.exclude_path = q->from;
        iq.exclude_text = q->text;
    }
    idx_hit *h;
    size_t n;
    eng_err err;
    double e0 = te->ms, ec0 = te->cpu, t0 = now_ms(), c0 = cpu_ms();
    if (idx_search(ix, &iq, &h, &n, &err) != ENG_OK) {
        fprintf(stderr, "bench_index: search: %s\n", err.msg);
        exit(1);
    }
    double total = now_ms() - t0, total_cpu = cpu_ms() - c0;
    *embed_ms = te->ms - e0;
    *search_ms = total - *embed_ms;
    *search_cpu = total_cpu - (te->cpu - ec0);
    int rank = 0;
    for (size_t i = 0; i < n && !rank; i++)
        if (strcmp(h[i].filepath, q->file) == 0 && h[i].start_line <= q->line &&
            h[i].end_line >= q->line)
            rank = (int)i + 1;
    idx_hits_free(h, n);
    return rank;
}

static query *load_queries(const char *path, size_t *n, json_t **keep)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench_index: cannot open %s\n", path);
        exit(2);
    }
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (j)
            json_array_append_new(all, j);
    }
    free(line);
    fclose(f);
    *n = json_array_size(all);
    query *q = calloc(*n ? *n : 1, sizeof *q);
    for (size_t i = 0; i < *n; i++) {
        json_t *j = json_array_get(all, i);
        q[i] = (query){json_string_value(json_object_get(j, "kind")),
                       json_string_value(json_object_get(j, "query")),
                       json_string_value(json_object_get(j, "file")),
                       json_string_value(json_object_get(j, "from")),
                       (int)json_integer_value(json_object_get(j, "line"))};
    }
    *keep = all;
    return q;
}

static void run_quality(idx_index *ix, const query *qs, size_t nq, const char *url,
                        timed_embedder *te)
{
    /* code_cut: a code query whose called name is still being typed (index_dataset.py --cut) */
    const char *kinds[3] = {"nl", "code", "code_cut"};
    double *search = malloc(nq * sizeof *search), *embed = malloc(nq * sizeof *embed);
    size_t n_lat = 0;
    printf("\nretrieval quality (%zu queries)\n%-8s %-7s %5s %9s %7s\n", nq, "kind", "mode", "n",
           "Recall@5", "MRR@10");
    for (int k = 0; k < 3; k++)
        for (int m = 0; m < 3; m++) {
            quality qa = {0};
            for (size_t i = 0; i < nq; i++) {
                if (!qs[i].kind || strcmp(qs[i].kind, kinds[k]) != 0)
                    continue;
                double s_ms, e_ms, c_ms;
                int r = rank_of(ix, &qs[i], url, (idx_mode)m, te, &s_ms, &e_ms, &c_ms);
                qa.n++;
                qa.recall5 += r >= 1 && r <= 5;
                qa.mrr10 += r ? 1.0 / r : 0;
                if (m == IDX_MODE_HYBRID) {
                    search[n_lat] = s_ms;
                    embed[n_lat++] = e_ms;
                }
            }
            if (qa.n)
                printf("%-8s %-7s %5d %9.3f %7.3f\n", kinds[k], mode_names[m], qa.n,
                       qa.recall5 / qa.n, qa.mrr10 / qa.n);
        }
    double e50 = pct(embed, n_lat, 50), e95 = pct(embed, n_lat, 95);
    printf("hybrid search over these queries: search p50 %.2f ms p95 %.2f ms; query embedding "
           "p50 %.2f ms p95 %.2f ms\n", pct(search, n_lat, 50), pct(search, n_lat, 95), e50, e95);
    free(search), free(embed);
}

/* What a completion request pays: idx_retrieve on code queries (the prefix's last lines). */
static void run_retrieve_cost(idx_index *ix, const query *qs, size_t nq, const char *url)
{
    double *t = malloc((nq ? nq : 1) * sizeof *t);
    size_t n = 0, added = 0, target = 0;
    for (size_t i = 0; i < nq; i++) {
        if (!qs[i].from || !qs[i].kind || strcmp(qs[i].kind, "code") != 0)
            continue;
        idx_retrieve_input in = {.git_url = url, .filepath = qs[i].from, .prefix = qs[i].text,
                                 .prefix_len = strlen(qs[i].text), .budget = 768};
        idx_hit *h;
        size_t nh;
        eng_err err;
        double t0 = now_ms();
        if (idx_retrieve(ix, &in, &h, &nh, &err) != ENG_OK)
            continue;
        t[n++] = now_ms() - t0;
        added += nh > 0;
        bool hit = false;
        for (size_t k = 0; k < nh; k++)
            hit |= strcmp(h[k].filepath, qs[i].file) == 0 && h[k].start_line <= qs[i].line &&
                   h[k].end_line >= qs[i].line;
        target += hit;
        idx_hits_free(h, nh);
    }
    printf("completion retrieval (idx_retrieve, embedding included) over %zu code prefixes: p50 "
           "%.2f ms p95 %.2f ms; %zu of them got a snippet (similarity >= %.2f), %zu the "
           "target's definition\n", n, pct(t, n, 50), pct(t, n, 95), added,
           (double)IDX_RETRIEVE_MIN_SIMILARITY, target);
    free(t);
}

/* Search latency on n queries cycling through qs (or chunk-like synthetic ones). */
static void run_latency(idx_index *ix, const query *qs, size_t nq, int n, timed_embedder *te,
                        idx_mode mode)
{
    double *search = malloc((size_t)n * sizeof *search), *embed = malloc((size_t)n * sizeof *embed);
    double *cpu = malloc((size_t)n * sizeof *cpu);
    for (int i = 0; i < n; i++) {
        query q = nq ? qs[(size_t)i % nq] : (query){"nl", "open a file and read its lines", "", NULL, 0};
        q.from = NULL;
        double s_ms, e_ms, c_ms;
        rank_of(ix, &q, NULL, mode, te, &s_ms, &e_ms, &c_ms);
        search[i] = s_ms, embed[i] = e_ms, cpu[i] = c_ms;
    }
    idx_totals t;
    idx_totals_get(ix, &t);
    printf("\nsearch latency, %lld chunks (%s vector index), %d %s queries, top 10: search "
           "wall p50 %.2f ms p95 %.2f ms, CPU p50 %.2f ms p95 %.2f ms; query embedding wall p50 "
           "%.2f ms p95 %.2f ms\n",
           (long long)t.chunks, t.approximate ? "IVF" : "exact", n, mode_names[mode],
           pct(search, (size_t)n, 50),
           pct(search, (size_t)n, 95), pct(cpu, (size_t)n, 50), pct(cpu, (size_t)n, 95),
           pct(embed, (size_t)n, 50), pct(embed, (size_t)n, 95));
    free(search), free(embed), free(cpu);
}

int main(int argc, char **argv)
{
    const char *db = NULL, *queries = NULL, *model = NULL, *url = NULL;
    const char *repos[32];
    int n_repos = 0, hash_dim = 0, latency = 0, threads = 0;
    bool latency_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--db") && v) db = v, i++;
        else if (!strcmp(a, "--repo") && v && n_repos < 32) repos[n_repos++] = v, i++;
        else if (!strcmp(a, "--git-url") && v) url = v, i++;
        else if (!strcmp(a, "--queries") && v) queries = v, i++;
        else if (!strcmp(a, "--embedding-model") && v) model = v, i++;
        else if (!strcmp(a, "--hash-embedder") && v) hash_dim = atoi(v), i++;
        else if (!strcmp(a, "--latency") && v) latency = atoi(v), i++;
        else if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "--latency-only")) latency_only = true;
        else {
            fprintf(stderr, "usage: bench_index --db DIR [--repo DIR]... [--git-url URL] "
                            "[--queries FILE.jsonl] (--embedding-model GGUF | --hash-embedder "
                            "DIM) [--latency N] [--threads N] [--latency-only]\n");
            return 2;
        }
    }
    if (!db || (!model && hash_dim <= 0)) {
        fprintf(stderr, "bench_index: --db and one of --embedding-model, --hash-embedder needed\n");
        return 2;
    }
    timed_embedder te = {.hash_dim = hash_dim};
    eng_embedder *emb = NULL;
    eng_err err = {{0}};
    idx_embedder ie;
    if (model) {
        eng_embedder_config cfg = eng_embedder_config_defaults();
        cfg.n_threads = threads;
        if (eng_embedder_create(model, &cfg, &emb, &err) != ENG_OK) {
            fprintf(stderr, "bench_index: %s: %s\n", model, err.msg);
            return 1;
        }
        te.inner = idx_embedder_from_engine(emb);
        ie = (idx_embedder){timed_embed, &te, te.inner.dim, te.inner.model};
    } else {
        ie = (idx_embedder){timed_embed, &te, hash_dim, "bench-hash"};
    }
    idx_index *ix;
    double t_open = now_ms();
    if (idx_open(db, &ie, &ix, &err) != ENG_OK) {
        fprintf(stderr, "bench_index: %s\n", err.msg);
        return 1;
    }
    printf("embedder: %s (%d dimensions); open %.1f ms\n", model ? model : "hash stand-in",
           (int)ie.dim, now_ms() - t_open);
    for (int r = 0; r < n_repos; r++) {
        idx_stats st;
        double e0 = te.ms;
        long n0 = te.texts;
        if (idx_index_repo(ix, repos[r], n_repos == 1 ? url : NULL, NULL, NULL, NULL, &st, &err) !=
            ENG_OK) {
            fprintf(stderr, "bench_index: %s: %s\n", repos[r], err.msg);
            return 1;
        }
        double emb_s = (te.ms - e0) / 1e3;
        printf("indexed %s: %lld files (%lld embedded), %lld chunks (%lld embedded) in %.1f s: "
               "%.1f files/s, %.1f chunks/s, %.1f embeddings/s (embedding %.1f s of it: %.1f "
               "texts/s while embedding); skipped %lld vendored, %lld generated, %lld binary, "
               "%lld huge\n", repos[r], (long long)st.files_indexed, (long long)st.files_embedded,
               (long long)st.chunks_total, (long long)st.chunks_embedded, st.seconds,
               (double)st.files_indexed / st.seconds, (double)st.chunks_total / st.seconds,
               (double)st.chunks_embedded / st.seconds, emb_s,
               emb_s > 0 ? (double)(te.texts - n0) / emb_s : 0, (long long)st.skipped_vendored,
               (long long)st.skipped_generated, (long long)st.skipped_binary,
               (long long)st.skipped_huge);
    }
    idx_totals t;
    idx_totals_get(ix, &t);
    printf("index: %lld repositories, %lld files, %lld chunks, %s vector index; %.1f MiB on disk\n",
           (long long)t.repos, (long long)t.files, (long long)t.chunks,
           t.approximate ? "IVF" : "exact", (double)du_bytes(db) / (1 << 20));
    json_t *keep = NULL;
    size_t nq = 0;
    query *qs = queries ? load_queries(queries, &nq, &keep) : NULL;
    if (qs && nq && !latency_only) {
        run_quality(ix, qs, nq, url, &te);
        run_retrieve_cost(ix, qs, nq, url);
    }
    if (latency > 0)
        for (int m = 0; m < 3; m++)
            if (!getenv("BENCH_INDEX_MODE") || atoi(getenv("BENCH_INDEX_MODE")) == m)
                run_latency(ix, qs, nq, latency, &te, (idx_mode)m);
    free(qs);
    json_decref(keep);
    idx_close(ix);
    eng_embedder_free(emb);
    return 0;
}
