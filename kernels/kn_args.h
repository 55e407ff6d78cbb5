/* kn_args.h — argument structs shared by the GPU launchers and their plain-C references:
 * paged attention and sampling parameters (the random draw itself is engine/util/sample_rng.h).
 * Plain C, no CUDA headers, so kernels/ref/ builds without the toolkit. */
#ifndef SERVAL_KN_ARGS_H
#define SERVAL_KN_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "kn_status.h"
/* eng_sample_uniform: the draw the CPU sampler and the GPU kernel share (header-only) */
#include "../engine/util/sample_rng.h"

#ifdef __CUDACC__
#define KN_HOST_DEVICE __host__ __device__
#else
#define KN_HOST_DEVICE
#endif

/* Paged attention over one layer's KV blocks, for decode (one query row per sequence,
 * q_start NULL) or prefill (q_start gives each sequence's rows; chunked prefill when
 * seq_lens[s] exceeds its number of rows). Pointers are device memory for the launchers and
 * host memory for the references; the caller owns all of them.
 *
 * Query row r of sequence s sits at position seq_lens[s] - q_len(s) + (r - q_start[s]) and
 * attends causally to KV positions [0, that position], or with a sliding window (n_swa > 0,
 * StarCoder2) to the last n_swa of them, (position - n_swa, position]; with bidirectional
 * (encoders: BERT; prefill only) every row attends to all of [0, seq_lens[s]). KV position p of
 * sequence s lives in slot block_tables[s * max_blocks_per_seq + p / block_size] * block_size
 * + p % block_size; table entries past ceil(seq_lens[s] / block_size), and those wholly
 * before the window of the sequence's first query row, are never read (may be -1). */
typedef struct kn_attn_args {
    kn_dtype q_dtype;  /* F16 or BF16: queries and output */
    kn_dtype kv_dtype; /* F16 or BF16 */
    const void *q;     /* [n_tok, n_head, head_dim]: rows q_stride elements apart */
    int64_t q_stride;
    const void *k_cache; /* [n_slots, n_head_kv, head_dim] this layer's K */
    const void *v_cache; /* [n_slots, n_head_kv, head_dim] this layer's V */
    int64_t n_slots;     /* n_blocks * block_size */
    const int32_t *block_tables; /* [n_seq, max_blocks_per_seq] */
    int32_t max_blocks_per_seq;
    const int32_t *seq_lens; /* [n_seq] KV length, new tokens included; >= 1 */
    const int32_t *q_start;  /* [n_seq + 1] first query row of each sequence; NULL: decode */
    int32_t n_seq, n_head, n_head_kv, head_dim, block_size;
    int32_t max_seq_len; /* >= every seq_lens[s] (host-known; sizes the split-K grid) */
    int32_t max_q_len;   /* prefill: >= every q_start[s+1] - q_start[s] (host-known) */
    int32_t n_swa;       /* sliding window in positions; 0: full causal attention */
    bool bidirectional;  /* prefill: no causal mask, every row sees every position (encoders;
                            n_swa must be 0); decode ignores it */
    float scale;         /* usually 1/sqrt(head_dim) */
    void *out;           /* [n_tok, n_head, head_dim] q_dtype: rows out_stride elements apart */
    int64_t out_stride;
} kn_attn_args;

/* One row's sampling parameters (one row = one sequence's logits this step). */
typedef struct kn_sample_params {
    float temperature; /* <= 0: greedy argmax (lowest index among equal maxima) */
    int32_t top_k;     /* <= 0 or >= n_vocab: off. Ties at the k-th value are all kept. */
    float top_p;       /* >= 1: off; in (0, 1): keep the most likely tokens whose mass reaches it */
    uint32_t reserved;
    uint64_t seed; /* per sequence */
    uint64_t step; /* per generated token: (seed, step) picks the uniform draw */
} kn_sample_params;

/* Monotone map of a float to an unsigned key (larger float, larger key; -0 < +0). */
static inline KN_HOST_DEVICE uint32_t kn_float_key(uint32_t bits)
{
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/* GGML quantised block types, numbered as in GGUF (engine/gguf/gguf.h). */
typedef enum kn_qtype {
    KN_QTYPE_F32 = 0,
    KN_QTYPE_F16 = 1,
    KN_QTYPE_Q4_0 = 2,
    KN_QTYPE_Q4_1 = 3,
    KN_QTYPE_Q5_0 = 6,
    KN_QTYPE_Q5_1 = 7,
    KN_QTYPE_Q8_0 = 8,
    KN_QTYPE_Q4_K = 12,
    KN_QTYPE_Q5_K = 13,
    KN_QTYPE_Q6_K = 14,
    KN_QTYPE_BF16 = 30
} kn_qtype;

/* Elements per block and bytes per block of a kn_qtype; 0 for an unknown type. */
static inline KN_HOST_DEVICE int kn_qtype_block_elems(kn_qtype t)
{
    switch (t) {
    case KN_QTYPE_F32:
    case KN_QTYPE_F16:
    case KN_QTYPE_BF16: return 1;
    case KN_QTYPE_Q4_0:
    case KN_QTYPE_Q4_1:
    case KN_QTYPE_Q5_0:
    case KN_QTYPE_Q5_1:
    case KN_QTYPE_Q8_0: return 32;
    case KN_QTYPE_Q4_K:
    case KN_QTYPE_Q5_K:
    case KN_QTYPE_Q6_K: return 256;
    }
    return 0;
}
static inline KN_HOST_DEVICE int kn_qtype_block_bytes(kn_qtype t)
{
    switch (t) {
    case KN_QTYPE_F32: return 4;
    case KN_QTYPE_F16:
    case KN_QTYPE_BF16: return 2;
    case KN_QTYPE_Q4_0: return 18;
    case KN_QTYPE_Q4_1: return 20;
    case KN_QTYPE_Q5_0: return 22;
    case KN_QTYPE_Q5_1: return 24;
    case KN_QTYPE_Q8_0: return 34;
    case KN_QTYPE_Q4_K: return 144;
    case KN_QTYPE_Q5_K: return 176;
    case KN_QTYPE_Q6_K: return 210;
    }
    return 0;
}

/* RoPE pairing: llama's "normal" mode rotates adjacent pairs (x[2i], x[2i+1]); NeoX mode
 * (GPT-NeoX, Qwen2, StarCoder2) rotates halves (x[i], x[i + head_dim/2]). */
typedef enum kn_rope_mode {
    KN_ROPE_INTERLEAVED = 0,
    KN_ROPE_NEOX = 2
} kn_rope_mode;

#endif
