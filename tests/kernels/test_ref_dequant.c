/* test_ref_dequant.c — CPU: the kernels' reference dequantisation and fp16/bf16 conversions
 * equal engine/cpu/quant.c's bit for bit, on blocks quantised from random rows. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kt.h"
#include "quant.h"
#include "ref.h"

static void check_type(gguf_dtype gt, kn_qtype kt, int64_t n)
{
    kt_rng r = kt_rng_make(100 + (uint64_t)gt);
    float *x = malloc(sizeof(float) * (size_t)n), *a = malloc(sizeof(float) * (size_t)n),
          *b = malloc(sizeof(float) * (size_t)n);
    void *q = malloc(gguf_dtype_row_bytes(gt, n));
    cr_assert(x && a && b && q, "oom");
    for (int64_t i = 0; i < n; i++)
        x[i] = kt_rng_uniform(&r, -3.0f, 3.0f);
    quant_quantize_row(gt, x, q, n);
    quant_dequant_row(gt, q, a, n);
    kn_ref_dequant_row(kt, q, b, n);
    cr_assert(gguf_dtype_row_bytes(gt, n) ==
                  (size_t)(n / kn_qtype_block_elems(kt)) * (size_t)kn_qtype_block_bytes(kt),
              "block size of type %d differs", (int)kt);
    for (int64_t i = 0; i < n; i++)
        cr_assert(memcmp(&a[i], &b[i], 4) == 0, "type %d element %lld: engine %.9g, ref %.9g",
                  (int)kt, (long long)i, a[i], b[i]);
    free(x);
    free(a);
    free(b);
    free(q);
}

Test(ref_dequant, equals_engine_quant_bit_for_bit)
{
    check_type(GGUF_DTYPE_Q4_0, KN_QTYPE_Q4_0, 32 * 37);
    check_type(GGUF_DTYPE_Q4_1, KN_QTYPE_Q4_1, 32 * 37);
    check_type(GGUF_DTYPE_Q8_0, KN_QTYPE_Q8_0, 32 * 37);
    check_type(GGUF_DTYPE_Q6_K, KN_QTYPE_Q6_K, 256 * 5);
    check_type(GGUF_DTYPE_Q5_0, KN_QTYPE_Q5_0, 32 * 37);
    check_type(GGUF_DTYPE_Q5_1, KN_QTYPE_Q5_1, 32 * 37);
    check_type(GGUF_DTYPE_Q4_K, KN_QTYPE_Q4_K, 256 * 5);
    check_type(GGUF_DTYPE_Q5_K, KN_QTYPE_Q5_K, 256 * 5);
    check_type(GGUF_DTYPE_F16, KN_QTYPE_F16, 301);
    check_type(GGUF_DTYPE_BF16, KN_QTYPE_BF16, 301);
    check_type(GGUF_DTYPE_F32, KN_QTYPE_F32, 301);
}

Test(ref_dequant, conversions_equal_engine)
{
    kt_rng r = kt_rng_make(7);
    /* every half and bf16 bit pattern decodes the same */
    for (uint32_t h = 0; h < 65536; h++) {
        const float a = quant_f16_to_f32((uint16_t)h), b = kn_ref_f16_to_f32((uint16_t)h);
        cr_assert(memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b)), "f16 0x%04x", h);
        const float c = quant_bf16_to_f32((uint16_t)h), d = kn_ref_bf16_to_f32((uint16_t)h);
        cr_assert(memcmp(&c, &d, 4) == 0 || (isnan(c) && isnan(d)), "bf16 0x%04x", h);
    }
    /* random floats over many magnitudes (subnormal halves, overflow) round the same */
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)kt_rng_next(&r);
        if ((bits & 0x7f800000u) == 0x7f800000u)
            continue; /* NaN/inf payloads: only the class matters */
        float f;
        memcpy(&f, &bits, 4);
        cr_assert(quant_f32_to_f16(f) == kn_ref_f32_to_f16(f), "f16(%.9g): 0x%04x vs 0x%04x",
                  f, quant_f32_to_f16(f), kn_ref_f32_to_f16(f));
        cr_assert(quant_f32_to_bf16(f) == kn_ref_f32_to_bf16(f), "bf16(%.9g)", f);
    }
}
