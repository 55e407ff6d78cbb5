/* test_ref_sampling.c — CPU: the reference sampler's greedy, top-k and top-p choices and the
 * draw's distribution behave as a user expects. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "kt.h"
#include "ref.h"
#include "sampler.h"

static kn_sample_params params(float t, int32_t k, float p, uint64_t seed, uint64_t step)
{
    kn_sample_params sp = {t, k, p, 0, seed, step};
    return sp;
}

Test(ref_sampling, greedy_picks_first_max)
{
    float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 0.25f};
    kn_sample_params p = params(0.0f, 0, 1.0f, 1, 0);
    cr_assert(kn_ref_sample(l, 6, &p, NULL, NULL) == 1, "argmax with ties takes the lowest index");
}

Test(ref_sampling, top_k_and_top_p_restrict_the_choice)
{
    kt_rng r = kt_rng_make(3);
    enum { N = 1000 };
    float l[N];
    for (int i = 0; i < N; i++)
        l[i] = kt_rng_uniform(&r, -4.0f, 4.0f);
    /* the 5 largest */
    int idx[N];
    for (int i = 0; i < N; i++)
        idx[i] = i;
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < N; j++)
            if (l[idx[j]] > l[idx[i]]) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    int seen[5] = {0};
    for (uint64_t step = 0; step < 2000; step++) {
        kn_sample_params p = params(1.0f, 5, 1.0f, 42, step);
        const int32_t t = kn_ref_sample(l, N, &p, NULL, NULL);
        int found = -1;
        for (int i = 0; i < 5; i++)
            if (t == idx[i])
                found = i;
        cr_assert(found >= 0, "top-k 5 picked token %d outside the top 5", t);
        seen[found]++;
    }
    for (int i = 0; i < 5; i++)
        cr_assert(seen[i] > 0, "top-5 token %d never drawn in 2000 draws", i);
    /* top-p tiny: only the most likely token survives */
    for (uint64_t step = 0; step < 100; step++) {
        kn_sample_params p = params(0.7f, 0, 1e-6f, 9, step);
        cr_assert(kn_ref_sample(l, N, &p, NULL, NULL) == idx[0], "top-p 1e-6 is greedy");
    }
    /* same seed and step, same token; the draw is reproducible */
    kn_sample_params p1 = params(1.0f, 0, 0.9f, 5, 17), p2 = p1;
    cr_assert(kn_ref_sample(l, N, &p1, NULL, NULL) == kn_ref_sample(l, N, &p2, NULL, NULL), "seeded");
}

Test(ref_sampling, frequencies_follow_softmax)
{
    float l[4] = {0.0f, 1.0f, 2.0f, -1.0f};
    double z = 0.0, want[4];
    for (int i = 0; i < 4; i++)
        z += exp(l[i]);
    for (int i = 0; i < 4; i++)
        want[i] = exp(l[i]) / z;
    int cnt[4] = {0};
    enum { DRAWS = 40000 };
    for (uint64_t s = 0; s < DRAWS; s++) {
        kn_sample_params p = params(1.0f, 0, 1.0f, 1234, s);
        cnt[kn_ref_sample(l, 4, &p, NULL, NULL)]++;
    }
    for (int i = 0; i < 4; i++)
        cr_assert(fabs(cnt[i] / (double)DRAWS - want[i]) < 0.01, "token %d: %g vs %g", i,
                  cnt[i] / (double)DRAWS, want[i]);
}

/* The engine's CPU sampler (engine/batch/sampler.c, selection without sorting) follows the same rule
 * as this reference (which sorts), so the CPU and GPU backends draw the same tokens. */
Test(ref_sampling, engine_sampler_follows_the_reference_rule)
{
    kt_rng r = kt_rng_make(77);
    enum { NV = 4099, CASES = 1500 };
    float *l = malloc(sizeof(float) * NV), *scratch = malloc(sizeof(float) * NV);
    int differ = 0;
    for (int c = 0; c < CASES; c++) {
        const float spread = kt_rng_uniform(&r, 0.5f, 12.0f);
        const bool ties = c % 3 == 0; /* coarse logits: many equal values at the thresholds */
        for (int i = 0; i < NV; i++) {
            l[i] = kt_rng_uniform(&r, -spread, spread);
            if (ties)
                l[i] = roundf(l[i] * 2.0f) / 2.0f;
        }
        const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f};
        const int32_t ks[] = {0, 1, 5, 40, NV - 1, NV};
        const float ps[] = {1.0f, 0.95f, 0.5f, 0.05f};
        kn_sample_params kp = params(temps[c % 5], ks[(c / 5) % 6], ps[(c / 30) % 4], 99 + c,
                                     (uint64_t)c * 3);
        eng_sampler_params ep = {.temperature = kp.temperature, .top_k = kp.top_k,
                                 .top_p = kp.top_p, .seed = kp.seed};
        const int32_t want = kn_ref_sample(l, NV, &kp, NULL, NULL);
        const int32_t got = eng_sample(l, NV, &ep, kp.step, scratch);
        cr_assert(got >= 0 && got < NV, "case %d: token %d out of range", c, got);
        differ += got != want;
    }
    /* only float summation order separates them: a draw landing exactly on a boundary */
    cr_assert(differ <= CASES / 500, "%d of %d draws differ from the reference rule", differ,
              CASES);
    free(l);
    free(scratch);
}
