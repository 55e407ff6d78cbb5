/* cpu_forward.c — Llama-family forward pass on the CPU: RMSNorm, RoPE, grouped-query
 * attention over an fp16 KV cache, SwiGLU, quantised matrix products, split across a thread
 * pool. Numerics follow llama.cpp's CPU path (activations quantised to the weight's dot
 * format, Q rounded to fp16 against the fp16 cache) so outputs agree with it. */
#include "cpu_forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "quant.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

enum { CPU_CHUNK = 64 }; /* tokens per forward chunk: bounds the scratch buffers */

struct eng_cpu_ctx {
    const eng_model *m;
    eng_pool *pool;
    int32_t n_ctx;
    int32_t pos;
    size_t kv_dim;      /* n_head_kv * head_dim */
    uint16_t *k_cache;  /* [n_layer, n_ctx, kv_dim] fp16 */
    uint16_t *v_cache;  /* [n_layer, n_ctx, kv_dim] fp16 */
    /* scratch for one chunk */
    float *x;           /* [CHUNK, n_embd] residual stream */
    float *xn;          /* [CHUNK, n_embd] normalised input of the current block */
    float *q;           /* [CHUNK, n_head*hd] */
    float *k;           /* [CHUNK, kv_dim] */
    float *v;           /* [CHUNK, kv_dim] */
    float *att;         /* [CHUNK, n_head*hd] attention output */
    float *tmp;         /* [CHUNK, n_embd] block output before the residual add */
    float *gate;        /* [CHUNK, n_ff] */
    float *up;          /* [CHUNK, n_ff] */
    float *rope_cs;     /* [CHUNK, hd/2, 2] cos, sin */
    uint8_t *act;       /* [CHUNK, act_stride] quantised activations */
    size_t act_stride;
    float *scores;      /* [n_threads, n_ctx] attention scores per thread */
    float *out_rows;    /* [CHUNK, n_vocab] when all logits are wanted: points at caller's */
};

/* What one pool run computes. */
typedef struct fwd_job {
    eng_cpu_ctx *c;
    const int32_t *tokens;
    int32_t n;
    int32_t pos0;
    float *logits;  /* caller's buffer or NULL */
    bool all;
} fwd_job;

static size_t max_act_bytes(const eng_model *m, int64_t n)
{
    size_t b = 0;
    const gguf_dtype types[] = {m->layers[0].wq.dtype, m->layers[0].wk.dtype,
                                m->layers[0].wv.dtype, m->layers[0].wo.dtype,
                                m->layers[0].w_gate.dtype, m->layers[0].w_down.dtype,
                                m->output.dtype};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t s = quant_act_row_bytes(types[i], n);
        if (s > b)
            b = s;
    }
    /* Layers may mix types (e.g. Q6_K ffn_down in some layers): take every layer's. */
    for (int il = 0; il < m->hp.n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < 7; i++) {
            size_t s = quant_act_row_bytes(ws[i]->dtype, n);
            if (s > b)
                b = s;
        }
    }
    return (b + 63) & ~(size_t)63;
}

eng_status eng_cpu_ctx_create(const eng_model *m, int32_t n_ctx, int n_threads,
                              eng_cpu_ctx **out, eng_err *err)
{
    *out = NULL;
    const eng_hparams *hp = &m->hp;
    if (n_ctx < 1 || n_ctx > hp->n_ctx_train)
        return eng_fail(err, ENG_ERR_INVALID, "context size %d is outside [1, %d] for this model",
                        n_ctx, hp->n_ctx_train);
    if (n_threads < 1 || n_threads > 256)
        return eng_fail(err, ENG_ERR_INVALID, "thread count %d is outside [1, 256]", n_threads);
    eng_cpu_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->kv_dim = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t dq = (size_t)hp->n_head * (size_t)hp->head_dim;
    size_t kv_elems = (size_t)hp->n_layer * (size_t)n_ctx * c->kv_dim;
    int64_t act_n = hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd;
    if ((int64_t)dq > act_n)
        act_n = (int64_t)dq;
    c->act_stride = max_act_bytes(m, act_n);
    c->k_cache = malloc(kv_elems * sizeof(uint16_t));
    c->v_cache = malloc(kv_elems * sizeof(uint16_t));
    c->x = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    c->xn = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    c->tmp = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_embd);
    c->q = malloc(sizeof(float) * CPU_CHUNK * dq);
    c->att = malloc(sizeof(float) * CPU_CHUNK * dq);
    c->k = malloc(sizeof(float) * CPU_CHUNK * c->kv_dim);
    c->v = malloc(sizeof(float) * CPU_CHUNK * c->kv_dim);
    c->gate = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_ff);
    c->up = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->n_ff);
    c->rope_cs = malloc(sizeof(float) * CPU_CHUNK * (size_t)hp->head_dim);
    c->act = aligned_alloc(64, CPU_CHUNK * c->act_stride);
    c->scores = malloc(sizeof(float) * (size_t)n_threads * (size_t)n_ctx);
    c->pool = eng_pool_create(n_threads);
    if (!c->k_cache || !c->v_cache || !c->x || !c->xn || !c->tmp || !c->q || !c->att || !c->k ||
        !c->v || !c->gate || !c->up || !c->rope_cs || !c->act || !c->scores || !c->pool) {
        eng_cpu_ctx_free(c);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory allocating a %d-token context", n_ctx);
    }
    *out = c;
    return ENG_OK;
}

