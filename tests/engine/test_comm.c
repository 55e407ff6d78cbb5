/* test_comm.c — the in-process communicator (engine/comm/comm.h, comm_threads.c): sums in rank
 * order with identical bits on every rank for f32/f16/bf16 and odd counts, all-gather, calls
 * repeated back to back with buffers reused at once, and a group that fails (abort, a rank
 * that never arrives, a mismatched call) reported to every rank instead of hanging. Then the
 * rank crew both tensor-parallel backends run on (comm_crew.h): a thread per rank that keeps
 * its start, jobs and stop, rank 0 on the caller when asked, the failing rank named, a rank's
 * failure aborting the group so the others do not wait for it. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "comm_crew.h"
#include "quant.h"

enum { MAX_RANKS = 8 };

typedef struct rank_ctx rank_ctx;
typedef void (*rank_fn)(rank_ctx *rc);

struct rank_ctx {
    eng_comm *c;
    int rank;
    void *user;
    eng_status st;
    eng_err err;
    rank_fn fn;
};

static void *rank_main(void *v)
{
    rank_ctx *rc = v;
    rc->fn(rc);
    return NULL;
}

/* Runs fn on n threads, one per rank, and waits for all of them. */
static void run_ranks(eng_comm *c, int n, rank_fn fn, void *user, rank_ctx *ctx)
{
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < n; r++) {
        ctx[r] = (rank_ctx){.c = c, .rank = r, .user = user, .fn = fn};
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &ctx[r]), 0);
    }
    for (int r = 0; r < n; r++)
        pthread_join(th[r], NULL);
}

