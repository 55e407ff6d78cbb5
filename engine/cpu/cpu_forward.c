/* cpu_forward.c — the decoder forward pass on the CPU for a batch of tokens from many
 * sequences, for every family with a descriptor (arch.h): Llama, Qwen2, StarCoder, StarCoder2.
 * What a layer computes comes from the descriptor and the bound weights:
 *   norm       RMSNorm (Llama, Qwen2) or LayerNorm with bias (StarCoder, StarCoder2)
 *   positions  RoPE on adjacent pairs (Llama) or halves (Qwen2, StarCoder2), with linear
 *              scaling (hp.rope_freq_scale, DeepSeek-Coder); or learned absolute positions
 *              added to the token embedding (StarCoder)
 *   attention  multi-head, grouped-query or multi-query over a paged fp16 KV pool, causal,
 *              optionally within a sliding window (hp.n_swa, StarCoder2); Q/K/V biases where
 *              bound (Qwen2, StarCoder's fused Q|K|V is split into views at load)
 *   FFN        SwiGLU (gate, up, down) or GELU (up, down) with biases where bound
 * The products are quantised matrix products split across a thread pool. Numerics follow
 * llama.cpp's AVX2 CPU build step by step (activations quantised to the weight's dot format,
 * Q and the attention probabilities rounded to fp16 against the fp16 cache, its summation
 * orders, exp and GELU table, biases added in its order) so outputs agree with it bit for bit;
 * the row ops (norms, GELU) are in cpu_ops.c. */
#include "cpu_forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "cpu_ops.h"
#include "pool.h"
#include "quant.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

enum { CPU_CHUNK = 64 }; /* tokens per forward chunk: bounds the scratch buffers */

struct eng_cpu_kv {
    int32_t n_blocks, block_size, n_layer;
    size_t kv_dim;      /* n_head_kv * head_dim */
    size_t layer_elems; /* n_blocks * block_size * kv_dim */
    uint16_t *k;        /* [n_layer, n_blocks * block_size, kv_dim] fp16 */
    uint16_t *v;        /* same */
};

struct eng_cpu_runner {
    const eng_model *m;
    eng_pool *pool;
    int32_t max_pos;
    size_t kv_dim;
    /* scratch for one chunk of tokens */
    float *x;           /* [CHUNK, n_embd] residual stream */
    float *xn;          /* [CHUNK, n_embd] normalised input of the current block */
    float *q;           /* [CHUNK, n_head*hd] */
    float *k;           /* [CHUNK, kv_dim] */
    float *v;           /* [CHUNK, kv_dim] */
    float *att;         /* [CHUNK, n_head*hd] attention output */
    float *tmp;         /* [CHUNK, n_embd] block output before the residual add */
    float *gate;        /* [CHUNK, n_ff] (SwiGLU only) */
    float *up;          /* [CHUNK, n_ff] */
    float *gelu_tab;    /* [CPU_GELU_TABLE_SIZE] GELU of every fp16 value (GELU FFN only) */
    float *rope_cs;     /* [CHUNK, hd/2, 2] cos, sin */
    uint8_t *act;       /* [CHUNK, act_stride] quantised activations */
    size_t act_stride;
    float *scores;      /* [n_threads, max_pos] attention scores per thread */
    /* Tensor parallelism (eng_cpu_runner_set_group): m is one rank's model (model/shard.h);
     * NULL comm: the whole model on its own. */
    const eng_shard *shard;
    eng_comm *comm;
    float *logits_local; /* [CHUNK, shard->n_vocab_stride] this rank's logits */
    float *gathered;     /* [n_ranks, CHUNK, n_vocab_stride] every rank's */
    eng_status comm_st;  /* the first collective that failed in this forward, and why */
    eng_err comm_err;
};

/* What one pool run computes: tokens [c0, c0 + n) of the batch. */
typedef struct fwd_job {
    eng_cpu_runner *r;
    eng_cpu_kv *kv;
    const eng_batch *b;
    int32_t c0, n;
    int32_t k0, n_out; /* logits rows [k0, k0 + n_out) fall in this chunk */
    float *logits;     /* [n_out, n_vocab]: the caller's buffer at row k0 */
} fwd_job;

/* ---- KV pool ------------------------------------------------------------------------------ */

size_t eng_cpu_kv_block_bytes(const eng_model *m, int32_t block_size)
{
    const eng_hparams *hp = &m->hp;
    return 2 * sizeof(uint16_t) * (size_t)hp->n_layer * (size_t)block_size *
           (size_t)hp->n_head_kv * (size_t)hp->head_dim;
}

eng_status eng_cpu_kv_create(const eng_model *m, int32_t n_blocks, int32_t block_size,
                             eng_cpu_kv **out, eng_err *err)
{
    *out = NULL;
    if (n_blocks < 1 || block_size < 1 || block_size > 4096)
        return eng_fail(err, ENG_ERR_INVALID, "kv pool: %d blocks of %d positions is not valid",
                        n_blocks, block_size);
    eng_cpu_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return eng_fail(err, ENG_ERR_NOMEM, "kv pool: out of memory");
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->n_layer = m->hp.n_layer;
    kv->kv_dim = (size_t)m->hp.n_head_kv * (size_t)m->hp.head_dim;
    kv->layer_elems = (size_t)n_blocks * (size_t)block_size * kv->kv_dim;
    size_t total = kv->layer_elems * (size_t)kv->n_layer;
    kv->k = malloc(total * sizeof(uint16_t));
    kv->v = malloc(total * sizeof(uint16_t));
    if (!kv->k || !kv->v) {
        eng_cpu_kv_free(kv);
        return eng_fail(err, ENG_ERR_NOMEM, "kv pool: cannot allocate %zu MiB for %d blocks",
                        total * 4 >> 20, n_blocks);
    }
    *out = kv;
    return ENG_OK;
}

void eng_cpu_kv_free(eng_cpu_kv *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv);
}

int32_t eng_cpu_kv_n_blocks(const eng_cpu_kv *kv) { return kv->n_blocks; }
int32_t eng_cpu_kv_block_size(const eng_cpu_kv *kv) { return kv->block_size; }

/* Element offset of (layer, position of a sequence) in the pool. */
static inline size_t kv_offset(const eng_cpu_kv *kv, int il, const int32_t *table, int32_t p)
{
    int32_t blk = table[p / kv->block_size];
    ENG_ASSERT(blk >= 0 && blk < kv->n_blocks);
    size_t slot = (size_t)blk * (size_t)kv->block_size + (size_t)(p % kv->block_size);
    return (size_t)il * kv->layer_elems + slot * kv->kv_dim;
}

