// cuda_emu.h — force-included (g++ -include) before every kernels/*.cu in SERVAL_CUDA_EMU
// builds: makes the CUDA dialect the kernels use compile as host C++ and run on the CPU
// emulator (emu_exec.cpp): thread/block indices, __syncthreads, warp intrinsics, the math and
// conversion intrinsics, and the kernel launch behind KN_LAUNCH (kernels/common.cuh).
// The real CUDA headers provide the types (dim3, __half, __nv_bfloat16, uint4) and their
// host-side conversions, so values round exactly as on the GPU.
#ifndef SERVAL_CUDA_EMU_H
#define SERVAL_CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is for kernels compiled as C++ (g++ -x c++)"
#endif

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define SERVAL_CUDA_EMU 1

namespace kn_emu {

// What a running CUDA thread sees (emu_exec.cpp owns the storage).
struct thread_ctx {
    uint3 tid;    // threadIdx
    unsigned lin; // linear index in the block: lane = lin % 32, warp = lin / 32
};
extern thread_ctx *cur;
extern uint3 cur_block;
extern dim3 cur_block_dim, cur_grid_dim;

void syncthreads();
// Warp barrier over `mask` (every lane named must arrive; the caller must be named): each
// lane posts v, and gets the 32 posted values back (entries outside the mask are garbage).
const uint64_t *warp_exchange(unsigned mask, uint64_t v, const char *what);
unsigned live_lanes();  // lanes of the caller's warp that have not exited
void *dyn_smem();       // this launch's dynamic shared memory (KN_DYN_SMEM)
[[noreturn]] void trap(const char *what);
// KN_SPIN_WAIT with its condition unmet: the launch is abandoned and runs again after the
// other devices have run (the wait a peer GPU would satisfy while this one spins).
[[noreturn]] void spin_retry();

// ---- launches ----------------------------------------------------------------------------
struct site {
    const char *kernel, *file;
    int line;
};
// Queues (or captures, or rejects with a launch error) one launch; body() runs one thread.
// ptrs: the pointer-typed arguments, which must be null or device-accessible.
void launch(std::function<void()> body, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            const site &where, const void *const *ptrs, const int *ptr_index, int n_ptrs);

// KN_LAUNCH(grid, block, smem, stream, kernel)(args...) in emulator builds. `call` is a
// generic lambda that calls the kernel by name, so overloads and template arguments are
// deduced from the arguments exactly as nvcc does for kernel<<<...>>>(args...).
template <class F> struct launcher {
    F call;
    dim3 grid, block;
    size_t smem;
    cudaStream_t st;
    site where;

    // The arguments are copied now, like a real launch (a captured graph replays these
    // values); every CUDA thread then gets its own copy as the kernel's parameters.
    template <class... A> void operator()(A &&...a) const
    {
        std::tuple<std::decay_t<A>...> args(std::forward<A>(a)...);
        const void *ptrs[sizeof...(A) + 1];
        int idx[sizeof...(A) + 1], n = 0, i = 0;
        std::apply(
            [&](const auto &...v) {
                (
                    [&](const auto &x) {
                        if constexpr (std::is_pointer_v<std::decay_t<decltype(x)>>) {
                            ptrs[n] = (const void *)x;
                            idx[n++] = i;
                        }
                        i++;
                    }(v),
                    ...);
            },
            args);
        const F f = call;
        launch([f, args]() { std::apply(f, args); }, grid, block, smem, st, where, ptrs, idx, n);
    }
};

template <class F>
launcher<F> make_launcher(F call, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                          const char *name, const char *file, int line)
{
    return launcher<F>{call, grid, block, smem, st, site{name, file, line}};
}

// ---- warp shuffles, after PTX shfl.sync: c = ((32 - width) << 8) | clamp -------------------
enum shfl_mode { SHFL_UP, SHFL_DOWN, SHFL_BFLY, SHFL_IDX };

template <class T> T shfl(unsigned mask, T v, shfl_mode mode, int b, int width, const char *what)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 32/64-bit value");
    if (width <= 0 || width > 32 || (width & (width - 1)))
        trap("shuffle width is not a power of two in 1..32");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    const uint64_t *slot = warp_exchange(mask, bits, what);
    const int lane = (int)(cur->lin % 32), seg = 32 - width;
    const int min_lane = lane & seg, clamp = mode == SHFL_UP ? 0 : 31;
    const int max_lane = min_lane | (clamp & ~seg);
    int j = lane;
    bool ok = false;
    switch (mode) {
    case SHFL_UP: j = lane - (b & 31), ok = j >= max_lane; break;
    case SHFL_DOWN: j = lane + (b & 31), ok = j <= max_lane; break;
    case SHFL_BFLY: j = lane ^ (b & 31), ok = j <= max_lane; break;
    case SHFL_IDX: j = min_lane | (b & 31 & ~seg), ok = j <= max_lane; break;
    }
    if (!ok)
        j = lane;
    if (!(mask >> j & 1u))
        trap("shuffle reads a lane outside its mask (undefined on the GPU)");
    T r;
    memcpy(&r, &slot[j], sizeof(T));
    return r;
}

} // namespace kn_emu

// The emulator's own sources see only the declarations above; kernels see the CUDA dialect.
#ifndef KN_EMU_RUNTIME

// Blocks run one after another on the emulator's device thread, so a function-local static
// is shared by the threads of a block exactly like shared memory. thread_local puts all of it
// in the device thread's TLS block, which the executor poisons (0xff: NaN in every float
// type) before each launch, so a read of shared memory nobody wrote shows.
#undef __shared__
#define __shared__ static thread_local
#define __launch_bounds__(...)

