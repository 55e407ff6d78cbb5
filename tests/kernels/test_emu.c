/* test_emu.c — the CPU emulator itself (SERVAL_CUDA_EMU builds only): warp shuffles against
 * the CUDA programming guide's definitions, barriers and poisoned shared memory, WMMA, the
 * diagnoses of deadlocks and bad masks, stream capture and graph replay (arguments by value,
 * memory read at replay, capture-illegal calls rejected), deferred stream work, cuBLAS GEMM
 * semantics and argument checks, and the memory checks on copies and kernel arguments. The
 * kernel tests are only as good as these semantics. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

/* nccl.h declares ncclGroupStart() and friends without (void) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#include "emu_probe.h"
#include "kt.h"
#include "ref.h"

#define CUDA_OK(call)                                                                         \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        cr_assert(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorName(e_));                 \
    } while (0)

/* The guide's words: xor reads earlier width-groups but not later ones; down/up stay inside
 * the group; an index wraps modulo width inside it. */
static int src_lane(int kind, int lane, int b, int width)
{
    const int g = lane / width * width;
    int j;
    switch (kind) {
    case 0: j = lane ^ b; return j / width > lane / width ? lane : j;
    case 1: j = lane + b; return j >= g + width ? lane : j;
    case 2: j = lane - b; return j < g ? lane : j;
    default: return g + b % width;
    }
}

Test(emu, shuffles_follow_cuda)
{
    enum { WARPS = 2, N = WARPS * 32 * 8 };
    const int widths[] = {32, 16, 8, 4, 2, 1};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        const int width = widths[w];
        kt_buf d = kt_buf_alloc(sizeof(int32_t) * N);
        CUDA_OK(emu_probe_shfl(d.p, WARPS, width));
        int32_t got[N];
        kt_buf_download(got, &d);
        for (int wp = 0; wp < WARPS; wp++)
            for (int l = 0; l < 32; l++) {
                const int32_t *o = got + (wp * 32 + l) * 8;
#define V(j) (100 * wp + (j))
                cr_assert(o[0] == V(src_lane(0, l, 1, width)), "xor 1 width %d lane %d: %d", width, l, o[0]);
                cr_assert(o[1] == V(src_lane(0, l, 5, width)), "xor 5 width %d lane %d: %d", width, l, o[1]);
                cr_assert(o[2] == V(src_lane(1, l, 3, width)), "down 3 width %d lane %d: %d", width, l, o[2]);
                cr_assert(o[3] == V(src_lane(2, l, 2, width)), "up 2 width %d lane %d: %d", width, l, o[3]);
                cr_assert(o[4] == V(src_lane(3, l, 7, width)), "idx 7 width %d lane %d: %d", width, l, o[4]);
                cr_assert(o[5] == V(src_lane(3, l, l + 1, width)), "idx lane+1 width %d lane %d: %d", width, l, o[5]);
#undef V
                cr_assert((uint32_t)o[6] == 0x49249249u, "ballot of lane %% 3 == 0: 0x%08x", (unsigned)o[6]);
                cr_assert(o[7] == 3200 * wp + 496, "warp sum %d", o[7]);
            }
        kt_buf_free(&d);
    }
}

Test(emu, block_reductions_and_poisoned_shared_memory)
{
    const int threads[] = {32, 96, 256, 1024};
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        const int n = threads[i];
        kt_buf d = kt_buf_alloc(3 * sizeof(float));
        CUDA_OK(emu_probe_block(d.p, n));
        float got[3];
        kt_buf_download(got, &d);
        cr_assert(got[0] == (float)n * (n + 1) / 2 && got[1] == (float)n, "%d threads: sum %g max %g",
                  n, (double)got[0], (double)got[1]);
        cr_assert(isnan(got[2]), "unwritten shared memory reads %g, not the poison", (double)got[2]);
        kt_buf_free(&d);
    }
}

Test(emu, divergent_barrier_is_a_launch_failure)
{
    kt_buf d = kt_buf_alloc(64 * sizeof(float));
    CUDA_OK(emu_probe_misuse(0, d.p));
    cr_assert(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "deadlock not reported");
    void *p;
    cr_assert(cudaMalloc(&p, 16) == cudaErrorLaunchFailure, "the failure is not sticky");
}

