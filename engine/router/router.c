/* router.c — replicas behind one front end (serval_router.h): reads each engine's load,
 * applies route_policy.h's rules, submits to the chosen engine (passing a full queue on to
 * the next), keeps replicas out of rotation (failing backends for good, stalled steps until
 * they move) and adds up their stats. */
#include "serval_router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "route_policy.h"

struct eng_router {
    int n;
    eng_engine *eng[ENG_ROUTER_MAX_REPLICAS]; /* borrowed */
    /* Under mu: */
    pthread_mutex_t mu;
    unsigned turn;                            /* least-loaded ties take turns */
    bool down[ENG_ROUTER_MAX_REPLICAS];
    char down_reason[ENG_ROUTER_MAX_REPLICAS][160];
    /* the step watchdog: a replica with work whose step count has not moved for stall_ms is
     * out until it moves again */
    double stall_ms;                              /* 0: off */
    int64_t seen_steps[ENG_ROUTER_MAX_REPLICAS];  /* steps and failed steps when last seen */
    double moved_ms[ENG_ROUTER_MAX_REPLICAS];     /* when they last moved (or it was idle) */
    bool stalled[ENG_ROUTER_MAX_REPLICAS];
    char stall_reason[ENG_ROUTER_MAX_REPLICAS][160];
    int64_t routed[ENG_ROUTER_MAX_REPLICAS][ENG_ROUTE_REASONS];
    router_pin pins[ROUTER_PIN_SLOTS];
};

const char *eng_route_reason_str(eng_route_reason why)
{
    switch (why) {
    case ENG_ROUTE_AFFINITY: return "affinity";
    case ENG_ROUTE_REBALANCED: return "rebalanced";
    case ENG_ROUTE_LEAST_LOADED: return "least_loaded";
    case ENG_ROUTE_SPILLED: return "spilled";
    case ENG_ROUTE_REASONS: break;
    }
    return "";
}

eng_status eng_router_create(eng_engine *const *engines, int n, eng_router **out, eng_err *err)
{
    *out = NULL;
    if (n < 1 || n > ENG_ROUTER_MAX_REPLICAS)
        return eng_fail(err, ENG_ERR_INVALID, "replicas must be in [1, %d], got %d",
                        ENG_ROUTER_MAX_REPLICAS, n);
    for (int i = 0; i < n; i++) {
        if (!engines[i])
            return eng_fail(err, ENG_ERR_INVALID, "replica %d has no engine", i);
        if (eng_engine_model(engines[i]) != eng_engine_model(engines[0]))
            return eng_fail(err, ENG_ERR_INVALID, "replica %d serves another model than replica 0",
                            i);
    }
    eng_router *r = calloc(1, sizeof *r);
    if (!r)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory for the router");
    r->n = n;
    memcpy(r->eng, engines, sizeof(eng_engine *) * (size_t)n);
    pthread_mutex_init(&r->mu, NULL);
    r->stall_ms = ENG_ROUTER_STEP_WATCHDOG_MS;
    const double now = eng_clock_ms();
    for (int i = 0; i < n; i++) {
        r->seen_steps[i] = -1; /* the first look counts as a move */
        r->moved_ms[i] = now;
    }
    *out = r;
    return ENG_OK;
}

