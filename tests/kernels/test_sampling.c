/* test_sampling.c — GPU sampler against the reference: greedy, temperature, top-k, top-p and
 * combinations, per-row seeds, a vocabulary the size of SmolLM2's; the draw must land on the
 * reference's token, or within float rounding of the boundary between two tokens (the
 * cases: kt_cases.c). */
#include <math.h>
#include <stdlib.h>

#include "kt.h"
#include "kt_cases.h"
#include "ref.h"
#include "sampling.h"

static void run(const kt_sample_case *c)
{
    const int32_t ROWS = c->n_rows, V = c->n_vocab, LD = V + 3;
    kt_rng r = kt_rng_make(c->seed);
    float *logits = kt_host_random(KN_DTYPE_F32, (size_t)ROWS * LD, -8.0f, 8.0f, &r);
    kn_sample_params *p = kt_xmalloc(sizeof(kn_sample_params) * (size_t)ROWS);
    int32_t *got = kt_xmalloc(sizeof(int32_t) * (size_t)ROWS);
    for (int i = 0; i < ROWS; i++)
        p[i] = kt_sample_params(i, &r);
    kt_buf dl = kt_buf_upload(logits, sizeof(float) * (size_t)ROWS * LD);
    kt_buf dp = kt_buf_upload(p, sizeof(kn_sample_params) * (size_t)ROWS);
    kt_buf dt = kt_buf_alloc(sizeof(int32_t) * (size_t)ROWS);
    KT_OK(kn_sample(dl.p, LD, ROWS, V, dp.p, dt.p, NULL, 0));
    kt_sync();
    kt_buf_download(got, &dt);
    kt_buf_check_guards(&dt, "tokens");
    int exact = 0;
    for (int i = 0; i < ROWS; i++) {
        const float *l = logits + (size_t)i * LD;
        float target, mass;
        const int32_t want = kn_ref_sample(l, V, &p[i], &target, &mass);
        cr_assert(got[i] >= 0 && got[i] < V, "row %d: token %d out of range", i, got[i]);
        if (got[i] == want) {
            exact++;
            continue;
        }
        cr_assert(p[i].temperature > 0.0f, "row %d greedy: %d, want %d", i, got[i], want);
        /* a different token is only acceptable when the draw sits on the boundary between them */
        const float inv_t = 1.0f / p[i].temperature;
        float zmax = -INFINITY;
        for (int j = 0; j < V; j++)
            zmax = fmaxf(zmax, l[j] * inv_t);
        double acc_got = 0.0, acc_want = 0.0;
        for (int j = 0; j < V; j++) {
            const double w = exp((double)(l[j] * inv_t) - zmax);
            if (j < got[i]) acc_got += w;
            if (j < want) acc_want += w;
        }
        const double boundary = got[i] < want ? acc_want : acc_got;
        cr_assert(fabs(boundary - target) <= 1e-4 * mass, "row %d: token %d, want %d (draw %g of %g)",
                  i, got[i], want, (double)target, (double)mass);
    }
    cr_assert(exact >= ROWS - 2, "only %d of %d rows picked the reference's token", exact, ROWS);
    kt_buf_free(&dl);
    kt_buf_free(&dp);
    kt_buf_free(&dt);
    free(logits);
    free(p);
    free(got);
}

Test(kn_sample, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_sample_cases_count; i++)
        if (kt_sample_cases[i].use & KT_TEST)
            run(&kt_sample_cases[i]);
}

/* Vocabularies below, at and just past one chunk per thread (512), many tied logits (top-k
 * cutting through a tie, greedy picking the lowest index), most of the vocabulary masked to
 * -inf, and temperatures that underflow every weight but the largest: the reference's token,
 * never a masked one. */
Test(kn_sample, edge_cases)
{
    KT_REQUIRE_GPU();
    const int32_t vocabs[] = {1, 2, 31, 512, 513, 1537};
    enum { ROWS = 48 };
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++) {
        const int32_t V = vocabs[v], LD = V + 1;
        kt_rng r = kt_rng_make(900 + v);
        float *logits = malloc(sizeof(float) * (size_t)ROWS * (size_t)LD);
        kn_sample_params p[ROWS];
        cr_assert(logits, "oom");
        for (int i = 0; i < ROWS; i++) {
            float *l = logits + (size_t)i * LD;
            const int kind = i % 6;
            for (int32_t j = 0; j < LD; j++) {
                if (kind < 2) /* ties: four distinct values */
                    l[j] = (float)kt_rng_int(&r, 4) - 1.0f;
                else if (kind < 4) /* masked: a few finite logits among -inf */
                    l[j] = kt_rng_int(&r, 8) == 0 ? kt_rng_uniform(&r, -4.0f, 4.0f) : -INFINITY;
                else
                    l[j] = kt_rng_uniform(&r, -30.0f, 30.0f);
            }
            if (kind >= 2 && kind < 4)
                l[kt_rng_int(&r, V)] = 1.0f; /* at least one finite logit */
            p[i].temperature = i % 12 == 0 ? 0.0f : kind == 5 ? 0.01f : kt_rng_uniform(&r, 0.3f, 2.0f);
            p[i].top_k = i % 3 == 0 ? 1 + kt_rng_int(&r, V + 2) : 0;
            p[i].top_p = i % 4 == 1 ? kt_rng_uniform(&r, 0.05f, 0.99f) : 1.0f;
            p[i].reserved = 0;
            p[i].seed = kt_rng_next(&r);
            p[i].step = (uint64_t)i;
        }
        kt_buf dl = kt_buf_upload(logits, sizeof(float) * (size_t)ROWS * (size_t)LD);
        kt_buf dp = kt_buf_upload(p, sizeof p);
        kt_buf dt = kt_buf_alloc(sizeof(int32_t) * ROWS);
        KT_OK(kn_sample(dl.p, LD, ROWS, V, dp.p, dt.p, NULL, 0));
        kt_sync();
        int32_t got[ROWS];
        kt_buf_download(got, &dt);
        for (int i = 0; i < ROWS; i++) {
            const float *l = logits + (size_t)i * LD;
            const int32_t want = kn_ref_sample(l, V, &p[i], NULL, NULL);
            cr_assert(got[i] >= 0 && got[i] < V, "vocab %d row %d: token %d out of range", V, i, got[i]);
            cr_assert(isfinite(l[got[i]]), "vocab %d row %d: drew masked token %d", V, i, got[i]);
            cr_assert(got[i] == want, "vocab %d row %d (T %g top_k %d top_p %g): token %d (logit %g), want %d (logit %g)",
                      V, i, (double)p[i].temperature, p[i].top_k, (double)p[i].top_p, got[i],
                      (double)l[got[i]], want, (double)l[want]);
        }
        kt_buf_free(&dl);
        kt_buf_free(&dp);
        kt_buf_free(&dt);
        free(logits);
    }
}