/* ---- runner ------------------------------------------------------------------------------- */

static size_t max_act_bytes(const eng_model *m)
{
    /* The activations of a product are quantised for its weight's type at its input width
     * (ne0). Take the largest over every weight: layers mix types and widths (llama.cpp's
     * Q4_K_M stores DeepSeek-Coder's ffn_down, 5504 wide, as Q5_0/Q8_0 because Q4_K needs
     * multiples of 256), and a width is only ever quantised for the types of its own weights. */
    size_t b = quant_act_row_bytes(m->output.dtype, m->output.ne0);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i]->data)
                continue; /* not in this family (w_gate of a GELU FFN) */
            size_t s = quant_act_row_bytes(ws[i]->dtype, ws[i]->ne0);
            if (s > b)
                b = s;
        }
    }
    return (b + 63) & ~(size_t)63;
}

eng_status eng_cpu_runner_create(const eng_model *m, int32_t max_pos, int n_threads,
                                 eng_cpu_runner **out, eng_err *err)
{
    *out = NULL;
    const eng_hparams *hp = &m->hp;
    const eng_arch_desc *d = m->desc;
    /* What this forward pass computes; a family with other ops needs them here first. */
    if ((d->norm != ENG_ARCH_NORM_RMS && d->norm != ENG_ARCH_NORM_LAYER) ||
        (d->pos != ENG_ARCH_POS_ROPE_INTERLEAVED && d->pos != ENG_ARCH_POS_ROPE_NEOX &&
         d->pos != ENG_ARCH_POS_LEARNED) ||
        (d->ffn != ENG_ARCH_FFN_SWIGLU && d->ffn != ENG_ARCH_FFN_GELU))
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "the CPU backend cannot run architecture %s "
                        "(it runs RMSNorm or LayerNorm, RoPE or learned positions, SwiGLU or "
                        "GELU)", hp->arch_name);
    /* The loader binds what the descriptor names; the pass relies on it. */
    ENG_ASSERT(d->pos != ENG_ARCH_POS_LEARNED || m->pos_embd.data);
    ENG_ASSERT(d->norm != ENG_ARCH_NORM_LAYER || m->out_norm_b.data);
    if (max_pos < 1 || max_pos > hp->n_ctx_train)
        return eng_fail(err, ENG_ERR_INVALID, "context size %d is outside [1, %d] for this model",
                        max_pos, hp->n_ctx_train);
    if (n_threads < 1 || n_threads > 256)
        return eng_fail(err, ENG_ERR_INVALID, "thread count %d is outside [1, 256]", n_threads);
    eng_cpu_runner *r = calloc(1, sizeof *r);
    if (!r)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    r->m = m;
    r->max_pos = max_pos;
    r->kv_dim = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t dq = (size_t)hp->n_head * (size_t)hp->head_dim;
    r->act_stride = max_act_bytes(m);
    r->x = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    r->xn = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    r->tmp = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    r->q = malloc(sizeof(float) * CPU_CHUNK * dq);
    r->att = malloc(sizeof(float) * CPU_CHUNK * dq);
    r->k = malloc(sizeof(float) * CPU_CHUNK * r->kv_dim);
    r->v = malloc(sizeof(float) * CPU_CHUNK * r->kv_dim);
    if (d->ffn == ENG_ARCH_FFN_SWIGLU)
        r->gate = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_ff);
    r->up = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_ff);
    if (d->ffn == ENG_ARCH_FFN_GELU && (r->gelu_tab = malloc(sizeof(float) * CPU_GELU_TABLE_SIZE)))
        cpu_gelu_table_fill(r->gelu_tab);
    r->rope_cs = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->head_dim);
    r->act = aligned_alloc(64, CPU_CHUNK * r->act_stride);
    r->scores = malloc(sizeof(float) * (size_t)n_threads * (size_t)max_pos);
    r->pool = eng_pool_create(n_threads);
    if (!r->x || !r->xn || !r->tmp || !r->q || !r->att || !r->k || !r->v || !r->up ||
        (d->ffn == ENG_ARCH_FFN_SWIGLU && !r->gate) || (d->ffn == ENG_ARCH_FFN_GELU && !r->gelu_tab) ||
        !r->rope_cs || !r->act || !r->scores || !r->pool) {
        eng_cpu_runner_free(r);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory allocating forward scratch");
    }
    *out = r;
    return ENG_OK;
}

void eng_cpu_runner_free(eng_cpu_runner *r)
{
    if (!r)
        return;
    eng_pool_free(r->pool);
    free(r->x);
    free(r->xn);
    free(r->tmp);
    free(r->q);
    free(r->att);
    free(r->k);
    free(r->v);
    free(r->gate);
    free(r->up);
    free(r->gelu_tab);
    free(r->rope_cs);
    free(r->act);
    free(r->scores);
    free(r->logits_local);
    free(r->gathered);
    free(r);
}

eng_status eng_cpu_runner_set_group(eng_cpu_runner *r, const eng_shard *s, eng_comm *comm,
                                    eng_err *err)
{
    ENG_ASSERT(s && comm && comm->n_ranks == s->n_ranks && r->m->hp.n_vocab == s->n_vocab);
    size_t row = (size_t)CPU_CHUNK * (size_t)s->n_vocab_stride;
    r->logits_local = calloc(row, sizeof(float));
    r->gathered = calloc(row * (size_t)s->n_ranks, sizeof(float));
    if (!r->logits_local || !r->gathered)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory for %d ranks' logits",
                        s->n_ranks);
    r->shard = s;
    r->comm = comm;
    return ENG_OK;
}

/* ---- small vector helpers ----------------------------------------------------------------- */

static inline float f16_to_f32(uint16_t h)
{
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return quant_f16_to_f32(h);
#endif
}

/* Rounds a float through fp16 (llama.cpp converts Q to the cache's type before the dot). */
static inline float round_f16(float f) { return quant_f16_to_f32(quant_f32_to_f16(f)); }

/* The fp16 dot products of attention in llama.cpp's order: its CPU build runs Q·K and P·V
 * through llamafile's tinyBLAS, one 8-lane accumulator per output (element i into lane i % 8,
 * fused multiply-adds in order), then hsum8. Matching it bit for bit matters: over 30 layers,
 * one-ulp differences flip roundings of the quantised activations (with this order the
 * default model's hidden states equal llama.cpp's exactly). */
