/* kt_cases.c — the case tables of kt_cases.h: small odd shapes for the tests (KT_TEST), model
 * shapes for the bench (KT_BENCH: StarCoder-1B d 2048 / ff 8192 / 16 heads of 128 over one KV
 * head, SmolLM2-135M 9 heads of 64 over 3, a 49152 vocabulary). */
#include "kt_cases.h"

#define T KT_TEST
#define B KT_BENCH
#define F32 KN_DTYPE_F32
#define F16 KN_DTYPE_F16
#define BF16 KN_DTYPE_BF16
#define COUNT(table) const size_t table##_count = sizeof table / sizeof table[0]

/* every table/output dtype pair, an odd width; tokens include 0, n_vocab-1, -1 and n_vocab */
const kt_embed_case kt_embed_cases[] = {
    {"embed f32->f32", T, F32, F32, 1001, 579, 41, 1},
    {"embed f32->f16", T, F32, F16, 1001, 579, 41, 2},
    {"embed f32->bf16", T, F32, BF16, 1001, 579, 41, 3},
    {"embed f16->f32", T, F16, F32, 1001, 579, 41, 4},
    {"embed f16->f16", T, F16, F16, 1001, 579, 41, 5},
    {"embed f16->bf16", T, F16, BF16, 1001, 579, 41, 6},
    {"embed bf16->f32", T, BF16, F32, 1001, 579, 41, 7},
    {"embed bf16->f16", T, BF16, F16, 1001, 579, 41, 8},
    {"embed bf16->bf16", T, BF16, BF16, 1001, 579, 41, 9},
    {"embed 4096 tok x 2048 bf16->f32", B, BF16, F32, 49152, 2048, 4096, 10},
};
COUNT(kt_embed_cases);

/* StarCoder's learned positions onto the residual stream: every table dtype, an odd width */
const kt_embed_case kt_embed_add_cases[] = {
    {"embed_add f32", T, F32, F32, 2048, 579, 41, 11},
    {"embed_add f16", T, F16, F32, 2048, 579, 41, 12},
    {"embed_add bf16", T, BF16, F32, 2048, 64, 77, 13},
    {"embed_add 4096 pos x 2048 bf16", B, BF16, F32, 8192, 2048, 4096, 14},
};
COUNT(kt_embed_add_cases);

const kt_norm_case kt_rmsnorm_cases[] = {
    {"rmsnorm+add 1x576 bf16", T, BF16, 1, 576, 1, 1},
    {"rmsnorm+add 37x2049 f16", T, F16, 37, 2049, 1, 2},
    {"rmsnorm 5x131 bf16", T, BF16, 5, 131, 0, 3},
    {"rmsnorm+add 4096x2048 bf16", B, BF16, 4096, 2048, 1, 4},
    {"rmsnorm+add 64x576 bf16 (decode)", B, BF16, 64, 576, 1, 5},
};
COUNT(kt_rmsnorm_cases);

const kt_norm_case kt_layernorm_cases[] = {
    {"layernorm+add 1x2048 f16", T, F16, 1, 2048, 1, 4},
    {"layernorm+add 33x577 bf16", T, BF16, 33, 577, 1, 5},
    {"layernorm 3x97 f16", T, F16, 3, 97, 0, 6},
    {"layernorm+add 7x64 bf16 (tiny models: 64 threads)", T, BF16, 7, 64, 1, 8},
    {"layernorm+add 4096x2048 bf16", B, BF16, 4096, 2048, 1, 7},
    {"layernorm+add 64x3072 bf16 (decode)", B, BF16, 64, 3072, 1, 9},
};
COUNT(kt_layernorm_cases);

