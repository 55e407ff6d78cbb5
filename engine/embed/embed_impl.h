/* embed_impl.h — private to the embedder: a loaded `bert` encoder (weights bound from the
 * GGUF, llama.cpp's tensor names), the JSON reader `serval convert` uses, and what the worker
 * (embed.c) calls on a backend. */
#ifndef SERVAL_EMBED_IMPL_H
#define SERVAL_EMBED_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model.h" /* eng_weight */
#include "status.h"
#include "tokenizer.h"

/* ---- JSON (embed_json.c) ------------------------------------------------------------------ */

typedef enum ej_type { EJ_NULL = 0, EJ_BOOL, EJ_NUM, EJ_STR, EJ_ARR, EJ_OBJ } ej_type;

typedef struct ej_val {
    ej_type type;
    bool b;
    double num;
    char *str;            /* EJ_STR: decoded, NUL-terminated (len bytes; may hold NULs) */
    size_t len;
    struct ej_val *items; /* EJ_ARR / EJ_OBJ: n values */
    char **keys;          /* EJ_OBJ: n keys */
    size_t n;
} ej_val;

/* Parses a whole JSON document (what: the file name, for messages). ENG_ERR_FORMAT with the
 * byte position for bad JSON. *out owns everything: ej_free. */
eng_status ej_parse(const char *text, size_t len, const char *what, ej_val *out, eng_err *err);
void ej_free(ej_val *v);
/* The value of key in an object, or NULL (also when obj is NULL or not an object). */
const ej_val *ej_get(const ej_val *obj, const char *key);

/* ---- the bert model (embed_model.c) ------------------------------------------------------- */

typedef enum emb_pooling {
    EMB_POOL_MEAN = 1, /* llama.cpp's LLAMA_POOLING_TYPE_MEAN */
    EMB_POOL_CLS = 2   /* LLAMA_POOLING_TYPE_CLS: the first token's state */
} emb_pooling;


typedef struct emb_model {
    const eng_arch_desc *desc; /* bert's descriptor (engine/model/arch.c: its layer tensors) */
    gguf_file *gguf; /* owned; weights point into it */
    tok_wpm *vocab;  /* owned */
    char name[128];
    int32_t n_layer, n_embd, n_head, head_dim, n_ff, n_ctx, n_vocab, n_types;
    float eps;
    emb_pooling pooling;
    eng_weight tok_embd;  /* [n_vocab, n_embd] */
    eng_weight pos_embd;  /* [n_ctx, n_embd] */
    eng_weight type_embd; /* [n_types, n_embd]; row 0 is added to every token */
    eng_weight embd_ln_w, embd_ln_b; /* token_embd_norm */
    /* [n_layer], owned; bound from desc's table: wq/bq, wk/bk, wv/bv, wo/bo, attn_norm(_b)
     * (attn_output_norm, after the attention residual), w_up/b_up, w_down/b_down, ffn_norm(_b)
     * (layer_output_norm, after the FFN residual); the rest stays NULL */
    eng_layer *layers;
} emb_model;

/* Loads a `bert` GGUF: hyper-parameters, every tensor checked for name, shape and type (F32,
 * F16 matrices; F32 vectors), the WordPiece vocabulary. *out owned by the caller. */
eng_status emb_model_load(const char *path, emb_model **out, eng_err *err);
void emb_model_free(emb_model *m);

/* One embedding row of a weight (F32 or F16) widened to f32: dst[0, ne0). */
void emb_weight_row(const eng_weight *w, int64_t row, float *dst);

#endif
