// attn_common.cuh — what the decode and prefill attention kernels share: argument checks,
// the head sizes built, and the paged KV addressing.
#ifndef SERVAL_KN_ATTN_COMMON_CUH
#define SERVAL_KN_ATTN_COMMON_CUH

#include "common.cuh"
#include "kn_args.h"

// Element offset of (position p, kv head) of one sequence's table in a layer's cache.
static __device__ __forceinline__ int64_t kn_kv_offset(const int32_t *table, int32_t p,
                                                       int32_t block_size, int32_t n_head_kv,
                                                       int32_t kvh, int32_t hd)
{
    const int64_t slot = (int64_t)table[p / block_size] * block_size + p % block_size;
    return (slot * n_head_kv + kvh) * hd;
}

// Loads one 16-bit element of runtime dtype (queries: read once per CTA, not worth templating).
static __device__ __forceinline__ float kn_load_act(kn_dtype t, const void *p, int64_t i)
{
    return t == KN_DTYPE_F16 ? __half2float(((const __half *)p)[i])
                             : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
static __device__ __forceinline__ void kn_store_act(kn_dtype t, void *p, int64_t i, float v)
{
    if (t == KN_DTYPE_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}

// The first KV position a query at position pos sees: 0, or with a sliding window of n_swa
// positions, pos - n_swa + 1 (kn_attn_args).
static __host__ __device__ __forceinline__ int32_t kn_attn_first_key(int32_t n_swa, int32_t pos)
{
    return n_swa > 0 && pos - n_swa + 1 > 0 ? pos - n_swa + 1 : 0;
}

// 16 serves the tiny test presets (serval-synth's *-tiny: 4 heads of 16); real models use 64+.
static inline int kn_attn_head_dim_ok(int32_t hd)
{
    return hd == 16 || hd == 32 || hd == 64 || hd == 128 || hd == 256;
}

// Checks what both attention launchers need; decode says whether q_start must be NULL.
static inline kn_status kn_attn_check(const kn_attn_args *a, bool decode)
{
    KN_REQUIRE(a, "attention: null args");
    KN_REQUIRE(a->q && a->k_cache && a->v_cache && a->block_tables && a->seq_lens && a->out,
               "attention: null pointer");
    KN_REQUIRE(decode ? a->q_start == NULL : a->q_start != NULL,
               decode ? "decode attention: q_start must be NULL" : "prefill attention: q_start required");
    KN_REQUIRE(a->q_dtype == KN_DTYPE_F16 || a->q_dtype == KN_DTYPE_BF16,
               "attention: q dtype %d (F16/BF16)", (int)a->q_dtype);
    KN_REQUIRE(a->kv_dtype == KN_DTYPE_F16 || a->kv_dtype == KN_DTYPE_BF16,
               "attention: kv dtype %d (F16/BF16)", (int)a->kv_dtype);
    if (!kn_attn_head_dim_ok(a->head_dim))
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__,
                         "attention: head_dim %d (built: 16, 32, 64, 128, 256)", a->head_dim);
    KN_REQUIRE(a->n_seq >= 0 && a->n_seq < 65536 && a->n_head > 0 && a->n_head_kv > 0 &&
                   a->n_head % a->n_head_kv == 0,
               "attention: n_seq %d n_head %d n_head_kv %d", a->n_seq, a->n_head, a->n_head_kv);
    KN_REQUIRE(a->block_size > 0 && a->max_blocks_per_seq > 0 && a->max_seq_len > 0 &&
                   (int64_t)a->max_blocks_per_seq * a->block_size >= a->max_seq_len &&
                   a->n_slots > 0,
               "attention: block_size %d max_blocks %d max_seq_len %d n_slots %lld",
               a->block_size, a->max_blocks_per_seq, a->max_seq_len, (long long)a->n_slots);
    KN_REQUIRE(a->q_stride >= (int64_t)a->n_head * a->head_dim && a->q_stride % 8 == 0 &&
                   a->out_stride >= (int64_t)a->n_head * a->head_dim && a->out_stride % 8 == 0,
               "attention: strides q %lld out %lld (>= n_head*head_dim, multiples of 8)",
               (long long)a->q_stride, (long long)a->out_stride);
    KN_REQUIRE(KN_ALIGNED(a->q, 16) && KN_ALIGNED(a->out, 16) && KN_ALIGNED(a->k_cache, 16) &&
                   KN_ALIGNED(a->v_cache, 16),
               "attention: q, out and caches must be 16-byte aligned");
    KN_REQUIRE(a->scale > 0.0f, "attention: scale %g", (double)a->scale);
    KN_REQUIRE(a->n_swa >= 0, "attention: sliding window %d", a->n_swa);
    return KN_OK;
}

// What both prefill launchers (SIMT and tensor-core) check before launching.
static inline kn_status kn_prefill_check(const kn_attn_args *a)
{
    kn_status s = kn_attn_check(a, false);
    if (s != KN_OK)
        return s;
    KN_REQUIRE(a->max_q_len > 0 && a->max_q_len <= a->max_seq_len,
               "prefill attention: max_q_len %d (1..max_seq_len %d)", a->max_q_len, a->max_seq_len);
    KN_REQUIRE(!a->bidirectional || a->n_swa == 0,
               "prefill attention: bidirectional with a sliding window (n_swa %d)", a->n_swa);
    return KN_OK;
}

#endif
