/* convert.c — reference fp16/bf16 <-> fp32 conversion and typed element access. */
#include <math.h>
#include <string.h>

#include "ref.h"

float kn_ref_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)man, -24); /* zero or subnormal */
        return sign ? -f : f;
    }
    uint32_t bits;
    if (exp == 31)
        bits = sign | 0x7f800000u | (man << 13);
    else
        bits = sign | ((exp + 112) << 23) | (man << 13);
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t kn_ref_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return sign | 0x7e00; /* NaN */
    if (ax >= 0x477ff000u)     /* rounds to >= 65520: infinity */
        return sign | 0x7c00;
    if (ax < 0x38800000u) { /* below the smallest normal half: a subnormal or zero */
        float a;
        memcpy(&a, &ax, 4);
        /* a * 2^24 rounded to nearest even (the default rounding mode) is the mantissa */
        return sign | (uint16_t)nearbyintf(a * 16777216.0f);
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even */
    const uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float kn_ref_bf16_to_f32(uint16_t h)
{
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t kn_ref_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float kn_ref_load(kn_dtype t, const void *p, size_t i)
{
    uint16_t h;
    float f;
    switch (t) {
    case KN_DTYPE_F32: memcpy(&f, (const char *)p + 4 * i, 4); return f;
    case KN_DTYPE_F16: memcpy(&h, (const char *)p + 2 * i, 2); return kn_ref_f16_to_f32(h);
    case KN_DTYPE_BF16: memcpy(&h, (const char *)p + 2 * i, 2); return kn_ref_bf16_to_f32(h);
    }
    return NAN;
}

void kn_ref_store(kn_dtype t, void *p, size_t i, float v)
{
    uint16_t h;
    switch (t) {
    case KN_DTYPE_F32: memcpy((char *)p + 4 * i, &v, 4); return;
    case KN_DTYPE_F16: h = kn_ref_f32_to_f16(v); memcpy((char *)p + 2 * i, &h, 2); return;
    case KN_DTYPE_BF16: h = kn_ref_f32_to_bf16(v); memcpy((char *)p + 2 * i, &h, 2); return;
    }
}

float kn_ref_round(kn_dtype t, float v)
{
    switch (t) {
    case KN_DTYPE_F32: return v;
    case KN_DTYPE_F16: return kn_ref_f16_to_f32(kn_ref_f32_to_f16(v));
    case KN_DTYPE_BF16: return kn_ref_bf16_to_f32(kn_ref_f32_to_bf16(v));
    }
    return NAN;
}
