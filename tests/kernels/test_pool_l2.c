/* test_pool_l2.c — GPU sentence pooling (mean and CLS) + L2 normalisation against the
 * reference, every input dtype, padded rows, an empty text (the cases: kt_cases.c). */
#include <math.h>
#include <stdlib.h>

#include "kt.h"
#include "kt_cases.h"
#include "pool_l2.h"
#include "ref.h"

static void run_pool(const kt_pool_case *c)
{
    kt_rng r = kt_rng_make(c->seed + 1000);
    int32_t *off = kt_xmalloc(sizeof(int32_t) * (size_t)c->n_seq);
    int32_t *len = kt_xmalloc(sizeof(int32_t) * (size_t)c->n_seq);
    const int64_t n_tok = kt_pool_layout(c, off, len);
    const size_t n_x = (size_t)(n_tok * c->stride), n_out = (size_t)(c->n_seq * c->d);
    /* an offset keeps most means away from zero, as real hidden states are */
    void *x = kt_host_random(c->dt, n_x, -1.0f, 3.0f, &r);
    float *want = kt_xmalloc(sizeof(float) * n_out), *got = kt_xmalloc(sizeof(float) * n_out);
    kt_buf dx = kt_buf_upload(x, kn_dtype_size(c->dt) * (n_x ? n_x : 1));
    kt_buf doff = kt_buf_upload(off, sizeof(int32_t) * (size_t)c->n_seq);
    kt_buf dlen = kt_buf_upload(len, sizeof(int32_t) * (size_t)c->n_seq);
    kt_buf dout = kt_buf_alloc(sizeof(float) * n_out);
    KT_OK(kn_pool_l2(c->dt, dx.p, c->stride, c->d, doff.p, dlen.p, c->n_seq,
                     c->cls ? KN_POOL_MODE_CLS : KN_POOL_MODE_MEAN, dout.p, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, c->name);
    kn_ref_pool_l2(c->dt, x, c->stride, c->d, off, len, c->n_seq, c->cls, want);
    kt_check_close(KN_DTYPE_F32, got, want, n_out, kt_rtol(KN_DTYPE_F32), c->name);
    /* what a user of the embeddings relies on: unit length, an empty text a zero row */
    for (int32_t s = 0; s < c->n_seq; s++) {
        double ss = 0.0;
        for (int64_t j = 0; j < c->d; j++)
            ss += (double)got[s * c->d + j] * got[s * c->d + j];
        if (len[s] > 0)
            cr_expect(fabs(sqrt(ss) - 1.0) < 1e-5, "%s: text %d has norm %.7f", c->name, s,
                      sqrt(ss));
        else
            cr_expect(ss == 0.0, "%s: empty text %d has norm %g", c->name, s, sqrt(ss));
    }
    kt_buf_free(&dx);
    kt_buf_free(&doff);
    kt_buf_free(&dlen);
    kt_buf_free(&dout);
    free(x), free(want), free(got), free(off), free(len);
}

Test(kn_pool_l2, mean_and_cls_pooling_match_the_reference_and_have_unit_length)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_pool_l2_cases_count; i++)
        if (kt_pool_l2_cases[i].use & KT_TEST)
            run_pool(&kt_pool_l2_cases[i]);
}

/* CLS reads row 0 of each text only: the other rows may hold anything, NaN included */
Test(kn_pool_l2, cls_pooling_reads_only_each_texts_first_row)
{
    KT_REQUIRE_GPU();
    enum { D = 64, LEN = 5 };
    float x[2 * LEN * D];
    for (int i = 0; i < 2 * LEN * D; i++)
        x[i] = NAN;
    for (int j = 0; j < D; j++) {
        x[j] = j == 3 ? -2.0f : 0.0f;             /* text 0: -2 e3 -> -e3 */
        x[LEN * D + j] = j < 4 ? 1.0f : 0.0f;    /* text 1: (1,1,1,1,0..) -> 0.5 each */
    }
    const int32_t off[2] = {0, LEN}, len[2] = {LEN, LEN};
    kt_buf dx = kt_buf_upload(x, sizeof x), doff = kt_buf_upload(off, sizeof off);
    kt_buf dlen = kt_buf_upload(len, sizeof len), dout = kt_buf_alloc(sizeof(float) * 2 * D);
    KT_OK(kn_pool_l2(KN_DTYPE_F32, dx.p, D, D, doff.p, dlen.p, 2, KN_POOL_MODE_CLS, dout.p, 0));
    kt_sync();
    float got[2 * D];
    kt_buf_download(got, &dout);
    for (int j = 0; j < D; j++) {
        cr_expect(got[j] == (j == 3 ? -1.0f : 0.0f), "text 0 column %d: %g", j, got[j]);
        cr_expect(got[D + j] == (j < 4 ? 0.5f : 0.0f), "text 1 column %d: %g", j, got[D + j]);
    }
    kt_buf_free(&dx);
    kt_buf_free(&doff);
    kt_buf_free(&dlen);
    kt_buf_free(&dout);
}

Test(kn_pool_l2, refuses_a_bad_shape_or_mode)
{
    KT_REQUIRE_GPU();
    kt_buf b = kt_buf_alloc(1024);
    cr_expect(kn_pool_l2(KN_DTYPE_F32, b.p, 8, 16, b.p, b.p, 1, KN_POOL_MODE_MEAN, b.p, 0) !=
              KN_OK);
    cr_expect(kn_pool_l2(KN_DTYPE_F32, b.p, 16, 16, b.p, b.p, 1, (kn_pool_mode)7, b.p, 0) != KN_OK);
    kt_buf_free(&b);
}
