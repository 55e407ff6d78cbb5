/* kv_write.h — writes new tokens' K and V into paged KV blocks (C interface). */
#ifndef SERVAL_KN_KV_WRITE_H
#define SERVAL_KN_KV_WRITE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* k_cache[slots[t], :] = k[t, :] and v_cache[slots[t], :] = v[t, :] for t < n_tok, converting
 * sdt (F16/BF16, the activations) to cdt (F16/BF16, the cache). slots[t] = block * block_size
 * + offset; a negative slot (padding) is skipped, one >= n_slots too. k, v: [n_tok, kv_dim]
 * rows src_stride elements apart; caches: [n_slots, kv_dim] (one layer). Device memory. */
kn_status kn_kv_write(kn_dtype sdt, const void *k, const void *v, int64_t src_stride,
                      const int32_t *slots, int64_t n_tok, int64_t kv_dim, kn_dtype cdt,
                      void *k_cache, void *v_cache, int64_t n_slots, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