static float dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    float acc[8];
    int i0 = 0;
#if defined(__F16C__) && defined(__FMA__)
    __m256 v = _mm256_setzero_ps();
    for (; i0 + 8 <= n; i0 += 8)
        v = _mm256_fmadd_ps(_mm256_loadu_ps(a + i0),
                            _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i0))), v);
    _mm256_storeu_ps(acc, v);
#else
    for (int l = 0; l < 8; l++)
        acc[l] = 0.0f;
#endif
    for (int i = i0; i < n; i++)
        acc[i % 8] = fmaf(a[i], f16_to_f32(b[i]), acc[i % 8]);
    return cpu_hsum8(acc);
}

#if defined(__F16C__) && defined(__FMA__)
/* The fast paths of attention_part for head sizes that are multiples of 8 (every supported
 * family's): the same operations in the same order as dot_f32_f16 / axpy_f16 / cpu_hsum8,
 * arranged so that eight positions share one reduction and the P·V partial sums stay in
 * registers. */

/* x[0..n) rounded through fp16 (F16C rounds to nearest even, as quant_f32_to_f16 does), n a
 * multiple of 8. */
static void round_f16_rows8(float *dst, const float *x, float mul, int n)
{
    const __m256 m = _mm256_set1_ps(mul);
    for (int i = 0; i < n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), m),
                                                                  _MM_FROUND_TO_NEAREST_INT)));
}

/* cpu_hsum8 of four 8-lane accumulators at once, given r_k = hi_k + lo_k: lane k of the
 * result is (r_k0 + r_k2) + (r_k1 + r_k3). */
static inline __m128 hsum8_x4(__m128 r0, __m128 r1, __m128 r2, __m128 r3)
{
    const __m128 ab = _mm_add_ps(_mm_unpacklo_ps(r0, r1), _mm_unpackhi_ps(r0, r1));
    const __m128 cd = _mm_add_ps(_mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r2, r3));
    return _mm_add_ps(_mm_movelh_ps(ab, cd), _mm_movehl_ps(cd, ab));
}

static inline __m128 fold8(__m256 v) { return _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v)); }

/* out[o] = dot_f32_f16(q, k + o * stride, n) for o = 0..7, n a multiple of 8. */
static void dot8_f32_f16(const float *q, const uint16_t *k, size_t stride, int n, float out[8])
{
    __m256 acc[8];
    for (int o = 0; o < 8; o++)
        acc[o] = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
#pragma GCC unroll 8
        for (int o = 0; o < 8; o++)
            acc[o] = _mm256_fmadd_ps(qv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + o * stride + i))),
                                     acc[o]);
    }
    _mm_storeu_ps(out, hsum8_x4(fold8(acc[0]), fold8(acc[1]), fold8(acc[2]), fold8(acc[3])));
    _mm_storeu_ps(out + 4, hsum8_x4(fold8(acc[4]), fold8(acc[5]), fold8(acc[6]), fold8(acc[7])));
}

/* o[0..hd) = the P·V product of positions [lo, n_kv) in axpy_f16's order: position s adds
 * P[s] * V[s] into partial sum s % 8 (fused multiply-adds in order of s), the partial sums
 * reduced with cpu_hsum8. Eight output elements at a time, their eight partial sums in
 * registers. */
static void pv_f16(const eng_cpu_kv *kv, int il, const int32_t *table, size_t head_off, const float *P, int lo,
                   int n_kv, int hd, float *o)
{
    const int32_t bs = kv->block_size;
    const size_t kvd = kv->kv_dim;
    for (int i0 = 0; i0 < hd; i0 += 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int s0 = lo, nb; s0 < n_kv; s0 += nb) { /* runs of positions within a block */
            const uint16_t *vb = kv->v + kv_offset(kv, il, table, s0) + head_off + i0;
            nb = n_kv - s0 < bs - s0 % bs ? n_kv - s0 : bs - s0 % bs;
#define PV_STEP(acc, s, vr) \
    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(P + (s)), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vr))), acc)
            int s = s0;
            const int se = s0 + nb;
            for (; s < se && (s & 7); s++) { /* up to the next multiple of 8 */
                switch (s & 7) {
                case 1: PV_STEP(a1, s, vb + (size_t)(s - s0) * kvd); break;
                case 2: PV_STEP(a2, s, vb + (size_t)(s - s0) * kvd); break;
                case 3: PV_STEP(a3, s, vb + (size_t)(s - s0) * kvd); break;
                case 4: PV_STEP(a4, s, vb + (size_t)(s - s0) * kvd); break;
                case 5: PV_STEP(a5, s, vb + (size_t)(s - s0) * kvd); break;
                case 6: PV_STEP(a6, s, vb + (size_t)(s - s0) * kvd); break;
                default: PV_STEP(a7, s, vb + (size_t)(s - s0) * kvd); break;
                }
            }
            for (const uint16_t *vr = vb + (size_t)(s - s0) * kvd; s + 8 <= se; s += 8, vr += 8 * kvd) {
                PV_STEP(a0, s, vr);
                PV_STEP(a1, s + 1, vr + kvd);
                PV_STEP(a2, s + 2, vr + 2 * kvd);
                PV_STEP(a3, s + 3, vr + 3 * kvd);
                PV_STEP(a4, s + 4, vr + 4 * kvd);
                PV_STEP(a5, s + 5, vr + 5 * kvd);
                PV_STEP(a6, s + 6, vr + 6 * kvd);
                PV_STEP(a7, s + 7, vr + 7 * kvd);
            }
            for (; s < se; s++) {
                switch (s & 7) {
                case 0: PV_STEP(a0, s, vb + (size_t)(s - s0) * kvd); break;
                case 1: PV_STEP(a1, s, vb + (size_t)(s - s0) * kvd); break;
                case 2: PV_STEP(a2, s, vb + (size_t)(s - s0) * kvd); break;
                case 3: PV_STEP(a3, s, vb + (size_t)(s - s0) * kvd); break;
                case 4: PV_STEP(a4, s, vb + (size_t)(s - s0) * kvd); break;
                case 5: PV_STEP(a5, s, vb + (size_t)(s - s0) * kvd); break;
                default: PV_STEP(a6, s, vb + (size_t)(s - s0) * kvd); break;
                }
            }
