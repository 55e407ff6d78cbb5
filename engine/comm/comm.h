/* comm.h — the communicator tensor parallelism uses: sum all-reduce and all-gather among the
 * ranks of one group (one rank per GPU, or per CPU shard), with two implementations: threads in
 * one process (the CPU backend, and tests on machines without GPUs) and NCCL (the CUDA backend).
 * See "Tensor parallelism" in ../shared/DESIGN.md. */
#ifndef SERVAL_ENG_COMM_H
#define SERVAL_ENG_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "../util/status.h"

typedef enum eng_comm_dtype {
    ENG_COMM_F32 = 0,
    ENG_COMM_F16 = 1,
    ENG_COMM_BF16 = 2,
} eng_comm_dtype;

typedef struct eng_comm eng_comm;

/* Every collective is called by all n_ranks ranks, each from its own thread, in the same order
 * with the same count and dtype (the group's contract; a mismatch is a bug, reported as
 * ENG_ERR_INVALID where it can be detected). `stream` is the rank's cudaStream_t for NCCL
 * (the call only enqueues; it may be captured into a CUDA graph) and NULL for threads (the call
 * returns when the result is in buf). Every rank ends with the same bits, and a run repeats
 * exactly: the threads implementation adds the ranks' values in rank order in float, f16/bf16
 * converted up and the sum rounded once (NCCL sums in its own fixed order). After abort, a
 * timeout or a mismatched call, every pending and later call on every rank returns
 * ENG_ERR_CANCELLED with the reason ("tensor-parallel group of N ranks failed ...: <why>"),
 * instead of waiting for a rank that is gone; the rank whose call did not match the others'
 * gets ENG_ERR_INVALID. A failed group stays failed: free it and make a new one. */
typedef struct eng_comm_ops {
    const char *name; /* "threads", "nccl", "p2p" */
    /* buf[i] = sum over ranks of their buf[i], i < count, in place. */
    eng_status (*all_reduce_sum)(eng_comm *c, int rank, void *buf, size_t count,
                                 eng_comm_dtype dt, void *stream, eng_err *err);
    /* recv[r * count + i] = rank r's send[i]: recv holds n_ranks * count elements. */
    eng_status (*all_gather)(eng_comm *c, int rank, const void *send, void *recv, size_t count,
                             eng_comm_dtype dt, void *stream, eng_err *err);
    /* Fails the group (one rank hit an error or is going away): any rank may call it, once or
     * more; `why` is copied into every later error. */
    void (*abort)(eng_comm *c, const char *why);
    /* Frees the group: called once, after every rank has stopped calling. */
    void (*free)(eng_comm *c);
} eng_comm_ops;

struct eng_comm {
    const eng_comm_ops *ops;
    int n_ranks;
};

/* An in-process group of n_ranks (1..64) ranks over threads (comm_threads.c); rank r is
 * whichever thread passes rank r. timeout_ms > 0: a rank waiting longer than that for the
 * others at one collective fails the group (ENG_ERR_CANCELLED, "rank 1 did not arrive at
 * all_reduce_sum within 300 ms"), so a lost rank is reported rather than hung; 0: wait
 * forever. ENG_ERR_INVALID for n_ranks outside [1, 64] or a negative timeout. *out is owned by
 * the caller: free it with (*out)->ops->free(*out) once no rank calls it any more. */
eng_status eng_comm_threads_create(int n_ranks, int timeout_ms, eng_comm **out, eng_err *err);

#endif