void eng_router_free(eng_router *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int eng_router_n_replicas(const eng_router *r) { return r->n; }

eng_engine *eng_router_replica(const eng_router *r, int i)
{
    ENG_ASSERT(i >= 0 && i < r->n);
    return r->eng[i];
}

const eng_model *eng_router_model(const eng_router *r) { return eng_engine_model(r->eng[0]); }

int32_t eng_router_max_seq_len(const eng_router *r)
{
    int32_t v = eng_engine_max_seq_len(r->eng[0]);
    for (int i = 1; i < r->n; i++)
        if (eng_engine_max_seq_len(r->eng[i]) < v)
            v = eng_engine_max_seq_len(r->eng[i]);
    return v;
}

size_t eng_router_max_text_bytes(const eng_router *r)
{
    size_t v = eng_engine_max_text_bytes(r->eng[0]);
    for (int i = 1; i < r->n; i++)
        if (eng_engine_max_text_bytes(r->eng[i]) < v)
            v = eng_engine_max_text_bytes(r->eng[i]);
    return v;
}

static void set_down_locked(eng_router *r, int i, const char *reason)
{
    if (r->down[i])
        return;
    r->down[i] = true;
    snprintf(r->down_reason[i], sizeof r->down_reason[i], "%s", reason);
    fprintf(stderr, "serval: replica %d out of rotation: %s\n", i, reason);
}

void eng_router_set_step_watchdog(eng_router *r, int64_t ms)
{
    pthread_mutex_lock(&r->mu);
    r->stall_ms = ms > 0 ? (double)ms : 0;
    pthread_mutex_unlock(&r->mu);
}

/* The watchdog's look at replica i (r->mu held): its steps moved or it has no work, so it is
 * not stalled (back in rotation if it was); or they have not moved for stall_ms while it had
 * work, so it leaves rotation until they move. */
static void watch_steps_locked(eng_router *r, int i, int64_t steps, int32_t load, double now)
{
    if (steps != r->seen_steps[i] || load <= 0) {
        r->seen_steps[i] = steps;
        r->moved_ms[i] = now;
        if (r->stalled[i]) {
            r->stalled[i] = false;
            fprintf(stderr, "serval: replica %d back in rotation: its steps complete again\n", i);
        }
        return;
    }
    if (r->stall_ms <= 0 || r->stalled[i] || now - r->moved_ms[i] < r->stall_ms)
        return;
    r->stalled[i] = true;
    snprintf(r->stall_reason[i], sizeof r->stall_reason[i], "its step has not completed for "
             "%.0f s while it has %d request(s) (step watchdog; back when steps complete)",
             (now - r->moved_ms[i]) / 1000.0, (int)load);
    fprintf(stderr, "serval: replica %d out of rotation: %s\n", i, r->stall_reason[i]);
}

/* Why replica i is out of rotation ("" while in); r->mu held. */
static const char *out_reason_locked(const eng_router *r, int i)
{
    return r->down[i] ? r->down_reason[i] : r->stalled[i] ? r->stall_reason[i] : "";
}

void eng_router_replica_set_down(eng_router *r, int i, const char *reason)
{
    ENG_ASSERT(i >= 0 && i < r->n);
    pthread_mutex_lock(&r->mu);
    set_down_locked(r, i, reason && *reason ? reason : "taken out");
    pthread_mutex_unlock(&r->mu);
}

/* Every replica's load and rotation now; a replica whose backend keeps failing leaves here.
 * block_size (may be NULL) receives replica 0's. Takes r->mu. */
static void views(eng_router *r, router_view *v, int32_t *block_size)
{
    eng_engine_stats st;
    int32_t failed[ENG_ROUTER_MAX_REPLICAS];
    int64_t steps[ENG_ROUTER_MAX_REPLICAS];
    for (int i = 0; i < r->n; i++) {
        eng_engine_stats_get(r->eng[i], &st);
        v[i].load = (int32_t)(st.requests_submitted - st.requests_finished);
        failed[i] = st.failed_steps_in_a_row;
        /* a failed step completed too: either count moving is a step done */
        steps[i] = st.steps * 4096 + (st.failed_steps_in_a_row & 4095);
        if (i == 0 && block_size)
            *block_size = st.block_size;
    }
    const double now = eng_clock_ms();
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        if (failed[i] >= ROUTER_DEAD_FAILED_STEPS) {
            char why[160];
            snprintf(why, sizeof why, "its backend failed %d steps in a row", failed[i]);
            set_down_locked(r, i, why);
        }
        watch_steps_locked(r, i, steps[i], v[i].load, now);
        v[i].in_rotation = !r->down[i] && !r->stalled[i];
    }
    pthread_mutex_unlock(&r->mu);
}

static eng_status none_in_rotation(eng_router *r, eng_err *err)
{
    char why[400] = "";
    size_t at = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n && at < sizeof why; i++) {
        int w = snprintf(why + at, sizeof why - at, "%sreplica %d: %s", i ? "; " : "", i,
                         out_reason_locked(r, i));
        if (w < 0)
            break;
        at += (size_t)w;
    }
    pthread_mutex_unlock(&r->mu);
    return eng_fail(err, ENG_ERR_OVERLOAD, "no replica is in rotation (%s)", why);
}

