/* test_attention.c — GPU decode (single pass and split-K) and prefill (full and chunked)
 * attention (the SIMT kernel and the tensor-core one) against the reference: shuffled block
 * tables with holes, sequence lengths 1 to the maximum, GQA/MQA/MHA, every head size built,
 * sliding windows, all q/kv dtype pairs, padded rows that must stay NaN (the cases:
 * kt_cases.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_case.h"
#include "kt.h"
#include "kt_cases.h"
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

/* Points every table entry wholly before the window of its sequence's first query row at one
 * unused block whose K and V are NaN: a kernel that reads where a server may have freed the
 * blocks returns NaN there (the reference never reads them: test_ref_attention.c). */
static void poison_before_window(attn_case *c)
{
    const kn_attn_args *a = &c->a;
    const int32_t bs = a->block_size, mb = a->max_blocks_per_seq;
    const int64_t n_blocks = a->n_slots / bs;
    const size_t block_bytes = (size_t)bs * (size_t)(a->n_head_kv * a->head_dim) *
                               kn_dtype_size(a->kv_dtype);
    bool *used = calloc((size_t)n_blocks, sizeof(bool));
    cr_assert(used, "oom");
    for (int32_t i = 0; i < a->n_seq * mb; i++)
        if (c->tables[i] >= 0)
            used[c->tables[i]] = true;
    int64_t spare = 0;
    while (spare < n_blocks && used[spare])
        spare++;
    cr_assert(spare < n_blocks, "no unused block to poison");
    memset((char *)c->k + (size_t)spare * block_bytes, 0xff, block_bytes);
    memset((char *)c->v + (size_t)spare * block_bytes, 0xff, block_bytes);
    for (int32_t s = 0; s < a->n_seq; s++) {
        const int32_t q_len = c->q_start ? c->q_start[s + 1] - c->q_start[s] : 1;
        const int32_t first = c->lens[s] - q_len; /* the first query row's position */
        const int32_t lo = first - a->n_swa + 1;  /* its first visible key */
        for (int32_t b = 0; (int64_t)(b + 1) * bs <= lo; b++)
            c->tables[s * mb + b] = (int32_t)spare;
    }
    free(used);
}

static attn_case make(const kt_attn_case *k)
{
    kt_rng r = kt_rng_make(k->seed);
    int32_t *lens = kt_xmalloc(sizeof(int32_t) * (size_t)k->n_seq);
    int32_t *q_lens = kt_xmalloc(sizeof(int32_t) * (size_t)k->n_seq);
    kt_attn_lens(k, lens, q_lens);
    attn_case c = attn_case_make(k->q_dt, k->kv_dt, k->n_seq, lens, k->q_lens[0] ? q_lens : NULL,
                                 k->n_head, k->n_head_kv, k->head_dim, k->block_size, &r);
    c.a.n_swa = k->n_swa;
    c.a.bidirectional = k->bidirectional;
    if (k->n_swa > 0)
        poison_before_window(&c);
    free(lens);
    free(q_lens);
    return c;
}

/* every decode case, each with one pass, 5 forced splits and the launcher's choice */
Test(kn_paged_attn_decode, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_decode_cases_count; i++) {
        if (!(kt_decode_cases[i].use & KT_TEST))
            continue;
        attn_case c = make(&kt_decode_cases[i]);
        for (size_t j = 0; j < kt_decode_splits_count; j++) {
            memset(c.out, 0xff, c.out_elems * kn_dtype_size(c.a.q_dtype));
            run_case(&c, kt_decode_splits[j], kt_decode_cases[i].name);
        }
        attn_case_free(&c);
    }
}

Test(kn_prefill_attn, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_prefill_cases_count; i++) {
        if (!(kt_prefill_cases[i].use & KT_TEST))
            continue;
        attn_case c = make(&kt_prefill_cases[i]);
        run_case(&c, 0, kt_prefill_cases[i].name);
        attn_case_free(&c);
    }
}

/* the same cases on tensor cores (kt_prefill_tc_rtol: Q and P rounded to the cache's type) */
Test(kn_prefill_attn_tc, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_prefill_cases_count; i++) {
        if (!(kt_prefill_cases[i].use & KT_TEST))
            continue;
        attn_case c = make(&kt_prefill_cases[i]);
        run_case_with(&c, 0, kn_prefill_attn_tc, kt_prefill_tc_rtol(c.a.kv_dtype),
                      kt_prefill_cases[i].name);
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
    cr_assert(!kn_attn_supported(96) && kn_attn_supported(128) && kn_attn_supported(16),
              "capability");
    c.a.head_dim = 64;
    c.a.n_swa = -1;
    cr_assert(kn_paged_attn_decode_workspace(&c.a, 1, &bytes) == KN_ERR_INVALID, "window -1");
    c.a.n_swa = 0;
    c.a.n_head = 3; /* not a multiple of n_head_kv... 3 % 1 == 0, so break n_head_kv instead */
    c.a.n_head_kv = 2;
    cr_assert(kn_paged_attn_decode_workspace(&c.a, 1, &bytes) == KN_ERR_INVALID, "3 heads over 2 kv heads");
    c.a.n_head = 2;
    c.a.n_head_kv = 1;
    cr_assert(kn_prefill_attn(&c.a, 0) == KN_ERR_INVALID, "prefill without q_start");
    attn_case_free(&c);
}
