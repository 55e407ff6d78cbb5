/* kv_write.c — reference write of new tokens' K and V into their paged-cache slots. */
#include "ref.h"

void kn_ref_kv_write(kn_dtype sdt, const void *k, const void *v, int64_t src_stride,
                     const int32_t *slots, int64_t n_tok, int64_t kv_dim, kn_dtype cdt,
                     void *k_cache, void *v_cache)
{
    for (int64_t t = 0; t < n_tok; t++) {
        if (slots[t] < 0)
            continue;
        for (int64_t j = 0; j < kv_dim; j++) {
            const size_t dst = (size_t)slots[t] * (size_t)kv_dim + (size_t)j;
            const size_t src = (size_t)(t * src_stride + j);
            kn_ref_store(cdt, k_cache, dst, kn_ref_load(sdt, k, src));
            kn_ref_store(cdt, v_cache, dst, kn_ref_load(sdt, v, src));
        }
    }
}
