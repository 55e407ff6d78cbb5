/* encoder_cuda.c — the `bert` encoder's forward pass on a CUDA GPU, step for step the one in
 * engine/cpu/cpu_encoder.c: token + token-type 0 + position rows summed in fp32 and
 * LayerNorm'd; per layer the fused Q|K|V product and biases, K/V written into a scratch paged
 * cache (each sequence in its own whole blocks, an identity block table) so the bidirectional
 * prefill attention kernel reads them, the output product and bias, residual + LayerNorm
 * (post-norm), the FFN (up, bias, exact erf GELU, down, bias), residual + LayerNorm; then mean
 * or CLS pooling and L2 normalisation (kn_pool_l2). The fp32 residual sum of a post-norm layer
 * starts from the previous LayerNorm's 16-bit output, widened by a gather with identity
 * indices (kn_embed), since the LayerNorm kernel keeps only its input sum in fp32. */
#include "encoder_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "bias_add.h"
#include "cuda_util.h"
#include "dequant.h"
#include "embed.h"
#include "gelu.h"
#include "gemm.h"
#include "kv_write.h"
#include "layernorm.h"
#include "paged_attention.h"
#include "pool_l2.h"
#include "prefill_attention.h"

enum { ENC_BLOCK = 16 }; /* KV scratch block size: each sequence starts on a block */

typedef struct enc_layer {
    void *wqkv;           /* [3 d, d] act: wq | wk | wv rows */
    float *bqkv;          /* [3 d] */
    void *wo;             /* [d, d] act */
    float *bo;            /* [d] */
    void *ln1_w, *ln1_b;  /* [d] act: attn_output_norm */
    void *w_up;           /* [ff, d] act */
    float *b_up;          /* [ff] */
    void *w_down;         /* [d, ff] act */
    float *b_down;        /* [d] */
    void *ln2_w, *ln2_b;  /* [d] act: layer_output_norm */
} enc_layer;

struct cuda_encoder {
    const emb_model *m;
    int device;
    kn_dtype act;
    cudaStream_t st;
    kn_gemm *gemm;
    void *tok, *pos, *type; /* embedding tables as stored (F32/F16): [rows, d] */
    kn_dtype tok_dt, pos_dt, type_dt;
    void *eln_w, *eln_b;    /* [d] act: token_embd_norm */
    enc_layer *layers;      /* [n_layer] */
    /* per-batch scratch, for up to cap_tokens tokens and cap_slots KV slots */
    int32_t cap_tokens, cap_slots, cap_ints, cap_seq;
    float *resid;      /* [T, d] fp32 */
    void *x, *h;       /* [T, d] act: a layer's input, after the attention block */
    void *qkv;         /* [T, 3 d] act */
    void *att, *proj;  /* [T, d] act */
    void *ff;          /* [T, ff] act */
    void *k_cache, *v_cache; /* [cap_slots, d] act */
    int32_t *ints;     /* device copy of h_ints */
    int32_t *h_ints;   /* host: tokens, positions, zeros, iota, slots | seq_len, q_start, tables */
    float *pooled;     /* [cap_seq, d] fp32 */
};

/* Every message of the encoder starts with this (cuda_util.h's helpers take it in `what`). */
#define ENC "encoder on GPU: "

/* *dst = the weight's bytes as stored (F32/F16 embedding tables: kn_embed reads them). */
static eng_status upload_raw(const eng_weight *w, void **dst, kn_dtype *dt, eng_err *err)
{
    if (w->dtype != GGUF_DTYPE_F32 && w->dtype != GGUF_DTYPE_F16)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, ENC "embedding table of type %d", (int)w->dtype);
    *dt = w->dtype == GGUF_DTYPE_F32 ? KN_DTYPE_F32 : KN_DTYPE_F16;
    const size_t bytes = w->row_bytes * (size_t)w->ne1;
    eng_status st = cuda_dev_alloc(dst, bytes, ENC "an embedding table", err);
    if (st != ENG_OK)
        return st;
    CUDA_TRY(ENC "uploading an embedding table",
             cudaMemcpy(*dst, w->data, bytes, cudaMemcpyHostToDevice));
    return ENG_OK;
}

