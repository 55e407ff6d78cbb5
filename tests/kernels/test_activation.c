/* test_activation.c — GPU SwiGLU (fused gate|up rows, in place) and GELU against the
 * references, both dtypes, odd sizes (the cases: kt_cases.c). */
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

static void run_gelu(const kt_act_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    const kn_dtype dt = c->dt;
    const int64_t n = c->n;
    const size_t bytes = kn_dtype_size(dt) * (size_t)n;
    void *x = kt_host_random(dt, (size_t)n, -5.0f, 5.0f, &r);
    void *want = kt_xmalloc(bytes), *got = kt_xmalloc(bytes);
    kt_buf dx = kt_buf_upload(x, bytes), dout = kt_buf_alloc(bytes);
    KT_OK(kn_gelu(dt, dx.p, dout.p, n, 0));
    kt_sync();
    kt_buf_download(got, &dout);
    kt_buf_check_guards(&dout, c->name);
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
            run_gelu(&kt_gelu_cases[i]);
}
