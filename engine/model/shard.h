/* shard.h — the one Megatron split of a model for tensor parallelism, used by the CPU and the
 * CUDA backends: which heads, FFN columns and vocabulary rows rank r of n holds, and that rank's
 * model (an eng_model whose counts are the rank's). See "Tensor parallelism" in DESIGN.md.
 *
 * The split, for every family with a descriptor (llama, deepseek-coder, qwen2, starcoder with
 * MQA and learned positions, starcoder2):
 *   attention  Q/K/V column-parallel by heads: rank r holds Q heads [head0, head0 + n_head)
 *              and the K/V heads they read; with fewer KV heads than ranks (GQA, MQA) the KV
 *              heads are replicated, each on n_ranks / n_head_kv ranks. Q/K/V biases follow
 *              their rows. The output projection is row-parallel: the rank's input columns
 *              (its heads), a partial product summed over ranks by one all-reduce, then the
 *              output bias (replicated) added once, after the sum.
 *   FFN        gate/up (and the up bias) column-parallel by FFN columns [ff0, ff0 + n_ff),
 *              down row-parallel over the same columns, an all-reduce, then the down bias.
 *   embedding  vocabulary-parallel: rank r holds rows [vocab0, vocab0 + n_vocab) of
 *              token_embd; a rank that does not hold a token's row contributes zeros, and an
 *              all-reduce (exact: one non-zero term) gives every rank the embedding. Learned
 *              positions (StarCoder) are replicated and added after it.
 *   head       vocabulary-parallel over the same rows (a tied head is the same view); the
 *              rows that are sampled are gathered (all-gather of n_vocab_stride logits per
 *              row and rank; rank r's logits land at vocab0).
 *   the rest   norms, rope_freqs, position embeddings: replicated.
 *
 * Quantised weights: the row-parallel products (attn_output, ffn_down) are cut along their
 * input, where a quantised row is made of blocks of 32 or 256 elements, so the cut must fall on
 * a block boundary (the rank's activations are then quantised in the same blocks as the whole
 * row's). FFN columns are split in whole blocks as evenly as possible (ranks may differ by one
 * block). Heads are split evenly; a degree whose per-rank head columns are not whole blocks is
 * refused (ENG_ERR_UNSUPPORTED naming the tensor, its type and the degrees that work) rather
 * than replicated: replicating a row-parallel weight would sum it n times. Column-parallel
 * cuts (rows of a matrix) have no such constraint. */
#ifndef SERVAL_SHARD_H
#define SERVAL_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "status.h"

typedef struct eng_shard {
    int rank, n_ranks;
    int32_t head0, n_head;       /* Q heads [head0, head0 + n_head) */
    int32_t head_kv0, n_head_kv; /* KV heads [head_kv0, head_kv0 + n_head_kv) */
    int32_t ff0, n_ff;           /* FFN columns [ff0, ff0 + n_ff) */
    int32_t vocab0, n_vocab;     /* rows of token_embd and of the head [vocab0, vocab0 + n_vocab) */
    int32_t n_vocab_stride;      /* ceil(n_vocab_total / n_ranks): every rank's vocab0 is
                                    rank * stride; logits are gathered `stride` per row and rank
                                    (the last rank's beyond its n_vocab are padding) */
    int32_t n_vocab_total;       /* the whole model's vocabulary */
} eng_shard;

/* The split of model m for rank `rank` of n_ranks (1..64; 1 is the whole model). Fails with
 * ENG_ERR_INVALID for a rank outside [0, n_ranks) or a degree the heads do not allow (n_head
 * not a multiple of n_ranks, or n_head_kv neither a multiple nor a divisor of it), and
 * ENG_ERR_UNSUPPORTED where a quantised row-parallel weight cannot be cut (above); the message
 * names the tensor and lists the degrees this model allows. Every rank gets the same answer. */
eng_status eng_shard_plan(const eng_model *m, int rank, int n_ranks, eng_shard *out,
                          eng_err *err);

/* Writes the degrees in [1, 64] this model allows ("1, 2, 4") into buf (cap bytes, NUL
 * terminated), for messages and --help. */
void eng_shard_degrees(const eng_model *m, char *buf, size_t cap);

/* One rank's model: `model` is an eng_model whose hp.n_head, n_head_kv, n_ff and n_vocab are
 * the rank's (head_dim, n_embd, n_layer and everything else the whole model's), and whose
 * weights are the rank's: row views into the parent's mapping for column-parallel matrices,
 * vectors and the vocabulary rows; owned copies of the rank's input columns for attn_output and
 * ffn_down (those rows are not contiguous in the file). A fused Q|K|V (StarCoder) appears only
 * as its wq/wk/wv (bq/bk/bv) views: wqkv and bqkv have data NULL. model.gguf and model.vocab
 * are the parent's (borrowed): never pass &model to eng_model_free. */
typedef struct eng_shard_model {
    eng_model model;
    eng_shard shard;
    eng_layer *layers; /* [n_layer] == model.layers, owned */
    void *copies;      /* the attn_output / ffn_down columns, owned */
    size_t copy_bytes;
} eng_shard_model;

/* Builds rank `rank`'s model of m (borrowed: it must outlive the result), planned by
 * eng_shard_plan (same errors). Costs one pass over the attn_output and ffn_down bytes of the
 * rank. *out is owned by the caller: free it with eng_shard_model_free (NULL does nothing). */
eng_status eng_shard_model_create(const eng_model *m, int rank, int n_ranks,
                                  eng_shard_model **out, eng_err *err);
void eng_shard_model_free(eng_shard_model *sm);

#endif
