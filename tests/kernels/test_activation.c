/* test_activation.c — GPU SwiGLU (fused gate|up rows, in place) and GELU against the
 * references, both dtypes, odd sizes. */
#include <stdlib.h>
#include <string.h>

#include "gelu.h"
#include "kt.h"
#include "ref.h"
#include "swiglu.h"

Test(kn_swiglu, matches_reference)
{
    KT_REQUIRE_GPU();
    const kn_dtype dts[] = {KN_DTYPE_F16, KN_DTYPE_BF16};
    for (int i = 0; i < 2; i++) {
        kt_rng r = kt_rng_make(60 + (uint64_t)i);
        const int64_t n = 7, ff = 1537, stride = 2 * ff; /* a fused gate|up GEMM output */
        const size_t bytes = kn_dtype_size(dts[i]) * (size_t)(n * stride);
        void *x = kt_host_random(dts[i], (size_t)(n * stride), -6.0f, 6.0f, &r);
        void *want = malloc(bytes), *got = malloc(bytes);
        cr_assert(want && got, "oom");
        memcpy(want, x, bytes);
        kt_buf dx = kt_buf_upload(x, bytes);
        const size_t up_off = kn_dtype_size(dts[i]) * (size_t)ff;
        /* in place: the output overwrites the gate half */
        KT_OK(kn_swiglu(dts[i], dx.p, (char *)dx.p + up_off, stride, dx.p, stride, n, ff, 0));
        kt_sync();
        kt_buf_download(got, &dx);
        kt_buf_check_guards(&dx, "swiglu");
        kn_ref_swiglu(dts[i], x, (char *)x + up_off, stride, want, stride, n, ff);
        kt_check_close(dts[i], got, want, (size_t)(n * stride), kt_rtol(dts[i]), "swiglu");
        kt_buf_free(&dx);
        free(x);
        free(want);
        free(got);
    }
}

Test(kn_gelu, matches_reference)
{
    KT_REQUIRE_GPU();
    const kn_dtype dts[] = {KN_DTYPE_F16, KN_DTYPE_BF16};
    for (int i = 0; i < 2; i++) {
        kt_rng r = kt_rng_make(70 + (uint64_t)i);
        const int64_t n = 8192 * 3 + 5;
        const size_t bytes = kn_dtype_size(dts[i]) * (size_t)n;
        void *x = kt_host_random(dts[i], (size_t)n, -5.0f, 5.0f, &r);
        void *want = malloc(bytes), *got = malloc(bytes);
        cr_assert(want && got, "oom");
        kt_buf dx = kt_buf_upload(x, bytes), dout = kt_buf_alloc(bytes);
        KT_OK(kn_gelu(dts[i], dx.p, dout.p, n, 0));
        kt_sync();
        kt_buf_download(got, &dout);
        kt_buf_check_guards(&dout, "gelu");
        kn_ref_gelu(dts[i], x, want, n);
        kt_check_close(dts[i], got, want, (size_t)n, kt_rtol(dts[i]), "gelu");
        kt_buf_free(&dx);
        kt_buf_free(&dout);
        free(x);
        free(want);
        free(got);
    }
}