/* Dequantises w (F32/F16 as loaded) into dst + row0 rows of e->act with w->ne0 columns;
 * scratch holds at least w's raw bytes. Synchronous (scratch is reused). */
static eng_status upload_weight(cuda_encoder *e, const eng_weight *w, void *dst, int64_t row0,
                                void *scratch, eng_err *err)
{
    const size_t raw = w->row_bytes * (size_t)w->ne1;
    CUDA_TRY(ENC "uploading a weight",
             cudaMemcpy(scratch, w->data, raw, cudaMemcpyHostToDevice));
    char *d = (char *)dst + (size_t)row0 * (size_t)w->ne0 * kn_dtype_size(e->act);
    KN_TRY(ENC "dequantising a weight",
           kn_dequant((kn_qtype)w->dtype, scratch, w->ne1, w->ne0, e->act, d, e->st));
    CUDA_TRY(ENC "dequantising a weight", cudaStreamSynchronize(e->st));
    return ENG_OK;
}

/* *dst = a new fp32 copy of the bias w (n values). */
static eng_status upload_bias(const eng_weight *w, int64_t n, float **dst, eng_err *err)
{
    if (!w->data || w->dtype != GGUF_DTYPE_F32 || w->ne0 * w->ne1 != n)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, ENC "a bias that is not %lld fp32 values",
                        (long long)n);
    eng_status st = cuda_dev_alloc((void **)dst, (size_t)n * sizeof(float), ENC "a bias", err);
    if (st != ENG_OK)
        return st;
    CUDA_TRY(ENC "uploading a bias",
             cudaMemcpy(*dst, w->data, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    return ENG_OK;
}

static eng_status upload_matrix(cuda_encoder *e, const eng_weight *w, void **dst, void *scratch,
                                eng_err *err)
{
    eng_status st = cuda_dev_alloc(dst, (size_t)(w->ne0 * w->ne1) * kn_dtype_size(e->act),
                                   ENC "a weight", err);
    return st != ENG_OK ? st : upload_weight(e, w, *dst, 0, scratch, err);
}

static eng_status upload_layer(cuda_encoder *e, const eng_layer *L, enc_layer *G, void *scratch,
                               eng_err *err)
{
    const emb_model *m = e->m;
    const int64_t d = m->n_embd, ff = m->n_ff;
    const size_t es = kn_dtype_size(e->act);
    eng_status st;
    if ((st = cuda_dev_alloc(&G->wqkv, (size_t)(3 * d * d) * es, ENC "Q|K|V weights", err)) ||
        (st = upload_weight(e, &L->wq, G->wqkv, 0, scratch, err)) ||
        (st = upload_weight(e, &L->wk, G->wqkv, d, scratch, err)) ||
        (st = upload_weight(e, &L->wv, G->wqkv, 2 * d, scratch, err)))
        return st;
    if ((st = cuda_dev_alloc((void **)&G->bqkv, (size_t)(3 * d) * sizeof(float),
                             ENC "Q|K|V biases", err)))
        return st;
    const eng_weight *bs[3] = {&L->bq, &L->bk, &L->bv};
    for (int i = 0; i < 3; i++) {
        if (!bs[i]->data || bs[i]->dtype != GGUF_DTYPE_F32 || bs[i]->ne0 * bs[i]->ne1 != d)
            return eng_fail(err, ENG_ERR_UNSUPPORTED, ENC "Q/K/V bias not fp32");
        CUDA_TRY(ENC "uploading a bias", cudaMemcpy(G->bqkv + i * d, bs[i]->data,
                                                    (size_t)d * sizeof(float),
                                                    cudaMemcpyHostToDevice));
    }
    if ((st = upload_matrix(e, &L->wo, &G->wo, scratch, err)) ||
        (st = upload_bias(&L->bo, d, &G->bo, err)) ||
        (st = upload_matrix(e, &L->attn_norm, &G->ln1_w, scratch, err)) ||
        (st = upload_matrix(e, &L->attn_norm_b, &G->ln1_b, scratch, err)) ||
        (st = upload_matrix(e, &L->w_up, &G->w_up, scratch, err)) ||
        (st = upload_bias(&L->b_up, ff, &G->b_up, err)) ||
        (st = upload_matrix(e, &L->w_down, &G->w_down, scratch, err)) ||
        (st = upload_bias(&L->b_down, d, &G->b_down, err)) ||
        (st = upload_matrix(e, &L->ffn_norm, &G->ln2_w, scratch, err)) ||
        (st = upload_matrix(e, &L->ffn_norm_b, &G->ln2_b, scratch, err)))
        return st;
    return ENG_OK;
}

static void free_scratch(cuda_encoder *e)
{
    void *bufs[] = {e->resid, e->x, e->h, e->qkv, e->att, e->proj, e->ff, e->k_cache,
                    e->v_cache, e->ints, e->pooled};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
    e->resid = e->pooled = NULL;
    e->x = e->h = e->qkv = e->att = e->proj = e->ff = e->k_cache = e->v_cache = NULL;
    e->ints = NULL;
    free(e->h_ints);
    e->h_ints = NULL;
    e->cap_tokens = e->cap_slots = e->cap_ints = e->cap_seq = 0;
}

void cuda_encoder_free(cuda_encoder *e)
{
    if (!e)
        return;
    cudaSetDevice(e->device);
    if (e->st)
        cudaStreamSynchronize(e->st);
    free_scratch(e);
    if (e->layers) {
        for (int32_t l = 0; l < e->m->n_layer; l++) {
            enc_layer *G = &e->layers[l];
            void *ps[] = {G->wqkv, G->bqkv, G->wo, G->bo, G->ln1_w, G->ln1_b, G->w_up,
                          G->b_up, G->w_down, G->b_down, G->ln2_w, G->ln2_b};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                cudaFree(ps[i]);
        }
        free(e->layers);
    }
    cudaFree(e->tok), cudaFree(e->pos), cudaFree(e->type);
    cudaFree(e->eln_w), cudaFree(e->eln_b);
    kn_gemm_free(e->gemm);
    if (e->st)
        cudaStreamDestroy(e->st);
    free(e);
}

static size_t max_raw_bytes(const emb_model *m)
{
    size_t mx = 0;
    for (int32_t l = 0; l < m->n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_up, &L->w_down,
                                  &L->attn_norm, &L->attn_norm_b, &L->ffn_norm, &L->ffn_norm_b};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            const size_t b = ws[i]->row_bytes * (size_t)ws[i]->ne1;
            mx = b > mx ? b : mx;
        }
    }
    const size_t b = m->embd_ln_w.row_bytes * (size_t)m->embd_ln_w.ne1;
    return b > mx ? b : mx;
}

