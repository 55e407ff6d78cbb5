/* scheduler.h — the iteration-level scheduler: which sequences run in the next step, how many
 * of their tokens, and which give their KV blocks back when the pool runs out. (Not sched.h:
 * engine/batch is on the include path, and a sched.h there would shadow the system <sched.h>
 * that <pthread.h> includes.) */
#ifndef SERVAL_SCHEDULER_H
#define SERVAL_SCHEDULER_H

/*
 * The scheduler plans over its own state, not the engine: a KV cache, two lists of requests
 * and a plan. A test builds one from a kv_cache and a few hand-filled eng_request structs; the
 * engine's step loop owns one per engine. Not thread-safe: one thread (the step loop) calls
 * everything here.
 *
 * Every request the scheduler holds is in exactly one list:
 *   waiting — r->seq == NULL and r->n_computed == 0: nothing of it is in the KV cache. It may
 *             have generated tokens already (a preempted request); they are recomputed.
 *   running — r->seq holds its blocks and kv_seq_n_tokens(r->seq) == r->n_computed <
 *             r->n_tokens: at least one token (the next to feed the model) is left to compute.
 *             Decoding when exactly one is left, prefilling when more are.
 * Both lists are kept in service order: higher r->priority first, then older (smaller r->id)
 * first. So running[n_running - 1] is the newest of the lowest priority: the preemption victim.
 * Under SCHED_LATENCY service order is: higher priority first, then requests that can still
 * meet their deadline before late ones (sched_is_late), then earlier deadline (r->deadline,
 * 0 = none = last), then older; lateness changes with time, so each plan re-sorts both lists.
 *
 * Of a request the scheduler reads id, priority, deadline, n_prompt, max_tokens, tokens[0, n_tokens)
 * and writes seq and n_computed; it takes no lock and touches nothing else. What the engine
 * counts or shows to readers (queue time, cached tokens, preemptions) it does in the hooks.
 *
 * A step (the engine's loop; a test plays the backend by hand):
 *   sched_step_plan(s)                -> plan[0, n_plan): positions [start, start + len) of r,
 *                                        blocks reserved for them
 *   the backend computes the plan;  for each entry: r->n_computed = start + len;
 *   kv_seq_commit(kv, r->seq, r->tokens, r->n_computed); a sampled token is appended when
 *   start + len == r->n_tokens;  then s->n_plan = 0.
 *   Speculation (spec.h): a decoding request with r->n_draft > 0 is planned as one entry of
 *   up to 1 + n_draft positions (the budget permitting), past n_tokens; the engine then sets
 *   n_computed to the verified positions only, commits those and appends the accepted tokens.
 * A finished or cancelled request leaves with sched_remove, and its owner frees r->seq.
 */

#include <stdbool.h>
#include <stdint.h>

#include "kv_cache.h"
#include "serval_engine.h"
#include "status.h"

/* One entry of a step's batch: positions [start, start + len) of a running request. */
typedef struct sched_entry {
    eng_request *r;
    int32_t start, len;
} sched_entry;

/* How plans are made (eng_schedule's two modes; scheduler.h's sched_step_plan says how). */
typedef enum sched_policy {
    SCHED_THROUGHPUT = 0, /* service order, admit all that fits, step_tokens every step */
    SCHED_LATENCY         /* earliest deadline first, late requests last, a budget from the
                           * step-time model (sched_budget) */
} sched_policy;

/* Step time as the engine measured it, ms ~ a + b * tokens: an exponentially weighted least
 * squares fit over recent steps (sched_observe). */
typedef struct sched_step_model {
    double sw, sx, sy, sxx, sxy; /* decayed sums of weights, tokens, ms, tokens^2, tokens*ms */
    int64_t n;                   /* steps observed */
} sched_step_model;

typedef struct sched_config {
    sched_policy policy;
    int32_t step_tokens; /* tokens one step may plan, >= max_running */
    int32_t max_running; /* requests running at once, and entries in one plan, >= 1 */
    int32_t max_waiting; /* requests submitted and never admitted; the waiting list holds
                            max_waiting + max_running (preempted requests come back to it) */
    /* Called (when set) right after r was admitted (it is running, r->seq set, n_cached of
     * its tokens reused from the prefix cache), every time: a preempted request is admitted
     * again. */
    void (*on_admit)(void *user, eng_request *r, int32_t n_cached);
    /* Called (when set) right after r was preempted, before it is back in the waiting list. */
    void (*on_preempt)(void *user, eng_request *r);
    void *user;
    /* SCHED_LATENCY only (0: the defaults in brackets): */
    double max_step_ms;  /* a step is sized to take at most this long [250] */
    int32_t min_prefill; /* prompt tokens a step may plan whatever the deadlines say [0] */
} sched_config;

/* The state one plan is made over. The engine and tests read every field; only the functions
 * here change them, except n_plan, which the caller sets to 0 once it has run the plan. */
typedef struct sched_state {
    sched_config cfg;
    kv_cache *kv;           /* borrowed: it must outlive the scheduler */
    eng_request **waiting;  /* [max_waiting + max_running], service order */
    int32_t n_waiting;
    eng_request **running;  /* [max_running], service order */
    int32_t n_running;
    sched_entry *plan;      /* [max_running], in the order planned: decodes, prefill chunks of
                               running requests, admissions */
    int32_t n_plan;
    /* SCHED_LATENCY: the caller sets now (ms, the clock of the requests' deadlines) before
     * each plan and reports each step's time with sched_observe. */
    double now;
    sched_step_model model;
    int32_t budget;         /* the token budget of the last plan */
    int32_t n_decoding;     /* decoding requests when the lists were last sorted */
} sched_state;

