/* test_router.c — the replica router (engine/serval_router.h): its rules on hand-built loads
 * (affinity, the imbalance override, least-loaded turns, a replica out of rotation, session
 * pins, affinity keys), then two real replicas of the default model: greedy outputs equal one
 * engine's, both replicas used, a session's requests meet so the newer supersedes, a burst on
 * one prefix overflows to the idle replica, a replica taken out gets nothing more, a replica
 * whose backend keeps failing (an injected device loss) leaves rotation while the other
 * answers, a replica whose step hangs (an injected stall) leaves rotation by the step
 * watchdog and returns once its steps complete, and a session's newer request that lands on
 * another replica (its pinned one out of rotation or full) still supersedes the older one. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "engine_impl.h" /* the fault injection swaps a replica's backend */
#include "route_policy.h"
#include "serval_engine.h"
#include "serval_router.h"
#include "testutil.h"

/* ---- the rules on hand-built states ------------------------------------------------------ */

static void views(router_view *v, int n, const int32_t *loads)
{
    for (int i = 0; i < n; i++)
        v[i] = (router_view){.load = loads ? loads[i] : 0, .in_rotation = true};
}

Test(router, a_key_always_prefers_the_same_replica_and_keys_spread_evenly)
{
    router_view v[4];
    views(v, 4, NULL);
    int count[4] = {0};
    for (uint64_t k = 1; k <= 4000; k++) {
        int i = router_preferred(v, 4, k * 0x9E3779B97F4A7C15ull);
        cr_assert(i >= 0 && i < 4);
        cr_assert_eq(router_preferred(v, 4, k * 0x9E3779B97F4A7C15ull), i);
        count[i]++;
    }
    for (int i = 0; i < 4; i++)
        cr_assert(count[i] > 800 && count[i] < 1200, "replica %d got %d of 4000 keys", i,
                  count[i]);
}

Test(router, a_replica_out_of_rotation_loses_only_its_own_keys)
{
    router_view v[4];
    views(v, 4, NULL);
    int before[1000];
    for (int k = 0; k < 1000; k++)
        before[k] = router_preferred(v, 4, (uint64_t)k * 7919 + 1);
    v[2].in_rotation = false;
    int moved = 0;
    for (int k = 0; k < 1000; k++) {
        int now = router_preferred(v, 4, (uint64_t)k * 7919 + 1);
        cr_assert_neq(now, 2, "key %d still goes to the replica out of rotation", k);
        if (before[k] != 2)
            cr_assert_eq(now, before[k], "key %d moved from replica %d", k, before[k]);
        else
            moved++;
    }
    cr_assert(moved > 150, "only %d keys preferred replica 2", moved);
    for (int i = 0; i < 4; i++)
        v[i].in_rotation = false;
    cr_assert_eq(router_preferred(v, 4, 42), -1);
    unsigned turn = 0;
    cr_assert_eq(router_least_loaded(v, 4, &turn), -1);
    eng_route_reason why;
    cr_assert_eq(router_pick(v, 4, true, 42, &turn, &why), -1);
}

/* Where a request preferring replica `pref` goes when that one has pref_load requests and the
 * other idle_load. */
static int pick_two(int32_t pref_load, int32_t idle_load, eng_route_reason *why)
{
    router_view v[2];
    views(v, 2, NULL);
    uint64_t key = 1;
    while (router_preferred(v, 2, key) != 0)
        key++;
    v[0].load = pref_load;
    v[1].load = idle_load;
    unsigned turn = 0;
    return router_pick(v, 2, true, key, &turn, why);
}

