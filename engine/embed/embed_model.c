/* embed_model.c — loads a `bert` GGUF for the embedder: the model-level tensors (llama.cpp's
 * names: token_embd, position_embd, token_types, token_embd_norm), each layer's as bert's
 * descriptor in engine/model/arch.c lists them, bert.* hyper-parameters and pooling_type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_impl.h"
#include "quant.h"

void emb_weight_row(const eng_weight *w, int64_t row, float *dst)
{
    const char *p = (const char *)w->data + (size_t)row * w->row_bytes;
    if (w->dtype == GGUF_DTYPE_F32)
        memcpy(dst, p, sizeof(float) * (size_t)w->ne0);
    else
        quant_dequant_row(w->dtype, p, dst, w->ne0);
}

/* Binds tensor `name` with shape [ne1, ne0] (ne1 = 1: a vector, which must be F32). */
static eng_status bind(const gguf_file *f, const char *name, int64_t ne0, int64_t ne1,
                       eng_weight *w, eng_err *err)
{
    const gguf_tensor *t = gguf_tensor_find(f, name);
    if (!t)
        return eng_fail(err, ENG_ERR_FORMAT, "bert: tensor '%s' is missing", name);
    bool vec = ne1 == 1;
    int64_t got1 = t->n_dims >= 2 ? t->ne[1] : 1;
    if (t->ne[0] != ne0 || got1 != ne1 || t->n_dims > 2)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "bert: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
                        (long long)got1, (long long)t->ne[0], (long long)ne1, (long long)ne0);
    if (vec ? t->dtype != GGUF_DTYPE_F32
            : (t->dtype != GGUF_DTYPE_F32 && t->dtype != GGUF_DTYPE_F16))
        return eng_fail(err, ENG_ERR_UNSUPPORTED,
                        "bert: tensor '%s' is %s; Serval's encoder takes F32%s", name,
                        gguf_dtype_name(t->dtype), vec ? " vectors" : " or F16 matrices");
    w->dtype = t->dtype;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->data = t->data;
    w->row_bytes = gguf_dtype_row_bytes(t->dtype, ne0);
    return ENG_OK;
}

static eng_status get_i32(const gguf_file *f, const char *key, int32_t lo, int32_t hi,
                          int32_t *out, eng_err *err)
{
    uint32_t v;
    if (gguf_kv_find(f, key) < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "bert: key '%s' is missing", key);
    eng_status st = gguf_get_u32(f, key, &v, err);
    if (st != ENG_OK)
        return st;
    if (v < (uint32_t)lo || v > (uint32_t)hi)
        return eng_fail(err, ENG_ERR_FORMAT, "bert: %s = %u is outside [%d, %d]", key, v, lo,
                        hi);
    *out = (int32_t)v;
    return ENG_OK;
}

/* Binds layer il's tensors as bert's descriptor lists them (arch.c owns names and shapes). */
static eng_status bind_layer(const emb_model *m, int il, eng_layer *L, eng_err *err)
{
    for (size_t i = 0; i < m->desc->n_layer_tensors; i++) {
        const eng_arch_tensor *t = &m->desc->layer_tensors[i];
        int64_t dims[2];
        const eng_arch_dim want[2] = {t->ne0, t->ne1};
        for (int k = 0; k < 2; k++) {
            switch (want[k]) {
            case ENG_ARCH_DIM_ONE: dims[k] = 1; break;
            case ENG_ARCH_DIM_EMBD:
            case ENG_ARCH_DIM_Q:
            case ENG_ARCH_DIM_KV: dims[k] = m->n_embd; break; /* n_head_kv = n_head */
            case ENG_ARCH_DIM_FF: dims[k] = m->n_ff; break;
            default:
                return eng_fail(err, ENG_ERR_UNSUPPORTED, "bert: tensor '%s' has a dimension "
                                "the encoder does not know", t->name);
            }
        }
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", il, t->name);
        eng_weight *w = (eng_weight *)((char *)L + t->field);
        eng_status st = bind(m->gguf, name, dims[0], dims[1], w, err);
        if (st != ENG_OK && !(t->optional && !gguf_tensor_find(m->gguf, name)))
            return st;
    }
    return ENG_OK;
}

