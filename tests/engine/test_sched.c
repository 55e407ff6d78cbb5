/* test_sched.c — the scheduler as a unit (scheduler.h): plans made over hand-built states (a
 * kv_cache and a few eng_request structs, no model, backend or thread), checking what a user
 * would notice: decodes before prefill, the token budget, prefix reuse and headroom at
 * admission, who is preempted, priorities, max_running. The test plays the backend by hand. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine_impl.h"
#include "kv_cache.h"
#include "scheduler.h"

enum { MAX_REQS = 8, BS = 4 /* block size: small, so block boundaries come often */ };

/* A scheduler over its own cache, the requests it plans over, and what its hooks saw. */
typedef struct world {
    kv_cache *kv;
    sched_state *s;
    eng_request *req[MAX_REQS];
    int32_t n_req;
    int32_t n_admits, last_cached;
    eng_request *admitted[16];
    int32_t n_preempts;
    eng_request *preempted[16];
} world;

static void hook_admit(void *user, eng_request *r, int32_t n_cached)
{
    world *w = user;
    cr_assert_lt(w->n_admits, 16);
    w->admitted[w->n_admits++] = r;
    w->last_cached = n_cached;
}

static void hook_preempt(void *user, eng_request *r)
{
    world *w = user;
    cr_assert_lt(w->n_preempts, 16);
    w->preempted[w->n_preempts++] = r;
}

static world *world_new(int32_t n_blocks, int32_t step_tokens, int32_t max_running)
{
    world *w = calloc(1, sizeof *w);
    cr_assert_not_null(w);
    eng_err err = {{0}};
    cr_assert_eq(kv_cache_create(n_blocks, BS, true, &w->kv, &err), ENG_OK, "%s", err.msg);
    sched_config cfg = {.step_tokens = step_tokens, .max_running = max_running,
                        .max_waiting = MAX_REQS, .on_admit = hook_admit,
                        .on_preempt = hook_preempt, .user = w};
    cr_assert_eq(sched_create(w->kv, &cfg, &w->s, &err), ENG_OK, "%s", err.msg);
    return w;
}

static void world_free(world *w)
{
    for (int32_t i = 0; i < w->n_req; i++) {
        kv_seq_free(w->kv, w->req[i]->seq);
        free(w->req[i]->tokens);
        free(w->req[i]);
    }
    sched_free(w->s);
    kv_cache_free(w->kv);
    free(w);
}

/* A request as eng_submit leaves it: prompt tokens id * 1000 + i (so two requests share no
 * prefix unless a test copies one), n_gen of them already generated (a preempted request). */
static eng_request *req_new(world *w, uint64_t id, int32_t priority, int32_t n_prompt,
                            int32_t n_gen)
{
    cr_assert_lt(w->n_req, MAX_REQS);
    eng_request *r = calloc(1, sizeof *r);
    cr_assert_not_null(r);
    r->id = id;
    r->priority = priority;
    r->n_prompt = n_prompt;
    r->max_tokens = 64;
    r->tokens = malloc(sizeof(int32_t) * (size_t)(n_prompt + r->max_tokens));
    cr_assert_not_null(r->tokens);
    for (int32_t i = 0; i < n_prompt + n_gen; i++)
        r->tokens[i] = (int32_t)id * 1000 + i;
    r->n_tokens = n_prompt + n_gen;
    w->req[w->n_req++] = r;
    return r;
}

/* Makes r running by hand with n_computed positions in the cache. The caller adds requests in
 * service order (the scheduler keeps that order; this bypasses it). */
static void put_running(world *w, eng_request *r, int32_t n_computed)
{
    cr_assert(n_computed < r->n_tokens);
    eng_err err = {{0}};
    cr_assert_eq(kv_seq_create(w->kv, r->n_prompt + r->max_tokens, 0, &r->seq, &err), ENG_OK, "%s",
                 err.msg);
    cr_assert_eq(kv_seq_reserve(w->kv, r->seq, n_computed), ENG_OK);
    kv_seq_commit(w->kv, r->seq, r->tokens, n_computed);
    r->n_computed = n_computed;
    cr_assert_lt(w->s->n_running, w->s->cfg.max_running);
    w->s->running[w->s->n_running++] = r;
}

