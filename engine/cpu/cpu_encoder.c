/* cpu_encoder.c — the `bert` encoder's forward pass on the CPU: a batch of whole sequences
 * packed back to back (no padding, so no padding mask: each token attends to exactly the
 * tokens of its own sequence, both directions), post-norm layers (attention, residual,
 * LayerNorm; GELU FFN, residual, LayerNorm), then mean or CLS pooling and L2 normalisation.
 * Products go through gemm_f16 (the layer matrices repacked into panels at creation, F16 or
 * F32 as stored; attention's QK^T and PV as well, on panel views of K and V), LayerNorm
 * through cpu_ops; softmax's exp and GELU's erf are gemm_f16's vectorised polynomials. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_encoder.h"
#include "cpu_ops.h"
#include "gemm_f16.h"
#include "pool.h"

struct cpu_encoder {
    const emb_model *m;
    eng_pool *pool;
    int32_t cap_tokens; /* scratch sized for this many tokens */
    float *x;           /* [T, n_embd] the residual stream */
    float *h;           /* [T, n_embd] after the attention block's LayerNorm */
    float *q;           /* [T, n_embd] scratch */
    float *qkv;         /* [T, 3 n_embd] each token's query, key and value side by side */
    float *att;         /* [T, n_embd] attention output before wo */
    float *tmp;         /* [T, n_embd] */
    float *ff;          /* [T, n_ff] */
    cpu_gemm_isa isa;
    /* [n_layer * ENC_MATS] the layer matrices as panels, pointing into `packed` (owned); Q, K
     * and V as one matrix of 3 n_embd rows, its bias in bqkv [n_layer, 3 n_embd] (owned) */
    cpu_gemm_b *mats;
    void *packed;
    float *bqkv;
    int64_t ctx_pad;    /* n_ctx rounded up to a panel */
    size_t probs_n, kpack_n, scratch_n; /* per-thread floats of each scratch below */
    float *probs;       /* [n_threads, n_ctx + 2, ctx_pad] one sequence-head's scores per thread */
    float *kpack;       /* [n_threads, kpack_n] one head's queries as panels, then its output */
    float *scratch;     /* [n_threads, scratch_n] cpu_gemm's */
};

/* The matrices of a layer, in this order in mats. */
enum { ENC_WQKV, ENC_WO, ENC_UP, ENC_DOWN, ENC_MATS };

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
    free(e->x), free(e->h), free(e->q), free(e->qkv), free(e->bqkv);
    free(e->att), free(e->tmp), free(e->ff);
    free(e->mats), free(e->packed), free(e->probs), free(e->kpack), free(e->scratch);
    free(e);
}

/* Packs the rows of up to three matrices of one type and width, stacked, into panels at p;
 * returns the bytes written. */
static size_t pack_stacked(const eng_weight *const *w, int nw, uint8_t *p, cpu_gemm_b *out)
{
    const bool f16 = w[0]->dtype == GGUF_DTYPE_F16;
    const size_t es = f16 ? 2 : 4;
    int64_t rows = 0;
    for (int i = 0; i < nw; i++)
        rows += w[i]->ne1;
    const int64_t n = w[0]->ne0;
    const void *src = w[0]->data;
    uint8_t *tmp = NULL;
    if (nw > 1) { /* stacked in a temporary copy: a panel may straddle two matrices */
        tmp = malloc((size_t)rows * (size_t)n * es);
        if (!tmp)
            return 0;
        size_t off = 0;
        for (int i = 0; i < nw; i++) {
            memcpy(tmp + off, w[i]->data, (size_t)w[i]->ne1 * (size_t)n * es);
            off += (size_t)w[i]->ne1 * (size_t)n * es;
        }
        src = tmp;
    }
    if (f16)
        cpu_gemm_pack_f16(src, rows, n, (uint16_t *)p);
    else
        cpu_gemm_pack_f32(src, n, rows, n, (float *)p);
    free(tmp);
    *out = cpu_gemm_packed(p, f16, rows, n);
    return cpu_gemm_packed_elems(rows, n) * es;
}