/* linear scaling: DeepSeek-Coder's 0.25 (interleaved, MHA), 0.5 on NeoX, head size 16 */
const kt_rope_case kt_rope_cases[] = {
    {"rope interleaved 19 tok x 12 x 64 bf16", T, BF16, KN_ROPE_INTERLEAVED, 19, 12, 64, 0, 1.0f, 1},
    {"rope interleaved 1 tok x 5 x 128 f16 factors", T, F16, KN_ROPE_INTERLEAVED, 1, 5, 128, 1, 1.0f, 2},
    {"rope neox 23 tok x 9 x 128 f16", T, F16, KN_ROPE_NEOX, 23, 9, 128, 0, 1.0f, 3},
    {"rope neox 2 tok x 3 x 32 bf16 factors", T, BF16, KN_ROPE_NEOX, 2, 3, 32, 1, 1.0f, 4},
    {"rope interleaved 17 tok x 32 x 128 bf16 linear 0.25", T, BF16, KN_ROPE_INTERLEAVED, 17, 32, 128, 0, 0.25f, 7},
    {"rope neox 9 tok x 6 x 16 f16 linear 0.5", T, F16, KN_ROPE_NEOX, 9, 6, 16, 0, 0.5f, 8},
    {"rope neox 4096 tok x 17 x 128 bf16", B, BF16, KN_ROPE_NEOX, 4096, 17, 128, 0, 1.0f, 5},
    {"rope interleaved 4096 tok x 12 x 64 bf16", B, BF16, KN_ROPE_INTERLEAVED, 4096, 12, 64, 0, 1.0f, 6},
    {"rope interleaved 4096 tok x 48 x 128 bf16 linear 0.25", B, BF16, KN_ROPE_INTERLEAVED, 4096, 48, 128, 0, 0.25f, 9},
};
COUNT(kt_rope_cases);

/* padded source rows (3 KV widths + 8), every dtype pair */
const kt_kv_write_case kt_kv_write_cases[] = {
    {"kv_write f16->f16", T, F16, F16, 29, 192, 584, 640, 5},
    {"kv_write f16->bf16", T, F16, BF16, 29, 192, 584, 640, 6},
    {"kv_write bf16->f16", T, BF16, F16, 29, 192, 584, 640, 7},
    {"kv_write bf16->bf16", T, BF16, BF16, 29, 192, 584, 640, 8},
    {"kv_write 4096 tok x 128 bf16->f16", B, BF16, F16, 4096, 128, 18 * 128, 8192, 9},
};
COUNT(kt_kv_write_cases);

const kt_act_case kt_swiglu_cases[] = {
    {"swiglu 7x1537 f16 (in place)", T, F16, 7, 1537, 60},
    {"swiglu 7x1537 bf16 (in place)", T, BF16, 7, 1537, 61},
    {"swiglu 4096x8192 bf16 (in place)", B, BF16, 4096, 8192, 62},
};
COUNT(kt_swiglu_cases);

const kt_act_case kt_gelu_cases[] = {
    {"gelu 24581 f16", T, F16, 8192 * 3 + 5, 0, 70},
    {"gelu 24581 bf16", T, BF16, 8192 * 3 + 5, 0, 71},
    {"gelu 4096x8192 bf16", B, BF16, 4096 * 8192, 0, 72},
};
COUNT(kt_gelu_cases);

/* the exact erf GELU (BERT): all-MiniLM-L6-v2's FFN is 1536 wide; 64 texts x 128 tokens */
const kt_act_case kt_gelu_erf_cases[] = {
    {"gelu_erf 24581 f16", T, F16, 8192 * 3 + 5, 0, 78},
    {"gelu_erf 24581 bf16", T, BF16, 8192 * 3 + 5, 0, 79},
    {"gelu_erf 8192x1536 bf16", B, BF16, 8192 * 1536, 0, 80},
};
COUNT(kt_gelu_erf_cases);

/* all-MiniLM-L6-v2: d 384, mean pooling; CLS for BERT-style models; padded rows */
const kt_pool_case kt_pool_l2_cases[] = {
    {"pool_l2 mean 9 texts x 384 f32", T, F32, 9, 37, 384, 384, false, 82},
    {"pool_l2 mean 9 texts x 384 f16", T, F16, 9, 37, 384, 392, false, 83},
    {"pool_l2 mean 9 texts x 1001 bf16", T, BF16, 9, 37, 1001, 1001, false, 84},
    {"pool_l2 cls 7 texts x 384 bf16", T, BF16, 7, 20, 384, 400, true, 85},
    {"pool_l2 mean 1 text x 20 bf16", T, BF16, 1, 5, 20, 20, false, 86},
    {"pool_l2 mean 64 texts x 384 bf16", B, BF16, 64, 256, 384, 384, false, 87},
    {"pool_l2 cls 64 texts x 768 bf16", B, BF16, 64, 256, 768, 768, true, 88},
};
COUNT(kt_pool_l2_cases);