/* A request running and decoding: its whole prompt and all but its last generated token are
 * in the cache. */
static eng_request *put_decoding(world *w, uint64_t id, int32_t n_prompt, int32_t n_gen)
{
    eng_request *r = req_new(w, id, 0, n_prompt, n_gen);
    put_running(w, r, r->n_tokens - 1);
    return r;
}

/* Checks the scheduler's model (scheduler.h) after a plan: the KV accounting, each list's
 * requests in their state, each plan entry starting at its request's computed positions with
 * blocks reserved, and the plan under the budget. Returns the tokens planned. */
static int32_t check_state(const world *w)
{
    const sched_state *s = w->s;
    eng_err err = {{0}};
    cr_assert_eq(kv_cache_check(w->kv, &err), ENG_OK, "kv_cache_check: %s", err.msg);
    for (int32_t i = 0; i < s->n_running; i++) {
        const eng_request *r = s->running[i];
        cr_assert_not_null(r->seq, "running request %d has no blocks", (int)r->id);
        cr_assert_eq(kv_seq_n_tokens(r->seq), r->n_computed);
        cr_assert_lt(r->n_computed, r->n_tokens);
    }
    for (int32_t i = 0; i < s->n_waiting; i++) {
        const eng_request *r = s->waiting[i];
        cr_assert_null(r->seq, "waiting request %d holds blocks", (int)r->id);
        cr_assert_eq(r->n_computed, 0);
    }
    int32_t total = 0;
    for (int32_t j = 0; j < s->n_plan; j++) {
        const sched_entry *en = &s->plan[j];
        bool running = false;
        for (int32_t i = 0; i < s->n_running; i++)
            running |= s->running[i] == en->r;
        cr_assert(running, "planned request %d is not running", (int)en->r->id);
        cr_assert_eq(en->start, en->r->n_computed);
        cr_assert_geq(en->len, 1);
        cr_assert_leq(en->start + en->len, en->r->n_tokens);
        cr_assert_eq(kv_seq_blocks_needed(w->kv, en->r->seq, en->start + en->len), 0,
                     "request %d is planned without its blocks", (int)en->r->id);
        total += en->len;
    }
    cr_assert_leq(total, s->cfg.step_tokens);
    return total;
}

/* Plans a step and checks it; returns what sched_step_plan returned (asserted to be the
 * tokens in the plan). */
static int32_t plan(world *w)
{
    int32_t n = sched_step_plan(w->s);
    int32_t in_plan = check_state(w);
    cr_assert_eq(n, in_plan, "the plan holds %d tokens but %d were reported", in_plan, n);
    return n;
}

/* Plays the backend: every planned chunk is computed, and a request whose last token was in
 * the step gets a new one. Empties the plan, as the engine does. */
static void run_plan(world *w)
{
    sched_state *s = w->s;
    for (int32_t j = 0; j < s->n_plan; j++) {
        eng_request *r = s->plan[j].r;
        r->n_computed = s->plan[j].start + s->plan[j].len;
        kv_seq_commit(w->kv, r->seq, r->tokens, r->n_computed);
        if (r->n_computed == r->n_tokens) {
            cr_assert_lt(r->n_tokens, r->n_prompt + r->max_tokens);
            r->tokens[r->n_tokens] = 900000 + r->n_tokens;
            r->n_tokens++;
        }
    }
    s->n_plan = 0;
}

/* Ends a request the way the engine does: off the lists, blocks freed. */
static void finish_req(world *w, eng_request *r)
{
    sched_remove(w->s, r);
    kv_seq_free(w->kv, r->seq);
    r->seq = NULL;
}

static const sched_entry *entry_of(const world *w, const eng_request *r)
{
    for (int32_t j = 0; j < w->s->n_plan; j++)
        if (w->s->plan[j].r == r)
            return &w->s->plan[j];
    return NULL;
}

