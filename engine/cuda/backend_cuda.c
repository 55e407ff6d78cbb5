/* backend_cuda.c — the CUDA backend behind engine/backend.h: weights dequantised to bf16 on
 * the GPU once at load (or fp16 when asked; Q|K|V and gate|up fused), every per-step buffer
 * preallocated, a paged KV pool sized from the budget or from free GPU memory, and one forward
 * step per batch made of kernels/ launchers and cuBLAS GEMMs, sampled on the GPU: only the
 * token ids travel back, and reading them is the step's one host synchronisation. Decode steps
 * are captured as CUDA graphs, one per (batch-size bucket, context-length bucket), padded to
 * the bucket with rows that write a KV block outside the engine's pool. The model's descriptor
 * picks the ops: RMSNorm or LayerNorm, RoPE (interleaved or NeoX, linearly scaled) or learned
 * positions, SwiGLU or GELU, biases where the layer binds them, sliding-window attention.
 * As one rank of a tensor-parallel group (backend_cuda_tp.h) it holds its shard of the model
 * (model/shard.h) and joins the others at four points, all stream work a graph can capture:
 * the embedding (its vocabulary rows, summed), the attention output and down projections
 * (partial products summed before their biases) and the logits (the vocabulary slices
 * gathered), then samples like every other rank. Built only with SERVAL_HAVE_CUDA. */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "backend_cuda_tp.h"
#include "bias_add.h"
#include "comm.h"
#include "cuda_util.h"
#include "dequant.h"
#include "device.h"
#include "embed.h"
#include "gelu.h"
#include "gemm.h"
#include "kv_write.h"
#include "layernorm.h"
#include "paged_attention.h"
#include "prefill_attention.h"
#include "rmsnorm.h"
#include "rope.h"
#include "sampling.h"
#include "shard.h"
#include "swiglu.h"

#define KVT KN_DTYPE_F16  /* KV cache: fp16 like the CPU backend */

/* Decode attention always splits contexts into partitions of KN_DECODE_SPLIT positions
 * (paged_attention.h), so a sequence's result does not depend on the other sequences of its
 * batch or on the bucket. */
enum { MAX_GRAPHS = 256 };

/* One captured decode step: nb sequences (padded), contexts up to lb positions. */
typedef struct decode_graph {
    int32_t nb, lb;
    cudaGraphExec_t exec;
} decode_graph;

typedef struct cuda_layer {
    void *attn_norm, *ffn_norm;     /* [d] bf16 */
    void *attn_norm_b, *ffn_norm_b; /* [d] bf16 LayerNorm biases; NULL with RMSNorm */
    void *wqkv;                     /* [dq + 2*kvd, d] */
    float *bqkv;                    /* [dq + 2*kvd] fp32 bq|bk|bv, NULL without biases */
    void *wo;                       /* [d, dq] */
    float *bo;                      /* [d] fp32 attention output bias, or NULL */
    void *wgu;                      /* SwiGLU: [2*ff, d], gate rows then up rows; GELU: [ff, d] */
    float *b_up;                    /* [ff] fp32 up bias (GELU families), or NULL */
    void *wdown;                    /* [d, ff] */
    float *b_down;                  /* [d] fp32 down bias, or NULL */
    void *k_cache, *v_cache;        /* [n_slots, kvd] fp16 */
} cuda_layer;

typedef struct cuda_backend {
    eng_backend base; /* first: the engine holds a pointer to it */
    const eng_model *m;    /* the whole model, or one rank's (shard below) */
    int dev;               /* the CUDA device everything here lives on */
    /* Tensor parallelism: NULL comm is the whole model alone; else this rank's split, its
     * group (borrowed) and the vocabulary every rank's logits span together. */
    const eng_shard *shard;
    eng_comm *comm;
    int32_t n_vocab_out;   /* logits row width: the whole model's vocabulary */
    float *logits_local;   /* [max_logits, n_vocab_stride] this rank's slice (comm only) */
    float *gathered;       /* [n_ranks, max_logits, n_vocab_stride] every rank's (comm only) */
    float *tmp32;          /* [T, d] a row-parallel product's partial sum in fp32 (comm only) */
    int32_t *d_iota;       /* [T] 0, 1, ..., T-1: rows for the fp32 -> act gather (comm only) */
    kn_dtype act;          /* weights and activations: BF16 (default) or F16 */
    cudaStream_t st;
    kn_gemm *gemm;
    void *tok_embd, *out_norm, *output; /* bf16; output == tok_embd when tied */
    void *out_norm_b;      /* [d] bf16 LayerNorm bias; NULL with RMSNorm */
    void *pos_embd;        /* [n_pos, d] bf16 learned positions (StarCoder); NULL with RoPE */
    int64_t n_pos;
    bool gated;            /* SwiGLU on fused gate|up, else GELU on up alone */
    cuda_layer *layers;
    int32_t max_tokens, max_logits, max_blocks_per_seq;
    int32_t len_cap;       /* the largest context bucket: max_pos rounded up to KN_DECODE_SPLIT */
    int64_t n_slots;       /* the engine's blocks and the padding block */
    int32_t pad_block;     /* block id padding rows write their K/V into (not the engine's) */
    /* per-step device buffers */
    float *resid;          /* [T, d] fp32 residual stream */
    void *xn, *tmp;        /* [T, d] bf16 */
    void *qkv;             /* [T, dq + 2*kvd] */
    void *att;             /* [T, dq] */
    void *gu;              /* [T, 2*ff] (SwiGLU) or [T, ff] (GELU) */
    void *xsel;            /* [max_logits, d] */
    float *logits;         /* [max_logits, n_vocab_out] */
    float *samp_scratch;   /* [max_logits, n_vocab_out] the sampler's scaled logits */
    void *attn_ws;         /* split-K workspace */
    size_t attn_ws_bytes;
    int32_t *d_ints;       /* tokens, pos, slots, logits_idx, seq_lens, q_start, tables */
    int32_t *h_ints;       /* pinned host staging of the same */
    size_t n_ints;
    int32_t *h_perm;       /* [max_tokens] staging's row order (stage_batch) */
    float *h_logits;       /* pinned [max_logits, n_vocab_out] */
    kn_sample_params *d_samp, *h_samp; /* [max_logits] each row's sampling */
    int32_t *d_next, *h_next;          /* [max_logits] the drawn token ids */
    bool use_graphs;
    int32_t n_graphs;
    decode_graph graphs[MAX_GRAPHS];
} cuda_backend;

/* Copies an fp32 bias vector (NULL data: zeros) of n values to dst. */
static eng_status upload_bias(cuda_backend *c, const eng_weight *w, int64_t n, float *dst,
                              eng_err *err)
{
    cudaError_t e;
    if (!w->data) {
        e = cudaMemsetAsync(dst, 0, (size_t)n * sizeof(float), c->st);
    } else {
        if (w->dtype != GGUF_DTYPE_F32 || w->ne0 * w->ne1 != n)
            return eng_fail(err, ENG_ERR_UNSUPPORTED, "bias of type %d with %lld values (want "
                            "%lld fp32)", (int)w->dtype, (long long)(w->ne0 * w->ne1),
                            (long long)n);
        e = cudaMemcpyAsync(dst, w->data, (size_t)n * sizeof(float), cudaMemcpyHostToDevice,
                            c->st);
    }
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->st); /* w->data is pageable host memory */
    return e == cudaSuccess ? ENG_OK : cuda_fail(err, "uploading a bias", e);
}

