/* rope.c — reference rotary position embedding, interleaved (llama) and NeoX pairings, with
 * linear position scaling. */
#include <math.h>

#include "ref.h"

void kn_ref_rope_inv_freq(int32_t head_dim, float base, float freq_scale,
                          const float *freq_factors, float *inv_freq)
{
    for (int32_t i = 0; i < head_dim / 2; i++) {
        double f = pow((double)base, -2.0 * i / (double)head_dim);
        if (freq_factors)
            f /= freq_factors[i];
        inv_freq[i] = (float)(f * freq_scale);
    }
}

void kn_ref_rope(kn_dtype dt, void *x, int64_t row_stride, const int32_t *pos, int64_t n_tok,
                 int32_t n_heads, int32_t head_dim, float base, float freq_scale,
                 const float *freq_factors, kn_rope_mode mode)
{
    float inv_freq[512];
    const int32_t half = head_dim / 2;
    kn_ref_rope_inv_freq(head_dim, base, freq_scale, freq_factors, inv_freq);
    for (int64_t t = 0; t < n_tok; t++) {
        for (int32_t h = 0; h < n_heads; h++) {
            const size_t row = (size_t)(t * row_stride + (int64_t)h * head_dim);
            for (int32_t i = 0; i < half; i++) {
                const float theta = (float)pos[t] * inv_freq[i];
                const float c = cosf(theta), s = sinf(theta);
                const size_t i0 = row + (size_t)(mode == KN_ROPE_NEOX ? i : 2 * i);
                const size_t i1 = i0 + (size_t)(mode == KN_ROPE_NEOX ? half : 1);
                const float x0 = kn_ref_load(dt, x, i0), x1 = kn_ref_load(dt, x, i1);
                kn_ref_store(dt, x, i0, x0 * c - x1 * s);
                kn_ref_store(dt, x, i1, x0 * s + x1 * c);
            }
        }
    }
}
