/* backend.h — what the engine needs from a compute backend: run one mixed batch over the
 * paged KV pool it owns and sample the next token of every sequence that reached its end.
 * The CPU backend is engine/cpu/backend_cpu.c, the CUDA backend engine/cuda/backend_cuda.c;
 * both are created from one eng_backend_config and read the model's architecture
 * descriptor (model/arch.h), answering ENG_ERR_UNSUPPORTED for what they cannot run. */
#ifndef SERVAL_BACKEND_H
#define SERVAL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"
#include "status.h"

/* One forward step, the same layout for every backend: n_tokens tokens, each at its own
 * position of its own sequence. Token t attends to positions [0, pos[t]] of sequence seq[t],
 * whose K/V live in the blocks listed by block_tables[seq[t]] (entry i holds positions
 * [i*block_size, (i+1)*block_size)); the K/V of every token of the batch are written before any
 * attention runs, so a prompt chunk and the decodes of other sequences can share one step. All
 * arrays are owned by the caller (host memory). */
typedef struct eng_batch {
    int32_t n_tokens;
    const int32_t *tokens;              /* [n_tokens] token ids (validated) */
    const int32_t *pos;                 /* [n_tokens] position within its sequence */
    const int32_t *seq;                 /* [n_tokens] index into block_tables */
    const int32_t *const *block_tables; /* [n_seqs] block ids per sequence */
    int32_t n_seqs;
    const int32_t *logits_idx;          /* [n_logits] ascending token indices wanting logits */
    int32_t n_logits;
    /* [n_seqs] each sequence's prompt length, or NULL. Rows at positions >= it are generated or
     * drafted tokens: a backend with separate prefill and decode arithmetic (CUDA) gives them
     * the decode arithmetic whatever else shares the step, so a sequence's tokens do not depend
     * on its batch or on speculation. NULL: only one-row sequences count as decode rows. */
    const int32_t *prompt_len;
} eng_batch;

typedef struct eng_backend eng_backend;

/* One logits row to sample: its request's parameters and the draw's index within the request
 * (tokens generated so far), which with the seed picks the uniform draw (eng_sample). */
typedef struct eng_sample_row {
    eng_sampler_params p;
    uint64_t step;
} eng_sample_row;

typedef struct eng_backend_ops {
    const char *name;
    /* Runs the batch. For each row i < b->n_logits: tokens[i] = eng_sample(that row's logits,
     * rows[i]) when rows and tokens are given, and logits (host, [b->n_logits, n_vocab]), when
     * not NULL, receives the row itself (checks and tests; on a GPU it costs a copy the engine
     * never asks for). Block ids index the backend's KV pool of n_blocks blocks. */
    eng_status (*forward)(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                          int32_t *tokens, float *logits, eng_err *err);
    void (*free)(eng_backend *be);
} eng_backend_ops;

struct eng_backend {
    const eng_backend_ops *ops;
    int32_t n_blocks;   /* KV pool size, in blocks */
    int32_t block_size; /* positions per block */
};

/* What a backend is created with. Zero means "the backend's default" where a default is
 * stated. */
typedef struct eng_backend_config {
    int64_t kv_bytes;   /* KV pool budget. 0: CPU 1 GiB is the engine's default (required
                         * here); CUDA: 90% of the GPU memory still free after weights and
                         * buffers, one block of which it keeps for padding */
    int32_t block_size; /* positions per KV block (> 0) */
    int32_t min_blocks; /* a pool smaller than this is ENG_ERR_INVALID (one full sequence) */
    int32_t max_pos;    /* the largest position any sequence reaches + 1 */
    int32_t max_tokens; /* most tokens in one batch (CUDA step buffers; CPU grows on demand) */
    int32_t max_logits; /* most logits rows in one batch (CUDA) */
    int n_threads;      /* CPU threads; 0: the online CPUs */
    int tp;             /* tensor-parallel ranks the model is split across (model/shard.h);
                         * 0 or 1: none. CPU: each rank a thread group of n_threads / tp
                         * threads with its own KV pool (kv_bytes is all ranks' together) */
    const int *gpus;    /* CUDA: the devices, one per rank (n_gpus == tp, distinct), or one
                         * for tp 1; NULL (n_gpus 0): devices 0 .. tp-1. Borrowed. */
    int n_gpus;
    bool cuda_graphs;   /* CUDA: replay decode steps from CUDA graphs (false: launch every
                         * kernel every step, for debugging and comparison) */
    bool cuda_fp16;     /* CUDA: fp16 weights and activations instead of bf16 (more mantissa,
                         * less range; the residual stream is fp32 either way) */
} eng_backend_config;

/* The CPU backend: cfg->n_threads threads, a KV pool of as many blocks as cfg->kv_bytes holds;
 * with cfg->tp > 1, that many ranks over the in-process communicator (cpu/backend_cpu_tp.c),
 * ENG_ERR_INVALID or ENG_ERR_UNSUPPORTED for a degree the model does not split into (the
 * message names why and the degrees it allows). The model is borrowed. *out is owned by the
 * caller: free it with be->ops->free(be). */
eng_status eng_backend_cpu_create(const eng_model *m, const eng_backend_config *cfg,
                                  eng_backend **out, eng_err *err);

/* The CUDA backend (builds with SERVAL_HAVE_CUDA only): weights dequantised to bf16 (fp16) on
 * the GPU, step buffers for cfg->max_tokens tokens and cfg->max_logits rows. ENG_ERR_UNSUPPORTED
 * without a visible device or kernels for the model's architecture and shapes; ENG_ERR_INVALID
 * for a GPU id that does not exist. With cfg->tp > 1, one rank per GPU over NCCL
 * (cuda/backend_cuda_tp.c; builds with NCCL only), kv_bytes shared among the ranks. */
eng_status eng_backend_cuda_create(const eng_model *m, const eng_backend_config *cfg,
                                   eng_backend **out, eng_err *err);

#endif
