// emu_runtime.cpp — the CUDA runtime API of the CPU emulator: one emulated sm_90 device, its
// memory (host allocations poisoned with 0xff and tracked, so copies and kernel arguments
// outside them are caught), errors with CUDA's sticky semantics, streams and events over one
// in-order work queue run by a "device" thread, copies, memsets and kernel launches.
// The real cuda_runtime_api.h declares every function here, so the signatures are CUDA's.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <set>
#include <thread>

#include "emu_impl.h"

namespace kn_emu {
namespace {

struct alloc {
    size_t size;
    mem_kind kind;
};

struct state {
    std::recursive_mutex api;
    std::map<uintptr_t, alloc> allocs;
    size_t used = 0, total = 0;
    cudaError_t sticky = cudaSuccess;
    std::vector<op> queue;
    bool sync_mode = false;
    int max_dyn_smem = 48 << 10;
    CUstream_st legacy;
    std::set<CUstream_st *> streams;
    // the device thread
    std::mutex m;
    std::condition_variable cv;
    std::vector<op> *work = nullptr;
    pid_t pid = 0;
};

state &S()
{
    static state *s = [] {
        state *n = new state; // never destroyed: the device thread outlives static destructors
        const char *mb = getenv("SERVAL_EMU_MEM_MB");
        n->total = (size_t)(mb ? atol(mb) : 8192) << 20;
        const char *sy = getenv("SERVAL_EMU_SYNC");
        n->sync_mode = sy && *sy && strcmp(sy, "0");
        n->legacy.legacy = true;
        return n;
    }();
    return *s;
}

thread_local cudaError_t last_error = cudaSuccess;

void device_loop()
{
    state &s = S();
    exec_thread_init();
    std::unique_lock<std::mutex> lk(s.m);
    for (;;) {
        s.cv.wait(lk, [&] { return s.work != nullptr; });
        for (op &o : *s.work) {
            if (s.sticky != cudaSuccess)
                break; // a failed context runs nothing more
            cudaError_t e = o.run();
            if (e != cudaSuccess) {
                say("%s failed: %s", o.what, cudaGetErrorString(e));
                s.sticky = e;
            }
        }
        s.work = nullptr;
        s.cv.notify_all();
    }
}

// Hands `ops` to the device thread and waits for it (started on first use; again in a
// forked child, which inherits no threads).
void run_on_device(std::vector<op> &ops)
{
    state &s = S();
    if (s.pid != getpid()) {
        s.pid = getpid();
        new (&s.m) std::mutex; // a fork may have copied the lock held
        new (&s.cv) std::condition_variable;
        s.work = nullptr;
        std::thread(device_loop).detach();
    }
    std::unique_lock<std::mutex> lk(s.m);
    s.work = &ops;
    s.cv.notify_all();
    s.cv.wait(lk, [&] { return s.work == nullptr; });
}

std::map<uintptr_t, alloc>::iterator find_alloc(const void *p)
{
    auto &m = S().allocs;
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin())
        return m.end();
    --it;
    return (uintptr_t)p < it->first + it->second.size ? it : m.end();
}

cudaError_t mem_new(void **p, size_t size, mem_kind kind)
{
    state &s = S();
    if (!p)
        return note(cudaErrorInvalidValue);
    *p = nullptr;
    if (size == 0)
        return cudaSuccess;
    if (kind != MEM_PINNED && (size > s.total || s.used > s.total - size))
        return note(cudaErrorMemoryAllocation);
    void *m = nullptr;
    if (posix_memalign(&m, 256, size) != 0)
        return note(cudaErrorMemoryAllocation);
    memset(m, 0xff, size); // fresh memory reads as NaN in every float type
    s.allocs[(uintptr_t)m] = alloc{size, kind};
    if (kind != MEM_PINNED)
        s.used += size;
    *p = m;
    return cudaSuccess;
}

cudaError_t mem_free(void *p, mem_kind kind)
{
    if (!p)
        return cudaSuccess;
    auto it = find_alloc(p);
    if (it == S().allocs.end() || it->first != (uintptr_t)p || it->second.kind != kind) {
        say("%s(%p): not a pointer the matching allocator returned", kind == MEM_PINNED ? "cudaFreeHost" : "cudaFree", p);
        return note(cudaErrorInvalidValue);
    }
    mem_release(p);
    return cudaSuccess;
}

const char *kind_name(cudaMemcpyKind k)
{
    switch (k) {
    case cudaMemcpyHostToHost: return "host to host";
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    default: return "default";
    }
}

// Checks both sides of a copy against the allocation table; resolves cudaMemcpyDefault.
cudaError_t copy_check(void *dst, const void *src, size_t n, cudaMemcpyKind *kind, bool *host_pageable)
{
    bool dw = true, sw = true;
    const mem_kind dk = mem_where(dst, n, &dw), sk = mem_where(src, n, &sw);
    if (!dw || !sw) {
        say("cudaMemcpy (%s, %zu bytes): the %s range runs past the end of its allocation",
            kind_name(*kind), n, !dw ? "destination" : "source");
        return cudaErrorInvalidValue;
    }
    if (*kind == cudaMemcpyDefault)
        *kind = sk == MEM_DEVICE ? (dk == MEM_DEVICE ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                                 : (dk == MEM_DEVICE ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
    const bool dd = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
    const bool sd = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
    if (*kind < cudaMemcpyHostToHost || *kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    if (dd != (dk == MEM_DEVICE) || sd != (sk == MEM_DEVICE)) {
        say("cudaMemcpy %s (%zu bytes): %s is %s memory", kind_name(*kind), n,
            dd != (dk == MEM_DEVICE) ? "the destination" : "the source",
            (dd != (dk == MEM_DEVICE) ? dk : sk) == MEM_DEVICE ? "device" : "host");
        return cudaErrorInvalidValue;
    }
    *host_pageable = (!dd && dk == MEM_HOST) || (!sd && sk == MEM_HOST);
    return cudaSuccess;
}

cudaError_t memcpy_common(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                          cudaStream_t st, bool async)
{
    if (cudaError_t e = sticky())
        return e;
    if (n == 0)
        return cudaSuccess;
    if (!dst || !src)
        return note(cudaErrorInvalidValue);
    bool pageable = false;
    if (cudaError_t e = copy_check(dst, src, n, &kind, &pageable))
        return note(e);
    op o{[dst, src, n]() {
             memmove(dst, src, n);
             return cudaSuccess;
         },
         "cudaMemcpyAsync"};
    if (!async) {
        if (cudaError_t e = capture_forbid("cudaMemcpy"))
            return e;
        if (cudaError_t e = capture_check_legacy("cudaMemcpy"))
            return e;
        if (cudaError_t e = flush())
            return e;
        o.run();
        return cudaSuccess;
    }
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    cudaError_t ce;
    if (capture_take(s, o, &ce))
        return note(ce);
    if (pageable) { // staged through the driver: the copy happens before the call returns
        if (cudaError_t e = flush())
            return e;
        o.run();
        return cudaSuccess;
    }
    return submit(st, std::move(o));
}

cudaError_t memset_common(void *p, int value, size_t n, cudaStream_t st, const char *what)
{
    if (cudaError_t e = sticky())
        return e;
    if (n == 0)
        return cudaSuccess;
    bool whole = true;
    if (!p || mem_where(p, n, &whole) == MEM_HOST || !whole) {
        say("%s(%p, %zu bytes): not inside one device allocation", what, p, n);
        return note(cudaErrorInvalidValue);
    }
    return submit(st, op{[p, value, n]() {
                             memset(p, value, n);
                             return cudaSuccess;
                         },
                         what});
}

} // namespace

// ---- shared with the other emulator files ----------------------------------------------------

std::recursive_mutex &api_lock() { return S().api; }

cudaError_t note(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

cudaError_t sticky() { return S().sticky; }

void say(const char *fmt, ...)
{
    char b[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    fprintf(stderr, "serval-emu: %s\n", b);
}

cudaError_t submit(cudaStream_t st, op o)
{
    state &s = S();
    CUstream_st *cs = stream_of(st);
    if (!cs)
        return note(cudaErrorInvalidResourceHandle);
    cudaError_t ce;
    if (capture_take(cs, o, &ce))
        return note(ce);
    if (cs->legacy)
        if (cudaError_t e = capture_check_legacy(o.what))
            return e;
    s.queue.push_back(std::move(o));
    return s.sync_mode ? flush() : cudaSuccess;
}

cudaError_t flush()
{
    state &s = S();
    if (!s.queue.empty() && s.sticky == cudaSuccess) {
        std::vector<op> ops;
        ops.swap(s.queue);
        run_on_device(ops);
    }
    s.queue.clear();
    return note(s.sticky);
}

CUstream_st *stream_of(cudaStream_t st)
{
    state &s = S();
    if (st == nullptr || st == cudaStreamLegacy || st == cudaStreamPerThread)
        return &s.legacy;
    return s.streams.count(st) ? st : nullptr;
}

mem_kind mem_where(const void *p, size_t n, bool *whole)
{
    auto it = find_alloc(p);
    if (it == S().allocs.end()) {
        *whole = true;
        return MEM_HOST;
    }
    *whole = (uintptr_t)p + n <= it->first + it->second.size;
    return it->second.kind;
}

bool device_ptr_ok(const void *p)
{
    if (!p)
        return true;
    auto &m = S().allocs;
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin())
        return false;
    --it; // one past the end of an allocation is a valid pointer value
    return (uintptr_t)p <= it->first + it->second.size;
}

void mem_release(void *p)
{
    state &s = S();
    auto it = s.allocs.find((uintptr_t)p);
    if (it == s.allocs.end())
        return;
    memset(p, 0xff, it->second.size); // stale pointers read NaN until the memory is reused
    if (it->second.kind != MEM_PINNED)
        s.used -= it->second.size;
    s.allocs.erase(it);
    free(p);
}

// ---- launches --------------------------------------------------------------------------------

void launch(std::function<void()> body, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            const site &where, const void *const *ptrs, const int *ptr_index, int n_ptrs)
{
    std::lock_guard<std::recursive_mutex> lk(api_lock());
    state &s = S();
    if (s.sticky != cudaSuccess) {
        note(s.sticky);
        return;
    }
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
        grid.z > 65535) {
        say("%s (%s:%d): invalid configuration grid (%u,%u,%u) block (%u,%u,%u)", where.kernel,
            where.file, where.line, grid.x, grid.y, grid.z, block.x, block.y, block.z);
        note(cudaErrorInvalidConfiguration);
        return;
    }
    if (smem > (size_t)s.max_dyn_smem) {
        say("%s (%s:%d): %zu bytes of dynamic shared memory; the limit is %d (raise it with "
            "cudaFuncSetAttribute)", where.kernel, where.file, where.line, smem, s.max_dyn_smem);
        note(cudaErrorInvalidValue);
        return;
    }
    for (int i = 0; i < n_ptrs; i++)
        if (!device_ptr_ok(ptrs[i])) {
            // the GPU would fault when the kernel dereferences it; fail the launch when it runs
            say("%s (%s:%d): argument %d (%p) is not device memory", where.kernel, where.file,
                where.line, ptr_index[i], ptrs[i]);
            note(submit(st, op{[] { return cudaErrorIllegalAddress; }, "kernel launch"}));
            return;
        }
    auto k = std::make_shared<kernel_launch>(kernel_launch{std::move(body), grid, block, smem, where});
    note(submit(st, op{[k] { return run_kernel(*k); }, where.kernel}));
}

} // namespace kn_emu

using namespace kn_emu;
#define API_LOCK std::lock_guard<std::recursive_mutex> api_lk_(api_lock())

extern "C" {

// ---- errors and device ---------------------------------------------------------------------

cudaError_t cudaGetLastError(void)
{
    API_LOCK;
    if (S().sticky != cudaSuccess)
        return S().sticky;
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    API_LOCK;
    return S().sticky != cudaSuccess ? S().sticky : last_error;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return note(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return note(cudaErrorInvalidValue);
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : note(cudaErrorInvalidDevice); }

cudaError_t cudaDeviceSynchronize(void)
{
    API_LOCK;
    if (cudaError_t e = capture_forbid("cudaDeviceSynchronize"))
        return e;
    return flush();
}

cudaError_t cudaDeviceReset(void)
{
    API_LOCK;
    flush();
    S().sticky = cudaSuccess;
    last_error = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (!p)
        return note(cudaErrorInvalidValue);
    if (device != 0)
        return note(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "Serval CUDA emulator");
    p->totalGlobalMem = S().total;
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->reservedSharedMemPerBlock = 1 << 10;
    p->regsPerBlock = p->regsPerMultiprocessor = 65536;
    p->warpSize = 32;
    p->memPitch = (size_t)1 << 31;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->totalConstMem = 64 << 10;
    p->major = 9;
    p->minor = 0;
    p->textureAlignment = 512;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->maxBlocksPerMultiProcessor = 32;
    p->l2CacheSize = 50 << 20;
    p->memoryBusWidth = 5120;
    p->concurrentKernels = p->unifiedAddressing = p->canMapHostMemory = 1;
    p->asyncEngineCount = 2;
    p->managedMemory = p->memoryPoolsSupported = p->cooperativeLaunch = 1;
    p->streamPrioritiesSupported = p->globalL1CacheSupported = p->localL1CacheSupported = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device)
{
    if (!value)
        return note(cudaErrorInvalidValue);
    if (device != 0)
        return note(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 << 10; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = 228 << 10; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; break;
    case cudaDevAttrMemoryClockRate: *value = 2619000; break; // kHz, H100 SXM's HBM3
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    default:
        say("cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
        return note(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) { return v ? (*v = CUDART_VERSION, cudaSuccess) : note(cudaErrorInvalidValue); }
cudaError_t cudaDriverGetVersion(int *v) { return v ? (*v = CUDART_VERSION, cudaSuccess) : note(cudaErrorInvalidValue); }

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value)
{
    API_LOCK;
    if (!func)
        return note(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > (227 << 10))
            return note(cudaErrorInvalidValue);
        // Launches cannot name their kernel here (KN_LAUNCH calls it by name), so the limit
        // raised for one kernel is the limit for all: missing the call at all still fails.
        if (value > S().max_dyn_smem)
            S().max_dyn_smem = value;
    }
    return cudaSuccess;
}

// ---- memory ----------------------------------------------------------------------------------

cudaError_t cudaMalloc(void **p, size_t size)
{
    API_LOCK;
    if (cudaError_t e = sticky())
        return e;
    if (cudaError_t e = capture_forbid("cudaMalloc"))
        return e;
    return mem_new(p, size, MEM_DEVICE);
}

cudaError_t cudaFree(void *p)
{
    API_LOCK;
    if (!p)
        return cudaSuccess;
    if (cudaError_t e = capture_forbid("cudaFree"))
        return e;
    flush(); // cudaFree synchronises the device
    return mem_free(p, MEM_DEVICE);
}

cudaError_t cudaMallocHost(void **p, size_t size)
{
    API_LOCK;
    return mem_new(p, size, MEM_PINNED);
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags)
{
    (void)flags;
    return cudaMallocHost(p, size);
}

cudaError_t cudaFreeHost(void *p)
{
    API_LOCK;
    flush();
    return mem_free(p, MEM_PINNED);
}

cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t st)
{
    API_LOCK;
    if (cudaError_t e = sticky())
        return e;
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    cudaError_t e = mem_new(p, size, MEM_DEVICE);
    if (e == cudaSuccess && *p && s->cap)
        capture_own(s, *p);
    return e;
}

cudaError_t cudaFreeAsync(void *p, cudaStream_t st)
{
    API_LOCK;
    if (cudaError_t e = sticky())
        return e;
    if (!p)
        return cudaSuccess;
    auto it = find_alloc(p);
    if (it == S().allocs.end() || it->first != (uintptr_t)p || it->second.kind != MEM_DEVICE) {
        say("cudaFreeAsync(%p): not a device allocation", p);
        return note(cudaErrorInvalidValue);
    }
    const size_t n = it->second.size;
    CUstream_st *s = stream_of(st);
    if (s && s->cap) // in a graph the memory stays reserved; a replay only invalidates it
        return submit(st, op{[p, n] {
                                 memset(p, 0xff, n);
                                 return cudaSuccess;
                             },
                             "cudaFreeAsync"});
    return submit(st, op{[p] {
                             mem_release(p);
                             return cudaSuccess;
                         },
                         "cudaFreeAsync"});
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    API_LOCK;
    if (!free_b || !total_b)
        return note(cudaErrorInvalidValue);
    *total_b = S().total;
    *free_b = S().total - S().used;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    API_LOCK;
    return memcpy_common(dst, src, n, kind, nullptr, false);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                            cudaStream_t st)
{
    API_LOCK;
    return memcpy_common(dst, src, n, kind, st, true);
}

cudaError_t cudaMemset(void *p, int value, size_t n)
{
    API_LOCK;
    if (cudaError_t e = capture_check_legacy("cudaMemset"))
        return e;
    return memset_common(p, value, n, nullptr, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t st)
{
    API_LOCK;
    return memset_common(p, value, n, st, "cudaMemsetAsync");
}

// ---- streams and events ----------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned int flags)
{
    API_LOCK;
    if (!st)
        return note(cudaErrorInvalidValue);
    CUstream_st *s = new CUstream_st;
    s->flags = flags;
    S().streams.insert(s);
    *st = s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *st) { return cudaStreamCreateWithFlags(st, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t st)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s || s->legacy)
        return note(cudaErrorInvalidResourceHandle);
    if (s->cap) {
        say("cudaStreamDestroy: the stream is capturing");
        return note(cudaErrorStreamCaptureUnsupported);
    }
    flush(); // its queued work still completes
    S().streams.erase(s);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t st)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    if (s->cap)
        return capture_invalidate(s, "cudaStreamSynchronize");
    if (cudaError_t e = capture_forbid("cudaStreamSynchronize"))
        return e;
    return flush();
}

cudaError_t cudaStreamQuery(cudaStream_t st)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    if (s->cap)
        return capture_invalidate(s, "cudaStreamQuery");
    return flush(); // the emulated device finishes whenever the host looks
}

cudaError_t cudaLaunchHostFunc(cudaStream_t st, cudaHostFn_t fn, void *user)
{
    API_LOCK;
    if (!fn)
        return note(cudaErrorInvalidValue);
    return submit(st, op{[fn, user] {
                             fn(user);
                             return cudaSuccess;
                         },
                         "cudaLaunchHostFunc"});
}

} // extern "C"
