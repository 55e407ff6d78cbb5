/* comm_threads.c — the in-process communicator (comm.h) over threads: the CPU backend's ranks
 * and the tests of tensor parallelism on machines without GPUs.
 *
 * Every collective is one rendezvous of all ranks. Before it, each rank copies its input into
 * its own staging buffer for the call (two per rank, used by alternate calls) and the first
 * to arrive records the call, which the others must match; after it, each rank reads every
 * rank's staging buffer into its own output. A sum adds rank 0's value, then rank 1's, ..., in
 * float and rounds once to the dtype, the same order on every rank whatever the thread
 * timing, so every rank holds the same bits and a run repeats exactly. Two staging buffers
 * make one rendezvous enough: a rank can only write the buffer of call k + 2 after passing the
 * rendezvous of call k + 1, which every rank reaches only when done reading call k's.
 *
 * A rendezvous spins briefly (ranks of a step arrive within microseconds of each other), then
 * sleeps on a condition variable with the group's timeout. A rank that times out, a contract
 * mismatch or an explicit abort fails the group: every waiting and later call returns
 * ENG_ERR_CANCELLED with the reason. */
#include "comm.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "quant.h" /* the fp16/bf16 conversions */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COMM_RELAX() _mm_pause()
#else
#define COMM_RELAX() ((void)0)
#endif

enum { COMM_MAX_RANKS = 64, COMM_SPINS = 4000 };

typedef enum comm_op { COMM_OP_ALL_REDUCE = 0, COMM_OP_ALL_GATHER } comm_op;

typedef struct comm_threads {
    eng_comm base; /* first: the caller holds a pointer to it */
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;   /* rendezvous completed so far */
    atomic_bool failed;
    /* under mu */
    int arrived;                          /* ranks at the current rendezvous */
    unsigned reached[COMM_MAX_RANKS];     /* the last rendezvous each rank arrived at, + 1 */
    char why[256];                        /* set once, when the group fails */
    /* the current collective, recorded by the first rank at its rendezvous */
    comm_op op;
    size_t count;
    eng_comm_dtype dt;
    /* each rank's, written by that rank only (before it arrives) */
    unsigned calls[COMM_MAX_RANKS];       /* collectives the rank has started */
    void *stage[COMM_MAX_RANKS][2];       /* its input of calls 0, 2, 4... and 1, 3, 5... */
    size_t stage_cap[COMM_MAX_RANKS][2];  /* bytes */
} comm_threads;

static const char *op_name(comm_op op)
{
    return op == COMM_OP_ALL_REDUCE ? "all_reduce_sum" : "all_gather";
}

static const char *dtype_name(eng_comm_dtype dt)
{
    return dt == ENG_COMM_F32 ? "f32" : dt == ENG_COMM_F16 ? "f16" : "bf16";
}

static size_t dtype_size(eng_comm_dtype dt) { return dt == ENG_COMM_F32 ? 4 : 2; }

/* Fails the group with `why` unless it has failed already (the first reason stays). */
static void fail_locked(comm_threads *c, const char *why)
{
    if (atomic_load(&c->failed))
        return;
    snprintf(c->why, sizeof c->why, "%s", why);
    atomic_store(&c->failed, true);
    pthread_cond_broadcast(&c->cv);
}

static void threads_abort_reason(comm_threads *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    fail_locked(c, why && *why ? why : "aborted");
    pthread_mutex_unlock(&c->mu);
}

static eng_status cancelled_locked(const comm_threads *c, int rank, eng_err *err)
{
    return eng_fail(err, ENG_ERR_CANCELLED, "tensor-parallel group of %d ranks failed (seen by "
                    "rank %d): %s", c->base.n_ranks, rank, c->why);
}

/* Waits (mu held, released on return) until rendezvous g completes or the group fails; after
 * timeout_ms the ranks that have not arrived fail it. */
