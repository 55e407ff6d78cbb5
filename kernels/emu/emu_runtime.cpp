// emu_runtime.cpp — the CUDA runtime API of the CPU emulator: SERVAL_EMU_DEVICES (default 1)
// emulated sm_90 devices, the current one per host thread (cudaSetDevice), each with its own
// memory budget (host allocations poisoned with 0xff and tracked, so copies and kernel
// arguments outside them are caught), sticky errors as in CUDA, and one in-order work queue
// run by its own "device" thread; peer access between devices, copies, memsets and launches.
// The real cuda_runtime_api.h declares every function here, so the signatures are CUDA's.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
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
    int dev; // -1 for pinned host memory
};

// One emulated GPU. `queue` is guarded by the API lock, `busy` by m; `batch` belongs to the
// device thread while busy.
struct device {
    int index = 0;
    size_t used = 0, total = 0;
    cudaError_t sticky = cudaSuccess;
    std::vector<op> queue;
    std::vector<op> batch;
    bool busy = false;
    std::mutex m;
    std::condition_variable cv;
    pid_t pid = 0;
    CUstream_st legacy;
    std::vector<char> peer; // peer[j]: this device may read and write device j's memory
};

enum { MAX_DEVICES = 16 };

struct state {
    api_mutex api;
    std::map<uintptr_t, alloc> allocs;
    std::vector<device *> devs;
    bool sync_mode = false, p2p = true;
    int max_dyn_smem = 48 << 10;
    std::set<CUstream_st *> streams;
};

state &S()
{
    static state *s = [] {
        state *n = new state; // never destroyed: device threads outlive static destructors
        const char *mb = getenv("SERVAL_EMU_MEM_MB");
        const size_t total = (size_t)(mb ? atol(mb) : 8192) << 20;
        const char *sy = getenv("SERVAL_EMU_SYNC");
        n->sync_mode = sy && *sy && strcmp(sy, "0");
        const char *pp = getenv("SERVAL_EMU_P2P");
        n->p2p = !(pp && !strcmp(pp, "0"));
        int count = 1;
        if (const char *d = getenv("SERVAL_EMU_DEVICES")) {
            char *end = nullptr;
            const long v = strtol(d, &end, 10);
            if (end == d || *end || v < 1 || v > MAX_DEVICES)
                say("SERVAL_EMU_DEVICES=%s: not a count of 1 to %d, emulating 1 device", d, MAX_DEVICES);
            else
                count = (int)v;
        }
        for (int i = 0; i < count; i++) {
            device *dv = new device;
            dv->index = i;
            dv->total = total;
            dv->legacy.legacy = true;
            dv->legacy.dev = i;
            dv->peer.assign((size_t)count, 0);
            n->devs.push_back(dv);
        }
        return n;
    }();
    return *s;
}

thread_local cudaError_t last_error = cudaSuccess;
// The calling thread's device (cudaSetDevice). The non-zero initialiser keeps it out of .tbss,
// which the executor poisons as shared memory on device threads.
thread_local int current_dev = -1;

device &cur_dev() { return *S().devs[current_dev < 0 ? 0 : current_dev]; }

// Tests: SERVAL_EMU_FAIL_DEVICE=D with SERVAL_EMU_FAIL_FILE=PATH: once PATH exists, device D's
// next operation fails with cudaErrorLaunchFailure and the device stays failed (sticky), as a
// GPU lost mid-run (tests/deploy/test_serve_tp_emu.py takes a replica's GPU away).
bool fail_injected(const device *d)
{
    static const int dev = [] {
        const char *s = getenv("SERVAL_EMU_FAIL_DEVICE");
        return s && *s ? atoi(s) : -1;
    }();
    static const char *const path = getenv("SERVAL_EMU_FAIL_FILE");
    return dev == d->index && path && access(path, F_OK) == 0;
}

void device_loop(device *d)
{
    exec_thread_init();
    std::unique_lock<std::mutex> lk(d->m);
    for (;;) {
        d->cv.wait(lk, [&] { return d->busy; });
        lk.unlock();
        for (op &o : d->batch) {
            cudaError_t e;
            if (fail_injected(d)) {
                e = cudaErrorLaunchFailure;
            } else if (o.blocking) {
                {
                    KN_EMU_API_LOCK;
                    if (d->sticky != cudaSuccess)
                        break;
                }
                e = o.run();
            } else {
                KN_EMU_API_LOCK;
                if (d->sticky != cudaSuccess)
                    break; // a failed context runs nothing more
                e = o.run();
            }
            if (e != cudaSuccess) {
                KN_EMU_API_LOCK;
                say("%s failed on device %d: %s", o.what, d->index, cudaGetErrorString(e));
                d->sticky = e;
                break;
            }
        }
        d->batch.clear();
        lk.lock();
        d->busy = false;
        d->cv.notify_all();
    }
}

