/* comm_nccl.c — the communicator over NCCL (comm_nccl.h): one ncclComm_t per rank from
 * ncclCommInitAll, collectives enqueued on the calling rank's stream, and the one-shot
 * peer-to-peer all-reduce (kernels/allreduce_p2p.h) for messages up to p2p_max_bytes when
 * every pair of GPUs has peer access. Sums come out in rank order on both paths on the
 * emulator (its NCCL sums in rank order); real NCCL's ring/tree order is its own, but every
 * rank still holds the same bits. */
#include "comm_nccl.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "allreduce_p2p.h"

/* nccl.h declares ncclGroupStart() and friends without (void) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

enum { NCCL_MAX_RANKS = 64 };

typedef struct nccl_rank {
    ncclComm_t comm; /* NULL once aborted */
    int dev;
    pthread_mutex_t mu; /* held while the rank enqueues, and by abort */
    uint32_t *gen;      /* [1] on dev: p2p all-reduces done (allreduce_p2p.h) */
} nccl_rank;

typedef struct comm_nccl {
    eng_comm base; /* first: the caller holds a pointer to it */
    bool p2p;
    size_t p2p_max;
    kn_p2p_peers peers; /* every rank's stage and flags (device memory) */
    uint32_t *ctl;      /* host-mapped [1 + KN_P2P_MAX_RANKS]: the barriers' abort flag, then
                         * each rank's kn_p2p_wait (peers.abort, peers.errs); NULL without p2p */
    atomic_bool failed;
    pthread_mutex_t why_mu;
    char why[256];
    nccl_rank rank[];
} comm_nccl;

static ncclDataType_t nccl_type(eng_comm_dtype dt)
{
    return dt == ENG_COMM_F32 ? ncclFloat32 : dt == ENG_COMM_F16 ? ncclFloat16 : ncclBfloat16;
}

static kn_dtype kn_type(eng_comm_dtype dt)
{
    return dt == ENG_COMM_F32 ? KN_DTYPE_F32 : dt == ENG_COMM_F16 ? KN_DTYPE_F16 : KN_DTYPE_BF16;
}

static size_t dt_size(eng_comm_dtype dt) { return dt == ENG_COMM_F32 ? 4 : 2; }

/* Records the first reason the group failed and releases every p2p barrier waiting now or
 * later (a rank whose peer is gone must not wait for it on the GPU). */
static void set_failed(comm_nccl *c, const char *why)
{
    pthread_mutex_lock(&c->why_mu);
    if (!atomic_load(&c->failed)) {
        snprintf(c->why, sizeof c->why, "%s", why && *why ? why : "aborted");
        atomic_store(&c->failed, true);
    }
    pthread_mutex_unlock(&c->why_mu);
    if (c->ctl)
        __atomic_store_n(&c->ctl[0], 1u, __ATOMIC_SEQ_CST);
}

static eng_status cancelled(comm_nccl *c, int rank, eng_err *err)
{
    pthread_mutex_lock(&c->why_mu);
    char why[256];
    snprintf(why, sizeof why, "%s", c->why);
    pthread_mutex_unlock(&c->why_mu);
    return eng_fail(err, ENG_ERR_CANCELLED, "tensor-parallel group of %d ranks failed (seen by "
                    "rank %d): %s", c->base.n_ranks, rank, why);
}

static bool use_p2p(const comm_nccl *c, size_t bytes) { return c->p2p && bytes <= c->p2p_max; }

const char *eng_comm_nccl_path(const eng_comm *base, size_t bytes)
{
    return use_p2p((const comm_nccl *)base, bytes) ? "p2p" : "nccl";
}

/* Checks the arguments every call shares; fails like comm.h says. */
static eng_status check_call(comm_nccl *c, int rank, const void *buf, size_t count,
                             eng_comm_dtype dt, eng_err *err)
{
    if (rank < 0 || rank >= c->base.n_ranks)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d outside the group's [0, %d)", rank,
                        c->base.n_ranks);
    if (dt != ENG_COMM_F32 && dt != ENG_COMM_F16 && dt != ENG_COMM_BF16)
        return eng_fail(err, ENG_ERR_INVALID, "unknown communicator dtype %d", (int)dt);
    if (!buf && count)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d passed no buffer for %zu elements", rank,
                        count);
    if (atomic_load(&c->failed))
        return cancelled(c, rank, err);
    return ENG_OK;
}