static eng_comm *make_group(int n, int timeout_ms)
{
    eng_comm *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_comm_threads_create(n, timeout_ms, &c, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(c->n_ranks, n);
    cr_assert_str_eq(c->ops->name, "threads");
    return c;
}

/* Deterministic values of mixed sign and magnitude, different for every (rank, element). */
static float value_of(int rank, size_t i, int call)
{
    uint64_t z = (uint64_t)rank * 0x9E3779B97F4A7C15ull + (uint64_t)i * 0xBF58476D1CE4E5B9ull +
                 (uint64_t)call * 0x94D049BB133111EBull;
    z ^= z >> 29;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 32;
    float u = (float)(z & 0xFFFFFF) / (float)0x1000000; /* [0, 1) */
    float scale = (i % 7 == 0) ? 1000.0f : (i % 5 == 0) ? 1e-3f : 1.0f;
    return (u - 0.5f) * scale;
}

static uint16_t to_half(float f, eng_comm_dtype dt)
{
    return dt == ENG_COMM_F16 ? quant_f32_to_f16(f) : quant_f32_to_bf16(f);
}

static float from_half(uint16_t h, eng_comm_dtype dt)
{
    return dt == ENG_COMM_F16 ? quant_f16_to_f32(h) : quant_bf16_to_f32(h);
}

/* ---- sums ------------------------------------------------------------------------------- */

typedef struct sum_job {
    size_t count;
    eng_comm_dtype dt;
    int calls;
    void *buf[MAX_RANKS]; /* each rank's result after the last call */
} sum_job;

static void fill(void *buf, size_t count, eng_comm_dtype dt, int rank, int call)
{
    for (size_t i = 0; i < count; i++) {
        float v = value_of(rank, i, call);
        if (dt == ENG_COMM_F32)
            ((float *)buf)[i] = v;
        else
            ((uint16_t *)buf)[i] = to_half(v, dt);
    }
}

static void sum_rank(rank_ctx *rc)
{
    sum_job *j = rc->user;
    for (int call = 0; call < j->calls && rc->st == ENG_OK; call++) {
        fill(j->buf[rc->rank], j->count, j->dt, rc->rank, call);
        rc->st = rc->c->ops->all_reduce_sum(rc->c, rc->rank, j->buf[rc->rank], j->count, j->dt,
                                             NULL, &rc->err);
    }
}

/* The sum of element i of the last call as the contract states it: the ranks' values (as
 * stored in the dtype) added in rank order in float, rounded once to the dtype. */
static float expected_sum(int n, size_t i, eng_comm_dtype dt, int call)
{
    float s = 0.0f;
    for (int r = 0; r < n; r++) {
        float v = value_of(r, i, call);
        v = dt == ENG_COMM_F32 ? v : from_half(to_half(v, dt), dt);
        s = r == 0 ? v : s + v;
    }
    return dt == ENG_COMM_F32 ? s : from_half(to_half(s, dt), dt);
}

static void check_sums(int n, size_t count, eng_comm_dtype dt, int calls)
{
    eng_comm *c = make_group(n, 60000);
    sum_job j = {.count = count, .dt = dt, .calls = calls};
    size_t es = dt == ENG_COMM_F32 ? 4 : 2;
    for (int r = 0; r < n; r++)
        j.buf[r] = malloc(es * (count ? count : 1));
    rank_ctx ctx[MAX_RANKS];
    run_ranks(c, n, sum_rank, &j, ctx);
    for (int r = 0; r < n; r++)
        cr_assert_eq(ctx[r].st, ENG_OK, "%d ranks, rank %d: %s", n, r, ctx[r].err.msg);
    for (size_t i = 0; i < count; i++) {
        float want = expected_sum(n, i, dt, calls - 1);
        float got = dt == ENG_COMM_F32 ? ((float *)j.buf[0])[i]
                                       : from_half(((uint16_t *)j.buf[0])[i], dt);
        cr_assert(memcmp(&got, &want, sizeof got) == 0,
                  "%d ranks, dtype %d, count %zu: element %zu is %.9g, the rank-order sum is %.9g",
                  n, (int)dt, count, i, (double)got, (double)want);
        for (int r = 1; r < n; r++)
            cr_assert(memcmp((char *)j.buf[r] + i * es, (char *)j.buf[0] + i * es, es) == 0,
                      "%d ranks: rank %d's element %zu differs from rank 0's bits", n, r, i);
    }
    for (int r = 0; r < n; r++)
        free(j.buf[r]);
    c->ops->free(c);
}

Test(comm, all_reduce_sums_in_rank_order_with_the_same_bits_on_every_rank_f32)
{
    const size_t counts[] = {1, 3, 7, 64, 1001, 4099};
    for (int n = 1; n <= 4; n++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++)
            check_sums(n, counts[k], ENG_COMM_F32, 1);
}

Test(comm, all_reduce_sums_f16_and_bf16_in_float_rounded_once)
{
    const size_t counts[] = {1, 5, 33, 1001};
    for (int n = 2; n <= 4; n++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            check_sums(n, counts[k], ENG_COMM_F16, 1);
            check_sums(n, counts[k], ENG_COMM_BF16, 1);
        }
}

static void sum3(rank_ctx *rc)
{
    float(*v)[2] = rc->user;
    rc->st = rc->c->ops->all_reduce_sum(rc->c, rc->rank, v[rc->rank], 2, ENG_COMM_F32, NULL,
                                         &rc->err);
}

Test(comm, a_sum_that_depends_on_the_order_comes_out_in_rank_order_on_every_rank)
{
    /* The tests above would pass for any order if the sums were exact; this one would not:
     * in float (1 + 1e8) + -1e8 is 0, while (-1e8 + 1e8) + 1 is 1. */
    volatile float big = 1e8f;
    cr_assert_eq((1.0f + big) + -big, 0.0f);
    cr_assert_eq((-big + big) + 1.0f, 1.0f);
    eng_comm *c = make_group(3, 60000);
    float v[3][2];
    rank_ctx ctx[3];
    for (int rep = 0; rep < 50; rep++) {
        for (int r = 0; r < 3; r++)
            v[r][0] = v[r][1] = r == 0 ? 1.0f : r == 1 ? 1e8f : -1e8f;
        run_ranks(c, 3, sum3, v, ctx);
        for (int r = 0; r < 3; r++) {
            cr_assert_eq(ctx[r].st, ENG_OK, "%s", ctx[r].err.msg);
            cr_assert(v[r][0] == 0.0f && v[r][1] == 0.0f,
                      "rank %d holds %g, %g, not the rank-order sum 0", r, (double)v[r][0],
                      (double)v[r][1]);
        }
    }
    c->ops->free(c);
}

Test(comm, repeated_calls_reuse_buffers_at_once_and_stay_exact)
{
    check_sums(4, 37, ENG_COMM_F32, 500);
    check_sums(2, 4096, ENG_COMM_BF16, 200);
}

/* ---- all-gather ------------------------------------------------------------------------- */

typedef struct gather_job {
    size_t count;
    int calls;
    int32_t *recv[MAX_RANKS];
    int bad_calls;
} gather_job;

static void gather_rank(rank_ctx *rc)
{
    gather_job *j = rc->user;
    float send[64];
    float *recv = (float *)j->recv[rc->rank];
    for (int call = 0; call < j->calls && rc->st == ENG_OK; call++) {
        size_t count = j->count - (size_t)(call % 3); /* the count changes from call to call */
        for (size_t i = 0; i < count; i++)
            send[i] = (float)(rc->rank * 1000 + call * 10) + (float)i / 100.0f;
        rc->st = rc->c->ops->all_gather(rc->c, rc->rank, send, recv, count, ENG_COMM_F32, NULL,
                                         &rc->err);
        if (rc->st != ENG_OK)
            break;
        for (int q = 0; q < rc->c->n_ranks; q++)
            for (size_t i = 0; i < count; i++)
                if (recv[(size_t)q * count + i] != (float)(q * 1000 + call * 10) + (float)i / 100.0f)
                    __atomic_add_fetch(&j->bad_calls, 1, __ATOMIC_RELAXED);
    }
}

Test(comm, all_gather_puts_rank_r_at_r_times_count_on_every_rank)
{
    for (int n = 1; n <= 4; n++) {
        eng_comm *c = make_group(n, 60000);
        gather_job j = {.count = 19, .calls = 300};
        for (int r = 0; r < n; r++)
            j.recv[r] = malloc(sizeof(float) * 19 * (size_t)n);
        rank_ctx ctx[MAX_RANKS];
        run_ranks(c, n, gather_rank, &j, ctx);
        for (int r = 0; r < n; r++)
            cr_assert_eq(ctx[r].st, ENG_OK, "rank %d: %s", r, ctx[r].err.msg);
        cr_assert_eq(j.bad_calls, 0, "%d ranks: %d gathered elements were wrong", n, j.bad_calls);
        for (int r = 0; r < n; r++)
            free(j.recv[r]);
        c->ops->free(c);
    }
}

/* ---- failures --------------------------------------------------------------------------- */

typedef struct fail_job {
    int failing_rank;  /* aborts after `calls_before` good calls (abort test) */
    int absent_rank;   /* never calls (timeout test); -1: none */
    int calls_before;
    int later_st[MAX_RANKS]; /* the status of one more call after the failure */
} fail_job;

static void failing_rank_main(rank_ctx *rc)
{
    fail_job *j = rc->user;
    float buf[8];
    if (rc->rank == j->absent_rank)
        return;
    for (int call = 0;; call++) {
        for (int i = 0; i < 8; i++)
            buf[i] = (float)rc->rank;
        if (rc->rank == j->failing_rank && call == j->calls_before) {
            rc->c->ops->abort(rc->c, "rank 2 ran out of memory");
            rc->st = ENG_ERR_CANCELLED;
            break;
        }
        rc->st = rc->c->ops->all_reduce_sum(rc->c, rc->rank, buf, 8, ENG_COMM_F32, NULL, &rc->err);
        if (rc->st != ENG_OK)
            break;
        if (call > 1000000)
            break; /* never: the failure must stop every rank */
    }
    eng_err later = {{0}};
    j->later_st[rc->rank] = rc->c->ops->all_reduce_sum(rc->c, rc->rank, buf, 8, ENG_COMM_F32,
                                                       NULL, &later);
}

Test(comm, one_rank_aborting_is_reported_to_every_other_rank_with_its_reason, .timeout = 60)
{
    eng_comm *c = make_group(4, 0); /* no timeout: only the abort can end the waits */
    fail_job j = {.failing_rank = 2, .absent_rank = -1, .calls_before = 25};
    rank_ctx ctx[4];
    run_ranks(c, 4, failing_rank_main, &j, ctx);
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(ctx[r].st, ENG_ERR_CANCELLED, "rank %d ended with %s", r,
                     eng_status_str(ctx[r].st));
        if (r != 2)
            cr_assert(strstr(ctx[r].err.msg, "rank 2 ran out of memory"),
                      "rank %d's error does not say why: %s", r, ctx[r].err.msg);
        cr_assert_eq(j.later_st[r], ENG_ERR_CANCELLED, "rank %d: a call after the failure "
                     "returned %s", r, eng_status_str(j.later_st[r]));
    }
    c->ops->free(c);
}