/* Uploads a GGUF weight as stored and dequantises it into dst (rows [row0, row0 + ne1) of a
 * bf16 matrix with ne0 columns). scratch holds at least the raw bytes. */
static eng_status upload_weight(cuda_backend *c, const eng_weight *w, void *dst, void *scratch,
                                eng_err *err)
{
    size_t raw = w->row_bytes * (size_t)w->ne1;
    cudaError_t e = cudaMemcpyAsync(scratch, w->data, raw, cudaMemcpyHostToDevice, c->st);
    if (e != cudaSuccess)
        return cuda_fail(err, "uploading a weight", e);
    if (!kn_dequant_supported((kn_qtype)w->dtype))
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "weight type %d has no GPU dequantiser",
                        (int)w->dtype);
    KN_TRY("dequantising a weight",
           kn_dequant((kn_qtype)w->dtype, scratch, w->ne1, w->ne0, c->act, dst, c->st));
    /* the scratch buffer is reused by the next weight: finish with it first */
    e = cudaStreamSynchronize(c->st);
    return e == cudaSuccess ? ENG_OK : cuda_fail(err, "dequantising a weight", e);
}

static size_t max_raw_bytes(const eng_model *m)
{
    size_t mx = 0;
    const eng_weight *top[] = {&m->tok_embd, &m->output, &m->pos_embd, &m->out_norm,
                               &m->out_norm_b};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        size_t b = top[i]->row_bytes * (size_t)top[i]->ne1;
        mx = b > mx ? b : mx;
    }
    for (int32_t l = 0; l < m->hp.n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up,
                                  &L->w_down, &L->attn_norm, &L->ffn_norm, &L->attn_norm_b,
                                  &L->ffn_norm_b};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t b = ws[i]->row_bytes * (size_t)ws[i]->ne1;
            if (b > mx)
                mx = b;
        }
    }
    return mx;
}

/* Allocates *dst and uploads the fp32 bias w of n values into it; *dst stays NULL when the
 * layer has no such bias (w->data NULL). */
static eng_status upload_opt_bias(cuda_backend *c, const eng_weight *w, int64_t n, float **dst,
                                  const char *what, eng_err *err)
{
    if (!w->data)
        return ENG_OK;
    void *p;
    eng_status st = cuda_dev_alloc(&p, (size_t)n * sizeof(float), what, err);
    if (st != ENG_OK)
        return st;
    *dst = p;
    return upload_bias(c, w, n, *dst, err);
}

/* What the forward pass needs of every layer, checked before anything is allocated: a gate
 * exactly for SwiGLU, LayerNorm biases with LayerNorm. */
static eng_status check_layers(const eng_model *m, eng_err *err)
{
    const bool gated = m->desc->ffn == ENG_ARCH_FFN_SWIGLU;
    const bool layer_norm = m->desc->norm == ENG_ARCH_NORM_LAYER;
    if (layer_norm && !m->out_norm_b.data)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "LayerNorm model without output_norm.bias");
    for (int32_t l = 0; l < m->hp.n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        if ((L->w_gate.data != NULL) != gated)
            return eng_fail(err, ENG_ERR_UNSUPPORTED, "layer %d: the %s FFN %s a gate", l,
                            gated ? "SwiGLU" : "GELU", gated ? "lacks" : "has");
        if (layer_norm && (!L->attn_norm_b.data || !L->ffn_norm_b.data))
            return eng_fail(err, ENG_ERR_UNSUPPORTED, "layer %d: LayerNorm without a bias", l);
    }
    return ENG_OK;
}

static eng_status load_weights(cuda_backend *c, eng_err *err)
{
    const eng_model *m = c->m;
    const eng_hparams *hp = &m->hp;
    const size_t bf = 2, d = (size_t)hp->n_embd, ff = (size_t)hp->n_ff;
    const size_t dq = (size_t)hp->n_head * (size_t)hp->head_dim;
    const size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    void *scratch = NULL;
    eng_status st = cuda_dev_alloc(&scratch, max_raw_bytes(m), "weight upload scratch", err);
    if (st != ENG_OK)
        return st;
#define UP(w, dst) do { if ((st = upload_weight(c, (w), (dst), scratch, err)) != ENG_OK) goto out; } while (0)
#define AL(p, n, what) do { if ((st = cuda_dev_alloc(&(p), (n), (what), err)) != ENG_OK) goto out; } while (0)
/* an optional vector (a LayerNorm bias) in the activation type: p stays NULL without one */
#define UPV(w, p, what) do { if ((w)->data) { AL(p, d * bf, what); UP((w), (p)); } } while (0)
#define UB(w, p, n, what) do { if ((st = upload_opt_bias(c, (w), (int64_t)(n), &(p), (what), err)) != ENG_OK) goto out; } while (0)
    AL(c->tok_embd, (size_t)hp->n_vocab * d * bf, "token embeddings");
    UP(&m->tok_embd, c->tok_embd);
    if (m->pos_embd.data) { /* dequantised like the token embeddings, whatever its type */
        c->n_pos = m->pos_embd.ne1;
        AL(c->pos_embd, (size_t)c->n_pos * d * bf, "position embeddings");
        UP(&m->pos_embd, c->pos_embd);
    }
    AL(c->out_norm, d * bf, "output norm");
    UP(&m->out_norm, c->out_norm);
    UPV(&m->out_norm_b, c->out_norm_b, "output norm bias");
    if (hp->tied_output) {
        c->output = c->tok_embd;
    } else {
        AL(c->output, (size_t)hp->n_vocab * d * bf, "output head");
        UP(&m->output, c->output);
    }
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        cuda_layer *G = &c->layers[l];
        AL(G->attn_norm, d * bf, "attention norm");
        UP(&L->attn_norm, G->attn_norm);
        UPV(&L->attn_norm_b, G->attn_norm_b, "attention norm bias");
        AL(G->ffn_norm, d * bf, "FFN norm");
        UP(&L->ffn_norm, G->ffn_norm);
        UPV(&L->ffn_norm_b, G->ffn_norm_b, "FFN norm bias");
        /* Q|K|V fused; StarCoder's file fuses them already (wq/wk/wv are row views of it) */
        AL(G->wqkv, (dq + 2 * kvd) * d * bf, "QKV weights");
        UP(&L->wq, G->wqkv);
        UP(&L->wk, (char *)G->wqkv + dq * d * bf);
        UP(&L->wv, (char *)G->wqkv + (dq + kvd) * d * bf);
        if (m->desc->attn_bias) {
            void *b;
            AL(b, (dq + 2 * kvd) * sizeof(float), "QKV biases");
            G->bqkv = b;
#define UQ(w, off, n) do { if ((st = upload_bias(c, (w), (int64_t)(n), G->bqkv + (off), err)) != ENG_OK) goto out; } while (0)
            UQ(&L->bq, 0, dq);
            UQ(&L->bk, dq, kvd);
            UQ(&L->bv, dq + kvd, kvd);
#undef UQ
        }
        AL(G->wo, d * dq * bf, "attention output weights");
        UP(&L->wo, G->wo);
        UB(&L->bo, G->bo, d, "attention output bias");
        if (c->gated) {
            AL(G->wgu, 2 * ff * d * bf, "gate/up weights");
            UP(&L->w_gate, G->wgu);
            UP(&L->w_up, (char *)G->wgu + ff * d * bf);
        } else {
            AL(G->wgu, ff * d * bf, "up weights");
            UP(&L->w_up, G->wgu);
        }
        UB(&L->b_up, G->b_up, ff, "up bias");
        AL(G->wdown, d * ff * bf, "down weights");
        UP(&L->w_down, G->wdown);
        UB(&L->b_down, G->b_down, d, "down bias");
    }
