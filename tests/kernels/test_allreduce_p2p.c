/* test_allreduce_p2p.c — the one-shot peer-to-peer all-reduce (kernels/allreduce_p2p.cu)
 * against kernels/ref/allreduce.c: the summing step on one GPU (2 to 8 ranks' buffers, odd
 * counts, in place), and the whole stage/barrier/sum across GPUs with peer access, one host
 * thread per rank, repeated so both staging slots are reused (on the emulator: 2 and 4
 * emulated devices, SERVAL_EMU_DEVICES; on GPUs: as many as there are, or skipped); a barrier
 * whose peer never comes ends when the host aborts the group, and (on GPUs) by its time
 * bound, saying which in errs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "allreduce_p2p.h"
#include "kt.h"
#include "kt_cases.h"
#include "ref.h"

/* Up to 4 emulated devices for this test's worker (a real GPU ignores the variable). */
static int gpus(void)
{
    setenv("SERVAL_EMU_DEVICES", "4", 0);
    return kt_gpu_count();
}

/* One case of kt_p2p_sum_cases (n ranks' buffers of ff elements on this GPU), out of place
 * and in place (the last rank's buffer is the output). */
static void run_sum(const kt_act_case *c)
{
    kt_rng rng = kt_rng_make(c->seed);
    const int n = (int)c->n;
    const size_t bytes = (size_t)c->ff * kn_dtype_size(c->dt);
    void *host[KN_P2P_MAX_RANKS];
    kt_buf dev[KN_P2P_MAX_RANKS];
    const void *dptr[KN_P2P_MAX_RANKS];
    for (int q = 0; q < n; q++) {
        host[q] = kt_host_random(c->dt, (size_t)c->ff, -2.0f, 2.0f, &rng);
        dev[q] = kt_buf_upload(host[q], bytes);
        dptr[q] = dev[q].p;
    }
    void *want = kt_xmalloc(bytes), *got = kt_xmalloc(bytes);
    kn_ref_sum_ranks(c->dt, (const void *const *)host, n, want, c->ff);
    kt_buf out = kt_buf_alloc(bytes);
    KT_OK(kn_p2p_sum(c->dt, dptr, n, out.p, c->ff, 0));
    kt_sync();
    kt_buf_download(got, &out);
    kt_buf_check_guards(&out, c->name);
    cr_assert(memcmp(got, want, bytes) == 0, "%s: not the reference's bits", c->name);
    KT_OK(kn_p2p_sum(c->dt, dptr, n, dev[n - 1].p, c->ff, 0));
    kt_sync();
    kt_buf_download(got, &dev[n - 1]);
    cr_assert(memcmp(got, want, bytes) == 0, "%s in place: not the reference's bits", c->name);
    for (int q = 0; q < n; q++) {
        kt_buf_free(&dev[q]);
        free(host[q]);
    }
    kt_buf_free(&out);
    free(want);
    free(got);
}

Test(allreduce_p2p, the_sum_of_the_ranks_buffers_equals_the_reference_bit_for_bit)
{
    KT_REQUIRE_GPU();
    for (size_t i = 0; i < kt_p2p_sum_cases_count; i++)
        if (kt_p2p_sum_cases[i].use & KT_TEST)
            run_sum(&kt_p2p_sum_cases[i]);
}

Test(allreduce_p2p, bad_arguments_are_refused)
{
    KT_REQUIRE_GPU();
    kt_buf b = kt_buf_alloc(64);
    const void *in[2] = {b.p, b.p};
    cr_assert(kn_p2p_sum(KN_DTYPE_F32, in, 9, b.p, 4, 0) == KN_ERR_INVALID, "9 ranks accepted");
    cr_assert(kn_p2p_sum(KN_DTYPE_F32, in, 0, b.p, 4, 0) == KN_ERR_INVALID, "0 ranks accepted");
    kn_p2p_peers peers = {.n_ranks = 2, .slot_bytes = 16};
    uint32_t *gen = b.p;
    peers.stage[0] = peers.stage[1] = b.p;
    peers.flags[0] = peers.flags[1] = b.p;
    cr_assert(kn_p2p_all_reduce(KN_DTYPE_F32, b.p, 5, &peers, 0, gen, 0) == KN_ERR_INVALID,
              "20 bytes into 16-byte slots accepted");
    cr_assert(kn_p2p_all_reduce(KN_DTYPE_F32, b.p, 4, &peers, 2, gen, 0) == KN_ERR_INVALID,
              "rank 2 of 2 accepted");
    kt_buf_free(&b);
}