static eng_status create_body(cuda_encoder *e, eng_err *err)
{
    const emb_model *m = e->m;
    if (!kn_attn_supported(m->head_dim))
        return eng_fail(err, ENG_ERR_UNSUPPORTED, ENC "head size %d (the attention kernels "
                        "take 16, 32, 64, 128, 256)", m->head_dim);
    CUDA_TRY(ENC "selecting the device", cudaSetDevice(e->device));
    CUDA_TRY(ENC "creating a stream", cudaStreamCreateWithFlags(&e->st, cudaStreamNonBlocking));
    KN_TRY(ENC "creating the cuBLAS handle", kn_gemm_create(&e->gemm));
    eng_status st;
    if ((st = upload_raw(&m->tok_embd, &e->tok, &e->tok_dt, err)) ||
        (st = upload_raw(&m->pos_embd, &e->pos, &e->pos_dt, err)) ||
        (st = upload_raw(&m->type_embd, &e->type, &e->type_dt, err)))
        return st;
    void *scratch = NULL;
    if ((st = cuda_dev_alloc(&scratch, max_raw_bytes(m), ENC "the upload buffer", err)))
        return st;
    e->layers = calloc((size_t)m->n_layer, sizeof *e->layers);
    if (!e->layers)
        st = eng_fail(err, ENG_ERR_NOMEM, ENC "out of memory");
    if (!st && !(st = upload_matrix(e, &m->embd_ln_w, &e->eln_w, scratch, err)))
        st = upload_matrix(e, &m->embd_ln_b, &e->eln_b, scratch, err);
    for (int32_t l = 0; !st && l < m->n_layer; l++)
        st = upload_layer(e, &m->layers[l], &e->layers[l], scratch, err);
    cudaFree(scratch);
    return st;
}