#undef UP
#undef AL
#undef UPV
#undef UB
out:
    cudaFree(scratch);
    return st;
}

/* Step buffers for up to max_tokens tokens and max_logits logits rows. */
static eng_status alloc_step(cuda_backend *c, int32_t max_pos, eng_err *err)
{
    const eng_hparams *hp = &c->m->hp;
    const size_t T = (size_t)c->max_tokens, L = (size_t)c->max_logits, bf = 2;
    const size_t d = (size_t)hp->n_embd, ff = (size_t)hp->n_ff;
    const size_t dq = (size_t)hp->n_head * (size_t)hp->head_dim;
    const size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    eng_status st = ENG_OK;
    void *p;
#define AL(field, n, what) do { if ((st = cuda_dev_alloc(&p, (n), (what), err)) != ENG_OK) return st; field = p; } while (0)
    AL(c->resid, T * d * sizeof(float), "residual stream");
    AL(c->xn, T * d * bf, "normed activations");
    AL(c->tmp, T * d * bf, "projection output");
    AL(c->qkv, T * (dq + 2 * kvd) * bf, "QKV activations");
    AL(c->att, T * dq * bf, "attention output");
    AL(c->gu, T * (c->gated ? 2 : 1) * ff * bf, "FFN activations");
    AL(c->xsel, L * d * bf, "rows for logits");
    AL(c->logits, L * (size_t)c->n_vocab_out * sizeof(float), "logits");
    AL(c->samp_scratch, L * (size_t)c->n_vocab_out * sizeof(float), "sampling scratch");
    if (c->comm) {
        const size_t stride = (size_t)c->shard->n_vocab_stride;
        AL(c->logits_local, L * stride * sizeof(float), "this rank's logits");
        AL(c->gathered, (size_t)c->shard->n_ranks * L * stride * sizeof(float),
           "every rank's logits");
        AL(c->tmp32, T * d * sizeof(float), "row-parallel partial sums");
        AL(c->d_iota, T * sizeof(int32_t), "row indices");
    }
    AL(c->d_samp, L * sizeof(kn_sample_params), "sampling parameters");
    AL(c->d_next, L * sizeof(int32_t), "sampled tokens");
    c->len_cap = (max_pos + KN_DECODE_SPLIT - 1) / KN_DECODE_SPLIT * KN_DECODE_SPLIT;
    if (c->len_cap < 2 * KN_DECODE_SPLIT)
        c->len_cap = 2 * KN_DECODE_SPLIT;
    /* tables cover the largest bucket; entries past a sequence's length stay -1 */
    c->max_blocks_per_seq = (c->len_cap + c->base.block_size - 1) / c->base.block_size;
    /* tokens, pos, slots, logits_idx [T each]; seq_lens [T]; q_start [T+1]; tables */
    c->n_ints = 6 * T + 1 + T * (size_t)c->max_blocks_per_seq;
    AL(c->d_ints, c->n_ints * sizeof(int32_t), "batch metadata");
#undef AL
    cudaError_t e = cudaMallocHost((void **)&c->h_ints, c->n_ints * sizeof(int32_t));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&c->h_logits, L * (size_t)c->n_vocab_out * sizeof(float));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&c->h_samp, L * sizeof(kn_sample_params));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&c->h_next, L * sizeof(int32_t));
    if (e == cudaSuccess && !(c->h_perm = malloc(T * sizeof(int32_t))))
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory for the staging row order");
    if (e != cudaSuccess)
        return cuda_fail(err, "pinned host buffers", e);
    if (c->d_iota) {
        for (size_t i = 0; i < T; i++)
            c->h_perm[i] = (int32_t)i;
        e = cudaMemcpy(c->d_iota, c->h_perm, T * sizeof(int32_t), cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            return cuda_fail(err, "uploading row indices", e);
    }
    /* the sizing call checks its arguments like a launch: real buffers stand in for the
     * caches (not allocated yet), nothing is read */
    kn_attn_args a = {.q_dtype = c->act, .kv_dtype = KVT, .q = c->qkv,
                      .q_stride = (int64_t)(dq + 2 * kvd), .k_cache = c->qkv, .v_cache = c->qkv,
                      .n_slots = 1, .block_tables = c->d_ints, .seq_lens = c->d_ints,
                      .n_seq = (int32_t)T, .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                      .head_dim = hp->head_dim, .block_size = c->base.block_size,
                      .max_seq_len = c->len_cap, .max_blocks_per_seq = c->max_blocks_per_seq,
                      .n_swa = hp->n_swa, .scale = 1.0f, .out = c->att,
                      .out_stride = (int64_t)dq};
    /* decode splits into KN_DECODE_SPLIT-long partitions: the most is T sequences at len_cap */
    KN_TRY("sizing the attention workspace",
           kn_paged_attn_decode_workspace(&a, c->len_cap / KN_DECODE_SPLIT, &c->attn_ws_bytes));
    if (c->attn_ws_bytes > 0 &&
        (st = cuda_dev_alloc(&c->attn_ws, c->attn_ws_bytes, "attention workspace", err)) != ENG_OK)
        return st;
    return ENG_OK;
}

static eng_status alloc_kv(cuda_backend *c, int64_t kv_bytes, int32_t min_blocks, eng_err *err)
{
    const eng_hparams *hp = &c->m->hp;
    size_t kvd = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    size_t block_bytes = 2 * 2 * (size_t)hp->n_layer * (size_t)c->base.block_size * kvd;
    if (kv_bytes == 0) { /* 90% of what is free once weights and step buffers are in */
        size_t free_b = 0, total_b = 0;
        cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
        if (e != cudaSuccess)
            return cuda_fail(err, "cudaMemGetInfo", e);
        kv_bytes = (int64_t)(free_b / 10 * 9);
    }
    int64_t n_blocks = kv_bytes / (int64_t)block_bytes - 1; /* one block for padding rows */
    if (n_blocks > (1 << 28))
        n_blocks = 1 << 28;
    if (n_blocks < min_blocks)
        return eng_fail(err, ENG_ERR_INVALID,
                        "GPU KV budget of %lld bytes holds %lld blocks; one sequence of the "
                        "maximum length needs %d", (long long)kv_bytes, (long long)n_blocks,
                        min_blocks);
    c->base.n_blocks = (int32_t)n_blocks;
    c->pad_block = (int32_t)n_blocks;
    c->n_slots = (n_blocks + 1) * c->base.block_size;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const size_t bytes = (size_t)c->n_slots * kvd * 2;
        eng_status st = cuda_dev_alloc(&c->layers[l].k_cache, bytes, "K cache", err);
        if (st == ENG_OK)
            st = cuda_dev_alloc(&c->layers[l].v_cache, bytes, "V cache", err);
        if (st != ENG_OK)
            return st;
    }
    return ENG_OK;
}