/* After an enqueue: an NCCL error now or reported asynchronously fails the group. */
static eng_status after_nccl(comm_nccl *c, int rank, ncclResult_t r, const char *what,
                             eng_err *err)
{
    ncclResult_t async = ncclSuccess;
    if (r == ncclSuccess && c->rank[rank].comm)
        ncclCommGetAsyncError(c->rank[rank].comm, &async);
    if (r == ncclSuccess && async == ncclSuccess)
        return ENG_OK;
    char why[256];
    snprintf(why, sizeof why, "%s on rank %d: %s (%s)", what, rank,
             ncclGetErrorString(r != ncclSuccess ? r : async), ncclGetLastError(c->rank[rank].comm));
    set_failed(c, why);
    return cancelled(c, rank, err);
}

static eng_status nccl_all_reduce_sum(eng_comm *base, int rank, void *buf, size_t count,
                                      eng_comm_dtype dt, void *stream, eng_err *err)
{
    comm_nccl *c = (comm_nccl *)base;
    eng_status s = check_call(c, rank, buf, count, dt, err);
    if (s != ENG_OK || count == 0 || c->base.n_ranks == 1)
        return s;
    nccl_rank *rk = &c->rank[rank];
    pthread_mutex_lock(&rk->mu);
    if (!rk->comm) {
        pthread_mutex_unlock(&rk->mu);
        return cancelled(c, rank, err);
    }
    if (use_p2p(c, count * dt_size(dt))) {
        const kn_status ks = kn_p2p_all_reduce(kn_type(dt), buf, (int64_t)count, &c->peers, rank,
                                               rk->gen, (cudaStream_t)stream);
        pthread_mutex_unlock(&rk->mu);
        if (ks != KN_OK) { /* this rank's own failure: the crew names it */
            char why[256];
            snprintf(why, sizeof why, "p2p all-reduce on rank %d: %s", rank, kn_last_error());
            set_failed(c, why);
            return eng_fail(err, ENG_ERR_CUDA, "%s", why);
        }
        return ENG_OK;
    }
    const ncclResult_t r = ncclAllReduce(buf, buf, count, nccl_type(dt), ncclSum, rk->comm,
                                         (cudaStream_t)stream);
    s = after_nccl(c, rank, r, "ncclAllReduce", err);
    pthread_mutex_unlock(&rk->mu);
    return s;
}

static eng_status nccl_all_gather(eng_comm *base, int rank, const void *send, void *recv,
                                  size_t count, eng_comm_dtype dt, void *stream, eng_err *err)
{
    comm_nccl *c = (comm_nccl *)base;
    eng_status s = check_call(c, rank, send, count, dt, err);
    if (s == ENG_OK && !recv && count)
        s = eng_fail(err, ENG_ERR_INVALID, "rank %d passed no receive buffer", rank);
    if (s != ENG_OK || count == 0)
        return s;
    nccl_rank *rk = &c->rank[rank];
    pthread_mutex_lock(&rk->mu);
    if (!rk->comm) {
        pthread_mutex_unlock(&rk->mu);
        return cancelled(c, rank, err);
    }
    const ncclResult_t r = ncclAllGather(send, recv, count, nccl_type(dt), rk->comm,
                                         (cudaStream_t)stream);
    s = after_nccl(c, rank, r, "ncclAllGather", err);
    pthread_mutex_unlock(&rk->mu);
    return s;
}

/* Locks a rank for abort, waiting at most 2 s: a rank blocked inside NCCL (its first
 * collective sets up connections with its peers) holds it; abort then leaves that rank's
 * communicator to free, rather than pull it from under the call. */
static bool lock_rank(nccl_rank *rk)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 2;
    return pthread_mutex_timedlock(&rk->mu, &t) == 0;
}

static void nccl_abort(eng_comm *base, const char *why)
{
    comm_nccl *c = (comm_nccl *)base;
    set_failed(c, why);
    for (int r = 0; r < c->base.n_ranks; r++) {
        nccl_rank *rk = &c->rank[r];
        if (!lock_rank(rk))
            continue;
        if (rk->comm)
            ncclCommAbort(rk->comm);
        rk->comm = NULL;
        pthread_mutex_unlock(&rk->mu);
    }
}

