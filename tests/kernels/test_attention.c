/* test_attention.c — GPU decode (single pass and split-K) and prefill (full and chunked)
 * attention (the SIMT kernel and the tensor-core one) against the reference: shuffled block tables with holes, sequence lengths 1 to
 * the maximum, GQA/MQA/MHA, every head size built, all q/kv dtype pairs, padded rows that
 * must stay NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"
#include "paged_attention.h"
#include "prefill_attention.h"
#include "ref.h"

typedef kn_status (*prefill_fn)(const kn_attn_args *a, cudaStream_t st);

/* Runs the case on the GPU (decode with n_splits when q_start is NULL, else prefill through
 * pf) and compares with relative tolerance rtol. */
static void run_case_with(attn_case *c, int32_t n_splits, prefill_fn pf, double rtol,
                          const char *what)
{
    const kn_attn_args *h = &c->a;
    const size_t qb = kn_dtype_size(h->q_dtype), kvb = kn_dtype_size(h->kv_dtype);
    const int32_t n_seq = h->n_seq;
    kt_buf dq = kt_buf_upload(c->q, c->q_elems * qb);
    kt_buf dk = kt_buf_upload(c->k, c->kv_elems * kvb), dv = kt_buf_upload(c->v, c->kv_elems * kvb);
    kt_buf dt = kt_buf_upload(c->tables, sizeof(int32_t) * (size_t)n_seq * (size_t)h->max_blocks_per_seq);
    kt_buf dl = kt_buf_upload(c->lens, sizeof(int32_t) * (size_t)n_seq);
    kt_buf dqs = {0};
    if (c->q_start)
        dqs = kt_buf_upload(c->q_start, sizeof(int32_t) * (size_t)(n_seq + 1));
    kt_buf dout = kt_buf_alloc(c->out_elems * qb);
    kn_attn_args a = *h;
    a.q = dq.p;
    a.k_cache = dk.p;
    a.v_cache = dv.p;
    a.block_tables = dt.p;
    a.seq_lens = dl.p;
    a.q_start = c->q_start ? dqs.p : NULL;
    a.out = dout.p;
    kt_buf ws = {0};
    if (c->q_start) {
        KT_OK(pf(&a, 0));
    } else {
        size_t bytes = 0;
        KT_OK(kn_paged_attn_decode_workspace(&a, n_splits, &bytes));
        if (n_splits > 1)
            cr_assert(bytes > 0, "%s: %d splits but no workspace", what, n_splits);
        if (bytes)
            ws = kt_buf_alloc(bytes);
        KT_OK(kn_paged_attn_decode(&a, n_splits, ws.p, bytes, 0));
    }
    kt_sync();
    void *got = malloc(c->out_elems * qb);
    cr_assert(got, "oom");
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, what);
    kn_ref_paged_attention(&c->a);
    /* compare the heads of every row; the padding must still be NaN */
    const int64_t row = (int64_t)h->n_head * h->head_dim;
    for (int32_t r = 0; r < c->n_tok; r++) {
        kt_check_close(h->q_dtype, (char *)got + (size_t)(r * h->out_stride) * qb,
                       (char *)c->out + (size_t)(r * h->out_stride) * qb, (size_t)row,
                       rtol, what);
        for (int64_t i = row; i < h->out_stride; i++)
            cr_assert(isnan(kn_ref_load(h->q_dtype, got, (size_t)(r * h->out_stride + i))),
                      "%s: row %d padding %lld written", what, r, (long long)i);
    }
    free(got);
    kt_buf_free(&dq);
    kt_buf_free(&dk);
    kt_buf_free(&dv);
    kt_buf_free(&dt);
    kt_buf_free(&dl);
    kt_buf_free(&dout);
    if (dqs.base)
        kt_buf_free(&dqs);
    if (ws.base)
        kt_buf_free(&ws);
}

static void run_case(attn_case *c, int32_t n_splits, const char *what)
{
    run_case_with(c, n_splits, kn_prefill_attn, kt_rtol(c->a.q_dtype), what);
}

typedef struct shape {
    int32_t n_head, n_head_kv, head_dim, block_size;
    kn_dtype qdt, kvdt;
} shape;

static const shape shapes[] = {
    {9, 3, 64, 16, KN_DTYPE_BF16, KN_DTYPE_F16},    /* SmolLM2-135M: GQA 3 */
    {16, 1, 128, 16, KN_DTYPE_F16, KN_DTYPE_F16},   /* StarCoder-1B: MQA, 2 query groups of 8 */
    {4, 4, 32, 8, KN_DTYPE_BF16, KN_DTYPE_BF16},    /* MHA, small heads */
    {8, 2, 256, 32, KN_DTYPE_F16, KN_DTYPE_BF16},   /* GQA 4, big heads */
    {14, 2, 64, 16, KN_DTYPE_BF16, KN_DTYPE_BF16},  /* GQA 7 (Qwen2.5-Coder-1.5B-like) */
};