#undef PV_STEP
        }
        /* cpu_hsum8 per element: t_j = p[j+4] + p[j], then (t0 + t2) + (t1 + t3) */
        const __m256 t0 = _mm256_add_ps(a4, a0), t1 = _mm256_add_ps(a5, a1);
        const __m256 t2 = _mm256_add_ps(a6, a2), t3 = _mm256_add_ps(a7, a3);
        _mm256_storeu_ps(o + i0, _mm256_add_ps(_mm256_add_ps(t0, t2), _mm256_add_ps(t1, t3)));
    }
}
#endif

/* y[i] += a * b[i] for an fp16 row b. */
static void axpy_f16(float *y, float a, const uint16_t *b, int n)
{
    int i = 0;
#if defined(__F16C__) && defined(__FMA__)
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) {
        __m256 vb = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, vb, _mm256_loadu_ps(y + i)));
    }
#endif
    for (; i < n; i++)
        y[i] += a * f16_to_f32(b[i]);
}

static void f32_to_f16_row(uint16_t *dst, const float *src, int n)
{
    int i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++)
        dst[i] = quant_f32_to_f16(src[i]);
}

/* exp(x) the way llama.cpp's AVX2 build computes it inside softmax and SiLU: the expf scheme
 * of Arm's optimized-routines (n = x/ln2 rounded through the 1.5*2^23 shift, the remainder
 * b = x - n*ln2 in two parts, a degree-5 polynomial, 2^n put into the exponent bits). It is
 * within ~1.5 ulp of expf; using it rather than libm keeps the quantised activations identical
 * to llama.cpp's. Outside |n| <= 126 the result under/overflows and libm's expf is used. */
static inline float exp_ggml(float x)
{
    const float shift = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    if (!(fabsf(n) <= 126.0f))
        return expf(x);
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    uint32_t zb;
    memcpy(&zb, &z, sizeof zb);
    const uint32_t kb = (zb << 23) + 0x3f800000u; /* 2^n */
    float k;
    memcpy(&k, &kb, sizeof k);
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                              fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                         u, 0x1.ffffecp-1f * b);
    return fmaf(j, k, k);
}

/* scores[lo..n) = exp(scores - max), returning their sum as llama.cpp's softmax forms it over
 * a row whose positions outside [lo, n) are masked: in groups of 8 from position 0 (the masked
 * lanes are zeros; groups entirely masked add nothing), each group summed in float, the groups
 * in double. */
#if defined(__F16C__) && defined(__FMA__)
/* exp_ggml of eight lanes: the same operations lane by lane (fnmadd(n, c, x) = fma(-n, c, x),
 * exactly); lanes outside |n| <= 126 go through exp_ggml's expf. */
static inline __m256 exp_ggml8(__m256 x)
{
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 k = _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(z), 23), _mm256_set1_epi32(0x3f800000)));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    __m256 r = _mm256_fmadd_ps(j, k, k);
    /* lanes with !(|n| <= 126), NaN included: exp_ggml's own fallback */
    const __m256 in = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(126.0f), _CMP_LE_OQ);
    if (_mm256_movemask_ps(in) != 0xff) {
        float xs[8], rs[8];
        _mm256_storeu_ps(xs, x);
        for (int l = 0; l < 8; l++)
            rs[l] = exp_ggml(xs[l]);
        r = _mm256_loadu_ps(rs);
    }
    return r;
}
#endif

static double softmax_exp(float *scores, int lo, int n, float mx)
{
    double sum = 0.0;
#if defined(__F16C__) && defined(__FMA__)
    if ((lo & 7) == 0) { /* whole groups of 8 in vectors (cpu_hsum8's order), the rest below */
        const __m256 m = _mm256_set1_ps(mx);
        for (; lo + 8 <= n; lo += 8) {
            const __m256 e = exp_ggml8(_mm256_sub_ps(_mm256_loadu_ps(scores + lo), m));
            _mm256_storeu_ps(scores + lo, e);
            const __m128 t = _mm_add_ps(_mm256_extractf128_ps(e, 1), _mm256_castps256_ps128(e));
            const __m128 h = _mm_add_ps(t, _mm_movehl_ps(t, t)); /* t0 + t2, t1 + t3 */
            sum += (double)_mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
        }
    }
#endif
    for (int i0 = lo & ~7; i0 < n; i0 += 8) {
        float v[8] = {0};
        for (int l = 0; l < 8 && i0 + l < n; l++)
            if (i0 + l >= lo)
                scores[i0 + l] = v[l] = exp_ggml(scores[i0 + l] - mx);
        sum += (double)cpu_hsum8(v);
    }
    return sum;
}

/* ---- the forward pass --------------------------------------------------------------------- */

/* y[t, rows] = W · act[t] for this thread's share of W's rows. */
/* act rows are quant_act_row_bytes(w->dtype, ne0) apart, as quantize_rows packs them. */
static void matmul_part(const eng_weight *w, const uint8_t *act, int32_t n, float *y, int64_t ldy,
                        int ith, int nth)
{
    long r0, r1;
    eng_pool_split((long)w->ne1, ith, nth, &r0, &r1);
    if (r1 > r0)
        quant_matmul(w->dtype, w->data, w->ne0, r0, r1, act, n, y, ldy);
}

/* Quantises this thread's tokens of x ([n, ncols], stride ld) for weights of type t, packed
 * quant_act_row_bytes(t, ncols) apart as quant_matmul expects. */
static void quantize_rows(gguf_dtype t, const float *x, int64_t ld, int64_t ncols, int32_t n,
                          uint8_t *act, int ith, int nth)
{
    size_t rb = quant_act_row_bytes(t, ncols);
    long t0, t1;
    eng_pool_split(n, ith, nth, &t0, &t1);
    for (long i = t0; i < t1; i++)
        quant_act_quantize(t, x + i * ld, act + (size_t)i * rb, ncols);
}

static void rope_tables(const fwd_job *j, int ith, int nth)
{
    const eng_model *m = j->r->m;
    const int half = m->hp.head_dim / 2;
    const float theta_scale = powf(m->hp.rope_base, -2.0f / (float)m->hp.head_dim);
    long t0, t1;
    eng_pool_split(j->n, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        float *cs = j->r->rope_cs + t * 2 * half;
        float theta_base = (float)j->b->pos[j->c0 + t];
        for (int i = 0; i < half; i++) {
            float theta = theta_base;
            if (m->rope_freqs)
                theta /= m->rope_freqs[i];
            /* Linear scaling (ggml's rope_yarn with ext_factor 0): the angle times freq_scale,
             * exact when it is 1. */
            theta = m->hp.rope_freq_scale * theta;
            cs[2 * i] = cosf(theta);
            cs[2 * i + 1] = sinf(theta);
            theta_base *= theta_scale;
        }
    }
}

