/* encoder_cuda.h — the `bert` encoder on a CUDA GPU (encoder_cuda.c): the same contract as
 * engine/cpu/cpu_encoder.h (packed whole sequences in, pooled L2-normalised fp32 vectors out),
 * weights dequantised once at load to bf16 (or fp16). Built only with SERVAL_HAVE_CUDA. */
#ifndef SERVAL_ENCODER_CUDA_H
#define SERVAL_ENCODER_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "embed_impl.h"
#include "status.h"

typedef struct cuda_encoder cuda_encoder;

/* An encoder over m (borrowed: it must outlive the encoder) on GPU `device`, activations and
 * weights in fp16 when `fp16`, else bf16 (the KV scratch likewise); products accumulate in
 * fp32, the residual sums and LayerNorm statistics are fp32. Uploads every weight now; the
 * per-batch scratch grows to the largest batch run. ENG_ERR_CUDA / ENG_ERR_NOMEM with what
 * failed, ENG_ERR_UNSUPPORTED for a head size the attention kernels lack. *out owned by the
 * caller: cuda_encoder_free. */
eng_status cuda_encoder_create(const emb_model *m, int device, bool fp16, cuda_encoder **out,
                               eng_err *err);
void cuda_encoder_free(cuda_encoder *e);

/* cpu_encoder_run's contract on the GPU: n_seq sequences of seq_len[s] tokens (1 .. n_ctx)
 * packed back to back in tokens (ids < n_vocab), each attending only to itself (both
 * directions); out[n_seq, n_embd] (caller-owned host memory) receives each one's pooled,
 * L2-normalised state. Returns after the GPU has finished. ENG_ERR_INVALID for bad lengths or
 * ids (nothing reaches the GPU), ENG_ERR_NOMEM, ENG_ERR_CUDA. One run at a time per encoder;
 * any host thread may call it. */
eng_status cuda_encoder_run(cuda_encoder *e, const int32_t *tokens, const int32_t *seq_len,
                            int32_t n_seq, float *out, eng_err *err);

#endif
