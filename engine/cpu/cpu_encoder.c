/* cpu_encoder.c — the `bert` encoder's forward pass on the CPU: a batch of whole sequences
 * packed back to back (no padding, so no padding mask: each token attends to exactly the
 * tokens of its own sequence, both directions), post-norm layers (attention, residual,
 * LayerNorm; GELU FFN, residual, LayerNorm), then mean or CLS pooling and L2 normalisation.
 * Products go through quant_matmul (F32/F16 weights), LayerNorm through cpu_ops. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_encoder.h"
#include "cpu_ops.h"
#include "pool.h"
#include "quant.h"

struct cpu_encoder {
    const emb_model *m;
    eng_pool *pool;
    int32_t cap_tokens; /* scratch sized for this many tokens */
    float *x;           /* [T, n_embd] the residual stream */
    float *h;           /* [T, n_embd] after the attention block's LayerNorm */
    float *q, *k, *v;   /* [T, n_embd] */
    float *att;         /* [T, n_embd] attention output before wo */
    float *tmp;         /* [T, n_embd] */
    float *ff;          /* [T, n_ff] */
    float *scores;      /* [n_threads, n_ctx] one score row per thread */
};

/* What one run hands its threads. */
typedef struct enc_run {
    cpu_encoder *e;
    const int32_t *tokens;  /* [T] */
    const int32_t *seq_len; /* [n_seq] */
    const int32_t *seq_off; /* [n_seq + 1] token offset of each sequence */
    int32_t n_seq, T;
    float *out; /* [n_seq, n_embd] */
} enc_run;

void cpu_encoder_free(cpu_encoder *e)
{
    if (!e)
        return;
    eng_pool_free(e->pool);
    free(e->x), free(e->h), free(e->q), free(e->k), free(e->v);
    free(e->att), free(e->tmp), free(e->ff), free(e->scores);
    free(e);
}

eng_status cpu_encoder_create(const emb_model *m, int n_threads, cpu_encoder **out,
                              eng_err *err)
{
    *out = NULL;
    cpu_encoder *e = calloc(1, sizeof *e);
    if (!e)
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: out of memory");
    e->m = m;
    e->pool = eng_pool_create(n_threads);
    e->scores = malloc(sizeof(float) * (size_t)n_threads * (size_t)m->n_ctx);
    if (!e->pool || !e->scores) {
        cpu_encoder_free(e);
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: cannot create %d threads", n_threads);
    }
    *out = e;
    return ENG_OK;
}

static eng_status reserve(cpu_encoder *e, int32_t T, eng_err *err)
{
    if (T <= e->cap_tokens)
        return ENG_OK;
    const size_t d = (size_t)e->m->n_embd, t = (size_t)T;
    float **bufs[] = {&e->x, &e->h, &e->q, &e->k, &e->v, &e->att, &e->tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = malloc(sizeof(float) * t * d);
    }
    free(e->ff);
    e->ff = malloc(sizeof(float) * t * (size_t)e->m->n_ff);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!*bufs[i])
            goto nomem;
    if (!e->ff)
        goto nomem;
    e->cap_tokens = T;
    return ENG_OK;
nomem:
    e->cap_tokens = 0;
    return eng_fail(err, ENG_ERR_NOMEM, "encoder: no memory for a batch of %d tokens", T);
}

/* y[T, rows] = x[T, n] · W^T + b, the rows of W split across threads. F32/F16 weights take
 * f32 activations as they are (quant.h), so x is passed straight through. */
static void linear(const eng_weight *W, const eng_weight *b, const float *x, int32_t T,
                   float *y, int ith, int nth)
{
    long r0, r1;
    eng_pool_split((long)W->ne1, ith, nth, &r0, &r1);
    if (r0 >= r1)
        return;
    quant_matmul(W->dtype, W->data, W->ne0, r0, r1, x, T, y, W->ne1);
    const float *bias = b->data;
    for (int32_t t = 0; t < T; t++)
        for (long r = r0; r < r1; r++)
            y[(size_t)t * (size_t)W->ne1 + (size_t)r] += bias[r];
}

