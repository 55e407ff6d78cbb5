/* test_activation.c — GPU SwiGLU (fused gate|up rows, in place) and GELU against the
 * references, both dtypes, odd sizes (the cases: kt_cases.c). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gelu.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"
#include "swiglu.h"

static void run_swiglu(const kt_act_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const kn_dtype dt = c->dt;
    const int64_t n = c->n, ff = c->ff, stride = 2 * ff; /* a fused gate|up GEMM output */
    const size_t bytes = kn_dtype_size(dt) * (size_t)(n * stride);
    void *x = kt_host_random(dt, (size_t)(n * stride), -6.0f, 6.0f, &r);
    void *want = kt_xmalloc(bytes), *got = kt_xmalloc(bytes);
    memcpy(want, x, bytes);
    kt_buf dx = kt_buf_upload(x, bytes);
    const size_t up_off = kn_dtype_size(dt) * (size_t)ff;
    /* in place: the output overwrites the gate half */
    KT_OK(kn_swiglu(dt, dx.p, (char *)dx.p + up_off, stride, dx.p, stride, n, ff, 0));
    kt_sync();
    kt_buf_download(got, &dx);
    kt_buf_check_guards(&dx, c->name);
    kn_ref_swiglu(dt, x, (char *)x + up_off, stride, want, stride, n, ff);
    kt_check_close(dt, got, want, (size_t)(n * stride), kt_rtol(dt), c->name);
    kt_buf_free(&dx);
    free(x);
    free(want);
    free(got);
}

/* exact: the erf form (kn_gelu_erf), else the tanh approximation (kn_gelu) */
static void run_gelu(const kt_act_case *c, bool exact)
{
    kt_rng r = kt_rng_make(c->seed);
    const kn_dtype dt = c->dt;
    const int64_t n = c->n;
    const size_t bytes = kn_dtype_size(dt) * (size_t)n;
    void *x = kt_host_random(dt, (size_t)n, -5.0f, 5.0f, &r);
    void *want = kt_xmalloc(bytes), *got = kt_xmalloc(bytes);
    kt_buf dx = kt_buf_upload(x, bytes), dout = kt_buf_alloc(bytes);
    if (exact)
        KT_OK(kn_gelu_erf(dt, dx.p, dout.p, n, 0));
    else
        KT_OK(kn_gelu(dt, dx.p, dout.p, n, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, c->name);
    if (exact)
        kn_ref_gelu_erf(dt, x, want, n);
    else
        kn_ref_gelu(dt, x, want, n);
    kt_check_close(dt, got, want, (size_t)n, kt_rtol(dt), c->name);
    kt_buf_free(&dx);
    kt_buf_free(&dout);
    free(x);
    free(want);
    free(got);
}

Test(kn_swiglu, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_swiglu_cases_count; i++)
        if (kt_swiglu_cases[i].use & KT_TEST)
            run_swiglu(&kt_swiglu_cases[i]);
}

/* the tanh approximation (ggml_gelu), what StarCoder and StarCoder2 run */
Test(kn_gelu, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_gelu_cases_count; i++)
        if (kt_gelu_cases[i].use & KT_TEST)
            run_gelu(&kt_gelu_cases[i], false);
}

/* the exact erf form, what BERT encoders run */
Test(kn_gelu_erf, matches_reference)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_gelu_erf_cases_count; i++)
        if (kt_gelu_erf_cases[i].use & KT_TEST)
            run_gelu(&kt_gelu_erf_cases[i], true);
}

/* the two forms differ by a few 1e-4: in f16 about half of the outputs on [-4, 4] round
 * differently, so a kernel that ran the tanh form for BERT is caught */
Test(kn_gelu_erf, differs_from_the_tanh_approximation)
{
    KT_REQUIRE_GPU();
    enum { N = 4096 };
    kt_rng r = kt_rng_make(81);
    void *x = kt_host_random(KN_DTYPE_F16, N, -4.0f, 4.0f, &r);
    void *tanh_form = kt_xmalloc(2 * N), *got = kt_xmalloc(2 * N);
    kt_buf dx = kt_buf_upload(x, 2 * N), dout = kt_buf_alloc(2 * N);
    KT_OK(kn_gelu_erf(KN_DTYPE_F16, dx.p, dout.p, N, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kn_ref_gelu(KN_DTYPE_F16, x, tanh_form, N);
    size_t n_diff = 0;
    for (size_t i = 0; i < N; i++)
        n_diff += memcmp((char *)got + 2 * i, (char *)tanh_form + 2 * i, 2) != 0;
    cr_expect_gt(n_diff, N / 10, "erf GELU equals the tanh form on %zu of %d inputs", N - n_diff,
                 N);
    kt_buf_free(&dx);
    kt_buf_free(&dout);
    free(x);
    free(tanh_form);
    free(got);
}
