// emu_graph.cpp — stream capture, CUDA graphs and events for the CPU emulator. A capture
// records each op of its streams (kernel launches with their arguments copied at capture
// time, copies, memsets, GEMMs) instead of queuing it; launching the instantiated graph queues
// the same ops again, so a replay reads memory as it is then, as on the GPU. Calls that CUDA
// forbids while capturing (cudaMalloc, synchronous copies, synchronising the stream)
// invalidate the capture and fail the same way, so capture-unsafe code shows here.
#include <time.h>

#include <thread>

#include "emu_impl.h"

namespace kn_emu {

struct graph_mem {
    std::vector<void *> ptrs;
    ~graph_mem()
    {
        for (void *p : ptrs)
            mem_release(p);
    }
};

struct capture {
    CUstream_st *origin;
    cudaStreamCaptureMode mode;
    std::thread::id thread;
    unsigned long long id;
    bool invalid = false;
    std::vector<op> nodes;
    std::shared_ptr<graph_mem> mem = std::make_shared<graph_mem>();
    std::vector<CUstream_st *> joined;
};

namespace {
std::vector<capture *> active;
unsigned long long next_id = 1;
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
std::vector<CUevent_st *> events;

const char *mode_name(cudaStreamCaptureMode m)
{
    return m == cudaStreamCaptureModeGlobal        ? "global"
           : m == cudaStreamCaptureModeThreadLocal ? "thread-local"
                                                   : "relaxed";
}

bool event_live(CUevent_st *e)
{
    for (CUevent_st *x : events)
        if (x == e)
            return true;
    return false;
}
} // namespace

bool capture_take(CUstream_st *s, op &o, cudaError_t *err)
{
    if (!s->cap)
        return false;
    if (s->cap->invalid) {
        *err = cudaErrorStreamCaptureInvalidated;
        return true;
    }
    s->cap->nodes.push_back(std::move(o));
    *err = cudaSuccess;
    return true;
}

cudaError_t capture_forbid(const char *api)
{
    if (thread_mode == cudaStreamCaptureModeRelaxed)
        return cudaSuccess;
    const std::thread::id me = std::this_thread::get_id();
    bool hit = false;
    for (capture *c : active) {
        const bool mine = c->thread == me && c->mode != cudaStreamCaptureModeRelaxed;
        const bool other = c->thread != me && c->mode == cudaStreamCaptureModeGlobal;
        if ((mine || other) && !c->invalid) {
            say("%s during a %s-mode stream capture: not permitted, the capture is invalidated",
                api, mode_name(c->mode));
            c->invalid = true;
            hit = true;
        }
    }
    return hit ? note(cudaErrorStreamCaptureUnsupported) : cudaSuccess;
}

cudaError_t capture_invalidate(CUstream_st *s, const char *api)
{
    say("%s on a capturing stream: not permitted, the capture is invalidated", api);
    s->cap->invalid = true;
    return note(cudaErrorStreamCaptureUnsupported);
}

cudaError_t capture_check_legacy(const char *api, int dev)
{
    bool hit = false;
    for (capture *c : active) {
        if (c->origin->dev != dev)
            continue;
        bool blocking = !(c->origin->flags & cudaStreamNonBlocking);
        for (CUstream_st *j : c->joined)
            blocking |= !(j->flags & cudaStreamNonBlocking);
        if (blocking && !c->invalid) {
            say("%s on the legacy stream while a blocking stream captures (implicit "
                "synchronisation): the capture is invalidated", api);
            c->invalid = true;
            hit = true;
        }
    }
    return hit ? note(cudaErrorStreamCaptureImplicit) : cudaSuccess;
}

void capture_own(CUstream_st *s, void *p) { s->cap->mem->ptrs.push_back(p); }

} // namespace kn_emu

struct CUgraph_st {
    std::vector<kn_emu::op> nodes;
    std::shared_ptr<kn_emu::graph_mem> mem;
};
struct CUgraphExec_st {
    std::vector<kn_emu::op> nodes;
    std::shared_ptr<kn_emu::graph_mem> mem;
};
struct CUevent_st {
    unsigned flags = 0;
    int dev = 0; // the device of the stream it was last recorded on
    bool recorded = false, done = false;
    double t_ms = 0;
    kn_emu::capture *cap = nullptr; // recorded inside this (still active) capture
};

using namespace kn_emu;
#define API_LOCK KN_EMU_API_LOCK

namespace {
double now_ms()
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}
} // namespace

