// sampling.cu — one CTA per logits row: greedy argmax, or temperature + top-k + top-p and
// one seeded draw. Thresholds are found by bisection over the monotone uint32 image of the
// scaled logits (32 counting/summing passes over the row, no sort); the draw walks the kept
// tokens in vocabulary order through a CTA-wide prefix sum, so the pick is the same token
// the reference (kernels/ref/sampling.c, which sorts) picks, up to float summation order.
#include "sampling.h"

#include "common.cuh"

enum { SMP_THREADS = 512 };

// Largest key t with f(t) >= target, f decreasing in t (count or mass of keys >= t).
// `mass` selects the exp-weighted sum over keys >= floor_key instead of the count.
static __device__ uint32_t bisect(const float *z, int32_t n, float zmax, uint32_t floor_key,
                                  bool mass, float target, float *scratch)
{
    uint32_t lo = floor_key, hi = 0xffffffffu;
    while (lo < hi) {
        const uint32_t mid = lo + (uint32_t)(((uint64_t)hi - lo + 1) / 2);
        float part = 0.0f;
        for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
            const float zi = z[i];
            if (kn_float_key(__float_as_uint(zi)) >= mid)
                part += mass ? __expf(zi - zmax) : 1.0f;
        }
        // counts up to 2^24 are exact in float; vocabularies are far smaller
        if (kn_block_sum(part, scratch) >= target)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static __global__ void __launch_bounds__(SMP_THREADS)
    sample_kernel(const float *logits, int64_t ld, int32_t n, const kn_sample_params *params,
                  float *zbuf, int32_t *tokens)
{
    __shared__ float scratch[32];
    __shared__ float scan_s[SMP_THREADS];
    __shared__ int32_t pick_s;
    const int32_t r = blockIdx.x;
    const float *x = logits + r * ld;
    const kn_sample_params p = params[r];

    if (p.temperature <= 0.0f) { // greedy: largest value, lowest index among ties
        float best = -INFINITY;
        int32_t bi = n;
        for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
            if (x[i] > best || (x[i] == best && i < bi))
                best = x[i], bi = i;
        for (int o = 16; o > 0; o /= 2) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ob > best || (ob == best && oi < bi))
                best = ob, bi = oi;
        }
        __shared__ float wb[32];
        __shared__ int32_t wi[32];
        if (threadIdx.x % 32 == 0)
            wb[threadIdx.x / 32] = best, wi[threadIdx.x / 32] = bi;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < SMP_THREADS / 32; w++)
                if (wb[w] > best || (wb[w] == best && wi[w] < bi))
                    best = wb[w], bi = wi[w];
            tokens[r] = bi < n ? bi : 0;
        }
        return;
    }

    // z = logits / T, kept in this row's slice of the scratch buffer
    float *z = zbuf + (int64_t)r * n;
    const float inv_t = 1.0f / p.temperature;
    float mx = -INFINITY;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
        z[i] = x[i] * inv_t;
        mx = fmaxf(mx, z[i]);
    }
    const float zmax = kn_block_max(mx, scratch); // also orders the z writes before the reads
    uint32_t thr = 0;
    if (p.top_k > 0 && p.top_k < n)
        thr = bisect(z, n, zmax, 0, false, (float)p.top_k, scratch);
    if (p.top_p < 1.0f) {
        float part = 0.0f;
        for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
            if (kn_float_key(__float_as_uint(z[i])) >= thr)
                part += __expf(z[i] - zmax);
        const float total = kn_block_sum(part, scratch);
        thr = bisect(z, n, zmax, thr, true, p.top_p * total, scratch);
    }

    // the draw: each thread owns a contiguous chunk; a prefix sum over chunk masses finds the
    // chunk holding the target, and its owner walks it
    const int32_t chunk = (n + SMP_THREADS - 1) / SMP_THREADS;
    const int32_t c0 = threadIdx.x * chunk, c1 = min(n, c0 + chunk);
    float own = 0.0f;
    int32_t last = -1;
    for (int32_t i = c0; i < c1; i++)
        if (kn_float_key(__float_as_uint(z[i])) >= thr) {
            own += __expf(z[i] - zmax);
            last = i;
        }
    scan_s[threadIdx.x] = own;
    if (threadIdx.x == 0)
        pick_s = -1;
    __syncthreads();
    if (threadIdx.x == 0) { // serial over 512 partial sums: a fixed order, cheap next to the row
        float run = 0.0f;
        for (int t = 0; t < SMP_THREADS; t++) {
            const float v = scan_s[t];
            scan_s[t] = run;
            run += v;
        }
        scratch[0] = run;
    }
    const int32_t last_any = (int32_t)kn_block_max((float)last, scratch + 1);
    const float total = scratch[0];
    const float target = eng_sample_uniform(p.seed, p.step) * total;
    const float e0 = scan_s[threadIdx.x];
    if (own > 0.0f && target >= e0 && target < e0 + own) {
        float acc = e0;
        int32_t pick = last;
        for (int32_t i = c0; i < c1; i++)
            if (kn_float_key(__float_as_uint(z[i])) >= thr) {
                acc += __expf(z[i] - zmax);
                if (acc > target) {
                    pick = i;
                    break;
                }
            }
        pick_s = pick;
    }
    __syncthreads();
    if (threadIdx.x == 0)
        tokens[r] = pick_s >= 0 ? pick_s : last_any; // the draw rounded past the end
}

extern "C" kn_status kn_sample(const float *logits, int64_t ld, int32_t n_rows, int32_t n_vocab,
                               const kn_sample_params *params, int32_t *tokens, float *scratch,
                               cudaStream_t st)
{
    KN_REQUIRE(logits && params && tokens, "sample: null pointer");
    KN_REQUIRE(n_rows >= 0 && n_vocab > 0 && n_vocab < (1 << 24) && ld >= n_vocab,
               "sample: n_rows %d n_vocab %d ld %lld", n_rows, n_vocab, (long long)ld);
    if (n_rows == 0)
        return KN_OK;
    // z = logits / T needs a row of scratch: the caller's (the engine preallocates it), or a
    // stream-ordered allocation that keeps one-off callers simple
    float *z = scratch;
    if (!z)
        KN_CUDA_CHECK(cudaMallocAsync((void **)&z, sizeof(float) * (size_t)n_rows * (size_t)n_vocab, st));
    // grid: one 512-thread CTA per row
    KN_LAUNCH((unsigned)n_rows, SMP_THREADS, 0, st, sample_kernel)(
        logits, ld, n_vocab, params, z, tokens);
    const cudaError_t launch = cudaGetLastError();
    if (!scratch)
        KN_CUDA_CHECK(cudaFreeAsync(z, st));
    KN_CUDA_CHECK(launch);
    return KN_OK;
}
