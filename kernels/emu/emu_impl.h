// emu_impl.h — what the CPU emulator's own files share (not seen by kernels): the devices
// (SERVAL_EMU_DEVICES of them, each with its work queue and device thread), errors, the
// allocation table, stream capture, the block executor.
#ifndef SERVAL_EMU_IMPL_H
#define SERVAL_EMU_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define KN_EMU_RUNTIME 1
#include "cuda_emu.h"

namespace kn_emu {

// ---- errors (emu_runtime.cpp) ---------------------------------------------------------------
// The lock every API call holds, and every device thread while it runs an op (so kernels of
// different devices run one at a time: the block executor is one). It is recursive, and a
// host that waits for a device thread lets go of it entirely (release_all), so the host
// threads of other devices go on submitting and synchronising meanwhile.
class api_mutex {
public:
    void lock();
    void unlock();
    int release_all();        // gives the lock up whatever its depth; returns the depth
    void reacquire(int depth); // takes it back at that depth
private:
    std::mutex m_;
    std::condition_variable cv_;
    std::thread::id owner_;
    int depth_ = 0;
};
api_mutex &api_lock();
#define KN_EMU_API_LOCK std::lock_guard<kn_emu::api_mutex> api_lk_(kn_emu::api_lock())
// Records e as the calling thread's last error (cudaGetLastError) unless it is cudaSuccess.
cudaError_t note(cudaError_t e);
// The sticky error of a failed kernel or copy on the current device: once set, every call on
// that device returns it, as CUDA does.
cudaError_t sticky();
// Prints "serval-emu: <message>" to stderr (every emulator diagnosis goes through it).
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- work queue --------------------------------------------------------------------------
// One unit of stream work. It runs on the emulator's device thread (kernels, copies, GEMMs),
// only while the host waits in a synchronising call, so host and "device" never race and a
// host read before the matching synchronisation sees the old contents, deterministically.
// A blocking op (an NCCL collective: it waits for the other ranks) runs without the API lock,
// so the other devices' threads run their queues meanwhile.
struct op {
    std::function<cudaError_t()> run;
    const char *what;
    bool blocking = false;
};
// Queues op on st's device, or appends it to st's capture (returning the capture's error when
// it was invalidated). SERVAL_EMU_SYNC=1 runs every op at once (debugging: the launching call
// is on the stack of a crash).
cudaError_t submit(cudaStream_t st, op o);
// Runs everything queued on the current device (flush) or on device `dev` (flush_dev) and
// waits for it; returns that device's sticky error. The caller holds the API lock.
cudaError_t flush();
cudaError_t flush_dev(int dev);
// Starts device `dev` on what it has queued without waiting (no host waits for it): an op
// that waits for another device (a collective, a kernel spinning on a peer's flag) kicks the
// devices it waits for, so their queued work runs as a GPU's would, unsynchronised.
// The caller does not hold the API lock.
void kick(int dev);
int device_count();
int current_device();

// ---- streams and capture (emu_graph.cpp) -----------------------------------------------------
struct capture;
struct graph_mem; // allocations made while capturing, owned by the graph and its execs
}

struct CUstream_st {
    unsigned flags = 0;
    bool legacy = false;
    int dev = 0; // the device it belongs to (current when it was created)
    kn_emu::capture *cap = nullptr; // non-null while capturing (or joined to a capture)
};

namespace kn_emu {
CUstream_st *stream_of(cudaStream_t st); // null for a destroyed or bogus handle
// Appends o to st's capture when st is capturing: true when handled, *err its status.
bool capture_take(CUstream_st *s, op &o, cudaError_t *err);
// For calls that are illegal during a global-mode capture (cudaMalloc, synchronous copies,
// device synchronisation): invalidates the capture and fails like CUDA.
cudaError_t capture_forbid(const char *api);
// For what is illegal on a capturing stream whatever the mode (synchronising it).
cudaError_t capture_invalidate(CUstream_st *s, const char *api);
// The legacy stream synchronises with the blocking streams of its device: using it while one
// captures fails.
cudaError_t capture_check_legacy(const char *api, int dev);
// Registers a cudaMallocAsync made while st captures, so the graph owns it.
void capture_own(CUstream_st *s, void *p);

// ---- memory (emu_runtime.cpp) ------------------------------------------------------------
enum mem_kind { MEM_HOST, MEM_DEVICE, MEM_PINNED };
// Where [p, p + n) lies: MEM_HOST when outside every allocation; *whole is false when it
// starts inside an allocation but runs past its end.
mem_kind mem_where(const void *p, size_t n, bool *whole);
// Device-accessible from device `dev`: null, pinned, or inside an allocation of `dev` or of a
// device `dev` has peer access to. *owner: the device of the allocation (-1: none or pinned).
bool device_ptr_ok(const void *p, int dev, int *owner);
// The device of the allocation holding p; -1 for host, pinned or unknown memory.
int mem_device(const void *p);
void mem_release(void *p); // frees an allocation owned by a destroyed graph

// ---- the block executor (emu_exec.cpp) -----------------------------------------------------
struct kernel_launch {
    std::function<void()> body;
    dim3 grid, block;
    size_t smem;
    site where;
};
// Runs every block of the launch on the calling (device) thread; cudaErrorLaunchFailure
// after a deadlock or a misuse of a warp intrinsic, with the diagnosis printed.
cudaError_t run_kernel(const kernel_launch &k);
// Called once on each device thread before its first kernel: fault reporting.
void exec_thread_init();
// What run_kernel returns when a thread of the launch called KN_SPIN_WAIT with its condition
// unmet: the launch did nothing lasting (kernels that wait are written so) and runs again.
constexpr cudaError_t retry_launch = cudaErrorNotReady;

} // namespace kn_emu

#endif
