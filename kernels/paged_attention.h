/* paged_attention.h — decode attention over paged KV, GQA-aware, with a split-K (flash-decoding) path (C interface). */
#ifndef SERVAL_KN_PAGED_ATTENTION_H
#define SERVAL_KN_PAGED_ATTENTION_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kn_args.h"
#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The decode split length, in positions. The automatic split count (n_splits 0) never makes
 * partitions shorter than this; with n_splits = max_seq_len / KN_DECODE_SPLIT (max_seq_len a multiple of it) every partition is
 * exactly this long, so a sequence's result depends neither on the rest of its batch nor on
 * max_seq_len (what the CUDA backend passes, engine/cuda/backend_cuda.c). */
#define KN_DECODE_SPLIT 256

/* Decode: one query row per sequence (a->q_start must be NULL), rows s = 0..n_seq-1.
 * One CTA per (sequence, KV head, query group of up to 8 heads, split): each K/V row is
 * read once for all the query heads that share it. Long contexts are split over CTAs into
 * partitions whose partial softmax states a second kernel merges (flash decoding); the
 * workspace holds them. n_splits 0 picks the count from the grid size and the SM count
 * (partitions of at least KN_DECODE_SPLIT positions);
 * anything else forces it (tests). With a sliding window (a->n_swa) only the last n_swa
 * positions are read: partitions wholly before them exit at once. head_dim in {16, 32, 64,
 * 128, 256}; q, out, caches 16-byte aligned, strides multiples of 8 elements. */
kn_status kn_paged_attn_decode_workspace(const kn_attn_args *a, int32_t n_splits,
                                         size_t *bytes);
kn_status kn_paged_attn_decode(const kn_attn_args *a, int32_t n_splits, void *workspace,
                               size_t workspace_bytes, cudaStream_t st);
/* Whether attention (decode and prefill) has a kernel for this head size. */
int kn_attn_supported(int32_t head_dim);

#ifdef __cplusplus
}
#endif

#endif