/* x[t] = LayerNorm(a[t] + res[t]) for this thread's tokens (res may be NULL). */
static void add_norm(float *x, const float *a, const float *res, const eng_weight *w,
                     const eng_weight *b, float *tmp, int32_t T, int n, float eps, int ith,
                     int nth)
{
    long t0, t1;
    eng_pool_split(T, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        float *row = tmp + (size_t)t * (size_t)n;
        for (int i = 0; i < n; i++)
            row[i] = a[(size_t)t * (size_t)n + (size_t)i] +
                     (res ? res[(size_t)t * (size_t)n + (size_t)i] : 0.0f);
        cpu_layernorm_row(x + (size_t)t * (size_t)n, row, w->data, b->data, n, eps);
    }
}

/* Bidirectional attention within each sequence; work items are (sequence, head) pairs. */
static void attention(const enc_run *r, int ith, int nth)
{
    const cpu_encoder *e = r->e;
    const emb_model *m = e->m;
    const int hd = m->head_dim, d = m->n_embd;
    const float scale = 1.0f / sqrtf((float)hd);
    float *sc = e->scores + (size_t)ith * (size_t)m->n_ctx;
    long w0, w1;
    eng_pool_split((long)r->n_seq * m->n_head, ith, nth, &w0, &w1);
    for (long w = w0; w < w1; w++) {
        const int s = (int)(w / m->n_head), hh = (int)(w % m->n_head);
        const int32_t off = r->seq_off[s], n = r->seq_len[s];
        for (int32_t i = 0; i < n; i++) {
            const float *qi = e->q + (size_t)(off + i) * (size_t)d + (size_t)hh * (size_t)hd;
            float mx = -INFINITY;
            for (int32_t j = 0; j < n; j++) {
                const float *kj = e->k + (size_t)(off + j) * (size_t)d + (size_t)hh * (size_t)hd;
                float dot = 0.0f;
                for (int c = 0; c < hd; c++)
                    dot += qi[c] * kj[c];
                sc[j] = dot * scale;
                if (sc[j] > mx)
                    mx = sc[j];
            }
            float sum = 0.0f;
            for (int32_t j = 0; j < n; j++) {
                sc[j] = expf(sc[j] - mx);
                sum += sc[j];
            }
            const float inv = 1.0f / sum;
            float *o = e->att + (size_t)(off + i) * (size_t)d + (size_t)hh * (size_t)hd;
            for (int c = 0; c < hd; c++)
                o[c] = 0.0f;
            for (int32_t j = 0; j < n; j++) {
                const float p = sc[j] * inv;
                const float *vj = e->v + (size_t)(off + j) * (size_t)d + (size_t)hh * (size_t)hd;
                for (int c = 0; c < hd; c++)
                    o[c] += p * vj[c];
            }
        }
    }
}

/* The exact GELU (erf form): HF's "gelu", what BERT models were trained with. */
static void gelu_rows(float *y, size_t n_total, int ith, int nth)
{
    long lo, hi;
    eng_pool_split((long)n_total, ith, nth, &lo, &hi);
    for (long i = lo; i < hi; i++)
        y[i] = 0.5f * y[i] * (1.0f + erff(y[i] * 0.70710678118654752f));
}

static void pool_and_normalise(const enc_run *r, int ith, int nth)
{
    const cpu_encoder *e = r->e;
    const int d = e->m->n_embd;
    long s0, s1;
    eng_pool_split(r->n_seq, ith, nth, &s0, &s1);
    for (long s = s0; s < s1; s++) {
        float *o = r->out + (size_t)s * (size_t)d;
        const int32_t off = r->seq_off[s], n = r->seq_len[s];
        const int32_t cnt = e->m->pooling == EMB_POOL_CLS ? 1 : n;
        for (int c = 0; c < d; c++) {
            double acc = 0.0;
            for (int32_t t = 0; t < cnt; t++)
                acc += e->x[(size_t)(off + t) * (size_t)d + (size_t)c];
            o[c] = (float)(acc / cnt);
        }
        double ss = 0.0;
        for (int c = 0; c < d; c++)
            ss += (double)o[c] * o[c];
        if (ss > 0.0) {
            const float inv = (float)(1.0 / sqrt(ss));
            for (int c = 0; c < d; c++)
                o[c] *= inv;
        }
    }
}