Test(comm, a_rank_that_never_arrives_times_out_the_others_naming_it, .timeout = 60)
{
    eng_comm *c = make_group(3, 300);
    fail_job j = {.failing_rank = -1, .absent_rank = 1};
    rank_ctx ctx[3];
    run_ranks(c, 3, failing_rank_main, &j, ctx);
    for (int r = 0; r < 3; r += 2) {
        cr_assert_eq(ctx[r].st, ENG_ERR_CANCELLED, "rank %d ended with %s", r,
                     eng_status_str(ctx[r].st));
        cr_assert(strstr(ctx[r].err.msg, "rank 1 did not arrive at all_reduce_sum within 300 ms"),
                  "rank %d: %s", r, ctx[r].err.msg);
        cr_assert_eq(j.later_st[r], ENG_ERR_CANCELLED);
    }
    c->ops->free(c);
}

typedef struct mismatch_job {
    int dummy;
} mismatch_job;

static void mismatch_rank(rank_ctx *rc)
{
    float buf[16] = {0};
    size_t count = rc->rank == 1 ? 12 : 16; /* rank 1 breaks the contract */
    rc->st = rc->c->ops->all_reduce_sum(rc->c, rc->rank, buf, count, ENG_COMM_F32, NULL, &rc->err);
}

Test(comm, a_call_that_differs_between_ranks_fails_the_group_as_invalid, .timeout = 60)
{
    eng_comm *c = make_group(3, 0);
    mismatch_job j = {0};
    rank_ctx ctx[3];
    run_ranks(c, 3, mismatch_rank, &j, ctx);
    int invalid = 0;
    for (int r = 0; r < 3; r++) {
        cr_assert_neq(ctx[r].st, ENG_OK, "rank %d's mismatched sum returned ok", r);
        invalid += ctx[r].st == ENG_ERR_INVALID;
        cr_assert(strstr(ctx[r].err.msg, "all_reduce_sum(12 f32)") &&
                      strstr(ctx[r].err.msg, "all_reduce_sum(16 f32)"),
                  "rank %d's error does not name both calls: %s", r, ctx[r].err.msg);
    }
    cr_assert_geq(invalid, 1, "no rank was told its call was invalid");
    c->ops->free(c);
}

