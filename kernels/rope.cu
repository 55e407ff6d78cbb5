// rope.cu — rotary position embedding in place, interleaved (llama) or NeoX pairs, with linear
// position scaling. The frequency table (scaling folded in) is computed on the host exactly as
// kernels/ref/rope.c does and passed by value, so the only difference from the reference is
// sincosf's last bit.
#include "rope.h"

#include <math.h>

#include "common.cuh"

enum { ROPE_MAX_HALF = 256 };
struct rope_freqs {
    float inv_freq[ROPE_MAX_HALF]; // [head_dim / 2]
};

template <typename T>
static __global__ void rope_kernel(T *x, int64_t row_stride, const int32_t *pos, int32_t n_heads,
                                   int32_t head_dim, int neox, const rope_freqs f)
{
    const int64_t t = blockIdx.x;
    const int32_t half = head_dim / 2;
    const float p = (float)pos[t];
    for (int32_t k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        const int32_t h = k / half, i = k % half;
        float s, c;
        sincosf(__fmul_rn(p, f.inv_freq[i]), &s, &c);
        T *row = x + t * row_stride + (int64_t)h * head_dim;
        const int32_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const float x0 = kn_to_f32(row[i0]), x1 = kn_to_f32(row[i1]);
        // unfused, as the reference computes it
        row[i0] = kn_from_f32<T>(__fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
        row[i1] = kn_from_f32<T>(__fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c)));
    }
}

extern "C" kn_status kn_rope(kn_dtype dt, void *x, int64_t row_stride, const int32_t *pos,
                             int64_t n_tok, int32_t n_heads, int32_t head_dim, float base,
                             float freq_scale, const float *freq_factors, kn_rope_mode mode,
                             cudaStream_t st)
{
    KN_REQUIRE(x && pos, "rope: null pointer");
    KN_REQUIRE(head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= ROPE_MAX_HALF,
               "rope: head_dim %d must be even and at most %d", head_dim, 2 * ROPE_MAX_HALF);
    KN_REQUIRE(n_heads > 0 && n_tok >= 0 && n_tok < (1ll << 31) &&
                   row_stride >= (int64_t)n_heads * head_dim,
               "rope: bad shape n_tok %lld n_heads %d row_stride %lld", (long long)n_tok, n_heads,
               (long long)row_stride);
    KN_REQUIRE(mode == KN_ROPE_INTERLEAVED || mode == KN_ROPE_NEOX, "rope: mode %d", (int)mode);
    KN_REQUIRE(base > 0.0f, "rope: base %g", (double)base);
    KN_REQUIRE(freq_scale > 0.0f && freq_scale <= 1.0f, "rope: freq_scale %g (0, 1]",
               (double)freq_scale);
    if (n_tok == 0)
        return KN_OK;
    rope_freqs f;
    for (int32_t i = 0; i < head_dim / 2; i++) {
        double v = pow((double)base, -2.0 * i / (double)head_dim);
        if (freq_factors)
            v /= freq_factors[i];
        f.inv_freq[i] = (float)(v * freq_scale); // (p * scale) * f = p * (f * scale)
    }
    const int neox = mode == KN_ROPE_NEOX;
    // grid: one CTA per token; 128 threads over its (head, pair) rotations
    if (dt == KN_DTYPE_F16)
        KN_LAUNCH((unsigned)n_tok, 128, 0, st, rope_kernel)(
            (__half *)x, row_stride, pos, n_heads, head_dim, neox, f);
    else if (dt == KN_DTYPE_BF16)
        KN_LAUNCH((unsigned)n_tok, 128, 0, st, rope_kernel)(
            (__nv_bfloat16 *)x, row_stride, pos, n_heads, head_dim, neox, f);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "rope: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
