/* emu_probe.h — launchers of the emulator's probe kernels (emu_probe.cu) for test_emu.c.
 * Each returns cudaGetLastError() after its launch; pointers are device memory. */
#ifndef SERVAL_EMU_PROBE_H
#define SERVAL_EMU_PROBE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out: [n_warps * 32 * 8] int32 results of eight warp intrinsics per lane (width 1..32). */
int emu_probe_shfl(int32_t *out, int n_warps, int width);
/* out: [3] block sum and max of 1..threads, and an unwritten shared float. */
int emu_probe_block(float *out, int threads);
/* which 0: half a warp at a block barrier, half in a shuffle; 1: a shuffle naming an exited
 * lane. out: [64]. */
int emu_probe_misuse(int which, float *out);
/* x: [n] += v. */
int emu_probe_add(float *x, float v, int n, cudaStream_t st);
/* out[0] = 1 once flag[0] >= want (KN_SPIN_WAIT: flag is written by another device). */
int emu_probe_wait(const int *flag, int want, float *out, cudaStream_t st);
/* c: [16 * 16] fp32 row-major = a (fp16 row-major) · b (fp16 column-major) + 1. */
int emu_probe_wmma(const void *a, const void *b, float *c);

#ifdef __cplusplus
}
#endif

#endif