Test(comm, bad_groups_and_ranks_are_refused)
{
    eng_comm *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_comm_threads_create(0, 0, &c, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "0 ranks"), "%s", err.msg);
    cr_assert_null(c);
    cr_assert_eq(eng_comm_threads_create(65, 0, &c, &err), ENG_ERR_INVALID);
    cr_assert_eq(eng_comm_threads_create(2, -1, &c, &err), ENG_ERR_INVALID);
    c = make_group(2, 0);
    float x = 1.0f;
    cr_assert_eq(c->ops->all_reduce_sum(c, 2, &x, 1, ENG_COMM_F32, NULL, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "rank 2 outside"), "%s", err.msg);
    cr_assert_eq(c->ops->all_reduce_sum(c, 0, NULL, 4, ENG_COMM_F32, NULL, &err),
                 ENG_ERR_INVALID);
    c->ops->free(c);
}

/* ---- the rank crew (comm_crew.h) --------------------------------------------------------- */

typedef struct crew_log {
    pthread_t start_thread[MAX_RANKS], stop_thread[MAX_RANKS], job_thread[MAX_RANKS];
    int starts[MAX_RANKS], stops[MAX_RANKS], jobs[MAX_RANKS];
    int fail_start_rank; /* -1: none */
} crew_log;

static eng_status log_start(void *arg, int rank, eng_err *err)
{
    crew_log *l = arg;
    l->start_thread[rank] = pthread_self();
    l->starts[rank]++;
    if (rank == l->fail_start_rank)
        return eng_fail(err, ENG_ERR_CUDA, "rank %d: injected: no such device", rank);
    return ENG_OK;
}