extern "C" {

cudaError_t cudaStreamBeginCapture(cudaStream_t st, enum cudaStreamCaptureMode mode)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    if (s->legacy) {
        say("cudaStreamBeginCapture: the legacy (default) stream cannot be captured");
        return note(cudaErrorStreamCaptureUnsupported);
    }
    if (s->cap)
        return note(cudaErrorIllegalState);
    capture *c = new capture;
    c->origin = s;
    c->mode = mode;
    c->thread = std::this_thread::get_id();
    c->id = next_id++;
    s->cap = c;
    active.push_back(c);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s || !graph)
        return note(cudaErrorInvalidValue);
    *graph = nullptr;
    capture *c = s->cap;
    if (!c)
        return note(cudaErrorIllegalState);
    if (c->origin != s)
        return note(cudaErrorStreamCaptureUnmatched);
    if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
        return note(cudaErrorStreamCaptureWrongThread);
    s->cap = nullptr;
    for (CUstream_st *j : c->joined)
        j->cap = nullptr;
    for (size_t i = 0; i < active.size(); i++)
        if (active[i] == c)
            active.erase(active.begin() + (long)i);
    for (CUevent_st *e : events)
        if (e->cap == c)
            e->cap = nullptr;
    cudaError_t r = cudaSuccess;
    if (c->invalid)
        r = note(cudaErrorStreamCaptureInvalidated);
    else
        *graph = new CUgraph_st{std::move(c->nodes), c->mem};
    delete c;
    return r;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t st, enum cudaStreamCaptureStatus *status)
{
    API_LOCK;
    CUstream_st *s = stream_of(st);
    if (!s || !status)
        return note(cudaErrorInvalidValue);
    *status = !s->cap ? cudaStreamCaptureStatusNone
              : s->cap->invalid ? cudaStreamCaptureStatusInvalidated
                                : cudaStreamCaptureStatusActive;
    return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode)
{
    if (!mode)
        return note(cudaErrorInvalidValue);
    std::swap(*mode, thread_mode);
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    API_LOCK;
    (void)flags;
    if (!exec || !graph)
        return note(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{graph->nodes, graph->mem};
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph,
                                          unsigned long long flags)
{
    return cudaGraphInstantiate(exec, graph, flags);
}

cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph,
                                cudaGraphExecUpdateResultInfo *info)
{
    API_LOCK;
    if (!exec || !graph)
        return note(cudaErrorInvalidValue);
    if (info)
        *info = cudaGraphExecUpdateResultInfo{};
    // The emulator cannot compare node parameters beyond their count and kind of work.
    bool same = exec->nodes.size() == graph->nodes.size();
    for (size_t i = 0; same && i < graph->nodes.size(); i++)
        same = exec->nodes[i].what == graph->nodes[i].what;
    if (!same) {
        if (info)
            info->result = cudaGraphExecUpdateErrorTopologyChanged;
        return note(cudaErrorGraphExecUpdateFailure);
    }
    flush(); // a queued replay keeps the old parameters
    exec->nodes = graph->nodes;
    exec->mem = graph->mem;
    if (info)
        info->result = cudaGraphExecUpdateSuccess;
    return cudaSuccess;
}

cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t *nodes, size_t *n)
{
    API_LOCK;
    if (!graph || !n)
        return note(cudaErrorInvalidValue);
    if (nodes) // node handles are not emulated; only the count
        return note(cudaErrorNotSupported);
    *n = graph->nodes.size();
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st)
{
    API_LOCK;
    if (cudaError_t e = sticky())
        return e;
    if (!exec)
        return note(cudaErrorInvalidValue);
    for (const op &o : exec->nodes) // a capturing stream records them (a child graph)
        if (cudaError_t e = submit(st, o))
            return e;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    API_LOCK;
    if (!exec)
        return note(cudaErrorInvalidValue);
    flush(); // its memory stays valid until queued replays finish
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    API_LOCK;
    if (!graph)
        return note(cudaErrorInvalidValue);
    flush();
    delete graph;
    return cudaSuccess;
}

// ---- events ----------------------------------------------------------------------------------

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    API_LOCK;
    if (!e)
        return note(cudaErrorInvalidValue);
    *e = new CUevent_st;
    (*e)->flags = flags;
    events.push_back(*e);
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    API_LOCK;
    if (!event_live(e))
        return note(cudaErrorInvalidResourceHandle);
    flush();
    for (size_t i = 0; i < events.size(); i++)
        if (events[i] == e)
            events.erase(events.begin() + (long)i);
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st)
{
    API_LOCK;
    if (!event_live(e))
        return note(cudaErrorInvalidResourceHandle);
    CUstream_st *s = stream_of(st);
    if (!s)
        return note(cudaErrorInvalidResourceHandle);
    e->recorded = true;
    e->done = false;
    e->cap = s->cap;
    e->dev = s->dev;
    return submit(st, op{[e] {
                             if (event_live(e)) { // a graph may outlive its events
                                 e->t_ms = now_ms();
                                 e->done = true;
                             }
                             return cudaSuccess;
                         },
                         "cudaEventRecord"});
}

cudaError_t cudaEventRecordWithFlags(cudaEvent_t e, cudaStream_t st, unsigned int flags)
{
    (void)flags;
    return cudaEventRecord(e, st);
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    API_LOCK;
    if (!event_live(e))
        return note(cudaErrorInvalidResourceHandle);
    if (e->cap) {
        say("cudaEventSynchronize on an event recorded in an active capture");
        e->cap->invalid = true;
        return note(cudaErrorStreamCaptureUnsupported);
    }
    return flush_dev(e->dev);
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    API_LOCK;
    if (!event_live(e))
        return note(cudaErrorInvalidResourceHandle);
    if (e->cap) {
        if (cudaError_t r = capture_forbid("cudaEventQuery"))
            return r;
        return cudaErrorNotReady;
    }
    return flush_dev(e->dev);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    API_LOCK;
    if (!ms || !event_live(a) || !event_live(b))
        return note(cudaErrorInvalidValue);
    if ((a->flags | b->flags) & cudaEventDisableTiming || !a->recorded || !b->recorded)
        return note(cudaErrorInvalidResourceHandle);
    if (!a->done || !b->done)
        return note(cudaErrorNotReady);
    *ms = (float)(b->t_ms - a->t_ms);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t e, unsigned int flags)
{
    API_LOCK;
    (void)flags;
    CUstream_st *s = stream_of(st);
    if (!s || !event_live(e))
        return note(cudaErrorInvalidResourceHandle);
    // waiting on an event of an active capture pulls the stream into that capture (fork)
    if (e->cap && !s->cap && !s->legacy) {
        s->cap = e->cap;
        e->cap->joined.push_back(s);
    }
    // One in-order queue per device: on the same device everything recorded earlier runs
    // first; an event of another device is waited for now (its device runs up to it).
    if (!e->cap && !s->cap && e->recorded && e->dev != s->dev)
        return flush_dev(e->dev);
    return cudaSuccess;
}

} // extern "C"