/* Qwen2 QKV rows: 0.5B (dq 896 + 2 * 128), 7B (3584 + 2 * 512); odd widths */
const kt_act_case kt_bias_add_cases[] = {
    {"bias_add 7x1152 f16", T, F16, 7, 1152, 73},
    {"bias_add 13x1001 bf16", T, BF16, 13, 1001, 74},
    {"bias_add 1x4608 bf16", T, BF16, 1, 4608, 75},
    {"bias_add 4096x1152 bf16", B, BF16, 4096, 1152, 76},
    {"bias_add 4096x4608 bf16", B, BF16, 4096, 4608, 77},
};
COUNT(kt_bias_add_cases);

/* Tensor parallelism's decode all-reduce: n_tokens x hidden per rank (1.5B: 1536, 7B: 4096),
 * batch 1 and 64; on one GPU every "rank" is a buffer of that GPU (peer reads over NVLink
 * need a multi-GPU session: engine/comm/comm_nccl.h) */
const kt_act_case kt_p2p_sum_cases[] = {
    {"p2p_sum 2 ranks x 515 bf16", T, BF16, 2, 515, 78},
    {"p2p_sum 3 ranks x 37 f16", T, F16, 3, 37, 79},
    {"p2p_sum 8 ranks x 1000 f32", T, F32, 8, 1000, 80},
    {"p2p_sum 2 ranks x 1536 bf16 (1.5B, 1 token)", B, BF16, 2, 1536, 81},
    {"p2p_sum 2 ranks x 64x1536 bf16 (1.5B, 64)", B, BF16, 2, 64 * 1536, 82},
    {"p2p_sum 4 ranks x 4096 bf16 (7B, 1 token)", B, BF16, 4, 4096, 83},
    {"p2p_sum 4 ranks x 64x4096 bf16 (7B, 64)", B, BF16, 4, 64 * 4096, 84},
    {"p2p_sum 8 ranks x 64x4096 bf16 (7B, 64)", B, BF16, 8, 64 * 4096, 85},
};
COUNT(kt_p2p_sum_cases);

/* whole blocks of every type (3 * 256 columns), to every output type */
#define DQ(name, t, seed)                                                                      \
    {"dequant " name " -> f16", T, t, F16, 13, 768, seed},                                     \
    {"dequant " name " -> bf16", T, t, BF16, 13, 768, seed + 1},                               \
    {"dequant " name " -> f32", T, t, F32, 13, 768, seed + 2}
const kt_dequant_case kt_dequant_cases[] = {
    DQ("q4_0", KN_QTYPE_Q4_0, 80),
    DQ("q4_1", KN_QTYPE_Q4_1, 83),
    DQ("q8_0", KN_QTYPE_Q8_0, 86),
    DQ("q5_0", KN_QTYPE_Q5_0, 110),
    DQ("q5_1", KN_QTYPE_Q5_1, 113),
    DQ("q4_k", KN_QTYPE_Q4_K, 116),
    DQ("q5_k", KN_QTYPE_Q5_K, 119),
    DQ("q6_k", KN_QTYPE_Q6_K, 89),
    DQ("f16", KN_QTYPE_F16, 92),
    DQ("bf16", KN_QTYPE_BF16, 95),
    DQ("f32", KN_QTYPE_F32, 98),
    {"dequant q4_1 8192x2048 -> bf16", B, KN_QTYPE_Q4_1, BF16, 8192, 2048, 101},
    {"dequant q8_0 8192x2048 -> bf16", B, KN_QTYPE_Q8_0, BF16, 8192, 2048, 102},
    {"dequant q5_0 8192x2048 -> bf16", B, KN_QTYPE_Q5_0, BF16, 8192, 2048, 103},
    {"dequant q5_1 8192x2048 -> bf16", B, KN_QTYPE_Q5_1, BF16, 8192, 2048, 104},
    {"dequant q4_k 8192x2048 -> bf16", B, KN_QTYPE_Q4_K, BF16, 8192, 2048, 105},
    {"dequant q5_k 8192x2048 -> bf16", B, KN_QTYPE_Q5_K, BF16, 8192, 2048, 106},
};
COUNT(kt_dequant_cases);

