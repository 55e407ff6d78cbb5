// emu_impl.h — what the CPU emulator's own files share (not seen by kernels): the work queue
// and its device thread, errors, the allocation table, stream capture, the block executor.
#ifndef SERVAL_EMU_IMPL_H
#define SERVAL_EMU_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#define KN_EMU_RUNTIME 1
#include "cuda_emu.h"

namespace kn_emu {

// ---- errors (emu_runtime.cpp) ---------------------------------------------------------------
// Every API call holds this lock; ops run on the device thread while the caller waits.
std::recursive_mutex &api_lock();
// Records e as the calling thread's last error (cudaGetLastError) unless it is cudaSuccess.
cudaError_t note(cudaError_t e);
// The sticky error of a failed kernel or copy: once set, every call returns it, as CUDA does.
cudaError_t sticky();
// Prints "serval-emu: <message>" to stderr (every emulator diagnosis goes through it).
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- work queue --------------------------------------------------------------------------
// One unit of stream work. It runs on the emulator's device thread (kernels, copies, GEMMs),
// only while the host waits in a synchronising call, so host and "device" never race and a
// host read before the matching synchronisation sees the old contents, deterministically.
struct op {
    std::function<cudaError_t()> run;
    const char *what;
};
// Queues op on st, or appends it to st's capture (returning the capture's error when it
// was invalidated). SERVAL_EMU_SYNC=1 runs every op at once (debugging: the launching call is
// on the stack of a crash).
cudaError_t submit(cudaStream_t st, op o);
// Runs everything queued; returns the sticky error.
cudaError_t flush();

// ---- streams and capture (emu_graph.cpp) -----------------------------------------------------
struct capture;
struct graph_mem; // allocations made while capturing, owned by the graph and its execs
}

struct CUstream_st {
    unsigned flags = 0;
    bool legacy = false;
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
// The legacy stream synchronises with blocking streams: using it while one captures fails.
cudaError_t capture_check_legacy(const char *api);
// Registers a cudaMallocAsync made while st captures, so the graph owns it.
void capture_own(CUstream_st *s, void *p);

// ---- memory (emu_runtime.cpp) ------------------------------------------------------------
enum mem_kind { MEM_HOST, MEM_DEVICE, MEM_PINNED };
// Where [p, p + n) lies: MEM_HOST when outside every allocation; *whole is false when it
// starts inside an allocation but runs past its end.
mem_kind mem_where(const void *p, size_t n, bool *whole);
// Device-accessible: null, or inside a device or pinned allocation.
bool device_ptr_ok(const void *p);
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
// Called once on the device thread before the first kernel: fault reporting.
void exec_thread_init();

} // namespace kn_emu

#endif
