/* kt_data.c — RNG, random fills, tolerances and the error metric (see kt_data.h). */
#include "kt_data.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ref.h"

kt_rng kt_rng_make(uint64_t seed)
{
    const char *env = getenv("KT_SEED");
    if (env && *env)
        seed ^= strtoull(env, NULL, 0);
    kt_rng r = {seed * 0x9e3779b97f4a7c15ull + 1};
    return r;
}

uint64_t kt_rng_next(kt_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

float kt_rng_uniform(kt_rng *r, float lo, float hi)
{
    for (;;) {
        const float u = (float)(kt_rng_next(r) >> 40) * (1.0f / 16777216.0f);
        const float v = lo + (hi - lo) * u;
        if (v != 0.0f)
            return v;
    }
}

int32_t kt_rng_int(kt_rng *r, int32_t n) { return (int32_t)(kt_rng_next(r) % (uint64_t)n); }

void *kt_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "kernel tests: out of host memory (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

void *kt_host_random(kn_dtype dt, size_t n, float lo, float hi, kt_rng *r)
{
    void *p = kt_xmalloc(kn_dtype_size(dt) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        float v = kt_rng_uniform(r, lo, hi);
        if (kn_ref_round(dt, v) == 0.0f)
            v = hi > 0 ? hi / 2 : lo / 2;
        kn_ref_store(dt, p, i, v);
    }
    return p;
}

double kt_rtol(kn_dtype dt)
{
    switch (dt) {
    case KN_DTYPE_F32: return 1e-4;
    case KN_DTYPE_F16: return 4e-3;
    case KN_DTYPE_BF16: return 2e-2;
    }
    return 0.0;
}

kt_diff kt_compare(kn_dtype dt, const void *got, const void *want, size_t n, double rtol)
{
    kt_diff d = {-1, 0.0, 0.0, 0.0};
    double maxw = 0.0;
    for (size_t i = 0; i < n; i++)
        maxw = fmax(maxw, fabs((double)kn_ref_load(dt, want, i)));
    const double floor = 0.05 * maxw > 1e-30 ? 0.05 * maxw : 1e-30;
    for (size_t i = 0; i < n; i++) {
        const double g = kn_ref_load(dt, got, i), w = kn_ref_load(dt, want, i);
        const double err = isnan(g) ? INFINITY : fabs(g - w) / fmax(fabs(w), floor);
        if (err > rtol && d.first_bad < 0) {
            d.first_bad = (int64_t)i;
            d.got = g;
            d.want = w;
        }
        d.worst = fmax(d.worst, err);
    }
    return d;
}