/* The batch's metadata, as device views into d_ints, laid out for attention's two kernels. The
 * engine lists each sequence's tokens contiguously and in position order; staging reorders the
 * rows so that the decode rows come first, each as a one-row "sequence" of its own for the
 * decode kernel (seq_lens = its position + 1, its sequence's block table), then the prompt rows
 * of each sequence that has some, for the prefill kernel (q_start gives their rows). Every other
 * op works row by row, so the order changes nothing but which kernel sees a row; the logits rows
 * keep the engine's order (logits_idx maps them to the moved rows). */
typedef struct step_meta {
    int32_t *tokens, *pos, *slots, *logits_idx, *seq_lens, *q_start, *tables;
    int32_t n_tokens, n_logits; /* padding rows included */
    int32_t n_seqs;             /* decode rows + prefill sequences, padding included */
    int32_t n_dec;              /* the first n_dec rows (and "sequences") are decode rows */
    int32_t max_q_len, max_len; /* over the prefill sequences */
    int32_t max_dec_len;        /* over the decode rows */
    bool all_decode;            /* n_dec == n_seqs */
} step_meta;

/* Decode batch buckets: powers of two up to 8, then multiples of 8 up to 64, then of 32; never
 * above cap. Padding rows cost little in a decode step, which reads the weights either way. */
static int32_t batch_bucket(int32_t n, int32_t cap)
{
    int32_t b = 1;
    if (n <= 8)
        while (b < n)
            b *= 2;
    else
        b = n <= 64 ? (n + 7) / 8 * 8 : (n + 31) / 32 * 32;
    return b < cap ? b : cap;
}

/* Context buckets: powers of two from 2 * KN_DECODE_SPLIT up to len_cap. */
static int32_t len_bucket(int32_t len, int32_t cap)
{
    int32_t b = 2 * KN_DECODE_SPLIT;
    while (b < len && b < cap)
        b *= 2;
    return b < cap ? b : cap;
}

/* Whether row t (of sequence s, q_len rows in this step) takes the decode arithmetic: a
 * generated or drafted token (position past the prompt), or the one row of its sequence when
 * the engine does not say where prompts end. */
static bool is_decode_row(const eng_batch *b, int32_t t, int32_t s, int32_t q_len)
{
    return b->prompt_len ? b->pos[t] >= b->prompt_len[s] : q_len == 1;
}

/* Copies the first blocks of sequence s's table, those covering positions [0, len), into row
 * `row` of the staged tables and marks the rest unused. */
static void stage_table(cuda_backend *c, const eng_batch *b, int32_t s, int32_t len,
                        int32_t *tables, int32_t row)
{
    const int32_t bs = c->base.block_size, mb = c->max_blocks_per_seq;
    const int32_t nb = (len + bs - 1) / bs;
    ENG_ASSERT(nb <= mb);
    int32_t *dst = tables + (size_t)row * (size_t)mb;
    memcpy(dst, b->block_tables[s], sizeof(int32_t) * (size_t)nb);
    for (int32_t i = nb; i < mb; i++)
        dst[i] = -1;
}

/* Lays the batch out in the pinned staging buffer (decode rows first, see step_meta; padded with
 * pad decode rows to n_pad of them when the step is all decode and n_pad > b->n_seqs) and
 * copies it over in one go, with the sampling rows. */
static eng_status stage_batch(cuda_backend *c, const eng_batch *b, int32_t n_pad,
                              const eng_sample_row *rows, step_meta *dm, eng_err *err)
{
    const int32_t T = c->max_tokens, bs = c->base.block_size, mb = c->max_blocks_per_seq;
    int32_t *h = c->h_ints;
    int32_t *tokens = h, *pos = h + T, *slots = h + 2 * T, *lidx = h + 3 * T;
    int32_t *seq_lens = h + 4 * T, *q_start = h + 5 * T, *tables = h + 6 * T + 1;
    /* a rank embeds its own vocabulary rows: ids relative to them, the others out of range
     * (kn_embed gives them zero rows) */
    const int32_t vocab0 = c->shard ? c->shard->vocab0 : 0;
    /* pass 1: check the layout, count the decode rows and the sequences with prompt rows;
     * q_start (staged later) serves as scratch for each sequence's first row */
    int32_t n_dec = 0, n_pre = 0;
    int32_t n_runs = 0; /* each sequence's rows are one run, sequences in ascending order */
    for (int32_t t = 0; t < b->n_tokens; t++) {
        const int32_t s = b->seq[t];
        ENG_ASSERT(s >= 0 && s < b->n_seqs);
        if (t > 0 && b->seq[t - 1] == s) {
            ENG_ASSERT(b->pos[t - 1] == b->pos[t] - 1);
        } else {
            ENG_ASSERT(t == 0 || b->seq[t - 1] < s);
            n_runs++;
        }
    }
    ENG_ASSERT(n_runs == b->n_seqs);
    int32_t *perm = c->h_perm; /* [n_tokens] engine row -> staged row */
    for (int32_t t = 0, s0 = 0; t < b->n_tokens; s0 = t) {
        const int32_t s = b->seq[t];
        while (t < b->n_tokens && b->seq[t] == s)
            t++;
        bool any_prompt = false;
        for (int32_t u = s0; u < t; u++) {
            const bool dec = is_decode_row(b, u, s, t - s0);
            perm[u] = dec ? -1 : -2;
            n_dec += dec;
            any_prompt |= !dec;
        }
        n_pre += any_prompt;
    }
    /* pass 2: decode rows at [0, n_dec) in engine order, then each sequence's prompt rows */
    dm->max_q_len = 0;
    dm->max_len = 0;
    dm->max_dec_len = 0;
    int32_t nd = 0, np = n_dec, ps = n_dec; /* next decode row, next prompt row, next sequence */
    for (int32_t t = 0, s0 = 0; t < b->n_tokens; s0 = t) {
        const int32_t s = b->seq[t];
        while (t < b->n_tokens && b->seq[t] == s)
            t++;
        int32_t first = -1, last_pos = -1;
        for (int32_t u = s0; u < t; u++) {
            const int32_t r = perm[u] == -1 ? nd++ : np++;
            perm[u] = r;
            const int32_t p = b->pos[u];
            tokens[r] = b->tokens[u] - vocab0;
            pos[r] = p;
            slots[r] = b->block_tables[s][p / bs] * bs + p % bs;
            if (r < n_dec) { /* a one-row sequence of its own */
                seq_lens[r] = p + 1;
                q_start[r] = r;
                stage_table(c, b, s, p + 1, tables, r);
                dm->max_dec_len = p + 1 > dm->max_dec_len ? p + 1 : dm->max_dec_len;
            } else {
                first = first < 0 ? r : first;
                last_pos = p;
            }
        }
        if (first >= 0) { /* the prompt rows run [first, np) */
            q_start[ps] = first;
            seq_lens[ps] = last_pos + 1;
            stage_table(c, b, s, last_pos + 1, tables, ps);
            dm->max_q_len = np - first > dm->max_q_len ? np - first : dm->max_q_len;
            dm->max_len = last_pos + 1 > dm->max_len ? last_pos + 1 : dm->max_len;
            ps++;
        }
    }
    ENG_ASSERT(nd == n_dec && np == b->n_tokens && ps == n_dec + n_pre);
    for (int32_t i = 0; i < b->n_logits; i++)
        lidx[i] = perm[b->logits_idx[i]];
    /* padding (all-decode graph steps only): token 0 at position 0 in the padding block */
    const int32_t n_real = n_dec + n_pre;
    const int32_t n_seqs = n_pre == 0 && n_pad > n_real ? n_pad : n_real;
    const int32_t n_tok = b->n_tokens + (n_seqs - n_real);
    for (int32_t s = n_real, t = b->n_tokens; s < n_seqs; s++, t++) {
        tokens[t] = -vocab0;
        pos[t] = 0;
        slots[t] = c->pad_block * bs;
        seq_lens[s] = 1;
        q_start[s] = t;
        lidx[b->n_logits + (s - n_real)] = t;
        tables[(size_t)s * (size_t)mb] = c->pad_block;
        for (int32_t i = 1; i < mb; i++)
            tables[(size_t)s * (size_t)mb + (size_t)i] = -1;
    }
    dm->n_dec = n_pre == 0 ? n_seqs : n_dec;
    dm->all_decode = n_pre == 0;
    q_start[n_seqs] = n_tok;
    const int32_t n_logits = b->n_logits + (n_seqs - n_real);
    size_t n = (size_t)(6 * T + 1) + (size_t)n_seqs * (size_t)mb;
    cudaError_t e = cudaMemcpyAsync(c->d_ints, h, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    c->st);
    if (e == cudaSuccess && rows) {
        for (int32_t i = 0; i < n_logits; i++) {
            const eng_sampler_params *sp = i < b->n_logits ? &rows[i].p : NULL;
            c->h_samp[i] = (kn_sample_params){
                .temperature = sp ? sp->temperature : 0.0f, .top_k = sp ? sp->top_k : 0,
                .top_p = sp ? sp->top_p : 1.0f, .seed = sp ? sp->seed : 0,
                .step = i < b->n_logits ? rows[i].step : 0};
        }
        e = cudaMemcpyAsync(c->d_samp, c->h_samp, sizeof(kn_sample_params) * (size_t)n_logits,
                            cudaMemcpyHostToDevice, c->st);
    }
    if (e != cudaSuccess)
        return cuda_fail(err, "uploading batch metadata", e);
    int32_t *d = c->d_ints;
    *dm = (step_meta){.tokens = d, .pos = d + T, .slots = d + 2 * T, .logits_idx = d + 3 * T,
                      .seq_lens = d + 4 * T, .q_start = d + 5 * T, .tables = d + 6 * T + 1,
                      .n_tokens = n_tok, .n_seqs = n_seqs, .n_logits = n_logits,
                      .n_dec = dm->n_dec, .max_q_len = dm->max_q_len, .max_len = dm->max_len,
                      .max_dec_len = dm->max_dec_len, .all_decode = dm->all_decode};
    return ENG_OK;
}

