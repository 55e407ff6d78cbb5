/* prefill_attention.h — prefill attention over paged KV: causal, tiled, online softmax, chunked prefill (C interface). */
#ifndef SERVAL_KN_PREFILL_ATTENTION_H
#define SERVAL_KN_PREFILL_ATTENTION_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Not called by the engine (it runs kn_prefill_attn_tc below): the fp32 SIMT kernel is the
 * simpler twin the tensor-core one is tested and benchmarked beside.
 * Prefill (a->q_start required): sequence s owns query rows q_start[s]..q_start[s+1]-1 that
 * sit at the end of its seq_lens[s] positions (chunked prefill: earlier positions are already
 * in the cache, and this chunk's K/V were written with kn_kv_write before the call). Flash
 * attention style: tiles of queries against tiles of K/V staged through shared memory with
 * an online softmax; the score matrix is never stored. A sliding window (a->n_swa) starts
 * each tile's keys at its first row's window and masks older keys per row. head_dim in {16,
 * 32, 64, 128, 256}. */
kn_status kn_prefill_attn(const kn_attn_args *a, cudaStream_t st);

/* Both kernels take a->bidirectional (encoders: every row sees all seq_lens[s] positions; the
 * causal mask and sliding window off). */

/* The same on tensor cores (prefill_attention_tc.cu, sm_80+): Q·K^T and P·V as WMMA
 * products in the KV cache's 16-bit type with fp32 accumulation (queries and the softmax
 * weights P are rounded to that type), 64 query rows per CTA. What the CUDA backend runs;
 * kn_prefill_attn (fp32 SIMT) stays as the simpler twin it is tested beside. */
kn_status kn_prefill_attn_tc(const kn_attn_args *a, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