Test(sched, every_running_decode_gets_one_token_before_any_prefill)
{
    world *w = world_new(64, 8, 4);
    /* The prefilling request is the oldest, first in service order, and wants 32 tokens. */
    eng_request *p = req_new(w, 1, 0, 40, 0);
    put_running(w, p, 8);
    eng_request *d1 = put_decoding(w, 2, 5, 2);
    eng_request *d2 = put_decoding(w, 3, 7, 1);

    cr_assert_eq(plan(w), 8);
    cr_assert_eq(w->s->n_plan, 3);
    cr_assert_eq(w->s->plan[0].r, d1);
    cr_assert_eq(w->s->plan[0].len, 1);
    cr_assert_eq(w->s->plan[1].r, d2);
    cr_assert_eq(w->s->plan[1].len, 1);
    cr_assert_eq(w->s->plan[2].r, p, "the prefill chunk comes after the decodes");
    cr_assert_eq(w->s->plan[2].start, 8);
    cr_assert_eq(w->s->plan[2].len, 6, "the prompt gets what the decodes left of the budget");
    world_free(w);
}

Test(sched, a_long_prompt_is_chunked_so_no_step_exceeds_the_token_budget)
{
    world *w = world_new(64, 16, 4);
    eng_request *d = put_decoding(w, 1, 5, 1);
    eng_request *p = req_new(w, 2, 0, 70, 0);
    sched_waiting_insert(w->s, p);

    /* Each step: the decode's token, then the prompt's next chunk with the 15 left. */
    const int32_t chunks[] = {15, 15, 15, 15, 10};
    int32_t done = 0;
    for (int step = 0; step < 5; step++) {
        cr_assert_eq(plan(w), 1 + chunks[step], "step %d", step);
        const sched_entry *ep = entry_of(w, p), *ed = entry_of(w, d);
        cr_assert(ep && ed, "step %d: both requests run", step);
        cr_assert_eq(ed->len, 1);
        cr_assert_eq(ep->start, done, "step %d: the chunk starts where the last one ended", step);
        cr_assert_eq(ep->len, chunks[step], "step %d", step);
        cr_assert_eq(p->n_tokens, 70, "no token is sampled before the prompt is complete");
        done += chunks[step];
        run_plan(w);
    }
    cr_assert_eq(p->n_tokens, 71, "the last chunk produced the first token");
    cr_assert_eq(plan(w), 2, "then both decode");
    world_free(w);
}

Test(sched, admission_reuses_a_cached_prefix_and_plans_only_the_tail)
{
    world *w = world_new(64, 64, 4);
    /* An earlier request computed 12 tokens (three full blocks) and finished. */
    eng_request *old = req_new(w, 1, 0, 13, 0);
    put_running(w, old, 12);
    finish_req(w, old);
    /* A new prompt starts with those 12 tokens and adds 5. */
    eng_request *r = req_new(w, 2, 0, 17, 0);
    memcpy(r->tokens, old->tokens, sizeof(int32_t) * 12);
    sched_waiting_insert(w->s, r);

    cr_assert_eq(plan(w), 5, "only the tail is computed");
    cr_assert_eq(w->s->n_plan, 1);
    cr_assert_eq(w->s->plan[0].r, r);
    cr_assert_eq(w->s->plan[0].start, 12);
    cr_assert_eq(w->s->plan[0].len, 5);
    cr_assert_eq(w->n_admits, 1);
    cr_assert_eq(w->last_cached, 12, "the admission hook is told how much was reused");
    kv_stats st;
    kv_cache_stats(w->kv, &st);
    cr_assert_eq(st.prefix_hit_tokens, 12);
    world_free(w);
}

/* Two decoding requests hold two blocks each and need no new one this step; a waiting
 * 8-token prompt needs two blocks. */
static world *headroom_world(int32_t n_blocks, eng_request **waiting)
{
    world *w = world_new(n_blocks, 32, 4);
    put_decoding(w, 1, 4, 2);
    put_decoding(w, 2, 4, 2);
    *waiting = req_new(w, 3, 0, 8, 0);
    sched_waiting_insert(w->s, *waiting);
    return w;
}

Test(sched, admission_keeps_one_free_block_of_headroom_per_running_sequence)
{
    eng_request *r = NULL;
    /* 3 blocks left: the prompt's 2 would fit, but not with 1 spare per running request. */
    world *w = headroom_world(7, &r);
    cr_assert_eq(plan(w), 2, "only the two decodes run");
    cr_assert_eq(w->s->n_waiting, 1);
    cr_assert_eq(w->s->waiting[0], r);
    cr_assert_eq(w->n_admits, 0);
    kv_stats st;
    kv_cache_stats(w->kv, &st);
    cr_assert_eq(st.n_seqs, 2, "the refused admission left no sequence behind");
    cr_assert_eq(kv_cache_n_available(w->kv), 3);
    world_free(w);

    /* 4 blocks left: 2 for the prompt, 1 spare for each decode. */
    w = headroom_world(8, &r);
    cr_assert_eq(plan(w), 2 + 8);
    cr_assert_eq(w->s->n_waiting, 0);
    cr_assert_not_null(entry_of(w, r));
    world_free(w);
}

