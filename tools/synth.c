/* synth.c — serval-synth: writes a GGUF with a real architecture's exact tensor names, shapes
 * and metadata, seeded random weights, and the vocabulary of an existing GGUF, for tests and
 * throughput benchmarks (speed depends on shapes, not on what the weights learned). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

/* ---- presets ----------------------------------------------------------------------------- */

typedef enum arch_kind { ARCH_LLAMA, ARCH_QWEN2, ARCH_STARCODER, ARCH_STARCODER2 } arch_kind;

typedef struct preset {
    const char *name;
    const char *about;
    arch_kind arch;
    uint32_t n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx;
    float rope_base, norm_eps;
    bool tied; /* no output.weight: the output projection reuses token_embd */
    /* sd of the weight matrices (0: 0.02, what trained models of these widths roughly have);
     * Q/K/V biases get 5x it. Tiny presets checked against a reference take ~1/sqrt(n_embd)
     * so that every layer, not just the embedding, shapes the logits. */
    float w_sd;
    float rope_scale; /* linear RoPE scaling factor (DeepSeek-Coder: 4); 0: none */
    uint32_t n_swa;   /* sliding window written as <arch>.attention.sliding_window; 0: none */
} preset;

static const preset presets[] = {
    {"tiny", "llama, 2 layers, d 64, 4 heads x 16, 2 KV heads, ffn 128 (unit tests)", ARCH_LLAMA,
     2, 64, 4, 2, 128, 2048, 10000.0f, 1e-5f, true, 0.0f, 0.0f, 0},
    {"deepseek-coder-tiny", "llama, 2 layers, d 64, 4 heads x 16, 2 KV heads, ffn 128, linear "
                            "RoPE scaling x4 (unit tests)",
     ARCH_LLAMA, 2, 64, 4, 2, 128, 2048, 100000.0f, 1e-6f, true, 0.125f, 4.0f, 0},
    {"smollm2-135m", "SmolLM2-135M shapes: llama, 30 layers, d 576, 9 heads, 3 KV heads, ffn 1536",
     ARCH_LLAMA, 30, 576, 9, 3, 1536, 8192, 100000.0f, 1e-5f, true, 0.0f, 0.0f, 0},
    {"llama-1b", "Llama-3.2-1B shapes: llama, 16 layers, d 2048, 32 heads, 8 KV heads, ffn 8192",
     ARCH_LLAMA, 16, 2048, 32, 8, 8192, 8192, 500000.0f, 1e-5f, true, 0.0f, 0.0f, 0},
    {"qwen2-tiny", "qwen2, 2 layers, d 64, 4 heads x 16, 2 KV heads, ffn 128, Q/K/V biases, "
                   "NeoX RoPE (unit tests)",
     ARCH_QWEN2, 2, 64, 4, 2, 128, 2048, 1000000.0f, 1e-6f, true, 0.125f, 0.0f, 0},
    {"qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B shapes: qwen2, 24 layers, d 896, 14 heads, 2 KV "
                           "heads, ffn 4864, Q/K/V biases",
     ARCH_QWEN2, 24, 896, 14, 2, 4864, 32768, 1000000.0f, 1e-6f, true, 0.0f, 0.0f, 0},
    {"starcoder-1b", "StarCoder-1B shapes: starcoder (gpt_bigcode), 24 layers, d 2048, 16 heads, "
                     "MQA, ffn 8192, learned positions, LayerNorm",
     ARCH_STARCODER, 24, 2048, 16, 1, 8192, 8192, 0.0f, 1e-5f, false, 0.0f, 0.0f, 0},
    {"starcoder-tiny", "starcoder, 2 layers, d 64, 4 heads x 16, MQA, ffn 256, learned "
                       "positions, LayerNorm, GELU (unit tests)",
     ARCH_STARCODER, 2, 64, 4, 1, 256, 2048, 0.0f, 1e-5f, false, 0.125f, 0.0f, 0},
    {"starcoder2-tiny", "starcoder2, 2 layers, d 64, 4 heads x 16, 2 KV heads, ffn 256, NeoX "
                        "RoPE, LayerNorm, GELU, sliding window 32 (unit tests)",
     ARCH_STARCODER2, 2, 64, 4, 2, 256, 2048, 100000.0f, 1e-5f, true, 0.125f, 0.0f, 32},
    {"starcoder2-3b", "StarCoder2-3B shapes: starcoder2, 30 layers, d 3072, 24 heads, 2 KV "
                      "heads, ffn 12288, biases, sliding window 4096",
     ARCH_STARCODER2, 30, 3072, 24, 2, 12288, 16384, 999999.4f, 1e-5f, true, 0.0f, 0.0f, 4096},
    {"qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B shapes: qwen2, 28 layers, d 1536, 12 heads, 2 KV "
                           "heads, ffn 8960, Q/K/V biases",
     ARCH_QWEN2, 28, 1536, 12, 2, 8960, 32768, 1000000.0f, 1e-6f, true, 0.0f, 0.0f, 0},
    {"deepseek-coder-1.3b", "DeepSeek-Coder-1.3B shapes: llama, 24 layers, d 2048, 16 heads, "
                            "16 KV heads, ffn 5504, linear RoPE scaling x4",
     ARCH_LLAMA, 24, 2048, 16, 16, 5504, 16384, 100000.0f, 1e-6f, false, 0.0f, 4.0f, 0},
    {"codellama-7b", "CodeLlama-7B shapes: llama, 32 layers, d 4096, 32 heads, 32 KV heads, "
                     "ffn 11008",
     ARCH_LLAMA, 32, 4096, 32, 32, 11008, 16384, 1000000.0f, 1e-5f, false, 0.0f, 0.0f, 0},
    /* Parity presets: checked bit for bit against llama.cpp (tests/engine/test_families.c).
     * Real head sizes, every row length a multiple of 256 (K-quants), weights of sd
     * 1/sqrt(n_embd) so that both layers shape the logits. */
    {"llama-parity", "llama, 2 layers, d 256, 4 heads x 64, 2 KV heads, ffn 768, untied head "
                     "(llama.cpp parity tests)",
     ARCH_LLAMA, 2, 256, 4, 2, 768, 4096, 10000.0f, 1e-5f, false, 0.0625f, 0.0f, 0},
    {"deepseek-coder-parity", "llama, 2 layers, d 256, 2 heads x 128, 2 KV heads, ffn 768, "
                              "linear RoPE scaling x4 (llama.cpp parity tests)",
     ARCH_LLAMA, 2, 256, 2, 2, 768, 4096, 100000.0f, 1e-6f, false, 0.0625f, 4.0f, 0},
    {"qwen2-parity", "qwen2, 2 layers, d 256, 4 heads x 64, 2 KV heads, ffn 768, Q/K/V biases, "
                     "tied head (llama.cpp parity tests)",
     ARCH_QWEN2, 2, 256, 4, 2, 768, 4096, 1000000.0f, 1e-6f, true, 0.0625f, 0.0f, 0},
    {"starcoder-parity", "starcoder, 2 layers, d 256, 4 heads x 64, MQA, ffn 1024, learned "
                         "positions (512), untied head (llama.cpp parity tests)",
     ARCH_STARCODER, 2, 256, 4, 1, 1024, 512, 0.0f, 1e-5f, false, 0.0625f, 0.0f, 0},
    {"starcoder2-parity", "starcoder2, 2 layers, d 256, 2 heads x 128, 1 KV head, ffn 1024, "
                          "tied head, sliding window 4096 (llama.cpp parity tests)",
     ARCH_STARCODER2, 2, 256, 2, 1, 1024, 4096, 100000.0f, 1e-5f, true, 0.0625f, 0.0f, 4096},
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

/* ---- seeded normal-ish numbers ------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct xoshiro {
    uint64_t s[4];
} xoshiro;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xo_next(xoshiro *x)
{
    uint64_t *s = x->s;
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Sum of four 16-bit uniforms, centred and scaled to unit variance: a bell curve on
 * [-3.46, 3.46], cheap enough for a billion weights. */
static float xo_normal(xoshiro *x)
{
    uint64_t r = xo_next(x);
    float sum = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                (float)(r >> 48);
    /* mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12 */
    return (sum - 131070.0f) * (1.0f / 37837.23f);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* ---- tensors ----------------------------------------------------------------------------- */

typedef enum init_kind { INIT_MATRIX, INIT_NORM, INIT_BIAS, INIT_BIAS_QKV } init_kind;

/* One tensor to generate. Rows are produced in order by gen_row while the file is written. */
typedef struct tspec {
    char name[64];
    gguf_dtype dtype;
    uint32_t n_dims;
    int64_t ne[2];
    init_kind init;
    float sd;      /* of the random part */
    uint64_t seed; /* from --seed and the name, so each tensor is independent of the others */
    bool round_f16; /* round every value through fp16 before storing it (--from-f16) */
    xoshiro rng;
    float *scratch; /* [ne[0]] floats, shared by all tensors */
} tspec;

typedef struct synth {
    tspec *t;
    size_t n_t, cap_t;
    float *scratch;
    int64_t max_ne0;
    uint64_t seed;
    float w_sd;    /* the preset's matrix sd */
    uint64_t n_params;
} synth;

static eng_status gen_row(void *user, int64_t row, void *dst, eng_err *err)
{
    (void)err;
    tspec *t = user;
    if (row == 0) {
        uint64_t s = t->seed;
        for (int i = 0; i < 4; i++)
            t->rng.s[i] = splitmix64(&s);
    }
    float *x = t->scratch;
    for (int64_t i = 0; i < t->ne[0]; i++) {
        float z = xo_normal(&t->rng);
        x[i] = t->init == INIT_NORM ? 1.0f + t->sd * z : t->sd * z;
        if (t->round_f16)
            x[i] = quant_f16_to_f32(quant_f32_to_f16(x[i]));
    }
    quant_quantize_row(t->dtype, x, dst, t->ne[0]);
    return ENG_OK;
}

static int add(synth *s, gguf_dtype mat_dtype, init_kind init, int64_t ne0, int64_t ne1,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Queues a tensor: 2-D matrices in mat_dtype, 1-D norms and biases in F32. */
static int add(synth *s, gguf_dtype mat_dtype, init_kind init, int64_t ne0, int64_t ne1,
               const char *fmt, ...)
{
    if (s->n_t == s->cap_t) {
        s->cap_t = s->cap_t ? s->cap_t * 2 : 64;
        tspec *nt = realloc(s->t, s->cap_t * sizeof *nt);
        if (!nt)
            return -1;
        s->t = nt;
    }
    tspec *t = &s->t[s->n_t++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->dtype = t->n_dims == 2 ? mat_dtype : GGUF_DTYPE_F32;
    t->init = init;
    /* Qwen2's Q/K/V biases are large next to the products: 5x the matrices' sd. */
    t->sd = init == INIT_NORM ? 0.05f : init == INIT_BIAS ? 0.02f
          : init == INIT_BIAS_QKV ? 5.0f * s->w_sd : s->w_sd;
    t->seed = s->seed ^ hash_name(t->name);
    if (ne0 > s->max_ne0)
        s->max_ne0 = ne0;
    s->n_params += (uint64_t)ne0 * (uint64_t)t->ne[1];
    return 0;
}

/* llama.cpp's LLM_ARCH_LLAMA layout, and LLM_ARCH_QWEN2's: the same plus Q/K/V biases. */
static int plan_llama(synth *s, const preset *p, gguf_dtype dt, int64_t n_vocab)
{
    const bool qkv_bias = p->arch == ARCH_QWEN2;
    int64_t d = p->n_embd, hd = p->n_embd / p->n_head, kv = hd * p->n_head_kv, ff = p->n_ff;
    int rc = add(s, dt, INIT_MATRIX, d, n_vocab, "token_embd.weight");
    for (uint32_t l = 0; l < p->n_layer && rc == 0; l++) {
        rc |= add(s, dt, INIT_NORM, d, 0, "blk.%u.attn_norm.weight", l);
        rc |= add(s, dt, INIT_MATRIX, d, d, "blk.%u.attn_q.weight", l);
        rc |= add(s, dt, INIT_MATRIX, d, kv, "blk.%u.attn_k.weight", l);
        rc |= add(s, dt, INIT_MATRIX, d, kv, "blk.%u.attn_v.weight", l);
        if (qkv_bias) {
            rc |= add(s, dt, INIT_BIAS_QKV, d, 0, "blk.%u.attn_q.bias", l);
            rc |= add(s, dt, INIT_BIAS_QKV, kv, 0, "blk.%u.attn_k.bias", l);
            rc |= add(s, dt, INIT_BIAS_QKV, kv, 0, "blk.%u.attn_v.bias", l);
        }
        rc |= add(s, dt, INIT_MATRIX, d, d, "blk.%u.attn_output.weight", l);
        rc |= add(s, dt, INIT_NORM, d, 0, "blk.%u.ffn_norm.weight", l);
        rc |= add(s, dt, INIT_MATRIX, d, ff, "blk.%u.ffn_gate.weight", l);
        rc |= add(s, dt, INIT_MATRIX, d, ff, "blk.%u.ffn_up.weight", l);
        rc |= add(s, dt, INIT_MATRIX, ff, d, "blk.%u.ffn_down.weight", l);
    }
    rc |= add(s, dt, INIT_NORM, d, 0, "output_norm.weight");
    if (!p->tied)
        rc |= add(s, dt, INIT_MATRIX, d, n_vocab, "output.weight");
    return rc;
}

/* llama.cpp's LLM_ARCH_STARCODER layout (what convert_hf_to_gguf writes for gpt_bigcode: learned
 * positions, one fused Q|K|V) and LLM_ARCH_STARCODER2's (separate Q/K/V, RoPE): both have
 * LayerNorm with bias, biases on every product and an FFN without a gate. */
static int plan_starcoder(synth *s, const preset *p, gguf_dtype dt, int64_t n_vocab)
{
    const bool fused = p->arch == ARCH_STARCODER;
    int64_t d = p->n_embd, hd = p->n_embd / p->n_head, kv = hd * p->n_head_kv, ff = p->n_ff;
    int rc = add(s, dt, INIT_MATRIX, d, n_vocab, "token_embd.weight");
    if (fused)
        rc |= add(s, dt, INIT_MATRIX, d, p->n_ctx, "position_embd.weight");
    for (uint32_t l = 0; l < p->n_layer && rc == 0; l++) {
        rc |= add(s, dt, INIT_NORM, d, 0, "blk.%u.attn_norm.weight", l);
        rc |= add(s, dt, INIT_BIAS, d, 0, "blk.%u.attn_norm.bias", l);
        if (fused) {
            rc |= add(s, dt, INIT_MATRIX, d, d + 2 * kv, "blk.%u.attn_qkv.weight", l);
            rc |= add(s, dt, INIT_BIAS, d + 2 * kv, 0, "blk.%u.attn_qkv.bias", l);
        } else {
            rc |= add(s, dt, INIT_MATRIX, d, d, "blk.%u.attn_q.weight", l);
            rc |= add(s, dt, INIT_BIAS, d, 0, "blk.%u.attn_q.bias", l);
            rc |= add(s, dt, INIT_MATRIX, d, kv, "blk.%u.attn_k.weight", l);
            rc |= add(s, dt, INIT_BIAS, kv, 0, "blk.%u.attn_k.bias", l);
            rc |= add(s, dt, INIT_MATRIX, d, kv, "blk.%u.attn_v.weight", l);
            rc |= add(s, dt, INIT_BIAS, kv, 0, "blk.%u.attn_v.bias", l);
        }
        rc |= add(s, dt, INIT_MATRIX, d, d, "blk.%u.attn_output.weight", l);
        rc |= add(s, dt, INIT_BIAS, d, 0, "blk.%u.attn_output.bias", l);
        rc |= add(s, dt, INIT_NORM, d, 0, "blk.%u.ffn_norm.weight", l);
        rc |= add(s, dt, INIT_BIAS, d, 0, "blk.%u.ffn_norm.bias", l);
        rc |= add(s, dt, INIT_MATRIX, d, ff, "blk.%u.ffn_up.weight", l);
        rc |= add(s, dt, INIT_BIAS, ff, 0, "blk.%u.ffn_up.bias", l);
        rc |= add(s, dt, INIT_MATRIX, ff, d, "blk.%u.ffn_down.weight", l);
        rc |= add(s, dt, INIT_BIAS, d, 0, "blk.%u.ffn_down.bias", l);
    }
    rc |= add(s, dt, INIT_NORM, d, 0, "output_norm.weight");
    rc |= add(s, dt, INIT_BIAS, d, 0, "output_norm.bias");
    if (!p->tied)
        rc |= add(s, dt, INIT_MATRIX, d, n_vocab, "output.weight");
    return rc;
}

/* ---- metadata ---------------------------------------------------------------------------- */

/* llama.cpp's llama_ftype for a file whose matrices are all of one type. For the K-quants
 * that is the _M mixture's number (LLAMA_FTYPE_MOSTLY_Q4_K_M, _Q5_K_M): what llama.cpp
 * writes when asked for that preset with every matrix forced to the one type (pure). */
static uint32_t file_type(gguf_dtype dt)
{
    switch (dt) {
    case GGUF_DTYPE_F32: return 0;
    case GGUF_DTYPE_F16: return 1;
    case GGUF_DTYPE_Q4_0: return 2;
    case GGUF_DTYPE_Q4_1: return 3;
    case GGUF_DTYPE_Q8_0: return 7;
    case GGUF_DTYPE_Q5_0: return 8;
    case GGUF_DTYPE_Q5_1: return 9;
    case GGUF_DTYPE_Q4_K: return 15;
    case GGUF_DTYPE_Q5_K: return 17;
    case GGUF_DTYPE_Q6_K: return 18;
    case GGUF_DTYPE_BF16: return 32;
    }
    return 0;
}

static eng_status set_metadata(gguf_writer *w, const preset *p, uint32_t n_layer, gguf_dtype dt,
                               uint32_t n_vocab, uint64_t seed)
{
    const char *arch = p->arch == ARCH_LLAMA       ? "llama"
                       : p->arch == ARCH_QWEN2     ? "qwen2"
                       : p->arch == ARCH_STARCODER ? "starcoder"
                                                   : "starcoder2";
    char key[128], name[96];
    eng_status s = ENG_OK;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    snprintf(name, sizeof name, "serval-synth %s", p->name);
    s = s ? s : gguf_writer_set_str(w, "general.architecture", arch, strlen(arch));
    s = s ? s : gguf_writer_set_str(w, "general.name", name, strlen(name));
    s = s ? s : gguf_writer_set_u32(w, "general.file_type", file_type(dt));
    s = s ? s : gguf_writer_set_u32(w, "general.quantization_version", 2);
    s = s ? s : gguf_writer_set_scalar(w, "serval.synth.seed", GGUF_TYPE_UINT64, &seed);
    s = s ? s : gguf_writer_set_u32(w, KEY("block_count"), n_layer);
    s = s ? s : gguf_writer_set_u32(w, KEY("context_length"), p->n_ctx);
    s = s ? s : gguf_writer_set_u32(w, KEY("embedding_length"), p->n_embd);
    s = s ? s : gguf_writer_set_u32(w, KEY("feed_forward_length"), p->n_ff);
    s = s ? s : gguf_writer_set_u32(w, KEY("attention.head_count"), p->n_head);
    s = s ? s : gguf_writer_set_u32(w, KEY("attention.head_count_kv"), p->n_head_kv);
    s = s ? s : gguf_writer_set_u32(w, KEY("vocab_size"), n_vocab);
    if (p->arch == ARCH_LLAMA || p->arch == ARCH_QWEN2) {
        s = s ? s : gguf_writer_set_f32(w, KEY("rope.freq_base"), p->rope_base);
        /* convert_hf_to_gguf writes the rotary dimensions for llama, not for qwen2. */
        if (p->arch == ARCH_LLAMA)
            s = s ? s : gguf_writer_set_u32(w, KEY("rope.dimension_count"), p->n_embd / p->n_head);
        s = s ? s : gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), p->norm_eps);
        if (p->rope_scale > 0.0f) {
            s = s ? s : gguf_writer_set_str(w, KEY("rope.scaling.type"), "linear", 6);
            s = s ? s : gguf_writer_set_f32(w, KEY("rope.scaling.factor"), p->rope_scale);
        }
    } else {
        /* starcoder (learned positions) and starcoder2 (RoPE): LayerNorm */
        if (p->arch == ARCH_STARCODER2)
            s = s ? s : gguf_writer_set_f32(w, KEY("rope.freq_base"), p->rope_base);
        s = s ? s : gguf_writer_set_f32(w, KEY("attention.layer_norm_epsilon"), p->norm_eps);
    }
    if (p->n_swa)
        s = s ? s : gguf_writer_set_u32(w, KEY("attention.sliding_window"), p->n_swa);
#undef KEY
    return s;
}

/* ---- command line ------------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: serval-synth --preset NAME --vocab-from GGUF --out PATH [options]\n"
            "\n"
            "Writes a GGUF with a real architecture's tensor names, shapes and metadata, seeded\n"
            "random weights (normal-ish, sd 0.02 or the preset's; norms near 1.0), and the\n"
            "tokenizer (every tokenizer.* key) of GGUF, whose token count sizes the embedding\n"
            "rows.\n"
            "\n"
            "  --preset NAME      architecture and shapes (below)\n"
            "  --vocab-from GGUF  copy the vocabulary from this model\n"
            "  --out PATH         file to write (written to a temporary name, then renamed)\n"
            "  --seed N           weight seed (default 1); the same seed gives the same file\n"
            "  --dtype T          weight matrices as q8_0 (default), q4_0, q4_1, q5_0, q5_1,\n"
            "                     q4_k, q5_k, q6_k, f16, bf16 or f32 (K-quants need rows that\n"
            "                     are multiples of 256: the *-parity presets); norms and\n"
            "                     biases are always f32; quantised with llama.cpp's\n"
            "                     quantize_row_*_ref\n"
            "  --from-f16         write the file llama.cpp's quantize (no importance matrix,\n"
            "                     every matrix of --dtype: params.pure) makes from this\n"
            "                     command's --dtype f16 file: every value rounded through fp16\n"
            "                     before it is quantised, and what llama.cpp does not\n"
            "                     quantise (position_embd) kept in f16\n"
            "  --tensor-type NAME=T  store matrix NAME as T instead of --dtype (repeatable;\n"
            "                     reproduces a mixed file such as llama.cpp's Q4_K_M)\n"
            "  --layers N         override the preset's layer count\n"
            "  --ffn N            override the preset's feed-forward width (real models have\n"
            "                     widths that are not multiples of 256, e.g. DeepSeek-Coder's\n"
            "                     5504: llama.cpp's Q4_K_M then stores ffn_down as Q5_0/Q8_0)\n"
            "  --sliding-window N write <arch>.attention.sliding_window = N (0: leave it out);\n"
            "                     default: the preset's (llama.cpp ignores it for starcoder2)\n"
            "  --help             this text\n"
            "\npresets:\n");
    for (size_t i = 0; i < N_PRESETS; i++)
        fprintf(out, "  %-18s %s\n", presets[i].name, presets[i].about);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

#define MAX_TENSOR_TYPES 256

typedef struct type_override {
    const char *name; /* points into argv */
    size_t name_len;
    gguf_dtype t;
    bool used;
} type_override;

typedef struct opts {
    const preset *p;
    const char *vocab, *out;
    uint64_t seed;
    gguf_dtype dtype;
    uint32_t layers; /* 0: the preset's */
    uint32_t ffn;    /* 0: the preset's */
    int64_t swa;     /* -1: the preset's sliding window; 0: none; else the window */
    bool from_f16;
    type_override over[MAX_TENSOR_TYPES];
    size_t n_over;
} opts;

static const struct { const char *name; gguf_dtype t; } dtypes[] = {
    {"q8_0", GGUF_DTYPE_Q8_0}, {"q4_0", GGUF_DTYPE_Q4_0}, {"q4_1", GGUF_DTYPE_Q4_1},
    {"q5_0", GGUF_DTYPE_Q5_0}, {"q5_1", GGUF_DTYPE_Q5_1}, {"q4_k", GGUF_DTYPE_Q4_K},
    {"q5_k", GGUF_DTYPE_Q5_K}, {"q6_k", GGUF_DTYPE_Q6_K}, {"f16", GGUF_DTYPE_F16},
    {"bf16", GGUF_DTYPE_BF16}, {"f32", GGUF_DTYPE_F32}};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

/* Looks a --dtype name up (case-insensitive: q4_K as llama.cpp prints it works too). */
static int dtype_parse(const char *s, gguf_dtype *t)
{
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcasecmp(dtypes[i].name, s) == 0) {
            *t = dtypes[i].t;
            return 0;
        }
    }
    fprintf(stderr, "serval-synth: unknown type '%s' (", s);
    for (size_t i = 0; i < N_DTYPES; i++)
        fprintf(stderr, "%s%s", i ? ", " : "", dtypes[i].name);
    fprintf(stderr, ")\n");
    return -1;
}

