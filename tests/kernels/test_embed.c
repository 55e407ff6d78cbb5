/* test_embed.c — GPU embedding gathers against the reference: every table/output dtype pair,
 * an odd width, first/last/out-of-range token ids; position rows added to an fp32 stream,
 * bit for bit, out-of-range positions adding nothing (the cases: kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"

static void run(const kt_embed_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const int64_t n_vocab = c->n_vocab, d = c->d, n = c->n;
    int32_t *tok = kt_xmalloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        tok[i] = kt_rng_int(&r, (int32_t)n_vocab);
    tok[0] = 0;
    tok[1] = (int32_t)n_vocab - 1;
    tok[2] = -1;               /* out of range: a zero row */
    tok[3] = (int32_t)n_vocab; /* out of range: a zero row */
    const size_t ob = kn_dtype_size(c->out_dt) * (size_t)(n * d);
    void *table = kt_host_random(c->table_dt, (size_t)(n_vocab * d), -1.0f, 1.0f, &r);
    void *want = kt_xmalloc(ob), *got = kt_xmalloc(ob);
    kt_buf dtok = kt_buf_upload(tok, sizeof(int32_t) * (size_t)n);
    kt_buf dt = kt_buf_upload(table, kn_dtype_size(c->table_dt) * (size_t)(n_vocab * d));
    kt_buf dout = kt_buf_alloc(ob);
    KT_OK(kn_embed(c->table_dt, dt.p, n_vocab, d, dtok.p, n, c->out_dt, dout.p, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, c->name);
    kn_ref_embed(c->table_dt, table, n_vocab, d, tok, n, c->out_dt, want);
    kt_check_close(c->out_dt, got, want, (size_t)(n * d), 0.0, c->name);
    kt_buf_free(&dtok);
    kt_buf_free(&dt);
    kt_buf_free(&dout);
    free(tok);
    free(table);
    free(want);
    free(got);
}

Test(kn_embed, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_embed_cases_count; i++)
        if (kt_embed_cases[i].use & KT_TEST)
            run(&kt_embed_cases[i]);
}

static void run_add(const kt_embed_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const int64_t n_rows = c->n_vocab, d = c->d, n = c->n;
    int32_t *idx = kt_xmalloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) /* positions: ascending runs, as chunks of sequences */
        idx[i] = (int32_t)((i * 37 + i / 5) % n_rows);
    idx[0] = 0;
    idx[1] = (int32_t)n_rows - 1;
    idx[2] = -1;              /* out of range: adds nothing */
    idx[3] = (int32_t)n_rows; /* out of range: adds nothing */
    const size_t ob = sizeof(float) * (size_t)(n * d);
    void *table = kt_host_random(c->table_dt, (size_t)(n_rows * d), -1.0f, 1.0f, &r);
    float *want = kt_host_random(KN_DTYPE_F32, (size_t)(n * d), -3.0f, 3.0f, &r);
    float *got = kt_xmalloc(ob);
    kt_buf didx = kt_buf_upload(idx, sizeof(int32_t) * (size_t)n);
    kt_buf dt = kt_buf_upload(table, kn_dtype_size(c->table_dt) * (size_t)(n_rows * d));
    kt_buf dout = kt_buf_upload(want, ob);
    KT_OK(kn_embed_add(c->table_dt, dt.p, n_rows, d, didx.p, n, dout.p, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, c->name);
    cr_assert(memcmp(got + 2 * d, want + 2 * d, sizeof(float) * 2 * (size_t)d) == 0,
              "%s: rows of out-of-range positions changed", c->name);
    kn_ref_embed_add(c->table_dt, table, n_rows, d, idx, n, want);
    kt_check_close(KN_DTYPE_F32, got, want, (size_t)(n * d), 0.0, c->name);
    kt_buf_free(&didx);
    kt_buf_free(&dt);
    kt_buf_free(&dout);
    free(idx);
    free(table);
    free(want);
    free(got);
}

Test(kn_embed_add, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_embed_add_cases_count; i++)
        if (kt_embed_add_cases[i].use & KT_TEST)
            run_add(&kt_embed_add_cases[i]);
}

Test(kn_embed, rejects_bad_arguments)
{
    /* argument checks run before any CUDA call: no GPU needed */
    int32_t tok = 0;
    float out = 0.0f, table = 1.0f;
    cr_assert(kn_embed(KN_DTYPE_F32, NULL, 1, 1, &tok, 1, KN_DTYPE_F32, &out, 0) == KN_ERR_INVALID,
              "null table");
    cr_assert(kn_embed(KN_DTYPE_F32, &table, 1, 0, &tok, 1, KN_DTYPE_F32, &out, 0) == KN_ERR_INVALID,
              "zero width");
    cr_assert(kn_embed(KN_DTYPE_F32, &table, 1, 1, &tok, 0, KN_DTYPE_F32, &out, 0) == KN_OK,
              "no tokens is a no-op");
}