/* decode: lengths 1 to the maximum; GQA 3 and 7, MQA, MHA with small heads, big heads, the
 * tiny test models' head size 16; sliding windows of 32 positions (most partitions of the
 * 2048-long sequence are empty) and of 300 (across the 256-position split boundary) */
#define DEC_LENS 6, {1, 17, 300, 2048, 5, 16}, {0}
const kt_attn_case kt_decode_cases[] = {
    {"decode SmolLM2 GQA 3 hd 64", T, BF16, F16, 9, 3, 64, 16, 6, DEC_LENS, 20, 0, false},
    {"decode StarCoder MQA hd 128", T, F16, F16, 16, 1, 128, 16, 6, DEC_LENS, 21, 0, false},
    {"decode MHA hd 32 block 8", T, BF16, BF16, 4, 4, 32, 8, 6, DEC_LENS, 22, 0, false},
    {"decode GQA 4 hd 256 block 32", T, F16, BF16, 8, 2, 256, 32, 6, DEC_LENS, 23, 0, false},
    {"decode GQA 7 hd 64", T, BF16, BF16, 14, 2, 64, 16, 6, DEC_LENS, 24, 0, false},
    {"decode StarCoder-tiny MQA hd 16", T, F16, F16, 4, 1, 16, 16, 6, DEC_LENS, 25, 0, false},
    {"decode StarCoder2-tiny GQA 2 hd 16 window 32", T, BF16, F16, 4, 2, 16, 16, 6, DEC_LENS, 26, 32, false},
    {"decode MQA hd 128 window 300", T, BF16, F16, 8, 1, 128, 16, 6, DEC_LENS, 27, 300, false},
    {"decode one sequence of 4096", T, BF16, F16, 9, 3, 64, 16, 1, 1, {4096}, {0}, 30, 0, false},
    {"decode StarCoder-1B B=256 ctx 1024", B, BF16, F16, 16, 1, 128, 16, 256, 1, {1024}, {0}, 31, 0, false},
    {"decode SmolLM2 B=64 ctx 2048", B, BF16, F16, 9, 3, 64, 16, 64, 1, {2048}, {0}, 32, 0, false},
    {"decode SmolLM2 B=1 ctx 8192", B, BF16, F16, 9, 3, 64, 16, 1, 1, {8192}, {0}, 33, 0, false},
    {"decode SmolLM2 B=64 ctx 2048 block 32", B, BF16, F16, 9, 3, 64, 32, 64, 1, {2048}, {0}, 34, 0, false},
    {"decode StarCoder2-3B B=16 ctx 16384 window 4096", B, BF16, F16, 24, 2, 128, 16, 16, 1, {16384}, {0}, 35, 4096, false},
};
COUNT(kt_decode_cases);

const int32_t kt_decode_splits[] = {1, 5, 0};
const size_t kt_decode_splits_count = sizeof kt_decode_splits / sizeof kt_decode_splits[0];

/* prefill: full prompts, a one-token chunk, chunks starting mid-sequence, and a chunk longer
 * than one 64-row tile that starts mid-tile of the keys; head size 16; sliding windows
 * narrower than a query tile (its last rows see nothing in the first key tile) and wider;
 * bidirectional (encoder) prefill, full prompts and chunks */
