// wmma_emu.h — nvcuda::wmma (m16n16k16) for the CPU emulator, included by cuda_emu.h (the real
// <mma.h> declares nothing outside nvcc). As on the GPU, a fragment is spread over the 32
// lanes of a warp (8 elements each, in an order of the emulator's own: code that assumes the
// hardware's opaque mapping breaks here too); mma_sync is warp-collective and reads the other
// lanes' fragments between two warp barriers. Loads and stores check CUDA's alignment rules
// (256-bit pointer, 16-byte leading dimension). Products accumulate in fp32 in k order.
#ifndef SERVAL_WMMA_EMU_H
#define SERVAL_WMMA_EMU_H

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has m16n16k16 fragments only");
    typedef T element_type;
    typedef T storage_element_type;
    enum { num_elements = 8 };
    T x[num_elements];
};

namespace emu {
inline float f32(float v) { return v; }
inline float f32(__half v) { return __half2float(v); }
inline float f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> T from(float v);
template <> inline float from<float>(float v) { return v; }
template <> inline __half from<__half>(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 from<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline unsigned lane() { return kn_emu::cur->lin % 32; }
// Element e of a lane is tile entry e * 32 + lane (row-major over the 16x16 tile).
inline int row(int e) { return (e * 32 + (int)lane()) / 16; }
inline int col(int e) { return (e * 32 + (int)lane()) % 16; }

template <typename T> void check(const char *what, const void *p, unsigned ldm)
{
    if ((uintptr_t)p % 32)
        kn_emu::trap(what); // the message names the call; alignment is the rule it broke
    if (ldm * sizeof(T) % 16)
        kn_emu::trap(what);
}

template <typename T> void load(T *x, const T *p, unsigned ldm, bool row_major_mem, const char *what)
{
    check<T>(what, p, ldm);
    for (int e = 0; e < 8; e++)
        x[e] = row_major_mem ? p[row(e) * ldm + col(e)] : p[col(e) * ldm + row(e)];
}

template <typename T> void store(T *p, const T *x, unsigned ldm, bool row_major_mem, const char *what)
{
    check<T>(what, p, ldm);
    for (int e = 0; e < 8; e++)
        (row_major_mem ? p[row(e) * ldm + col(e)] : p[col(e) * ldm + row(e)]) = x[e];
}
} // namespace emu

template <typename Use, typename T, typename L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, const T &v)
{
    for (int e = 0; e < 8; e++)
        f.x[e] = v;
}

template <typename Use, typename T, typename L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm)
{
    static_assert(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>,
                  "matrix_a/matrix_b fragments carry their layout");
    emu::load(f.x, p, ldm, std::is_same_v<L, row_major>,
              "wmma::load_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes");
}

template <typename T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T> &f, const T *p, unsigned ldm,
                             layout_t layout)
{
    emu::load(f.x, p, ldm, layout == mem_row_major,
              "wmma::load_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes");
}

template <typename T>
inline void store_matrix_sync(T *p, const fragment<accumulator, 16, 16, 16, T> &f, unsigned ldm,
                              layout_t layout)
{
    emu::store(p, f.x, ldm, layout == mem_row_major,
               "wmma::store_matrix_sync: pointer not 256-bit aligned or ldm not a multiple of 16 bytes");
}

// d = a · b + c over the whole warp: each lane computes its own 8 outputs from every lane's
// a and b elements, then waits until all have read before anyone overwrites (d may be c).
template <typename TA, typename LA, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, 16, 16, 16, TC> &d,
                     const fragment<matrix_a, 16, 16, 16, TA, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, TA, LB> &b,
                     const fragment<accumulator, 16, 16, 16, TC> &c, bool satf = false)
{
    (void)satf;
    struct posted {
        const TA *a, *b;
    } mine{a.x, b.x};
    const uint64_t *slot = kn_emu::warp_exchange(0xffffffffu, (uint64_t)(uintptr_t)&mine, "wmma::mma_sync");
    float out[8];
    for (int e = 0; e < 8; e++) {
        const int r = emu::row(e), n = emu::col(e);
        float acc = emu::f32(c.x[e]);
        for (int k = 0; k < 16; k++) {
            const int ia = r * 16 + k, ib = k * 16 + n; // tile entries, owned by lane i % 32
            const posted *pa = (const posted *)(uintptr_t)slot[ia % 32];
            const posted *pb = (const posted *)(uintptr_t)slot[ib % 32];
            acc += emu::f32(pa->a[ia / 32]) * emu::f32(pb->b[ib / 32]);
        }
        out[e] = acc;
    }
    kn_emu::warp_exchange(0xffffffffu, 0, "wmma::mma_sync");
    for (int e = 0; e < 8; e++)
        d.x[e] = emu::from<TC>(out[e]);
}

} // namespace wmma
} // namespace nvcuda

#endif