Test(emu, shuffle_naming_an_exited_lane_is_a_launch_failure)
{
    kt_buf d = kt_buf_alloc(64 * sizeof(float));
    CUDA_OK(emu_probe_misuse(1, d.p));
    cr_assert(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "bad mask not reported");
}

Test(emu, wmma_product)
{
    uint16_t a[256], b[256]; /* fp16 */
    float want[256];
    for (int i = 0; i < 256; i++) { /* small integers: every product and sum is exact */
        a[i] = kn_ref_f32_to_f16((float)(i % 7 - 3));
        b[i] = kn_ref_f32_to_f16((float)(i % 5 - 2));
    }
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) {
            float s = 1.0f;
            for (int k = 0; k < 16; k++) /* a row-major, b column-major */
                s += kn_ref_f16_to_f32(a[r * 16 + k]) * kn_ref_f16_to_f32(b[c * 16 + k]);
            want[r * 16 + c] = s;
        }
    kt_buf da = kt_buf_upload(a, sizeof a), db = kt_buf_upload(b, sizeof b);
    kt_buf dc = kt_buf_alloc(sizeof want);
    CUDA_OK(emu_probe_wmma(da.p, db.p, dc.p));
    float got[256];
    kt_buf_download(got, &dc);
    for (int i = 0; i < 256; i++)
        cr_assert(got[i] == want[i], "C[%d][%d] = %g, want %g", i / 16, i % 16, (double)got[i], (double)want[i]);
}

Test(emu, graph_replays_captured_work)
{
    enum { N = 100 };
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float zero[N] = {0}, *h = NULL;
    kt_buf x = kt_buf_upload(zero, sizeof zero);
    CUDA_OK(cudaMallocHost((void **)&h, sizeof(float) * N));
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CUDA_OK(emu_probe_add(x.p, 1.5f, N, s));
    CUDA_OK(cudaMemcpyAsync(h, x.p, sizeof(float) * N, cudaMemcpyDeviceToHost, s));
    enum cudaStreamCaptureStatus cs;
    CUDA_OK(cudaStreamIsCapturing(s, &cs));
    cr_assert(cs == cudaStreamCaptureStatusActive, "not capturing");
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
    float got[N];
    kt_buf_download(got, &x);
    cr_assert(got[0] == 0.0f, "captured work ran at capture time");
    CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaStreamSynchronize(s));
    cr_assert(h[0] == 3.0f && h[N - 1] == 3.0f, "two replays: %g", (double)h[0]);
    float ten[N];
    for (int i = 0; i < N; i++)
        ten[i] = 10.0f;
    CUDA_OK(cudaMemcpy(x.p, ten, sizeof ten, cudaMemcpyHostToDevice));
    CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaStreamSynchronize(s));
    cr_assert(h[N - 1] == 11.5f, "a replay reads memory as it is then: %g", (double)h[N - 1]);
    CUDA_OK(cudaGraphExecDestroy(ge));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaFreeHost(h));
    CUDA_OK(cudaStreamDestroy(s));
}

/* Begins a capture on s, makes the call, checks it fails like CUDA and that the capture ends
 * invalidated without a graph. */