/* Returns 0 to run, 1 when --help was printed, -1 (message printed) on a usage error. */
static int parse_args(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"preset", required_argument, NULL, 'p'}, {"vocab-from", required_argument, NULL, 'v'},
        {"out", required_argument, NULL, 'o'},    {"seed", required_argument, NULL, 's'},
        {"dtype", required_argument, NULL, 'd'},  {"layers", required_argument, NULL, 'l'},
        {"ffn", required_argument, NULL, 'F'},
        {"sliding-window", required_argument, NULL, 'w'},
        {"from-f16", no_argument, NULL, 'f'},    {"tensor-type", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->dtype = GGUF_DTYPE_Q8_0;
    o->swa = -1;
    const char *preset_name = NULL;
    uint64_t v;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': preset_name = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'o': o->out = optarg; break;
        case 'h': usage(stdout); return 1;
        case 's':
            if (parse_u64(optarg, &o->seed) != 0) {
                fprintf(stderr, "serval-synth: --seed: '%s' is not a non-negative integer\n", optarg);
                return -1;
            }
            break;
        case 'F':
            if (parse_u64(optarg, &v) != 0 || v < 1 || v > (1u << 20)) {
                fprintf(stderr, "serval-synth: --ffn: '%s' is not a number in 1..1048576\n",
                        optarg);
                return -1;
            }
            o->ffn = (uint32_t)v;
            break;
        case 'l':
            if (parse_u64(optarg, &v) != 0 || v < 1 || v > 1000) {
                fprintf(stderr, "serval-synth: --layers: '%s' is not a number in 1..1000\n", optarg);
                return -1;
            }
            o->layers = (uint32_t)v;
            break;
        case 'w':
            if (parse_u64(optarg, &v) != 0 || v > (1u << 24)) {
                fprintf(stderr, "serval-synth: --sliding-window: '%s' is not a number in "
                        "0..16777216\n", optarg);
                return -1;
            }
            o->swa = (int64_t)v;
            break;
        case 'd':
            if (dtype_parse(optarg, &o->dtype) != 0)
                return -1;
            break;
        case 'f': o->from_f16 = true; break;
        case 't': {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "serval-synth: --tensor-type: '%s' is not NAME=TYPE\n", optarg);
                return -1;
            }
            if (o->n_over == MAX_TENSOR_TYPES) {
                fprintf(stderr, "serval-synth: --tensor-type: more than %d\n", MAX_TENSOR_TYPES);
                return -1;
            }
            type_override *ov = &o->over[o->n_over++];
            ov->name = optarg;
            ov->name_len = (size_t)(eq - optarg);
            if (dtype_parse(eq + 1, &ov->t) != 0)
                return -1;
            break;
        }
        default:
            fprintf(stderr, "serval-synth: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "serval-synth: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (!preset_name || !o->vocab || !o->out) {
        fprintf(stderr, "serval-synth: --preset, --vocab-from and --out are required (see "
                "--help)\n");
        return -1;
    }
    for (size_t i = 0; i < N_PRESETS; i++)
        if (strcmp(presets[i].name, preset_name) == 0)
            o->p = &presets[i];
    if (!o->p) {
        fprintf(stderr, "serval-synth: unknown preset '%s'; presets:", preset_name);
        for (size_t i = 0; i < N_PRESETS; i++)
            fprintf(stderr, " %s", presets[i].name);
        fprintf(stderr, "\n");
        return -1;
    }
    return 0;
}

