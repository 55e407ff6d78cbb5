/* kt_data.h — plain-C helpers shared by the kernel tests and bench/kernels: a seeded RNG,
 * random host arrays that are never zero, the per-dtype tolerance and the relative-error
 * metric every GPU-vs-reference comparison uses. No Criterion, no CUDA. */
#ifndef SERVAL_KT_DATA_H
#define SERVAL_KT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* xorshift64*: tests seed it with a constant (KT_SEED in the environment overrides it). */
typedef struct kt_rng {
    uint64_t s;
} kt_rng;
kt_rng kt_rng_make(uint64_t seed);
uint64_t kt_rng_next(kt_rng *r);
float kt_rng_uniform(kt_rng *r, float lo, float hi); /* never exactly 0 */
int32_t kt_rng_int(kt_rng *r, int32_t n);              /* [0, n) */

/* malloc that aborts with a message when the host is out of memory (test support only). */
void *kt_xmalloc(size_t bytes);

/* Host array of n elements of dt, uniform in [lo, hi) away from zero, rounded to dt.
 * Caller frees. */
void *kt_host_random(kn_dtype dt, size_t n, float lo, float hi, kt_rng *r);

/* Usual tolerance of an output rounded to dt after fp32 math. */
double kt_rtol(kn_dtype dt);

/* The comparison of got against want (n elements of dt): relative error per element
 * |got - want| / max(|want|, 0.05 * max|want|). first_bad is the first element that is NaN
 * or over rtol (-1 when none), worst the largest error seen. */
typedef struct kt_diff {
    int64_t first_bad;
    double worst;
    double got, want; /* at first_bad */
} kt_diff;
kt_diff kt_compare(kn_dtype dt, const void *got, const void *want, size_t n, double rtol);

#ifdef __cplusplus
}
#endif

#endif
