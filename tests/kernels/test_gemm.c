/* test_gemm.c — cuBLAS products against the reference: bf16 and fp16 in, same-type and fp32
 * out, odd shapes, one token (decode) and many (prefill), beta accumulation (the cases:
 * kt_cases.c). */
#include <stdlib.h>

#include "gemm.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"

static void run(kn_gemm *g, const kt_gemm_case *gc)
{
    const kn_dtype idt = gc->in_dt, odt = gc->out_dt;
    const int64_t m = gc->m, n = gc->n, k = gc->k;
    const float beta = gc->beta;
    kt_rng r = kt_rng_make(gc->seed);
    void *x = kt_host_random(idt, (size_t)(m * k), -1.0f, 1.0f, &r);
    void *w = kt_host_random(idt, (size_t)(n * k), -1.0f, 1.0f, &r);
    void *c = kt_host_random(odt, (size_t)(m * n), -1.0f, 1.0f, &r);
    const size_t cb = kn_dtype_size(odt) * (size_t)(m * n);
    void *got = malloc(cb);
    cr_assert(got, "oom");
    kt_buf dx = kt_buf_upload(x, kn_dtype_size(idt) * (size_t)(m * k));
    kt_buf dw = kt_buf_upload(w, kn_dtype_size(idt) * (size_t)(n * k));
    kt_buf dc = kt_buf_upload(c, cb);
    KT_OK(kn_gemm_run(g, 0, idt, dx.p, k, dw.p, k, odt, dc.p, n, m, n, k, 1.0f, beta));
    kt_sync();
    kt_buf_download(got, &dc);
    kt_buf_check_guards(&dc, "gemm C");
    kn_ref_gemm(idt, x, w, odt, c, m, n, k, 1.0f, beta);
    kt_check_close(odt, got, c, (size_t)(m * n), kt_gemm_rtol(odt), gc->name);
    kt_buf_free(&dx);
    kt_buf_free(&dw);
    kt_buf_free(&dc);
    free(x);
    free(w);
    free(c);
    free(got);
}

Test(kn_gemm, matches_reference)
{
    KT_REQUIRE_GPU();
    kn_gemm *g = NULL;
    KT_OK(kn_gemm_create(&g));
    for (size_t i = 0; i < kt_gemm_cases_count; i++)
        if (kt_gemm_cases[i].use & KT_TEST)
            run(g, &kt_gemm_cases[i]);
    kn_gemm_free(g);
}
