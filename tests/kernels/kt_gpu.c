/* kt_gpu.c — device-side test helpers (see kt.h): guarded, NaN-poisoned buffers. */
#include "kt.h"

#include <cuda_runtime_api.h>

#include "device.h"

enum { GUARD = 256 };

int kt_gpu_count(void) { return kn_device_count(); }

kt_buf kt_buf_alloc(size_t bytes)
{
    kt_buf b = {NULL, NULL, bytes};
    cudaError_t e = cudaMalloc((void **)&b.base, bytes + 2 * GUARD);
    cr_assert(e == cudaSuccess, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
    e = cudaMemset(b.base, 0xff, bytes + 2 * GUARD);
    cr_assert(e == cudaSuccess, "cudaMemset: %s", cudaGetErrorString(e));
    b.p = b.base + GUARD;
    return b;
}

kt_buf kt_buf_upload(const void *host, size_t bytes)
{
    kt_buf b = kt_buf_alloc(bytes);
    cudaError_t e = cudaMemcpy(b.p, host, bytes, cudaMemcpyHostToDevice);
    cr_assert(e == cudaSuccess, "upload: %s", cudaGetErrorString(e));
    return b;
}

void kt_buf_download(void *host, const kt_buf *b)
{
    cudaError_t e = cudaMemcpy(host, b->p, b->bytes, cudaMemcpyDeviceToHost);
    cr_assert(e == cudaSuccess, "download: %s", cudaGetErrorString(e));
}

void kt_buf_check_guards(const kt_buf *b, const char *what)
{
    uint8_t g[2 * GUARD];
    cudaError_t e = cudaMemcpy(g, b->base, GUARD, cudaMemcpyDeviceToHost);
    cr_assert(e == cudaSuccess, "guard download: %s", cudaGetErrorString(e));
    e = cudaMemcpy(g + GUARD, b->base + GUARD + b->bytes, GUARD, cudaMemcpyDeviceToHost);
    cr_assert(e == cudaSuccess, "guard download: %s", cudaGetErrorString(e));
    for (int i = 0; i < 2 * GUARD; i++)
        cr_assert(g[i] == 0xff, "%s: guard byte %d was overwritten (0x%02x)", what,
                  i < GUARD ? i - GUARD : i - GUARD, g[i]);
}

void kt_buf_free(kt_buf *b)
{
    cudaFree(b->base);
    b->base = NULL;
    b->p = NULL;
}

void kt_sync(void)
{
    cudaError_t e = cudaDeviceSynchronize();
    cr_assert(e == cudaSuccess, "kernel failed: %s", cudaGetErrorString(e));
}