static void log_stop(void *arg, int rank)
{
    crew_log *l = arg;
    l->stop_thread[rank] = pthread_self();
    l->stops[rank]++;
}

static eng_status log_job(void *arg, int rank, eng_err *err)
{
    (void)err;
    crew_log *l = arg;
    l->job_thread[rank] = pthread_self();
    l->jobs[rank]++;
    return ENG_OK;
}

static void check_crew_threads(bool rank0_on_caller)
{
    enum { N = 4, RUNS = 500 };
    crew_log l = {.fail_start_rank = -1};
    eng_comm_crew_config cfg = {.n_ranks = N, .rank0_on_caller = rank0_on_caller,
                                .start = log_start, .stop = log_stop, .arg = &l};
    eng_comm_crew *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_comm_crew_create(&cfg, &c, NULL, &err), ENG_OK, "%s", err.msg);
    for (int k = 0; k < RUNS; k++)
        cr_assert_eq(eng_comm_crew_run(c, log_job, &l, NULL, &err), ENG_OK, "%s", err.msg);
    eng_comm_crew_free(c);
    for (int r = 0; r < N; r++) {
        cr_assert_eq(l.starts[r], 1, "rank %d started %d times", r, l.starts[r]);
        cr_assert_eq(l.stops[r], 1, "rank %d stopped %d times", r, l.stops[r]);
        cr_assert_eq(l.jobs[r], RUNS, "rank %d ran %d of %d jobs", r, l.jobs[r], RUNS);
        /* a GPU made current at start stays current for the rank's jobs and its stop */
        cr_assert(pthread_equal(l.start_thread[r], l.job_thread[r]) &&
                      pthread_equal(l.start_thread[r], l.stop_thread[r]),
                  "rank %d changed threads", r);
        for (int q = 0; q < r; q++)
            cr_assert(!pthread_equal(l.job_thread[q], l.job_thread[r]),
                      "ranks %d and %d share a thread", q, r);
        bool on_caller = pthread_equal(l.job_thread[r], pthread_self());
        cr_assert_eq(on_caller, rank0_on_caller && r == 0, "rank %d %s the caller's thread", r,
                     on_caller ? "ran on" : "did not run on");
    }
}

Test(crew, each_rank_keeps_one_thread_of_its_own_for_start_jobs_and_stop, .timeout = 60)
{
    check_crew_threads(false);
}

Test(crew, rank_0_runs_on_the_callers_thread_when_asked, .timeout = 60)
{
    check_crew_threads(true);
}

