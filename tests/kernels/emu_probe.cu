// emu_probe.cu — small kernels that pin down the CPU emulator's CUDA semantics (warp
// shuffles as PTX defines them, barriers, shared memory poisoning, WMMA, its diagnoses of
// deadlocks and bad warp masks), driven by test_emu.c. Built only in SERVAL_CUDA_EMU builds:
// what they check about the emulator would mean nothing on a GPU.
#include <mma.h>

#include "common.cuh"
#include "spin_wait.cuh"
#include "emu_probe.h"

// out[warp * 32 * 8 + lane * 8 + i]: eight shuffles of v = 100 * warp + lane.
static __global__ void shfl_kernel(int32_t *out, int width)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int v = 100 * warp + lane;
    int32_t *o = out + (warp * 32 + lane) * 8;
    o[0] = __shfl_xor_sync(0xffffffffu, v, 1, width);
    o[1] = __shfl_xor_sync(0xffffffffu, v, 5, width);
    o[2] = __shfl_down_sync(0xffffffffu, v, 3, width);
    o[3] = __shfl_up_sync(0xffffffffu, v, 2, width);
    o[4] = __shfl_sync(0xffffffffu, v, 7, width);
    o[5] = __shfl_sync(0xffffffffu, v, lane + 1, width);
    o[6] = (int32_t)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[7] = (int32_t)kn_warp_sum((float)v);
}

extern "C" int emu_probe_shfl(int32_t *out, int n_warps, int width)
{
    // grid: one block of n_warps warps
    KN_LAUNCH(1, 32 * n_warps, 0, 0, shfl_kernel)(out, width);
    return cudaGetLastError();
}

// out[0] = block sum of 1..n, out[1] = block max, out[2] = a shared float nobody wrote.
static __global__ void block_kernel(float *out)
{
    __shared__ float scratch[32];
    __shared__ float never_written;
    if (blockDim.x > 4096) // never: without a write the compiler folds the read to 0
        never_written = 1.0f;
    const float v = (float)(threadIdx.x + 1);
    const float s = kn_block_sum(v, scratch);
    const float m = kn_block_max(v, scratch);
    if (threadIdx.x == 0) {
        out[0] = s;
        out[1] = m;
        out[2] = never_written;
    }
}

extern "C" int emu_probe_block(float *out, int threads)
{
    // grid: one block
    KN_LAUNCH(1, threads, 0, 0, block_kernel)(out);
    return cudaGetLastError();
}

// Threads below `split` wait at a block barrier while the rest of their warp waits for them
// in a shuffle: a deadlock on the GPU. (Threads that exit do not hold a barrier, as on the
// hardware, so an early return alone is not one.)
static __global__ void divergent_barrier_kernel(int split, float *out)
{
    float v = 1.0f;
    if ((int)threadIdx.x < split)
        __syncthreads();
    else
        v = kn_warp_sum(v);
    out[threadIdx.x] = v;
}

// Lane 0 exits; the rest shuffle with a mask that still names it.
static __global__ void exited_lane_kernel(float *out)
{
    if (threadIdx.x == 0)
        return;
    out[threadIdx.x] = kn_warp_sum(1.0f);
}

extern "C" int emu_probe_misuse(int which, float *out)
{
    // grid: one block of 64 threads
    if (which == 0)
        KN_LAUNCH(1, 64, 0, 0, divergent_barrier_kernel)(16, out);
    else
        KN_LAUNCH(1, 64, 0, 0, exited_lane_kernel)(out);
    return cudaGetLastError();
}

// x[i] += v over n elements (the graph tests replay it).
static __global__ void add_kernel(float *x, float v, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        x[i] += v;
}

extern "C" int emu_probe_add(float *x, float v, int n, cudaStream_t st)
{
    // grid: 2 blocks of 64 threads, grid-stride beyond
    KN_LAUNCH(2, 64, 0, st, add_kernel)(x, v, n);
    return cudaGetLastError();
}

// out[0] = 1 once *flag (written by another device) is at least `want`.
static __global__ void wait_kernel(const int *flag, int want, float *out)
{
    KN_SPIN_WAIT(*(const volatile int *)flag >= want);
    out[0] = 1.0f;
}

extern "C" int emu_probe_wait(const int *flag, int want, float *out, cudaStream_t st)
{
    // grid: one thread
    KN_LAUNCH(1, 1, 0, st, wait_kernel)(flag, want, out);
    return cudaGetLastError();
}

// C[16, 16] = A[16, 16] (row-major) · B[16, 16] (column-major), fp16 in, fp32 out, one warp.
static __global__ void wmma_kernel(const __half *a, const __half *b, float *c)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

extern "C" int emu_probe_wmma(const void *a, const void *b, float *c)
{
    // grid: one warp
    KN_LAUNCH(1, 32, 0, 0, wmma_kernel)((const __half *)a, (const __half *)b, c);
    return cudaGetLastError();
}