#define PRE_LENS 6, {1, 300, 77, 512, 40, 200}, {1, 300, 13, 200, 1, 131}
const kt_attn_case kt_prefill_cases[] = {
    {"prefill SmolLM2 GQA 3 hd 64", T, BF16, F16, 9, 3, 64, 16, 6, PRE_LENS, 60, 0, false},
    {"prefill StarCoder MQA hd 128", T, F16, F16, 16, 1, 128, 16, 6, PRE_LENS, 61, 0, false},
    {"prefill MHA hd 32 block 8", T, BF16, BF16, 4, 4, 32, 8, 6, PRE_LENS, 62, 0, false},
    {"prefill GQA 4 hd 256 block 32", T, F16, BF16, 8, 2, 256, 32, 6, PRE_LENS, 63, 0, false},
    {"prefill GQA 7 hd 64", T, BF16, BF16, 14, 2, 64, 16, 6, PRE_LENS, 64, 0, false},
    {"prefill StarCoder-tiny MQA hd 16 block 8", T, F16, BF16, 4, 1, 16, 8, 6, PRE_LENS, 68, 0, false},
    {"prefill StarCoder2-tiny GQA 2 hd 16 window 32", T, BF16, F16, 4, 2, 16, 16, 6, PRE_LENS, 69, 32, false},
    {"prefill GQA 3 hd 64 window 7", T, BF16, BF16, 9, 3, 64, 16, 6, PRE_LENS, 70, 7, false},
    {"prefill GQA 2 hd 128 window 100", T, F16, F16, 4, 2, 128, 16, 6, PRE_LENS, 71, 100, false},
    {"prefill StarCoder-1B 1x1536", B, BF16, F16, 16, 1, 128, 16, 1, 1, {1536}, {1536}, 65, 0, false},
    {"prefill StarCoder-1B 8 chunks of 512 at 2048", B, BF16, F16, 16, 1, 128, 16, 8, 1, {2048}, {512}, 66, 0, false},
    {"prefill SmolLM2 4x1024", B, BF16, F16, 9, 3, 64, 16, 4, 1, {1024}, {1024}, 67, 0, false},
    {"prefill StarCoder2-3B 2 chunks of 256 at 6144 window 4096", B, BF16, F16, 24, 2, 128, 16, 2, 1, {6144}, {256}, 72, 4096, false},
    /* encoders (BERT: all-MiniLM-L6-v2 has 12 heads of 32): no causal mask */
    {"prefill encoder MiniLM MHA 12 hd 32 bidirectional", T, F16, F16, 12, 12, 32, 16, 6, PRE_LENS, 73, 0, true},
    {"prefill encoder MHA 4 hd 64 block 8 bidirectional", T, BF16, BF16, 4, 4, 64, 8, 6, PRE_LENS, 74, 0, true},
    {"prefill encoder MiniLM 32x256 bidirectional", B, F16, F16, 12, 12, 32, 16, 32, 1, {256}, {256}, 75, 0, true},
};
COUNT(kt_prefill_cases);

const kt_gemm_case kt_gemm_cases[] = {
    {"gemm 1x1536x576 bf16 (decode up proj)", T, BF16, BF16, 1, 1536, 576, 0.0f, 1},
    {"gemm 37x577x192 f16", T, F16, F16, 37, 577, 192, 0.0f, 2},
    {"gemm 5x4099x576 bf16->f32 (logits)", T, BF16, F32, 5, 4099, 576, 0.0f, 3},
    {"gemm 64x256x1024 f16->f32 beta 1", T, F16, F32, 64, 256, 1024, 1.0f, 4},
    {"gemm 4096x8192x2048 bf16 (prefill)", B, BF16, BF16, 4096, 8192, 2048, 0.0f, 5},
    {"gemm 1x8192x2048 bf16 (decode)", B, BF16, BF16, 1, 8192, 2048, 0.0f, 6},
    {"gemm 64x8192x2048 bf16 (decode batch)", B, BF16, BF16, 64, 8192, 2048, 0.0f, 7},
};
COUNT(kt_gemm_cases);

const kt_sample_case kt_sample_cases[] = {
    {"sample 64 x 49152 mixed", T, 64, 49152, 90},
    {"sample 256 x 49152 mixed", B, 256, 49152, 91},
};
COUNT(kt_sample_cases);

