// allreduce_p2p.cu — the one-shot peer-to-peer all-reduce (allreduce_p2p.h): a staging copy, a
// flag barrier in peer memory (one thread per peer: announce, then wait; the host's abort flag
// and a time bound end a wait for a peer that is gone) and a grid-stride sum of every rank's
// staged slot in rank order, fp32, rounded once (bit-exact with kernels/ref/allreduce.c, with
// the NCCL path on the emulator and with the CPU communicator).
#include "allreduce_p2p.h"

#include "common.cuh"
#include "spin_wait.cuh"

// A by-value list of the ranks' source pointers for the summing kernels.
struct p2p_src {
    const void *p[KN_P2P_MAX_RANKS];
};

// The rank loop is unrolled over the struct's fixed size so every pointer is read from the
// parameter bank by a constant index (a runtime index would copy the struct to local memory).
template <typename T>
static __device__ void sum_ranks(const p2p_src &src, int n, size_t offset, T *out, int64_t count)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        float s = kn_to_f32(((const T *)((const char *)src.p[0] + offset))[i]);
#pragma unroll
        for (int q = 1; q < KN_P2P_MAX_RANKS; q++)
            if (q < n)
                s = __fadd_rn(s, kn_to_f32(((const T *)((const char *)src.p[q] + offset))[i]));
        out[i] = kn_from_f32<T>(s);
    }
}

template <typename T>
static __global__ void sum_kernel(p2p_src src, int n, T *out, int64_t count)
{
    sum_ranks<T>(src, n, 0, out, count);
}

// The slot of the all-reduce the barrier just counted: gen is already incremented.
template <typename T>
static __global__ void reduce_kernel(p2p_src src, int n, size_t slot_bytes, const uint32_t *gen,
                                     T *out, int64_t count)
{
    sum_ranks<T>(src, n, (size_t)(*gen & 1u) * slot_bytes, out, count);
}

// Copies this rank's buffer into its slot (gen + 1) mod 2, as 16-bit units.
static __global__ void stage_kernel(const uint16_t *src, uint16_t *stage, size_t slot_units,
                                    const uint32_t *gen, int64_t units)
{
    uint16_t *dst = stage + (size_t)((*gen + 1u) & 1u) * slot_units;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < units;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

// Thread q announces all-reduce g = gen + 1 to rank q and waits for rank q's announcement to
// this rank, or gives up when the host aborts the group or the wait bound passes (errs[rank]
// says which); gen is written only after every wait (the emulator may rerun a waiting
// launch). Generations compare modulo 2^32.
static __global__ void barrier_kernel(kn_p2p_peers peers, int rank, uint32_t *gen)
{
    const uint32_t g = *(volatile uint32_t *)gen + 1u;
    const int q = (int)threadIdx.x;
    if (q < peers.n_ranks) {
        __threadfence_system(); // the staged slot before the announcement
        *(volatile uint32_t *)&peers.flags[q][rank] = g;
        int why;
        KN_SPIN_WAIT_BOUNDED((int32_t)(*(volatile uint32_t *)&peers.flags[rank][q] - g) >= 0,
                             peers.abort && *peers.abort, peers.wait_limit_ns, why);
        if (why && peers.errs)
            peers.errs[rank] = why == 1 ? KN_P2P_WAIT_ABORTED : KN_P2P_WAIT_TIMED_OUT;
    }
    __syncthreads();
    if (q == 0)
        *gen = g;
}

static unsigned grid_for(int64_t n)
{
    const int64_t b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 1024 ? 1024 : b);
}

template <typename T>
static void launch_sum(const p2p_src &src, int n, T *out, int64_t count, cudaStream_t st)
{
    // grid: 256-thread CTAs over the elements, at most 1024 (grid-stride beyond)
    KN_LAUNCH(grid_for(count), 256, 0, st, sum_kernel<T>)(src, n, out, count);
}