static eng_status wait_rendezvous(comm_threads *c, int rank, unsigned g, eng_err *err)
{
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < COMM_SPINS; i++) {
        if (atomic_load_explicit(&c->gen, memory_order_acquire) != g || atomic_load(&c->failed))
            break;
        COMM_RELAX();
    }
    pthread_mutex_lock(&c->mu);
    struct timespec until = eng_clock_deadline(c->timeout_ms);
    while (atomic_load(&c->gen) == g && !atomic_load(&c->failed)) {
        int rc = c->timeout_ms > 0 ? pthread_cond_timedwait(&c->cv, &c->mu, &until)
                                   : pthread_cond_wait(&c->cv, &c->mu);
        if (rc == ETIMEDOUT && atomic_load(&c->gen) == g && !atomic_load(&c->failed)) {
            char why[256];
            int w = snprintf(why, sizeof why, "rank");
            int missing = 0;
            for (int q = 0; q < c->base.n_ranks && w < (int)sizeof why - 16; q++)
                if (c->reached[q] != g + 1) {
                    w += snprintf(why + w, sizeof why - (size_t)w, "%s %d", missing ? "," : "", q);
                    missing++;
                }
            snprintf(why + w, sizeof why - (size_t)w, " did not arrive at %s within %d ms",
                     op_name(c->op), c->timeout_ms);
            fail_locked(c, why);
        }
    }
    eng_status st = ENG_OK;
    if (atomic_load(&c->gen) == g) /* it never completed: the group failed */
        st = cancelled_locked(c, rank, err);
    pthread_mutex_unlock(&c->mu);
    return st;
}

/* The rendezvous every rank of the group reaches once per collective, checking the call
 * against the one the first rank to arrive recorded. */
static eng_status rendezvous(comm_threads *c, int rank, comm_op op, size_t count,
                             eng_comm_dtype dt, eng_err *err)
{
    pthread_mutex_lock(&c->mu);
    if (atomic_load(&c->failed)) {
        eng_status st = cancelled_locked(c, rank, err);
        pthread_mutex_unlock(&c->mu);
        return st;
    }
    if (c->arrived == 0) {
        c->op = op;
        c->count = count;
        c->dt = dt;
    } else if (c->op != op || c->count != count || c->dt != dt) {
        char why[256];
        snprintf(why, sizeof why, "rank %d called %s(%zu %s) while the others called "
                 "%s(%zu %s)", rank, op_name(op), count, dtype_name(dt), op_name(c->op),
                 c->count, dtype_name(c->dt));
        fail_locked(c, why);
        pthread_mutex_unlock(&c->mu);
        return eng_fail(err, ENG_ERR_INVALID, "tensor-parallel group: %s", why);
    }
    unsigned g = atomic_load(&c->gen);
    c->reached[rank] = g + 1;
    if (++c->arrived == c->base.n_ranks) {
        c->arrived = 0;
        atomic_store_explicit(&c->gen, g + 1, memory_order_release);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        return ENG_OK;
    }
    return wait_rendezvous(c, rank, g, err);
}

static eng_status check_call(const comm_threads *c, int rank, const void *buf, size_t count,
                             eng_comm_dtype dt, eng_err *err)
{
    if (rank < 0 || rank >= c->base.n_ranks)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d outside the group's [0, %d)", rank,
                        c->base.n_ranks);
    if (dt != ENG_COMM_F32 && dt != ENG_COMM_F16 && dt != ENG_COMM_BF16)
        return eng_fail(err, ENG_ERR_INVALID, "unknown communicator dtype %d", (int)dt);
    if (!buf && count > 0)
        return eng_fail(err, ENG_ERR_INVALID, "rank %d passed no buffer for %zu elements", rank,
                        count);
    return ENG_OK;
}

