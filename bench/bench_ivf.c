/* bench_ivf.c — the approximate vector index on an indexer database's real vectors: recall@k of
 * IVF-Flat against the exact index, and its search time, over a grid of nlist and nprobe
 * (indexer/faiss_c.cpp's defaults marked), so the defaults can be chosen on real embeddings.
 *
 * usage: bench_ivf --db DIR [--holdout N] [--k K] [--nlist A,B,..] [--nprobe A,B,..]
 *                  [--queries FILE.jsonl --embedding-model GGUF]
 *
 * The index is built from every vector in DIR/index.db but N held-out ones (default 1000,
 * chosen by a fixed shuffle), which are the queries: chunks of the same code base the index has
 * not seen. --queries adds the labelled set's texts (bench/index_dataset.py: prose and code
 * prefixes) embedded with the model. A returned vector counts toward recall when its inner
 * product reaches the exact k-th best (so equal-scoring duplicates, common in code, are not
 * misses). Search time is this thread's CPU time per query (the machine is shared). */
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "faiss_c.h"
#include "serval_embed.h"

static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Every (id, vector) of DIR/index.db; exits on error. */
static float *load_vectors(const char *dir, int64_t **ids, int64_t *n, int *dim)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/index.db", dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT id, vec FROM chunks", -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_ivf: %s: %s\n", path, sqlite3_errmsg(db));
        exit(1);
    }
    size_t cap = 1024, cnt = 0;
    float *x = NULL;
    *ids = malloc(sizeof(int64_t) * cap);
    *dim = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const int bytes = sqlite3_column_bytes(st, 1);
        if (*dim == 0) {
            *dim = bytes / 4;
            x = malloc(sizeof(float) * cap * (size_t)*dim);
        }
        if (bytes != *dim * 4)
            continue;
        if (cnt == cap) {
            cap *= 2;
            *ids = realloc(*ids, sizeof(int64_t) * cap);
            x = realloc(x, sizeof(float) * cap * (size_t)*dim);
        }
        (*ids)[cnt] = sqlite3_column_int64(st, 0);
        memcpy(x + cnt * (size_t)*dim, sqlite3_column_blob(st, 1), (size_t)bytes);
        cnt++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    *n = (int64_t)cnt;
    return x;
}

/* The labelled set's query texts embedded; *nq of them. */
static float *embed_queries(const char *file, const char *model, int dim, size_t *nq)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "bench_ivf: cannot open %s\n", file);
        exit(2);
    }
    eng_embedder_config cfg = eng_embedder_config_defaults();
    eng_embedder *e;
    eng_err err;
    if (eng_embedder_create(model, &cfg, &e, &err) != ENG_OK) {
        fprintf(stderr, "bench_ivf: %s: %s\n", model, err.msg);
        exit(1);
    }
    if (eng_embedder_dim(e) != dim) {
        fprintf(stderr, "bench_ivf: the model gives %d dimensions, the index holds %d\n",
                eng_embedder_dim(e), dim);
        exit(1);
    }
    size_t cap = 256;
    float *q = malloc(sizeof(float) * cap * (size_t)dim);
    char *line = NULL;
    size_t lcap = 0;
    *nq = 0;
    while (getline(&line, &lcap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *text = j ? json_string_value(json_object_get(j, "query")) : NULL;
        if (text) {
            if (*nq == cap) {
                cap *= 2;
                q = realloc(q, sizeof(float) * cap * (size_t)dim);
            }
            size_t len = strlen(text);
            if (eng_embed(e, &text, &len, 1, q + *nq * (size_t)dim, NULL, NULL, &err) != ENG_OK) {
                fprintf(stderr, "bench_ivf: embedding a query: %s\n", err.msg);
                exit(1);
            }
            (*nq)++;
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    eng_embedder_free(e);
    return q;
}

/* Comma-separated integers into v (at most cap); returns how many. */
static int parse_list(const char *s, int64_t *v, int cap)
{
    int n = 0;
    while (s && *s && n < cap) {
        v[n++] = strtoll(s, NULL, 10);
        s = strchr(s, ',');
        if (s)
            s++;
    }
    return n;
}

typedef struct qset {
    const char *name;
    const float *q; /* [n, dim] */
    size_t n;
    float *kth;     /* [n] the exact k-th best inner product */
} qset;

static void exact_kth(const idx_faiss *exact, qset *s, int dim, int k)
{
    float *sims = malloc(sizeof(float) * (size_t)k);
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)k);
    char msg[256];
    s->kth = malloc(sizeof(float) * s->n);
    for (size_t i = 0; i < s->n; i++) {
        if (idx_faiss_search(exact, s->q + i * (size_t)dim, k, sims, labels, msg, sizeof msg)) {
            fprintf(stderr, "bench_ivf: %s\n", msg);
            exit(1);
        }
        s->kth[i] = sims[k - 1];
    }
    free(sims), free(labels);
}