eng_status eng_router_admission_check(eng_router *r, eng_err *err)
{
    router_view v[ENG_ROUTER_MAX_REPLICAS];
    views(r, v, NULL);
    eng_status st = ENG_ERR_OVERLOAD;
    bool any = false;
    for (int i = 0; i < r->n; i++) {
        if (!v[i].in_rotation)
            continue;
        any = true;
        if ((st = eng_engine_admission_check(r->eng[i], err)) == ENG_OK)
            return ENG_OK;
    }
    return any ? st : none_in_rotation(r, err);
}

/* The request went to replica i for `why`; a session now follows it there. */
static void routed(eng_router *r, int i, eng_route_reason why, bool session, uint64_t key)
{
    pthread_mutex_lock(&r->mu);
    r->routed[i][why]++;
    if (session)
        router_pin_set(r->pins, key, i, eng_clock_ms());
    pthread_mutex_unlock(&r->mu);
}

/* Supersede is per engine: a session request that went to replica i, when the session's pin
 * did not say i (a new or forgotten pin, the pinned replica out of rotation or full, a pin
 * replaced by a colliding key), may have older requests on any other replica, a replica out of
 * rotation included (its running requests finish there). They end as they would had the
 * request met them. Pinned to i, every older request of the session is on i already. */
static void supersede_elsewhere(eng_router *r, int i, const eng_request_params *p)
{
    for (int j = 0; j < r->n; j++)
        if (j != i)
            eng_engine_supersede(r->eng[j], p->session_key, p->cache_salt);
}

eng_status eng_router_submit(eng_router *r, const eng_request_params *p, eng_request **out,
                             int *replica, eng_err *err)
{
    *out = NULL;
    router_view v[ENG_ROUTER_MAX_REPLICAS];
    int32_t block_size = 0;
    views(r, v, &block_size);
    uint64_t key = 0;
    bool session = false;
    bool has_key = router_affinity_key(p, block_size, &key, &session);

    eng_route_reason why = ENG_ROUTE_AFFINITY;
    pthread_mutex_lock(&r->mu);
    const int pinned = session ? router_pin_get(r->pins, key, eng_clock_ms(), v, r->n) : -1;
    int i = pinned;
    if (i < 0)
        i = router_pick(v, r->n, has_key, key, &r->turn, &why);
    pthread_mutex_unlock(&r->mu);
    if (i < 0)
        return none_in_rotation(r, err);

    /* A full queue (or one shutting down) passes the request to the next least loaded. */
    bool tried[ENG_ROUTER_MAX_REPLICAS] = {false};
    for (;;) {
        eng_status st = eng_submit(r->eng[i], p, out, err);
        if (st == ENG_OK) {
            routed(r, i, why, session, key);
            if (session && i != pinned)
                supersede_elsewhere(r, i, p);
            if (replica)
                *replica = i;
            return ENG_OK;
        }
        if (st != ENG_ERR_OVERLOAD && st != ENG_ERR_CANCELLED)
            return st; /* the request's own fault: every replica would say the same */
        tried[i] = true;
        int next = -1;
        for (int j = 0; j < r->n; j++)
            if (!tried[j] && v[j].in_rotation && (next < 0 || v[j].load < v[next].load))
                next = j;
        if (next < 0)
            return st;
        i = next;
        why = ENG_ROUTE_SPILLED;
    }
}

static void hist_add(eng_hist *to, const eng_hist *h)
{
    to->count += h->count;
    to->sum_ms += h->sum_ms;
    if (h->max_ms > to->max_ms)
        to->max_ms = h->max_ms;
    for (int b = 0; b <= ENG_HIST_BUCKETS; b++)
        to->buckets[b] += h->buckets[b];
}