Test(sched, when_blocks_run_out_the_newest_sequence_is_preempted_and_keeps_its_tokens)
{
    /* Three decoding requests with one full block each; each needs a second block for its
     * next position, and one block is free. */
    world *w = world_new(4, 8, 4);
    eng_request *a = put_decoding(w, 1, 3, 2);
    eng_request *b = put_decoding(w, 2, 3, 2);
    eng_request *c = put_decoding(w, 3, 3, 2);
    int32_t c_tokens[5];
    memcpy(c_tokens, c->tokens, sizeof c_tokens);

    cr_assert_eq(plan(w), 2);
    cr_assert_eq(w->n_preempts, 1);
    cr_assert_eq(w->preempted[0], c, "the newest request gives its blocks back");
    cr_assert_not_null(entry_of(w, a));
    cr_assert_not_null(entry_of(w, b));
    cr_assert_null(entry_of(w, c));
    cr_assert_eq(w->s->n_running, 2);
    cr_assert_eq(w->s->n_waiting, 1);
    cr_assert_eq(w->s->waiting[0], c);
    cr_assert_eq(c->n_tokens, 5, "it keeps its generated tokens");
    cr_assert(memcmp(c->tokens, c_tokens, sizeof c_tokens) == 0);

    /* Once the others finish, it is admitted again and recomputes prompt and output. */
    run_plan(w);
    finish_req(w, a);
    finish_req(w, b);
    cr_assert_eq(plan(w), 5);
    cr_assert_eq(w->s->n_plan, 1);
    cr_assert_eq(w->s->plan[0].r, c);
    cr_assert_eq(w->s->plan[0].start, 0);
    cr_assert_eq(w->s->plan[0].len, 5, "prompt (3) and generated tokens (2)");
    world_free(w);
}

Test(sched, a_lower_priority_sequence_is_preempted_before_a_newer_higher_priority_one)
{
    /* Submitted in this order; the scheduler admits both (the higher priority first). */
    world *w = world_new(3, 8, 4);
    eng_request *low = req_new(w, 1, 0, 4, 0);
    eng_request *high = req_new(w, 2, 5, 4, 0);
    sched_waiting_insert(w->s, low);
    sched_waiting_insert(w->s, high);
    cr_assert_eq(plan(w), 8);
    cr_assert_eq(w->s->plan[0].r, high);
    run_plan(w);

    /* Both now decode into a second block, and one block is free. */
    cr_assert_eq(plan(w), 1);
    cr_assert_eq(w->n_preempts, 1);
    cr_assert_eq(w->preempted[0], low, "the older, lower-priority request is preempted");
    cr_assert_not_null(entry_of(w, high));
    cr_assert_eq(w->s->waiting[0], low);
    cr_assert_eq(low->n_tokens, 5, "it keeps its generated token");
    world_free(w);
}

Test(sched, a_sequence_preempted_after_it_was_planned_leaves_the_plan)
{
    /* The decode is planned first; then the older prefill needs two blocks, none are free,
     * and the decode, being the newest, is preempted. */
    world *w = world_new(3, 16, 4);
    eng_request *p = req_new(w, 1, 0, 12, 0);
    put_running(w, p, 4);
    eng_request *d = put_decoding(w, 2, 4, 2);

    cr_assert_eq(plan(w), 8, "the step counts only what is left in the plan");
    cr_assert_eq(w->s->n_plan, 1);
    cr_assert_eq(w->s->plan[0].r, p);
    cr_assert_eq(w->s->plan[0].len, 8);
    cr_assert_eq(w->n_preempts, 1);
    cr_assert_eq(w->preempted[0], d);
    cr_assert_eq(w->s->waiting[0], d);
    world_free(w);
}