/* The matrices of mats[i] (Q, K, V stacked for ENC_WQKV). */
static int layer_mats(const eng_layer *L, int i, const eng_weight *w[3])
{
    switch (i) {
    case ENC_WQKV: w[0] = &L->wq, w[1] = &L->wk, w[2] = &L->wv; return 3;
    case ENC_WO: w[0] = &L->wo; return 1;
    case ENC_UP: w[0] = &L->w_up; return 1;
    default: w[0] = &L->w_down; return 1;
    }
}

/* Repacks every layer matrix into panels (the mapping's rows are one output each; the tiles
 * want 16 outputs side by side per reduction index). */
static eng_status pack_weights(cpu_encoder *e, eng_err *err)
{
    const emb_model *m = e->m;
    const size_t nm = (size_t)m->n_layer * ENC_MATS, d = (size_t)m->n_embd;
    size_t bytes = 0;
    for (size_t i = 0; i < nm; i++) {
        const eng_weight *w[3];
        const int nw = layer_mats(&m->layers[i / ENC_MATS], (int)(i % ENC_MATS), w);
        int64_t rows = 0;
        for (int j = 0; j < nw; j++) {
            if ((w[j]->dtype != GGUF_DTYPE_F16 && w[j]->dtype != GGUF_DTYPE_F32) ||
                w[j]->dtype != w[0]->dtype || w[j]->ne0 != w[0]->ne0)
                return eng_fail(err, ENG_ERR_UNSUPPORTED, "encoder: layer %zu: the query, key "
                                "and value matrices must share one type (F16 or F32) and width",
                                i / ENC_MATS);
            rows += w[j]->ne1;
        }
        bytes += cpu_gemm_packed_elems(rows, w[0]->ne0) * (w[0]->dtype == GGUF_DTYPE_F16 ? 2 : 4);
    }
    e->mats = calloc(nm, sizeof *e->mats);
    e->packed = malloc(bytes);
    e->bqkv = malloc(sizeof(float) * (size_t)m->n_layer * 3 * d);
    if (!e->mats || !e->packed || !e->bqkv)
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: no memory for %zu MiB of packed weights",
                        bytes >> 20);
    uint8_t *p = e->packed;
    for (size_t i = 0; i < nm; i++) {
        const eng_weight *w[3];
        const int nw = layer_mats(&m->layers[i / ENC_MATS], (int)(i % ENC_MATS), w);
        const size_t b = pack_stacked(w, nw, p, &e->mats[i]);
        if (b == 0)
            return eng_fail(err, ENG_ERR_NOMEM, "encoder: out of memory packing weights");
        p += b;
    }
    for (int il = 0; il < m->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        float *bias = e->bqkv + (size_t)il * 3 * d;
        memcpy(bias, L->bq.data, sizeof(float) * d);
        memcpy(bias + d, L->bk.data, sizeof(float) * d);
        memcpy(bias + 2 * d, L->bv.data, sizeof(float) * d);
    }
    return ENG_OK;
}