/* Adds replica stats s into the running total t; w_* are the weights' running sums. */
static void stats_add(eng_engine_stats *t, const eng_engine_stats *s, double *w_hit, double *w_steps)
{
    t->running += s->running;
    t->waiting += s->waiting;
    t->kv_blocks_total += s->kv_blocks_total;
    t->kv_blocks_used += s->kv_blocks_used;
    t->kv_blocks_free += s->kv_blocks_free;
    t->kv_blocks_cached += s->kv_blocks_cached;
    t->block_size = s->block_size;
    t->kv_slots_reserved += s->kv_slots_reserved;
    t->kv_slots_filled += s->kv_slots_filled;
    double wh = (double)(s->prompt_tokens_computed + s->prompt_tokens_cached);
    t->prefix_hit_rate += s->prefix_hit_rate * wh;
    *w_hit += wh;
    t->requests_submitted += s->requests_submitted;
    t->requests_finished += s->requests_finished;
    t->requests_cancelled += s->requests_cancelled;
    t->requests_rejected += s->requests_rejected;
    t->requests_superseded += s->requests_superseded;
    t->requests_late += s->requests_late;
    t->preemptions += s->preemptions;
    t->prompt_tokens_computed += s->prompt_tokens_computed;
    t->prompt_tokens_cached += s->prompt_tokens_cached;
    t->tokens_generated += s->tokens_generated;
    double ws = (double)s->steps;
    t->mean_batch_seqs += s->mean_batch_seqs * ws;
    t->mean_step_ms += s->mean_step_ms * ws;
    *w_steps += ws;
    t->steps += s->steps;
    if (s->failed_steps_in_a_row > t->failed_steps_in_a_row)
        t->failed_steps_in_a_row = s->failed_steps_in_a_row;
    if (s->max_batch_seqs > t->max_batch_seqs)
        t->max_batch_seqs = s->max_batch_seqs;
    if (s->max_batch_tokens > t->max_batch_tokens)
        t->max_batch_tokens = s->max_batch_tokens;
    if (s->last_step_ms > t->last_step_ms)
        t->last_step_ms = s->last_step_ms;
    t->gen_tokens_per_s += s->gen_tokens_per_s;
    t->wasted_prompt_tokens += s->wasted_prompt_tokens;
    t->wasted_generated_tokens += s->wasted_generated_tokens;
    hist_add(&t->queue_hist, &s->queue_hist);
    hist_add(&t->first_token_hist, &s->first_token_hist);
    hist_add(&t->total_hist, &s->total_hist);
    hist_add(&t->abort_free_hist, &s->abort_free_hist);
    t->spec_drafted += s->spec_drafted;
    t->spec_accepted += s->spec_accepted;
    t->spec_passes += s->spec_passes;
    t->spec_tokens += s->spec_tokens;
}

void eng_router_stats_get(eng_router *r, eng_engine_stats *out)
{
    if (r->n == 1) {
        eng_engine_stats_get(r->eng[0], out);
        return;
    }
    memset(out, 0, sizeof *out);
    double w_hit = 0, w_steps = 0;
    for (int i = 0; i < r->n; i++) {
        eng_engine_stats s;
        eng_engine_stats_get(r->eng[i], &s);
        stats_add(out, &s, &w_hit, &w_steps);
    }
    out->prefix_hit_rate = w_hit > 0 ? out->prefix_hit_rate / w_hit : 0.0;
    out->mean_batch_seqs = w_steps > 0 ? out->mean_batch_seqs / w_steps : 0.0;
    out->mean_step_ms = w_steps > 0 ? out->mean_step_ms / w_steps : 0.0;
}

void eng_router_replica_stats_get(eng_router *r, int i, eng_router_replica_stats *out)
{
    ENG_ASSERT(i >= 0 && i < r->n);
    memset(out, 0, sizeof *out);
    router_view v[ENG_ROUTER_MAX_REPLICAS];
    views(r, v, NULL); /* notices a replica that keeps failing, as a submit would */
    eng_engine_stats_get(r->eng[i], &out->engine);
    out->load = (int32_t)(out->engine.requests_submitted - out->engine.requests_finished);
    pthread_mutex_lock(&r->mu);
    out->in_rotation = !r->down[i] && !r->stalled[i];
    snprintf(out->down_reason, sizeof out->down_reason, "%s", out_reason_locked(r, i));
    memcpy(out->routed, r->routed[i], sizeof out->routed);
    pthread_mutex_unlock(&r->mu);
}