void eng_cpu_ctx_free(eng_cpu_ctx *c)
{
    if (!c)
        return;
    eng_pool_free(c->pool);
    free(c->k_cache);
    free(c->v_cache);
    free(c->x);
    free(c->xn);
    free(c->tmp);
    free(c->q);
    free(c->att);
    free(c->k);
    free(c->v);
    free(c->gate);
    free(c->up);
    free(c->rope_cs);
    free(c->act);
    free(c->scores);
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

/* ---- small vector helpers ----------------------------------------------------------------- */

static inline float f16_to_f32(uint16_t h) { return quant_f16_to_f32(h); }

/* Rounds a float through fp16 (llama.cpp converts Q to the cache's type before the dot). */
static inline float round_f16(float f) { return quant_f16_to_f32(quant_f32_to_f16(f)); }

static float dot_f32_f16(const float *a, const uint16_t *b, int n)
{
    int i = 0;
    float sum = 0.0f;
#if defined(__F16C__) && defined(__FMA__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), b1, acc1);
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    sum = _mm_cvtss_f32(s);
#endif
    for (; i < n; i++)
        sum += a[i] * f16_to_f32(b[i]);
    return sum;
}

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

/* out = x / rms(x) * w, as ggml computes it (sum of squares in double). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        out[i] = (x[i] * scale) * w[i];
}

/* ---- the forward pass --------------------------------------------------------------------- */

/* y[t, rows] = W · act[t] for this thread's share of W's rows. */
static void matmul_part(const eng_weight *w, const uint8_t *act, size_t act_stride, int32_t n,
                        float *y, int64_t ldy, int ith, int nth)
{
    long r0, r1;
    eng_pool_split((long)w->ne1, ith, nth, &r0, &r1);
    (void)act_stride; /* rows are quant_act_row_bytes(w->dtype, ne0) apart: see quantize_rows */
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
    const eng_hparams *hp = &j->c->m->hp;
    const int half = hp->head_dim / 2;
    const float theta_scale = powf(hp->rope_base, -2.0f / (float)hp->head_dim);
    long t0, t1;
    eng_pool_split(j->n, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        float *cs = j->c->rope_cs + t * 2 * half;
        float theta_base = (float)(j->pos0 + t);
        for (int i = 0; i < half; i++) {
            float theta = theta_base;
            if (j->c->m->rope_freqs)
                theta /= j->c->m->rope_freqs[i];
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
            x[2 * i] = x0 * c - x1 * s;
            x[2 * i + 1] = x0 * s + x1 * c;
        }
    }
}

/* Causal attention for this thread's (token, head) pairs of layer il. */
static void attention_part(const fwd_job *j, int il, int ith, int nth)
{
    eng_cpu_ctx *c = j->c;
    const eng_hparams *hp = &c->m->hp;
    const int hd = hp->head_dim, n_head = hp->n_head, group = hp->n_head / hp->n_head_kv;
    const size_t dq = (size_t)n_head * (size_t)hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const uint16_t *kl = c->k_cache + (size_t)il * (size_t)c->n_ctx * c->kv_dim;
    const uint16_t *vl = c->v_cache + (size_t)il * (size_t)c->n_ctx * c->kv_dim;
    float *scores = c->scores + (size_t)ith * (size_t)c->n_ctx;
    float qh[256];
    long p0, p1;
    eng_pool_split((long)j->n * n_head, ith, nth, &p0, &p1);
    for (long p = p0; p < p1; p++) {
        const int t = (int)(p / n_head), h = (int)(p % n_head), kvh = h / group;
        const int n_kv = j->pos0 + t + 1; /* causal: positions [0, pos] */
        const float *q = c->q + (size_t)t * dq + (size_t)h * hd;
        for (int i = 0; i < hd; i++)
            qh[i] = round_f16(q[i]);
        float mx = -INFINITY;
        for (int s = 0; s < n_kv; s++) {
            float sc = dot_f32_f16(qh, kl + (size_t)s * c->kv_dim + (size_t)kvh * hd, hd) * scale;
            scores[s] = sc;
            if (sc > mx)
                mx = sc;
        }
        double sum = 0.0;
        for (int s = 0; s < n_kv; s++) {
            float e = expf(scores[s] - mx);
            scores[s] = e;
            sum += (double)e;
        }
        const float inv = (float)(1.0 / sum);
        float *o = c->att + (size_t)t * dq + (size_t)h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        /* llama.cpp multiplies V by the probabilities converted to fp16 (checked against it
         * layer by layer: with this rounding a one-layer model agrees to 1e-7). */
        for (int s = 0; s < n_kv; s++)
            axpy_f16(o, round_f16(scores[s] * inv), vl + (size_t)s * c->kv_dim + (size_t)kvh * hd,
                     hd);
    }
}

static void forward_chunk(void *arg, int ith, int nth)
{
    const fwd_job *j = arg;
    eng_cpu_ctx *c = j->c;
    const eng_model *m = c->m;
    const eng_hparams *hp = &m->hp;
    const int32_t n = j->n;
    const int64_t d = hp->n_embd, ff = hp->n_ff, hd = hp->head_dim;
    const int64_t dq = (int64_t)hp->n_head * hd, dkv = (int64_t)c->kv_dim;
    long t0, t1;
    eng_pool_split(n, ith, nth, &t0, &t1);

    for (long t = t0; t < t1; t++)
        quant_dequant_row(m->tok_embd.dtype,
                          (const uint8_t *)m->tok_embd.data +
                              (size_t)j->tokens[t] * m->tok_embd.row_bytes,
                          c->x + t * d, d);
    rope_tables(j, ith, nth);
    eng_pool_barrier(c->pool);

    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        /* attention block */
        for (long t = t0; t < t1; t++)
            rmsnorm(c->xn + t * d, c->x + t * d, L->attn_norm.data, (int)d, hp->norm_eps);
        quantize_rows(L->wq.dtype, c->xn, d, d, n, c->act, ith, nth);
        eng_pool_barrier(c->pool);
        matmul_part(&L->wq, c->act, c->act_stride, n, c->q, dq, ith, nth);
        if (L->wk.dtype != L->wq.dtype) {
            eng_pool_barrier(c->pool);
            quantize_rows(L->wk.dtype, c->xn, d, d, n, c->act, ith, nth);
            eng_pool_barrier(c->pool);
        }
        matmul_part(&L->wk, c->act, c->act_stride, n, c->k, dkv, ith, nth);
        if (L->wv.dtype != L->wk.dtype) {
            eng_pool_barrier(c->pool);
            quantize_rows(L->wv.dtype, c->xn, d, d, n, c->act, ith, nth);
            eng_pool_barrier(c->pool);
        }
        matmul_part(&L->wv, c->act, c->act_stride, n, c->v, dkv, ith, nth);
        eng_pool_barrier(c->pool);
        for (long t = t0; t < t1; t++) {
            const float *cs = c->rope_cs + t * hd;
            rope_row(c->q + t * dq, hp->n_head, (int)hd, cs);
            rope_row(c->k + t * dkv, hp->n_head_kv, (int)hd, cs);
            size_t at = ((size_t)il * (size_t)c->n_ctx + (size_t)(j->pos0 + t)) * c->kv_dim;
            f32_to_f16_row(c->k_cache + at, c->k + t * dkv, (int)dkv);
            f32_to_f16_row(c->v_cache + at, c->v + t * dkv, (int)dkv);
        }
        eng_pool_barrier(c->pool);
        attention_part(j, il, ith, nth);
        eng_pool_barrier(c->pool);
        quantize_rows(L->wo.dtype, c->att, dq, dq, n, c->act, ith, nth);
        eng_pool_barrier(c->pool);
        matmul_part(&L->wo, c->act, c->act_stride, n, c->tmp, d, ith, nth);
        eng_pool_barrier(c->pool);

        /* feed-forward block */
        for (long t = t0; t < t1; t++) {
            float *x = c->x + t * d;
            const float *o = c->tmp + t * d;
            for (int64_t i = 0; i < d; i++)
                x[i] += o[i];
            rmsnorm(c->xn + t * d, x, L->ffn_norm.data, (int)d, hp->norm_eps);
        }
        quantize_rows(L->w_gate.dtype, c->xn, d, d, n, c->act, ith, nth);
        eng_pool_barrier(c->pool);
        matmul_part(&L->w_gate, c->act, c->act_stride, n, c->gate, ff, ith, nth);
        if (L->w_up.dtype != L->w_gate.dtype) {
            eng_pool_barrier(c->pool);
            quantize_rows(L->w_up.dtype, c->xn, d, d, n, c->act, ith, nth);
            eng_pool_barrier(c->pool);
        }
        matmul_part(&L->w_up, c->act, c->act_stride, n, c->up, ff, ith, nth);
        eng_pool_barrier(c->pool);
        for (long t = t0; t < t1; t++) {
            float *g = c->gate + t * ff;
            const float *u = c->up + t * ff;
            for (int64_t i = 0; i < ff; i++)
                g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        }
        quantize_rows(L->w_down.dtype, c->gate, ff, ff, n, c->act, ith, nth);
        eng_pool_barrier(c->pool);
        matmul_part(&L->w_down, c->act, c->act_stride, n, c->tmp, d, ith, nth);
        eng_pool_barrier(c->pool);
        for (long t = t0; t < t1; t++) {
            float *x = c->x + t * d;
            const float *o = c->tmp + t * d;
            for (int64_t i = 0; i < d; i++)
                x[i] += o[i];
        }
        /* The next layer's norm reads only this thread's tokens of x: no barrier needed. */
    }

    if (!j->logits)
        return;
    /* The output head splits tokens differently from the layers (only the last token, maybe):
     * wait until every thread has finished its tokens' residual stream. */
    eng_pool_barrier(c->pool);
    /* Output head: the last token only, or every token. */
    const int32_t first = j->all ? 0 : n - 1, n_out = n - first;
    long o0, o1;
    eng_pool_split(n_out, ith, nth, &o0, &o1);
    for (long t = first + o0; t < first + o1; t++)
        rmsnorm(c->xn + t * d, c->x + t * d, m->out_norm.data, (int)d, hp->norm_eps);
    size_t rb = quant_act_row_bytes(m->output.dtype, d);
    for (long t = first + o0; t < first + o1; t++)
        quant_act_quantize(m->output.dtype, c->xn + t * d, c->act + (size_t)(t - first) * rb, d);
    eng_pool_barrier(c->pool);
    matmul_part(&m->output, c->act, c->act_stride, n_out, j->logits, hp->n_vocab, ith, nth);
}

