/* cpu_forward.h — the CPU reference backend for one sequence: a Llama-family forward pass
 * over quantised weights with a contiguous fp16 KV cache. (The paged, batched cache belongs to
 * the continuous-batching engine.) */
#ifndef SERVAL_CPU_FORWARD_H
#define SERVAL_CPU_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "status.h"

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

/* Positions evaluated so far; forgetting them (reset, or truncate to keep the first n). */
int32_t eng_cpu_ctx_pos(const eng_cpu_ctx *c);
int32_t eng_cpu_ctx_n_ctx(const eng_cpu_ctx *c);
void eng_cpu_ctx_truncate(eng_cpu_ctx *c, int32_t n_keep);

#endif