enum { CALLS = 3, COUNT = 301 };

typedef struct rank_run {
    int rank, n;
    kn_dtype dt;
    const kn_p2p_peers *peers;
    uint32_t *gen;
    const void *host[CALLS][KN_P2P_MAX_RANKS]; /* every rank's input per call */
    void *got[CALLS];                          /* this rank's results */
    kn_status st;
    char msg[256];
} rank_run;

static void *rank_main(void *v)
{
    rank_run *rr = v;
    const size_t bytes = COUNT * kn_dtype_size(rr->dt);
    cudaSetDevice(rr->rank);
    cudaStream_t s;
    void *buf;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMalloc(&buf, bytes);
    for (int c = 0; c < CALLS && rr->st == KN_OK; c++) {
        cudaMemcpyAsync(buf, rr->host[c][rr->rank], bytes, cudaMemcpyHostToDevice, s);
        rr->st = kn_p2p_all_reduce(rr->dt, buf, COUNT, rr->peers, rr->rank, rr->gen, s);
        if (rr->st != KN_OK)
            snprintf(rr->msg, sizeof rr->msg, "%s", kn_last_error());
        cudaMemcpyAsync(rr->got[c], buf, bytes, cudaMemcpyDeviceToHost, s);
        cudaStreamSynchronize(s);
    }
    cudaFree(buf);
    cudaStreamDestroy(s);
    return NULL;
}

static void all_reduce_across(int n, kn_dtype dt)
{
    if (gpus() < n)
        cr_skip_test("%d GPUs needed", n);
    kn_p2p_peers peers = {.n_ranks = n, .slot_bytes = 2048};
    uint32_t *gen[KN_P2P_MAX_RANKS];
    for (int a = 0; a < n; a++) {
        cr_assert(cudaSetDevice(a) == cudaSuccess);
        for (int b = 0; b < n; b++) {
            int can = 0;
            cudaDeviceCanAccessPeer(&can, a, b);
            if (a != b && !can)
                cr_skip_test("GPUs %d and %d have no peer access", a, b);
            if (a != b)
                cudaDeviceEnablePeerAccess(b, 0);
        }
        cudaGetLastError();
        cr_assert(cudaMalloc(&peers.stage[a], 2 * peers.slot_bytes) == cudaSuccess);
        cr_assert(cudaMalloc((void **)&peers.flags[a], KN_P2P_MAX_RANKS * 4) == cudaSuccess);
        cr_assert(cudaMalloc((void **)&gen[a], 4) == cudaSuccess);
        cudaMemset(peers.flags[a], 0, KN_P2P_MAX_RANKS * 4);
        cudaMemset(gen[a], 0, 4);
        cr_assert(cudaDeviceSynchronize() == cudaSuccess);
    }
    kt_rng rng = kt_rng_make(11);
    rank_run rr[KN_P2P_MAX_RANKS];
    memset(rr, 0, sizeof rr);
    void *inputs[CALLS][KN_P2P_MAX_RANKS];
    for (int c = 0; c < CALLS; c++)
        for (int q = 0; q < n; q++)
            inputs[c][q] = kt_host_random(dt, COUNT, -3.0f, 3.0f, &rng);
    pthread_t t[KN_P2P_MAX_RANKS];
    for (int q = 0; q < n; q++) {
        rr[q] = (rank_run){.rank = q, .n = n, .dt = dt, .peers = &peers, .gen = gen[q]};
        for (int c = 0; c < CALLS; c++) {
            memcpy(rr[q].host[c], inputs[c], sizeof inputs[c]);
            rr[q].got[c] = kt_xmalloc(COUNT * kn_dtype_size(dt));
        }
        pthread_create(&t[q], NULL, rank_main, &rr[q]);
    }
    for (int q = 0; q < n; q++)
        pthread_join(t[q], NULL);
    void *want = kt_xmalloc(COUNT * kn_dtype_size(dt));
    for (int c = 0; c < CALLS; c++) {
        kn_ref_sum_ranks(dt, (const void *const *)inputs[c], n, want, COUNT);
        for (int q = 0; q < n; q++) {
            cr_assert(rr[q].st == KN_OK, "rank %d: %s", q, rr[q].msg);
            const kt_diff df = kt_compare(dt, rr[q].got[c], want, COUNT, 0.0);
            cr_assert(df.first_bad < 0, "%d ranks, call %d: rank %d's sum is not the "
                      "reference's: element %lld is %g, not %g", n, c, q,
                      (long long)df.first_bad, df.got, df.want);
        }
    }
    for (int c = 0; c < CALLS; c++)
        for (int q = 0; q < n; q++) {
            free(inputs[c][q]);
            free(rr[q].got[c]);
        }
    free(want);
}