eng_status cuda_encoder_create(const emb_model *m, int device, bool fp16, cuda_encoder **out,
                               eng_err *err)
{
    *out = NULL;
    cuda_encoder *e = calloc(1, sizeof *e);
    if (!e)
        return eng_fail(err, ENG_ERR_NOMEM, ENC "out of memory");
    e->m = m;
    e->device = device;
    e->act = fp16 ? KN_DTYPE_F16 : KN_DTYPE_BF16;
    eng_status st = create_body(e, err);
    if (st != ENG_OK) {
        cuda_encoder_free(e);
        return st;
    }
    *out = e;
    return ENG_OK;
}

/* Grows the scratch to T tokens, n_slots KV slots, n_ints staged ints, n_seq texts. */
static eng_status reserve(cuda_encoder *e, int32_t T, int32_t n_slots, int32_t n_ints,
                          int32_t n_seq, eng_err *err)
{
    if (T <= e->cap_tokens && n_slots <= e->cap_slots && n_ints <= e->cap_ints &&
        n_seq <= e->cap_seq)
        return ENG_OK;
    CUDA_TRY(ENC "finishing the last batch", cudaStreamSynchronize(e->st));
    const int32_t ct = T > e->cap_tokens ? T : e->cap_tokens;
    const int32_t cs = n_slots > e->cap_slots ? n_slots : e->cap_slots;
    const int32_t ci = n_ints > e->cap_ints ? n_ints : e->cap_ints;
    const int32_t cq = n_seq > e->cap_seq ? n_seq : e->cap_seq;
    free_scratch(e);
    const size_t t = (size_t)ct, d = (size_t)e->m->n_embd, es = kn_dtype_size(e->act);
    eng_status st;
    if ((st = cuda_dev_alloc((void **)&e->resid, t * d * sizeof(float), ENC "the residual",
                             err)) ||
        (st = cuda_dev_alloc(&e->x, t * d * es, ENC "activations", err)) ||
        (st = cuda_dev_alloc(&e->h, t * d * es, ENC "activations", err)) ||
        (st = cuda_dev_alloc(&e->qkv, 3 * t * d * es, ENC "Q|K|V", err)) ||
        (st = cuda_dev_alloc(&e->att, t * d * es, ENC "attention output", err)) ||
        (st = cuda_dev_alloc(&e->proj, t * d * es, ENC "activations", err)) ||
        (st = cuda_dev_alloc(&e->ff, t * (size_t)e->m->n_ff * es, ENC "the FFN", err)) ||
        (st = cuda_dev_alloc(&e->k_cache, (size_t)cs * d * es, ENC "the K scratch", err)) ||
        (st = cuda_dev_alloc(&e->v_cache, (size_t)cs * d * es, ENC "the V scratch", err)) ||
        (st = cuda_dev_alloc((void **)&e->ints, (size_t)ci * sizeof(int32_t), ENC "indices",
                             err)) ||
        (st = cuda_dev_alloc((void **)&e->pooled, (size_t)cq * d * sizeof(float),
                             ENC "the output", err))) {
        free_scratch(e);
        return st;
    }
    e->h_ints = malloc((size_t)ci * sizeof(int32_t));
    if (!e->h_ints) {
        free_scratch(e);
        return eng_fail(err, ENG_ERR_NOMEM, ENC "out of memory");
    }
    e->cap_tokens = ct, e->cap_slots = cs, e->cap_ints = ci, e->cap_seq = cq;
    return ENG_OK;
}

/* The product y[T, n] = x[T, k] · W[n, k]^T + b. */
static eng_status linear(cuda_encoder *e, const void *x, const void *W, const float *b,
                         void *y, int64_t T, int64_t n, int64_t k, eng_err *err)
{
    KN_TRY(ENC "a product", kn_gemm_run(e->gemm, e->st, e->act, x, k, W, k, e->act, y, n, T,
                                        n, k, 1.0f, 0.0f));
    KN_TRY(ENC "a bias", kn_bias_add(e->act, y, n, b, T, n, e->st));
    return ENG_OK;
}

/* out = LN(prev + add): resid = prev widened to fp32 (a gather through iota), then
 * kn_layernorm adds `add` into it and normalises. */