Test(router, load_overrides_affinity_only_past_64_more_requests_and_1_5_times_the_idlest)
{
    eng_route_reason why;
    cr_assert_eq(pick_two(0, 0, &why), 0);
    cr_assert_eq(why, ENG_ROUTE_AFFINITY);
    cr_assert_eq(pick_two(63, 0, &why), 0, "a gap of 63 is below the threshold");
    cr_assert_eq(why, ENG_ROUTE_AFFINITY);
    cr_assert_eq(pick_two(64, 0, &why), 1, "64 more requests than an idle replica");
    cr_assert_eq(why, ENG_ROUTE_REBALANCED);
    cr_assert_eq(pick_two(100, 30, &why), 1);
    cr_assert_eq(why, ENG_ROUTE_REBALANCED);
    cr_assert_eq(pick_two(200, 137, &why), 0, "63 more is not enough even at high load");
    cr_assert_eq(pick_two(200, 136, &why), 0, "64 more but under 1.5x (1.47x) is not enough");
    cr_assert_eq(why, ENG_ROUTE_AFFINITY);
    cr_assert_eq(pick_two(204, 136, &why), 1, "68 more at 1.5x moves");
    cr_assert_eq(why, ENG_ROUTE_REBALANCED);
    cr_assert(router_imbalanced(ROUTER_IMBALANCE_REQUESTS, 0));
    cr_assert(!router_imbalanced(ROUTER_IMBALANCE_REQUESTS - 1, 0));
}

Test(router, without_affinity_the_least_loaded_replica_is_chosen_and_equals_take_turns)
{
    router_view v[3];
    int32_t loads[3] = {5, 2, 9};
    views(v, 3, loads);
    unsigned turn = 0;
    eng_route_reason why;
    cr_assert_eq(router_pick(v, 3, false, 0, &turn, &why), 1);
    cr_assert_eq(why, ENG_ROUTE_LEAST_LOADED);
    views(v, 3, NULL);
    int seen[3] = {0};
    for (int k = 0; k < 9; k++)
        seen[router_pick(v, 3, false, 0, &turn, &why)]++;
    cr_assert(seen[0] == 3 && seen[1] == 3 && seen[2] == 3, "turns %d %d %d", seen[0], seen[1],
              seen[2]);
    v[1].in_rotation = false;
    for (int k = 0; k < 6; k++)
        cr_assert_neq(router_pick(v, 3, false, 0, &turn, &why), 1);
}

Test(router, a_session_stays_pinned_until_idle_or_its_replica_leaves)
{
    router_pin *pins = calloc(ROUTER_PIN_SLOTS, sizeof *pins);
    router_view v[2];
    views(v, 2, NULL);
    cr_assert_eq(router_pin_get(pins, 77, 0.0, v, 2), -1, "no pin yet");
    router_pin_set(pins, 77, 1, 1000.0);
    cr_assert_eq(router_pin_get(pins, 77, 1000.0 + ROUTER_PIN_IDLE_MS - 1, v, 2), 1);
    /* the get above refreshed it */
    cr_assert_eq(router_pin_get(pins, 77, 1000.0 + 2 * ROUTER_PIN_IDLE_MS - 2, v, 2), 1);
    cr_assert_eq(router_pin_get(pins, 77, 1000.0 + 4 * ROUTER_PIN_IDLE_MS, v, 2), -1, "idle");
    router_pin_set(pins, 78, 1, 0.0);
    v[1].in_rotation = false;
    cr_assert_eq(router_pin_get(pins, 78, 1.0, v, 2), -1, "its replica left");
    cr_assert_eq(router_pin_get(pins, 99, 1.0, v, 2), -1, "another key");
    free(pins);
}

