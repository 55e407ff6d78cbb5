/* arch.c — the architecture descriptors (arch.h): one table per family. */
#include "arch.h"

#include <stdio.h>
#include <string.h>

#include "model.h"

#define LAYER_W(nm, d0, d1, fld) {nm, d0, d1, offsetof(eng_layer, fld), false, false}
#define LAYER_V(nm, d0, fld) {nm, d0, ENG_ARCH_DIM_ONE, offsetof(eng_layer, fld), true, false}

/* Llama: pre-norm RMSNorm, RoPE, SwiGLU, no biases, GQA. */
static const eng_arch_tensor llama_layer[] = {
    LAYER_V("attn_norm.weight", ENG_ARCH_DIM_EMBD, attn_norm),
    LAYER_W("attn_q.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_Q, wq),
    LAYER_W("attn_k.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wk),
    LAYER_W("attn_v.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wv),
    LAYER_W("attn_output.weight", ENG_ARCH_DIM_Q, ENG_ARCH_DIM_EMBD, wo),
    LAYER_V("ffn_norm.weight", ENG_ARCH_DIM_EMBD, ffn_norm),
    LAYER_W("ffn_gate.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_gate),
    LAYER_W("ffn_up.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_up),
    LAYER_W("ffn_down.weight", ENG_ARCH_DIM_FF, ENG_ARCH_DIM_EMBD, w_down),
};

/* Qwen2 (llama.cpp's LLM_ARCH_QWEN2): Llama's layer plus F32 biases on Q, K and V, RoPE on
 * halves (LLAMA_ROPE_TYPE_NEOX); the small sizes (0.5B, 1.5B, 3B) tie the head. */
static const eng_arch_tensor qwen2_layer[] = {
    LAYER_V("attn_norm.weight", ENG_ARCH_DIM_EMBD, attn_norm),
    LAYER_W("attn_q.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_Q, wq),
    LAYER_V("attn_q.bias", ENG_ARCH_DIM_Q, bq),
    LAYER_W("attn_k.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wk),
    LAYER_V("attn_k.bias", ENG_ARCH_DIM_KV, bk),
    LAYER_W("attn_v.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wv),
    LAYER_V("attn_v.bias", ENG_ARCH_DIM_KV, bv),
    LAYER_W("attn_output.weight", ENG_ARCH_DIM_Q, ENG_ARCH_DIM_EMBD, wo),
    LAYER_V("ffn_norm.weight", ENG_ARCH_DIM_EMBD, ffn_norm),
    LAYER_W("ffn_gate.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_gate),
    LAYER_W("ffn_up.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_up),
    LAYER_W("ffn_down.weight", ENG_ARCH_DIM_FF, ENG_ARCH_DIM_EMBD, w_down),
};

/* StarCoder (llama.cpp's LLM_ARCH_STARCODER, HF gpt_bigcode): LayerNorm with bias, one fused
 * Q|K|V projection with bias (multi-query: one K/V head), learned absolute positions (the
 * model-level position_embd.weight), GELU FFN without a gate, biases on every product. */
static const eng_arch_tensor starcoder_layer[] = {
    LAYER_V("attn_norm.weight", ENG_ARCH_DIM_EMBD, attn_norm),
    LAYER_V("attn_norm.bias", ENG_ARCH_DIM_EMBD, attn_norm_b),
    LAYER_W("attn_qkv.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_QKV, wqkv),
    LAYER_V("attn_qkv.bias", ENG_ARCH_DIM_QKV, bqkv),
    LAYER_W("attn_output.weight", ENG_ARCH_DIM_Q, ENG_ARCH_DIM_EMBD, wo),
    LAYER_V("attn_output.bias", ENG_ARCH_DIM_EMBD, bo),
    LAYER_V("ffn_norm.weight", ENG_ARCH_DIM_EMBD, ffn_norm),
    LAYER_V("ffn_norm.bias", ENG_ARCH_DIM_EMBD, ffn_norm_b),
    LAYER_W("ffn_up.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_up),
    LAYER_V("ffn_up.bias", ENG_ARCH_DIM_FF, b_up),
    LAYER_W("ffn_down.weight", ENG_ARCH_DIM_FF, ENG_ARCH_DIM_EMBD, w_down),
    LAYER_V("ffn_down.bias", ENG_ARCH_DIM_EMBD, b_down),
};

/* StarCoder2 (llama.cpp's LLM_ARCH_STARCODER2): LayerNorm with bias, separate Q/K/V with
 * biases (grouped-query), RoPE on halves, GELU FFN without a gate, biases on every product,
 * sliding-window attention where the file says so (hparams n_swa). */
static const eng_arch_tensor starcoder2_layer[] = {
    LAYER_V("attn_norm.weight", ENG_ARCH_DIM_EMBD, attn_norm),
    LAYER_V("attn_norm.bias", ENG_ARCH_DIM_EMBD, attn_norm_b),
    LAYER_W("attn_q.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_Q, wq),
    LAYER_V("attn_q.bias", ENG_ARCH_DIM_Q, bq),
    LAYER_W("attn_k.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wk),
    LAYER_V("attn_k.bias", ENG_ARCH_DIM_KV, bk),
    LAYER_W("attn_v.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wv),
    LAYER_V("attn_v.bias", ENG_ARCH_DIM_KV, bv),
    LAYER_W("attn_output.weight", ENG_ARCH_DIM_Q, ENG_ARCH_DIM_EMBD, wo),
    LAYER_V("attn_output.bias", ENG_ARCH_DIM_EMBD, bo),
    LAYER_V("ffn_norm.weight", ENG_ARCH_DIM_EMBD, ffn_norm),
    LAYER_V("ffn_norm.bias", ENG_ARCH_DIM_EMBD, ffn_norm_b),
    LAYER_W("ffn_up.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_up),
    LAYER_V("ffn_up.bias", ENG_ARCH_DIM_FF, b_up),
    LAYER_W("ffn_down.weight", ENG_ARCH_DIM_FF, ENG_ARCH_DIM_EMBD, w_down),
    LAYER_V("ffn_down.bias", ENG_ARCH_DIM_EMBD, b_down),
};

/* BERT (llama.cpp's LLM_ARCH_BERT): post-norm encoder, separate Q/K/V with biases, biases on
 * every product, a LayerNorm (with bias) after each residual add, exact GELU FFN without a
 * gate; learned positions and token types are model-level tensors (engine/embed/). */
static const eng_arch_tensor bert_layer[] = {
    LAYER_W("attn_q.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_Q, wq),
    LAYER_V("attn_q.bias", ENG_ARCH_DIM_Q, bq),
    LAYER_W("attn_k.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wk),
    LAYER_V("attn_k.bias", ENG_ARCH_DIM_KV, bk),
    LAYER_W("attn_v.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_KV, wv),
    LAYER_V("attn_v.bias", ENG_ARCH_DIM_KV, bv),
    LAYER_W("attn_output.weight", ENG_ARCH_DIM_Q, ENG_ARCH_DIM_EMBD, wo),
    LAYER_V("attn_output.bias", ENG_ARCH_DIM_EMBD, bo),
    LAYER_V("attn_output_norm.weight", ENG_ARCH_DIM_EMBD, attn_norm),
    LAYER_V("attn_output_norm.bias", ENG_ARCH_DIM_EMBD, attn_norm_b),
    LAYER_W("ffn_up.weight", ENG_ARCH_DIM_EMBD, ENG_ARCH_DIM_FF, w_up),
    LAYER_V("ffn_up.bias", ENG_ARCH_DIM_FF, b_up),
    LAYER_W("ffn_down.weight", ENG_ARCH_DIM_FF, ENG_ARCH_DIM_EMBD, w_down),
    LAYER_V("ffn_down.bias", ENG_ARCH_DIM_EMBD, b_down),
    LAYER_V("layer_output_norm.weight", ENG_ARCH_DIM_EMBD, ffn_norm),
    LAYER_V("layer_output_norm.bias", ENG_ARCH_DIM_EMBD, ffn_norm_b),
};

/* Encoders: not completion models, so eng_arch_find (the decoder loader's) never returns them. */
static const eng_arch_desc encoders[] = {
    {
        .arch = ENG_ARCH_BERT,
        .gguf_name = "bert",
        .families = "BERT, all-MiniLM-L6-v2 (sentence-transformers)",
        .norm = ENG_ARCH_NORM_LAYER,
        .pos = ENG_ARCH_POS_LEARNED,
        .ffn = ENG_ARCH_FFN_GELU_ERF,
        .attn_bias = true,
        .out_bias = true,
        .post_norm = true,
        .encoder = true,
        .layer_tensors = bert_layer,
        .n_layer_tensors = sizeof bert_layer / sizeof bert_layer[0],
    },
};

static const eng_arch_desc archs[] = {
    {
        .arch = ENG_ARCH_LLAMA,
        .gguf_name = "llama",
        .families = "Llama, SmolLM2, CodeLlama, DeepSeek-Coder",
        .norm = ENG_ARCH_NORM_RMS,
        .pos = ENG_ARCH_POS_ROPE_INTERLEAVED,
        .ffn = ENG_ARCH_FFN_SWIGLU,
        .tied_head_allowed = true,
        .layer_tensors = llama_layer,
        .n_layer_tensors = sizeof llama_layer / sizeof llama_layer[0],
    },
    {
        .arch = ENG_ARCH_QWEN2,
        .gguf_name = "qwen2",
        .families = "Qwen2, Qwen2.5, Qwen2.5-Coder",
        .norm = ENG_ARCH_NORM_RMS,
        .pos = ENG_ARCH_POS_ROPE_NEOX,
        .ffn = ENG_ARCH_FFN_SWIGLU,
        .attn_bias = true,
        .tied_head_allowed = true,
        .layer_tensors = qwen2_layer,
        .n_layer_tensors = sizeof qwen2_layer / sizeof qwen2_layer[0],
    },
    {
        .arch = ENG_ARCH_STARCODER,
        .gguf_name = "starcoder",
        .families = "StarCoder, StarCoderBase, SantaCoder-like (gpt_bigcode)",
        .norm = ENG_ARCH_NORM_LAYER,
        .pos = ENG_ARCH_POS_LEARNED,
        .ffn = ENG_ARCH_FFN_GELU,
        .attn_bias = true,
        .out_bias = true,
        .fused_qkv = true,
        .tied_head_allowed = true,
        .layer_tensors = starcoder_layer,
        .n_layer_tensors = sizeof starcoder_layer / sizeof starcoder_layer[0],
    },
    {
        .arch = ENG_ARCH_STARCODER2,
        .gguf_name = "starcoder2",
        .families = "StarCoder2",
        .norm = ENG_ARCH_NORM_LAYER,
        .pos = ENG_ARCH_POS_ROPE_NEOX,
        .ffn = ENG_ARCH_FFN_GELU,
        .attn_bias = true,
        .out_bias = true,
        .tied_head_allowed = true,
        .layer_tensors = starcoder2_layer,
        .n_layer_tensors = sizeof starcoder2_layer / sizeof starcoder2_layer[0],
    },
};

const eng_arch_desc *eng_arch_find(const char *gguf_name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (!strcmp(archs[i].gguf_name, gguf_name))
            return &archs[i];
    return NULL;
}

const eng_arch_desc *eng_arch_find_encoder(const char *gguf_name)
{
    for (size_t i = 0; i < sizeof encoders / sizeof encoders[0]; i++)
        if (!strcmp(encoders[i].gguf_name, gguf_name))
            return &encoders[i];
    return NULL;
}

void eng_arch_supported_names(char *buf, size_t cap)
{
    size_t off = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof archs / sizeof archs[0] && off < cap; i++) {
        int n = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "", archs[i].gguf_name);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}