eng_status eng_comm_nccl_rank_check(eng_comm *base, int rank, eng_err *err)
{
    comm_nccl *c = (comm_nccl *)base;
    if (rank < 0 || rank >= c->base.n_ranks)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d outside the group's [0, %d)", rank,
                        c->base.n_ranks);
    const uint32_t w = c->ctl ? __atomic_load_n(&c->ctl[1 + rank], __ATOMIC_SEQ_CST) : 0;
    if (w == KN_P2P_WAIT_TIMED_OUT) {
        char why[256];
        snprintf(why, sizeof why, "rank %d (GPU %d) waited %.0f s in the p2p all-reduce's "
                 "barrier for its peers and gave up (a GPU lost or hung)", rank, c->rank[rank].dev,
                 (double)c->peers.wait_limit_ns / 1e9);
        set_failed(c, why);
        return eng_fail(err, ENG_ERR_CUDA, "%s", why);
    }
    if (w != KN_P2P_WAIT_OK || atomic_load(&c->failed))
        return cancelled(c, rank, err);
    return ENG_OK;
}

static void free_p2p(comm_nccl *c)
{
    for (int r = 0; r < c->base.n_ranks && r < KN_P2P_MAX_RANKS; r++) {
        cudaSetDevice(c->rank[r].dev);
        cudaFree(c->peers.stage[r]);
        cudaFree(c->peers.flags[r]);
        cudaFree(c->rank[r].gen);
        c->peers.stage[r] = NULL;
        c->peers.flags[r] = NULL;
        c->rank[r].gen = NULL;
    }
    cudaFreeHost(c->ctl);
    c->ctl = NULL;
}

static void nccl_free(eng_comm *base)
{
    comm_nccl *c = (comm_nccl *)base;
    if (!c)
        return;
    int cur = 0;
    cudaGetDevice(&cur);
    for (int r = 0; r < c->base.n_ranks; r++) {
        if (c->rank[r].comm) {
            cudaSetDevice(c->rank[r].dev);
            ncclCommDestroy(c->rank[r].comm); /* waits for its enqueued work */
        }
        pthread_mutex_destroy(&c->rank[r].mu);
    }
    free_p2p(c);
    cudaSetDevice(cur);
    pthread_mutex_destroy(&c->why_mu);
    free(c);
}

static const eng_comm_ops nccl_ops = {
    .name = "nccl",
    .all_reduce_sum = nccl_all_reduce_sum,
    .all_gather = nccl_all_gather,
    .abort = nccl_abort,
    .free = nccl_free,
};

/* Peer access between every pair, or false (and no change) when some pair has none. */
static eng_status enable_peers(comm_nccl *c, bool *ok, eng_err *err)
{
    const int n = c->base.n_ranks;
    *ok = false;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            int can = 0;
            if (a != b && (cudaDeviceCanAccessPeer(&can, c->rank[a].dev, c->rank[b].dev) != cudaSuccess || !can)) {
                cudaGetLastError();
                return ENG_OK;
            }
        }
    for (int a = 0; a < n; a++) {
        cudaSetDevice(c->rank[a].dev);
        for (int b = 0; b < n; b++) {
            if (a == b)
                continue;
            const cudaError_t e = cudaDeviceEnablePeerAccess(c->rank[b].dev, 0);
            if (e == cudaErrorPeerAccessAlreadyEnabled) {
                cudaGetLastError();
                continue;
            }
            if (e != cudaSuccess)
                return eng_fail(err, ENG_ERR_CUDA, "cudaDeviceEnablePeerAccess(%d) on device %d: %s",
                                c->rank[b].dev, c->rank[a].dev, cudaGetErrorString(e));
        }
    }
    *ok = true;
    return ENG_OK;
}

