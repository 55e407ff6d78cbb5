/* serval_router.h — replicas behind one front end: a router over N engines (one eng_engine
 * each, same model) that the front ends submit through, sending each request to the replica
 * that most likely holds its prefix in cache, and reporting load per replica. */
#ifndef SERVAL_ROUTER_H
#define SERVAL_ROUTER_H

/*
 * A replica is one eng_engine: on the CPU an engine with its own thread pool, on CUDA an
 * engine on the GPU(s) it was given. The engines share one eng_model (weights loaded once;
 * on the CPU they are one read-only mmap). Each has its own KV pool and prefix cache, so where
 * a request runs decides whether its prompt is found in cache: the router sends
 *
 *   1. a request with a session key (eng_request_params.session_key, which the front ends
 *      derive from the caller's token and one editor's file: user + filepath + git_url for
 *      Tabby, or a client's explicit key) to the replica its key is pinned to, so a newer
 *      request always lands where it can supersede the older one; a key seen for the first
 *      time (or idle for ROUTER_PIN_IDLE_MS) is placed by the rules below and pinned there.
 *      Supersede is per engine, so a session request placed anywhere but its pinned replica
 *      (no pin, the pinned replica out of rotation or full) also ends the session's older
 *      requests on every other replica (eng_engine_supersede): the newest request of a
 *      session is the one left, wherever the older ones ran;
 *   2. a request without one, by the hash of its leading prompt (the first
 *      ROUTER_AFFINITY_BLOCKS KV blocks of its tokens, or the first ROUTER_AFFINITY_TEXT_BYTES
 *      bytes of its text), to the replica that hash prefers (rendezvous hashing over the
 *      replicas in rotation, so a replica leaving moves only its own keys);
 *   3. either of them to the least-loaded replica instead when the preferred one is
 *      overloaded against the idlest (ROUTER_IMBALANCE_REQUESTS more requests and
 *      ROUTER_IMBALANCE_RATIO times the load), and a request too short to have a cached
 *      block (no affinity) to the least-loaded replica, ties taken in turn.
 *
 * Load = requests submitted to a replica and not finished (eng_engine_stats: submitted -
 * finished, counted at submit, so a burst between two steps spreads at once). A replica
 * whose backend failed ROUTER_DEAD_FAILED_STEPS steps in a row (a lost device, a
 * tensor-parallel group that failed), or that eng_router_replica_set_down took out, is out of
 * rotation until the process restarts: its keys and pinned sessions move to the others;
 * requests already queued there end with its error. A replica whose step hangs instead of
 * failing (a GPU that stopped answering) is caught by the step watchdog: one with requests
 * (load > 0) whose count of completed steps (failed ones included) has not moved for
 * ENG_ROUTER_STEP_WATCHDOG_MS (eng_router_set_step_watchdog) is out of rotation, its reason
 * "its step has not completed for N s ...", and back in as soon as a step completes. The
 * router has no thread: it looks whenever it is asked (submit, admission, stats: /metrics and
 * /v1/health ask). When every replica is out, submits fail with ENG_ERR_OVERLOAD naming why. A replica whose queue is full (ENG_ERR_OVERLOAD) or that
 * refuses as shutting down (ENG_ERR_CANCELLED) passes the request to the next least loaded;
 * the caller sees that refusal only when every replica in rotation refused.
 *
 * Thread-safety: every function may be called from any thread. Requests returned by
 * eng_router_submit are ordinary eng_request handles of the replica that runs them: read,
 * cancel and release them with the serval_engine.h functions.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serval_engine.h"

#define ENG_ROUTER_MAX_REPLICAS 64
/* The step watchdog's default: far above any one step (a prefill chunk is well under a second
 * on a GPU, seconds on a loaded CPU) and above the p2p all-reduce's own 10 s bound, so a lost
 * peer fails its step before the watchdog calls it stalled. */
#define ENG_ROUTER_STEP_WATCHDOG_MS 30000

typedef struct eng_router eng_router;

/* Creates a router over engines[0..n) (borrowed: they must outlive the router and serve the
 * same model; the caller frees them after eng_router_free). n in [1, ENG_ROUTER_MAX_REPLICAS];
 * ENG_ERR_INVALID otherwise or when the engines serve different models. *out is owned by the
 * caller: free it with eng_router_free (NULL does nothing). */
eng_status eng_router_create(eng_engine *const *engines, int n, eng_router **out, eng_err *err);
void eng_router_free(eng_router *r);

int eng_router_n_replicas(const eng_router *r);
eng_engine *eng_router_replica(const eng_router *r, int i); /* borrowed */

/* What every replica shares: the model, the prompt + output limit, the text cap (replicas
 * are made from one config; the smallest limit of any replica is reported). */
const eng_model *eng_router_model(const eng_router *r);
int32_t eng_router_max_seq_len(const eng_router *r);
size_t eng_router_max_text_bytes(const eng_router *r);

/* ENG_OK when some replica in rotation would queue a request now (eng_engine_admission_check),
 * else the refusal of the last one asked (or ENG_ERR_OVERLOAD: none in rotation). */
eng_status eng_router_admission_check(eng_router *r, eng_err *err);

/* Picks a replica (the rules above) and eng_submit's the request there; errors as
 * eng_submit's. *out is an eng_request of that replica, owned by the caller (release it with
 * eng_request_release). replica (may be NULL) receives the replica's index. */
eng_status eng_router_submit(eng_router *r, const eng_request_params *p, eng_request **out,
                             int *replica, eng_err *err);

/* The replicas' stats added up: counters and gauges summed, histograms merged, the prefix hit
 * rate and step means weighted, maxima the largest. With one replica, that engine's stats. */
void eng_router_stats_get(eng_router *r, eng_engine_stats *out);

/* Why requests went where they went, per replica. */
typedef enum eng_route_reason {
    ENG_ROUTE_AFFINITY = 0,  /* the replica its session key or prompt prefix prefers */
    ENG_ROUTE_REBALANCED,    /* had affinity, but its replica was overloaded */
    ENG_ROUTE_LEAST_LOADED,  /* no affinity (a prompt shorter than one block) */
    ENG_ROUTE_SPILLED,       /* the chosen replica's queue was full */
    ENG_ROUTE_REASONS
} eng_route_reason;

/* "affinity", "rebalanced", "least_loaded", "spilled". */
const char *eng_route_reason_str(eng_route_reason why);

typedef struct eng_router_replica_stats {
    eng_engine_stats engine;  /* that replica's own */
    int32_t load;             /* submitted, not finished */
    bool in_rotation;
    char down_reason[160];    /* why it is out of rotation ("" while in): a failing backend,
                               * set_down's reason, or the step watchdog's */
    int64_t routed[ENG_ROUTE_REASONS]; /* requests queued there, by why */
} eng_router_replica_stats;

/* Replica i's stats (i in [0, n)). */
void eng_router_replica_stats_get(eng_router *r, int i, eng_router_replica_stats *out);

/* The step watchdog's bound in ms (ENG_ROUTER_STEP_WATCHDOG_MS until set); 0 or less turns it
 * off. */
void eng_router_set_step_watchdog(eng_router *r, int64_t ms);

/* Takes replica i out of rotation (an operator's or a supervisor's decision: a device that
 * reports errors, a replica being drained); its running requests finish where they are.
 * reason (copied) is what stats and errors report. Idempotent; there is no way back in. */
void eng_router_replica_set_down(eng_router *r, int i, const char *reason);

#endif
