/* model.c — loads a GGUF model: reads and checks hyper-parameters, binds every weight to its
 * tensor with shape and type checks, and builds the tokenizer. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static eng_status bind_weight(const gguf_file *f, const char *name, int64_t ne0, int64_t ne1,
                              bool vector_f32, eng_weight *w, eng_err *err)
{
    const gguf_tensor *t = gguf_tensor_find(f, name);
    if (!t)
        return eng_fail(err, ENG_ERR_FORMAT, "model: tensor '%s' is missing", name);
    int64_t want_dims = ne1 > 1 ? 2 : 1;
    if ((int64_t)t->n_dims > want_dims && !(t->n_dims == 2 && t->ne[1] == 1))
        return eng_fail(err, ENG_ERR_FORMAT, "model: tensor '%s' has %u dims, expected %lld", name,
                        t->n_dims, (long long)want_dims);
    if (t->ne[0] != ne0 || t->ne[1] != ne1)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "model: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                        (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, (long long)ne1);
    if (vector_f32 && t->dtype != GGUF_DTYPE_F32)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "model: tensor '%s' is %s, expected F32", name,
                        gguf_dtype_name(t->dtype));
    switch (t->dtype) {
    case GGUF_DTYPE_F32: case GGUF_DTYPE_F16: case GGUF_DTYPE_BF16: case GGUF_DTYPE_Q4_0:
    case GGUF_DTYPE_Q4_1: case GGUF_DTYPE_Q8_0: case GGUF_DTYPE_Q6_K: case GGUF_DTYPE_Q5_0:
    case GGUF_DTYPE_Q5_1: case GGUF_DTYPE_Q4_K: case GGUF_DTYPE_Q5_K:
        break;
    default:
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "model: tensor '%s' has unsupported type %s",
                        name, gguf_dtype_name(t->dtype));
    }
    w->dtype = t->dtype;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->data = t->data;
    w->row_bytes = gguf_dtype_row_bytes(t->dtype, ne0);
    return ENG_OK;
}

/* Reads "<arch>.<suffix>" as a positive int32. */
static eng_status get_dim(const gguf_file *f, const char *arch, const char *suffix, int32_t *out,
                          eng_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    eng_status st = gguf_get_u32(f, key, &v, err);
    if (st != ENG_OK)
        return st;
    if (v == 0 || v > (1u << 24))
        return eng_fail(err, ENG_ERR_FORMAT, "model: %s = %u is out of range", key, v);
    *out = (int32_t)v;
    return ENG_OK;
}

