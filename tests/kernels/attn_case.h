/* attn_case.h — builds random paged-attention inputs on the host for the attention tests and
 * bench/kernels: shuffled physical blocks with unused ones in between (holes), -1 past each
 * table's end, padded query/output rows, every cache slot filled with random values. */
#ifndef SERVAL_ATTN_CASE_H
#define SERVAL_ATTN_CASE_H

#include <stdbool.h>
#include <stdint.h>

#include "kn_args.h"
#include "kt_data.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct attn_case {
    kn_attn_args a; /* host pointers into the arrays below */
    void *q, *k, *v, *out;
    int32_t *tables, *lens, *q_start; /* q_start NULL for decode */
    int32_t n_tok;
    size_t q_elems, kv_elems, out_elems;
} attn_case;

/* lens[n_seq]: KV length per sequence; q_lens NULL for decode (one row each), else the
 * rows of each sequence's chunk (<= lens[s]). Caller frees with attn_case_free. */
attn_case attn_case_make(kn_dtype qdt, kn_dtype kvdt, int32_t n_seq, const int32_t *lens,
                         const int32_t *q_lens, int32_t n_head, int32_t n_head_kv,
                         int32_t head_dim, int32_t block_size, kt_rng *r);
void attn_case_free(attn_case *c);

#ifdef __cplusplus
}
#endif

#endif