/* resid += add (add NULL: nothing to add), then xn = norm(resid): LayerNorm with its bias for
 * the families that have one, else RMSNorm. */
static kn_status norm_into_xn(cuda_backend *c, const void *add, const void *w, const void *bias,
                              int64_t T)
{
    const eng_hparams *hp = &c->m->hp;
    if (c->m->desc->norm == ENG_ARCH_NORM_LAYER)
        return kn_layernorm(c->act, c->resid, add, w, bias, c->xn, T, hp->n_embd, hp->norm_eps,
                            c->st);
    return kn_rmsnorm(c->act, c->resid, add, w, c->xn, T, hp->n_embd, hp->norm_eps, c->st);
}

/* Tensor parallelism: buf (count elements of dt, device) = its sum over the group's ranks, as
 * stream work on c->st; nothing without a group. */
static eng_status group_sum(cuda_backend *c, void *buf, size_t count, eng_comm_dtype dt,
                            eng_err *err)
{
    if (!c->comm)
        return ENG_OK;
    return c->comm->ops->all_reduce_sum(c->comm, c->shard->rank, buf, count, dt, c->st, err);
}

/* tmp [T, d] = x [T, k] (stride ldx) times w [d, k]: a row-parallel projection (attention
 * output, down). With a group, this rank's k columns give a partial product, summed over the
 * ranks in fp32 and rounded to the activation type once, as one GPU's GEMM rounds its fp32
 * accumulator once: the ranks then differ from one GPU only in the order of fp32 additions
 * (summing bf16 partials instead would round each rank's part, about 2^-9 of it, and flipped
 * greedy tokens of the tiny presets against one GPU). The cost: fp32 messages, twice bf16's. */
static eng_status row_parallel(cuda_backend *c, const char *what, const void *x, int64_t ldx,
                               const void *w, int64_t k, int64_t T, eng_err *err)
{
    const int64_t d = c->m->hp.n_embd;
    if (!c->comm) {
        KN_TRY(what, kn_gemm_run(c->gemm, c->st, c->act, x, ldx, w, k, c->act, c->tmp, d, T, d, k,
                                 1.0f, 0.0f));
        return ENG_OK;
    }
    KN_TRY(what, kn_gemm_run(c->gemm, c->st, c->act, x, ldx, w, k, KN_DTYPE_F32, c->tmp32, d, T,
                             d, k, 1.0f, 0.0f));
    eng_status st = group_sum(c, c->tmp32, (size_t)(T * d), ENG_COMM_F32, err);
    if (st != ENG_OK)
        return st;
    /* the embedding gather over the identity rows: an fp32 -> activation-type conversion */
    KN_TRY(what, kn_embed(KN_DTYPE_F32, c->tmp32, T, d, c->d_iota, T, c->act, c->tmp, c->st));
    return ENG_OK;
}

/* The logits of the n rows in xsel into c->logits [n, n_vocab_out]: the head's GEMM, or with a
 * group, this rank's vocabulary slice (n_vocab_stride wide), every rank's gathered, and each
 * rank's columns copied to its vocab0 (the last rank's padding left out). */