static eng_status read_hparams(const gguf_file *f, eng_hparams *hp, const eng_arch_desc **desc,
                               eng_err *err)
{
    gguf_str arch;
    eng_status st = gguf_get_str(f, "general.architecture", &arch, err);
    if (st != ENG_OK)
        return st;
    if (arch.len >= sizeof hp->arch_name)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "model: architecture name too long");
    memcpy(hp->arch_name, arch.ptr, arch.len);
    hp->arch_name[arch.len] = '\0';
    *desc = eng_arch_find(hp->arch_name);
    if (!*desc) {
        char names[256];
        eng_arch_supported_names(names, sizeof names);
        return eng_fail(err, ENG_ERR_UNSUPPORTED,
                        "model: architecture '%s' is not supported yet (supported: %s)",
                        hp->arch_name, names);
    }
    hp->arch = (*desc)->arch;
    const char *a = hp->arch_name;
    if ((st = get_dim(f, a, "block_count", &hp->n_layer, err)) ||
        (st = get_dim(f, a, "embedding_length", &hp->n_embd, err)) ||
        (st = get_dim(f, a, "feed_forward_length", &hp->n_ff, err)) ||
        (st = get_dim(f, a, "attention.head_count", &hp->n_head, err)) ||
        (st = get_dim(f, a, "context_length", &hp->n_ctx_train, err)))
        return st;
    char key[128];
    snprintf(key, sizeof key, "%s.attention.head_count_kv", a);
    if (gguf_kv_find(f, key) >= 0) {
        if ((st = get_dim(f, a, "attention.head_count_kv", &hp->n_head_kv, err)))
            return st;
    } else {
        hp->n_head_kv = hp->n_head;
    }
    if (hp->n_embd % hp->n_head || hp->n_head % hp->n_head_kv)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "model: n_embd %d, n_head %d, n_head_kv %d do not divide evenly",
                        hp->n_embd, hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 || hp->head_dim > 256)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "model: head size %d is not supported",
                        hp->head_dim);
    snprintf(key, sizeof key, "%s.rope.dimension_count", a);
    if (gguf_kv_find(f, key) >= 0) {
        int32_t rd = 0;
        if ((st = get_dim(f, a, "rope.dimension_count", &rd, err)))
            return st;
        if (rd != hp->head_dim)
            return eng_fail(err, ENG_ERR_UNSUPPORTED,
                            "model: partial rotary embeddings (%d of %d dims) are not supported",
                            rd, hp->head_dim);
    }
    hp->rope_base = 10000.0f;
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    if (gguf_kv_find(f, key) >= 0 && (st = gguf_get_f32(f, key, &hp->rope_base, err)))
        return st;
    /* The descriptor's norm decides which epsilon key the converter wrote. */
    snprintf(key, sizeof key, "%s.attention.%s", a,
             (*desc)->norm == ENG_ARCH_NORM_LAYER ? "layer_norm_epsilon"
                                                  : "layer_norm_rms_epsilon");
    if ((st = gguf_get_f32(f, key, &hp->norm_eps, err)))
        return st;
    if (!(hp->rope_base > 0.0f) || !(hp->norm_eps > 0.0f && hp->norm_eps < 1.0f))
        return eng_fail(err, ENG_ERR_FORMAT, "model: rope base %g or norm epsilon %g out of range",
                        (double)hp->rope_base, (double)hp->norm_eps);
    /* Linear RoPE scaling (DeepSeek-Coder: factor 4) divides positions by the factor, as
     * llama.cpp's freq_scale = 1 / factor; other scalings are refused, not ignored. */
    hp->rope_freq_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    gguf_str scaling;
    bool linear = false;
    if (gguf_kv_find(f, key) >= 0 && gguf_get_str(f, key, &scaling, NULL) == ENG_OK) {
        if (gguf_str_eq(scaling, "linear"))
            linear = true;
        else if (!gguf_str_eq(scaling, "none"))
            return eng_fail(err, ENG_ERR_UNSUPPORTED,
                            "model: rope scaling '%.*s' is not supported (none, linear are)",
                            (int)scaling.len, scaling.ptr);
    }
    snprintf(key, sizeof key, "%s.rope.scaling.factor", a);
    if (linear && gguf_kv_find(f, key) >= 0) {
        float factor = 0.0f;
        if ((st = gguf_get_f32(f, key, &factor, err)))
            return st;
        if (!(factor >= 1.0f && factor <= 1024.0f))
            return eng_fail(err, ENG_ERR_FORMAT, "model: %s = %g is out of range [1, 1024]", key,
                            (double)factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    /* Sliding-window attention (StarCoder2's config.sliding_window), where the file has it. */
    snprintf(key, sizeof key, "%s.attention.sliding_window", a);
    hp->n_swa = 0;
    if (gguf_kv_find(f, key) >= 0 && (st = get_dim(f, a, "attention.sliding_window", &hp->n_swa,
                                                   err)))
        return st;
    if (hp->n_swa >= hp->n_ctx_train)
        hp->n_swa = 0; /* a window as wide as the context is full attention */
    gguf_str name;
    if (gguf_get_str(f, "general.name", &name, NULL) == ENG_OK) {
        size_t n = name.len < sizeof hp->name - 1 ? name.len : sizeof hp->name - 1;
        memcpy(hp->name, name.ptr, n);
        hp->name[n] = '\0';
    }
    return ENG_OK;
}

static int64_t dim_value(const eng_hparams *hp, eng_arch_dim d)
{
    switch (d) {
    case ENG_ARCH_DIM_ONE: return 1;
    case ENG_ARCH_DIM_EMBD: return hp->n_embd;
    case ENG_ARCH_DIM_Q: return (int64_t)hp->n_head * hp->head_dim;
    case ENG_ARCH_DIM_KV: return (int64_t)hp->n_head_kv * hp->head_dim;
    case ENG_ARCH_DIM_FF: return hp->n_ff;
    case ENG_ARCH_DIM_VOCAB: return hp->n_vocab;
    case ENG_ARCH_DIM_QKV: return (int64_t)(hp->n_head + 2 * hp->n_head_kv) * hp->head_dim;
    }
    ENG_ASSERT(!"unknown eng_arch_dim");
    return 0;
}

/* Rows [r0, r0 + n) of a bound matrix, or values [r0, r0 + n) of a bound f32 vector. */
static eng_weight row_view(const eng_weight *w, int64_t r0, int64_t n)
{
    eng_weight v = *w;
    if (w->ne1 == 1 && w->dtype == GGUF_DTYPE_F32) {
        v.ne0 = n;
        v.row_bytes = (size_t)n * sizeof(float);
        v.data = (const float *)w->data + r0;
    } else {
        v.ne1 = n;
        v.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    }
    return v;
}

/* A fused Q|K|V (and its bias) becomes wq/wk/wv (bq/bk/bv) row views, so the backends see the
 * same layer whether the file fuses it or not. */
static void split_fused_qkv(eng_model *m)
{
    const eng_hparams *hp = &m->hp;
    int64_t dq = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    for (int il = 0; il < hp->n_layer; il++) {
        eng_layer *L = &m->layers[il];
        L->wq = row_view(&L->wqkv, 0, dq);
        L->wk = row_view(&L->wqkv, dq, kv);
        L->wv = row_view(&L->wqkv, dq + kv, kv);
        if (L->bqkv.data) {
            L->bq = row_view(&L->bqkv, 0, dq);
            L->bk = row_view(&L->bqkv, dq, kv);
            L->bv = row_view(&L->bqkv, dq + kv, kv);
        }
    }
}

/* Binds every layer's weights from the descriptor's table. */
static eng_status bind_layers(eng_model *m, eng_err *err)
{
    const eng_hparams *hp = &m->hp;
    for (int il = 0; il < hp->n_layer; il++) {
        for (size_t i = 0; i < m->desc->n_layer_tensors; i++) {
            const eng_arch_tensor *t = &m->desc->layer_tensors[i];
            eng_weight *w = (eng_weight *)((char *)&m->layers[il] + t->field);
            char nm[96];
            snprintf(nm, sizeof nm, "blk.%d.%s", il, t->name);
            if (t->optional && !gguf_tensor_find(m->gguf, nm))
                continue;
            eng_status st = bind_weight(m->gguf, nm, dim_value(hp, t->ne0), dim_value(hp, t->ne1),
                                        t->vector_f32, w, err);
            if (st != ENG_OK)
                return st;
        }
    }
    return ENG_OK;
}

eng_status eng_model_load(const char *path, eng_model **out, eng_err *err)
{
    *out = NULL;
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return eng_fail(err, ENG_ERR_NOMEM, "model: out of memory");
    eng_status st = gguf_open(path, &m->gguf, err);
    if (st != ENG_OK)
        goto fail;
    if ((st = read_hparams(m->gguf, &m->hp, &m->desc, err)) != ENG_OK)
        goto fail;
    if (!m->hp.name[0]) {
        const char *base = strrchr(path, '/');
        snprintf(m->hp.name, sizeof m->hp.name, "%s", base ? base + 1 : path);
    }
    if ((st = tok_vocab_from_gguf(m->gguf, &m->vocab, err)) != ENG_OK)
        goto fail;
    m->hp.n_vocab = tok_n_vocab(m->vocab);
    const gguf_file *f = m->gguf;
    const eng_hparams *hp = &m->hp;
    if ((st = bind_weight(f, "token_embd.weight", hp->n_embd, hp->n_vocab, false, &m->tok_embd,
                          err)) != ENG_OK ||
        (st = bind_weight(f, "output_norm.weight", hp->n_embd, 1, true, &m->out_norm, err)) !=
            ENG_OK)
        goto fail;
    if (m->desc->norm == ENG_ARCH_NORM_LAYER &&
        (st = bind_weight(f, "output_norm.bias", hp->n_embd, 1, true, &m->out_norm_b, err)) !=
            ENG_OK)
        goto fail;
    if (m->desc->pos == ENG_ARCH_POS_LEARNED &&
        (st = bind_weight(f, "position_embd.weight", hp->n_embd, hp->n_ctx_train, false,
                          &m->pos_embd, err)) != ENG_OK)
        goto fail;
    if (gguf_tensor_find(f, "output.weight") || !m->desc->tied_head_allowed) {
        if ((st = bind_weight(f, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output,
                              err)) != ENG_OK)
            goto fail;
    } else {
        m->output = m->tok_embd;
        m->hp.tied_output = true;
    }
    const gguf_tensor *rf = gguf_tensor_find(f, "rope_freqs.weight");
    if (rf) {
        eng_weight w;
        if ((st = bind_weight(f, "rope_freqs.weight", hp->head_dim / 2, 1, true, &w, err)) !=
            ENG_OK)
            goto fail;
        m->rope_freqs = w.data;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = eng_fail(err, ENG_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    if ((st = bind_layers(m, err)) != ENG_OK)
        goto fail;
    if (m->desc->fused_qkv)
        split_fused_qkv(m);
    *out = m;
    return ENG_OK;
fail:
    eng_model_free(m);
    return st;
}

void eng_model_free(eng_model *m)
{
    if (!m)
        return;
    free(m->layers);
    tok_vocab_free(m->vocab);
    gguf_free(m->gguf);
    free(m);
}

static uint64_t weight_bytes(const eng_weight *w) { return (uint64_t)w->row_bytes * (uint64_t)w->ne1; }

uint64_t eng_model_weight_bytes(const eng_model *m)
{
    /* What one decoded token reads: one embedding row (and position row), every layer, the
     * head. Unbound weights (data NULL) have ne1 = 0 and count nothing; fused Q|K|V is counted
     * through its views wq/wk/wv/bq/bk/bv, not twice. */
    uint64_t b = m->tok_embd.row_bytes + (m->pos_embd.data ? m->pos_embd.row_bytes : 0) +
                 weight_bytes(&m->out_norm) + weight_bytes(&m->out_norm_b) +
                 weight_bytes(&m->output);
    for (int il = 0; il < m->hp.n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        const eng_weight *ws[] = {&L->attn_norm, &L->attn_norm_b, &L->wq, &L->wk, &L->wv,
                                  &L->bq, &L->bk, &L->bv, &L->wo, &L->bo, &L->ffn_norm,
                                  &L->ffn_norm_b, &L->w_gate, &L->w_up, &L->b_up, &L->w_down,
                                  &L->b_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            b += weight_bytes(ws[i]);
    }
    return b;
}

const char *eng_model_name(const eng_model *m) { return m->hp.name; }
const char *eng_model_arch_name(const eng_model *m) { return m->hp.arch_name; }
int32_t eng_model_n_vocab(const eng_model *m) { return m->hp.n_vocab; }
int32_t eng_model_n_layer(const eng_model *m) { return m->hp.n_layer; }
int32_t eng_model_n_ctx_train(const eng_model *m) { return m->hp.n_ctx_train; }

eng_status eng_model_tokenize(const eng_model *m, const char *text, size_t len, bool add_special,
                              bool parse_special, int32_t **ids, int32_t *n, eng_err *err)
{
    *ids = NULL;
    *n = 0;
    /* At most tok_encode_bound ids (one per byte for byte-level BPE), plus BOS. */
    if (len > (size_t)INT32_MAX / 8)
        return eng_fail(err, ENG_ERR_TOO_LONG, "prompt of %zu bytes is too long", len);
    size_t cap = tok_encode_bound(m->vocab, len) + 1, off = 0, got = 0;
    int32_t *buf = malloc(cap * sizeof *buf);
    if (!buf)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory for %zu prompt tokens", cap);
    int32_t bos = add_special ? tok_prompt_bos(m->vocab) : -1;
    if (bos >= 0)
        buf[off++] = bos;
    if (len > 0 && tok_encode(m->vocab, text, len, parse_special, buf + off, cap - off, &got) !=
                       ENG_OK) {
        free(buf);
        return eng_fail(err, ENG_ERR_INVALID, "cannot tokenize the prompt (%zu bytes)", len);
    }
    *ids = buf;
    *n = (int32_t)(off + got);
    return ENG_OK;
}
