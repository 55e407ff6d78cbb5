/* attn_case.c — random paged-attention inputs for the attention tests (see attn_case.h). */
#include "attn_case.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

attn_case attn_case_make(kn_dtype qdt, kn_dtype kvdt, int32_t n_seq, const int32_t *lens,
                         const int32_t *q_lens, int32_t n_head, int32_t n_head_kv,
                         int32_t head_dim, int32_t block_size, kt_rng *r)
{
    attn_case c;
    memset(&c, 0, sizeof c);
    int32_t max_len = 1, max_q = 1, used = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        max_len = lens[s] > max_len ? lens[s] : max_len;
        if (q_lens)
            max_q = q_lens[s] > max_q ? q_lens[s] : max_q;
        used += (lens[s] + block_size - 1) / block_size;
    }
    const int32_t max_blocks = (max_len + block_size - 1) / block_size + 1; /* a spare column */
    const int32_t n_blocks = used + used / 2 + 3;                          /* holes */
    int32_t *perm = kt_xmalloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int32_t i = n_blocks - 1; i > 0; i--) { /* shuffle: tables point all over the pool */
        const int32_t j = kt_rng_int(r, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    c.tables = kt_xmalloc(sizeof(int32_t) * (size_t)n_seq * (size_t)max_blocks + 4);
    c.lens = kt_xmalloc(sizeof(int32_t) * (size_t)n_seq + 4);
    int32_t next = 0;
    c.n_tok = 0;
    for (int32_t s = 0; s < n_seq; s++) {
        c.lens[s] = lens[s];
        const int32_t nb = (lens[s] + block_size - 1) / block_size;
        for (int32_t b = 0; b < max_blocks; b++)
            c.tables[s * max_blocks + b] = b < nb ? perm[next++] : -1;
        c.n_tok += q_lens ? q_lens[s] : 1;
    }
    free(perm);
    if (q_lens) {
        c.q_start = kt_xmalloc(sizeof(int32_t) * (size_t)(n_seq + 1));
        c.q_start[0] = 0;
        for (int32_t s = 0; s < n_seq; s++)
            c.q_start[s + 1] = c.q_start[s] + q_lens[s];
    }
    const int64_t row = (int64_t)n_head * head_dim, stride = row + 8; /* padded rows */
    const int64_t kv_dim = (int64_t)n_head_kv * head_dim;
    const int64_t n_slots = (int64_t)n_blocks * block_size;
    c.q_elems = (size_t)(c.n_tok * stride);
    c.out_elems = c.q_elems;
    c.kv_elems = (size_t)(n_slots * kv_dim);
    c.q = kt_host_random(qdt, c.q_elems, -1.0f, 1.0f, r);
    /* keys larger than queries so the softmax is far from uniform */
    c.k = kt_host_random(kvdt, c.kv_elems, -2.0f, 2.0f, r);
    c.v = kt_host_random(kvdt, c.kv_elems, -1.0f, 1.0f, r);
    c.out = kt_xmalloc(kn_dtype_size(qdt) * c.out_elems);
    memset(c.out, 0xff, kn_dtype_size(qdt) * c.out_elems); /* NaN: unwritten stays visible */

    kn_attn_args *a = &c.a;
    a->q_dtype = qdt;
    a->kv_dtype = kvdt;
    a->q = c.q;
    a->q_stride = stride;
    a->k_cache = c.k;
    a->v_cache = c.v;
    a->n_slots = n_slots;
    a->block_tables = c.tables;
    a->max_blocks_per_seq = max_blocks;
    a->seq_lens = c.lens;
    a->q_start = c.q_start;
    a->n_seq = n_seq;
    a->n_head = n_head;
    a->n_head_kv = n_head_kv;
    a->head_dim = head_dim;
    a->block_size = block_size;
    a->max_seq_len = max_len;
    a->max_q_len = max_q;
    a->scale = 1.0f / sqrtf((float)head_dim);
    a->out = c.out;
    a->out_stride = stride;
    return c;
}

void attn_case_free(attn_case *c)
{
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->out);
    free(c->tables);
    free(c->lens);
    free(c->q_start);
}
