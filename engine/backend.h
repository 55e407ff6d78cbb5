/* backend.h — what the engine needs from a compute backend: run one mixed batch over the
 * paged KV pool it owns and sample the next token of every sequence that reached its end.
 * The CPU backend is engine/backend_cpu.c; the CUDA backend plugs in through the same table. */
#ifndef SERVAL_BACKEND_H
#define SERVAL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu_forward.h"
#include "model.h"
#include "sampler.h"
#include "status.h"

/* A batch: the same layout for every backend (see eng_cpu_batch in cpu_forward.h). */
typedef eng_cpu_batch eng_batch;

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

/* The CPU backend: n_threads threads, a KV pool of as many blocks as kv_bytes holds (at
 * least min_blocks, else ENG_ERR_INVALID), positions up to max_pos. The model is borrowed.
 * *out is owned by the caller: free it with be->ops->free(be). */
eng_status eng_backend_cpu_create(const eng_model *m, int64_t kv_bytes, int32_t block_size,
                                  int32_t min_blocks, int32_t max_pos, int n_threads,
                                  eng_backend **out, eng_err *err);

/* The CUDA backend (builds with SERVAL_HAVE_CUDA only): weights dequantised to bf16 on the
 * GPU, step buffers for max_tokens tokens and max_logits logits rows, and a KV pool of
 * kv_bytes (0: 90% of the GPU memory still free after weights and buffers), one block of which
 * it keeps for padding. graphs: replay decode steps from CUDA graphs (false: launch every
 * kernel every step, for debugging and comparison). fp16: weights and activations in fp16
 * instead of bf16 (more mantissa, less range; the residual stream is fp32 either way).
 * ENG_ERR_UNSUPPORTED without a visible device or kernels for the model's shapes. */
eng_status eng_backend_cuda_create(const eng_model *m, int64_t kv_bytes, int32_t block_size,
                                   int32_t min_blocks, int32_t max_pos, int32_t max_tokens,
                                   int32_t max_logits, bool graphs, bool fp16, eng_backend **out,
                                   eng_err *err);

#endif