static eng_status add_norm(cuda_encoder *e, const void *prev, const void *add, const void *w,
                           const void *b, void *out, const int32_t *iota, int64_t T,
                           eng_err *err)
{
    const int64_t d = e->m->n_embd;
    KN_TRY(ENC "widening the residual",
           kn_embed(e->act, prev, T, d, iota, T, KN_DTYPE_F32, e->resid, e->st));
    KN_TRY(ENC "a LayerNorm", kn_layernorm(e->act, e->resid, add, w, b, out, T, d, e->m->eps,
                                           e->st));
    return ENG_OK;
}

static eng_status forward(cuda_encoder *e, int32_t T, int32_t n_seq, int32_t max_len,
                          int32_t n_slots, int32_t max_blocks, eng_err *err)
{
    const emb_model *m = e->m;
    const int64_t d = m->n_embd, ff = m->n_ff;
    /* e->ints: [T] tokens, [T] positions, [T] zeros, [T] iota, [T] slots, [n_seq] seq_len,
     * [n_seq + 1] q_start, [n_seq, max_blocks] block tables */
    const int32_t *tok = e->ints, *pos = tok + T, *zero = pos + T, *iota = zero + T;
    const int32_t *slots = iota + T, *lens = slots + T, *q_start = lens + n_seq;
    const int32_t *tables = q_start + n_seq + 1;
    eng_status st;

    /* embeddings: token + type 0 + position in fp32 (the CPU's order), then LayerNorm */
    KN_TRY(ENC "the token embedding",
           kn_embed(e->tok_dt, e->tok, m->n_vocab, d, tok, T, KN_DTYPE_F32, e->resid, e->st));
    KN_TRY(ENC "the type embedding",
           kn_embed_add(e->type_dt, e->type, m->n_types, d, zero, T, e->resid, e->st));
    KN_TRY(ENC "the position embedding",
           kn_embed_add(e->pos_dt, e->pos, m->n_ctx, d, pos, T, e->resid, e->st));
    KN_TRY(ENC "the embedding LayerNorm",
           kn_layernorm(e->act, e->resid, NULL, e->eln_w, e->eln_b, e->x, T, d, m->eps, e->st));
    const size_t es = kn_dtype_size(e->act);
    for (int32_t l = 0; l < m->n_layer; l++) {
        const enc_layer *G = &e->layers[l];
        if ((st = linear(e, e->x, G->wqkv, G->bqkv, e->qkv, T, 3 * d, d, err)))
            return st;
        KN_TRY(ENC "writing K/V", kn_kv_write(e->act, (char *)e->qkv + (size_t)d * es,
                                              (char *)e->qkv + 2 * (size_t)d * es, 3 * d, slots,
                                              T, d, e->act, e->k_cache, e->v_cache, n_slots,
                                              e->st));
        kn_attn_args a;
        memset(&a, 0, sizeof a);
        a.q_dtype = a.kv_dtype = e->act;
        a.q = e->qkv, a.q_stride = 3 * d;
        a.k_cache = e->k_cache, a.v_cache = e->v_cache, a.n_slots = n_slots;
        a.block_tables = tables, a.max_blocks_per_seq = max_blocks;
        a.seq_lens = lens, a.q_start = q_start;
        a.n_seq = n_seq, a.n_head = a.n_head_kv = m->n_head, a.head_dim = m->head_dim;
        a.block_size = ENC_BLOCK, a.max_seq_len = max_len, a.max_q_len = max_len;
        a.bidirectional = true;
        a.scale = 1.0f / sqrtf((float)m->head_dim);
        a.out = e->att, a.out_stride = d;
        KN_TRY(ENC "attention", kn_prefill_attn_tc(&a, e->st));
        if ((st = linear(e, e->att, G->wo, G->bo, e->proj, T, d, d, err)) ||
            (st = add_norm(e, e->x, e->proj, G->ln1_w, G->ln1_b, e->h, iota, T, err)) ||
            (st = linear(e, e->h, G->w_up, G->b_up, e->ff, T, ff, d, err)))
            return st;
        KN_TRY(ENC "GELU", kn_gelu_erf(e->act, e->ff, e->ff, T * ff, e->st));
        if ((st = linear(e, e->ff, G->w_down, G->b_down, e->proj, T, d, ff, err)) ||
            (st = add_norm(e, e->h, e->proj, G->ln2_w, G->ln2_b, e->x, iota, T, err)))
            return st;
    }
    KN_TRY(ENC "pooling", kn_pool_l2(e->act, e->x, d, d, q_start, lens, n_seq,
                                     m->pooling == EMB_POOL_CLS ? KN_POOL_MODE_CLS
                                                                : KN_POOL_MODE_MEAN,
                                     e->pooled, e->st));
    return ENG_OK;
}

