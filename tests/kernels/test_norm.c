/* test_norm.c — GPU RMSNorm and LayerNorm (with and without the fused residual add) against
 * the references: both dtypes, odd widths, one row and many (the cases: kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "kt_cases.h"
#include "layernorm.h"
#include "ref.h"
#include "rmsnorm.h"

static void run(const kt_norm_case *c, bool layer)
{
    const kn_dtype dt = c->dt;
    const int64_t n = c->n, d = c->d;
    const bool with_add = c->add;
    kt_rng r = kt_rng_make(c->seed);
    float *resid = kt_host_random(KN_DTYPE_F32, (size_t)(n * d), -2.0f, 2.0f, &r);
    void *add = kt_host_random(dt, (size_t)(n * d), -1.0f, 1.0f, &r);
    void *w = kt_host_random(dt, (size_t)d, 0.5f, 1.5f, &r);
    void *bias = kt_host_random(dt, (size_t)d, -0.5f, 0.5f, &r);
    const size_t ob = kn_dtype_size(dt) * (size_t)(n * d);
    void *want = malloc(ob), *got = malloc(ob);
    float *resid_got = malloc(sizeof(float) * (size_t)(n * d));
    cr_assert(want && got && resid_got, "oom");
    kt_buf dres = kt_buf_upload(resid, sizeof(float) * (size_t)(n * d));
    kt_buf dadd = kt_buf_upload(add, ob);
    kt_buf dw = kt_buf_upload(w, kn_dtype_size(dt) * (size_t)d);
    kt_buf db = kt_buf_upload(bias, kn_dtype_size(dt) * (size_t)d);
    kt_buf dout = kt_buf_alloc(ob);
    const void *a = with_add ? dadd.p : NULL;
    if (layer) {
        KT_OK(kn_layernorm(dt, dres.p, a, dw.p, db.p, dout.p, n, d, 1e-5f, 0));
        kn_ref_layernorm(dt, resid, with_add ? add : NULL, w, bias, want, n, d, 1e-5f);
    } else {
        KT_OK(kn_rmsnorm(dt, dres.p, a, dw.p, dout.p, n, d, 1e-5f, 0));
        kn_ref_rmsnorm(dt, resid, with_add ? add : NULL, w, want, n, d, 1e-5f);
    }
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_download(resid_got, &dres);
    kt_buf_check_guards(&dout, "norm out");
    kt_buf_check_guards(&dres, "norm resid");
    kt_check_close(KN_DTYPE_F32, resid_got, resid, (size_t)(n * d), 1e-6, "updated residual");
    kt_check_close(dt, got, want, (size_t)(n * d), kt_rtol(dt), c->name);
    kt_buf_free(&dres);
    kt_buf_free(&dadd);
    kt_buf_free(&dw);
    kt_buf_free(&db);
    kt_buf_free(&dout);
    free(resid);
    free(add);
    free(w);
    free(bias);
    free(want);
    free(got);
    free(resid_got);
}

Test(kn_rmsnorm, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_rmsnorm_cases_count; i++)
        if (kt_rmsnorm_cases[i].use & KT_TEST)
            run(&kt_rmsnorm_cases[i], false);
}

Test(kn_layernorm, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_layernorm_cases_count; i++)
        if (kt_layernorm_cases[i].use & KT_TEST)
            run(&kt_layernorm_cases[i], true);
}