Test(router, the_affinity_key_is_the_session_else_the_leading_prompt)
{
    char a[600], b[600];
    memset(a, 'x', sizeof a);
    memcpy(b, a, sizeof b);
    b[ROUTER_AFFINITY_TEXT_BYTES + 10] = 'y'; /* differs after the window */
    eng_request_params p = eng_request_params_defaults(), q = p;
    p.text = a;
    p.text_len = sizeof a;
    q.text = b;
    q.text_len = sizeof b;
    uint64_t kp, kq;
    bool sp, sq;
    cr_assert(router_affinity_key(&p, 16, &kp, &sp) && !sp);
    cr_assert(router_affinity_key(&q, 16, &kq, &sq) && !sq);
    cr_assert_eq(kp, kq, "prompts that share their first 256 bytes meet");
    b[3] = 'z';
    cr_assert(router_affinity_key(&q, 16, &kq, &sq));
    cr_assert_neq(kp, kq, "prompts that differ at the start do not");
    q.cache_salt = 5;
    memcpy(b, a, sizeof b);
    cr_assert(router_affinity_key(&q, 16, &kq, &sq));
    cr_assert_neq(kp, kq, "another cache salt is another cache");
    q.text_len = ROUTER_AFFINITY_MIN_TEXT_BYTES - 1;
    cr_assert(!router_affinity_key(&q, 16, &kq, &sq), "text shorter than a block has none");
    q.session_key = 1234;
    p.session_key = 1234;
    p.cache_salt = 5;
    cr_assert(router_affinity_key(&q, 16, &kq, &sq) && sq);
    cr_assert(router_affinity_key(&p, 16, &kp, &sp) && sp);
    cr_assert_eq(kp, kq, "one session: one key, whatever the prompt");
    int32_t toks[100];
    for (int i = 0; i < 100; i++)
        toks[i] = i;
    eng_request_params t = eng_request_params_defaults();
    t.tokens = toks;
    t.n_tokens = 15;
    cr_assert(!router_affinity_key(&t, 16, &kp, &sp), "15 tokens fill no 16-token block");
    t.n_tokens = 100;
    cr_assert(router_affinity_key(&t, 16, &kp, &sp));
    toks[70] = 9999; /* past 4 blocks of 16 */
    cr_assert(router_affinity_key(&t, 16, &kq, &sq));
    cr_assert_eq(kp, kq);
    toks[3] = 9999;
    cr_assert(router_affinity_key(&t, 16, &kq, &sq));
    cr_assert_neq(kp, kq);
}

/* ---- two real replicas ------------------------------------------------------------------- */

static eng_model *g_model;

static void load(void)
{
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &g_model, &err), ENG_OK, "%s", err.msg);
}

static void unload(void) { eng_model_free(g_model); }

static eng_engine *engine_with(int threads, int32_t max_running, int32_t max_waiting)
{
    eng_engine_config c = eng_engine_config_defaults();
    c.n_threads = threads;
    c.max_running = max_running;
    c.max_waiting = max_waiting;
    c.kv_bytes = 64ll << 20;
    c.max_seq_len = 1024;
    c.check_invariants = true;
    eng_engine *e = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_engine_create(g_model, &c, &e, &err), ENG_OK, "%s", err.msg);
    return e;
}

static eng_engine *engine(int threads) { return engine_with(threads, 0, 0); }

static eng_router *router(eng_engine **e, int n)
{
    eng_router *r = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_create(e, n, &r, &err), ENG_OK, "%s", err.msg);
    return r;
}

typedef struct answer {
    char text[2048];
    size_t len;
    eng_finish finish;
} answer;

static void drain(eng_request *q, answer *a)
{
    memset(a, 0, sizeof *a);
    for (;;) {
        eng_request_output out;
        cr_assert_eq(eng_request_read(q, a->text + a->len, sizeof a->text - a->len - 1, 60000,
                                      &out), ENG_OK);
        a->len += out.text_len;
        if (out.done) {
            a->finish = out.finish;
            break;
        }
        cr_assert(out.text_len > 0 || out.n_new_tokens > 0, "read timed out after 60 s");
    }
}

/* Prompts of code, each more than a block long, starting differently. */
static void prompt(int i, char *buf, size_t cap)
{
    static const char *const heads[] = {"def fibonacci(n):", "class Stack:", "import os\nimport sys",
                                        "#include <stdio.h>", "function debounce(fn, ms) {",
                                        "fn main() {", "SELECT name FROM users", "package main"};
    snprintf(buf, cap, "%s\n    # %d: a helper that the rest of this module calls, written "
             "plainly and documented, then tested below\n", heads[i % 8], i);
}