double kt_prefill_tc_rtol(kn_dtype kv_dt)
{
    /* Q and the softmax weights P are rounded to the cache's type for the tensor-core
     * products. Against the fp32 reference that alone costs up to 0.054 (relative, with the
     * 5%-of-max floor) in bf16 and 0.0053 in fp16: a reference that rounds P and Q the same
     * way differs from the exact one by that much on the test cases. */
    return kv_dt == KN_DTYPE_BF16 ? 0.08 : 0.01;
}

double kt_rope_rtol(kn_dtype dt) { return 2 * kt_rtol(dt); }

double kt_gemm_rtol(kn_dtype out_dt) { return out_dt == KN_DTYPE_F32 ? 1e-3 : kt_rtol(out_dt); }

void kt_kv_slots(const kt_kv_write_case *c, int32_t *slots)
{
    /* 19 is coprime with the pool sizes used: i * 19 mod n_slots never repeats */
    for (int64_t i = 0; i < c->n_tok; i++)
        slots[i] = (int32_t)(i * 19 % c->n_slots);
    if (c->n_tok > 4)
        slots[4] = -1;
    slots[c->n_tok - 1] = (int32_t)c->n_slots - 1;
}

void kt_attn_lens(const kt_attn_case *c, int32_t *lens, int32_t *q_lens)
{
    for (int32_t s = 0; s < c->n_seq; s++) {
        lens[s] = c->lens[s % c->n_pattern];
        if (c->q_lens[0])
            q_lens[s] = c->q_lens[s % c->n_pattern];
    }
}

kn_sample_params kt_sample_params(int32_t i, kt_rng *r)
{
    kn_sample_params p;
    const int kind = i % 8;
    p.temperature = kind == 0 ? 0.0f : kt_rng_uniform(r, 0.2f, 1.5f);
    p.top_k = kind == 2 || kind == 4 ? 1 + kt_rng_int(r, 100) : kind == 6 ? 1 : 0;
    p.top_p = kind == 3 || kind == 4 ? kt_rng_uniform(r, 0.3f, 0.95f) : kind == 7 ? 1e-6f : 1.0f;
    p.reserved = 0;
    p.seed = kt_rng_next(r);
    p.step = (uint64_t)i;
    return p;
}

void *kt_dequant_source(const kt_dequant_case *c, kt_rng *r, size_t *bytes)
{
    const kn_qtype t = c->type;
    const size_t n = (size_t)(c->rows * c->cols);
    if (t == KN_QTYPE_F32 || t == KN_QTYPE_F16 || t == KN_QTYPE_BF16) {
        const kn_dtype dt = t == KN_QTYPE_F32 ? F32 : t == KN_QTYPE_F16 ? F16 : BF16;
        *bytes = n * kn_dtype_size(dt);
        return kt_host_random(dt, n, -100.0f, 100.0f, r);
    }
    /* random bytes are valid blocks, except NaN/inf scales: keep scale bytes finite */
    const int bb = kn_qtype_block_bytes(t);
    *bytes = n / (size_t)kn_qtype_block_elems(t) * (size_t)bb;
    uint8_t *src = kt_xmalloc(*bytes);
    for (size_t b = 0; b < *bytes; b++)
        src[b] = (uint8_t)kt_rng_next(r);
    const int d_off = t == KN_QTYPE_Q6_K ? 208 : 0;
    for (size_t b = 0; b < *bytes; b += (size_t)bb) {
        src[b + (size_t)d_off + 1] &= 0x3b; /* |d| < 2: exponent never all ones */
        if (t == KN_QTYPE_Q4_1 || t == KN_QTYPE_Q5_1 || t == KN_QTYPE_Q4_K || t == KN_QTYPE_Q5_K)
            src[b + 3] &= 0x3b; /* the min / dmin too */
    }
    return src;
}

int64_t kt_pool_layout(const kt_pool_case *c, int32_t *seq_off, int32_t *seq_len)
{
    kt_rng r = kt_rng_make(c->seed);
    int64_t n_tok = 0;
    for (int32_t s = 0; s < c->n_seq; s++) {
        seq_len[s] = c->n_seq > 2 && s == 1 ? 0 : 1 + kt_rng_int(&r, c->max_len);
        seq_off[s] = (int32_t)n_tok;
        n_tok += seq_len[s];
    }
    return n_tok;
}