/* Rotates adjacent pairs (x[2i], x[2i+1]) of every head of a row (llama's "normal" RoPE). */
static void rope_row(float *row, int n_heads, int hd, const float *cs)
{
    for (int h = 0; h < n_heads; h++) {
        float *x = row + h * hd;
        for (int i = 0; i < hd / 2; i++) {
            const float c = cs[2 * i], s = cs[2 * i + 1];
            const float x0 = x[2 * i], x1 = x[2 * i + 1];
            /* Fused exactly as llama.cpp's build computes them, whatever the optimiser does. */
            x[2 * i] = fmaf(x0, c, -(x1 * s));
            x[2 * i + 1] = fmaf(x0, s, x1 * c);
        }
    }
}

/* Rotates halves (x[i], x[i + hd/2]) of every head of a row (llama.cpp's NeoX RoPE, Qwen2):
 * the same angles as rope_row, pair i at pos * base^(-2i/hd). */
static void rope_row_neox(float *row, int n_heads, int hd, const float *cs)
{
    const int half = hd / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = row + h * hd;
        for (int i = 0; i < half; i++) {
            const float c = cs[2 * i], s = cs[2 * i + 1];
            const float x0 = x[i], x1 = x[i + half];
            x[i] = fmaf(x0, c, -(x1 * s));
            x[i + half] = fmaf(x0, s, x1 * c);
        }
    }
}

/* y[i] += b[i] (a bias; llama.cpp adds it to the F32 product, before RoPE). */
static void add_bias(float *y, const eng_weight *b, int64_t n)
{
    const float *bb = b->data;
    for (int64_t i = 0; i < n; i++)
        y[i] += bb[i];
}

/* Causal attention for this thread's (token, head) pairs of layer il, reading each
 * sequence's K/V block by block through its block table. A query at position p sees keys
 * [0, p], or (p - n_swa, p] with a sliding window; positions outside are skipped, which is
 * exact: llama.cpp's mask makes their probabilities zero. */
static void attention_part(const fwd_job *j, int il, int ith, int nth)
{
    eng_cpu_runner *r = j->r;
    const eng_cpu_kv *kv = j->kv;
    const eng_hparams *hp = &r->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const size_t dq = (size_t)n_head * (size_t)hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int32_t bs = kv->block_size;
    float *scores = r->scores + (size_t)ith * (size_t)r->max_pos;
    float qh[256];
    float vacc[8 * 256]; /* [8, hd] partial sums of the V product */
    const bool vec = hd % 8 == 0; /* the vector paths (when built with F16C and FMA) */
    (void)vec;
    /* (token, head) pairs dealt round-robin: a causal query's cost grows with its position,
     * so contiguous shares would leave the thread with the chunk's first tokens idle (3:1 on a
     * prompt's first chunk). Each pair writes only its own output: same bits either way. */
    for (long p = ith; p < (long)j->n * n_head; p += nth) {
        const int t = (int)(p / n_head), h = (int)(p % n_head), kvh = h / group;
        const int32_t bt = j->c0 + t;
        const int32_t *table = j->b->block_tables[j->b->seq[bt]];
        const int n_kv = j->b->pos[bt] + 1; /* causal: positions [lo, pos] */
        const int lo = hp->n_swa > 0 && n_kv > hp->n_swa ? n_kv - hp->n_swa : 0;
        const size_t head_off = (size_t)kvh * (size_t)hd;
        const float *q = r->q + (size_t)t * dq + (size_t)h * hd;
#if defined(__F16C__) && defined(__FMA__)
        if (vec) {
            round_f16_rows8(qh, q, 1.0f, hd);
        } else
#endif
        {
            for (int i = 0; i < hd; i++)
                qh[i] = round_f16(q[i]);
        }
        float mx = -INFINITY;
        for (int s0 = lo, nb; s0 < n_kv; s0 += nb) { /* runs of positions within a block */
            const uint16_t *kb = kv->k + kv_offset(kv, il, table, s0) + head_off;
            nb = n_kv - s0 < bs - s0 % bs ? n_kv - s0 : bs - s0 % bs;
            int o = 0;
#if defined(__F16C__) && defined(__FMA__)
            for (; vec && o + 8 <= nb; o += 8) {
                float d8[8];
                dot8_f32_f16(qh, kb + (size_t)o * kv->kv_dim, kv->kv_dim, hd, d8);
                for (int k = 0; k < 8; k++) {
                    const float sc = d8[k] * scale;
                    scores[s0 + o + k] = sc;
                    if (sc > mx)
                        mx = sc;
                }
            }
#endif
            for (; o < nb; o++) {
                float sc = dot_f32_f16(qh, kb + (size_t)o * kv->kv_dim, hd) * scale;
                scores[s0 + o] = sc;
                if (sc > mx)
                    mx = sc;
            }
        }
        const double sum = softmax_exp(scores, lo, n_kv, mx);
        const float inv = (float)(1.0 / sum);
        float *o = r->att + (size_t)t * dq + (size_t)h * hd;
#if defined(__F16C__) && defined(__FMA__)
        if (vec) {
            /* the probabilities rounded to fp16 in place, then P·V */
            const int l8 = lo & ~7;
            for (int s = lo; s < n_kv && (s & 7); s++)
                scores[s] = round_f16(scores[s] * inv);
            int s = lo & 7 ? l8 + 8 : lo;
            for (; s + 8 <= n_kv; s += 8)
                round_f16_rows8(scores + s, scores + s, inv, 8);
            for (; s < n_kv; s++)
                scores[s] = round_f16(scores[s] * inv);
            pv_f16(kv, il, table, head_off, scores, lo, n_kv, hd, o);
            continue;
        }
#endif
        /* llama.cpp multiplies V by the probabilities converted to fp16, as one fp16 dot
         * product over positions per output element: position s accumulates into partial sum
         * s % 8, reduced with hsum8 (see dot_f32_f16). vacc holds the 8 partial sums for all
         * hd outputs. */
        memset(vacc, 0, sizeof(float) * 8 * (size_t)hd);
        for (int s0 = lo, nb; s0 < n_kv; s0 += nb) {
            const uint16_t *vb = kv->v + kv_offset(kv, il, table, s0) + head_off;
            nb = n_kv - s0 < bs - s0 % bs ? n_kv - s0 : bs - s0 % bs;
            for (int k = 0; k < nb; k++)
                axpy_f16(vacc + (size_t)((s0 + k) % 8) * hd, round_f16(scores[s0 + k] * inv),
                         vb + (size_t)k * kv->kv_dim, hd);
        }
        for (int i = 0; i < hd; i++) {
            float col[8];
            for (int l = 0; l < 8; l++)
                col[l] = vacc[(size_t)l * hd + i];
            o[i] = cpu_hsum8(col);
        }
    }
}

