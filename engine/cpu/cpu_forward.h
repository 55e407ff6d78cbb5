/* cpu_forward.h — the CPU backend: the decoder forward pass of every family with a
 * descriptor (Llama, Qwen2, StarCoder, StarCoder2: whatever the model's descriptor, arch.h,
 * asks for) over quantised weights for a batch of tokens from any number of sequences, reading
 * and writing K/V through per-sequence block tables into a paged fp16 pool; and a
 * single-sequence convenience context on top. */
#ifndef SERVAL_CPU_FORWARD_H
#define SERVAL_CPU_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h" /* eng_batch */
#include "comm.h"
#include "model.h"
#include "shard.h"
#include "status.h"

/* ---- paged KV pool ---------------------------------------------------------------------- */

/* K and V for n_blocks blocks of block_size positions, every layer: [n_layer, n_blocks *
 * block_size, n_head_kv * head_dim] fp16 each. Which block a sequence uses is decided by the
 * caller (engine/batch/kv_cache.h); this is only the memory. */
typedef struct eng_cpu_kv eng_cpu_kv;

eng_status eng_cpu_kv_create(const eng_model *m, int32_t n_blocks, int32_t block_size,
                             eng_cpu_kv **out, eng_err *err);
void eng_cpu_kv_free(eng_cpu_kv *kv);
/* Bytes one block takes (K and V, all layers): size a pool from a memory budget with it. */
size_t eng_cpu_kv_block_bytes(const eng_model *m, int32_t block_size);
int32_t eng_cpu_kv_n_blocks(const eng_cpu_kv *kv);
int32_t eng_cpu_kv_block_size(const eng_cpu_kv *kv);

/* ---- batched forward -------------------------------------------------------------------- */

/* Threads, scratch buffers and limits for running batches of one model. */
typedef struct eng_cpu_runner eng_cpu_runner;

/* max_pos: the largest position any sequence will reach + 1 (sizes attention scratch); at
 * most the model's n_ctx_train (learned position embeddings have no row beyond it). Returns
 * ENG_ERR_UNSUPPORTED for a descriptor whose ops the pass lacks, naming the architecture. */
eng_status eng_cpu_runner_create(const eng_model *m, int32_t max_pos, int n_threads,
                                 eng_cpu_runner **out, eng_err *err);
void eng_cpu_runner_free(eng_cpu_runner *r);

/* Tensor parallelism: makes r (created over &sm->model of a shard, model/shard.h) one rank of
 * comm's group, whose other ranks run the same batches with their own runners and KV pools,
 * each forward called from its own thread. The pass then sums the rank's partial products
 * (embedding, attention output, FFN down) over the group and gathers the logits rows: every
 * rank's eng_cpu_forward returns the whole model's logits in `logits` (n_vocab_total wide;
 * NULL on ranks that do not want them), and a failed collective fails the call with the
 * group's error (ENG_ERR_CANCELLED). s and comm are borrowed and must outlive r. */
eng_status eng_cpu_runner_set_group(eng_cpu_runner *r, const eng_shard *s, eng_comm *comm,
                                    eng_err *err);

/* The tensor-parallel CPU backend (backend_cpu_tp.c), which eng_backend_cpu_create builds when
 * cfg->tp > 1: cfg->tp shards, ranks 1.. on their own threads, threads split across ranks. */
eng_status eng_backend_cpu_tp_create(const eng_model *m, const eng_backend_config *cfg,
                                     eng_backend **out, eng_err *err);

/* Runs the batch. logits (caller-owned, [n_logits, n_vocab]) receives the logits of the
 * tokens named by logits_idx, in that order. Returns ENG_ERR_INVALID for an out-of-range
 * token id (nothing is computed then); positions and block tables are the engine's own and
 * are checked by assertions. Results for a token do not depend on what else is in the batch
 * or on the thread count. */
eng_status eng_cpu_forward(eng_cpu_runner *r, eng_cpu_kv *kv, const eng_batch *b,
                           float *logits, eng_err *err);

/* ---- one sequence ----------------------------------------------------------------------- */

/* A single sequence with its own runner and KV pool: tests and checks only (every front end,
 * `serval complete` included, runs through the engine). */
typedef struct eng_cpu_ctx eng_cpu_ctx;

/* Creates a context for up to n_ctx positions run by n_threads threads. The model must
 * outlive the context. */
eng_status eng_cpu_ctx_create(const eng_model *m, int32_t n_ctx, int n_threads,
                              eng_cpu_ctx **out, eng_err *err);
void eng_cpu_ctx_free(eng_cpu_ctx *c);

/* Evaluates tokens[0..n) at positions [pos, pos + n) and appends them to the KV cache.
 * logits (caller-owned) receives [n_vocab] floats for the last token, or [n, n_vocab] when
 * `all` is true; it may be NULL when no logits are needed. Returns ENG_ERR_INVALID for an
 * out-of-range token id and ENG_ERR_TOO_LONG when the context would overflow (nothing is
 * evaluated then). */
eng_status eng_cpu_ctx_eval(eng_cpu_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                            bool all, eng_err *err);

/* Positions evaluated so far; forgetting them (truncate to keep the first n). */
int32_t eng_cpu_ctx_pos(const eng_cpu_ctx *c);
int32_t eng_cpu_ctx_n_ctx(const eng_cpu_ctx *c);
void eng_cpu_ctx_truncate(eng_cpu_ctx *c, int32_t n_keep);

#endif