// Hands d's queue to its device thread (started on first use; again in a forked child, which
// inherits no threads) unless it is busy, the queue is empty or the device has failed.
// The caller holds the API lock.
void start(device &d)
{
    if (d.pid != getpid()) {
        d.pid = getpid();
        new (&d.m) std::mutex; // a fork may have copied the lock held
        new (&d.cv) std::condition_variable;
        d.busy = false;
        d.batch.clear();
        std::thread(device_loop, &d).detach();
    }
    std::lock_guard<std::mutex> lk(d.m);
    if (d.sticky != cudaSuccess)
        d.queue.clear();
    if (d.busy || d.queue.empty())
        return;
    d.batch.swap(d.queue);
    d.queue.clear();
    d.busy = true;
    d.cv.notify_all();
}

// Runs d's queue to the end and waits, without the API lock while it waits.
cudaError_t flush_device(device &d)
{
    for (;;) {
        start(d);
        {
            std::lock_guard<std::mutex> lk(d.m);
            if (!d.busy && (d.queue.empty() || d.sticky != cudaSuccess))
                break;
        }
        const int depth = S().api.release_all();
        {
            std::unique_lock<std::mutex> lk(d.m);
            d.cv.wait(lk, [&] { return !d.busy; });
        }
        S().api.reacquire(depth);
    }
    d.queue.clear();
    return note(d.sticky);
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
    device &d = cur_dev();
    if (kind != MEM_PINNED && (size > d.total || d.used > d.total - size))
        return note(cudaErrorMemoryAllocation);
    void *m = nullptr;
    if (posix_memalign(&m, 256, size) != 0)
        return note(cudaErrorMemoryAllocation);
    memset(m, 0xff, size); // fresh memory reads as NaN in every float type
    s.allocs[(uintptr_t)m] = alloc{size, kind, kind == MEM_PINNED ? -1 : d.index};
    if (kind != MEM_PINNED)
        d.used += size;
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
        if (cudaError_t e = capture_check_legacy("cudaMemcpy", current_device()))
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
        if (cudaError_t e = flush_dev(s->dev))
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

void api_mutex::lock()
{
    std::unique_lock<std::mutex> lk(m_);
    const std::thread::id me = std::this_thread::get_id();
    if (depth_ > 0 && owner_ == me) {
        depth_++;
        return;
    }
    cv_.wait(lk, [&] { return depth_ == 0; });
    owner_ = me;
    depth_ = 1;
}

void api_mutex::unlock()
{
    std::lock_guard<std::mutex> lk(m_);
    if (--depth_ == 0) {
        owner_ = std::thread::id();
        cv_.notify_all();
    }
}

int api_mutex::release_all()
{
    std::lock_guard<std::mutex> lk(m_);
    const int d = depth_;
    depth_ = 0;
    owner_ = std::thread::id();
    cv_.notify_all();
    return d;
}

void api_mutex::reacquire(int depth)
{
    std::unique_lock<std::mutex> lk(m_);
    cv_.wait(lk, [&] { return depth_ == 0; });
    owner_ = std::this_thread::get_id();
    depth_ = depth;
}

api_mutex &api_lock() { return S().api; }

int device_count() { return (int)S().devs.size(); }
int current_device() { return cur_dev().index; }

cudaError_t note(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

cudaError_t sticky() { return cur_dev().sticky; }

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
        if (cudaError_t e = capture_check_legacy(o.what, cs->dev))
            return e;
    s.devs[(size_t)cs->dev]->queue.push_back(std::move(o));
    return s.sync_mode ? flush_dev(cs->dev) : cudaSuccess;
}

cudaError_t flush() { return flush_device(cur_dev()); }

cudaError_t flush_dev(int dev) { return flush_device(*S().devs[(size_t)dev]); }

void kick(int dev)
{
    KN_EMU_API_LOCK;
    start(*S().devs[(size_t)dev]);
}

CUstream_st *stream_of(cudaStream_t st)
{
    state &s = S();
    if (st == nullptr || st == cudaStreamLegacy || st == cudaStreamPerThread)
        return &cur_dev().legacy;
    return s.streams.count(st) ? st : nullptr;
}

int mem_device(const void *p)
{
    auto it = find_alloc(p);
    return it == S().allocs.end() ? -1 : it->second.dev;
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

bool device_ptr_ok(const void *p, int dev, int *owner)
{
    *owner = -1;
    if (!p)
        return true;
    auto &m = S().allocs;
    auto it = m.upper_bound((uintptr_t)p);
    if (it == m.begin())
        return false;
    --it; // one past the end of an allocation is a valid pointer value
    if ((uintptr_t)p > it->first + it->second.size)
        return false;
    *owner = it->second.dev;
    return *owner < 0 || *owner == dev || S().devs[(size_t)dev]->peer[(size_t)*owner];
}

void mem_release(void *p)
{
    state &s = S();
    auto it = s.allocs.find((uintptr_t)p);
    if (it == s.allocs.end())
        return;
    memset(p, 0xff, it->second.size); // stale pointers read NaN until the memory is reused
    if (it->second.kind != MEM_PINNED)
        s.devs[(size_t)it->second.dev]->used -= it->second.size;
    s.allocs.erase(it);
    free(p);
}

// ---- launches --------------------------------------------------------------------------------

void launch(std::function<void()> body, dim3 grid, dim3 block, size_t smem, cudaStream_t st,
            const site &where, const void *const *ptrs, const int *ptr_index, int n_ptrs)
{
    KN_EMU_API_LOCK;
    state &s = S();
    device &d = cur_dev();
    if (d.sticky != cudaSuccess) {
        note(d.sticky);
        return;
    }
    CUstream_st *cs = stream_of(st);
    if (!cs) {
        note(cudaErrorInvalidResourceHandle);
        return;
    }
    if (cs->dev != d.index) {
        say("%s (%s:%d): launched on a stream of device %d while device %d is current", where.kernel,
            where.file, where.line, cs->dev, d.index);
        note(cudaErrorInvalidResourceHandle);
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
    for (int i = 0; i < n_ptrs; i++) {
        int owner;
        if (!device_ptr_ok(ptrs[i], d.index, &owner)) {
            // the GPU would fault when the kernel dereferences it; fail the launch when it runs
            if (owner >= 0)
                say("%s (%s:%d): argument %d (%p) is memory of device %d, which device %d has no "
                    "peer access to (cudaDeviceEnablePeerAccess)", where.kernel, where.file,
                    where.line, ptr_index[i], ptrs[i], owner, d.index);
            else
                say("%s (%s:%d): argument %d (%p) is not device memory", where.kernel, where.file,
                    where.line, ptr_index[i], ptrs[i]);
            note(submit(st, op{[] { return cudaErrorIllegalAddress; }, "kernel launch"}));
            return;
        }
    }
    auto k = std::make_shared<kernel_launch>(kernel_launch{std::move(body), grid, block, smem, where});
    const int n_dev = (int)s.devs.size();
    note(submit(st, op{[k, n_dev] {
                           // A kernel that waits for a peer (KN_SPIN_WAIT) asks to run again:
                           // the other devices run their queues meanwhile.
                           const auto t0 = std::chrono::steady_clock::now();
                           for (;;) {
                               const cudaError_t e = run_kernel(*k);
                               if (e != retry_launch)
                                   return e;
                               if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
                                   say("%s (%s:%d): a KN_SPIN_WAIT was not satisfied in 60 s (the "
                                       "peer it waits for never signalled)", k->where.kernel,
                                       k->where.file, k->where.line);
                                   return cudaErrorLaunchTimeout;
                               }
                               const int depth = api_lock().release_all();
                               for (int j = 0; j < n_dev; j++)
                                   kick(j);
                               std::this_thread::sleep_for(std::chrono::microseconds(200));
                               api_lock().reacquire(depth);
                           }
                       },
                       where.kernel}));
}

} // namespace kn_emu

using namespace kn_emu;
#define API_LOCK KN_EMU_API_LOCK

extern "C" {

// ---- errors and device ---------------------------------------------------------------------

cudaError_t cudaGetLastError(void)
{
    API_LOCK;
    if (cur_dev().sticky != cudaSuccess)
        return cur_dev().sticky;
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    API_LOCK;
    return cur_dev().sticky != cudaSuccess ? cur_dev().sticky : last_error;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count)
        return note(cudaErrorInvalidValue);
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    if (!device)
        return note(cudaErrorInvalidValue);
    *device = current_device();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count())
        return note(cudaErrorInvalidDevice);
    current_dev = device;
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int device, int peer)
{
    if (!can)
        return note(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count() || peer < 0 || peer >= device_count())
        return note(cudaErrorInvalidDevice);
    *can = device != peer && S().p2p; // SERVAL_EMU_P2P=0: devices without a peer link
    return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned int flags)
{
    API_LOCK;
    device &d = cur_dev();
    if (peer < 0 || peer >= device_count() || peer == d.index)
        return note(cudaErrorInvalidDevice);
    if (flags != 0)
        return note(cudaErrorInvalidValue);
    if (!S().p2p)
        return note(cudaErrorPeerAccessUnsupported);
    if (d.peer[(size_t)peer])
        return note(cudaErrorPeerAccessAlreadyEnabled);
    d.peer[(size_t)peer] = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceDisablePeerAccess(int peer)
{
    API_LOCK;
    device &d = cur_dev();
    if (peer < 0 || peer >= device_count() || peer == d.index)
        return note(cudaErrorInvalidDevice);
    if (!d.peer[(size_t)peer])
        return note(cudaErrorPeerAccessNotEnabled);
    d.peer[(size_t)peer] = 0;
    return cudaSuccess;
}

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
    cur_dev().sticky = cudaSuccess;
    last_error = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device)
{
    if (!p)
        return note(cudaErrorInvalidValue);
    if (device < 0 || device >= device_count())
        return note(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "Serval CUDA emulator");
    p->totalGlobalMem = S().devs[(size_t)device]->total;
    p->pciDeviceID = device;
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
    if (device < 0 || device >= device_count())
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
    *total_b = cur_dev().total;
    *free_b = cur_dev().total - cur_dev().used;
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

// 2-D copies: height rows of width bytes, rows dpitch / spitch bytes apart, in stream order
// (one copy per row here; the driver's is one operation, which no caller can tell apart).
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind,
                              cudaStream_t st)
{
    API_LOCK;
    if (width > dpitch || width > spitch)
        return note(cudaErrorInvalidPitchValue);
    for (size_t i = 0; i < height; i++)
        if (cudaError_t e = memcpy_common((char *)dst + i * dpitch, (const char *)src + i * spitch,
                                          width, kind, st, true))
            return e;
    return cudaSuccess;
}