Test(router, two_replicas_answer_like_one_engine_and_share_the_requests, .init = load,
     .fini = unload, .timeout = 240)
{
    eng_engine *one = engine(2);
    eng_engine *two[2] = {engine(1), engine(1)};
    eng_router *r = router(two, 2);
    enum { N = 8 };
    eng_request *qa[N], *qb[N];
    int where[N];
    char text[N][256];
    for (int i = 0; i < N; i++) {
        prompt(i, text[i], sizeof text[i]);
        eng_request_params p = eng_request_params_defaults();
        p.text = text[i];
        p.text_len = strlen(text[i]);
        p.max_tokens = 16;
        eng_err err = {{0}};
        cr_assert_eq(eng_submit(one, &p, &qa[i], &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(eng_router_submit(r, &p, &qb[i], &where[i], &err), ENG_OK, "%s", err.msg);
        cr_assert(where[i] == 0 || where[i] == 1);
    }
    for (int i = 0; i < N; i++) {
        answer a, b;
        drain(qa[i], &a);
        drain(qb[i], &b);
        cr_assert_eq(a.len, b.len, "prompt %d: one engine said %zu bytes, replica %d %zu", i,
                     a.len, where[i], b.len);
        cr_assert_eq(memcmp(a.text, b.text, a.len), 0, "prompt %d: '%s' vs '%s'", i, a.text,
                     b.text);
        eng_request_release(qa[i]);
        eng_request_release(qb[i]);
    }
    /* A reader sees the end just before the engine counts the request finished: wait for it. */
    eng_engine_stats sum;
    for (int t = 0; t < 2000; t++) {
        eng_router_stats_get(r, &sum);
        if (sum.requests_finished == N)
            break;
        usleep(10 * 1000);
    }
    cr_assert_eq(sum.requests_finished, N);
    eng_router_replica_stats rs[2];
    for (int k = 0; k < 2; k++) {
        eng_router_replica_stats_get(r, k, &rs[k]);
        cr_assert(rs[k].in_rotation);
        cr_assert_gt(rs[k].engine.requests_finished, 0, "replica %d ran nothing", k);
        cr_assert_eq(rs[k].routed[ENG_ROUTE_AFFINITY], rs[k].engine.requests_submitted);
    }
    cr_assert_eq(sum.requests_finished,
                 rs[0].engine.requests_finished + rs[1].engine.requests_finished);
    /* The same prompt again lands where its prefix is cached. */
    eng_request_params p = eng_request_params_defaults();
    p.text = text[0];
    p.text_len = strlen(text[0]);
    p.max_tokens = 4;
    eng_request *q;
    int again;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_submit(r, &p, &q, &again, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(again, where[0]);
    answer a;
    drain(q, &a);
    eng_request_release(q);
    eng_router_replica_stats_get(r, again, &rs[again]);
    cr_assert_gt(rs[again].engine.prompt_tokens_cached, 0, "no prefix hit on replica %d", again);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
    eng_engine_free(one);
}

Test(router, a_sessions_requests_meet_on_one_replica_so_the_newer_supersedes_the_older,
     .init = load, .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    eng_router *r = router(two, 2);
    char text[2][256];
    eng_request *q[2];
    int where[2];
    for (int i = 0; i < 2; i++) {
        prompt(i + 3, text[i], sizeof text[i]); /* different prompts: only the key joins them */
        eng_request_params p = eng_request_params_defaults();
        p.text = text[i];
        p.text_len = strlen(text[i]);
        p.max_tokens = i == 0 ? 400 : 4;
        p.ignore_eos = true;
        p.session_key = 0xF11E;
        eng_err err = {{0}};
        cr_assert_eq(eng_router_submit(r, &p, &q[i], &where[i], &err), ENG_OK, "%s", err.msg);
    }
    cr_assert_eq(where[0], where[1], "one session went to replicas %d and %d", where[0],
                 where[1]);
    answer a;
    drain(q[0], &a);
    cr_assert_eq(a.finish, ENG_FINISH_SUPERSEDED, "the older request finished '%s'",
                 eng_finish_str(a.finish));
    drain(q[1], &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_request_release(q[0]);
    eng_request_release(q[1]);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

Test(router, a_replica_taken_out_gets_no_more_requests_and_the_others_answer, .init = load,
     .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    eng_router *r = router(two, 2);
    eng_router_replica_set_down(r, 0, "test: device lost");
    for (int i = 0; i < 6; i++) {
        char text[256];
        prompt(i, text, sizeof text);
        eng_request_params p = eng_request_params_defaults();
        p.text = text;
        p.text_len = strlen(text);
        p.max_tokens = 4;
        p.session_key = i % 2 ? (uint64_t)i : 0;
        eng_request *q;
        int where;
        eng_err err = {{0}};
        cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(where, 1, "request %d went to the replica taken out", i);
        answer a;
        drain(q, &a);
        cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
        eng_request_release(q);
    }
    eng_router_replica_stats rs;
    eng_router_replica_stats_get(r, 0, &rs);
    cr_assert(!rs.in_rotation);
    cr_assert_str_eq(rs.down_reason, "test: device lost");
    cr_assert_eq(rs.engine.requests_submitted, 0);
    cr_assert_eq(eng_router_admission_check(r, NULL), ENG_OK);
    /* Both out: a clear refusal, nothing queued. */
    eng_router_replica_set_down(r, 1, "test: second device lost");
    eng_request_params p = eng_request_params_defaults();
    p.text = "def f():";
    p.text_len = 8;
    eng_request *q = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_submit(r, &p, &q, NULL, &err), ENG_ERR_OVERLOAD);
    cr_assert_null(q);
    cr_assert(strstr(err.msg, "no replica is in rotation") &&
              strstr(err.msg, "replica 0: test: device lost") &&
              strstr(err.msg, "replica 1: test: second device lost"), "%s", err.msg);
    cr_assert_eq(eng_router_admission_check(r, &err), ENG_ERR_OVERLOAD);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

Test(router, a_burst_on_one_prefix_overflows_to_the_idle_replica_past_64_more_requests,
     .init = load, .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    eng_router *r = router(two, 2);
    int32_t toks[64];
    for (int i = 0; i < 64; i++)
        toks[i] = 100 + i; /* one prompt: every request prefers one replica */
    enum { N = 100 };
    eng_request *q[N];
    int where[N];
    for (int i = 0; i < N; i++) {
        eng_request_params p = eng_request_params_defaults();
        p.tokens = toks;
        p.n_tokens = 64;
        p.max_tokens = 200; /* none can finish while the burst is submitted */
        p.ignore_eos = true;
        eng_err err = {{0}};
        cr_assert_eq(eng_router_submit(r, &p, &q[i], &where[i], &err), ENG_OK, "%s", err.msg);
    }
    int pref = where[0], idle = 1 - pref;
    /* 64 on the preferred replica; then each request that would make the gap 64 goes to the
     * idle one: they alternate. */
    for (int i = 0; i < 64; i++)
        cr_assert_eq(where[i], pref, "request %d left its replica early", i);
    cr_assert_eq(where[64], idle, "the 65th request stayed on a replica 64 requests busier");
    eng_router_replica_stats rs[2];
    eng_router_replica_stats_get(r, pref, &rs[0]);
    eng_router_replica_stats_get(r, idle, &rs[1]);
    cr_assert_eq(rs[0].routed[ENG_ROUTE_AFFINITY], 82);
    cr_assert_eq(rs[1].routed[ENG_ROUTE_REBALANCED], 18);
    cr_assert_eq(rs[1].routed[ENG_ROUTE_AFFINITY], 0);
    cr_assert_eq(rs[0].load - rs[1].load, 64);
    for (int i = 0; i < N; i++)
        eng_request_release(q[i]);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

Test(router, creation_refuses_bad_replica_sets, .init = load, .fini = unload)
{
    eng_router *r = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_create(NULL, 0, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "replicas must be in [1, 64], got 0"), "%s", err.msg);
    eng_engine *e[2] = {engine(1), NULL};
    cr_assert_eq(eng_router_create(e, 2, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "replica 1 has no engine"), "%s", err.msg);
    cr_assert_null(r);
    eng_engine_free(e[0]);
}

/* ---- a replica that dies ----------------------------------------------------------------- */

/* A replica's backend that fails every step once told to (a lost device, a failed
 * tensor-parallel group), put in front of the engine's own before any request. */
typedef struct faulty_backend {
    eng_backend base;
    eng_backend *inner; /* owned */
    atomic_bool fail;
} faulty_backend;

static eng_status faulty_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                                 int32_t *tokens, float *logits, eng_err *err)
{
    faulty_backend *f = (faulty_backend *)be;
    if (atomic_load(&f->fail))
        return eng_fail(err, ENG_ERR_CUDA, "injected: device lost");
    return f->inner->ops->forward(f->inner, b, rows, tokens, logits, err);
}

static void faulty_free(eng_backend *be)
{
    faulty_backend *f = (faulty_backend *)be;
    f->inner->ops->free(f->inner);
    free(f);
}

static const eng_backend_ops faulty_ops = {.name = "faulty", .forward = faulty_forward,
                                           .free = faulty_free};

static faulty_backend *make_faulty(eng_engine *e)
{
    faulty_backend *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    f->base = *e->be;
    f->base.ops = &faulty_ops;
    f->inner = e->be;
    atomic_init(&f->fail, false);
    e->be = &f->base; /* before any submit: the step loop reads it after taking e->mu */
    return f;
}

/* The replica request p prefers while both replicas are in rotation and idle. */
static int preferred_replica(const eng_request_params *p)
{
    uint64_t key;
    bool session;
    cr_assert(router_affinity_key(p, 16, &key, &session)); /* the default block size */
    router_view v[2] = {{.load = 0, .in_rotation = true}, {.load = 0, .in_rotation = true}};
    return router_preferred(v, 2, key);
}

Test(router, a_replica_whose_backend_keeps_failing_leaves_rotation_and_the_other_answers,
     .init = load, .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    faulty_backend *f = make_faulty(two[0]);
    eng_router *r = router(two, 2);
    /* Prompts that prefer replica 0 (prefix affinity), and a session that does. */
    char text[4][256];
    eng_request_params p = eng_request_params_defaults();
    int found = 0;
    for (int i = 0; found < 4 && i < 200; i++) {
        prompt(i, text[found], sizeof text[found]);
        p.text = text[found];
        p.text_len = strlen(text[found]);
        if (preferred_replica(&p) == 0)
            found++;
    }
    cr_assert_eq(found, 4);
    p.session_key = 1;
    while (preferred_replica(&p) != 0)
        p.session_key++;
    const uint64_t session = p.session_key;
    /* Healthy: replica 0 answers, and the session is pinned there. */
    p.text = text[0];
    p.text_len = strlen(text[0]);
    p.max_tokens = 4;
    eng_request *q;
    int where;
    eng_err err = {{0}};
    answer a;
    cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(where, 0);
    drain(q, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_request_release(q);

    /* The device is lost: each request sent there fails with its error, one step each, until
     * the third failed step in a row takes the replica out. */
    atomic_store(&f->fail, true);
    for (int k = 0; k < ROUTER_DEAD_FAILED_STEPS; k++) {
        p.text = text[k];
        p.text_len = strlen(text[k]);
        p.session_key = 0;
        cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(where, 0, "failure %d: the request went to replica %d", k, where);
        eng_request_output out;
        char buf[64];
        do
            cr_assert_eq(eng_request_read(q, buf, sizeof buf, 60000, &out), ENG_OK);
        while (!out.done);
        cr_assert_eq(out.finish, ENG_FINISH_ERROR);
        cr_assert(strstr(out.error, "injected: device lost"), "%s", out.error);
        eng_request_release(q);
        /* the engine counts the failed step just after ending its requests */
        eng_engine_stats st;
        for (int t = 0; t < 3000; t++) {
            eng_engine_stats_get(two[0], &st);
            if (st.failed_steps_in_a_row == k + 1)
                break;
            usleep(10 * 1000);
        }
        cr_assert_eq(st.failed_steps_in_a_row, k + 1);
    }

    /* Out of rotation, and said so where /metrics and /v1/health read it. */
    eng_router_replica_stats rs;
    eng_router_replica_stats_get(r, 0, &rs);
    cr_assert(!rs.in_rotation);
    cr_assert(strstr(rs.down_reason, "its backend failed 3 steps in a row"), "%s",
              rs.down_reason);
    eng_router_replica_stats_get(r, 1, &rs);
    cr_assert(rs.in_rotation);
    cr_assert_eq(eng_router_admission_check(r, &err), ENG_OK, "%s", err.msg);

    /* Every request after it, the session's included, is answered by replica 1. */
    for (int k = 0; k < 4; k++) {
        p.text = text[k];
        p.text_len = strlen(text[k]);
        p.session_key = k == 2 ? session : 0; /* the session pinned there moves too */
        cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(where, 1, "request %d went to the failed replica", k);
        drain(q, &a);
        cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
        cr_assert_gt(a.len, 0);
        eng_request_release(q);
    }
    eng_router_replica_stats_get(r, 0, &rs);
    cr_assert_eq(rs.engine.requests_submitted, 1 + ROUTER_DEAD_FAILED_STEPS);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

/* ---- a replica whose step hangs ---------------------------------------------------------- */

/* A replica's backend whose forward, once told to stall, does not return until released (a
 * GPU that stopped answering), put in front of the engine's own before any request. */
typedef struct stalling_backend {
    eng_backend base;
    eng_backend *inner; /* owned */
    atomic_bool stall;
    atomic_bool stalled_now; /* a forward is held */
} stalling_backend;

static eng_status stalling_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                                   int32_t *tokens, float *logits, eng_err *err)
{
    stalling_backend *f = (stalling_backend *)be;
    while (atomic_load(&f->stall)) {
        atomic_store(&f->stalled_now, true);
        usleep(1000);
    }
    atomic_store(&f->stalled_now, false);
    return f->inner->ops->forward(f->inner, b, rows, tokens, logits, err);
}

static void stalling_free(eng_backend *be)
{
    stalling_backend *f = (stalling_backend *)be;
    f->inner->ops->free(f->inner);
    free(f);
}

static const eng_backend_ops stalling_ops = {.name = "stalling", .forward = stalling_forward,
                                             .free = stalling_free};

/* Replica i's rotation as the router reports it, polled until it is `want` (30 s at most). */
static bool wait_rotation(eng_router *r, int i, bool want, eng_router_replica_stats *rs)
{
    for (int t = 0; t < 3000; t++) {
        eng_router_replica_stats_get(r, i, rs);
        if (rs->in_rotation == want)
            return true;
        usleep(10 * 1000);
    }
    return false;
}

Test(router, a_replica_whose_step_hangs_leaves_rotation_until_its_steps_complete_again,
     .init = load, .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    stalling_backend *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    f->base = *two[0]->be;
    f->base.ops = &stalling_ops;
    f->inner = two[0]->be;
    atomic_init(&f->stall, false);
    atomic_init(&f->stalled_now, false);
    two[0]->be = &f->base; /* before any submit */
    eng_router *r = router(two, 2);
    eng_router_set_step_watchdog(r, 2000);
    /* Two prompts that prefer replica 0. */
    char text[2][256];
    eng_request_params p = eng_request_params_defaults();
    int found = 0;
    for (int i = 0; found < 2 && i < 200; i++) {
        prompt(i, text[found], sizeof text[found]);
        p.text = text[found];
        p.text_len = strlen(text[found]);
        if (preferred_replica(&p) == 0)
            found++;
    }
    cr_assert_eq(found, 2);
    p.max_tokens = 4;

    /* Replica 0's step hangs with a request in it: out of rotation, saying why. */
    atomic_store(&f->stall, true);
    p.text = text[0];
    p.text_len = strlen(text[0]);
    eng_request *hung;
    int where;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_submit(r, &p, &hung, &where, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(where, 0);
    eng_router_replica_stats rs;
    cr_assert(wait_rotation(r, 0, false, &rs), "replica 0's step hangs, but it stays in rotation");
    cr_assert(atomic_load(&f->stalled_now), "out of rotation before its step hung");
    cr_assert(strstr(rs.down_reason, "its step has not completed for") &&
              strstr(rs.down_reason, "step watchdog"), "%s", rs.down_reason);
    eng_router_replica_stats_get(r, 1, &rs);
    cr_assert(rs.in_rotation);

    /* A request that prefers it is answered by replica 1 meanwhile. */
    p.text = text[1];
    p.text_len = strlen(text[1]);
    eng_request *q;
    answer a;
    cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(where, 1, "a request went to the replica whose step hangs");
    drain(q, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_request_release(q);

    /* Its step completes: back in rotation, the held request answered, new ones routed there. */
    atomic_store(&f->stall, false);
    cr_assert(wait_rotation(r, 0, true, &rs), "replica 0's steps complete again, but it stays "
              "out: %s", rs.down_reason);
    cr_assert_str_eq(rs.down_reason, "");
    drain(hung, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_request_release(hung);
    cr_assert_eq(eng_router_submit(r, &p, &q, &where, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(where, 0, "replica 0 is back, but its prompt went to %d", where);
    drain(q, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_request_release(q);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

/* ---- supersede across replicas ----------------------------------------------------------- */

/* A long request of session 0xF11E (it cannot end by itself before the test is done with it). */
static eng_request *submit_session(eng_router *r, const char *text, int32_t max_tokens,
                                   int *where)
{
    eng_request_params p = eng_request_params_defaults();
    p.text = text;
    p.text_len = strlen(text);
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.session_key = 0xF11E;
    eng_request *q = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_router_submit(r, &p, &q, where, &err), ENG_OK, "%s", err.msg);
    return q;
}

Test(router, a_sessions_newer_request_on_another_replica_supersedes_the_older_one,
     .init = load, .fini = unload, .timeout = 240)
{
    eng_engine *two[2] = {engine(1), engine(1)};
    eng_router *r = router(two, 2);
    char text[2][256];
    prompt(1, text[0], sizeof text[0]);
    prompt(2, text[1], sizeof text[1]);
    int w0, w1;
    eng_request *older = submit_session(r, text[0], 400, &w0);
    /* Its replica leaves rotation: the session's pin moves, and its next request runs on the
     * other replica, where the engine's own supersede cannot see the older one. */
    eng_router_replica_set_down(r, w0, "test: draining");
    eng_request *newer = submit_session(r, text[1], 4, &w1);
    cr_assert_neq(w0, w1);
    answer a;
    drain(older, &a);
    cr_assert_eq(a.finish, ENG_FINISH_SUPERSEDED, "the older request finished '%s' after %zu "
                 "bytes", eng_finish_str(a.finish), a.len);
    drain(newer, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    eng_engine_stats st;
    eng_engine_stats_get(two[w0], &st);
    cr_assert_eq(st.requests_superseded, 1);
    eng_request_release(older);
    eng_request_release(newer);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}

Test(router, a_session_spilled_off_its_full_replica_supersedes_its_older_request_there_only,
     .init = load, .fini = unload, .timeout = 240)
{
    /* One running sequence and two queue slots per replica. */
    eng_engine *two[2] = {engine_with(1, 1, 2), engine_with(1, 1, 2)};
    eng_router *r = router(two, 2);
    char text[4][256];
    for (int i = 0; i < 4; i++)
        prompt(i + 4, text[i], sizeof text[i]);
    int w0, w1;
    eng_request *older = submit_session(r, text[0], 400, &w0);
    eng_engine_stats st;
    for (int t = 0; t < 3000; t++) { /* running, so the queue is free for the others */
        eng_engine_stats_get(two[w0], &st);
        if (st.running == 1)
            break;
        usleep(10 * 1000);
    }
    cr_assert_eq(st.running, 1);
    /* Two other requests fill its queue (straight to that engine: no session, no router). */
    eng_request *fill[2];
    for (int i = 0; i < 2; i++) {
        eng_request_params p = eng_request_params_defaults();
        p.text = text[1 + i];
        p.text_len = strlen(text[1 + i]);
        p.max_tokens = 4;
        eng_err err = {{0}};
        cr_assert_eq(eng_submit(two[w0], &p, &fill[i], &err), ENG_OK, "%s", err.msg);
    }
    /* The session's pinned replica refuses (full): the request spills to the other. */
    eng_request *newer = submit_session(r, text[3], 4, &w1);
    cr_assert_neq(w0, w1);
    eng_router_replica_stats rs;
    eng_router_replica_stats_get(r, w1, &rs);
    cr_assert_eq(rs.routed[ENG_ROUTE_SPILLED], 1);
    answer a;
    drain(older, &a);
    cr_assert_eq(a.finish, ENG_FINISH_SUPERSEDED, "the older request finished '%s' after %zu "
                 "bytes", eng_finish_str(a.finish), a.len);
    drain(newer, &a);
    cr_assert_eq(a.finish, ENG_FINISH_LENGTH);
    for (int i = 0; i < 2; i++) { /* other sessions' requests are not touched */
        drain(fill[i], &a);
        cr_assert_eq(a.finish, ENG_FINISH_LENGTH, "queued request %d ended '%s'", i,
                     eng_finish_str(a.finish));
        eng_request_release(fill[i]);
    }
    eng_request_release(older);
    eng_request_release(newer);
    eng_router_free(r);
    eng_engine_free(two[0]);
    eng_engine_free(two[1]);
}