/* out = the family's norm of x: RMSNorm with weight w, or LayerNorm with weight w and bias b. */
static void norm_row(const eng_model *m, float *out, const float *x, const eng_weight *w,
                     const eng_weight *b)
{
    if (m->desc->norm == ENG_ARCH_NORM_LAYER)
        cpu_layernorm_row(out, x, w->data, b->data, (int)m->hp.n_embd, m->hp.norm_eps);
    else
        cpu_rmsnorm_row(out, x, w->data, (int)m->hp.n_embd, m->hp.norm_eps);
}

/* x += y + bias (the bias where bound): llama.cpp adds a product's bias first, then the
 * residual. */
static void add_residual(float *x, const float *y, const eng_weight *bias, int64_t n)
{
    if (bias->data) {
        const float *bb = bias->data;
        for (int64_t i = 0; i < n; i++)
            x[i] += y[i] + bb[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            x[i] += y[i];
    }
}

/* The feed-forward products of the chunk from the normalised rows in xn into tmp (before
 * b_down and the residual): down(silu(gate(xn)) * up(xn)) for SwiGLU, down(gelu(up(xn) +
 * b_up)) for GELU. This thread quantises and activates tokens [t0, t1). */
static void ffn_part(const fwd_job *j, const eng_layer *L, long t0, long t1, int ith, int nth)
{
    eng_cpu_runner *r = j->r;
    const int64_t d = r->m->hp.n_embd, ff = r->m->hp.n_ff;
    const int32_t n = j->n;
    float *h = r->up; /* [n, ff] the activated hidden rows */
    /* The activation runs on tokens [a0, a1), elements [e0, e1): this thread's tokens, or with
     * fewer tokens than threads (decoding) every token and this thread's share of the elements
     * (elementwise, so the same bits either way). */
    const bool by_elems = n < nth;
    long a0 = t0, a1 = t1, e0 = 0, e1 = (long)ff;
    if (by_elems) {
        a0 = 0;
        a1 = n;
        eng_pool_split((long)ff, ith, nth, &e0, &e1);
    }
    if (L->w_gate.data) {
        quantize_rows(L->w_gate.dtype, r->xn, d, d, n, r->act, ith, nth);
        eng_pool_barrier(r->pool);
        matmul_part(&L->w_gate, r->act, n, r->gate, ff, ith, nth);
        if (L->w_up.dtype != L->w_gate.dtype) {
            eng_pool_barrier(r->pool);
            quantize_rows(L->w_up.dtype, r->xn, d, d, n, r->act, ith, nth);
            eng_pool_barrier(r->pool);
        }
        matmul_part(&L->w_up, r->act, n, r->up, ff, ith, nth);
        eng_pool_barrier(r->pool);
        h = r->gate;
        for (long t = a0; t < a1; t++) {
            float *g = r->gate + t * ff;
            const float *u = r->up + t * ff;
            for (int64_t i = e0; i < e1; i++)
                g[i] = g[i] / (1.0f + exp_ggml(-g[i])) * u[i]; /* SiLU(gate) * up */
        }
    } else {
        quantize_rows(L->w_up.dtype, r->xn, d, d, n, r->act, ith, nth);
        eng_pool_barrier(r->pool);
        matmul_part(&L->w_up, r->act, n, r->up, ff, ith, nth);
        eng_pool_barrier(r->pool);
        for (long t = a0; t < a1; t++) {
            float *u = r->up + t * ff;
            if (L->b_up.data) {
                const float *bb = L->b_up.data;
                for (int64_t i = e0; i < e1; i++)
                    u[i] += bb[i];
            }
            cpu_gelu_row(u + e0, e1 - e0, r->gelu_tab);
        }
    }
    if (by_elems) /* the next quantisation reads whole rows */
        eng_pool_barrier(r->pool);
    quantize_rows(L->w_down.dtype, h, ff, ff, n, r->act, ith, nth);
    eng_pool_barrier(r->pool);
    matmul_part(&L->w_down, r->act, n, r->tmp, d, ith, nth);
    eng_pool_barrier(r->pool);
}

/* Tensor parallelism: buf (every thread's rows done) becomes the sum over the ranks, rank by
 * rank. Thread 0 speaks for the rank; after a failure the rest of the pass skips the
 * collectives (every rank's group has failed too) and eng_cpu_forward returns the error. */
static void group_sum(const fwd_job *j, float *buf, size_t count, int ith)
{
    eng_cpu_runner *r = j->r;
    if (!r->comm)
        return;
    eng_pool_barrier(r->pool);
    if (ith == 0 && r->comm_st == ENG_OK)
        r->comm_st = r->comm->ops->all_reduce_sum(r->comm, r->shard->rank, buf, count,
                                                  ENG_COMM_F32, NULL, &r->comm_err);
    eng_pool_barrier(r->pool);
}

/* Tensor parallelism: every rank's logits of the chunk's n_out rows (logits_local, stride
 * n_vocab_stride) gathered into the caller's rows (n_vocab_total wide), when it has any. */
static void group_gather_logits(const fwd_job *j, int ith, int nth)
{
    eng_cpu_runner *r = j->r;
    const eng_shard *s = r->shard;
    const size_t stride = (size_t)s->n_vocab_stride, count = (size_t)j->n_out * stride;
    eng_pool_barrier(r->pool);
    if (ith == 0 && r->comm_st == ENG_OK)
        r->comm_st = r->comm->ops->all_gather(r->comm, s->rank, r->logits_local, r->gathered,
                                              count, ENG_COMM_F32, NULL, &r->comm_err);
    eng_pool_barrier(r->pool);
    if (!j->logits)
        return;
    long k0, k1;
    eng_pool_split(j->n_out, ith, nth, &k0, &k1);
    for (long k = k0; k < k1; k++)
        for (int q = 0; q < s->n_ranks; q++) {
            size_t v0 = (size_t)q * stride;
            size_t nv = (size_t)s->n_vocab_total - v0 < stride ? (size_t)s->n_vocab_total - v0
                                                               : stride;
            memcpy(j->logits + (size_t)k * (size_t)s->n_vocab_total + v0,
                   r->gathered + (size_t)q * count + (size_t)k * stride, nv * sizeof(float));
        }
}

static void forward_chunk(void *arg, int ith, int nth)
{
    const fwd_job *j = arg;
    eng_cpu_runner *r = j->r;
    eng_cpu_kv *kv = j->kv;
    const eng_batch *b = j->b;
    const eng_model *m = r->m;
    const eng_hparams *hp = &m->hp;
    const int32_t n = j->n;
    const int64_t d = hp->n_embd, hd = hp->head_dim;
    const int64_t dq = (int64_t)hp->n_head * hd, dkv = (int64_t)r->kv_dim;
    const eng_arch_pos pos_kind = m->desc->pos;
    long t0, t1;
    eng_pool_split(n, ith, nth, &t0, &t1);

    for (long t = t0; t < t1; t++) {
        float *x = r->x + t * d;
        /* A rank holds the vocabulary rows [vocab0, vocab0 + n_vocab): zeros for the others,
         * which the sum over ranks fills in exactly. */
        int64_t row = b->tokens[j->c0 + t] - (r->shard ? r->shard->vocab0 : 0);
        if (row >= 0 && row < m->tok_embd.ne1)
            quant_dequant_row(m->tok_embd.dtype,
                              (const uint8_t *)m->tok_embd.data + (size_t)row * m->tok_embd.row_bytes,
                              x, d);
        else
            memset(x, 0, sizeof(float) * (size_t)d);
    }
    group_sum(j, r->x, (size_t)n * (size_t)d, ith);
    for (long t = t0; t < t1; t++) {
        float *x = r->x + t * d;
        if (pos_kind == ENG_ARCH_POS_LEARNED) { /* + row pos of the position embeddings */
            float *pe = r->xn + t * d;
            quant_dequant_row(m->pos_embd.dtype,
                              (const uint8_t *)m->pos_embd.data +
                                  (size_t)b->pos[j->c0 + t] * m->pos_embd.row_bytes,
                              pe, d);
            for (int64_t i = 0; i < d; i++)
                x[i] += pe[i];
        }
    }
    if (pos_kind != ENG_ARCH_POS_LEARNED)
        rope_tables(j, ith, nth);
    eng_pool_barrier(r->pool);

    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        /* attention block */
        for (long t = t0; t < t1; t++)
            norm_row(m, r->xn + t * d, r->x + t * d, &L->attn_norm, &L->attn_norm_b);
        quantize_rows(L->wq.dtype, r->xn, d, d, n, r->act, ith, nth);
        eng_pool_barrier(r->pool);
        matmul_part(&L->wq, r->act, n, r->q, dq, ith, nth);
        if (L->wk.dtype != L->wq.dtype) {
            eng_pool_barrier(r->pool);
            quantize_rows(L->wk.dtype, r->xn, d, d, n, r->act, ith, nth);
            eng_pool_barrier(r->pool);
        }
        matmul_part(&L->wk, r->act, n, r->k, dkv, ith, nth);
        if (L->wv.dtype != L->wk.dtype) {
            eng_pool_barrier(r->pool);
            quantize_rows(L->wv.dtype, r->xn, d, d, n, r->act, ith, nth);
            eng_pool_barrier(r->pool);
        }
        matmul_part(&L->wv, r->act, n, r->v, dkv, ith, nth);
        eng_pool_barrier(r->pool);
        for (long t = t0; t < t1; t++) {
            const float *cs = r->rope_cs + t * hd;
            if (L->bq.data)
                add_bias(r->q + t * dq, &L->bq, dq);
            if (L->bk.data)
                add_bias(r->k + t * dkv, &L->bk, dkv);
            if (L->bv.data)
                add_bias(r->v + t * dkv, &L->bv, dkv);
            if (pos_kind == ENG_ARCH_POS_ROPE_NEOX) {
                rope_row_neox(r->q + t * dq, hp->n_head, (int)hd, cs);
                rope_row_neox(r->k + t * dkv, hp->n_head_kv, (int)hd, cs);
            } else if (pos_kind == ENG_ARCH_POS_ROPE_INTERLEAVED) {
                rope_row(r->q + t * dq, hp->n_head, (int)hd, cs);
                rope_row(r->k + t * dkv, hp->n_head_kv, (int)hd, cs);
            }
            const int32_t bt = j->c0 + (int32_t)t;
            size_t at = kv_offset(kv, il, b->block_tables[b->seq[bt]], b->pos[bt]);
            f32_to_f16_row(kv->k + at, r->k + t * dkv, (int)dkv);
            f32_to_f16_row(kv->v + at, r->v + t * dkv, (int)dkv);
        }
        eng_pool_barrier(r->pool);
        attention_part(j, il, ith, nth);
        eng_pool_barrier(r->pool);
        quantize_rows(L->wo.dtype, r->att, dq, dq, n, r->act, ith, nth);
        eng_pool_barrier(r->pool);
        matmul_part(&L->wo, r->act, n, r->tmp, d, ith, nth);
        eng_pool_barrier(r->pool);
        group_sum(j, r->tmp, (size_t)n * (size_t)d, ith); /* row-parallel: sum the ranks' parts */

        /* feed-forward block */
        for (long t = t0; t < t1; t++) {
            add_residual(r->x + t * d, r->tmp + t * d, &L->bo, d);
            norm_row(m, r->xn + t * d, r->x + t * d, &L->ffn_norm, &L->ffn_norm_b);
        }
        ffn_part(j, L, t0, t1, ith, nth);
        group_sum(j, r->tmp, (size_t)n * (size_t)d, ith);
        for (long t = t0; t < t1; t++)
            add_residual(r->x + t * d, r->tmp + t * d, &L->b_down, d);
        /* The next layer's norm reads only this thread's tokens of x: no barrier needed. */
    }

    if (j->n_out == 0)
        return;
    /* The output head takes other tokens than the layers' split: wait until every thread has
     * finished its tokens' residual stream. Rows to project are gathered into xn[0, n_out). */
    eng_pool_barrier(r->pool);
    long o0, o1;
    eng_pool_split(j->n_out, ith, nth, &o0, &o1);
    size_t rb = quant_act_row_bytes(m->output.dtype, d);
    for (long k = o0; k < o1; k++) {
        int32_t t = b->logits_idx[j->k0 + k] - j->c0;
        norm_row(m, r->xn + k * d, r->x + t * d, &m->out_norm, &m->out_norm_b);
        quant_act_quantize(m->output.dtype, r->xn + k * d, r->act + (size_t)k * rb, d);
    }
    eng_pool_barrier(r->pool);
    if (!r->comm) {
        matmul_part(&m->output, r->act, j->n_out, j->logits, hp->n_vocab, ith, nth);
        return;
    }
    matmul_part(&m->output, r->act, j->n_out, r->logits_local, r->shard->n_vocab_stride, ith, nth);
    group_gather_logits(j, ith, nth);
}

