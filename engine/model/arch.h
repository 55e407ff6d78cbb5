/* arch.h — architecture descriptors: per model family (GGUF general.architecture), the GGUF
 * tensor names and shapes of its weights and how a layer is computed (norm, positions,
 * activation, biases, attention shape, tied head). The loader (model.c) binds weights from the
 * descriptor's table and both backends read the same descriptor, so adding a family is one
 * descriptor here plus whatever ops it needs in cpu/ and kernels/. */
#ifndef SERVAL_ARCH_H
#define SERVAL_ARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum eng_arch {
    ENG_ARCH_LLAMA = 0, /* Llama, SmolLM2, CodeLlama, DeepSeek-Coder */
    ENG_ARCH_QWEN2,     /* Qwen2, Qwen2.5, Qwen2.5-Coder */
    ENG_ARCH_STARCODER, /* StarCoder, StarCoderBase, SantaCoder-like (HF gpt_bigcode) */
    ENG_ARCH_STARCODER2, /* StarCoder2 */
    ENG_ARCH_BERT        /* BERT encoders (all-MiniLM-L6-v2): embeddings only, engine/embed/ */
} eng_arch;

typedef enum eng_arch_norm {
    ENG_ARCH_NORM_RMS = 0, /* RMSNorm with a weight (Llama) */
    ENG_ARCH_NORM_LAYER    /* LayerNorm with weight and bias (StarCoder, BERT) */
} eng_arch_norm;

typedef enum eng_arch_pos {
    ENG_ARCH_POS_ROPE_INTERLEAVED = 0, /* RoPE on adjacent pairs (llama.cpp's "normal" mode) */
    ENG_ARCH_POS_ROPE_NEOX,            /* RoPE on halves (Qwen2, StarCoder2) */
    ENG_ARCH_POS_LEARNED               /* learned absolute position embeddings (StarCoder) */
} eng_arch_pos;

typedef enum eng_arch_ffn {
    ENG_ARCH_FFN_SWIGLU = 0, /* down(silu(gate(x)) * up(x)) */
    ENG_ARCH_FFN_GELU,       /* down(gelu(up(x))), ggml_gelu: the tanh approximation */
    ENG_ARCH_FFN_GELU_ERF    /* down(gelu(up(x))), the exact erf GELU (HF's "gelu": BERT) */
} eng_arch_ffn;

/* A dimension of a weight, resolved from the hyper-parameters at load. */
typedef enum eng_arch_dim {
    ENG_ARCH_DIM_ONE = 0, /* 1 (vectors) */
    ENG_ARCH_DIM_EMBD,    /* n_embd */
    ENG_ARCH_DIM_Q,       /* n_head * head_dim */
    ENG_ARCH_DIM_KV,      /* n_head_kv * head_dim */
    ENG_ARCH_DIM_FF,      /* n_ff */
    ENG_ARCH_DIM_VOCAB,   /* n_vocab */
    ENG_ARCH_DIM_QKV      /* n_head * head_dim + 2 * n_head_kv * head_dim (fused Q|K|V) */
} eng_arch_dim;

/* One weight of a layer: GGUF name "blk.<i>.<name>", shape [ne1 rows, ne0 columns], where it
 * goes in eng_layer (byte offset of an eng_weight field), whether it is an F32 vector. */
typedef struct eng_arch_tensor {
    const char *name;  /* "attn_q.weight" */
    eng_arch_dim ne0;
    eng_arch_dim ne1;
    size_t field;      /* offsetof(eng_layer, ...) */
    bool vector_f32;
    bool optional;     /* absent is fine (the field's data stays NULL) */
} eng_arch_tensor;

typedef struct eng_arch_desc {
    eng_arch arch;
    const char *gguf_name;       /* general.architecture */
    const char *families;        /* for messages and docs */
    eng_arch_norm norm;
    eng_arch_pos pos;
    eng_arch_ffn ffn;
    bool attn_bias;              /* biases on Q, K, V (Qwen2, StarCoder, StarCoder2) */
    bool out_bias;               /* biases on the attention output and FFN products (bo,
                                    b_up, b_down) */
    bool fused_qkv;              /* one attn_qkv weight (and bias): the loader splits it into
                                    wq/wk/wv (bq/bk/bv) row views, so backends never see it */
    bool tied_head_allowed;      /* output.weight may be absent: the head is token_embd */
    bool post_norm;              /* LayerNorm after each residual add (BERT): attn_norm after
                                    the attention's, ffn_norm after the FFN's; else before */
    bool encoder;                /* bidirectional attention and no LM head: loaded by the
                                    embedder (engine/embed/), found by eng_arch_find_encoder */
    const eng_arch_tensor *layer_tensors;
    size_t n_layer_tensors;
} eng_arch_desc;

/* The descriptor for a GGUF architecture name of a decoder (a completion model), or NULL when
 * Serval has none. */
const eng_arch_desc *eng_arch_find(const char *gguf_name);

/* The descriptor for a GGUF architecture name of an encoder (an embedding model: "bert"), or
 * NULL when Serval has none. */
const eng_arch_desc *eng_arch_find_encoder(const char *gguf_name);

/* Writes "llama, ..." — every decoder architecture with a descriptor — into buf (cap bytes, NUL
 * terminated, truncated when it does not fit), for error messages. */
void eng_arch_supported_names(char *buf, size_t cap);

#endif
