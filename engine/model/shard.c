/* shard.c — the Megatron split (shard.h): which heads, FFN columns and vocabulary rows a rank
 * holds, what degrees a model allows, and a rank's model as views and column copies. */
#include "shard.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SHARD_MAX_RANKS = 64 };

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The least common multiple of the block sizes (elements) of one weight field over every
 * layer: a cut along that weight's input must fall on a multiple of it in every layer. Sets
 * *worst to the first layer with the largest block. */
static int64_t input_unit(const eng_model *m, size_t field, int *worst)
{
    int64_t unit = 1, biggest = 0;
    *worst = 0;
    for (int il = 0; il < m->hp.n_layer; il++) {
        const eng_weight *w = (const eng_weight *)((const char *)&m->layers[il] + field);
        int64_t b = gguf_dtype_block_elems(w->dtype);
        unit = unit / gcd64(unit, b) * b;
        if (b > biggest) {
            biggest = b;
            *worst = il;
        }
    }
    return unit;
}

/* Whether degree n fits the model; the message (without the list of degrees) when not. */
static eng_status check_degree(const eng_model *m, int n, eng_err *err)
{
    const eng_hparams *hp = &m->hp;
    if (n < 1 || n > SHARD_MAX_RANKS)
        return eng_fail(err, ENG_ERR_INVALID, "tensor-parallel degree %d is outside [1, %d]", n,
                        SHARD_MAX_RANKS);
    if (n == 1)
        return ENG_OK;
    if (hp->n_head % n != 0)
        return eng_fail(err, ENG_ERR_INVALID, "tensor parallelism over %d ranks: the model's %d "
                        "attention heads do not split evenly", n, hp->n_head);
    if (hp->n_head_kv % n != 0 && n % hp->n_head_kv != 0)
        return eng_fail(err, ENG_ERR_INVALID, "tensor parallelism over %d ranks: the model's %d "
                        "KV heads neither split evenly nor replicate evenly (%d must divide or be "
                        "a multiple of %d)", n, hp->n_head_kv, n, hp->n_head_kv);
    int il;
    const int64_t cols = (int64_t)(hp->n_head / n) * hp->head_dim;
    int64_t unit = input_unit(m, offsetof(eng_layer, wo), &il);
    if (cols % unit != 0)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "tensor parallelism over %d ranks: "
                        "blk.%d.attn_output.weight is %s, whose blocks of %lld input elements "
                        "cannot be cut at each rank's %lld columns (%d head%s of %d)", n, il,
                        gguf_dtype_name(m->layers[il].wo.dtype), (long long)unit,
                        (long long)cols, hp->n_head / n, hp->n_head / n == 1 ? "" : "s",
                        hp->head_dim);
    unit = input_unit(m, offsetof(eng_layer, w_down), &il);
    if (hp->n_ff % unit != 0 || hp->n_ff / unit < n)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "tensor parallelism over %d ranks: "
                        "blk.%d.ffn_down.weight is %s, whose %d input columns are %lld blocks of "
                        "%lld: fewer than one per rank", n, il,
                        gguf_dtype_name(m->layers[il].w_down.dtype), hp->n_ff,
                        (long long)(hp->n_ff / unit), (long long)unit);
    const int64_t stride = ((int64_t)hp->n_vocab + n - 1) / n;
    if (stride * (n - 1) >= hp->n_vocab)
        return eng_fail(err, ENG_ERR_INVALID, "tensor parallelism over %d ranks: a vocabulary of "
                        "%d tokens leaves a rank without rows", n, hp->n_vocab);
    return ENG_OK;
}

void eng_shard_degrees(const eng_model *m, char *buf, size_t cap)
{
    size_t w = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (int n = 1; n <= SHARD_MAX_RANKS; n++) {
        if (check_degree(m, n, NULL) != ENG_OK)
            continue;
        int k = snprintf(buf + w, cap - w, "%s%d", w ? ", " : "", n);
        if (k < 0 || (size_t)k >= cap - w)
            break;
        w += (size_t)k;
    }
}

eng_status eng_shard_plan(const eng_model *m, int rank, int n_ranks, eng_shard *out,
                          eng_err *err)
{
    memset(out, 0, sizeof *out);
    eng_status st = check_degree(m, n_ranks, err);
    if (st != ENG_OK) {
        if (err && n_ranks >= 1 && n_ranks <= SHARD_MAX_RANKS) {
            char deg[128];
            eng_shard_degrees(m, deg, sizeof deg);
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof err->msg - len, "; degrees this model allows: %s",
                     deg);
        }
        return st;
    }
    if (rank < 0 || rank >= n_ranks)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d is outside [0, %d)", rank, n_ranks);
    const eng_hparams *hp = &m->hp;
    const int n = n_ranks;
    out->rank = rank;
    out->n_ranks = n;
    out->n_head = hp->n_head / n;
    out->head0 = rank * out->n_head;
    if (hp->n_head_kv >= n) {
        out->n_head_kv = hp->n_head_kv / n;
        out->head_kv0 = rank * out->n_head_kv;
    } else { /* each KV head on n / n_head_kv ranks: the ones whose Q heads read it */
        out->n_head_kv = 1;
        out->head_kv0 = rank / (n / hp->n_head_kv);
    }
    int il;
    const int64_t unit = input_unit(m, offsetof(eng_layer, w_down), &il);
    const int64_t blocks = hp->n_ff / unit;
    out->ff0 = (int32_t)(blocks * rank / n * unit);
    out->n_ff = (int32_t)(blocks * (rank + 1) / n * unit) - out->ff0;
    out->n_vocab_total = hp->n_vocab;
    out->n_vocab_stride = (hp->n_vocab + n - 1) / n;
    out->vocab0 = rank * out->n_vocab_stride;
    out->n_vocab = hp->n_vocab - out->vocab0 < out->n_vocab_stride ? hp->n_vocab - out->vocab0
                                                                   : out->n_vocab_stride;
    return ENG_OK;
}