Test(sched, a_higher_priority_waiting_request_is_admitted_before_an_older_lower_priority_one)
{
    world *w = world_new(64, 16, 1);
    eng_request *old = req_new(w, 1, 0, 6, 0);
    eng_request *urgent = req_new(w, 2, 3, 6, 0);
    sched_waiting_insert(w->s, old);
    sched_waiting_insert(w->s, urgent);

    cr_assert_eq(plan(w), 6);
    cr_assert_eq(w->s->n_plan, 1);
    cr_assert_eq(w->s->plan[0].r, urgent);
    cr_assert_eq(w->s->waiting[0], old);
    world_free(w);
}

Test(sched, among_equal_priorities_the_older_request_is_admitted_first)
{
    world *w = world_new(64, 16, 1);
    eng_request *newer = req_new(w, 7, 2, 6, 0);
    eng_request *older = req_new(w, 3, 2, 6, 0);
    sched_waiting_insert(w->s, newer);
    sched_waiting_insert(w->s, older);

    cr_assert_eq(plan(w), 6);
    cr_assert_eq(w->s->plan[0].r, older);
    cr_assert_eq(w->s->waiting[0], newer);
    world_free(w);
}

Test(sched, no_more_than_max_running_sequences_run_at_once)
{
    world *w = world_new(64, 64, 2);
    for (uint64_t id = 1; id <= 5; id++)
        sched_waiting_insert(w->s, req_new(w, id, 0, 3, 0));

    cr_assert_eq(plan(w), 6, "two prompts of 3 tokens");
    cr_assert_eq(w->s->n_running, 2);
    cr_assert_eq(w->s->n_waiting, 3);
    run_plan(w);
    cr_assert_eq(plan(w), 2, "then two decodes, with budget and blocks to spare");
    cr_assert_eq(w->s->n_running, 2);
    cr_assert_eq(w->s->n_waiting, 3);
    cr_assert_eq(w->n_admits, 2);
    world_free(w);
}

Test(sched, nothing_is_planned_when_nothing_is_runnable)
{
    world *w = world_new(4, 16, 4);
    cr_assert_eq(plan(w), 0, "an empty scheduler plans nothing");
    cr_assert_eq(w->s->n_plan, 0);

    /* Every block is held by a sequence outside the scheduler: the waiting request cannot
     * get its first block, and stays waiting without leaving anything in the cache. */
    kv_seq *held = NULL;
    cr_assert_eq(kv_seq_create(w->kv, 16, 0, &held, NULL), ENG_OK);
    cr_assert_eq(kv_seq_reserve(w->kv, held, 16), ENG_OK);
    eng_request *r = req_new(w, 1, 0, 3, 0);
    sched_waiting_insert(w->s, r);
    cr_assert_eq(plan(w), 0);
    cr_assert_eq(w->s->n_plan, 0);
    cr_assert_eq(w->s->n_waiting, 1);
    cr_assert_null(r->seq);
    cr_assert_eq(w->n_admits, 0);
    kv_stats st;
    kv_cache_stats(w->kv, &st);
    cr_assert_eq(st.n_seqs, 1);
    kv_seq_free(w->kv, held);
    world_free(w);
}

Test(sched, create_rejects_limits_the_plan_cannot_keep)
{
    kv_cache *kv = NULL;
    cr_assert_eq(kv_cache_create(8, BS, true, &kv, NULL), ENG_OK);
    sched_state *s = (sched_state *)1;
    eng_err err = {{0}};
    sched_config cfg = {.step_tokens = 4, .max_running = 8, .max_waiting = 4};
    cr_assert_eq(sched_create(kv, &cfg, &s, &err), ENG_ERR_INVALID);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "step_tokens"), "%s", err.msg);
    cfg = (sched_config){.step_tokens = 4, .max_running = 0, .max_waiting = 4};
    cr_assert_eq(sched_create(kv, &cfg, &s, &err), ENG_ERR_INVALID);
    sched_free(NULL);
    kv_cache_free(kv);
}

/* ---- the latency schedule (SCHED_LATENCY) and supersede ---------------------------------- */

/* A world planning under SCHED_LATENCY at time `now` (ms), whose step-time model has seen steps
 * of exactly 5 ms + 1 ms per token. */
