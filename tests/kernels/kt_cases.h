/* kt_cases.h — the shapes every kernel is checked and timed on: one case table per op, read by
 * tests/kernels/test_<op>.c (the cases marked KT_TEST, on GPUs and the CPU emulator) and by
 * bench/kernels (the cases marked KT_BENCH, model-sized: validated against kernels/ref with
 * the test's tolerance, then timed). Plain C data. */
#ifndef SERVAL_KT_CASES_H
#define SERVAL_KT_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"
#include "kt_data.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { KT_TEST = 1, KT_BENCH = 2 };

typedef struct kt_embed_case {
    const char *name;
    unsigned use;
    kn_dtype table_dt, out_dt;
    int64_t n_vocab, d, n;
    uint64_t seed;
} kt_embed_case;

/* RMSNorm and LayerNorm: resid [n, d] fp32 (+= add when add), out [n, d] of dt */
typedef struct kt_norm_case {
    const char *name;
    unsigned use;
    kn_dtype dt;
    int64_t n, d;
    int add;
    uint64_t seed;
} kt_norm_case;

/* x [n_tok, n_heads + 3, head_dim] rows (the 3 trailing heads stand for V: never rotated);
 * freq_scale: linear RoPE scaling (1: none) */
typedef struct kt_rope_case {
    const char *name;
    unsigned use;
    kn_dtype dt;
    kn_rope_mode mode;
    int32_t n_tok, n_heads, head_dim;
    int factors;
    float freq_scale;
    uint64_t seed;
} kt_rope_case;

/* K and V are column ranges of src rows [n_tok, src_stride]; slots from kt_kv_slots */
typedef struct kt_kv_write_case {
    const char *name;
    unsigned use;
    kn_dtype src_dt, cache_dt;
    int64_t n_tok, kv_dim, src_stride, n_slots;
    uint64_t seed;
} kt_kv_write_case;

/* SwiGLU: fused gate|up rows [n, 2 * ff] computed in place; GELU: n elements */
typedef struct kt_act_case {
    const char *name;
    unsigned use;
    kn_dtype dt;
    int64_t n, ff;
    uint64_t seed;
} kt_act_case;

typedef struct kt_dequant_case {
    const char *name;
    unsigned use;
    kn_qtype type;
    kn_dtype out_dt;
    int64_t rows, cols;
    uint64_t seed;
} kt_dequant_case;

/* Paged attention over n_seq sequences: sequence s has KV length lens[s % n_pattern] and (for
 * prefill, q_lens[0] != 0) a chunk of q_lens[s % n_pattern] query rows at its end; n_swa > 0:
 * a sliding window of that many positions (kn_attn_args). */
enum { KT_ATTN_PATTERN = 8 };
typedef struct kt_attn_case {
    const char *name;
    unsigned use;
    kn_dtype q_dt, kv_dt;
    int32_t n_head, n_head_kv, head_dim, block_size;
    int32_t n_seq, n_pattern;
    int32_t lens[KT_ATTN_PATTERN], q_lens[KT_ATTN_PATTERN];
    uint64_t seed;
    int32_t n_swa;
    bool bidirectional; /* prefill without the causal mask (encoders) */
} kt_attn_case;

typedef struct kt_gemm_case {
    const char *name;
    unsigned use;
    kn_dtype in_dt, out_dt;
    int64_t m, n, k;
    float beta;
    uint64_t seed;
} kt_gemm_case;

/* n_rows rows of n_vocab logits; params from kt_sample_params */
typedef struct kt_sample_case {
    const char *name;
    unsigned use;
    int32_t n_rows, n_vocab;
    uint64_t seed;
} kt_sample_case;

/* Sentence pooling (kn_pool_l2): n_seq texts of 1..max_len rows (kt_pool_layout), d columns,
 * rows stride apart; cls: the first row instead of the mean. */
typedef struct kt_pool_case {
    const char *name;
    unsigned use;
    kn_dtype dt;
    int32_t n_seq, max_len;
    int64_t d, stride;
    bool cls;
    uint64_t seed;
} kt_pool_case;

#define KT_TABLE(type, name)                                                                  \
    extern const type name[];                                                                 \
    extern const size_t name##_count;
KT_TABLE(kt_embed_case, kt_embed_cases)
/* position rows added to an fp32 stream: n_vocab is the table's rows, out_dt F32 */
KT_TABLE(kt_embed_case, kt_embed_add_cases)
KT_TABLE(kt_norm_case, kt_rmsnorm_cases)
KT_TABLE(kt_norm_case, kt_layernorm_cases)
KT_TABLE(kt_rope_case, kt_rope_cases)
KT_TABLE(kt_kv_write_case, kt_kv_write_cases)
KT_TABLE(kt_act_case, kt_swiglu_cases)
KT_TABLE(kt_act_case, kt_gelu_cases)
KT_TABLE(kt_act_case, kt_gelu_erf_cases) /* the exact erf form (BERT) */
KT_TABLE(kt_pool_case, kt_pool_l2_cases)
/* bias add: n rows of ff columns, rows ff + 5 apart (a fused QKV row with bq|bk|bv) */
KT_TABLE(kt_act_case, kt_bias_add_cases)
/* p2p all-reduce's sum: n ranks' buffers of ff elements each, summed (allreduce_p2p.h) */
KT_TABLE(kt_act_case, kt_p2p_sum_cases)
KT_TABLE(kt_dequant_case, kt_dequant_cases)
KT_TABLE(kt_attn_case, kt_decode_cases)
KT_TABLE(kt_attn_case, kt_prefill_cases)
KT_TABLE(kt_gemm_case, kt_gemm_cases)
KT_TABLE(kt_sample_case, kt_sample_cases)
#undef KT_TABLE

/* Decode attention is also run with these forced split counts (0: the launcher's choice). */
extern const int32_t kt_decode_splits[];
extern const size_t kt_decode_splits_count;

/* The tolerances the tests and the bench share beyond kt_rtol(out dtype): */
/* tensor-core prefill rounds Q and P to the cache's 16-bit type (see test_attention.c) */
double kt_prefill_tc_rtol(kn_dtype kv_dt);
/* RoPE at position 32767 carries sincosf's last-bit differences: 2 output ulps */
double kt_rope_rtol(kn_dtype dt);
/* GEMM: fp32 sums of k products in different orders */
double kt_gemm_rtol(kn_dtype out_dt);

/* slots[n_tok] for a kv_write case: distinct and scattered over the pool, one -1 (skipped)
 * when n_tok > 4, the last token in the pool's last slot. */
void kt_kv_slots(const kt_kv_write_case *c, int32_t *slots);
/* lens[n_seq] and q_lens[n_seq] (q_lens untouched for decode) of an attention case. */
void kt_attn_lens(const kt_attn_case *c, int32_t *lens, int32_t *q_lens);
/* seq_off[n_seq], seq_len[n_seq] of a pooling case: lengths 1..max_len from the case's seed,
 * text 1 empty when n_seq > 2 (a zero row out), texts packed in order; returns the rows used. */
int64_t kt_pool_layout(const kt_pool_case *c, int32_t *seq_off, int32_t *seq_len);
/* A random source matrix for a dequant case (valid blocks with finite scales); *bytes gets its
 * size. Caller frees. */
void *kt_dequant_source(const kt_dequant_case *c, kt_rng *r, size_t *bytes);
/* Sampling parameters of row i: greedy, temperature, top-k, top-p and combinations by i % 8. */
kn_sample_params kt_sample_params(int32_t i, kt_rng *r);

#ifdef __cplusplus
}
#endif

#endif