static eng_status enqueue_logits(cuda_backend *c, int32_t n, eng_err *err)
{
    const eng_hparams *hp = &c->m->hp;
    const int64_t d = hp->n_embd;
    if (!c->comm) {
        KN_TRY("logits", kn_gemm_run(c->gemm, c->st, c->act, c->xsel, d, c->output, d,
                                     KN_DTYPE_F32, c->logits, hp->n_vocab, n, hp->n_vocab, d,
                                     1.0f, 0.0f));
        return ENG_OK;
    }
    const eng_shard *sh = c->shard;
    const size_t stride = (size_t)sh->n_vocab_stride, count = (size_t)n * stride;
    KN_TRY("logits", kn_gemm_run(c->gemm, c->st, c->act, c->xsel, d, c->output, d, KN_DTYPE_F32,
                                 c->logits_local, (int64_t)stride, n, hp->n_vocab, d, 1.0f,
                                 0.0f));
    eng_status st = c->comm->ops->all_gather(c->comm, sh->rank, c->logits_local, c->gathered,
                                             count, ENG_COMM_F32, c->st, err);
    if (st != ENG_OK)
        return st;
    for (int q = 0; q < sh->n_ranks; q++) { /* [q][n][stride] -> columns [q*stride, ...) */
        const size_t v0 = (size_t)q * stride, total = (size_t)sh->n_vocab_total;
        if (v0 >= total)
            break;
        const size_t nv = total - v0 < stride ? total - v0 : stride;
        cudaError_t e = cudaMemcpy2DAsync(c->logits + v0, total * sizeof(float),
                                          c->gathered + (size_t)q * count,
                                          stride * sizeof(float), nv * sizeof(float),
                                          (size_t)n, cudaMemcpyDeviceToDevice, c->st);
        if (e != cudaSuccess)
            return cuda_fail(err, "placing the gathered logits", e);
    }
    return ENG_OK;
}

/* The FFN block of layer G over xn into tmp (the next norm adds tmp to the residual stream):
 * down(silu(gate) * up), or down(gelu(up + b_up)) + b_down for the GELU families. */
static eng_status enqueue_ffn(cuda_backend *c, const cuda_layer *G, int64_t T, eng_err *err)
{
    const int64_t d = c->m->hp.n_embd, ff = c->m->hp.n_ff;
    if (c->gated) {
        KN_TRY("gate/up", kn_gemm_run(c->gemm, c->st, c->act, c->xn, d, G->wgu, d, c->act, c->gu,
                                      2 * ff, T, 2 * ff, d, 1.0f, 0.0f));
        KN_TRY("SwiGLU", kn_swiglu(c->act, c->gu, (char *)c->gu + ff * 2, 2 * ff, c->gu, 2 * ff, T,
                                   ff, c->st));
    } else {
        KN_TRY("up", kn_gemm_run(c->gemm, c->st, c->act, c->xn, d, G->wgu, d, c->act, c->gu, ff, T,
                                 ff, d, 1.0f, 0.0f));
        if (G->b_up)
            KN_TRY("up bias", kn_bias_add(c->act, c->gu, ff, G->b_up, T, ff, c->st));
        KN_TRY("GELU", kn_gelu(c->act, c->gu, c->gu, T * ff, c->st));
    }
    const int64_t ld = c->gated ? 2 * ff : ff; /* SwiGLU's output sits in the gate half */
    eng_status st = row_parallel(c, "down", c->gu, ld, G->wdown, ff, T, err);
    if (st != ENG_OK)
        return st;
    if (G->b_down)
        KN_TRY("down bias", kn_bias_add(c->act, c->tmp, d, G->b_down, T, d, c->st));
    return ENG_OK;
}

/* Enqueues one forward step over the staged batch on c->st, then sampling when asked. Nothing
 * here waits for the GPU or allocates, so it can be captured into a graph. lb: the decode
 * context bucket (decode attention's grid), ignored for prefill. */
static eng_status enqueue_step(cuda_backend *c, const step_meta *dm, int32_t lb, bool sample,
                               eng_err *err)
{
    const eng_model *m = c->m;
    const eng_hparams *hp = &m->hp;
    const int64_t T = dm->n_tokens, d = hp->n_embd;
    const int64_t dq = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kvd = (int64_t)hp->n_head_kv * hp->head_dim, qkvd = dq + 2 * kvd;
    /* decode rows: the first n_dec one-row sequences; prefill: the sequences after them, whose
     * q_start entries index the same row space (step_meta) */
    const int32_t mb = c->max_blocks_per_seq, n_pre = dm->n_seqs - dm->n_dec;
    kn_attn_args a = {.q_dtype = c->act, .kv_dtype = KVT, .q_stride = qkvd, .n_slots = c->n_slots,
                      .block_tables = dm->tables, .max_blocks_per_seq = mb,
                      .seq_lens = dm->seq_lens, .q_start = NULL, .n_seq = dm->n_dec,
                      .n_head = hp->n_head, .n_head_kv = hp->n_head_kv,
                      .head_dim = hp->head_dim, .block_size = c->base.block_size,
                      .max_seq_len = lb, .n_swa = hp->n_swa,
                      .scale = 1.0f / sqrtf((float)hp->head_dim), .out = c->att, .out_stride = dq};
    kn_attn_args pa = a;
    pa.block_tables = dm->tables + (size_t)dm->n_dec * (size_t)mb;
    pa.seq_lens = dm->seq_lens + dm->n_dec;
    pa.q_start = dm->q_start + dm->n_dec;
    pa.n_seq = n_pre;
    pa.max_seq_len = dm->max_len;
    pa.max_q_len = dm->max_q_len;

    /* grid comments live with the launchers; here: one call per op over all T tokens */
    KN_TRY("embedding", kn_embed(c->act, c->tok_embd, hp->n_vocab, d, dm->tokens, T, KN_DTYPE_F32,
                                 c->resid, c->st));
    /* a group: one rank holds each token's row, the others gave zeros (exact in fp32) */
    eng_status st = group_sum(c, c->resid, (size_t)(T * d), ENG_COMM_F32, err);
    if (st != ENG_OK)
        return st;
    if (c->pos_embd) /* StarCoder: + the learned row of each token's position */
        KN_TRY("position embedding", kn_embed_add(c->act, c->pos_embd, c->n_pos, d, dm->pos, T,
                                                  c->resid, c->st));
    for (int32_t l = 0; l < hp->n_layer; l++) {
        cuda_layer *G = &c->layers[l];
        /* resid += previous layer's FFN output; xn = norm(resid) */
        KN_TRY("attention norm", norm_into_xn(c, l ? c->tmp : NULL, G->attn_norm, G->attn_norm_b,
                                              T));
        KN_TRY("QKV projection", kn_gemm_run(c->gemm, c->st, c->act, c->xn, d, G->wqkv, d, c->act,
                                             c->qkv, qkvd, T, qkvd, d, 1.0f, 0.0f));
        if (G->bqkv) /* q|k|v += bq|bk|bv before RoPE */
            KN_TRY("QKV bias", kn_bias_add(c->act, c->qkv, qkvd, G->bqkv, T, qkvd, c->st));
        if (m->desc->pos != ENG_ARCH_POS_LEARNED)
            KN_TRY("RoPE", kn_rope(c->act, c->qkv, qkvd, dm->pos, T, hp->n_head + hp->n_head_kv,
                                   hp->head_dim, hp->rope_base, hp->rope_freq_scale,
                                   m->rope_freqs,
                                   m->desc->pos == ENG_ARCH_POS_ROPE_NEOX ? KN_ROPE_NEOX
                                                                           : KN_ROPE_INTERLEAVED,
                                   c->st));
        KN_TRY("KV write", kn_kv_write(c->act, (char *)c->qkv + dq * 2, (char *)c->qkv + (dq + kvd) * 2,
                                       qkvd, dm->slots, T, kvd, KVT, G->k_cache, G->v_cache,
                                       c->n_slots, c->st));
        a.q = pa.q = c->qkv;
        a.k_cache = pa.k_cache = G->k_cache;
        a.v_cache = pa.v_cache = G->v_cache;
        if (dm->n_dec > 0)
            KN_TRY("decode attention", kn_paged_attn_decode(&a, lb / KN_DECODE_SPLIT, c->attn_ws,
                                                            c->attn_ws_bytes, c->st));
        if (n_pre > 0)
            KN_TRY("prefill attention", kn_prefill_attn_tc(&pa, c->st));
        /* row-parallel: the ranks' partial products summed, then the bias once */
        if ((st = row_parallel(c, "attention output", c->att, dq, G->wo, dq, T, err)) != ENG_OK)
            return st;
        if (G->bo)
            KN_TRY("attention output bias", kn_bias_add(c->act, c->tmp, d, G->bo, T, d, c->st));
        KN_TRY("FFN norm", norm_into_xn(c, c->tmp, G->ffn_norm, G->ffn_norm_b, T));
        if ((st = enqueue_ffn(c, G, T, err)) != ENG_OK)
            return st;
    }
    if (dm->n_logits == 0)
        return ENG_OK;
    KN_TRY("output norm", norm_into_xn(c, c->tmp, c->out_norm, c->out_norm_b, T));
    /* gather the rows that want logits (the embedding gather over xn as its table) */
    KN_TRY("logit rows", kn_embed(c->act, c->xn, T, d, dm->logits_idx, dm->n_logits, c->act, c->xsel,
                                  c->st));
    if ((st = enqueue_logits(c, dm->n_logits, err)) != ENG_OK)
        return st;
    if (sample) /* every rank of a group draws the same tokens from the same logits */
        KN_TRY("sampling", kn_sample(c->logits, c->n_vocab_out, dm->n_logits, c->n_vocab_out, c->d_samp,
                                     c->d_next, c->samp_scratch, c->st));
    return ENG_OK;
}

