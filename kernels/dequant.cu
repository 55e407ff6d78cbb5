// dequant.cu — GGML blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32) to fp16/bf16/fp32 at load
// time. One thread per output element (coalesced writes; the block bytes come through L1),
// with the products rounded in the reference's order (no FMA contraction), so the result
// equals kernels/ref/dequant.c bit for bit.
#include "dequant.h"

#include "common.cuh"

static __device__ __forceinline__ float half_at(const uint8_t *p)
{
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

// K-quant 6-bit scale (or min, mins = 1) of sub-block s (0..7): GGML's get_scale_min_k4
static __device__ __forceinline__ int k_scale_min(const uint8_t *q, int s, int mins)
{
    if (s < 4)
        return q[s + 4 * mins] & 63;
    return mins ? (q[s + 4] >> 4) | ((q[s] >> 6) << 4) : (q[s + 4] & 0xF) | ((q[s - 4] >> 6) << 4);
}

// Q5_0 / Q5_1 quant j (0..31) of a block whose qh starts at p: low nibbles are elements 0..15,
// high nibbles 16..31; bit j of the little-endian u32 qh is bit 4 of element j
static __device__ __forceinline__ int q5_at(const uint8_t *p, int j)
{
    const int nib = j < 16 ? p[4 + j] & 0x0F : p[4 + j - 16] >> 4;
    return nib | (((p[j / 8] >> (j % 8)) & 1) << 4);
}

// Q4_K / Q5_K element j (0..255): group g of 64, sub-block s = 2g (+1 for the high nibbles),
// x = (d*sc) * q - (dmin*m), each product rounded as the reference does
static __device__ __forceinline__ float k45_at(const uint8_t *b, int j, bool five)
{
    const int g = j / 64, hi = (j % 64) / 32, l = j % 32, s = 2 * g + hi;
    const uint8_t *qs = b + 4 + 12 + (five ? 32 : 0) + 32 * g;
    int q = hi ? qs[l] >> 4 : qs[l] & 0xF;
    if (five)
        q += ((b[16 + l] >> s) & 1) << 4;
    const float d1 = __fmul_rn(half_at(b), (float)k_scale_min(b + 4, s, 0));
    const float m1 = __fmul_rn(half_at(b + 2), (float)k_scale_min(b + 4, s, 1));
    return __fsub_rn(__fmul_rn(d1, (float)q), m1);
}

static __device__ __forceinline__ float dequant_elem(kn_qtype t, const uint8_t *b, int j)
{
    switch (t) {
    case KN_QTYPE_F32: return __uint_as_float(b[0] | (b[1] << 8) | (b[2] << 16) | ((unsigned)b[3] << 24));
    case KN_QTYPE_F16: return half_at(b);
    case KN_QTYPE_BF16: return __uint_as_float((unsigned)(b[0] | (b[1] << 8)) << 16);
    case KN_QTYPE_Q4_0: {
        const int q = j < 16 ? (b[2 + j] & 0x0F) : (b[2 + j - 16] >> 4);
        return __fmul_rn((float)(q - 8), half_at(b));
    }
    case KN_QTYPE_Q4_1: {
        const int q = j < 16 ? (b[4 + j] & 0x0F) : (b[4 + j - 16] >> 4);
        return __fadd_rn(__fmul_rn((float)q, half_at(b)), half_at(b + 2));
    }
    case KN_QTYPE_Q5_0: return __fmul_rn((float)(q5_at(b + 2, j) - 16), half_at(b));
    case KN_QTYPE_Q5_1: return __fadd_rn(__fmul_rn((float)q5_at(b + 4, j), half_at(b)), half_at(b + 2));
    case KN_QTYPE_Q8_0: return __fmul_rn((float)(int8_t)b[2 + j], half_at(b));
    case KN_QTYPE_Q4_K: return k45_at(b, j, false);
    case KN_QTYPE_Q5_K: return k45_at(b, j, true);
    case KN_QTYPE_Q6_K: {
        // element j: half h of 128, quarter qr of 32, lane l (see ggml's dequantize_row_q6_K)
        const int h = j / 128, qr = (j % 128) / 32, l = j % 32;
        const uint8_t lo = b[h * 64 + l + (qr & 1) * 32];
        const int nib = qr >= 2 ? lo >> 4 : lo & 0xF;
        const int hi = (b[128 + h * 32 + l] >> (2 * qr)) & 3;
        const int q = (nib | (hi << 4)) - 32;
        const int8_t sc = (int8_t)b[192 + h * 8 + l / 16 + 2 * qr];
        return __fmul_rn(__fmul_rn(half_at(b + 208), (float)sc), (float)q);
    }
    }
    return 0.0f;
}

template <typename OT>
static __global__ void dequant_kernel(kn_qtype t, const uint8_t *src, int64_t n_rows,
                                      int64_t n_cols, OT *dst)
{
    const int be = kn_qtype_block_elems(t), bb = kn_qtype_block_bytes(t);
    const int64_t row_bytes = n_cols / be * bb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n_rows * n_cols;
         e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = e / n_cols, c = e % n_cols;
        const uint8_t *b = src + r * row_bytes + c / be * bb;
        dst[e] = kn_from_f32<OT>(dequant_elem(t, b, (int)(c % be)));
    }
}

extern "C" int kn_dequant_supported(kn_qtype t) { return kn_qtype_block_elems(t) > 0; }

extern "C" kn_status kn_dequant(kn_qtype t, const void *src, int64_t n_rows, int64_t n_cols,
                                kn_dtype odt, void *dst, cudaStream_t st)
{
    KN_REQUIRE(src && dst, "dequant: null pointer");
    if (!kn_dequant_supported(t))
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "dequant: type %d", (int)t);
    KN_REQUIRE(n_rows >= 0 && n_cols > 0 && n_cols % kn_qtype_block_elems(t) == 0 &&
                   n_rows <= INT64_MAX / n_cols,
               "dequant: %lld x %lld is not whole blocks of type %d", (long long)n_rows,
               (long long)n_cols, (int)t);
    if (n_rows == 0)
        return KN_OK;
    const int64_t total = n_rows * n_cols;
    // grid: enough 256-thread CTAs to cover the elements, at most 64k (grid-stride beyond)
    const unsigned blocks = (unsigned)(total / 256 + 1 < 65536 ? total / 256 + 1 : 65536);
    const uint8_t *s = (const uint8_t *)src;
    switch (odt) {
    case KN_DTYPE_F32:
        KN_LAUNCH(blocks, 256, 0, st, dequant_kernel)(t, s, n_rows, n_cols, (float *)dst);
        break;
    case KN_DTYPE_F16:
        KN_LAUNCH(blocks, 256, 0, st, dequant_kernel)(t, s, n_rows, n_cols, (__half *)dst);
        break;
    case KN_DTYPE_BF16:
        KN_LAUNCH(blocks, 256, 0, st, dequant_kernel)(t, s, n_rows, n_cols, (__nv_bfloat16 *)dst);
        break;
    default:
        return kn_record(KN_ERR_INVALID, __FILE__, __LINE__, "dequant: dtype %d", (int)odt);
    }
    KN_LAUNCH_CHECK();
    return KN_OK;
}