eng_status eng_cpu_forward(eng_cpu_runner *r, eng_cpu_kv *kv, const eng_batch *b,
                           float *logits, eng_err *err)
{
    const eng_hparams *hp = &r->m->hp;
    const int32_t n_vocab = r->shard ? r->shard->n_vocab_total : hp->n_vocab;
    if (b->n_tokens <= 0)
        return eng_fail(err, ENG_ERR_INVALID, "nothing to evaluate (0 tokens)");
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= n_vocab)
            return eng_fail(err, ENG_ERR_INVALID, "token id %d at index %d is outside [0, %d)",
                            b->tokens[i], i, n_vocab);
        ENG_ASSERT(b->pos[i] >= 0 && b->pos[i] < r->max_pos);
        ENG_ASSERT(b->seq[i] >= 0 && b->seq[i] < b->n_seqs);
    }
    ENG_ASSERT(kv->n_layer == hp->n_layer && kv->kv_dim == r->kv_dim);
    ENG_ASSERT(b->n_logits == 0 || logits != NULL || r->comm); /* ranks > 0 gather for rank 0 */
    r->comm_st = ENG_OK;
    int32_t k = 0;
    for (int32_t c0 = 0; c0 < b->n_tokens; c0 += CPU_CHUNK) {
        int32_t cn = b->n_tokens - c0 < CPU_CHUNK ? b->n_tokens - c0 : CPU_CHUNK;
        int32_t k0 = k;
        while (k < b->n_logits && b->logits_idx[k] < c0 + cn) {
            ENG_ASSERT(b->logits_idx[k] >= c0 && (k == 0 || b->logits_idx[k] > b->logits_idx[k - 1]));
            k++;
        }
        fwd_job j = {.r = r, .kv = kv, .b = b, .c0 = c0, .n = cn, .k0 = k0, .n_out = k - k0,
                     .logits = logits ? logits + (size_t)k0 * (size_t)n_vocab : NULL};
        eng_pool_run(r->pool, forward_chunk, &j);
    }
    ENG_ASSERT(k == b->n_logits);
    if (r->comm_st != ENG_OK)
        return eng_fail(err, r->comm_st, "%s", r->comm_err.msg);
    return ENG_OK;
}