/* What llama.cpp's quantize leaves in its source type whatever the target (llama-quant.cpp's
 * tensor_allows_quantization, for the names these presets write): 1-D tensors, norms, and the
 * learned position embeddings. */
static bool llamacpp_quantises(const tspec *t)
{
    return t->n_dims == 2 && strcmp(t->name, "position_embd.weight") != 0 &&
           strstr(t->name, "_norm.weight") == NULL;
}

/* Applies --tensor-type and --from-f16 to the planned tensors and checks that every matrix's
 * rows are whole blocks of its type. Returns 0, or -1 with a message printed. */
static int finish_plan(synth *s, opts *o)
{
    for (size_t i = 0; i < s->n_t; i++) {
        tspec *t = &s->t[i];
        /* The F16 file holds norms and biases in f32, so only matrices are rounded. */
        t->round_f16 = o->from_f16 && t->n_dims == 2;
        if (o->from_f16 && t->n_dims == 2 && !llamacpp_quantises(t))
            t->dtype = GGUF_DTYPE_F16;
        for (size_t k = 0; k < o->n_over; k++) {
            type_override *ov = &o->over[k];
            if (strlen(t->name) == ov->name_len && memcmp(t->name, ov->name, ov->name_len) == 0) {
                if (t->n_dims != 2) {
                    fprintf(stderr, "serval-synth: --tensor-type: %s is not a matrix (norms and "
                            "biases stay f32)\n", t->name);
                    return -1;
                }
                t->dtype = ov->t;
                ov->used = true;
            }
        }
        int64_t blk = gguf_dtype_block_elems(t->dtype);
        if (blk <= 0 || t->ne[0] % blk != 0) {
            fprintf(stderr, "serval-synth: %s has rows of %" PRId64 " values, not a multiple of "
                    "%s's block of %" PRId64 " (K-quants need the *-parity presets)\n", t->name, t->ne[0],
                    gguf_dtype_name(t->dtype), blk);
            return -1;
        }
    }
    for (size_t k = 0; k < o->n_over; k++) {
        if (!o->over[k].used) {
            fprintf(stderr, "serval-synth: --tensor-type: no tensor named '%.*s' in this "
                    "preset\n", (int)o->over[k].name_len, o->over[k].name);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;

    gguf_file *vocab = NULL;
    gguf_writer *w = NULL;
    synth s = {.seed = o.seed};
    eng_err err;
    gguf_arr tokens;
    int status = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    if (gguf_open(o.vocab, &vocab, &err) != ENG_OK) {
        fprintf(stderr, "serval-synth: --vocab-from %s: %s\n", o.vocab, err.msg);
        goto done;
    }
    if (gguf_get_arr(vocab, "tokenizer.ggml.tokens", &tokens, &err) != ENG_OK ||
        tokens.elem_type != GGUF_TYPE_STRING || tokens.n == 0 || tokens.n > INT32_MAX) {
        fprintf(stderr, "serval-synth: --vocab-from %s: no usable tokenizer.ggml.tokens array\n",
                o.vocab);
        goto done;
    }
    preset p = *o.p;
    if (o.layers)
        p.n_layer = o.layers;
    if (o.ffn)
        p.n_ff = o.ffn;
    if (o.swa >= 0)
        p.n_swa = (uint32_t)o.swa;
    int64_t n_vocab = (int64_t)tokens.n;
    s.w_sd = p.w_sd > 0.0f ? p.w_sd : 0.02f;
    int plan = p.arch == ARCH_STARCODER || p.arch == ARCH_STARCODER2
                   ? plan_starcoder(&s, &p, o.dtype, n_vocab)
                   : plan_llama(&s, &p, o.dtype, n_vocab);
    s.scratch = malloc((size_t)s.max_ne0 * sizeof(float));
    w = gguf_writer_create();
    if (plan != 0 || !s.scratch || !w) {
        fprintf(stderr, "serval-synth: out of memory\n");
        goto done;
    }
    if (finish_plan(&s, &o) != 0)
        goto done;
    if (set_metadata(w, &p, p.n_layer, o.dtype, (uint32_t)n_vocab, o.seed) != ENG_OK ||
        gguf_writer_copy_kv(w, vocab, "tokenizer.") != ENG_OK) {
        fprintf(stderr, "serval-synth: cannot build the metadata (out of memory?)\n");
        goto done;
    }
    for (size_t i = 0; i < s.n_t; i++) {
        tspec *t = &s.t[i];
        t->scratch = s.scratch;
        eng_status st = gguf_writer_add_tensor_gen(w, t->name, t->dtype, t->n_dims, t->ne,
                                                   gen_row, t);
        if (st != ENG_OK) {
            fprintf(stderr, "serval-synth: tensor %s: %s\n", t->name, eng_status_str(st));
            goto done;
        }
    }
    if (gguf_writer_write(w, o.out, &err) != ENG_OK) {
        fprintf(stderr, "serval-synth: %s\n", err.msg);
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("serval-synth: wrote %s: preset %s, %u layers, %zu tensors, %.1fM parameters, "
           "vocab %" PRId64 ", %s%s%s, seed %" PRIu64 ", %.1f s\n",
           o.out, p.name, p.n_layer, s.n_t, (double)s.n_params / 1e6, n_vocab,
           gguf_dtype_name(o.dtype), o.from_f16 ? " from f16" : "",
           o.n_over ? " with per-tensor types" : "", o.seed,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    status = 0;
done:
    gguf_writer_free(w);
    gguf_free(vocab);
    free(s.scratch);
    free(s.t);
    return status;
}