#define CAPTURE_REJECTS(s, call, want)                                                        \
    do {                                                                                      \
        CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));                     \
        cudaError_t e_ = (call);                                                              \
        cr_assert(e_ == (want), "%s during capture: %s", #call, cudaGetErrorName(e_));       \
        cudaGraph_t g_ = (cudaGraph_t)1;                                                      \
        cr_assert(cudaStreamEndCapture(s, &g_) == cudaErrorStreamCaptureInvalidated && !g_,   \
                  "capture not invalidated by %s", #call);                                    \
    } while (0)

Test(emu, capture_rejects_what_cuda_rejects)
{
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    kt_buf x = kt_buf_alloc(64);
    float host[16] = {0};
    void *p = NULL;
    CAPTURE_REJECTS(s, cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
    CAPTURE_REJECTS(s, cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    CAPTURE_REJECTS(s, cudaMemcpy(x.p, host, sizeof host, cudaMemcpyHostToDevice),
                    cudaErrorStreamCaptureUnsupported);
    CAPTURE_REJECTS(s, cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
    cr_assert(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal) != cudaSuccess,
              "the legacy stream was captured");
    cudaGetLastError();
    /* a blocking stream's capture is broken by work on the legacy stream */
    cudaStream_t b;
    CUDA_OK(cudaStreamCreate(&b));
    CAPTURE_REJECTS(b, cudaMemsetAsync(x.p, 0, 64, 0), cudaErrorStreamCaptureImplicit);
    /* after all that, the stream still works */
    cudaGetLastError();
    CUDA_OK(emu_probe_add(x.p, 1.0f, 16, s));
    CUDA_OK(cudaStreamSynchronize(s));
    cudaGetLastError();
}

Test(emu, stream_work_waits_for_synchronisation)
{
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const float five = 5.0f;
    kt_buf x = kt_buf_upload(&five, sizeof five);
    float *h;
    CUDA_OK(cudaMallocHost((void **)&h, sizeof *h));
    *h = 0.0f;
    CUDA_OK(cudaMemcpyAsync(h, x.p, sizeof *h, cudaMemcpyDeviceToHost, s));
    cr_assert(*h == 0.0f, "an async copy into pinned memory completed before any synchronisation");
    CUDA_OK(cudaStreamSynchronize(s));
    cr_assert(*h == 5.0f, "the copy did not happen: %g", (double)*h);
}

Test(emu, memory_checks)
{
    size_t free0, free1, total;
    CUDA_OK(cudaMemGetInfo(&free0, &total));
    kt_buf x = kt_buf_alloc(1 << 20);
    CUDA_OK(cudaMemGetInfo(&free1, &total));
    cr_assert(free0 - free1 >= (1 << 20) && free1 < total, "allocation not accounted");
    float host[4] = {0};
    /* a copy running past the end of an allocation, and one from the wrong side */
    cr_assert(cudaMemcpy((char *)x.p + x.bytes + 256 - 8, host, sizeof host, cudaMemcpyHostToDevice) ==
                  cudaErrorInvalidValue, "overrunning copy accepted");
    cr_assert(cudaMemcpy(host, host + 2, 8, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
              "host pointer accepted as the device side");
    cudaGetLastError();
    /* a kernel given host memory fails when it runs, as the GPU's access would */
    float *hp = calloc(64, sizeof(float));
    cr_assert(hp, "oom");
    CUDA_OK(emu_probe_add(hp, 1.0f, 64, 0));
    cr_assert(cudaDeviceSynchronize() == cudaErrorIllegalAddress, "host pointer kernel argument ran");
    free(hp);
}

/* C = alpha op(A) op(B) + beta C, column-major, by the book. */
static void naive_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0.0;
            for (int l = 0; l < k; l++)
                s += (double)(ta ? a[l + i * lda] : a[i + l * lda]) * (tb ? b[j + l * ldb] : b[l + j * ldb]);
            c[i + j * ldc] = (float)(alpha * s + (beta == 0.0f ? 0.0 : beta * c[i + j * ldc]));
        }
}

Test(emu, cublas_gemm_semantics)
{
    enum { M = 5, N = 7, K = 3, LD = 9 };
    kt_rng r = kt_rng_make(7);
    float *a = kt_host_random(KN_DTYPE_F32, LD * LD, -1, 1, &r), *b = kt_host_random(KN_DTYPE_F32, LD * LD, -1, 1, &r);
    float *c0 = kt_host_random(KN_DTYPE_F32, LD * N, -1, 1, &r);
    kt_buf da = kt_buf_upload(a, sizeof(float) * LD * LD), db = kt_buf_upload(b, sizeof(float) * LD * LD);
    kt_buf dc = kt_buf_alloc(sizeof(float) * LD * N);
    cublasHandle_t h;
    cr_assert(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "create");
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bz = 0; bz < 2; bz++) {
                const float alpha = 0.5f, beta = bz ? 0.0f : 2.0f;
                float want[LD * N], got[LD * N];
                memcpy(want, c0, sizeof want);
                if (bz) /* beta = 0: C is never read, even when it is NaN */
                    memset(want, 0xff, sizeof want);
                CUDA_OK(cudaMemcpy(dc.p, want, sizeof want, cudaMemcpyHostToDevice));
                naive_gemm(ta, tb, M, N, K, alpha, a, LD, b, LD, beta, want, LD);
                cr_assert(cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, M, N,
                                       K, &alpha, da.p, CUDA_R_32F, LD, db.p, CUDA_R_32F, LD, &beta, dc.p,
                                       CUDA_R_32F, LD, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) ==
                              CUBLAS_STATUS_SUCCESS, "gemm");
                CUDA_OK(cudaMemcpy(got, dc.p, sizeof got, cudaMemcpyDeviceToHost));
                for (int j = 0; j < N; j++)
                    for (int i = 0; i < LD; i++) {
                        const float g = got[i + j * LD], w = want[i + j * LD];
                        if (i >= M) /* rows past m are untouched */
                            cr_assert(memcmp(&g, &w, sizeof g) == 0, "ta %d tb %d: C[%d][%d] written", ta, tb, i, j);
                        else
                            cr_assert(fabsf(g - w) <= 1e-5f, "ta %d tb %d beta %g: C[%d][%d] %g want %g", ta, tb,
                                      (double)beta, i, j, (double)g, (double)w);
                    }
            }
    const float one = 1.0f;
    /* lda below the rows of op(A), ldc below m */
    cr_assert(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, da.p, CUDA_R_32F, M - 1, db.p,
                           CUDA_R_32F, LD, &one, dc.p, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE, "lda < m accepted");
    cr_assert(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, da.p, CUDA_R_32F, K - 1, db.p,
                           CUDA_R_32F, LD, &one, dc.p, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE, "lda < k accepted");
    cr_assert(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, da.p, CUDA_R_32F, LD, db.p,
                           CUDA_R_32F, LD, &one, dc.p, CUDA_R_32F, M - 1, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE, "ldc < m accepted");
    cr_assert(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, da.p, CUDA_R_16F, LD, db.p,
                           CUDA_R_32F, LD, &one, dc.p, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED, "mixed A/B types accepted");
    /* a leading dimension that walks B past its allocation fails like the GPU's access */
    cr_assert(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, M, N, K, &one, da.p, CUDA_R_32F, LD, db.p,
                           CUDA_R_32F, 4 * LD, &one, dc.p, CUDA_R_32F, LD, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS, "launch");
    cr_assert(cudaDeviceSynchronize() == cudaErrorIllegalAddress, "out-of-allocation B read");
    cublasDestroy(h);
    free(a);
    free(b);
    free(c0);
}

