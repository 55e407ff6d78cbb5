/* sample_rng.h — the counter-based random draw every sampler uses (engine/batch/sampler.c on
 * the CPU, kernels/sampling.cu on the GPU, kernels/ref/sampling.c as the reference), so the
 * CPU and the GPU draw the same number for the same (seed, step). Header-only, plain C that
 * nvcc also compiles; it includes nothing of kernels/ and nothing of the engine. */
#ifndef SERVAL_SAMPLE_RNG_H
#define SERVAL_SAMPLE_RNG_H

#include <stdint.h>

#ifdef __CUDACC__
#define ENG_RNG_HOST_DEVICE __host__ __device__
#else
#define ENG_RNG_HOST_DEVICE
#endif

/* splitmix64's finaliser: a counter-based generator (no state to carry between draws). */
static inline ENG_RNG_HOST_DEVICE uint64_t eng_rng_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Uniform draw in [0, 1) with 24 bits, exact in float on every device. step is the draw's
 * index within the request, so a preempted and recomputed request draws the same numbers. */
static inline ENG_RNG_HOST_DEVICE float eng_sample_uniform(uint64_t seed, uint64_t step)
{
    return (float)(eng_rng_mix64(seed ^ eng_rng_mix64(step)) >> 40) * (1.0f / 16777216.0f);
}

#endif