eng_status emb_model_load(const char *path, emb_model **out, eng_err *err)
{
    *out = NULL;
    emb_model *m = calloc(1, sizeof *m);
    if (!m)
        return eng_fail(err, ENG_ERR_NOMEM, "bert: out of memory");
    m->desc = eng_arch_find_encoder("bert");
    eng_status st = gguf_open(path, &m->gguf, err);
    if (st != ENG_OK)
        goto fail;
    const gguf_file *f = m->gguf;
    gguf_str arch;
    if (gguf_kv_find(f, "general.architecture") < 0) {
        st = eng_fail(err, ENG_ERR_FORMAT, "%s: general.architecture is missing", path);
        goto fail;
    }
    if ((st = gguf_get_str(f, "general.architecture", &arch, err)) != ENG_OK)
        goto fail;
    if (!gguf_str_eq(arch, "bert")) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED,
                      "%s: architecture '%.*s' is not an embedding model Serval runs (only "
                      "'bert')", path, (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
        goto fail;
    }
    gguf_str name;
    if (gguf_kv_find(f, "general.name") >= 0 &&
        gguf_get_str(f, "general.name", &name, NULL) == ENG_OK && name.len > 0) {
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 127 ? 127 : name.len),
                 name.ptr);
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(m->name, sizeof m->name, "%s", slash ? slash + 1 : path);
    }
    int32_t pooling = EMB_POOL_MEAN;
    if ((st = get_i32(f, "bert.block_count", 1, 256, &m->n_layer, err)) != ENG_OK ||
        (st = get_i32(f, "bert.embedding_length", 1, 65536, &m->n_embd, err)) != ENG_OK ||
        (st = get_i32(f, "bert.attention.head_count", 1, 1024, &m->n_head, err)) != ENG_OK ||
        (st = get_i32(f, "bert.feed_forward_length", 1, 1 << 20, &m->n_ff, err)) != ENG_OK ||
        (st = get_i32(f, "bert.context_length", 2, 1 << 16, &m->n_ctx, err)) != ENG_OK)
        goto fail;
    if (gguf_kv_find(f, "bert.pooling_type") >= 0 &&
        (st = get_i32(f, "bert.pooling_type", 0, 16, &pooling, err)) != ENG_OK)
        goto fail;
    if (pooling != EMB_POOL_MEAN && pooling != EMB_POOL_CLS) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED,
                      "bert.pooling_type %d is not supported (1: mean, 2: cls)", pooling);
        goto fail;
    }
    m->pooling = (emb_pooling)pooling;
    if (m->n_embd % m->n_head != 0) {
        st = eng_fail(err, ENG_ERR_FORMAT, "bert: embedding_length %d is not a multiple of "
                      "head_count %d", m->n_embd, m->n_head);
        goto fail;
    }
    m->head_dim = m->n_embd / m->n_head;
    m->eps = 1e-12f;
    if (gguf_kv_find(f, "bert.attention.layer_norm_epsilon") >= 0 &&
        (st = gguf_get_f32(f, "bert.attention.layer_norm_epsilon", &m->eps, err)) != ENG_OK)
        goto fail;
    bool causal = false;
    if (gguf_kv_find(f, "bert.attention.causal") >= 0 &&
        gguf_get_bool(f, "bert.attention.causal", &causal, NULL) == ENG_OK && causal) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "bert.attention.causal is true: not an encoder");
        goto fail;
    }
    if ((st = tok_wpm_from_gguf(f, &m->vocab, err)) != ENG_OK)
        goto fail;
    m->n_vocab = tok_wpm_n_vocab(m->vocab);
    const gguf_tensor *tt = gguf_tensor_find(f, "token_types.weight");
    m->n_types = tt && tt->n_dims == 2 ? (int32_t)tt->ne[1] : 1;
    if (!tt) {
        st = eng_fail(err, ENG_ERR_FORMAT, "bert: tensor 'token_types.weight' is missing");
        goto fail;
    }
    if ((st = bind(f, "token_embd.weight", m->n_embd, m->n_vocab, &m->tok_embd, err)) != ENG_OK ||
        (st = bind(f, "position_embd.weight", m->n_embd, m->n_ctx, &m->pos_embd, err)) !=
            ENG_OK ||
        (st = bind(f, "token_types.weight", m->n_embd, m->n_types >= 1 ? m->n_types : 1,
                   &m->type_embd, err)) != ENG_OK ||
        (st = bind(f, "token_embd_norm.weight", m->n_embd, 1, &m->embd_ln_w, err)) != ENG_OK ||
        (st = bind(f, "token_embd_norm.bias", m->n_embd, 1, &m->embd_ln_b, err)) != ENG_OK)
        goto fail;
    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = eng_fail(err, ENG_ERR_NOMEM, "bert: out of memory");
        goto fail;
    }
    for (int il = 0; il < m->n_layer; il++)
        if ((st = bind_layer(m, il, &m->layers[il], err)) != ENG_OK)
            goto fail;
    *out = m;
    return ENG_OK;
fail:
    emb_model_free(m);
    return st;
}

void emb_model_free(emb_model *m)
{
    if (!m)
        return;
    tok_wpm_free(m->vocab);
    gguf_free(m->gguf);
    free(m->layers);
    free(m);
}