/* ---- several devices (SERVAL_EMU_DEVICES) ------------------------------------------------- */

/* Criterion runs each test in a fresh child that has not touched CUDA yet, so the emulator
 * reads the environment set here. */
static void emu_devices(const char *n, const char *mem_mb)
{
    setenv("SERVAL_EMU_DEVICES", n, 1);
    if (mem_mb)
        setenv("SERVAL_EMU_MEM_MB", mem_mb, 1);
    int count = 0;
    CUDA_OK(cudaGetDeviceCount(&count));
    cr_assert(count == atoi(n), "SERVAL_EMU_DEVICES=%s gave %d devices", n, count);
}

static void *other_thread_device(void *arg)
{
    int *seen = arg;
    cudaGetDevice(&seen[0]); /* a new thread starts on device 0 */
    cudaSetDevice(3);
    cudaGetDevice(&seen[1]);
    return NULL;
}

Test(emu, the_current_device_is_per_host_thread)
{
    emu_devices("4", NULL);
    int d = -1;
    CUDA_OK(cudaGetDevice(&d));
    cr_assert(d == 0, "first device %d", d);
    cr_assert(cudaSetDevice(4) == cudaErrorInvalidDevice, "device 4 of 4 accepted");
    cr_assert(cudaSetDevice(-1) == cudaErrorInvalidDevice, "device -1 accepted");
    cudaGetLastError();
    CUDA_OK(cudaSetDevice(2));
    int seen[2] = {-1, -1};
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, other_thread_device, seen) == 0);
    pthread_join(t, NULL);
    cr_assert(seen[0] == 0 && seen[1] == 3, "other thread saw devices %d then %d", seen[0], seen[1]);
    CUDA_OK(cudaGetDevice(&d));
    cr_assert(d == 2, "this thread's device changed to %d by another thread", d);
    struct cudaDeviceProp p;
    CUDA_OK(cudaGetDeviceProperties(&p, 3));
    cr_assert(cudaGetDeviceProperties(&p, 4) == cudaErrorInvalidDevice);
}