eng_status cpu_encoder_create(const emb_model *m, int n_threads, cpu_encoder **out,
                              eng_err *err)
{
    *out = NULL;
    cpu_encoder *e = calloc(1, sizeof *e);
    if (!e)
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: out of memory");
    e->m = m;
    e->isa = cpu_gemm_best_isa();
    e->ctx_pad = (m->n_ctx + CPU_GEMM_NR - 1) / CPU_GEMM_NR * CPU_GEMM_NR;
    const int64_t hd_pad = (m->head_dim + CPU_GEMM_NR - 1) / CPU_GEMM_NR * CPU_GEMM_NR;
    int64_t red = m->n_ff > m->n_embd ? m->n_ff : m->n_embd;
    red = red > m->n_ctx ? red : m->n_ctx;
    e->probs_n = ((size_t)m->n_ctx + 2) * (size_t)e->ctx_pad;
    e->kpack_n = (size_t)e->ctx_pad * (size_t)hd_pad;
    e->scratch_n = cpu_gemm_scratch_floats(red);
    const size_t nt = (size_t)n_threads;
    e->pool = eng_pool_create(n_threads);
    e->probs = calloc(nt * e->probs_n, sizeof(float)); /* finite from the start: see attention */
    e->kpack = malloc(sizeof(float) * nt * e->kpack_n);
    e->scratch = malloc(sizeof(float) * nt * e->scratch_n);
    if (!e->pool || !e->probs || !e->kpack || !e->scratch) {
        cpu_encoder_free(e);
        return eng_fail(err, ENG_ERR_NOMEM, "encoder: cannot create %d threads", n_threads);
    }
    eng_status st = pack_weights(e, err);
    if (st != ENG_OK) {
        cpu_encoder_free(e);
        return st;
    }
    *out = e;
    return ENG_OK;
}

static eng_status reserve(cpu_encoder *e, int32_t T, eng_err *err)
{
    if (T <= e->cap_tokens)
        return ENG_OK;
    const size_t d = (size_t)e->m->n_embd, t = (size_t)T;
    float **bufs[] = {&e->x, &e->h, &e->q, &e->att, &e->tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = malloc(sizeof(float) * t * d);
    }
    free(e->ff), free(e->qkv);
    e->ff = malloc(sizeof(float) * t * (size_t)e->m->n_ff);
    e->qkv = malloc(sizeof(float) * t * 3 * d);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (!*bufs[i])
            goto nomem;
    if (!e->ff || !e->qkv)
        goto nomem;
    e->cap_tokens = T;
    return ENG_OK;
nomem:
    e->cap_tokens = 0;
    return eng_fail(err, ENG_ERR_NOMEM, "encoder: no memory for a batch of %d tokens", T);
}

/* y[T, rows] = x[T, n] · W^T + bias, the tokens split across threads (each thread's tokens
 * copied once per tile for all of W's panels). */
