// kv_write.cu — scatters new tokens' K and V rows into their paged-cache slots (vLLM's
// reshape_and_cache for Serval's [slot, kv_head, head_dim] layout).
#include "kv_write.h"

#include "common.cuh"

template <typename ST, typename CT>
static __global__ void kv_write_kernel(const ST *k, const ST *v, int64_t src_stride,
                                       const int32_t *slots, int64_t kv_dim, CT *kc, CT *vc,
                                       int64_t n_slots)
{
    const int64_t t = blockIdx.x;
    const int64_t slot = slots[t];
    if (slot < 0 || slot >= n_slots)
        return;
    for (int64_t j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        kc[slot * kv_dim + j] = kn_from_f32<CT>(kn_to_f32(k[t * src_stride + j]));
        vc[slot * kv_dim + j] = kn_from_f32<CT>(kn_to_f32(v[t * src_stride + j]));
    }
}

template <typename ST>
static kn_status launch(const ST *k, const ST *v, int64_t src_stride, const int32_t *slots,
                        int64_t n_tok, int64_t kv_dim, kn_dtype cdt, void *kc, void *vc,
                        int64_t n_slots, cudaStream_t st)
{
    // grid: one CTA per token, 128 threads over its kv_dim elements
    if (cdt == KN_DTYPE_F16)
        KN_LAUNCH((unsigned)n_tok, 128, 0, st, kv_write_kernel)(
            k, v, src_stride, slots, kv_dim, (__half *)kc, (__half *)vc, n_slots);
    else
        KN_LAUNCH((unsigned)n_tok, 128, 0, st, kv_write_kernel)(
            k, v, src_stride, slots, kv_dim, (__nv_bfloat16 *)kc, (__nv_bfloat16 *)vc, n_slots);
    KN_LAUNCH_CHECK();
    return KN_OK;
}

extern "C" kn_status kn_kv_write(kn_dtype sdt, const void *k, const void *v, int64_t src_stride,
                                 const int32_t *slots, int64_t n_tok, int64_t kv_dim,
                                 kn_dtype cdt, void *k_cache, void *v_cache, int64_t n_slots,
                                 cudaStream_t st)
{
    KN_REQUIRE(k && v && slots && k_cache && v_cache, "kv_write: null pointer");
    KN_REQUIRE(n_tok >= 0 && n_tok < (1ll << 31) && kv_dim > 0 && src_stride >= kv_dim &&
                   n_slots > 0,
               "kv_write: bad shape n_tok %lld kv_dim %lld src_stride %lld n_slots %lld",
               (long long)n_tok, (long long)kv_dim, (long long)src_stride, (long long)n_slots);
    KN_REQUIRE((sdt == KN_DTYPE_F16 || sdt == KN_DTYPE_BF16) &&
                   (cdt == KN_DTYPE_F16 || cdt == KN_DTYPE_BF16),
               "kv_write: dtypes %d -> %d (F16/BF16 only)", (int)sdt, (int)cdt);
    if (n_tok == 0)
        return KN_OK;
    if (sdt == KN_DTYPE_F16)
        return launch((const __half *)k, (const __half *)v, src_stride, slots, n_tok, kv_dim, cdt,
                      k_cache, v_cache, n_slots, st);
    return launch((const __nv_bfloat16 *)k, (const __nv_bfloat16 *)v, src_stride, slots, n_tok,
                  kv_dim, cdt, k_cache, v_cache, n_slots, st);
}