Test(emu, memory_is_accounted_per_device)
{
    emu_devices("2", "64");
    void *a = NULL, *b = NULL, *c = NULL;
    size_t free_b, total;
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMalloc(&a, 48 << 20));
    CUDA_OK(cudaMemGetInfo(&free_b, &total));
    cr_assert(total == (size_t)64 << 20 && free_b == (size_t)16 << 20, "device 1: %zu free of %zu",
              free_b, total);
    cr_assert(cudaMalloc(&b, 32 << 20) == cudaErrorMemoryAllocation, "device 1 went over its 64 MiB");
    cudaGetLastError();
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaMemGetInfo(&free_b, &total));
    cr_assert(free_b == total, "device 0 charged for device 1's allocation: %zu free", free_b);
    CUDA_OK(cudaMalloc(&c, 32 << 20));
    CUDA_OK(cudaFree(a)); /* freed from another device: the allocation's own device is credited */
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMemGetInfo(&free_b, &total));
    cr_assert(free_b == total, "device 1 not credited: %zu free", free_b);
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaFree(c));
}

Test(emu, kernels_reach_another_devices_memory_only_with_peer_access)
{
    emu_devices("2", NULL);
    int can = -1;
    CUDA_OK(cudaDeviceCanAccessPeer(&can, 0, 1));
    cr_assert(can == 1);
    CUDA_OK(cudaDeviceCanAccessPeer(&can, 1, 1));
    cr_assert(can == 0, "a device is its own peer");
    float *x1;
    const float h[4] = {1, 2, 3, 4};
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMalloc((void **)&x1, sizeof h));
    CUDA_OK(cudaMemcpy(x1, h, sizeof h, cudaMemcpyHostToDevice));
    cudaStream_t s1;
    CUDA_OK(cudaStreamCreate(&s1));
    CUDA_OK(cudaSetDevice(0));
    cr_assert(cudaDeviceEnablePeerAccess(0, 0) == cudaErrorInvalidDevice, "peer access to itself");
    CUDA_OK(cudaDeviceEnablePeerAccess(1, 0));
    cr_assert(cudaDeviceEnablePeerAccess(1, 0) == cudaErrorPeerAccessAlreadyEnabled);
    cudaGetLastError();
    CUDA_OK(emu_probe_add(x1, 10.0f, 4, 0)); /* device 0 adds into device 1's memory */
    CUDA_OK(cudaDeviceSynchronize());
    float got[4];
    CUDA_OK(cudaMemcpy(got, x1, sizeof got, cudaMemcpyDeviceToHost));
    cr_assert(got[0] == 11.0f && got[3] == 14.0f, "peer add: %g %g", (double)got[0], (double)got[3]);
    /* a stream of device 1 is not device 0's to launch on */
    cr_assert(emu_probe_add(x1, 1.0f, 4, s1) == cudaErrorInvalidResourceHandle,
              "launch on another device's stream accepted");
    /* without peer access the kernel faults, as the GPU's access would */
    CUDA_OK(cudaDeviceDisablePeerAccess(1));
    CUDA_OK(emu_probe_add(x1, 1.0f, 4, 0));
    cr_assert(cudaDeviceSynchronize() == cudaErrorIllegalAddress, "peer memory read without access");
    /* device 0's failure is its own: device 1 still works */
    CUDA_OK(cudaSetDevice(1));
    cudaGetLastError(); /* the thread's last error, not device 1's */
    CUDA_OK(emu_probe_add(x1, 100.0f, 4, s1));
    CUDA_OK(cudaStreamSynchronize(s1));
    CUDA_OK(cudaMemcpy(got, x1, sizeof got, cudaMemcpyDeviceToHost));
    cr_assert(got[0] == 111.0f, "device 1 after device 0 failed: %g", (double)got[0]);
}