// cuda_runtime.h's C++ overloads that take a kernel exist only under nvcc.
template <class F>
static inline cudaError_t cudaFuncSetAttribute(F *kernel, cudaFuncAttribute attr, int value)
{
    return ::cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel), attr, value);
}

// ---- what kernels name ---------------------------------------------------------------------
#define threadIdx (static_cast<const uint3 &>(kn_emu::cur->tid))
#define blockIdx (static_cast<const uint3 &>(kn_emu::cur_block))
#define blockDim (static_cast<const dim3 &>(kn_emu::cur_block_dim))
#define gridDim (static_cast<const dim3 &>(kn_emu::cur_grid_dim))
#define warpSize 32

#define __syncthreads() kn_emu::syncthreads()
static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    kn_emu::warp_exchange(mask, 0, "__syncwarp");
}
static inline unsigned __activemask(void) { return kn_emu::live_lanes(); }
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}
static inline void __threadfence_system(void) {}
[[noreturn]] static inline void __trap(void) { kn_emu::trap("__trap()"); }

template <class T> static inline T __shfl_sync(unsigned m, T v, int src, int width = 32)
{
    return kn_emu::shfl(m, v, kn_emu::SHFL_IDX, src, width, "__shfl_sync");
}
template <class T> static inline T __shfl_up_sync(unsigned m, T v, unsigned d, int width = 32)
{
    return kn_emu::shfl(m, v, kn_emu::SHFL_UP, (int)d, width, "__shfl_up_sync");
}
template <class T> static inline T __shfl_down_sync(unsigned m, T v, unsigned d, int width = 32)
{
    return kn_emu::shfl(m, v, kn_emu::SHFL_DOWN, (int)d, width, "__shfl_down_sync");
}
template <class T> static inline T __shfl_xor_sync(unsigned m, T v, int lm, int width = 32)
{
    return kn_emu::shfl(m, v, kn_emu::SHFL_BFLY, lm, width, "__shfl_xor_sync");
}
static inline unsigned __ballot_sync(unsigned mask, int pred)
{
    const uint64_t *s = kn_emu::warp_exchange(mask, pred != 0, "__ballot_sync");
    unsigned r = 0;
    for (int i = 0; i < 32; i++)
        if ((mask >> i & 1u) && s[i])
            r |= 1u << i;
    return r;
}
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- math and bit intrinsics -----------------------------------------------------------------
// glibc declares __expf and friends itself, so these are macros over kn_emu_ functions.
// __expf is ex2.approx(x * log2 e) on the GPU: the rounded product is its main error.
static inline float kn_emu_expf(float x) { return exp2f(x * 1.44269504088896341f); }
static inline float kn_emu_logf(float x) { return log2f(x) * 0.693147180559945309f; }
static inline float kn_emu_powf(float x, float y) { return exp2f(y * log2f(x)); }
#define __expf(x) kn_emu_expf(x)
#define __logf(x) kn_emu_logf(x)
#define __powf(x, y) kn_emu_powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
// Explicitly rounded operations: the emulator builds with -ffp-contract=off, so these are
// never fused, as on the GPU.
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }

template <class To, class From> static inline To kn_emu_bits(From f)
{
    static_assert(sizeof(To) == sizeof(From), "bit cast of equal sizes");
    To t;
    memcpy(&t, &f, sizeof t);
    return t;
}
static inline unsigned __float_as_uint(float x) { return kn_emu_bits<unsigned>(x); }
static inline float __uint_as_float(unsigned x) { return kn_emu_bits<float>(x); }
static inline int __float_as_int(float x) { return kn_emu_bits<int>(x); }
static inline float __int_as_float(int x) { return kn_emu_bits<float>(x); }
static inline long long __double_as_longlong(double x) { return kn_emu_bits<long long>(x); }
static inline double __longlong_as_double(long long x) { return kn_emu_bits<double>(x); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; i++)
        r |= (x >> i & 1u) << (31 - i);
    return r;
}
template <class T> static inline T __ldg(const T *p) { return *p; }

// min/max as CUDA overloads them for integers and floats (mixed types: the common type).
template <class A, class B> static inline std::common_type_t<A, B> min(A a, B b)
{
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B> static inline std::common_type_t<A, B> max(A a, B b)
{
    using C = std::common_type_t<A, B>;
    return (C)a > (C)b ? (C)a : (C)b;
}

// Atomics: blocks and threads never run concurrently, so plain read-modify-writes are atomic.
template <class T> static inline T atomicAdd(T *p, T v)
{
    T o = *p;
    *p = o + v;
    return o;
}
template <class T> static inline T atomicSub(T *p, T v)
{
    T o = *p;
    *p = o - v;
    return o;
}
template <class T> static inline T atomicMax(T *p, T v)
{
    T o = *p;
    *p = o > v ? o : v;
    return o;
}
template <class T> static inline T atomicMin(T *p, T v)
{
    T o = *p;
    *p = o < v ? o : v;
    return o;
}
template <class T> static inline T atomicExch(T *p, T v)
{
    T o = *p;
    *p = v;
    return o;
}
template <class T> static inline T atomicCAS(T *p, T cmp, T v)
{
    T o = *p;
    if (o == cmp)
        *p = v;
    return o;
}
template <class T> static inline T atomicOr(T *p, T v)
{
    T o = *p;
    *p = o | v;
    return o;
}
template <class T> static inline T atomicAnd(T *p, T v)
{
    T o = *p;
    *p = o & v;
    return o;
}

#include "wmma_emu.h"

#endif // KN_EMU_RUNTIME
#endif