static inline float load_elem(const void *p, size_t i, eng_comm_dtype dt)
{
    if (dt == ENG_COMM_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return dt == ENG_COMM_F16 ? quant_f16_to_f32(h) : quant_bf16_to_f32(h);
}

/* Copies this rank's input into its staging buffer for the call (grown when too small: the
 * buffer of the same parity was last read two calls ago, before the previous rendezvous) and
 * meets the others. *slot says which of the rank's two buffers the call uses. */
static eng_status stage_and_meet(comm_threads *c, int rank, comm_op op, const void *in,
                                 size_t count, eng_comm_dtype dt, int *slot, eng_err *err)
{
    const int s = (int)(c->calls[rank]++ & 1u);
    const size_t bytes = count * dtype_size(dt);
    if (bytes > c->stage_cap[rank][s]) {
        void *p = realloc(c->stage[rank][s], bytes);
        if (!p) {
            char why[128];
            snprintf(why, sizeof why, "rank %d ran out of memory staging %zu bytes", rank, bytes);
            threads_abort_reason(c, why);
            return eng_fail(err, ENG_ERR_NOMEM, "tensor-parallel group: %s", why);
        }
        c->stage[rank][s] = p;
        c->stage_cap[rank][s] = bytes;
    }
    if (bytes)
        memcpy(c->stage[rank][s], in, bytes);
    *slot = s;
    return rendezvous(c, rank, op, count, dt, err);
}

static eng_status threads_all_reduce_sum(eng_comm *base, int rank, void *buf, size_t count,
                                         eng_comm_dtype dt, void *stream, eng_err *err)
{
    (void)stream;
    comm_threads *c = (comm_threads *)base;
    int s;
    eng_status st = check_call(c, rank, buf, count, dt, err);
    if (st == ENG_OK)
        st = stage_and_meet(c, rank, COMM_OP_ALL_REDUCE, buf, count, dt, &s, err);
    if (st != ENG_OK)
        return st;
    const int n = c->base.n_ranks;
    if (dt == ENG_COMM_F32) {
        float *out = buf;
        for (size_t i = 0; i < count; i++) {
            float sum = ((const float *)c->stage[0][s])[i];
            for (int q = 1; q < n; q++)
                sum += ((const float *)c->stage[q][s])[i];
            out[i] = sum;
        }
        return ENG_OK;
    }
    for (size_t i = 0; i < count; i++) {
        float sum = load_elem(c->stage[0][s], i, dt);
        for (int q = 1; q < n; q++)
            sum += load_elem(c->stage[q][s], i, dt);
        ((uint16_t *)buf)[i] = dt == ENG_COMM_F16 ? quant_f32_to_f16(sum) : quant_f32_to_bf16(sum);
    }
    return ENG_OK;
}

static eng_status threads_all_gather(eng_comm *base, int rank, const void *send, void *recv,
                                     size_t count, eng_comm_dtype dt, void *stream, eng_err *err)
{
    (void)stream;
    comm_threads *c = (comm_threads *)base;
    int s;
    eng_status st = check_call(c, rank, send, count, dt, err);
    if (st == ENG_OK && !recv && count > 0)
        st = eng_fail(err, ENG_ERR_INVALID, "rank %d passed no receive buffer", rank);
    if (st == ENG_OK)
        st = stage_and_meet(c, rank, COMM_OP_ALL_GATHER, send, count, dt, &s, err);
    if (st != ENG_OK)
        return st;
    const size_t bytes = count * dtype_size(dt);
    for (int q = 0; q < c->base.n_ranks && bytes; q++)
        memcpy((char *)recv + (size_t)q * bytes, c->stage[q][s], bytes);
    return ENG_OK;
}

static void threads_abort(eng_comm *base, const char *why)
{
    threads_abort_reason((comm_threads *)base, why);
}

static void threads_free(eng_comm *base)
{
    comm_threads *c = (comm_threads *)base;
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    for (int q = 0; q < c->base.n_ranks; q++) {
        free(c->stage[q][0]);
        free(c->stage[q][1]);
    }
    free(c);
}

static const eng_comm_ops threads_ops = {
    .name = "threads",
    .all_reduce_sum = threads_all_reduce_sum,
    .all_gather = threads_all_gather,
    .abort = threads_abort,
    .free = threads_free,
};

eng_status eng_comm_threads_create(int n_ranks, int timeout_ms, eng_comm **out, eng_err *err)
{
    *out = NULL;
    if (n_ranks < 1 || n_ranks > COMM_MAX_RANKS)
        return eng_fail(err, ENG_ERR_INVALID, "a group of %d ranks is outside [1, %d]", n_ranks,
                        COMM_MAX_RANKS);
    if (timeout_ms < 0)
        return eng_fail(err, ENG_ERR_INVALID, "communicator timeout %d ms is negative",
                        timeout_ms);
    comm_threads *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    c->base.ops = &threads_ops;
    c->base.n_ranks = n_ranks;
    c->timeout_ms = timeout_ms;
    atomic_init(&c->gen, 0);
    atomic_init(&c->failed, false);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = &c->base;
    return ENG_OK;
}