Test(emu, peer_copies_name_their_devices)
{
    emu_devices("3", NULL);
    float *x[3];
    for (int d = 0; d < 3; d++) {
        CUDA_OK(cudaSetDevice(d));
        CUDA_OK(cudaMalloc((void **)&x[d], 64));
        CUDA_OK(cudaMemset(x[d], d + 1, 64));
        CUDA_OK(cudaDeviceSynchronize()); /* other devices' streams do not wait for it */
    }
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaMemcpyPeer(x[0], 0, x[2], 2, 32)); /* no peer access needed */
    cr_assert(cudaMemcpyPeer(x[0], 1, x[2], 2, 32) == cudaErrorInvalidValue,
              "device 0's memory named as device 1's");
    cr_assert(cudaMemcpyPeer(x[0], 0, x[2], 3, 32) == cudaErrorInvalidDevice, "device 3 of 3");
    cudaGetLastError();
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    CUDA_OK(cudaMemcpyPeerAsync((char *)x[0] + 32, 0, x[1], 1, 32, s));
    CUDA_OK(cudaStreamSynchronize(s));
    unsigned char got[64];
    CUDA_OK(cudaMemcpy(got, x[0], 64, cudaMemcpyDeviceToHost));
    cr_assert(got[0] == 3 && got[31] == 3 && got[32] == 2 && got[63] == 2, "peer copies: %d %d %d %d",
              got[0], got[31], got[32], got[63]);
}

Test(emu, a_kernel_waiting_for_a_peers_flag_runs_when_the_peer_does)
{
    emu_devices("2", NULL);
    int *flag;
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMalloc((void **)&flag, sizeof *flag));
    CUDA_OK(cudaMemset(flag, 0, sizeof *flag));
    CUDA_OK(cudaDeviceSynchronize());
    cudaStream_t s1;
    CUDA_OK(cudaStreamCreate(&s1));
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaDeviceEnablePeerAccess(1, 0));
    float *out;
    CUDA_OK(cudaMalloc((void **)&out, sizeof *out));
    CUDA_OK(cudaMemset(out, 0, sizeof *out));
    CUDA_OK(emu_probe_wait(flag, 1, out, 0));
    /* the flag is set by device 1's queue, which no host ever synchronises */
    CUDA_OK(cudaSetDevice(1));
    CUDA_OK(cudaMemsetAsync(flag, 1, sizeof *flag, s1));
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaDeviceSynchronize());
    float got = 0;
    CUDA_OK(cudaMemcpy(&got, out, sizeof got, cudaMemcpyDeviceToHost));
    cr_assert(got == 1.0f, "the waiting kernel did not finish: %g", (double)got);
}

/* ---- the emulator's NCCL: one thread per rank, ncclCommInitRank ---------------------------- */

typedef struct nccl_rank_run {
    ncclUniqueId id;
    int rank, n, count;        /* count: this rank's all-reduce length (a mismatch test) */
    ncclResult_t init, ar, ag, async;
    float sum[8], gathered[3 * 2];
} nccl_rank_run;

static void *nccl_rank_main(void *v)
{
    nccl_rank_run *r = v;
    cudaSetDevice(r->rank);
    ncclComm_t comm = NULL;
    r->init = ncclCommInitRank(&comm, r->n, r->id, r->rank);
    if (r->init != ncclSuccess)
        return NULL;
    cudaStream_t s;
    cudaStreamCreate(&s);
    float *x, *g;
    cudaMalloc((void **)&x, 8 * sizeof(float));
    cudaMalloc((void **)&g, (size_t)r->n * 2 * sizeof(float));
    float h[8];
    for (int i = 0; i < 8; i++)
        h[i] = (float)((r->rank + 1) * (i + 1));
    cudaMemcpy(x, h, sizeof h, cudaMemcpyHostToDevice);
    r->ar = ncclAllReduce(x, x, (size_t)r->count, ncclFloat32, ncclSum, comm, s);
    /* all-gather of each rank's first two (summed) elements, in place in g's rank slot */
    cudaMemcpyAsync(g + 2 * r->rank, x, 2 * sizeof(float), cudaMemcpyDeviceToDevice, s);
    r->ag = ncclAllGather(g + 2 * r->rank, g, 2, ncclFloat32, comm, s);
    cudaStreamSynchronize(s);
    cudaMemcpy(r->sum, x, sizeof r->sum, cudaMemcpyDeviceToHost);
    cudaMemcpy(r->gathered, g, (size_t)r->n * 2 * sizeof(float), cudaMemcpyDeviceToHost);
    ncclCommGetAsyncError(comm, &r->async);
    ncclCommDestroy(comm);
    cudaFree(x);
    cudaFree(g);
    cudaStreamDestroy(s);
    return NULL;
}