Test(allreduce_p2p, two_gpus_sum_in_rank_order_call_after_call)
{
    all_reduce_across(2, KN_DTYPE_BF16);
}

Test(allreduce_p2p, four_gpus_sum_in_rank_order_call_after_call)
{
    all_reduce_across(4, KN_DTYPE_F32);
}

/* Two GPUs' p2p buffers, zeroed; abort and errs in host-mapped memory every device reaches. */
typedef struct lone_group {
    kn_p2p_peers peers;
    uint32_t *gen[2];
    uint32_t *ctl; /* [1 + KN_P2P_MAX_RANKS]: abort, then errs */
    void *buf;     /* [COUNT] f32 on GPU 0 */
} lone_group;

static void lone_group_make(lone_group *g, uint64_t wait_limit_ns)
{
    memset(g, 0, sizeof *g);
    g->peers = (kn_p2p_peers){.n_ranks = 2, .slot_bytes = 2048, .wait_limit_ns = wait_limit_ns};
    for (int a = 0; a < 2; a++) {
        cr_assert(cudaSetDevice(a) == cudaSuccess);
        int can = 0;
        cudaDeviceCanAccessPeer(&can, a, 1 - a);
        if (!can)
            cr_skip_test("GPUs 0 and 1 have no peer access");
        cudaDeviceEnablePeerAccess(1 - a, 0);
        cudaGetLastError();
        cr_assert(cudaMalloc(&g->peers.stage[a], 2 * g->peers.slot_bytes) == cudaSuccess);
        cr_assert(cudaMalloc((void **)&g->peers.flags[a], KN_P2P_MAX_RANKS * 4) == cudaSuccess);
        cr_assert(cudaMalloc((void **)&g->gen[a], 4) == cudaSuccess);
        cudaMemset(g->peers.flags[a], 0, KN_P2P_MAX_RANKS * 4);
        cudaMemset(g->gen[a], 0, 4);
        cr_assert(cudaDeviceSynchronize() == cudaSuccess);
    }
    cr_assert(cudaHostAlloc((void **)&g->ctl, (1 + KN_P2P_MAX_RANKS) * 4,
                            cudaHostAllocMapped | cudaHostAllocPortable) == cudaSuccess);
    memset(g->ctl, 0, (1 + KN_P2P_MAX_RANKS) * 4);
    g->peers.abort = g->ctl;
    g->peers.errs = g->ctl + 1;
    cr_assert(cudaSetDevice(0) == cudaSuccess);
    cr_assert(cudaMalloc(&g->buf, COUNT * 4) == cudaSuccess);
    cudaMemset(g->buf, 0, COUNT * 4);
}