/* ---- the rank's model --------------------------------------------------------------------- */

/* Rows [r0, r0 + n) of a matrix (contiguous: a view). */
static eng_weight rows_of(const eng_weight *w, int64_t r0, int64_t n)
{
    eng_weight v = *w;
    if (!w->data)
        return v;
    ENG_ASSERT(r0 >= 0 && r0 + n <= w->ne1);
    v.ne1 = n;
    v.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    return v;
}

/* Elements [e0, e0 + n) of an f32 vector (a view). */
static eng_weight elems_of(const eng_weight *w, int64_t e0, int64_t n)
{
    eng_weight v = *w;
    if (!w->data)
        return v;
    ENG_ASSERT(w->ne1 == 1 && e0 >= 0 && e0 + n <= w->ne0);
    v.ne0 = n;
    v.row_bytes = (size_t)n * sizeof(float);
    v.data = (const float *)w->data + e0;
    return v;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t cols_bytes(const eng_weight *w, int64_t n)
{
    return align64(gguf_dtype_row_bytes(w->dtype, n) * (size_t)w->ne1);
}

/* Input columns [c0, c0 + n) of every row of w, copied to *dst (advanced past them); c0 and n
 * are whole blocks (checked by the plan). */
static eng_weight cols_of(const eng_weight *w, int64_t c0, int64_t n, char **dst)
{
    const int64_t blk = gguf_dtype_block_elems(w->dtype);
    ENG_ASSERT(c0 % blk == 0 && n % blk == 0 && c0 + n <= w->ne0);
    eng_weight v = *w;
    v.ne0 = n;
    v.row_bytes = gguf_dtype_row_bytes(w->dtype, n);
    const size_t off = (size_t)(c0 / blk) * gguf_dtype_block_bytes(w->dtype);
    for (int64_t r = 0; r < w->ne1; r++)
        memcpy(*dst + (size_t)r * v.row_bytes,
               (const char *)w->data + (size_t)r * w->row_bytes + off, v.row_bytes);
    v.data = *dst;
    *dst += cols_bytes(w, n);
    return v;
}

eng_status eng_shard_model_create(const eng_model *m, int rank, int n_ranks,
                                  eng_shard_model **out, eng_err *err)
{
    *out = NULL;
    eng_shard s;
    eng_status st = eng_shard_plan(m, rank, n_ranks, &s, err);
    if (st != ENG_OK)
        return st;
    const eng_hparams *hp = &m->hp;
    const int64_t hd = hp->head_dim, dq = (int64_t)s.n_head * hd, dkv = (int64_t)s.n_head_kv * hd;
    eng_shard_model *sm = calloc(1, sizeof *sm);
    if (!sm)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    sm->shard = s;
    for (int il = 0; il < hp->n_layer; il++)
        sm->copy_bytes += cols_bytes(&m->layers[il].wo, dq) + cols_bytes(&m->layers[il].w_down, s.n_ff);
    sm->layers = calloc((size_t)hp->n_layer, sizeof *sm->layers);
    sm->copies = aligned_alloc(64, sm->copy_bytes ? sm->copy_bytes : 64);
    if (!sm->layers || !sm->copies) {
        size_t mib = sm->copy_bytes >> 20;
        eng_shard_model_free(sm);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory for rank %d's %zu MiB of "
                        "row-parallel weights", rank, mib);
    }
    char *dst = sm->copies;
    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        eng_layer *R = &sm->layers[il];
        *R = *L; /* norms, bo, b_down: replicated */
        R->wq = rows_of(&L->wq, s.head0 * hd, dq);
        R->bq = elems_of(&L->bq, s.head0 * hd, dq);
        R->wk = rows_of(&L->wk, s.head_kv0 * hd, dkv);
        R->bk = elems_of(&L->bk, s.head_kv0 * hd, dkv);
        R->wv = rows_of(&L->wv, s.head_kv0 * hd, dkv);
        R->bv = elems_of(&L->bv, s.head_kv0 * hd, dkv);
        R->wqkv = (eng_weight){0};
        R->bqkv = (eng_weight){0};
        R->wo = cols_of(&L->wo, s.head0 * hd, dq, &dst);
        R->w_gate = rows_of(&L->w_gate, s.ff0, s.n_ff);
        R->w_up = rows_of(&L->w_up, s.ff0, s.n_ff);
        R->b_up = elems_of(&L->b_up, s.ff0, s.n_ff);
        R->w_down = cols_of(&L->w_down, s.ff0, s.n_ff, &dst);
    }
    eng_model *r = &sm->model;
    *r = *m; /* desc, gguf, vocab (borrowed), norms, positions, rope_freqs */
    r->hp.n_head = s.n_head;
    r->hp.n_head_kv = s.n_head_kv;
    r->hp.n_ff = s.n_ff;
    r->hp.n_vocab = s.n_vocab;
    r->tok_embd = rows_of(&m->tok_embd, s.vocab0, s.n_vocab);
    r->output = hp->tied_output ? r->tok_embd : rows_of(&m->output, s.vocab0, s.n_vocab);
    r->layers = sm->layers;
    *out = sm;
    return ENG_OK;
}

void eng_shard_model_free(eng_shard_model *sm)
{
    if (!sm)
        return;
    free(sm->layers);
    free(sm->copies);
    free(sm);
}