static void nccl_ranks(int n, const int *counts, nccl_rank_run *runs)
{
    ncclUniqueId id;
    cr_assert(ncclGetUniqueId(&id) == ncclSuccess);
    pthread_t t[4];
    for (int r = 0; r < n; r++) {
        runs[r] = (nccl_rank_run){.id = id, .rank = r, .n = n, .count = counts[r]};
        cr_assert(pthread_create(&t[r], NULL, nccl_rank_main, &runs[r]) == 0);
    }
    for (int r = 0; r < n; r++)
        pthread_join(t[r], NULL);
}

Test(emu, nccl_ranks_meet_at_a_unique_id_and_sum_in_rank_order)
{
    emu_devices("3", NULL);
    const int counts[3] = {8, 8, 8};
    nccl_rank_run runs[3];
    nccl_ranks(3, counts, runs);
    for (int r = 0; r < 3; r++) {
        cr_assert(runs[r].init == ncclSuccess && runs[r].ar == ncclSuccess && runs[r].ag == ncclSuccess,
                  "rank %d: %s", r, ncclGetErrorString(runs[r].init != ncclSuccess ? runs[r].init : runs[r].ar));
        cr_assert(runs[r].async == ncclSuccess, "rank %d: %s", r, ncclGetErrorString(runs[r].async));
        for (int i = 0; i < 8; i++)
            cr_assert(runs[r].sum[i] == (float)(6 * (i + 1)), "rank %d element %d: %g", r, i,
                      (double)runs[r].sum[i]);
        for (int q = 0; q < 3; q++)
            cr_assert(runs[r].gathered[2 * q] == 6.0f && runs[r].gathered[2 * q + 1] == 12.0f,
                      "rank %d's gather of rank %d: %g %g", r, q, (double)runs[r].gathered[2 * q],
                      (double)runs[r].gathered[2 * q + 1]);
    }
    cr_assert(ncclGroupEnd() == ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
}

Test(emu, nccl_ranks_calling_different_counts_fail_the_communicator_instead_of_hanging)
{
    emu_devices("2", NULL);
    const int counts[2] = {8, 4};
    nccl_rank_run runs[2];
    nccl_ranks(2, counts, runs);
    for (int r = 0; r < 2; r++) {
        cr_assert(runs[r].init == ncclSuccess && runs[r].ar == ncclSuccess, "rank %d enqueue", r);
        cr_assert(runs[r].async == ncclInvalidUsage, "rank %d: async error %d", r, (int)runs[r].async);
        cr_assert(runs[r].sum[0] == (float)(r + 1), "rank %d's buffer changed: %g", r, (double)runs[r].sum[0]);
    }
}

Test(emu, nccl_refuses_two_ranks_on_one_device)
{
    emu_devices("2", NULL);
    ncclComm_t comms[2];
    const int devs[2] = {1, 1};
    cr_assert(ncclCommInitAll(comms, 2, devs) == ncclInvalidUsage);
    const int far[2] = {0, 2};
    cr_assert(ncclCommInitAll(comms, 2, far) == ncclInvalidArgument);
    cr_assert(ncclCommInitAll(comms, 2, NULL) == ncclSuccess);
    int dev = -1, rank = -1, count = 0;
    ncclCommCuDevice(comms[1], &dev);
    ncclCommUserRank(comms[1], &rank);
    ncclCommCount(comms[1], &count);
    cr_assert(dev == 1 && rank == 1 && count == 2);
    ncclCommDestroy(comms[0]);
    ncclCommDestroy(comms[1]);
}