static world *world_latency(int32_t n_blocks, int32_t step_tokens, int32_t max_running,
                            double now)
{
    world *w = world_new(n_blocks, step_tokens, max_running);
    w->s->cfg.policy = SCHED_LATENCY;
    w->s->now = now;
    const int32_t sizes[] = {8, 64, 16, 128, 32};
    for (int i = 0; i < 5; i++)
        sched_observe(w->s, sizes[i], 5.0 + sizes[i]);
    return w;
}

Test(sched, the_step_time_model_fits_the_measured_line)
{
    world *w = world_latency(16, 512, 4, 0);
    cr_assert_float_eq(sched_predict_ms(w->s, 0), 5.0, 1e-6);
    cr_assert_float_eq(sched_predict_ms(w->s, 200), 205.0, 1e-6);
    /* Newer steps count more: after the machine got twice as slow, the fit follows it. */
    for (int i = 0; i < 60; i++)
        sched_observe(w->s, 10 + (i % 5) * 30, 10.0 + 2.0 * (10 + (i % 5) * 30));
    cr_assert_float_eq(sched_predict_ms(w->s, 100), 210.0, 2.0);
    world_free(w);
}

Test(sched, latency_admits_the_earliest_deadline_first_not_the_oldest)
{
    world *w = world_latency(64, 512, 4, 1000);
    eng_request *old = req_new(w, 1, 0, 8, 0);
    old->deadline = 3000;
    eng_request *urgent = req_new(w, 2, 0, 8, 0);
    urgent->deadline = 1500;
    sched_waiting_insert(w->s, old);
    sched_waiting_insert(w->s, urgent);
    cr_assert_eq(w->s->waiting[0], urgent, "the list is not in deadline order");
    plan(w);
    cr_assert_eq(w->s->plan[0].r, urgent);
    world_free(w);
}

Test(sched, a_request_past_its_deadline_goes_behind_those_still_on_time)
{
    world *w = world_latency(64, 512, 4, 1000);
    eng_request *late = req_new(w, 1, 0, 8, 0);
    late->deadline = 900; /* passed */
    eng_request *on_time = req_new(w, 2, 0, 8, 0);
    on_time->deadline = 2000;
    sched_waiting_insert(w->s, late);
    sched_waiting_insert(w->s, on_time);
    plan(w);
    cr_assert_eq(w->s->plan[0].r, on_time, "the late request was admitted ahead");
    cr_assert(sched_is_late(w->s, late, 0));
    cr_assert(!sched_is_late(w->s, on_time, 0));
    /* Deprioritised, not shed: with nothing on time left it runs. */
    run_plan(w);
    finish_req(w, on_time);
    plan(w);
    cr_assert_not_null(entry_of(w, late), "the late request never ran");
    world_free(w);
}

Test(sched, latency_steps_are_sized_by_the_step_time_model_and_prompts_go_one_after_another)
{
    world *w = world_latency(64, 512, 4, 0);
    eng_request *a = req_new(w, 1, 0, 40, 0), *b = req_new(w, 2, 0, 40, 0);
    a->deadline = b->deadline = 10000;
    w->s->cfg.max_step_ms = 30; /* 25 tokens a step */
    sched_waiting_insert(w->s, a);
    sched_waiting_insert(w->s, b);
    cr_assert_eq(plan(w), 25);
    cr_assert_eq(w->s->n_running, 1, "a second prompt started before the first was computed");
    run_plan(w);
    plan(w); /* a's last 15 tokens, then b's first 10 */
    cr_assert_eq(w->s->n_running, 2);
    cr_assert_eq(entry_of(w, a)->len, 15);
    cr_assert_eq(entry_of(w, b)->len, 10);
    world_free(w);
}

Test(sched, the_budget_keeps_a_running_decode_within_its_deadline)
{
    world *w = world_latency(64, 512, 4, 1000);
    /* 10 tokens left to generate, 1000 ms to its deadline: steps of at most 100 ms, i.e.
     * 95 tokens under the model (5 ms + 1 ms/token). */
    eng_request *d = put_decoding(w, 1, 8, 54);
    d->max_tokens = 64;
    d->deadline = 2000;
    eng_request *p = req_new(w, 2, 0, 400, 0);
    p->deadline = 5000;
    sched_waiting_insert(w->s, p);
    cr_assert_eq(sched_budget(w->s), 95);
    cr_assert_eq(plan(w), 95);
    cr_assert_eq(entry_of(w, p)->len, 94);
    world_free(w);
}

