/* allreduce_p2p.h — the one-shot peer-to-peer sum all-reduce among the GPUs of one process
 * (tensor parallelism's decode-sized messages, where peer access exists): every rank stages
 * its buffer, the ranks meet at a flag barrier in each other's memory, and every rank reads
 * all ranks' staged copies and sums them itself (C interface). engine/comm/comm_nccl.c owns
 * the buffers and picks this path or NCCL's. */
#ifndef SERVAL_KN_ALLREDUCE_P2P_H
#define SERVAL_KN_ALLREDUCE_P2P_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "kn_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { KN_P2P_MAX_RANKS = 8 };

/* Why a rank's barrier stopped waiting without its peers (kn_p2p_peers.errs[rank]). */
typedef enum kn_p2p_wait {
    KN_P2P_WAIT_OK = 0,        /* every peer announced (or nothing went wrong yet) */
    KN_P2P_WAIT_ABORTED = 1,   /* *abort was set (the group failed elsewhere) */
    KN_P2P_WAIT_TIMED_OUT = 2, /* no announcement within wait_limit_ns (a GPU lost or hung) */
} kn_p2p_wait;

/* 10 s: a peer's barrier comes microseconds to milliseconds after this rank's (both enqueue
 * the same step); seconds mean a GPU is gone. Under the router's 30 s step watchdog, so a
 * replica whose peer vanished fails its step rather than stalls it. */
#define KN_P2P_DEFAULT_WAIT_NS 10000000000ull

/* Memory every rank can reach (peer access enabled between every pair), the same values on
 * every rank; allocated and zeroed once by the caller.
 *   stage[q]: [2, slot_bytes] on rank q's device (two slots, used alternately)
 *   flags[q]: [KN_P2P_MAX_RANKS] uint32 on rank q's device: flags[q][r] is the last
 *             all-reduce rank r announced to rank q
 *   abort:    [1] uint32 every device reads (host-mapped: cudaHostAlloc Mapped | Portable,
 *             the host pointer under unified addressing) or NULL: the host sets it non-zero to
 *             release every barrier waiting now or later (the group failed); read once per 32
 *             spin iterations, never on the path where the peers have announced
 *   errs:     [KN_P2P_MAX_RANKS] uint32 every device writes (host-mapped), or NULL: errs[r] is
 *             set to a kn_p2p_wait when rank r's barrier stopped waiting without its peers;
 *             the host reads it once the rank's stream has finished the all-reduce */
typedef struct kn_p2p_peers {
    void *stage[KN_P2P_MAX_RANKS];
    uint32_t *flags[KN_P2P_MAX_RANKS];
    const volatile uint32_t *abort;
    volatile uint32_t *errs;
    uint64_t wait_limit_ns; /* a barrier waits at most this long (GPU global timer); 0: no bound.
                             * The emulator bounds every wait at 60 s itself (the launch fails) */
    int n_ranks;      /* 2..KN_P2P_MAX_RANKS */
    size_t slot_bytes;
} kn_p2p_peers;

/* buf[i] = sum over ranks q (in rank order, in fp32, rounded once to dt) of rank q's buf[i],
 * i < count; every rank calls it on its own stream, with its device current, in the same
 * order with the same count. gen: [1] uint32 on this rank's device, zeroed once: how many
 * all-reduces it has done (device-resident, so a captured graph replays correctly).
 * Three launches: stage (buf into this rank's slot gen+1 mod 2), barrier (announce, wait for
 * every rank's announcement of the same all-reduce, gen += 1), sum (read every rank's slot).
 * Two slots suffice: a rank restages a slot only after every rank has passed the next
 * barrier, so after every rank finished reading it. count * size(dt) <= slot_bytes.
 * A rank that never calls leaves the others waiting in the barrier until peers->abort is set
 * or wait_limit_ns passes (then errs[rank] says which; the sum that follows reads whatever the
 * slots hold, and the group's generations no longer agree: the caller fails the group and
 * frees it). The emulator fails a wait's launch after 60 s instead of timing out. */
kn_status kn_p2p_all_reduce(kn_dtype dt, void *buf, int64_t count, const kn_p2p_peers *peers,
                            int rank, uint32_t *gen, cudaStream_t st);

/* The summing step alone (tests, workbench): out[i] = sum over q < n (rank order, fp32,
 * rounded once) of in[q][i]. in: n device pointers (a host array; any device this one can
 * reach), out: [count] on this device; out may be one of the inputs. */
kn_status kn_p2p_sum(kn_dtype dt, const void *const *in, int n, void *out, int64_t count,
                     cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
