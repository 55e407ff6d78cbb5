// emu_nccl.cpp — the NCCL calls Serval makes, for the CPU emulator: communicators whose ranks
// are emulated devices of one process (ncclCommInitAll, or ncclCommInitRank from a thread per
// rank meeting at a ncclUniqueId), sum all-reduce and all-gather as stream work, groups,
// abort, destroy and the error strings. The real nccl.h declares every function here.
//
// A collective is a blocking op on the rank's stream (it may be captured into a graph): when
// the rank's device reaches it, it waits for every rank's device to reach the same collective
// (the n-th of each communicator), kicking the devices it waits for; the last to arrive sums
// in rank order (fp32 accumulation, one rounding to fp16/bf16 at the end) into every rank's
// buffer, so all ranks hold the same bits and a run repeats exactly. What NCCL would hang on
// or corrupt (ranks calling different collectives or counts, a rank that never comes) fails
// the communicator with a diagnosis instead: every rank's later ncclCommGetAsyncError reports
// it and the buffers are left as they were. Not emulated: other reductions and types,
// point-to-point calls, non-blocking communicators, several processes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <nccl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>

#include "emu_impl.h"

using namespace kn_emu;

namespace {

enum coll_kind { COLL_ALL_REDUCE, COLL_ALL_GATHER };

// One collective the ranks meet at: the seq-th of their communicator.
struct slot {
    coll_kind kind;
    size_t count;
    ncclDataType_t dt;
    int arrived = 0, left = 0;
    bool done = false;
    std::vector<const void *> send;
    std::vector<void *> recv;
};

struct group {
    int n = 0;
    std::vector<ncclComm *> ranks;
    std::vector<int> devs;
    int joined = 0, alive = 0;
    std::mutex m;
    std::condition_variable cv;
    std::map<uint64_t, slot> slots;
    bool failed = false;
    ncclResult_t why_code = ncclSuccess;
    std::string why;
};

} // namespace

struct ncclComm {
    group *g;
    int rank, dev;
    uint64_t run_seq = 0; // collectives this rank's device has reached (its device thread)
    bool aborted = false;
};