eng_status eng_cpu_ctx_eval(eng_cpu_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                            bool all, eng_err *err)
{
    const eng_hparams *hp = &c->m->hp;
    if (n <= 0)
        return eng_fail(err, ENG_ERR_INVALID, "nothing to evaluate (0 tokens)");
    if ((int64_t)c->pos + n > c->n_ctx)
        return eng_fail(err, ENG_ERR_TOO_LONG,
                        "%d tokens at position %d exceed the context of %d tokens", n, c->pos,
                        c->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return eng_fail(err, ENG_ERR_INVALID, "token id %d at index %d is outside [0, %d)",
                            tokens[i], i, hp->n_vocab);
    for (int32_t done = 0; done < n; done += CPU_CHUNK) {
        int32_t cn = n - done < CPU_CHUNK ? n - done : CPU_CHUNK;
        bool last = done + cn == n;
        fwd_job j = {
            .c = c,
            .tokens = tokens + done,
            .n = cn,
            .pos0 = c->pos,
            .logits = all ? logits + (size_t)done * (size_t)hp->n_vocab : (last ? logits : NULL),
            .all = all,
        };
        if (!logits)
            j.logits = NULL;
        eng_pool_run(c->pool, forward_chunk, &j);
        c->pos += cn;
    }
    return ENG_OK;
}
