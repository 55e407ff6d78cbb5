/* test_comm_nccl.c — the NCCL communicator (engine/comm/comm_nccl.c) on 2 and 4 GPUs, one host
 * thread per rank with its own stream, as the CUDA backend's tensor parallelism calls it:
 * all-reduce sums (NCCL and the one-shot peer-to-peer path alike, bit for bit the CPU
 * communicator's rule: fp32 in rank order, rounded once), all-gather, replay from captured
 * CUDA graphs, the rule that picks a path, an abort reported to every rank with its reason,
 * bad groups refused. On the emulator (SERVAL_EMU_DEVICES=4, its NCCL in kernels/emu); on
 * GPUs with as many as there are, or skipped. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "comm_nccl.h"
#include "kt.h"
#include "ref.h"

static int gpus(void)
{
    setenv("SERVAL_EMU_DEVICES", "4", 0);
    return kt_gpu_count();
}

static const int DEVS[4] = {0, 1, 2, 3};

enum { CALLS = 3, MAX_RANKS = 4 };

typedef struct rank_ctx rank_ctx;
typedef void (*rank_fn)(rank_ctx *rc);
struct rank_ctx {
    eng_comm *c;
    int rank;
    cudaStream_t st;
    rank_fn fn;
    void *arg;
    eng_status s;
    char msg[512];
};

static void *rank_main(void *v)
{
    rank_ctx *rc = v;
    cudaSetDevice(DEVS[rc->rank]);
    cudaStreamCreateWithFlags(&rc->st, cudaStreamNonBlocking);
    rc->fn(rc);
    cudaStreamDestroy(rc->st);
    return NULL;
}

/* Runs fn on every rank's thread, with its device current and a stream of its own. */
static void run_ranks(eng_comm *c, int n, rank_fn fn, void *arg, rank_ctx *rc)
{
    pthread_t t[MAX_RANKS];
    for (int r = 0; r < n; r++) {
        rc[r] = (rank_ctx){.c = c, .rank = r, .fn = fn, .arg = arg};
        pthread_create(&t[r], NULL, rank_main, &rc[r]);
    }
    for (int r = 0; r < n; r++)
        pthread_join(t[r], NULL);
}

typedef struct sum_job {
    kn_dtype dt;
    eng_comm_dtype edt;
    size_t count;
    bool graph;                           /* capture one call, replay it CALLS times */
    void *in[CALLS][MAX_RANKS];           /* host inputs */
    void *out[CALLS][MAX_RANKS];          /* host results */
} sum_job;

static void sum_rank(rank_ctx *rc)
{
    sum_job *j = rc->arg;
    const size_t bytes = j->count * kn_dtype_size(j->dt);
    void *buf = NULL;
    cudaMalloc(&buf, bytes);
    eng_err err = {0};
    cudaGraphExec_t exec = NULL;
    if (j->graph) {
        cudaGraph_t g = NULL;
        cudaStreamBeginCapture(rc->st, cudaStreamCaptureModeThreadLocal);
        rc->s = rc->c->ops->all_reduce_sum(rc->c, rc->rank, buf, j->count, j->edt, rc->st, &err);
        const cudaError_t e = cudaStreamEndCapture(rc->st, &g);
        if (rc->s == ENG_OK && e == cudaSuccess)
            cudaGraphInstantiate(&exec, g, 0);
        if (g)
            cudaGraphDestroy(g);
        if (!exec && rc->s == ENG_OK)
            rc->s = ENG_ERR_CUDA;
    }
    for (int c = 0; c < CALLS && rc->s == ENG_OK; c++) {
        cudaMemcpyAsync(buf, j->in[c][rc->rank], bytes, cudaMemcpyHostToDevice, rc->st);
        if (exec)
            cudaGraphLaunch(exec, rc->st);
        else
            rc->s = rc->c->ops->all_reduce_sum(rc->c, rc->rank, buf, j->count, j->edt, rc->st, &err);
        cudaMemcpyAsync(j->out[c][rc->rank], buf, bytes, cudaMemcpyDeviceToHost, rc->st);
        if (cudaStreamSynchronize(rc->st) != cudaSuccess && rc->s == ENG_OK)
            rc->s = ENG_ERR_CUDA;
    }
    snprintf(rc->msg, sizeof rc->msg, "%s", err.msg);
    if (exec)
        cudaGraphExecDestroy(exec);
    cudaFree(buf);
}