eng_status cuda_encoder_run(cuda_encoder *e, const int32_t *tokens, const int32_t *seq_len,
                            int32_t n_seq, float *out, eng_err *err)
{
    const emb_model *m = e->m;
    if (n_seq < 1)
        return eng_fail(err, ENG_ERR_INVALID, "encoder: empty batch");
    int64_t T64 = 0, blocks = 0;
    int32_t max_len = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        if (seq_len[s] < 1 || seq_len[s] > m->n_ctx)
            return eng_fail(err, ENG_ERR_INVALID, "encoder: sequence %d has %d tokens (1 to %d)",
                            s, seq_len[s], m->n_ctx);
        T64 += seq_len[s];
        blocks += (seq_len[s] + ENC_BLOCK - 1) / ENC_BLOCK;
        max_len = seq_len[s] > max_len ? seq_len[s] : max_len;
    }
    const int32_t max_blocks = (max_len + ENC_BLOCK - 1) / ENC_BLOCK;
    const int64_t n_ints64 = 5 * T64 + 2 * (int64_t)n_seq + 1 + (int64_t)n_seq * max_blocks;
    if (n_ints64 > INT32_MAX / 2 || blocks * ENC_BLOCK > INT32_MAX / 2)
        return eng_fail(err, ENG_ERR_INVALID, "encoder: a batch of %lld tokens is too large",
                        (long long)T64);
    const int32_t T = (int32_t)T64, n_ints = (int32_t)n_ints64;
    const int32_t n_slots = (int32_t)(blocks * ENC_BLOCK);
    for (int32_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= m->n_vocab)
            return eng_fail(err, ENG_ERR_INVALID, "encoder: token id %d outside the vocabulary",
                            tokens[t]);
    CUDA_TRY(ENC "selecting the device", cudaSetDevice(e->device));
    eng_status st = reserve(e, T, n_slots, n_ints, n_seq, err);
    if (st != ENG_OK)
        return st;
    /* stage the batch's indices (layout: forward's comment) */
    int32_t *h = e->h_ints, *pos = h + T, *zero = pos + T, *iota = zero + T, *slots = iota + T;
    int32_t *lens = slots + T, *q_start = lens + n_seq, *tables = q_start + n_seq + 1;
    memcpy(h, tokens, (size_t)T * sizeof(int32_t));
    int32_t t = 0, block0 = 0;
    q_start[0] = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        const int32_t nb = (seq_len[s] + ENC_BLOCK - 1) / ENC_BLOCK;
        for (int32_t p = 0; p < seq_len[s]; p++, t++) {
            pos[t] = p, zero[t] = 0, iota[t] = t;
            slots[t] = block0 * ENC_BLOCK + p;
        }
        lens[s] = seq_len[s];
        q_start[s + 1] = q_start[s] + seq_len[s];
        for (int32_t j = 0; j < max_blocks; j++)
            tables[(size_t)s * (size_t)max_blocks + (size_t)j] = j < nb ? block0 + j : 0;
        block0 += nb;
    }
    CUDA_TRY(ENC "uploading the batch",
             cudaMemcpyAsync(e->ints, h, (size_t)n_ints * sizeof(int32_t), cudaMemcpyHostToDevice,
                             e->st));
    st = forward(e, T, n_seq, max_len, n_slots, max_blocks, err);
    /* h_ints is pageable and read by the copy above: wait before returning, error or not */
    cudaError_t ce = cudaStreamSynchronize(e->st);
    if (st != ENG_OK)
        return st;
    if (ce != cudaSuccess)
        return cuda_fail(err, ENC "running the batch", ce);
    CUDA_TRY(ENC "reading the embeddings",
             cudaMemcpy(out, e->pooled, (size_t)n_seq * (size_t)m->n_embd * sizeof(float),
                        cudaMemcpyDeviceToHost));
    return ENG_OK;
}