Test(kn_paged_attn_decode, matches_reference)
{
    KT_REQUIRE_GPU();
    const int32_t lens[] = {1, 17, 300, 2048, 5, 16}; /* 1 and the maximum */
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        kt_rng r = kt_rng_make(20 + i);
        attn_case c = attn_case_make(s->qdt, s->kvdt, 6, lens, NULL, s->n_head, s->n_head_kv,
                                     s->head_dim, s->block_size, &r);
        run_case(&c, 1, "decode, one pass");
        memset(c.out, 0xff, c.out_elems * kn_dtype_size(s->qdt));
        run_case(&c, 5, "decode, 5 splits");
        memset(c.out, 0xff, c.out_elems * kn_dtype_size(s->qdt));
        run_case(&c, 0, "decode, automatic splits");
        attn_case_free(&c);
    }
}

Test(kn_paged_attn_decode, one_sequence_many_splits)
{
    KT_REQUIRE_GPU();
    const int32_t lens[] = {4096};
    kt_rng r = kt_rng_make(30);
    attn_case c = attn_case_make(KN_DTYPE_BF16, KN_DTYPE_F16, 1, lens, NULL, 9, 3, 64, 16, &r);
    run_case(&c, 0, "decode, long context, automatic splits");
    attn_case_free(&c);
}

Test(kn_prefill_attn, matches_reference)
{
    KT_REQUIRE_GPU();
    /* full prompts, a one-token chunk, chunks starting mid-sequence, and the longest */
    const int32_t lens[] = {1, 300, 77, 512, 40}, q_lens[] = {1, 300, 13, 200, 1};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        kt_rng r = kt_rng_make(40 + i);
        attn_case c = attn_case_make(s->qdt, s->kvdt, 5, lens, q_lens, s->n_head, s->n_head_kv,
                                     s->head_dim, s->block_size, &r);
        run_case(&c, 0, "prefill");
        attn_case_free(&c);
    }
}

Test(kn_prefill_attn_tc, matches_reference)
{
    KT_REQUIRE_GPU();
    /* the same cases on tensor cores, plus a chunk longer than one 64-row tile that starts
     * mid-tile of the keys (tile edges of both queries and keys) */
    const int32_t lens[] = {1, 300, 77, 512, 40, 200}, q_lens[] = {1, 300, 13, 200, 1, 131};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        kt_rng r = kt_rng_make(60 + i);
        attn_case c = attn_case_make(s->qdt, s->kvdt, 6, lens, q_lens, s->n_head, s->n_head_kv,
                                     s->head_dim, s->block_size, &r);
        /* Q and the softmax weights P are rounded to the cache's type for the tensor-core
         * products. Against the fp32 reference that alone costs up to 0.054 (relative, with
         * the 5%-of-max floor) in bf16 and 0.0053 in fp16: a reference that rounds P and Q
         * the same way differs from the exact one by that much on these cases. */
        const double rtol = s->kvdt == KN_DTYPE_BF16 ? 0.08 : 0.01;
        run_case_with(&c, 0, kn_prefill_attn_tc, rtol, "prefill on tensor cores");
        attn_case_free(&c);
    }
}

Test(kn_attention, rejects_unsupported_and_bad_args)
{
    /* no GPU needed: checks run before any CUDA call */
    kt_rng r = kt_rng_make(50);
    const int32_t lens[] = {3};
    attn_case c = attn_case_make(KN_DTYPE_F16, KN_DTYPE_F16, 1, lens, NULL, 2, 1, 64, 16, &r);
    size_t bytes;
    c.a.head_dim = 96;
    cr_assert(kn_paged_attn_decode_workspace(&c.a, 1, &bytes) == KN_ERR_UNSUPPORTED, "head_dim 96");
    cr_assert(!kn_attn_supported(96) && kn_attn_supported(128), "capability");
    c.a.head_dim = 64;
    c.a.n_head = 3; /* not a multiple of n_head_kv... 3 % 1 == 0, so break n_head_kv instead */
    c.a.n_head_kv = 2;
    cr_assert(kn_paged_attn_decode_workspace(&c.a, 1, &bytes) == KN_ERR_INVALID, "3 heads over 2 kv heads");
    c.a.n_head = 2;
    c.a.n_head_kv = 1;
    cr_assert(kn_prefill_attn(&c.a, 0) == KN_ERR_INVALID, "prefill without q_start");
    attn_case_free(&c);
}