namespace {

std::mutex reg_m; // the communicators being formed by ncclCommInitRank, by their id
std::condition_variable reg_cv;
std::map<std::string, group *> forming;
std::atomic<unsigned long long> next_id{1};
thread_local int group_depth = 0;
thread_local char last_msg[512];

int wait_limit_s()
{
    const char *e = getenv("SERVAL_EMU_NCCL_TIMEOUT_S");
    const int v = e ? atoi(e) : 120;
    return v > 0 ? v : 120;
}

ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ncclResult_t fail(ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    say("%s", last_msg);
    return r;
}

// Fails every rank's pending and later collectives (g.m held).
void group_fail(group &g, ncclResult_t code, const std::string &why)
{
    if (!g.failed) {
        g.failed = true;
        g.why_code = code;
        g.why = why;
        say("NCCL communicator failed: %s", why.c_str());
    }
    g.cv.notify_all();
}

size_t dt_size(ncclDataType_t dt)
{
    switch (dt) {
    case ncclFloat32:
    case ncclInt32: return 4;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    default: return 0;
    }
}

float load(ncclDataType_t dt, const void *p, size_t i)
{
    switch (dt) {
    case ncclFloat16: return __half2float(((const __half *)p)[i]);
    case ncclBfloat16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

void store(ncclDataType_t dt, void *p, size_t i, float v)
{
    switch (dt) {
    case ncclFloat16: ((__half *)p)[i] = __float2half_rn(v); break;
    case ncclBfloat16: ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

// The last rank to arrive computes every rank's result (everyone else is parked in the slot).
void compute(const slot &s, int n)
{
    const size_t es = dt_size(s.dt);
    if (s.kind == COLL_ALL_GATHER) {
        std::vector<uint8_t> all((size_t)n * s.count * es); // sends may alias the receive buffers
        for (int r = 0; r < n; r++)
            memcpy(all.data() + (size_t)r * s.count * es, s.send[(size_t)r], s.count * es);
        for (int r = 0; r < n; r++)
            memcpy(s.recv[(size_t)r], all.data(), all.size());
        return;
    }
    if (s.dt == ncclInt32) {
        std::vector<int32_t> sum(s.count, 0);
        for (int r = 0; r < n; r++)
            for (size_t i = 0; i < s.count; i++)
                sum[i] = (int32_t)((uint32_t)sum[i] + (uint32_t)((const int32_t *)s.send[(size_t)r])[i]);
        for (int r = 0; r < n; r++)
            memcpy(s.recv[(size_t)r], sum.data(), s.count * 4);
        return;
    }
    std::vector<float> sum(s.count);
    for (size_t i = 0; i < s.count; i++)
        sum[i] = load(s.dt, s.send[0], i);
    for (int r = 1; r < n; r++) // rank order
        for (size_t i = 0; i < s.count; i++)
            sum[i] += load(s.dt, s.send[(size_t)r], i);
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < s.count; i++)
            store(s.dt, s.recv[(size_t)r], i, sum[i]);
}

const char *coll_name(coll_kind k) { return k == COLL_ALL_REDUCE ? "ncclAllReduce" : "ncclAllGather"; }

// The collective as it runs on the rank's device thread (without the API lock).
void run_collective(ncclComm *c, coll_kind kind, const void *send, void *recv, size_t count,
                    ncclDataType_t dt)
{
    group &g = *c->g;
    const uint64_t seq = c->run_seq++;
    std::unique_lock<std::mutex> lk(g.m);
    if (g.failed)
        return;
    slot &s = g.slots[seq];
    if (s.arrived == 0) {
        s.kind = kind;
        s.count = count;
        s.dt = dt;
        s.send.assign((size_t)g.n, nullptr);
        s.recv.assign((size_t)g.n, nullptr);
    } else if (s.kind != kind || s.count != count || s.dt != dt) {
        char b[256];
        snprintf(b, sizeof b, "collective #%llu: rank %d called %s of %zu elements (type %d), an "
                 "earlier rank %s of %zu (type %d)", (unsigned long long)seq, c->rank,
                 coll_name(kind), count, (int)dt, coll_name(s.kind), s.count, (int)s.dt);
        group_fail(g, ncclInvalidUsage, b);
        return;
    }
    s.send[(size_t)c->rank] = send;
    s.recv[(size_t)c->rank] = recv;
    if (++s.arrived == g.n) {
        compute(s, g.n);
        s.done = true;
        g.cv.notify_all();
    }
    const auto t0 = std::chrono::steady_clock::now();
    const auto limit = std::chrono::seconds(wait_limit_s());
    while (!s.done && !g.failed) {
        // The ranks not here yet may be queued behind no synchronisation: run them.
        std::vector<int> missing;
        for (int r = 0; r < g.n; r++)
            if (!s.send[(size_t)r] && !s.recv[(size_t)r])
                missing.push_back(g.devs[(size_t)r]);
        lk.unlock();
        for (int d : missing)
            kick(d);
        lk.lock();
        if (s.done || g.failed)
            break;
        g.cv.wait_for(lk, std::chrono::milliseconds(2));
        if (!s.done && !g.failed && std::chrono::steady_clock::now() - t0 > limit) {
            std::string who;
            for (int r = 0; r < g.n; r++)
                if (!s.send[(size_t)r] && !s.recv[(size_t)r])
                    who += (who.empty() ? "" : ", ") + std::to_string(r);
            char b[256];
            snprintf(b, sizeof b, "collective #%llu (%s): rank(s) %s did not arrive in %d s",
                     (unsigned long long)seq, coll_name(kind), who.c_str(), wait_limit_s());
            group_fail(g, ncclSystemError, b);
        }
    }
    if (++s.left == s.arrived && s.done)
        g.slots.erase(seq);
}

// Checks one buffer of a collective: device memory of the rank's device, whole.
ncclResult_t check_buf(const char *api, const char *which, const void *p, size_t bytes, int dev)
{
    bool whole = true;
    if (!p || mem_where(p, bytes, &whole) != MEM_DEVICE || !whole || mem_device(p) != dev)
        return fail(ncclInvalidArgument, "%s: the %s buffer (%p, %zu bytes) is not inside one "
                    "allocation of device %d, the communicator's", api, which, p, bytes, dev);
    return ncclSuccess;
}

ncclResult_t enqueue(coll_kind kind, const void *send, void *recv, size_t count,
                     ncclDataType_t dt, ncclComm *c, cudaStream_t st)
{
    const char *api = coll_name(kind);
    if (!c || c->aborted)
        return fail(ncclInvalidArgument, "%s: no communicator (null, or aborted)", api);
    {
        std::lock_guard<std::mutex> lk(c->g->m);
        if (c->g->failed)
            return fail(c->g->why_code == ncclInvalidUsage ? ncclInvalidUsage : ncclRemoteError,
                        "%s: the communicator has failed: %s", api, c->g->why.c_str());
    }
    if (!dt_size(dt))
        return fail(ncclInvalidArgument, "%s: data type %d is not emulated (fp32, fp16, bf16, "
                    "int32)", api, (int)dt);
    if (count == 0)
        return ncclSuccess;
    KN_EMU_API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s)
        return fail(ncclInvalidArgument, "%s: not a stream", api);
    if (s->dev != c->dev)
        return fail(ncclInvalidArgument, "%s: a stream of device %d for rank %d, whose device is %d",
                    api, s->dev, c->rank, c->dev);
    const size_t es = dt_size(dt);
    const size_t recv_n = kind == COLL_ALL_GATHER ? count * (size_t)c->g->n : count;
    if (ncclResult_t r = check_buf(api, "send", send, count * es, c->dev))
        return r;
    if (ncclResult_t r = check_buf(api, "receive", recv, recv_n * es, c->dev))
        return r;
    op o{[c, kind, send, recv, count, dt] {
             run_collective(c, kind, send, recv, count, dt);
             return cudaSuccess;
         },
         api, true};
    if (submit(st, std::move(o)) != cudaSuccess)
        return fail(ncclUnhandledCudaError, "%s: the stream refused the work (%s)", api,
                    cudaGetErrorString(cudaPeekAtLastError()));
    return ncclSuccess;
}

// Frees the group once its last rank is gone (reg_m not held; g.m not held).
void leave(ncclComm *c)
{
    group *g = c->g;
    bool last;
    {
        std::lock_guard<std::mutex> lk(g->m);
        last = --g->alive == 0;
    }
    delete c;
    if (last)
        delete g;
}

} // namespace

extern "C" {

ncclResult_t ncclGetVersion(int *version)
{
    if (!version)
        return ncclInvalidArgument;
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    if (!id)
        return fail(ncclInvalidArgument, "ncclGetUniqueId: null id");
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "serval-emu %d %llu", (int)getpid(),
             next_id.fetch_add(1));
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    if (!comm)
        return fail(ncclInvalidArgument, "ncclCommInitRank: null comm");
    *comm = nullptr;
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: rank %d of %d", rank, nranks);
    int dev = 0;
    cudaGetDevice(&dev);
    const std::string key(id.internal, strnlen(id.internal, sizeof id.internal));
    std::unique_lock<std::mutex> lk(reg_m);
    group *&slot_g = forming[key];
    if (!slot_g) {
        slot_g = new group;
        slot_g->n = nranks;
        slot_g->ranks.assign((size_t)nranks, nullptr);
        slot_g->devs.assign((size_t)nranks, -1);
    }
    group *g = slot_g;
    if (g->n != nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRank: %d ranks, where an earlier rank said %d",
                    nranks, g->n);
    if (g->ranks[(size_t)rank])
        return fail(ncclInvalidUsage, "ncclCommInitRank: rank %d joined twice", rank);
    for (int r = 0; r < nranks; r++)
        if (g->devs[(size_t)r] == dev)
            return fail(ncclInvalidUsage, "ncclCommInitRank: duplicate GPU: ranks %d and %d on "
                        "device %d", r, rank, dev);
    ncclComm *c = new ncclComm{g, rank, dev};
    g->ranks[(size_t)rank] = c;
    g->devs[(size_t)rank] = dev;
    g->joined++;
    g->alive++;
    reg_cv.notify_all();
    // NCCL's init is collective: every rank waits for the others.
    if (!reg_cv.wait_for(lk, std::chrono::seconds(wait_limit_s()), [&] { return g->joined == g->n; })) {
        g->ranks[(size_t)rank] = nullptr;
        g->devs[(size_t)rank] = -1;
        g->joined--;
        g->alive--;
        delete c;
        if (g->alive == 0) {
            forming.erase(key);
            delete g;
        }
        return fail(ncclSystemError, "ncclCommInitRank: rank %d waited %d s for %d ranks", rank,
                    wait_limit_s(), nranks);
    }
    if (forming.count(key) && forming[key] == g)
        forming.erase(key);
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
{
    if (!comms || ndev < 1)
        return fail(ncclInvalidArgument, "ncclCommInitAll: %d devices", ndev);
    int count = 0;
    cudaGetDeviceCount(&count);
    for (int i = 0; i < ndev; i++) {
        const int d = devlist ? devlist[i] : i;
        if (d < 0 || d >= count)
            return fail(ncclInvalidArgument, "ncclCommInitAll: device %d of %d", d, count);
        for (int j = 0; j < i; j++)
            if ((devlist ? devlist[j] : j) == d)
                return fail(ncclInvalidUsage, "ncclCommInitAll: duplicate GPU %d", d);
    }
    group *g = new group;
    g->n = g->joined = g->alive = ndev;
    for (int i = 0; i < ndev; i++) {
        const int d = devlist ? devlist[i] : i;
        comms[i] = new ncclComm{g, i, d};
        g->ranks.push_back(comms[i]);
        g->devs.push_back(d);
    }
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess;
    {
        KN_EMU_API_LOCK; // its queued collectives complete first
        flush_dev(comm->dev);
    }
    leave(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess;
    {
        std::lock_guard<std::mutex> lk(comm->g->m);
        char b[96];
        snprintf(b, sizeof b, "rank %d called ncclCommAbort", comm->rank);
        group_fail(*comm->g, ncclRemoteError, b);
    }
    comm->aborted = true;
    {
        KN_EMU_API_LOCK; // its queued collectives now return at once
        flush_dev(comm->dev);
    }
    leave(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *err)
{
    if (!comm || !err)
        return ncclInvalidArgument;
    std::lock_guard<std::mutex> lk(comm->g->m);
    *err = comm->g->failed ? comm->g->why_code : ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count)
{
    if (!comm || !count)
        return ncclInvalidArgument;
    *count = comm->g->n;
    return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device)
{
    if (!comm || !device)
        return ncclInvalidArgument;
    *device = comm->dev;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank)
{
    if (!comm || !rank)
        return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t dt,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t st)
{
    if (op != ncclSum)
        return fail(ncclInvalidArgument, "ncclAllReduce: reduction %d is not emulated (sum only)", (int)op);
    return enqueue(COLL_ALL_REDUCE, send, recv, count, dt, comm, st);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t dt,
                           ncclComm_t comm, cudaStream_t st)
{
    return enqueue(COLL_ALL_GATHER, send, recv, count, dt, comm, st);
}

// Collectives are queued as they are called (a blocked rank kicks the devices it waits for),
// so a group only has to be well formed.
ncclResult_t ncclGroupStart(void)
{
    group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void)
{
    if (group_depth == 0)
        return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    group_depth--;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm)
{
    (void)comm;
    return last_msg;
}

} // extern "C"