/* Stops using graphs after a capture the driver refused: the step runs eagerly instead. */
static void graphs_off(cuda_backend *c, const char *what, cudaError_t e)
{
    fprintf(stderr, "serval: CUDA graph %s failed (%s); decode steps run without graphs\n", what,
            cudaGetErrorString(e));
    (void)cudaGetLastError(); /* a refused capture leaves an error behind; it is handled */
    c->use_graphs = false;
}

/* Runs the staged decode step through its bucket's graph, capturing it on first use.
 * *ran is false when graphs turned out to be unavailable (the caller runs it eagerly). */
static eng_status run_graph(cuda_backend *c, const step_meta *dm, int32_t lb, bool *ran,
                            eng_err *err)
{
    *ran = false;
    decode_graph *g = NULL;
    for (int32_t i = 0; i < c->n_graphs && !g; i++)
        if (c->graphs[i].nb == dm->n_seqs && c->graphs[i].lb == lb)
            g = &c->graphs[i];
    if (!g) {
        if (c->n_graphs == MAX_GRAPHS)
            return ENG_OK; /* every bucket pair is cached long before this; run eagerly */
        cudaGraph_t graph = NULL;
        cudaError_t e = cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal);
        if (e != cudaSuccess) {
            graphs_off(c, "capture", e);
            return ENG_OK;
        }
        eng_status st = enqueue_step(c, dm, lb, true, err);
        e = cudaStreamEndCapture(c->st, &graph);
        if (st != ENG_OK) {
            if (graph)
                cudaGraphDestroy(graph);
            return st;
        }
        cudaGraphExec_t exec = NULL;
        if (e == cudaSuccess)
            e = cudaGraphInstantiate(&exec, graph, 0);
        if (graph)
            cudaGraphDestroy(graph);
        if (e != cudaSuccess) {
            graphs_off(c, "capture", e);
            return ENG_OK;
        }
        g = &c->graphs[c->n_graphs++];
        *g = (decode_graph){.nb = dm->n_seqs, .lb = lb, .exec = exec};
    }
    cudaError_t e = cudaGraphLaunch(g->exec, c->st);
    if (e != cudaSuccess)
        return cuda_fail(err, "launching a decode graph", e);
    *ran = true;
    return ENG_OK;
}

static eng_status cuda_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                               int32_t *tokens, float *logits, eng_err *err)
{
    cuda_backend *c = (cuda_backend *)be;
    cudaError_t de = cudaSetDevice(c->dev); /* the calling thread may have another current */
    if (de != cudaSuccess)
        return cuda_fail(err, "selecting the backend's GPU", de);
    if (b->n_tokens <= 0 || b->n_tokens > c->max_tokens || b->n_logits > c->max_logits ||
        b->n_seqs > c->max_tokens)
        return eng_fail(err, ENG_ERR_INVALID, "batch of %d tokens / %d logits exceeds the "
                        "backend's step buffers (%d / %d)", b->n_tokens, b->n_logits,
                        c->max_tokens, c->max_logits);
    for (int32_t i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= c->n_vocab_out)
            return eng_fail(err, ENG_ERR_INVALID, "token id %d at index %d is outside [0, %d)",
                            b->tokens[i], i, c->n_vocab_out);
    const bool sample = rows && tokens;
    /* a decode step (one token per sequence, each wanting its next token) may use a graph */
    bool decode = b->n_tokens == b->n_seqs && b->n_logits == b->n_seqs;
    for (int32_t i = 0; decode && i < b->n_logits; i++)
        decode = b->logits_idx[i] == i;
    const bool graph = decode && sample && c->use_graphs;
    const int32_t cap = c->max_tokens < c->max_logits ? c->max_tokens : c->max_logits;
    step_meta dm = {0};
    eng_status st = stage_batch(c, b, graph ? batch_bucket(b->n_seqs, cap) : 0,
                                sample ? rows : NULL, &dm, err);
    if (st != ENG_OK)
        return st;
    const int32_t lb = len_bucket(dm.max_dec_len, c->len_cap);
    bool ran = false;
    /* a one-token prompt row takes the prefill kernel, which the graphs do not hold */
    if (graph && dm.all_decode && (st = run_graph(c, &dm, lb, &ran, err)) != ENG_OK)
        return st;
    if (!ran && (st = enqueue_step(c, &dm, lb, sample, err)) != ENG_OK)
        return st;
    cudaError_t e = cudaSuccess;
    const size_t lbytes = (size_t)b->n_logits * (size_t)c->n_vocab_out * sizeof(float);
    if (sample && b->n_logits > 0)
        e = cudaMemcpyAsync(c->h_next, c->d_next, sizeof(int32_t) * (size_t)b->n_logits,
                            cudaMemcpyDeviceToHost, c->st);
    if (e == cudaSuccess && logits && b->n_logits > 0)
        e = cudaMemcpyAsync(c->h_logits, c->logits, lbytes, cudaMemcpyDeviceToHost, c->st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->st); /* the step's one wait: for the token ids */
    if (e != cudaSuccess)
        return cuda_fail(err, "forward step", e);
    if (sample)
        memcpy(tokens, c->h_next, sizeof(int32_t) * (size_t)b->n_logits);
    if (logits)
        memcpy(logits, c->h_logits, lbytes);
    return ENG_OK;
}

