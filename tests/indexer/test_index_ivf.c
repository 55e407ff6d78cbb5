/* test_index_ivf.c — the IVF knobs of indexer/faiss_c.cpp that bench/bench_ivf.c sweeps: the
 * default list and probe counts, an IVF probing every list answering exactly as the exact index
 * does, recall growing with the lists probed, and bad list counts refused with a message. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "faiss_c.h"

#define DIM 24
#define N 3000
#define K 10

/* Unit vectors in 40 loose clusters (as embeddings of a code base are): centre plus noise. */
static float *clustered(unsigned seed)
{
    float *x = malloc((size_t)N * DIM * sizeof *x), centres[40][DIM];
    srand(seed);
    for (int c = 0; c < 40; c++)
        for (int k = 0; k < DIM; k++)
            centres[c][k] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (int64_t i = 0; i < N; i++) {
        float norm = 0;
        for (int k = 0; k < DIM; k++) {
            const float v = centres[i % 40][k] + 0.6f * ((float)rand() / (float)RAND_MAX - 0.5f);
            x[i * DIM + k] = v;
            norm += v * v;
        }
        for (int k = 0; k < DIM; k++)
            x[i * DIM + k] /= sqrtf(norm);
    }
    return x;
}

/* Mean share of the exact top K that f returns, over 100 queries (vectors 0, 30, ...). */
static double recall(const idx_faiss *f, const idx_faiss *exact, const float *x)
{
    int hits = 0;
    char msg[256];
    for (int q = 0; q < 100; q++) {
        float s1[K], s2[K];
        int64_t l1[K], l2[K];
        cr_assert_eq(idx_faiss_search(exact, x + (size_t)q * 30 * DIM, K, s1, l1, msg, sizeof msg), 0);
        cr_assert_eq(idx_faiss_search(f, x + (size_t)q * 30 * DIM, K, s2, l2, msg, sizeof msg), 0);
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                hits += l2[i] >= 0 && l2[i] == l1[j];
    }
    return hits / (100.0 * K);
}

Test(index_ivf, probing_every_list_is_exact_and_more_probes_never_lose_recall)
{
    float *x = clustered(5);
    int64_t *ids = malloc(sizeof(int64_t) * N);
    for (int64_t i = 0; i < N; i++)
        ids[i] = 1000 + i;
    char msg[256];
    idx_faiss *exact = idx_faiss_build(DIM, x, ids, N, false, msg, sizeof msg);
    const int64_t nlist = idx_faiss_default_nlist(N);
    cr_assert_eq(nlist, (int64_t)lround(4.0 * sqrt((double)N)));
    idx_faiss *ivf = idx_faiss_build_ivf(DIM, x, ids, N, nlist, 0, msg, sizeof msg);
    cr_assert_not_null(exact, "%s", msg);
    cr_assert_not_null(ivf, "%s", msg);
    cr_assert(idx_faiss_approx(ivf));
    double last = 0;
    const int64_t probes[] = {1, idx_faiss_default_nprobe(nlist) / 2, idx_faiss_default_nprobe(nlist), nlist};
    for (int p = 0; p < 4; p++) {
        idx_faiss_set_nprobe(ivf, probes[p]);
        const double r = recall(ivf, exact, x);
        cr_assert_geq(r, last, "nprobe %lld: recall %.3f below %.3f with fewer probes",
                      (long long)probes[p], r, last);
        last = r;
    }
    cr_assert_eq(last, 1.0, "probing all %lld lists found %.3f of the exact top %d",
                 (long long)nlist, last, K);
    idx_faiss_set_nprobe(ivf, idx_faiss_default_nprobe(nlist));
    cr_assert_geq(recall(ivf, exact, x), 0.9, "the default probes lose too much");
    idx_faiss_free(ivf);
    idx_faiss_free(exact);
    free(x), free(ids);
}

Test(index_ivf, a_list_count_outside_one_to_the_vectors_is_refused)
{
    float *x = clustered(6);
    int64_t *ids = malloc(sizeof(int64_t) * N);
    for (int64_t i = 0; i < N; i++)
        ids[i] = i;
    char msg[256] = "";
    cr_assert_null(idx_faiss_build_ivf(DIM, x, ids, N, 0, 0, msg, sizeof msg));
    cr_assert(strstr(msg, "nlist"), "message: %s", msg);
    cr_assert_null(idx_faiss_build_ivf(DIM, x, ids, N, N + 1, 0, msg, sizeof msg));
    free(x), free(ids);
}
