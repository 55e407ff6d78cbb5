/* cpu_encoder.h — the `bert` encoder on the CPU (cpu_encoder.c): packed whole sequences in,
 * pooled L2-normalised vectors out. */
#ifndef SERVAL_CPU_ENCODER_H
#define SERVAL_CPU_ENCODER_H

#include <stdint.h>

#include "embed_impl.h"
#include "status.h"

typedef struct cpu_encoder cpu_encoder;

/* An encoder over m (borrowed: it must outlive the encoder) with n_threads threads (>= 1).
 * Scratch grows to the largest batch run. *out owned by the caller: cpu_encoder_free. */
eng_status cpu_encoder_create(const emb_model *m, int n_threads, cpu_encoder **out,
                              eng_err *err);
void cpu_encoder_free(cpu_encoder *e);

/* Runs n_seq sequences, seq_len[s] tokens each (1 .. n_ctx), packed back to back in tokens
 * (ids < n_vocab), each attending only to itself; out[n_seq, n_embd] (caller-owned) receives
 * each sequence's pooled, L2-normalised state. A sequence's result does not depend on the
 * others in the batch. ENG_ERR_INVALID for bad lengths or ids, ENG_ERR_NOMEM. Not reentrant:
 * one run at a time per encoder. */
eng_status cpu_encoder_run(cpu_encoder *e, const int32_t *tokens, const int32_t *seq_len,
                           int32_t n_seq, float *out, eng_err *err);

#endif
