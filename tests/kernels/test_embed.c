/* test_embed.c — GPU embedding gather against the reference: every table/output dtype pair,
 * an odd width, first/last/out-of-range token ids. */
#include <stdlib.h>

#include "embed.h"
#include "kt.h"
#include "ref.h"

Test(kn_embed, matches_reference)
{
    KT_REQUIRE_GPU();
    kt_rng r = kt_rng_make(1);
    const int64_t n_vocab = 1001, d = 579, n = 41;
    int32_t tok[41];
    for (int i = 0; i < n; i++)
        tok[i] = kt_rng_int(&r, (int32_t)n_vocab);
    tok[0] = 0;
    tok[1] = (int32_t)n_vocab - 1;
    tok[2] = -1;              /* out of range: a zero row */
    tok[3] = (int32_t)n_vocab; /* out of range: a zero row */
    const kn_dtype dts[] = {KN_DTYPE_F32, KN_DTYPE_F16, KN_DTYPE_BF16};
    kt_buf dtok = kt_buf_upload(tok, sizeof tok);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            void *table = kt_host_random(dts[a], (size_t)(n_vocab * d), -1.0f, 1.0f, &r);
            void *want = malloc(kn_dtype_size(dts[b]) * (size_t)(n * d));
            void *got = malloc(kn_dtype_size(dts[b]) * (size_t)(n * d));
            cr_assert(want && got, "oom");
            kt_buf dt = kt_buf_upload(table, kn_dtype_size(dts[a]) * (size_t)(n_vocab * d));
            kt_buf dout = kt_buf_alloc(kn_dtype_size(dts[b]) * (size_t)(n * d));
            KT_OK(kn_embed(dts[a], dt.p, n_vocab, d, dtok.p, n, dts[b], dout.p, 0));
            kt_sync();
            kt_buf_download(got, &dout);
            kt_buf_check_guards(&dout, "embed out");
            kn_ref_embed(dts[a], table, n_vocab, d, tok, n, dts[b], want);
            kt_check_close(dts[b], got, want, (size_t)(n * d), 0.0, "embed");
            kt_buf_free(&dt);
            kt_buf_free(&dout);
            free(table);
            free(want);
            free(got);
        }
    kt_buf_free(&dtok);
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
