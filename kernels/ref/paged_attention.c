/* paged_attention.c — reference causal attention over paged KV blocks, for decode and
 * (chunked) prefill alike: one query row at a time, scores for every visible position (all
 * earlier ones, or the last n_swa with a sliding window; every position of the sequence for a
 * bidirectional prefill), softmax, weighted sum of V. */
#include <math.h>
#include <stdlib.h>

#include "ref.h"

/* Index of element 0 of (position p, kv head) of sequence s in the caches. */
static size_t kv_index(const kn_attn_args *a, int32_t s, int32_t p, int32_t kvh)
{
    const int32_t blk = a->block_tables[(size_t)s * (size_t)a->max_blocks_per_seq +
                                        (size_t)(p / a->block_size)];
    const size_t slot = (size_t)blk * (size_t)a->block_size + (size_t)(p % a->block_size);
    return (slot * (size_t)a->n_head_kv + (size_t)kvh) * (size_t)a->head_dim;
}

void kn_ref_paged_attention(const kn_attn_args *a)
{
    const int32_t hd = a->head_dim, group = a->n_head / a->n_head_kv;
    float *sc = malloc(sizeof(float) * (size_t)(a->max_seq_len > 0 ? a->max_seq_len : 1));
    float *acc = malloc(sizeof(float) * (size_t)hd);
    if (!sc || !acc)
        abort(); /* test-only code: no way to report */
    for (int32_t s = 0; s < a->n_seq; s++) {
        const int32_t r0 = a->q_start ? a->q_start[s] : s;
        const int32_t q_len = a->q_start ? a->q_start[s + 1] - r0 : 1;
        for (int32_t r = r0; r < r0 + q_len; r++) {
            const int32_t pos = a->seq_lens[s] - q_len + (r - r0);
            const int32_t lo = a->n_swa > 0 && pos - a->n_swa + 1 > 0 ? pos - a->n_swa + 1 : 0;
            /* the last visible key: this row's position, or the sequence's end (encoders) */
            const int32_t hi = a->bidirectional && a->q_start ? a->seq_lens[s] - 1 : pos;
            for (int32_t h = 0; h < a->n_head; h++) {
                const int32_t kvh = h / group;
                const size_t qo = (size_t)r * (size_t)a->q_stride + (size_t)h * (size_t)hd;
                float mx = -INFINITY;
                for (int32_t p = lo; p <= hi; p++) {
                    const size_t ko = kv_index(a, s, p, kvh);
                    float dot = 0.0f;
                    for (int32_t i = 0; i < hd; i++)
                        dot += kn_ref_load(a->q_dtype, a->q, qo + (size_t)i) *
                               kn_ref_load(a->kv_dtype, a->k_cache, ko + (size_t)i);
                    sc[p] = dot * a->scale;
                    mx = fmaxf(mx, sc[p]);
                }
                float sum = 0.0f;
                for (int32_t p = lo; p <= hi; p++) {
                    sc[p] = expf(sc[p] - mx);
                    sum += sc[p];
                }
                for (int32_t i = 0; i < hd; i++)
                    acc[i] = 0.0f;
                for (int32_t p = lo; p <= hi; p++) {
                    const size_t vo = kv_index(a, s, p, kvh);
                    for (int32_t i = 0; i < hd; i++)
                        acc[i] += sc[p] * kn_ref_load(a->kv_dtype, a->v_cache, vo + (size_t)i);
                }
                const size_t oo = (size_t)r * (size_t)a->out_stride + (size_t)h * (size_t)hd;
                for (int32_t i = 0; i < hd; i++)
                    kn_ref_store(a->q_dtype, a->out, oo + (size_t)i, acc[i] / sum);
            }
        }
    }
    free(sc);
    free(acc);
}