static void lone_group_free(lone_group *g)
{
    for (int a = 0; a < 2; a++) {
        cudaSetDevice(a);
        cudaFree(g->peers.stage[a]);
        cudaFree(g->peers.flags[a]);
        cudaFree(g->gen[a]);
    }
    cudaSetDevice(0);
    cudaFree(g->buf);
    cudaFreeHost(g->ctl);
}

typedef struct stream_wait {
    cudaStream_t s;
    cudaError_t e;
} stream_wait;

/* Synchronizes GPU 0's stream on a thread of its own (on the emulator, what runs it). */
static void *sync_main(void *v)
{
    stream_wait *w = v;
    cudaSetDevice(0);
    w->e = cudaStreamSynchronize(w->s);
    return NULL;
}

/* Rank 0's all-reduce with no rank 1: the barrier announces to GPU 1, then waits. */
Test(allreduce_p2p, a_barrier_whose_peer_never_comes_ends_when_the_host_aborts_the_group)
{
    if (gpus() < 2)
        cr_skip_test("2 GPUs needed");
    lone_group g;
    lone_group_make(&g, 0); /* no time bound: only the abort ends the wait */
    stream_wait w = {0};
    cudaStreamCreateWithFlags(&w.s, cudaStreamNonBlocking);
    KT_OK(kn_p2p_all_reduce(KN_DTYPE_F32, g.buf, COUNT, &g.peers, 0, g.gen[0], w.s));
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, sync_main, &w) == 0);
    /* rank 0's announcement reaching GPU 1's flags says the barrier is waiting (polled for up
     * to 30 s) */
    uint32_t seen = 0;
    const time_t until = time(NULL) + 30;
    cudaSetDevice(1);
    while (seen == 0 && time(NULL) < until)
        cr_assert(cudaMemcpy(&seen, &g.peers.flags[1][0], 4, cudaMemcpyDeviceToHost) ==
                  cudaSuccess);
    cudaSetDevice(0);
    cr_assert(g.ctl[1] == KN_P2P_WAIT_OK, "errs[0] set before any abort");
    __atomic_store_n(&g.ctl[0], 1u, __ATOMIC_SEQ_CST); /* released even if never announced */
    pthread_join(t, NULL);
    cr_assert(seen == 1, "rank 0's barrier never announced all-reduce 1 to GPU 1");
    cr_assert(w.e == cudaSuccess, "the aborted all-reduce's stream: %s", cudaGetErrorString(w.e));
    cr_assert(g.ctl[1] == KN_P2P_WAIT_ABORTED, "errs[0] is %u, not aborted (%d)", g.ctl[1],
              KN_P2P_WAIT_ABORTED);
    cr_assert(g.ctl[2] == KN_P2P_WAIT_OK, "rank 1's errs set, but it never called");
    cudaStreamDestroy(w.s);
    lone_group_free(&g);
}

/* On a GPU the wait is bounded by the global timer; the emulator fails such a launch after
 * 60 s instead (its own bound), so there the bound is not what ends it: skipped. */
Test(allreduce_p2p, a_barrier_whose_peer_never_comes_gives_up_after_its_time_bound)
{
    if (gpus() < 2)
        cr_skip_test("2 GPUs needed");
    struct cudaDeviceProp prop;
    cr_assert(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
    if (strstr(prop.name, "emulator"))
        cr_skip_test("the emulator bounds waits itself (60 s)");
    lone_group g;
    lone_group_make(&g, 50 * 1000 * 1000ull); /* 50 ms */
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    KT_OK(kn_p2p_all_reduce(KN_DTYPE_F32, g.buf, COUNT, &g.peers, 0, g.gen[0], s));
    cr_assert(cudaStreamSynchronize(s) == cudaSuccess, "the timed-out all-reduce's stream failed");
    cr_assert(g.ctl[1] == KN_P2P_WAIT_TIMED_OUT, "errs[0] is %u, not timed out (%d)", g.ctl[1],
              KN_P2P_WAIT_TIMED_OUT);
    cudaStreamDestroy(s);
    lone_group_free(&g);
}