/* The p2p path's device memory: slots, flags and the generation counter on every GPU. */
static eng_status alloc_p2p(comm_nccl *c, eng_err *err)
{
    const int n = c->base.n_ranks;
    c->peers.n_ranks = n;
    c->peers.slot_bytes = (c->p2p_max + 15) / 16 * 16;
    c->peers.wait_limit_ns = KN_P2P_DEFAULT_WAIT_NS;
    /* host-mapped, every device reads and writes it through its host pointer (unified
     * addressing) */
    const size_t ctl_bytes = (1 + KN_P2P_MAX_RANKS) * sizeof(uint32_t);
    const cudaError_t he = cudaHostAlloc((void **)&c->ctl, ctl_bytes,
                                         cudaHostAllocMapped | cudaHostAllocPortable);
    if (he != cudaSuccess) {
        c->ctl = NULL;
        return eng_fail(err, ENG_ERR_NOMEM, "the peer-to-peer all-reduce's abort flag (%zu bytes "
                        "of mapped host memory): %s", ctl_bytes, cudaGetErrorString(he));
    }
    memset(c->ctl, 0, ctl_bytes);
    c->peers.abort = c->ctl;
    c->peers.errs = c->ctl + 1;
    for (int r = 0; r < n; r++) {
        cudaSetDevice(c->rank[r].dev);
        const size_t flag_bytes = KN_P2P_MAX_RANKS * sizeof(uint32_t);
        cudaError_t e = cudaMalloc(&c->peers.stage[r], 2 * c->peers.slot_bytes);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&c->peers.flags[r], flag_bytes);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&c->rank[r].gen, sizeof(uint32_t));
        if (e == cudaSuccess)
            e = cudaMemset(c->peers.flags[r], 0, flag_bytes);
        if (e == cudaSuccess)
            e = cudaMemset(c->rank[r].gen, 0, sizeof(uint32_t));
        if (e == cudaSuccess)
            e = cudaDeviceSynchronize();
        if (e != cudaSuccess)
            return eng_fail(err, e == cudaErrorMemoryAllocation ? ENG_ERR_NOMEM : ENG_ERR_CUDA,
                            "peer-to-peer all-reduce buffers (2 x %zu bytes) on device %d: %s",
                            c->peers.slot_bytes, c->rank[r].dev, cudaGetErrorString(e));
    }
    return ENG_OK;
}

eng_status eng_comm_nccl_create(int n_ranks, const int *devices, size_t p2p_max_bytes,
                                eng_comm **out, eng_err *err)
{
    *out = NULL;
    if (n_ranks < 1 || n_ranks > NCCL_MAX_RANKS)
        return eng_fail(err, ENG_ERR_INVALID, "a group of %d ranks is outside [1, %d]", n_ranks,
                        NCCL_MAX_RANKS);
    if (!devices)
        return eng_fail(err, ENG_ERR_INVALID, "no devices for %d ranks", n_ranks);
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess)
        n_dev = 0;
    for (int r = 0; r < n_ranks; r++) {
        if (devices[r] < 0 || devices[r] >= n_dev)
            return eng_fail(err, ENG_ERR_INVALID, "rank %d: GPU %d, but %d GPU(s) are visible",
                            r, devices[r], n_dev);
        for (int q = 0; q < r; q++)
            if (devices[q] == devices[r])
                return eng_fail(err, ENG_ERR_INVALID, "ranks %d and %d both on GPU %d (one rank "
                                "per GPU)", q, r, devices[r]);
    }
    comm_nccl *c = calloc(1, sizeof *c + (size_t)n_ranks * sizeof(nccl_rank));
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    c->base.ops = &nccl_ops;
    c->base.n_ranks = n_ranks;
    c->p2p_max = p2p_max_bytes;
    atomic_init(&c->failed, false);
    pthread_mutex_init(&c->why_mu, NULL);
    for (int r = 0; r < n_ranks; r++) {
        c->rank[r].dev = devices[r];
        pthread_mutex_init(&c->rank[r].mu, NULL);
    }
    int cur = 0;
    cudaGetDevice(&cur);
    eng_status s = ENG_OK;
    ncclComm_t comms[NCCL_MAX_RANKS];
    const ncclResult_t nr = ncclCommInitAll(comms, n_ranks, devices);
    if (nr != ncclSuccess) {
        s = eng_fail(err, ENG_ERR_CUDA, "ncclCommInitAll over %d GPU(s): %s (%s)", n_ranks,
                     ncclGetErrorString(nr), ncclGetLastError(NULL));
        for (int r = 0; r < n_ranks; r++)
            pthread_mutex_destroy(&c->rank[r].mu);
        pthread_mutex_destroy(&c->why_mu);
        free(c);
        cudaSetDevice(cur);
        return s;
    }
    for (int r = 0; r < n_ranks; r++)
        c->rank[r].comm = comms[r];
    if (p2p_max_bytes > 0 && n_ranks >= 2 && n_ranks <= KN_P2P_MAX_RANKS) {
        bool ok = false;
        s = enable_peers(c, &ok, err);
        if (s == ENG_OK && ok) {
            s = alloc_p2p(c, err);
            c->p2p = s == ENG_OK;
        }
    }
    cudaSetDevice(cur);
    if (s != ENG_OK) {
        nccl_free(&c->base);
        return s;
    }
    *out = &c->base;
    return ENG_OK;
}