static void cuda_free(eng_backend *be)
{
    cuda_backend *c = (cuda_backend *)be;
    if (!c)
        return;
    (void)cudaSetDevice(c->dev);
    if (c->st)
        cudaStreamSynchronize(c->st);
    for (int32_t i = 0; i < c->n_graphs; i++)
        cudaGraphExecDestroy(c->graphs[i].exec);
    if (c->layers) {
        for (int32_t l = 0; l < c->m->hp.n_layer; l++) {
            cuda_layer *G = &c->layers[l];
            void *ps[] = {G->attn_norm, G->ffn_norm, G->attn_norm_b, G->ffn_norm_b, G->wqkv,
                          G->bqkv, G->wo, G->bo, G->wgu, G->b_up, G->wdown, G->b_down,
                          G->k_cache, G->v_cache};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                cudaFree(ps[i]);
        }
        free(c->layers);
    }
    if (c->output != c->tok_embd)
        cudaFree(c->output);
    void *ps[] = {c->tok_embd, c->out_norm, c->out_norm_b, c->pos_embd, c->resid, c->xn, c->tmp,
                  c->qkv, c->att, c->gu, c->xsel, c->logits, c->attn_ws, c->d_ints, c->d_samp,
                  c->d_next, c->samp_scratch, c->logits_local, c->gathered,
                  c->tmp32, c->d_iota};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        cudaFree(ps[i]);
    cudaFreeHost(c->h_ints);
    cudaFreeHost(c->h_logits);
    cudaFreeHost(c->h_samp);
    cudaFreeHost(c->h_next);
    free(c->h_perm);
    kn_gemm_free(c->gemm);
    if (c->st)
        cudaStreamDestroy(c->st);
    free(c);
}

static const eng_backend_ops cuda_ops = {.name = "cuda", .forward = cuda_forward,
                                         .free = cuda_free};

static eng_status cuda_create_here(const eng_model *m, const eng_shard *shard, eng_comm *comm,
                                   int dev, const eng_backend_config *cfg, eng_backend **out,
                                   eng_err *err);

/* The backend on device dev, of the whole model m (shard and comm NULL) or of one rank's
 * (m the rank's model, shard its split, comm its group). Leaves the calling thread's current
 * device as it found it. */
static eng_status cuda_create(const eng_model *m, const eng_shard *shard, eng_comm *comm,
                              int dev, const eng_backend_config *cfg, eng_backend **out,
                              eng_err *err)
{
    *out = NULL;
    int prev = 0;
    if (cudaGetDevice(&prev) != cudaSuccess)
        prev = 0;
    cudaError_t de = cudaSetDevice(dev);
    if (de != cudaSuccess)
        return cuda_fail(err, "selecting the GPU", de);
    eng_status st = cuda_create_here(m, shard, comm, dev, cfg, out, err);
    (void)cudaSetDevice(prev);
    return st;
}

eng_status eng_backend_cuda_gpu_check(int dev, eng_err *err)
{
    const int n = kn_device_count();
    if (n < 1)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "no CUDA device is visible");
    if (dev < 0 || dev >= n)
        return eng_fail(err, ENG_ERR_INVALID, "GPU %d does not exist: %d visible (ids 0..%d)",
                        dev, n, n - 1);
    return ENG_OK;
}

#ifndef SERVAL_HAVE_NCCL
eng_status eng_backend_cuda_tp_create(const eng_model *m, const eng_backend_config *cfg,
                                      eng_backend **out, eng_err *err)
{
    (void)m;
    *out = NULL;
    return eng_fail(err, ENG_ERR_UNSUPPORTED, "tensor parallelism over %d GPUs needs NCCL, and "
                    "this build found none (install libnccl-dev and rebuild)", cfg->tp);
}
#endif

eng_status eng_backend_cuda_create(const eng_model *m, const eng_backend_config *cfg,
                                   eng_backend **out, eng_err *err)
{
    *out = NULL;
    if (cfg->tp > 1)
        return eng_backend_cuda_tp_create(m, cfg, out, err);
    const int dev = cfg->n_gpus > 0 ? cfg->gpus[0] : 0;
    if (cfg->n_gpus > 1)
        return eng_fail(err, ENG_ERR_INVALID, "%d GPUs for one engine without tensor "
                        "parallelism (tp 1 takes one)", cfg->n_gpus);
    eng_status st = eng_backend_cuda_gpu_check(dev, err);
    if (st != ENG_OK)
        return st;
    return cuda_create(m, NULL, NULL, dev, cfg, out, err);
}

eng_status eng_backend_cuda_rank_create(const eng_shard_model *sm, eng_comm *comm, int dev,
                                        const eng_backend_config *cfg, eng_backend **out,
                                        eng_err *err)
{
    ENG_ASSERT(comm && comm->n_ranks == sm->shard.n_ranks);
    return cuda_create(&sm->model, &sm->shard, comm, dev, cfg, out, err);
}

static eng_status cuda_create_here(const eng_model *m, const eng_shard *shard, eng_comm *comm,
                                   int dev, const eng_backend_config *cfg, eng_backend **out,
                                   eng_err *err)
{
    const int64_t kv_bytes = cfg->kv_bytes;
    const int32_t block_size = cfg->block_size, min_blocks = cfg->min_blocks,
                  max_pos = cfg->max_pos;
    const eng_hparams *hp = &m->hp;
    if (!kn_attn_supported(hp->head_dim))
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "the CUDA backend cannot run this model "
                        "(architecture %s): head size %d (it has attention kernels for 16, 32, "
                        "64, 128, 256)", hp->arch_name, hp->head_dim);
    if (m->desc->pos == ENG_ARCH_POS_LEARNED && (!m->pos_embd.data || max_pos > m->pos_embd.ne1))
        return eng_fail(err, ENG_ERR_INVALID, "sequences of up to %d positions, but the model "
                        "learned %lld", max_pos, (long long)m->pos_embd.ne1);
    eng_status st = check_layers(m, err);
    if (st != ENG_OK)
        return st;
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    c->base.ops = &cuda_ops;
    c->base.block_size = block_size;
    c->m = m;
    c->dev = dev;
    c->shard = shard;
    c->comm = comm;
    c->n_vocab_out = shard ? shard->n_vocab_total : hp->n_vocab;
    c->max_tokens = cfg->max_tokens;
    c->max_logits = cfg->max_logits;
    c->use_graphs = cfg->cuda_graphs;
    c->act = cfg->cuda_fp16 ? KN_DTYPE_F16 : KN_DTYPE_BF16;
    c->gated = m->desc->ffn == ENG_ARCH_FFN_SWIGLU;
    cudaError_t e = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking);
    if (e != cudaSuccess)
        st = cuda_fail(err, "creating a stream", e);
    kn_status ks = st == ENG_OK ? kn_gemm_create(&c->gemm) : KN_OK;
    if (ks != KN_OK)
        st = cuda_kn_fail(err, "creating the cuBLAS handle", ks);
    if (st == ENG_OK && !(c->layers = calloc((size_t)hp->n_layer, sizeof *c->layers)))
        st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    if (st == ENG_OK)
        st = load_weights(c, err);
    if (st == ENG_OK)
        st = alloc_step(c, max_pos, err);
    if (st == ENG_OK)
        st = alloc_kv(c, kv_bytes, min_blocks, err);
    if (st != ENG_OK) {
        cuda_free(&c->base);
        return st;
    }
    *out = &c->base;
    return ENG_OK;
}