template <typename T>
static void launch_reduce(const p2p_src &src, int n, size_t slot_bytes, const uint32_t *gen,
                          T *out, int64_t count, cudaStream_t st)
{
    // grid: as launch_sum
    KN_LAUNCH(grid_for(count), 256, 0, st, reduce_kernel<T>)(src, n, slot_bytes, gen, out, count);
}

extern "C" kn_status kn_p2p_sum(kn_dtype dt, const void *const *in, int n, void *out,
                                int64_t count, cudaStream_t st)
{
    KN_REQUIRE(in && out, "p2p_sum: null pointer");
    KN_REQUIRE(n >= 1 && n <= KN_P2P_MAX_RANKS, "p2p_sum: %d ranks (1..%d)", n, KN_P2P_MAX_RANKS);
    KN_REQUIRE(count >= 0, "p2p_sum: count %lld", (long long)count);
    p2p_src src = {};
    for (int q = 0; q < n; q++) {
        KN_REQUIRE(in[q], "p2p_sum: rank %d's input is null", q);
        src.p[q] = in[q];
    }
    if (count == 0)
        return KN_OK;
    if (dt == KN_DTYPE_F32)
        launch_sum(src, n, (float *)out, count, st);
    else if (dt == KN_DTYPE_F16)
        launch_sum(src, n, (__half *)out, count, st);
    else if (dt == KN_DTYPE_BF16)
        launch_sum(src, n, (__nv_bfloat16 *)out, count, st);
    else
        return kn_record(KN_ERR_UNSUPPORTED, __FILE__, __LINE__, "p2p_sum: dtype %d", (int)dt);
    KN_LAUNCH_CHECK();
    return KN_OK;
}

extern "C" kn_status kn_p2p_all_reduce(kn_dtype dt, void *buf, int64_t count,
                                       const kn_p2p_peers *peers, int rank, uint32_t *gen,
                                       cudaStream_t st)
{
    KN_REQUIRE(buf && peers && gen, "p2p_all_reduce: null pointer");
    const int n = peers->n_ranks;
    KN_REQUIRE(n >= 2 && n <= KN_P2P_MAX_RANKS && rank >= 0 && rank < n,
               "p2p_all_reduce: rank %d of %d ranks (2..%d)", rank, n, KN_P2P_MAX_RANKS);
    KN_REQUIRE(dt == KN_DTYPE_F32 || dt == KN_DTYPE_F16 || dt == KN_DTYPE_BF16,
               "p2p_all_reduce: dtype %d", (int)dt);
    const size_t bytes = (size_t)count * kn_dtype_size(dt);
    KN_REQUIRE(count >= 0 && bytes <= peers->slot_bytes && peers->slot_bytes % 16 == 0,
               "p2p_all_reduce: %lld elements (%zu bytes) for slots of %zu bytes",
               (long long)count, bytes, peers->slot_bytes);
    p2p_src src = {};
    for (int q = 0; q < n; q++) {
        KN_REQUIRE(peers->stage[q] && peers->flags[q], "p2p_all_reduce: rank %d has no buffers", q);
        src.p[q] = peers->stage[q];
    }
    if (count == 0)
        return KN_OK;
    // grid: as launch_sum, over 16-bit units
    KN_LAUNCH(grid_for((int64_t)(bytes / 2)), 256, 0, st, stage_kernel)(
        (const uint16_t *)buf, (uint16_t *)peers->stage[rank], peers->slot_bytes / 2, gen,
        (int64_t)(bytes / 2));
    KN_LAUNCH_CHECK();
    // grid: one warp, a thread per peer
    KN_LAUNCH(1, 32, 0, st, barrier_kernel)(*peers, rank, gen);
    KN_LAUNCH_CHECK();
    if (dt == KN_DTYPE_F32)
        launch_reduce(src, n, peers->slot_bytes, gen, (float *)buf, count, st);
    else if (dt == KN_DTYPE_F16)
        launch_reduce(src, n, peers->slot_bytes, gen, (__half *)buf, count, st);
    else
        launch_reduce(src, n, peers->slot_bytes, gen, (__nv_bfloat16 *)buf, count, st);
    KN_LAUNCH_CHECK();
    return KN_OK;
}