/* ---- one sequence ------------------------------------------------------------------------- */

enum { CTX_BLOCK = 16 };

struct eng_cpu_ctx {
    eng_cpu_runner *runner;
    eng_cpu_kv *kv;
    int32_t n_ctx, pos;
    int32_t *table;  /* [n_blocks]: the identity, this sequence owns the whole pool */
    int32_t *pos_buf, *seq_buf, *idx_buf; /* [n_ctx] per-call batch arrays */
};

eng_status eng_cpu_ctx_create(const eng_model *m, int32_t n_ctx, int n_threads,
                              eng_cpu_ctx **out, eng_err *err)
{
    *out = NULL;
    eng_cpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    eng_status st = eng_cpu_runner_create(m, n_ctx, n_threads, &c->runner, err);
    int32_t n_blocks = (n_ctx + CTX_BLOCK - 1) / CTX_BLOCK;
    if (st == ENG_OK)
        st = eng_cpu_kv_create(m, n_blocks, CTX_BLOCK, &c->kv, err);
    if (st != ENG_OK) {
        eng_cpu_ctx_free(c);
        return st;
    }
    c->n_ctx = n_ctx;
    c->table = malloc(sizeof(int32_t) * (size_t)n_blocks);
    c->pos_buf = malloc(sizeof(int32_t) * (size_t)n_ctx);
    c->seq_buf = calloc((size_t)n_ctx, sizeof(int32_t));
    c->idx_buf = malloc(sizeof(int32_t) * (size_t)n_ctx);
    if (!c->table || !c->pos_buf || !c->seq_buf || !c->idx_buf) {
        eng_cpu_ctx_free(c);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < n_blocks; i++)
        c->table[i] = i;
    *out = c;
    return ENG_OK;
}

void eng_cpu_ctx_free(eng_cpu_ctx *c)
{
    if (!c)
        return;
    eng_cpu_runner_free(c->runner);
    eng_cpu_kv_free(c->kv);
    free(c->table);
    free(c->pos_buf);
    free(c->seq_buf);
    free(c->idx_buf);
    free(c);
}

int32_t eng_cpu_ctx_pos(const eng_cpu_ctx *c) { return c->pos; }
int32_t eng_cpu_ctx_n_ctx(const eng_cpu_ctx *c) { return c->n_ctx; }

void eng_cpu_ctx_truncate(eng_cpu_ctx *c, int32_t n_keep)
{
    if (n_keep < 0)
        n_keep = 0;
    if (n_keep < c->pos)
        c->pos = n_keep;
}

eng_status eng_cpu_ctx_eval(eng_cpu_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                            bool all, eng_err *err)
{
    if (n <= 0)
        return eng_fail(err, ENG_ERR_INVALID, "nothing to evaluate (0 tokens)");
    if ((int64_t)c->pos + n > c->n_ctx)
        return eng_fail(err, ENG_ERR_TOO_LONG,
                        "%d tokens at position %d exceed the context of %d tokens", n, c->pos,
                        c->n_ctx);
    const int32_t *tables[1] = {c->table};
    for (int32_t i = 0; i < n; i++) {
        c->pos_buf[i] = c->pos + i;
        c->idx_buf[i] = i;
    }
    eng_batch b = {
        .n_tokens = n, .tokens = tokens, .pos = c->pos_buf, .seq = c->seq_buf,
        .block_tables = tables, .n_seqs = 1,
        .logits_idx = all ? c->idx_buf : c->idx_buf + n - 1,
        .n_logits = logits ? (all ? n : 1) : 0,
    };
    eng_status st = eng_cpu_forward(c->runner, c->kv, &b, logits, err);
    if (st == ENG_OK)
        c->pos += n;
    return st;
}