/* Every rank's results equal the rank-order fp32 sum of the inputs, bit for bit. */
static void check_sums(int n, size_t p2p_max, kn_dtype dt, size_t count, bool graph,
                       const char *want_path)
{
    if (gpus() < n)
        cr_skip_test("%d GPUs needed", n);
    eng_comm *c = NULL;
    eng_err err = {0};
    cr_assert(eng_comm_nccl_create(n, DEVS, p2p_max, &c, &err) == ENG_OK, "%s", err.msg);
    cr_assert(strcmp(c->ops->name, "nccl") == 0 && c->n_ranks == n);
    const size_t bytes = count * kn_dtype_size(dt);
    cr_assert(strcmp(eng_comm_nccl_path(c, bytes), want_path) == 0, "%zu bytes took %s, not %s",
              bytes, eng_comm_nccl_path(c, bytes), want_path);
    sum_job *j = calloc(1, sizeof *j);
    j->dt = dt;
    j->edt = dt == KN_DTYPE_F32 ? ENG_COMM_F32 : dt == KN_DTYPE_F16 ? ENG_COMM_F16 : ENG_COMM_BF16;
    j->count = count;
    j->graph = graph;
    kt_rng rng = kt_rng_make(5);
    for (int k = 0; k < CALLS; k++)
        for (int r = 0; r < n; r++) {
            j->in[k][r] = kt_host_random(dt, count, -4.0f, 4.0f, &rng);
            j->out[k][r] = kt_xmalloc(bytes);
        }
    rank_ctx rc[MAX_RANKS];
    run_ranks(c, n, sum_rank, j, rc);
    void *want = kt_xmalloc(bytes);
    for (int k = 0; k < CALLS; k++) {
        kn_ref_sum_ranks(dt, (const void *const *)j->in[k], n, want, (int64_t)count);
        for (int r = 0; r < n; r++) {
            cr_assert(rc[r].s == ENG_OK, "rank %d: %s: %s", r, eng_status_str(rc[r].s), rc[r].msg);
            cr_assert(memcmp(j->out[k][r], want, bytes) == 0, "%d ranks, %s path, call %d: rank "
                      "%d's sum differs from fp32 in rank order", n, want_path, k, r);
        }
    }
    for (int k = 0; k < CALLS; k++)
        for (int r = 0; r < n; r++) {
            free(j->in[k][r]);
            free(j->out[k][r]);
        }
    free(want);
    free(j);
    c->ops->free(c);
}

Test(comm_nccl, two_gpus_all_reduce_through_nccl_in_rank_order)
{
    check_sums(2, 0, KN_DTYPE_BF16, 515, false, "nccl");
}

Test(comm_nccl, four_gpus_all_reduce_through_nccl_in_rank_order)
{
    check_sums(4, 0, KN_DTYPE_F32, 130, false, "nccl");
}

Test(comm_nccl, two_gpus_all_reduce_through_the_p2p_path_with_the_same_bits)
{
    check_sums(2, 4096, KN_DTYPE_BF16, 515, false, "p2p");
}

Test(comm_nccl, four_gpus_all_reduce_through_the_p2p_path_with_the_same_bits)
{
    check_sums(4, 4096, KN_DTYPE_F16, 130, false, "p2p");
}

Test(comm_nccl, a_message_over_the_p2p_limit_goes_through_nccl)
{
    check_sums(2, 512, KN_DTYPE_F32, 129, false, "nccl"); /* 516 bytes */
}

Test(comm_nccl, captured_all_reduces_replay_with_fresh_inputs_on_both_paths)
{
    check_sums(2, 4096, KN_DTYPE_F32, 64, true, "p2p");
    check_sums(2, 0, KN_DTYPE_F32, 64, true, "nccl");
}

Test(comm_nccl, without_peer_access_every_message_goes_through_nccl)
{
    setenv("SERVAL_EMU_P2P", "0", 1); /* the emulator's devices without a peer link */
    if (gpus() < 2)
        cr_skip_test("2 GPUs needed");
    int can = 1;
    cudaDeviceCanAccessPeer(&can, 0, 1);
    if (can)
        cr_skip_test("these GPUs have peer access");
    check_sums(2, 1 << 20, KN_DTYPE_F32, 64, false, "nccl");
}

typedef struct gather_job {
    size_t count;
    float *out[MAX_RANKS]; /* host: n * count */
} gather_job;

static void gather_rank(rank_ctx *rc)
{
    gather_job *j = rc->arg;
    const int n = rc->c->n_ranks;
    float *send = NULL, *recv = NULL;
    cudaMalloc((void **)&send, j->count * sizeof(float));
    cudaMalloc((void **)&recv, (size_t)n * j->count * sizeof(float));
    float *h = kt_xmalloc(j->count * sizeof(float));
    for (size_t i = 0; i < j->count; i++)
        h[i] = (float)(1000 * rc->rank + (int)i);
    cudaMemcpyAsync(send, h, j->count * sizeof(float), cudaMemcpyHostToDevice, rc->st);
    eng_err err = {0};
    rc->s = rc->c->ops->all_gather(rc->c, rc->rank, send, recv, j->count, ENG_COMM_F32, rc->st, &err);
    cudaMemcpyAsync(j->out[rc->rank], recv, (size_t)n * j->count * sizeof(float),
                    cudaMemcpyDeviceToHost, rc->st);
    cudaStreamSynchronize(rc->st);
    snprintf(rc->msg, sizeof rc->msg, "%s", err.msg);
    free(h);
    cudaFree(send);
    cudaFree(recv);
}