static void run_fn(void *arg, int ith, int nth)
{
    const enc_run *r = arg;
    cpu_encoder *e = r->e;
    const emb_model *m = e->m;
    const int d = m->n_embd;
    const int32_t T = r->T;

    /* Embeddings: token row + token type 0 + position, then LayerNorm. */
    {
        long t0, t1;
        eng_pool_split(T, ith, nth, &t0, &t1);
        for (long t = t0; t < t1; t++) {
            int s = 0;
            while (r->seq_off[s + 1] <= t)
                s++;
            const int32_t pos = (int32_t)t - r->seq_off[s];
            float *x = e->tmp + (size_t)t * (size_t)d;
            float *ty = e->h + (size_t)t * (size_t)d, *ps = e->q + (size_t)t * (size_t)d;
            emb_weight_row(&m->tok_embd, r->tokens[t], x);
            emb_weight_row(&m->type_embd, 0, ty);
            emb_weight_row(&m->pos_embd, pos, ps);
            for (int c = 0; c < d; c++)
                x[c] = x[c] + ty[c] + ps[c];
        }
        eng_pool_barrier(e->pool);
        add_norm(e->x, e->tmp, NULL, &m->embd_ln_w, &m->embd_ln_b, e->h, T, d, m->eps, ith,
                 nth);
        eng_pool_barrier(e->pool);
    }
    for (int il = 0; il < m->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        linear(&L->wq, &L->bq, e->x, T, e->q, ith, nth);
        linear(&L->wk, &L->bk, e->x, T, e->k, ith, nth);
        linear(&L->wv, &L->bv, e->x, T, e->v, ith, nth);
        eng_pool_barrier(e->pool);
        attention(r, ith, nth);
        eng_pool_barrier(e->pool);
        linear(&L->wo, &L->bo, e->att, T, e->tmp, ith, nth);
        eng_pool_barrier(e->pool);
        /* h = LN(wo·att + x); q is free scratch for the sum now. */
        add_norm(e->h, e->tmp, e->x, &L->attn_norm, &L->attn_norm_b, e->q, T, d, m->eps, ith,
                 nth);
        eng_pool_barrier(e->pool);
        linear(&L->w_up, &L->b_up, e->h, T, e->ff, ith, nth);
        eng_pool_barrier(e->pool);
        gelu_rows(e->ff, (size_t)T * (size_t)m->n_ff, ith, nth);
        eng_pool_barrier(e->pool);
        linear(&L->w_down, &L->b_down, e->ff, T, e->tmp, ith, nth);
        eng_pool_barrier(e->pool);
        add_norm(e->x, e->tmp, e->h, &L->ffn_norm, &L->ffn_norm_b, e->q, T, d, m->eps, ith,
                 nth);
        eng_pool_barrier(e->pool);
    }
    pool_and_normalise(r, ith, nth);
}

eng_status cpu_encoder_run(cpu_encoder *e, const int32_t *tokens, const int32_t *seq_len,
                           int32_t n_seq, float *out, eng_err *err)
{
    const emb_model *m = e->m;
    if (n_seq < 1)
        return eng_fail(err, ENG_ERR_INVALID, "encoder: empty batch");
    int32_t *off = malloc(sizeof(int32_t) * ((size_t)n_seq + 1));
    if (!off)
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: out of memory");
    off[0] = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        if (seq_len[s] < 1 || seq_len[s] > m->n_ctx) {
            free(off);
            return eng_fail(err, ENG_ERR_INVALID, "encoder: sequence %d has %d tokens (1 to %d)",
                            s, seq_len[s], m->n_ctx);
        }
        off[s + 1] = off[s] + seq_len[s];
    }
    const int32_t T = off[n_seq];
    for (int32_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= m->n_vocab) {
            free(off);
            return eng_fail(err, ENG_ERR_INVALID, "encoder: token id %d outside the vocabulary",
                            tokens[t]);
        }
    eng_status st = reserve(e, T, err);
    if (st != ENG_OK) {
        free(off);
        return st;
    }
    enc_run r = {e, tokens, seq_len, off, n_seq, T, out};
    eng_pool_run(e->pool, run_fn, &r);
    free(off);
    return ENG_OK;
}
