/* rope.h — rotary position embedding, interleaved and NeoX (C interface). */
#ifndef SERVAL_KN_ROPE_H
#define SERVAL_KN_ROPE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rotates x in place: [n_tok, n_heads, head_dim] of dt (F16/BF16), rows row_stride elements
 * apart (Q and K of a fused QKV row are one call: n_heads = n_head + n_head_kv). Pair i of
 * token t turns by pos[t] * freq_scale * base^(-2i/head_dim) / freq_factors[i]: freq_scale
 * in (0, 1] is linear RoPE scaling (positions multiplied by it, 1 / rope.scaling.factor,
 * DeepSeek-Coder: 0.25; 1: none), folded into the host's frequency table. pos: [n_tok]
 * int32, device; freq_factors: [head_dim/2] host floats or NULL (copied into the launch).
 * head_dim even, at most 512. */
kn_status kn_rope(kn_dtype dt, void *x, int64_t row_stride, const int32_t *pos, int64_t n_tok,
                  int32_t n_heads, int32_t head_dim, float base, float freq_scale,
                  const float *freq_factors, kn_rope_mode mode, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
