/* test_gemm.c — cuBLAS products against the reference: bf16 and fp16 in, same-type and fp32
 * out, odd shapes, one token (decode) and many (prefill), beta accumulation. */
#include <stdlib.h>

#include "gemm.h"
#include "kt.h"
#include "ref.h"

static void run(kn_gemm *g, kn_dtype idt, kn_dtype odt, int64_t m, int64_t n, int64_t k, float beta,
                uint64_t seed)
{
    kt_rng r = kt_rng_make(seed);
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
    /* fp32 sums of k products in different orders: loosen fp32 outputs to 1e-3 */
    kt_check_close(odt, got, c, (size_t)(m * n), odt == KN_DTYPE_F32 ? 1e-3 : kt_rtol(odt), "gemm");
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
    run(g, KN_DTYPE_BF16, KN_DTYPE_BF16, 1, 1536, 576, 0.0f, 1);   /* decode, SmolLM2 up proj */
    run(g, KN_DTYPE_F16, KN_DTYPE_F16, 37, 577, 192, 0.0f, 2);     /* odd shapes */
    run(g, KN_DTYPE_BF16, KN_DTYPE_F32, 5, 4099, 576, 0.0f, 3);    /* logits in fp32 */
    run(g, KN_DTYPE_F16, KN_DTYPE_F32, 64, 256, 1024, 1.0f, 4);    /* accumulate into C */
    kn_gemm_free(g);
}
