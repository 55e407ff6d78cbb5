/* fake_nvml.c — a stand-in for NVIDIA's libnvidia-ml.so.1 (built as such into
 * build/fake_nvml/), so test_status_page checks the page's GPU rows on a machine without a GPU:
 * one "Fake GPU 80GB" with 10 of 80 GiB used, 42% busy, driver 999.1. Only the calls
 * rpc/http_gpus.c makes, with NVML's signatures (0 is NVML_SUCCESS). */
#include <string.h>

typedef struct fake_memory { unsigned long long total, free, used; } fake_memory;
typedef struct fake_utilization { unsigned int gpu, memory; } fake_utilization;

int nvmlInit_v2(void);
int nvmlDeviceGetCount_v2(unsigned int *n);
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d);
int nvmlDeviceGetName(void *d, char *name, unsigned int len);
int nvmlDeviceGetMemoryInfo(void *d, fake_memory *m);
int nvmlDeviceGetUtilizationRates(void *d, fake_utilization *u);
int nvmlSystemGetDriverVersion(char *v, unsigned int len);

static int device; /* its address is the one device's handle */

int nvmlInit_v2(void) { return 0; }

int nvmlDeviceGetCount_v2(unsigned int *n)
{
    *n = 1;
    return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d)
{
    if (i != 0) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
    *d = &device;
    return 0;
}

static int copy(char *dst, unsigned int len, const char *src)
{
    if (strlen(src) + 1 > len) return 7; /* NVML_ERROR_INSUFFICIENT_SIZE */
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

int nvmlDeviceGetName(void *d, char *name, unsigned int len)
{
    return d == &device ? copy(name, len, "Fake GPU 80GB") : 2;
}

int nvmlDeviceGetMemoryInfo(void *d, fake_memory *m)
{
    if (d != &device) return 2;
    m->total = 80ull << 30, m->used = 10ull << 30, m->free = m->total - m->used;
    return 0;
}

int nvmlDeviceGetUtilizationRates(void *d, fake_utilization *u)
{
    if (d != &device) return 2;
    u->gpu = 42, u->memory = 7;
    return 0;
}

int nvmlSystemGetDriverVersion(char *v, unsigned int len) { return copy(v, len, "999.1"); }