Test(sched, the_budget_is_max_step_ms_without_deadlines_and_never_below_the_decodes)
{
    world *w = world_latency(64, 512, 4, 1000);
    eng_request *d = put_decoding(w, 1, 8, 2);
    d->deadline = 0; /* none */
    cr_assert_eq(sched_budget(w->s), 245, "250 ms of steps under the model");
    /* A deadline only 20 ms away for 62 more tokens is hopeless: the request is late and no
     * longer shrinks everyone's steps. */
    d->deadline = 1020;
    cr_assert(sched_is_late(w->s, d, 1));
    cr_assert_eq(sched_budget(w->s), 245);
    /* 62 tokens in 6200 ms: 100 ms steps. */
    d->deadline = 1000 + 62 * 100;
    cr_assert_eq(sched_budget(w->s), 95);
    /* 62 tokens in 62 * 10 ms: 10 ms steps, 5 tokens: the decode and 4 prompt tokens. */
    d->deadline = 1000 + 62 * 10;
    cr_assert(!sched_is_late(w->s, d, 1));
    cr_assert_eq(sched_budget(w->s), 5);
    /* With min_prefill the prompts get that many whatever the deadlines say. */
    w->s->cfg.min_prefill = 16;
    cr_assert_eq(sched_budget(w->s), 17);
    world_free(w);
}

Test(sched, a_prompt_being_computed_does_not_shrink_the_steps_only_a_decode_does)
{
    world *w = world_latency(64, 512, 4, 1000);
    /* 300 prompt tokens left, 64 tokens to generate, 1100 ms: its prompt wants big steps. */
    eng_request *p = req_new(w, 1, 0, 400, 0);
    put_running(w, p, 100);
    p->deadline = 2100;
    cr_assert_eq(sched_budget(w->s), 245);
    world_free(w);
}

Test(sched, a_request_supersedes_the_older_ones_of_its_session_only)
{
    world *w = world_new(64, 512, 4);
    eng_request *run_same = put_decoding(w, 1, 8, 1);
    eng_request *run_other = put_decoding(w, 2, 8, 1);
    eng_request *wait_same = req_new(w, 3, 0, 8, 0);
    eng_request *newest = req_new(w, 4, 0, 8, 0);
    eng_request *newer_same = req_new(w, 5, 0, 8, 0);
    run_same->session_key = wait_same->session_key = newest->session_key = 77;
    newer_same->session_key = 77;
    run_other->session_key = 78;
    sched_waiting_insert(w->s, wait_same);
    sched_waiting_insert(w->s, newest);
    sched_waiting_insert(w->s, newer_same);
    eng_request *out[8];
    int32_t n = sched_find_superseded(w->s, newest, out, 8);
    cr_assert_eq(n, 2, "found %d", n);
    cr_assert(out[0] == run_same && out[1] == wait_same);
    /* Capped at cap; none for a request without a key. */
    cr_assert_eq(sched_find_superseded(w->s, newest, out, 1), 1);
    newest->session_key = 0;
    cr_assert_eq(sched_find_superseded(w->s, newest, out, 8), 0);
    world_free(w);
}

Test(sched, steps_all_of_one_size_make_every_other_budget_double_until_the_fit_can_learn)
{
    world *w = world_new(64, 512, 4);
    w->s->cfg.policy = SCHED_LATENCY;
    for (int i = 0; i < 4; i++)
        sched_observe(w->s, 16, 100.0); /* 16-token steps of 100 ms: 6.25 ms a token? */
    int32_t even = sched_budget(w->s);
    sched_observe(w->s, 16, 100.0);
    int32_t odd = sched_budget(w->s);
    cr_assert_eq(even, 40, "250 ms at 6.25 ms a token");
    cr_assert_eq(odd, 80, "the exploring step is not twice as big");
    /* A 32-token step of 105 ms shows the cost is mostly per step: the budget grows. */
    sched_observe(w->s, 32, 105.0);
    sched_observe(w->s, 16, 100.0);
    sched_observe(w->s, 32, 105.0);
    cr_assert_gt(sched_budget(w->s), 400);
    world_free(w);
}
