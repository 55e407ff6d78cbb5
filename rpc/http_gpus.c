/* http_gpus.c — the GPUs the status page lists, read from NVIDIA's management library (NVML,
 * libnvidia-ml.so.1, what nvidia-smi reads): name, memory used and total, utilisation, the
 * driver version. Opened at run time, so neither the build nor the package depends on it; no
 * library or no GPU gives an empty list. NVML needs no CUDA context, so any thread may ask. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "http_impl.h"

/* NVML's ABI, the few calls used (nvml.h: every call returns 0, NVML_SUCCESS, on success). */
typedef struct nvml_memory { unsigned long long total, free, used; } nvml_memory;
typedef struct nvml_utilization { unsigned int gpu, memory; } nvml_utilization;
typedef void *nvml_device;

static struct {
    pthread_once_t once;
    bool ok;
    int (*device_count)(unsigned int *);
    int (*device_by_index)(unsigned int, nvml_device *);
    int (*device_name)(nvml_device, char *, unsigned int);
    int (*device_memory)(nvml_device, nvml_memory *);
    int (*device_utilization)(nvml_device, nvml_utilization *);
    int (*driver_version)(char *, unsigned int);
} nvml = {.once = PTHREAD_ONCE_INIT};

/* Opens the library once and keeps it for the process's life (the page asks again and again). */
static void nvml_open(void)
{
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    int (*init)(void) = NULL;
    /* POSIX's way to take a function from dlsym without an object-to-function cast */
    *(void **)&init = dlsym(lib, "nvmlInit_v2");
    *(void **)&nvml.device_count = dlsym(lib, "nvmlDeviceGetCount_v2");
    *(void **)&nvml.device_by_index = dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&nvml.device_name = dlsym(lib, "nvmlDeviceGetName");
    *(void **)&nvml.device_memory = dlsym(lib, "nvmlDeviceGetMemoryInfo");
    *(void **)&nvml.device_utilization = dlsym(lib, "nvmlDeviceGetUtilizationRates");
    *(void **)&nvml.driver_version = dlsym(lib, "nvmlSystemGetDriverVersion");
    nvml.ok = init && nvml.device_count && nvml.device_by_index && nvml.device_name &&
              nvml.device_memory && init() == 0;
    if (!nvml.ok) dlclose(lib);
}

int http_gpus_get(http_gpu *out, int cap, char *driver, size_t driver_cap)
{
    if (driver_cap) driver[0] = '\0';
    pthread_once(&nvml.once, nvml_open);
    unsigned int n = 0;
    if (!nvml.ok || nvml.device_count(&n) != 0) return 0;
    if (nvml.driver_version && driver_cap)
        if (nvml.driver_version(driver, (unsigned int)driver_cap) != 0) driver[0] = '\0';
    int got = 0;
    for (unsigned int i = 0; i < n && got < cap; i++) {
        nvml_device d = NULL;
        nvml_memory mem = {0};
        nvml_utilization u = {0};
        http_gpu *g = &out[got];
        memset(g, 0, sizeof *g);
        if (nvml.device_by_index(i, &d) != 0) continue;
        if (nvml.device_name(d, g->name, sizeof g->name) != 0)
            snprintf(g->name, sizeof g->name, "GPU %u", i);
        g->name[sizeof g->name - 1] = '\0';
        g->index = (int)i;
        g->mem_total = -1, g->mem_used = -1, g->util_pct = -1;
        if (nvml.device_memory(d, &mem) == 0)
            g->mem_total = (int64_t)mem.total, g->mem_used = (int64_t)mem.used;
        if (nvml.device_utilization && nvml.device_utilization(d, &u) == 0)
            g->util_pct = (int)u.gpu;
        got++;
    }
    return got;
}