static void linear(const cpu_encoder *e, const cpu_gemm_b *W, const float *bias, const float *x,
                   int32_t T, float *y, int ith, int nth)
{
    long t0, t1;
    eng_pool_split(T, ith, nth, &t0, &t1);
    cpu_gemm_run(e->isa, W, 0, (W->cols + CPU_GEMM_NR - 1) / CPU_GEMM_NR, x + t0 * W->n, W->n,
                 1, t1 - t0, bias, y + t0 * W->cols, W->cols,
                 e->scratch + (size_t)ith * e->scratch_n);
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

/* Bidirectional attention within each sequence; work items are (sequence, head) pairs. Per
 * item, transposed so that both products read a panel in place and write whole rows:
 * S^T = K Q^T (Q packed into panels, K's rows the tokens), softmax down each column (query),
 * O^T = V^T P (S^T's rows are P's panels, V's columns the tokens), O^T copied into att. */
static void attention(const enc_run *r, int ith, int nth)
{
    const cpu_encoder *e = r->e;
    const emb_model *m = e->m;
    const int hd = m->head_dim, d = m->n_embd;
    const size_t ld3 = 3 * (size_t)d; /* qkv's row */
    const float scale = 1.0f / sqrtf((float)hd);
    const int64_t lds = e->ctx_pad;
    float *S = e->probs + (size_t)ith * e->probs_n;       /* [n keys, lds]: S^T, then P^T */
    float *mx = S + (size_t)m->n_ctx * (size_t)lds;        /* [lds] per query */
    float *sum = mx + lds;                                 /* [lds] per query */
    float *kp = e->kpack + (size_t)ith * e->kpack_n;       /* Q's panels, then O^T [hd, lds] */
    float *scratch = e->scratch + (size_t)ith * e->scratch_n;
    long w0, w1;
    eng_pool_split((long)r->n_seq * m->n_head, ith, nth, &w0, &w1);
    for (long w = w0; w < w1; w++) {
        const int s = (int)(w / m->n_head), hh = (int)(w % m->n_head);
        const int32_t off = r->seq_off[s], n = r->seq_len[s];
        const size_t base = (size_t)off * (size_t)d + (size_t)hh * (size_t)hd;
        const float *q = e->qkv + (size_t)off * ld3 + (size_t)hh * (size_t)hd, *k = q + d,
                    *v = q + 2 * d;
        const int64_t n_panels = (n + CPU_GEMM_NR - 1) / CPU_GEMM_NR;
        cpu_gemm_pack_f32(q, (int64_t)ld3, n, hd, kp);
        const cpu_gemm_b Q = cpu_gemm_packed(kp, false, n, hd);
        cpu_gemm_run(e->isa, &Q, 0, n_panels, k, (int64_t)ld3, 1, n, NULL, S, lds, scratch);
        for (int32_t i = 0; i < n; i++)
            mx[i] = -INFINITY, sum[i] = 0.0f;
        for (int32_t j = 0; j < n; j++)
            cpu_gemm_max_into(e->isa, mx, S + (size_t)j * (size_t)lds, n);
        for (int32_t j = 0; j < n; j++)
            cpu_gemm_exp_into(e->isa, S + (size_t)j * (size_t)lds, mx, scale, sum, n);
        for (int32_t i = 0; i < n; i++)
            sum[i] = 1.0f / sum[i];
        for (int32_t j = 0; j < n; j++) {
            float *row = S + (size_t)j * (size_t)lds;
            for (int32_t i = 0; i < n; i++)
                row[i] *= sum[i];
        }
        /* P's columns past n hold earlier (finite) values: only lanes never stored read them */
        const cpu_gemm_b P = {S, false, n, n, lds, CPU_GEMM_NR};
        cpu_gemm_run(e->isa, &P, 0, n_panels, v, 1, (int64_t)ld3, hd, NULL, kp, lds, scratch);
        for (int32_t i = 0; i < n; i++) {
            float *o = e->att + base + (size_t)i * (size_t)d;
            for (int c = 0; c < hd; c++)
                o[c] = kp[(size_t)c * (size_t)lds + (size_t)i];
        }
    }
}

/* The exact GELU (erf form): HF's "gelu", what BERT models were trained with. */
static void gelu_rows(const cpu_encoder *e, float *y, size_t n_total, int ith, int nth)
{
    long lo, hi;
    eng_pool_split((long)n_total, ith, nth, &lo, &hi);
    if (lo < hi)
        cpu_gemm_gelu_erf(e->isa, y + lo, hi - lo);
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
        const cpu_gemm_b *W = e->mats + (size_t)il * ENC_MATS;
        linear(e, &W[ENC_WQKV], e->bqkv + (size_t)il * 3 * (size_t)d, e->x, T, e->qkv, ith,
               nth);
        eng_pool_barrier(e->pool);
        attention(r, ith, nth);
        eng_pool_barrier(e->pool);
        linear(e, &W[ENC_WO], L->bo.data, e->att, T, e->tmp, ith, nth);
        eng_pool_barrier(e->pool);
        /* h = LN(wo·att + x); q is free scratch for the sum now. */
        add_norm(e->h, e->tmp, e->x, &L->attn_norm, &L->attn_norm_b, e->q, T, d, m->eps, ith,
                 nth);
        eng_pool_barrier(e->pool);
        linear(e, &W[ENC_UP], L->b_up.data, e->h, T, e->ff, ith, nth);
        eng_pool_barrier(e->pool);
        gelu_rows(e, e->ff, (size_t)T * (size_t)m->n_ff, ith, nth);
        eng_pool_barrier(e->pool);
        linear(e, &W[ENC_DOWN], L->b_down.data, e->ff, T, e->tmp, ith, nth);
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
