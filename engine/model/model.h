/* model.h — a loaded model: hyper-parameters, weights (views into the mapped GGUF, still
 * quantised) and its tokenizer. Architecture descriptors live in arch.c. */
#ifndef SERVAL_MODEL_H
#define SERVAL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "arch.h"
#include "gguf.h"
#include "serval_engine.h" /* eng_model (opaque there), eng_model_load/free and accessors */
#include "status.h"
#include "tokenizer.h"

typedef struct eng_hparams {
    eng_arch arch;        /* == desc->arch */
    char arch_name[32];
    char name[128];       /* general.name, or the file name */
    int32_t n_layer;
    int32_t n_embd;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;     /* n_embd / n_head */
    int32_t n_ff;
    int32_t n_vocab;
    int32_t n_ctx_train;  /* the context the model was trained for */
    float rope_base;
    float rope_freq_scale; /* 1 / rope.scaling.factor for linear scaling (DeepSeek-Coder: 0.25),
                              else 1: positions are multiplied by it before RoPE */
    float norm_eps;       /* RMSNorm or LayerNorm epsilon, as the descriptor's norm says */
    int32_t n_swa;        /* sliding-window attention: a query at position p sees keys in
                             (p - n_swa, p]; 0 = full causal attention */
    bool tied_output;     /* the output head is token_embd */
} eng_hparams;

/* A matrix [rows = ne1, cols = ne0] of `dtype`, rows contiguous, or a vector (ne1 = 1). */
typedef struct eng_weight {
    gguf_dtype dtype;
    int64_t ne0;
    int64_t ne1;
    const void *data; /* into the mapping; owned by the model's gguf_file */
    size_t row_bytes;
} eng_weight;

typedef struct eng_layer {
    eng_weight attn_norm; /* [n_embd] f32 */
    eng_weight attn_norm_b; /* [n_embd] f32 LayerNorm bias; data NULL with RMSNorm */
    eng_weight wq;        /* [n_head*hd, n_embd] */
    eng_weight wk;        /* [n_head_kv*hd, n_embd] */
    eng_weight wv;        /* [n_head_kv*hd, n_embd] */
    /* Biases the descriptor's table binds (arch.h, attn_bias); data NULL where the family has
     * none (Llama). */
    eng_weight bq;        /* [n_head*hd] f32 */
    eng_weight bk;        /* [n_head_kv*hd] f32 */
    eng_weight bv;        /* [n_head_kv*hd] f32 */
    /* Where the file fuses Q|K|V (StarCoder's attn_qkv), the binding of the whole tensor;
     * wq/wk/wv and bq/bk/bv above are then row views into it. data NULL otherwise. */
    eng_weight wqkv;      /* [n_head*hd + 2*n_head_kv*hd, n_embd] */
    eng_weight bqkv;      /* [n_head*hd + 2*n_head_kv*hd] f32 */
    eng_weight wo;        /* [n_embd, n_head*hd] */
    eng_weight bo;        /* [n_embd] f32 (out_bias), else data NULL */
    eng_weight ffn_norm;  /* [n_embd] f32 */
    eng_weight ffn_norm_b; /* [n_embd] f32 LayerNorm bias; data NULL with RMSNorm */
    eng_weight w_gate;    /* [n_ff, n_embd]; data NULL for GELU families (no gate) */
    eng_weight w_up;      /* [n_ff, n_embd] */
    eng_weight b_up;      /* [n_ff] f32 (out_bias), else data NULL */
    eng_weight w_down;    /* [n_embd, n_ff] */
    eng_weight b_down;    /* [n_embd] f32 (out_bias), else data NULL */
} eng_layer;

struct eng_model {
    const eng_arch_desc *desc; /* the family's descriptor (static) */
    gguf_file *gguf;      /* owned */
    tok_vocab *vocab;     /* owned */
    eng_hparams hp;
    eng_weight tok_embd;  /* [n_vocab, n_embd] */
    eng_weight out_norm;  /* [n_embd] f32 */
    eng_weight out_norm_b; /* [n_embd] f32 LayerNorm bias; data NULL with RMSNorm */
    eng_weight pos_embd;  /* [n_ctx_train, n_embd] learned positions (StarCoder); data NULL
                             otherwise. Row p is added to the token embedding at position p. */
    eng_weight output;    /* [n_vocab, n_embd]; == tok_embd when tied */
    const float *rope_freqs; /* [head_dim/2] frequency divisors (Llama 3.1+), or NULL */
    eng_layer *layers;    /* [n_layer], owned */
};

/* eng_model_load, eng_model_free, the accessors and eng_model_tokenize are declared in
 * serval_engine.h (the front ends' view of a model); the struct is the engine's inside. */

#endif
