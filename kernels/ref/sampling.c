/* sampling.c — reference sampler: greedy argmax, temperature, top-k and top-p by sorting,
 * then one draw (eng_sample_uniform) walked over the kept tokens in vocabulary order. */
#include <math.h>
#include <stdlib.h>

#include "ref.h"

static int by_value_desc(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int32_t kn_ref_sample(const float *logits, int32_t n_vocab, const kn_sample_params *p,
                      float *u_out, float *mass_out)
{
    if (p->temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
    const float inv_t = 1.0f / p->temperature;
    float *sorted = malloc(sizeof(float) * (size_t)n_vocab);
    if (!sorted)
        abort(); /* test-only code */
    float zmax = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        sorted[i] = logits[i] * inv_t;
        zmax = fmaxf(zmax, sorted[i]);
    }
    qsort(sorted, (size_t)n_vocab, sizeof(float), by_value_desc);
    /* top-k: the threshold is the k-th largest value */
    int32_t n_keep = n_vocab;
    float thr = sorted[n_vocab - 1];
    if (p->top_k > 0 && p->top_k < n_vocab) {
        thr = sorted[p->top_k - 1];
        while (n_keep > 0 && sorted[n_keep - 1] < thr)
            n_keep--;
    }
    /* top-p: raise the threshold to the value where the mass (largest first) reaches it */
    if (p->top_p < 1.0f) {
        double total = 0.0, acc = 0.0;
        for (int32_t i = 0; i < n_keep; i++)
            total += exp((double)sorted[i] - zmax);
        for (int32_t i = 0; i < n_keep; i++) {
            acc += exp((double)sorted[i] - zmax);
            if (acc >= p->top_p * total) {
                thr = sorted[i];
                break;
            }
        }
    }
    free(sorted);
    double mass = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float z = logits[i] * inv_t;
        if (z >= thr)
            mass += exp((double)z - zmax);
    }
    const double target = eng_sample_uniform(p->seed, p->step) * mass;
    if (u_out)
        *u_out = (float)target;
    if (mass_out)
        *mass_out = (float)mass;
    double acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n_vocab; i++) {
        const float z = logits[i] * inv_t;
        if (z < thr)
            continue;
        acc += exp((double)z - zmax);
        last = i;
        if (acc > target)
            return i;
    }
    return last; /* rounding left the draw just past the end: the last kept token */
}