/* Creates an empty scheduler over kv (borrowed, not freed here). ENG_ERR_INVALID when a limit
 * is out of range (step_tokens < max_running, max_running or max_waiting < 1), ENG_ERR_NOMEM
 * when the lists cannot be allocated; *out is NULL then. Allocates the lists and plan up
 * front: O(max_waiting + max_running). *out is owned by the caller; free it with sched_free. */
eng_status sched_create(kv_cache *kv, const sched_config *cfg, sched_state **out, eng_err *err);

/* Frees the lists and the state; the requests in them and their blocks are the caller's.
 * sched_free(NULL) does nothing. */
void sched_free(sched_state *s);

/* Records that a step of `tokens` tokens took ms: the model's older steps count less (each
 * step multiplies their weight by 0.9). O(1). */
void sched_observe(sched_state *s, int32_t tokens, double ms);

/* The model's step time for `tokens` tokens. Before any sched_observe: 10 ms + 2 ms/token, a
 * guess on the slow side of a small model on a laptop CPU. */
double sched_predict_ms(const sched_state *s, int32_t tokens);

/* Whether r can no longer meet its deadline at s->now (SCHED_LATENCY): it has none (0) is
 * never late; a waiting request is late once its deadline passed; a running one when even
 * steps of its decode alone (sched_predict_ms of the decoding requests' count) would not
 * finish its remaining tokens in time. Late requests are deprioritised, never shed: they go
 * behind every request that can still meet its deadline (in admission, prefill and preemption
 * order) and no longer shrink the step budget; they run when nothing on time needs the
 * machine, and their clients still get their answer. */
bool sched_is_late(const sched_state *s, const eng_request *r, int32_t n_decoding);

/* SCHED_LATENCY's token budget for the next step: the most tokens whose predicted step time
 * lets every decoding request that is not late finish its remaining tokens (max_tokens minus
 * those generated) by its deadline, one step per token, and at most max_step_ms (a prompt
 * being computed does not shrink it: it gains from big steps, and its decode counts once it
 * starts); never less than the decoding requests plus min_prefill (and 1), never more than
 * step_tokens. While the recent
 * steps were all about one size (the fit cannot tell per-step from per-token cost), every
 * other budget is doubled so that they spread. */
int32_t sched_budget(const sched_state *s);

/* Puts r in the waiting list at its place in service order. r must be in no list, with
 * r->seq == NULL and r->n_computed == 0, and there must be room (asserted). O(n_waiting). */
void sched_waiting_insert(sched_state *s, eng_request *r);

/* Takes r off whichever list holds it and out of the current plan (no-op where it is not).
 * r's blocks are not freed: the caller frees r->seq. O(n_running + n_waiting + n_plan). */
void sched_remove(sched_state *s, eng_request *r);

/* Plans the next step into plan[0, n_plan) (any earlier plan is dropped), under a budget of
 * step_tokens tokens:
 *   pass 0 — one token for every decoding running request (plus its n_draft drafted
 *            tokens, as many as the budget leaves), in list order;
 *   pass 1 — the next chunk of every prefilling running request (a long prompt, or a
 *            readmitted one recomputing), in list order, each as much as the budget leaves;
 *   pass 2 — admits waiting requests from the head of the list while budget, max_running
 *            slots and blocks last, stopping at the first that does not fit (no skipping
 *            ahead of it). An admitted request first takes the longest cached prefix of its
 *            tokens (kv_seq_match_prefix), so only the tail is planned, and is admitted only
 *            if, after its first chunk's blocks, one free block per running request is left
 *            (headroom, so the next decodes do not immediately force a preemption).
 * Each running entry's blocks are reserved (kv_seq_reserve); when the pool cannot give them,
 * the last running request (lowest priority, newest) is preempted, repeatedly: its blocks are
 * freed (full ones stay in the prefix cache), n_computed becomes 0, and it goes back to the
 * waiting list with all its tokens (prompt and generated), leaving the plan if it was already
 * in it. A request never preempts one ahead of it in service order.
 * SCHED_LATENCY plans the same passes in its own service order (earliest deadline first, late
 * requests last) under the budget sched_budget(s) instead of step_tokens. In both modes the
 * budget goes to prompts in service order, so a prompt is computed before the next one starts
 * (one prompt prefills at a time): compute goes to the request that is due first, and a newer
 * one cancelled or superseded while it waits costs nothing. The small steps are what make
 * latency mode fast for keystrokes: a decode waits at most one short step, and a cancel or
 * supersede frees the machine within one.
 * Returns the tokens planned: the sum of the entries' len, <= step_tokens; 0 when nothing is
 * runnable (nothing running, and the head of the waiting list does not fit or the list is
 * empty). O(n_running + admitted * their cached prefix + preemptions * list length).
 */
int32_t sched_step_plan(sched_state *s);

/* Supersede's rule (eng_request_params.session_key): the requests r supersedes, those older
 * than r (smaller id) with r's nonzero session key, running or waiting; up to cap of them into
 * out. Returns how many (0 when r has no key). The caller ends them and takes them off the
 * lists, then asks again until none is left. O(n_running + n_waiting). */
int32_t sched_find_superseded(const sched_state *s, const eng_request *r, eng_request **out,
                              int32_t cap);

#endif
