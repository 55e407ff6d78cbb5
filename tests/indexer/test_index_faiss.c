/* test_index_faiss.c — the FAISS wrappers (indexer/faiss_c.cpp): exact and IVF indexes find
 * each vector as its own nearest neighbour, and survive a write and read unchanged. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faiss_c.h"
#include "testutil.h"

#define DIM 32

static float *random_unit(int64_t n, unsigned seed)
{
    float *x = malloc((size_t)n * DIM * sizeof *x);
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        float norm = 0;
        for (int k = 0; k < DIM; k++) {
            float v = (float)rand() / (float)RAND_MAX - 0.5f;
            x[i * DIM + k] = v;
            norm += v * v;
        }
        for (int k = 0; k < DIM; k++)
            x[i * DIM + k] /= sqrtf(norm);
    }
    return x;
}

static void check_self_hits(const idx_faiss *f, const float *x, const int64_t *ids, int64_t n,
                            int min_hits)
{
    int hits = 0;
    for (int64_t i = 0; i < n; i += n / 50) {
        float sims[3];
        int64_t labels[3];
        char msg[400];
        cr_assert_eq(idx_faiss_search(f, x + i * DIM, 3, sims, labels, msg, sizeof msg), 0, "%s", msg);
        if (labels[0] == ids[i]) {
            hits++;
            cr_assert_float_eq(sims[0], 1.0f, 1e-4);
        }
    }
    cr_assert_geq(hits, min_hits, "%d of 50 vectors found themselves", hits);
}

Test(index_faiss, exact_and_approximate_indexes_round_trip_through_a_file)
{
    for (int approx = 0; approx < 2; approx++) {
        int64_t n = approx ? 5000 : 400;
        float *x = random_unit(n, 7 + (unsigned)approx);
        int64_t *ids = malloc((size_t)n * sizeof *ids);
        for (int64_t i = 0; i < n; i++)
            ids[i] = 1000 + 3 * i; /* labels are chunk ids, not positions */
        char msg[400];
        idx_faiss *f = idx_faiss_build(DIM, x, ids, n, approx, msg, sizeof msg);
        cr_assert(f, "%s", msg);
        cr_assert_eq(idx_faiss_approx(f), approx);
        cr_assert_eq(idx_faiss_ntotal(f), n);
        /* exact finds every vector; IVF at least 45 of 50 with its probe count */
        check_self_hits(f, x, ids, n, approx ? 45 : 50);
        char *path = tu_temp_path(".faiss");
        cr_assert_eq(idx_faiss_write(f, path, msg, sizeof msg), 0, "%s", msg);
        idx_faiss *g = idx_faiss_read(path, msg, sizeof msg);
        cr_assert(g, "%s", msg);
        cr_assert_eq(idx_faiss_ntotal(g), n);
        cr_assert_eq(idx_faiss_dim(g), DIM);
        cr_assert_eq(idx_faiss_approx(g), approx);
        for (int64_t i = 0; i < n; i += n / 20) {
            float s1[5], s2[5];
            int64_t l1[5], l2[5];
            idx_faiss_search(f, x + i * DIM, 5, s1, l1, msg, sizeof msg);
            idx_faiss_search(g, x + i * DIM, 5, s2, l2, msg, sizeof msg);
            for (int k = 0; k < 5; k++) {
                cr_assert_eq(l1[k], l2[k], "query %ld rank %d", (long)i, k);
                cr_assert_float_eq(s1[k], s2[k], 1e-6);
            }
        }
        idx_faiss_free(g);
        idx_faiss_free(f);
        unlink(path);
        free(path), free(ids), free(x);
    }
}

Test(index_faiss, an_unreadable_file_is_an_error_not_a_crash)
{
    char *path = tu_temp_path(".faiss");
    cr_assert_eq(tu_write_file(path, "not an index", 12), 0);
    char msg[400] = "";
    cr_assert_null(idx_faiss_read(path, msg, sizeof msg));
    cr_assert(strstr(msg, "faiss"), "%s", msg);
    unlink(path);
    free(path);
    cr_assert_null(idx_faiss_read("/nonexistent/x.faiss", msg, sizeof msg));
}

/* The IVF index is scanned by our own loop (faiss_c.cpp): each hit's similarity must be the
 * inner product with the vector its label names, best first, and no label twice. */
Test(index_faiss, approximate_hits_are_the_named_vectors_best_first)
{
    int64_t n = 3000;
    float *x = random_unit(n, 11);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++)
        ids[i] = 7 * i + 5;
    char msg[400];
    idx_faiss *f = idx_faiss_build(DIM, x, ids, n, true, msg, sizeof msg);
    cr_assert(f, "%s", msg);
    cr_assert(idx_faiss_approx(f));
    float *q = random_unit(20, 12);
    for (int t = 0; t < 20; t++) {
        float sims[10];
        int64_t labels[10];
        cr_assert_eq(idx_faiss_search(f, q + t * DIM, 10, sims, labels, msg, sizeof msg), 0,
                     "%s", msg);
        for (int k = 0; k < 10; k++) {
            cr_assert(labels[k] >= 5 && (labels[k] - 5) % 7 == 0 && (labels[k] - 5) / 7 < n,
                      "query %d rank %d: label %ld is no stored id", t, k, (long)labels[k]);
            const float *v = x + (labels[k] - 5) / 7 * DIM;
            float dot = 0;
            for (int d = 0; d < DIM; d++)
                dot += v[d] * q[t * DIM + d];
            cr_assert_float_eq(sims[k], dot, 1e-5, "query %d rank %d", t, k);
            if (k > 0)
                cr_assert_geq(sims[k - 1], sims[k], "query %d: rank %d above %d", t, k, k - 1);
            for (int j = 0; j < k; j++)
                cr_assert_neq(labels[j], labels[k], "query %d: label twice", t);
        }
    }
    idx_faiss_free(f);
    free(q), free(ids), free(x);
}
