/* test_ref_attention.c — CPU: the reference paged attention equals a naive dense attention
 * in double precision (K/V gathered into contiguous arrays first), for decode, full prefill
 * and chunked prefill, with shuffled block tables, GQA and MQA, sliding windows, and
 * bidirectional (encoder) prefill. */
#include <math.h>
#include <stdlib.h>

#include "attn_case.h"
#include "kt.h"
#include "ref.h"

/* Dense attention of query row r (sequence s, position pos) head h, in double. */
static void dense_row(const attn_case *c, int32_t s, int32_t r, int32_t pos, int32_t h,
                      double *o)
{
    const kn_attn_args *a = &c->a;
    const int32_t hd = a->head_dim, kvh = h / (a->n_head / a->n_head_kv);
    /* gather this sequence's K/V rows for kvh densely: [pos + 1, hd] */
    double *kd = malloc(sizeof(double) * (size_t)(pos + 1) * (size_t)hd);
    double *vd = malloc(sizeof(double) * (size_t)(pos + 1) * (size_t)hd);
    double *w = malloc(sizeof(double) * (size_t)(pos + 1));
    cr_assert(kd && vd && w, "oom");
    for (int32_t p = 0; p <= pos; p++) {
        if (a->n_swa > 0 && pos - p >= a->n_swa) { /* outside the window: its block may be gone */
            for (int32_t i = 0; i < hd; i++)
                kd[p * hd + i] = vd[p * hd + i] = 0.0;
            continue;
        }
        const int32_t blk = a->block_tables[s * a->max_blocks_per_seq + p / a->block_size];
        const size_t slot = (size_t)blk * (size_t)a->block_size + (size_t)(p % a->block_size);
        for (int32_t i = 0; i < hd; i++) {
            const size_t e = (slot * (size_t)a->n_head_kv + (size_t)kvh) * (size_t)hd + (size_t)i;
            kd[p * hd + i] = kn_ref_load(a->kv_dtype, a->k_cache, e);
            vd[p * hd + i] = kn_ref_load(a->kv_dtype, a->v_cache, e);
        }
    }
    double mx = -INFINITY, sum = 0.0;
    for (int32_t p = 0; p <= pos; p++) {
        double dot = 0.0;
        for (int32_t i = 0; i < hd; i++)
            dot += kn_ref_load(a->q_dtype, a->q, (size_t)(r * a->q_stride + h * hd + i)) * kd[p * hd + i];
        /* a sliding window hides the keys n_swa or more positions back */
        w[p] = a->n_swa > 0 && pos - p >= a->n_swa ? -INFINITY : dot * a->scale;
        mx = fmax(mx, w[p]);
    }
    for (int32_t p = 0; p <= pos; p++)
        sum += (w[p] = exp(w[p] - mx));
    for (int32_t i = 0; i < hd; i++) {
        o[i] = 0.0;
        for (int32_t p = 0; p <= pos; p++)
            o[i] += w[p] * vd[p * hd + i];
        o[i] /= sum;
    }
    free(kd);
    free(vd);
    free(w);
}

static void check_against_dense(attn_case *c)
{
    kn_ref_paged_attention(&c->a);
    const kn_attn_args *a = &c->a;
    double o[256];
    for (int32_t s = 0; s < a->n_seq; s++) {
        const int32_t r0 = a->q_start ? a->q_start[s] : s;
        const int32_t ql = a->q_start ? a->q_start[s + 1] - r0 : 1;
        for (int32_t r = r0; r < r0 + ql; r++)
            for (int32_t h = 0; h < a->n_head; h++) {
                /* the last key the row sees: its position, or the sequence's end (encoder) */
                dense_row(c, s, r,
                          a->bidirectional && a->q_start ? a->seq_lens[s] - 1
                                                         : a->seq_lens[s] - ql + (r - r0),
                          h, o);
                for (int32_t i = 0; i < a->head_dim; i++) {
                    const double got = kn_ref_load(a->q_dtype, a->out,
                                                   (size_t)(r * a->out_stride + h * a->head_dim + i));
                    cr_assert(fabs(got - o[i]) <= 1e-2 * fabs(o[i]) + 2e-3,
                              "seq %d row %d head %d dim %d: %g, dense %g", s, r, h, i, got, o[i]);
                }
                /* the row padding is never written */
                for (int64_t i = (int64_t)a->n_head * a->head_dim; i < a->out_stride; i++)
                    cr_assert(isnan(kn_ref_load(a->q_dtype, a->out, (size_t)(r * a->out_stride + i))),
                              "padding written");
            }
    }
}

