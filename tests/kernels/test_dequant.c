/* test_dequant.c — GPU dequantisation equals the reference bit for bit: every block type,
 * to fp16, bf16 and fp32, rows of several blocks (the cases: kt_cases.c). */
#include <stdlib.h>
#include <string.h>

#include "dequant.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"

static void run(const kt_dequant_case *c)
{
    kt_rng r = kt_rng_make(c->seed);
    size_t src_bytes = 0;
    void *src = kt_dequant_source(c, &r, &src_bytes);
    kt_buf ds = kt_buf_upload(src, src_bytes);
    const size_t ob = kn_dtype_size(c->out_dt) * (size_t)(c->rows * c->cols);
    void *want = kt_xmalloc(ob), *got = kt_xmalloc(ob);
    kt_buf dd = kt_buf_alloc(ob);
    KT_OK(kn_dequant(c->type, ds.p, c->rows, c->cols, c->out_dt, dd.p, 0));
    kt_sync();
    kt_buf_download(got, &dd);
    kt_buf_check_guards(&dd, c->name);
    kn_ref_dequant(c->type, src, c->rows, c->cols, c->out_dt, want);
    cr_assert(memcmp(got, want, ob) == 0, "%s differs", c->name);
    kt_buf_free(&dd);
    kt_buf_free(&ds);
    free(want);
    free(got);
    free(src);
}

Test(kn_dequant, equals_reference_bit_for_bit)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_dequant_cases_count; i++)
        if (kt_dequant_cases[i].use & KT_TEST)
            run(&kt_dequant_cases[i]);
}

Test(kn_dequant, rejects_partial_blocks)
{
    uint8_t src[64] = {0};
    uint16_t dst[64] = {0};
    cr_assert(kn_dequant(KN_QTYPE_Q4_0, src, 1, 31, KN_DTYPE_F16, dst, 0) == KN_ERR_INVALID, "31 cols");
    cr_assert(kn_dequant((kn_qtype)10, src, 1, 256, KN_DTYPE_F16, dst, 0) == KN_ERR_UNSUPPORTED, "Q2_K");
    cr_assert(kn_dequant(KN_QTYPE_Q4_K, src, 1, 128, KN_DTYPE_F16, dst, 0) == KN_ERR_INVALID, "half a Q4_K block");
}
