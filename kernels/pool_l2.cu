// pool_l2.cu — sentence embeddings from an encoder's last hidden rows: mean (or CLS) pooling
// and L2 normalisation fused, one CTA per text (its columns strided over the threads, so each
// row's read is coalesced); the pooled vector waits in `out` between the two passes.
#include "pool_l2.h"

#include "common.cuh"

template <typename T>
static __global__ void pool_l2_kernel(const T *x, int64_t stride, int64_t d,
                                      const int32_t *seq_off, const int32_t *seq_len,
                                      int cls, float *out)
{
    __shared__ float scratch[32];
    const int s = blockIdx.x;
    const int64_t off = seq_off[s];
    const int32_t len = seq_len[s], cnt = cls ? (len > 0 ? 1 : 0) : len;
    float *o = out + (int64_t)s * d;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
        float acc = 0.0f;
        for (int32_t t = 0; t < cnt; t++)
            acc += kn_to_f32(x[(off + t) * stride + c]);
        const float v = cnt > 0 ? acc / (float)cnt : 0.0f;
        o[c] = v;
        ss += v * v;
    }
    ss = kn_block_sum(ss, scratch);
    const float inv = ss > 0.0f ? rsqrtf(ss) : 1.0f;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
        o[c] *= inv; // each thread rescales the columns it wrote itself
}

extern "C" kn_status kn_pool_l2(kn_dtype dt, const void *x, int64_t stride, int64_t d,
                                const int32_t *seq_off, const int32_t *seq_len, int32_t n_seq,
                                kn_pool_mode mode, float *out, cudaStream_t st)
{
    KN_REQUIRE(x && seq_off && seq_len && out, "pool_l2: null pointer");
    KN_REQUIRE(d > 0 && stride >= d && n_seq >= 0, "pool_l2: bad shape d %lld stride %lld n_seq %d",
               (long long)d, (long long)stride, (int)n_seq);
    KN_REQUIRE(mode == KN_POOL_MODE_MEAN || mode == KN_POOL_MODE_CLS, "pool_l2: mode %d",
               (int)mode);
    if (n_seq == 0)
        return KN_OK;
    const int cls = mode == KN_POOL_MODE_CLS;
    const unsigned threads = kn_row_threads(d);
    // grid: one CTA per text, d rounded up to a warp (at most 256) threads over its columns
    if (dt == KN_DTYPE_F32)
        KN_LAUNCH((unsigned)n_seq, threads, 0, st, pool_l2_kernel)(
            (const float *)x, stride, d, seq_off, seq_len, cls, out);
    else if (dt == KN_DTYPE_F16)
        KN_LAUNCH((unsigned)n_seq, threads, 0, st, pool_l2_kernel)(
            (const __half *)x, stride, d, seq_off, seq_len, cls, out);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH((unsigned)n_seq, threads, 0, st, pool_l2_kernel)(
            (const __nv_bfloat16 *)x, stride, d, seq_off, seq_len, cls, out);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "pool_l2: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