Test(ref_attention, decode_equals_dense)
{
    kt_rng r = kt_rng_make(11);
    const int32_t lens[] = {1, 16, 17, 130};
    attn_case c = attn_case_make(KN_DTYPE_F16, KN_DTYPE_BF16, 4, lens, NULL, 9, 3, 64, 16, &r);
    check_against_dense(&c);
    attn_case_free(&c);
}

Test(ref_attention, chunked_prefill_equals_dense)
{
    kt_rng r = kt_rng_make(12);
    const int32_t lens[] = {1, 40, 33}, q_lens[] = {1, 7, 33}; /* mid-sequence chunk, full prompt */
    attn_case c = attn_case_make(KN_DTYPE_BF16, KN_DTYPE_F16, 3, lens, q_lens, 4, 1, 32, 8, &r);
    check_against_dense(&c);
    attn_case_free(&c);
}

/* windows shorter than a block, spanning blocks, and wider than some sequences; one sequence
 * whose table holds -1 before its window (blocks a server may free) */
Test(ref_attention, sliding_window_equals_dense)
{
    kt_rng r = kt_rng_make(13);
    const int32_t lens[] = {1, 40, 33, 100}, q_lens[] = {1, 7, 33, 100};
    const int32_t windows[] = {1, 5, 32, 37};
    for (int w = 0; w < 4; w++) {
        attn_case c = attn_case_make(KN_DTYPE_BF16, KN_DTYPE_F16, 4, lens, w % 2 ? q_lens : NULL,
                                     4, 1, 16, 8, &r);
        c.a.n_swa = windows[w];
        check_against_dense(&c);
        attn_case_free(&c);
    }
    const int32_t one[] = {90};
    attn_case c = attn_case_make(KN_DTYPE_F16, KN_DTYPE_F16, 1, one, NULL, 2, 2, 32, 16, &r);
    c.a.n_swa = 20; /* the query at 89 sees 70..89: blocks 4 and 5 */
    for (int b = 0; b < 4; b++)
        c.tables[b] = -1;
    check_against_dense(&c);
    attn_case_free(&c);
}

/* An encoder's prefill (BERT): every row sees the whole sequence, later positions too; a
 * chunk that starts mid-sequence sees the cached positions before it and the chunk's own. */
Test(ref_attention, bidirectional_prefill_equals_dense_over_the_whole_sequence)
{
    kt_rng r = kt_rng_make(14);
    const int32_t lens[] = {1, 40, 33, 77}, q_lens[] = {1, 7, 33, 77};
    attn_case c = attn_case_make(KN_DTYPE_BF16, KN_DTYPE_F16, 4, lens, q_lens, 12, 12, 32, 16, &r);
    c.a.bidirectional = true;
    check_against_dense(&c);
    /* and it is not the causal answer: the same inputs with the mask on differ */
    float *bi = malloc(sizeof(float) * c.out_elems);
    cr_assert(bi, "oom");
    for (size_t i = 0; i < c.out_elems; i++)
        bi[i] = kn_ref_load(c.a.q_dtype, c.out, i);
    c.a.bidirectional = false;
    kn_ref_paged_attention(&c.a);
    size_t differ = 0;
    for (size_t i = 0; i < c.out_elems; i++)
        differ += !isnan(bi[i]) && fabs(bi[i] - kn_ref_load(c.a.q_dtype, c.out, i)) > 1e-2;
    cr_assert_gt(differ, c.out_elems / 4, "only %zu of %zu outputs changed with the mask on",
                 differ, c.out_elems);
    free(bi);
    attn_case_free(&c);
}