// Peer copies: each side must be memory of the device named (copies between devices need no
// peer access; the driver stages them).
static cudaError_t peer_check(void *dst, int dst_dev, const void *src, int src_dev, const char *api)
{
    if (dst_dev < 0 || dst_dev >= device_count() || src_dev < 0 || src_dev >= device_count())
        return note(cudaErrorInvalidDevice);
    const int dd = mem_device(dst), sd = mem_device(src);
    if (dd != dst_dev || sd != src_dev) {
        say("%s: the %s is not memory of device %d", api, dd != dst_dev ? "destination" : "source",
            dd != dst_dev ? dst_dev : src_dev);
        return note(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyPeer(void *dst, int dst_dev, const void *src, int src_dev, size_t n)
{
    API_LOCK;
    if (n == 0)
        return cudaSuccess;
    if (cudaError_t e = peer_check(dst, dst_dev, src, src_dev, "cudaMemcpyPeer"))
        return e;
    if (cudaError_t e = flush_dev(src_dev)) // synchronous: both devices' earlier work first
        return e;
    if (cudaError_t e = flush_dev(dst_dev))
        return e;
    return memcpy_common(dst, src, n, cudaMemcpyDeviceToDevice, nullptr, false);
}

cudaError_t cudaMemcpyPeerAsync(void *dst, int dst_dev, const void *src, int src_dev, size_t n,
                                cudaStream_t st)
{
    API_LOCK;
    if (n == 0)
        return cudaSuccess;
    if (cudaError_t e = peer_check(dst, dst_dev, src, src_dev, "cudaMemcpyPeerAsync"))
        return e;
    return memcpy_common(dst, src, n, cudaMemcpyDeviceToDevice, st, true);
}

cudaError_t cudaMemset(void *p, int value, size_t n)
{
    API_LOCK;
    if (cudaError_t e = capture_check_legacy("cudaMemset", current_device()))
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
    s->dev = current_device();
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
    flush_dev(s->dev); // its queued work still completes
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
    return flush_dev(s->dev);
}

cudaError_t cudaStreamQuery(cudaStream_t st)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    if (s->cap)
        return capture_invalidate(s, "cudaStreamQuery");
    return flush_dev(s->dev); // the emulated device finishes whenever the host looks
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