static void measure(const idx_faiss *ivf, const qset *s, int dim, int k, double *recall,
                    double *p50, double *p95)
{
    float *sims = malloc(sizeof(float) * (size_t)k);
    int64_t *labels = malloc(sizeof(int64_t) * (size_t)k);
    double *ms = malloc(sizeof(double) * s->n), hits = 0;
    char msg[256];
    for (size_t i = 0; i < s->n; i++) {
        const double c0 = cpu_ms();
        if (idx_faiss_search(ivf, s->q + i * (size_t)dim, k, sims, labels, msg, sizeof msg)) {
            fprintf(stderr, "bench_ivf: %s\n", msg);
            exit(1);
        }
        ms[i] = cpu_ms() - c0;
        for (int j = 0; j < k; j++)
            hits += labels[j] >= 0 && sims[j] >= s->kth[i] - 1e-6f;
    }
    *recall = hits / ((double)s->n * k);
    *p50 = pct(ms, s->n, 50);
    *p95 = pct(ms, s->n, 95);
    free(sims), free(labels), free(ms);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *queries = NULL, *model = NULL;
    int64_t holdout = 1000, k = 10, nlists[16], nprobes[32];
    int n_nlist = 0, n_nprobe = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--db") && v) dir = v, i++;
        else if (!strcmp(a, "--holdout") && v) holdout = atoll(v), i++;
        else if (!strcmp(a, "--k") && v) k = atoll(v), i++;
        else if (!strcmp(a, "--nlist") && v) n_nlist = parse_list(v, nlists, 16), i++;
        else if (!strcmp(a, "--nprobe") && v) n_nprobe = parse_list(v, nprobes, 32), i++;
        else if (!strcmp(a, "--queries") && v) queries = v, i++;
        else if (!strcmp(a, "--embedding-model") && v) model = v, i++;
        else {
            fprintf(stderr, "usage: bench_ivf --db DIR [--holdout N] [--k K] [--nlist A,B,..] "
                            "[--nprobe A,B,..] [--queries FILE.jsonl --embedding-model GGUF]\n");
            return 2;
        }
    }
    if (!dir || k < 1 || holdout < 1 || (queries && !model)) {
        fprintf(stderr, "bench_ivf: --db needed (and --embedding-model with --queries)\n");
        return 2;
    }
    int64_t *ids, n;
    int dim;
    float *x = load_vectors(dir, &ids, &n, &dim);
    if (n < holdout + 256) {
        fprintf(stderr, "bench_ivf: %lld vectors: too few for %lld held out\n", (long long)n,
                (long long)holdout);
        return 1;
    }
    /* A fixed shuffle moves the held-out vectors to the end. */
    uint64_t s = 42;
    float *tmp = malloc(sizeof(float) * (size_t)dim);
    for (int64_t i = n - 1; i > 0; i--) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const int64_t j = (int64_t)((s >> 33) % (uint64_t)(i + 1));
        int64_t t = ids[i];
        ids[i] = ids[j], ids[j] = t;
        memcpy(tmp, x + i * dim, sizeof(float) * (size_t)dim);
        memcpy(x + i * dim, x + j * dim, sizeof(float) * (size_t)dim);
        memcpy(x + j * dim, tmp, sizeof(float) * (size_t)dim);
    }
    const int64_t nb = n - holdout;
    qset sets[2] = {{"held-out chunks", x + nb * dim, (size_t)holdout, NULL}, {0}};
    int n_sets = 1;
    if (queries) {
        size_t nq;
        float *q = embed_queries(queries, model, dim, &nq);
        sets[n_sets++] = (qset){"labelled queries", q, nq, NULL};
    }
    char msg[256];
    idx_faiss *exact = idx_faiss_build(dim, x, ids, nb, false, msg, sizeof msg);
    if (!exact) {
        fprintf(stderr, "bench_ivf: %s\n", msg);
        return 1;
    }
    printf("# %lld vectors (%d-d) from %s/index.db, %lld held out; recall@%lld against the exact "
           "index; defaults: nlist %lld, nprobe %lld\n", (long long)nb, dim, dir,
           (long long)holdout, (long long)k, (long long)idx_faiss_default_nlist(nb),
           (long long)idx_faiss_default_nprobe(idx_faiss_default_nlist(nb)));
    for (int i = 0; i < n_sets; i++) {
        exact_kth(exact, &sets[i], dim, (int)k);
        double r, p50, p95;
        measure(exact, &sets[i], dim, (int)k, &r, &p50, &p95);
        printf("exact, %s (%zu): search CPU p50 %.2f ms p95 %.2f ms\n", sets[i].name, sets[i].n,
               p50, p95);
    }
    if (n_nlist == 0)
        nlists[n_nlist++] = idx_faiss_default_nlist(nb);
    for (int a = 0; a < n_nlist; a++) {
        const double t0 = wall_s();
        idx_faiss *ivf = idx_faiss_build_ivf(dim, x, ids, nb, nlists[a], 0, msg, sizeof msg);
        if (!ivf) {
            fprintf(stderr, "bench_ivf: nlist %lld: %s\n", (long long)nlists[a], msg);
            return 1;
        }
        printf("nlist %lld: trained and filled in %.1f s\n", (long long)nlists[a], wall_s() - t0);
        int64_t probes[32];
        int np = n_nprobe;
        memcpy(probes, nprobes, sizeof(int64_t) * (size_t)np);
        if (np == 0) {
            const int64_t def = idx_faiss_default_nprobe(nlists[a]);
            const int64_t grid[] = {def / 4, def / 2, def, def * 2, def * 4};
            for (int g = 0; g < 5; g++)
                if (grid[g] >= 1 && grid[g] <= nlists[a])
                    probes[np++] = grid[g];
        }
        for (int b = 0; b < np; b++) {
            idx_faiss_set_nprobe(ivf, probes[b]);
            for (int i = 0; i < n_sets; i++) {
                double r, p50, p95;
                measure(ivf, &sets[i], dim, (int)k, &r, &p50, &p95);
                printf("nlist %5lld nprobe %4lld%s  %-17s recall@%lld %.4f  search CPU p50 %.2f "
                       "ms p95 %.2f ms\n", (long long)nlists[a], (long long)probes[b],
                       probes[b] == idx_faiss_default_nprobe(nlists[a]) ? "*" : " ",
                       sets[i].name, (long long)k, r, p50, p95);
            }
        }
        idx_faiss_free(ivf);
    }
    idx_faiss_free(exact);
    free(x), free(ids), free(tmp);
    if (n_sets > 1)
        free((void *)sets[1].q);
    for (int i = 0; i < n_sets; i++)
        free(sets[i].kth);
    return 0;
}
