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
 * apart (Q and K of a fused QKV row are one call: n_heads = n_head + n_head_kv). Token t
 * turns by pos[t] * base^(-2i/head_dim) / freq_factors[i]. pos: [n_tok] int32, device;
 * freq_factors: [head_dim/2] host floats or NULL (copied into the launch). head_dim even,
 * at most 512. */
kn_status kn_rope(kn_dtype dt, void *x, int64_t row_stride, const int32_t *pos, int64_t n_tok,
                  int32_t n_heads, int32_t head_dim, float base, const float *freq_factors,
                  kn_rope_mode mode, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