Test(comm_nccl, all_gather_puts_rank_r_at_r_times_count_on_every_gpu)
{
    if (gpus() < 4)
        cr_skip_test("4 GPUs needed");
    eng_comm *c = NULL;
    eng_err err = {0};
    cr_assert(eng_comm_nccl_create(4, DEVS, ENG_COMM_P2P_DEFAULT_MAX_BYTES, &c, &err) == ENG_OK, "%s", err.msg);
    gather_job j = {.count = 37};
    for (int r = 0; r < 4; r++)
        j.out[r] = kt_xmalloc(4 * j.count * sizeof(float));
    rank_ctx rc[MAX_RANKS];
    run_ranks(c, 4, gather_rank, &j, rc);
    for (int r = 0; r < 4; r++) {
        cr_assert(rc[r].s == ENG_OK, "rank %d: %s", r, rc[r].msg);
        for (int q = 0; q < 4; q++)
            for (size_t i = 0; i < j.count; i++)
                cr_assert(j.out[r][(size_t)q * j.count + i] == (float)(1000 * q + (int)i),
                          "rank %d, element %zu of rank %d: %g", r, i, q,
                          (double)j.out[r][(size_t)q * j.count + i]);
        free(j.out[r]);
    }
    c->ops->free(c);
}

/* Rank 1 fails and aborts while rank 0 has an all-reduce in flight: rank 0's stream still
 * drains (no hang) and its next call reports the reason. */
typedef struct abort_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int enqueued;
} abort_job;

static void abort_rank(rank_ctx *rc)
{
    abort_job *j = rc->arg;
    eng_err err = {0};
    if (rc->rank == 1) {
        pthread_mutex_lock(&j->mu);
        while (!j->enqueued)
            pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        rc->c->ops->abort(rc->c, "rank 1 ran out of GPU memory");
        rc->s = rc->c->ops->all_reduce_sum(rc->c, 1, NULL, 0, ENG_COMM_F32, rc->st, &err);
        /* a call after abort fails too, even an empty one */
        rc->s = rc->c->ops->all_reduce_sum(rc->c, 1, (void *)1, 4, ENG_COMM_F32, rc->st, &err);
        snprintf(rc->msg, sizeof rc->msg, "%s", err.msg);
        return;
    }
    float *buf = NULL;
    cudaMalloc((void **)&buf, 64 * sizeof(float));
    cudaMemsetAsync(buf, 0, 64 * sizeof(float), rc->st);
    eng_status first = rc->c->ops->all_reduce_sum(rc->c, 0, buf, 64, ENG_COMM_F32, rc->st, &err);
    pthread_mutex_lock(&j->mu);
    j->enqueued = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    cudaStreamSynchronize(rc->st); /* returns: the collective gave up when the group failed */
    rc->s = first == ENG_OK ? rc->c->ops->all_reduce_sum(rc->c, 0, buf, 64, ENG_COMM_F32, rc->st, &err)
                            : first;
    snprintf(rc->msg, sizeof rc->msg, "%s", err.msg);
    cudaFree(buf);
}

Test(comm_nccl, an_abort_is_reported_to_every_rank_with_its_reason, .timeout = 120)
{
    if (gpus() < 2)
        cr_skip_test("2 GPUs needed");
    eng_comm *c = NULL;
    eng_err err = {0};
    cr_assert(eng_comm_nccl_create(2, DEVS, 0, &c, &err) == ENG_OK, "%s", err.msg);
    abort_job j = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    rank_ctx rc[MAX_RANKS];
    run_ranks(c, 2, abort_rank, &j, rc);
    for (int r = 0; r < 2; r++) {
        cr_assert(rc[r].s == ENG_ERR_CANCELLED, "rank %d: %s (%s)", r, eng_status_str(rc[r].s), rc[r].msg);
        cr_assert(strstr(rc[r].msg, "rank 1 ran out of GPU memory"), "rank %d's error lacks the "
                  "reason: %s", r, rc[r].msg);
    }
    c->ops->free(c);
}

Test(comm_nccl, bad_groups_are_refused_with_the_reason)
{
    const int n = gpus();
    if (n < 2)
        cr_skip_test("2 GPUs needed");
    eng_comm *c = NULL;
    eng_err err = {0};
    const int dup[2] = {1, 1};
    cr_assert(eng_comm_nccl_create(2, dup, 0, &c, &err) == ENG_ERR_INVALID && !c);
    cr_assert(strstr(err.msg, "both on GPU 1"), "%s", err.msg);
    const int far[2] = {0, n};
    cr_assert(eng_comm_nccl_create(2, far, 0, &c, &err) == ENG_ERR_INVALID && !c);
    cr_assert(strstr(err.msg, "visible"), "%s", err.msg);
    cr_assert(eng_comm_nccl_create(0, DEVS, 0, &c, &err) == ENG_ERR_INVALID && !c);
}
