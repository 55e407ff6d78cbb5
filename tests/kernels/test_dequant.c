/* test_dequant.c — GPU dequantisation equals the reference bit for bit: every block type,
 * to fp16, bf16 and fp32, rows of several blocks. */
#include <stdlib.h>
#include <string.h>

#include "dequant.h"
#include "kt.h"
#include "ref.h"

Test(kn_dequant, equals_reference_bit_for_bit)
{
    KT_REQUIRE_GPU();
    const kn_qtype types[] = {KN_QTYPE_Q4_0, KN_QTYPE_Q4_1, KN_QTYPE_Q8_0, KN_QTYPE_Q6_K,
                              KN_QTYPE_F16, KN_QTYPE_BF16, KN_QTYPE_F32};
    const kn_dtype outs[] = {KN_DTYPE_F16, KN_DTYPE_BF16, KN_DTYPE_F32};
    kt_rng r = kt_rng_make(80);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const kn_qtype t = types[i];
        const int64_t rows = 13, cols = 3 * 256; /* whole blocks of every type */
        const size_t src_bytes = (size_t)(rows * cols / kn_qtype_block_elems(t)) *
                                 (size_t)kn_qtype_block_bytes(t);
        /* random bytes are valid blocks, except NaN/inf scales: keep scale bytes finite */
        uint8_t *src = malloc(src_bytes);
        cr_assert(src, "oom");
        for (size_t b = 0; b < src_bytes; b++)
            src[b] = (uint8_t)kt_rng_next(&r);
        if (t == KN_QTYPE_F32 || t == KN_QTYPE_F16 || t == KN_QTYPE_BF16) {
            const kn_dtype dt = t == KN_QTYPE_F32 ? KN_DTYPE_F32 : t == KN_QTYPE_F16 ? KN_DTYPE_F16 : KN_DTYPE_BF16;
            free(src);
            src = kt_host_random(dt, (size_t)(rows * cols), -100.0f, 100.0f, &r);
        } else {
            const int bb = kn_qtype_block_bytes(t);
            const int d_off = t == KN_QTYPE_Q6_K ? 208 : 0;
            for (size_t b = 0; b < src_bytes; b += (size_t)bb) {
                src[b + (size_t)d_off + 1] &= 0x3b; /* |d| < 2: exponent never all ones */
                if (t == KN_QTYPE_Q4_1)
                    src[b + 3] &= 0x3b;
            }
        }
        kt_buf ds = kt_buf_upload(src, src_bytes);
        for (size_t o = 0; o < 3; o++) {
            const size_t ob = kn_dtype_size(outs[o]) * (size_t)(rows * cols);
            void *want = malloc(ob), *got = malloc(ob);
            cr_assert(want && got, "oom");
            kt_buf dd = kt_buf_alloc(ob);
            KT_OK(kn_dequant(t, ds.p, rows, cols, outs[o], dd.p, 0));
            kt_sync();
            kt_buf_download(got, &dd);
            kt_buf_check_guards(&dd, "dequant out");
            kn_ref_dequant(t, src, rows, cols, outs[o], want);
            cr_assert(memcmp(got, want, ob) == 0, "type %d to dtype %d differs", (int)t, (int)outs[o]);
            kt_buf_free(&dd);
            free(want);
            free(got);
        }
        kt_buf_free(&ds);
        free(src);
    }
}

Test(kn_dequant, rejects_partial_blocks)
{
    uint8_t src[64] = {0};
    uint16_t dst[64] = {0};
    cr_assert(kn_dequant(KN_QTYPE_Q4_0, src, 1, 31, KN_DTYPE_F16, dst, 0) == KN_ERR_INVALID, "31 cols");
    cr_assert(kn_dequant((kn_qtype)12, src, 1, 256, KN_DTYPE_F16, dst, 0) == KN_ERR_UNSUPPORTED, "Q4_K");
}