/* A job where rank `failing` fails on its own before the sum the others wait in. */
typedef struct crew_sum_job {
    eng_comm *comm;
    int failing;
    float sums[MAX_RANKS];
} crew_sum_job;

static eng_status sum_or_fail(void *arg, int rank, eng_err *err)
{
    crew_sum_job *j = arg;
    if (rank == j->failing)
        return eng_fail(err, ENG_ERR_CUDA, "rank %d: injected: device lost", rank);
    float x = (float)(rank + 1);
    eng_status st = j->comm->ops->all_reduce_sum(j->comm, rank, &x, 1, ENG_COMM_F32, NULL, err);
    j->sums[rank] = x;
    return st;
}

/* Without the crew's abort the others would wait forever (timeout 0): the test would time out. */
Test(crew, a_rank_that_fails_is_named_and_the_others_stop_waiting_for_it, .timeout = 60)
{
    for (int on_caller = 0; on_caller < 2; on_caller++) {
        eng_comm *g = make_group(3, 0);
        eng_comm_crew_config cfg = {.n_ranks = 3, .rank0_on_caller = on_caller, .comm = g};
        eng_comm_crew *c = NULL;
        eng_err err = {{0}};
        cr_assert_eq(eng_comm_crew_create(&cfg, &c, NULL, &err), ENG_OK, "%s", err.msg);
        crew_sum_job j = {.comm = g, .failing = -1};
        cr_assert_eq(eng_comm_crew_run(c, sum_or_fail, &j, NULL, &err), ENG_OK, "%s", err.msg);
        for (int r = 0; r < 3; r++)
            cr_assert_eq(j.sums[r], 6.0f, "rank %d summed %g", r, j.sums[r]);
        for (int failing = 0; failing < 3; failing += 2) {
            j.failing = failing;
            int bad = -7;
            cr_assert_eq(eng_comm_crew_run(c, sum_or_fail, &j, &bad, &err), ENG_ERR_CUDA);
            cr_assert_eq(bad, failing, "the crew blamed rank %d, not %d", bad, failing);
            char want[64];
            snprintf(want, sizeof want, "rank %d: injected: device lost", failing);
            cr_assert_str_eq(err.msg, want); /* its own words, not the others' echo */
        }
        /* the group stays failed: every rank now echoes it, and that is what is reported */
        j.failing = -1;
        cr_assert_eq(eng_comm_crew_run(c, sum_or_fail, &j, NULL, &err), ENG_ERR_CANCELLED);
        cr_assert(strstr(err.msg, "injected: device lost"), "%s", err.msg);
        eng_comm_crew_free(c);
        g->ops->free(g);
    }
}

Test(crew, a_failed_start_fails_creation_naming_the_rank_and_stops_every_rank, .timeout = 60)
{
    for (int on_caller = 0; on_caller < 2; on_caller++) {
        crew_log l = {.fail_start_rank = 2};
        eng_comm_crew_config cfg = {.n_ranks = 4, .rank0_on_caller = on_caller,
                                    .start = log_start, .stop = log_stop, .arg = &l};
        eng_comm_crew *c = (eng_comm_crew *)&l; /* must come back NULL */
        int bad = -7;
        eng_err err = {{0}};
        cr_assert_eq(eng_comm_crew_create(&cfg, &c, &bad, &err), ENG_ERR_CUDA);
        cr_assert_null(c);
        cr_assert_eq(bad, 2);
        cr_assert_str_eq(err.msg, "rank 2: injected: no such device");
        for (int r = 0; r < 4; r++) {
            cr_assert_eq(l.starts[r], 1, "rank %d started %d times", r, l.starts[r]);
            cr_assert_eq(l.stops[r], 1, "rank %d stopped %d times", r, l.stops[r]);
        }
    }
    eng_comm_crew_config none = {.n_ranks = 0};
    eng_comm_crew *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_comm_crew_create(&none, &c, NULL, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "0 ranks"), "%s", err.msg);
    eng_comm_crew_free(NULL);
}
