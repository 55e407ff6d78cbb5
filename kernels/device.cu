// device.cu — CUDA device discovery for the engine: how many GPUs, and their names.
#include "device.h"

#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int kn_device_count(void)
{
    // Without a GPU (or a driver) the call fails and leaves the count untouched.
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky error so later calls start clean
        return 0;
    }
    return n;
}

extern "C" int kn_device_name(int dev, char *buf, size_t cap)
{
    cudaDeviceProp prop;
    if (cap == 0 || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
        return -1;
    snprintf(buf, cap, "%s", prop.name);
    return 0;
}
