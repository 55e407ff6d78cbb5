/* route_policy.h — the router's decisions as pure functions over hand-built states (the
 * replicas' loads and whether each is in rotation), so each rule is unit-tested without
 * engines: which replica a key prefers, when load overrides it, what a prompt's affinity key
 * is, and the session pin table. engine/serval_router.h states the rules; router.c applies
 * them to live engines. */
#ifndef SERVAL_ROUTE_POLICY_H
#define SERVAL_ROUTE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "serval_router.h"

/* Imbalance: a request leaves the replica its affinity prefers for the least-loaded one when
 * the preferred replica has at least ROUTER_IMBALANCE_REQUESTS more outstanding requests than
 * the idlest AND at least ROUTER_IMBALANCE_RATIO times its load. Both, so that neither a small
 * absolute gap at low load (3 vs 2 requests: a prefix hit is worth more than the wait) nor a
 * large ratio over a nearly idle replica (64 vs 0 right after start) moves traffic; 64
 * requests is one full batch (max_running's default) queued behind the preferred replica,
 * i.e. a whole extra step's worth of waiting, which costs more than recomputing a prompt. */
#define ROUTER_IMBALANCE_REQUESTS 64
#define ROUTER_IMBALANCE_RATIO 1.5

/* The leading prompt that defines a request's prefix affinity: 4 KV blocks (64 tokens at the
 * default block size), or 256 bytes of text (about as many tokens of code). Shorter prompts
 * cannot share a cached block worth routing for, and go to the least-loaded replica. Longer
 * windows would split requests that share a file's start but differ just after it. */
#define ROUTER_AFFINITY_BLOCKS 4
#define ROUTER_AFFINITY_TEXT_BYTES 256
#define ROUTER_AFFINITY_MIN_TEXT_BYTES 64 /* text below this is shorter than one block */

/* A replica whose backend failed this many steps in a row is out of rotation: one failure
 * can be a request's fault (out of memory for its output), three in a row are the device. */
#define ROUTER_DEAD_FAILED_STEPS 3

/* A session key's pin is forgotten after this long without a request (a developer left the
 * file); its next request is placed afresh, so long-lived sessions can rebalance. Completions
 * answer within seconds, so no older request of the session is still running by then. */
#define ROUTER_PIN_IDLE_MS 30000.0
#define ROUTER_PIN_SLOTS 4096 /* direct-mapped: a colliding key replaces the older pin */

typedef struct router_view {
    int32_t load;      /* submitted, not finished */
    bool in_rotation;
} router_view;

/* The replica in rotation that `key` prefers: rendezvous hashing (the highest hash of (key,
 * replica) wins), so taking a replica out moves only the keys it had. -1 when none is in
 * rotation. */
int router_preferred(const router_view *v, int n, uint64_t key);

/* The least-loaded replica in rotation; among equals the first at or after *turn (which
 * advances past the pick, so equal replicas take turns). -1 when none is in rotation. */
int router_least_loaded(const router_view *v, int n, unsigned *turn);

/* Whether replica `pref` is overloaded against replica `idlest` (the two thresholds above). */
bool router_imbalanced(int32_t pref_load, int32_t idlest_load);

/* Where a request goes: with has_key, the preferred replica unless imbalanced (then the
 * least loaded, *why ENG_ROUTE_REBALANCED); without, the least loaded
 * (ENG_ROUTE_LEAST_LOADED). -1 when no replica is in rotation. */
int router_pick(const router_view *v, int n, bool has_key, uint64_t key, unsigned *turn,
                eng_route_reason *why);

/* The affinity key of a request (true) or none (false): its session key mixed with its cache
 * salt when it has one (requests of one session must meet), else the hash of its leading
 * prompt (ROUTER_AFFINITY_BLOCKS blocks of block_size tokens, or ROUTER_AFFINITY_TEXT_BYTES of
 * text) mixed with its salt, when the prompt reaches one block (ROUTER_AFFINITY_MIN_TEXT_BYTES
 * of text). *is_session tells which. */
bool router_affinity_key(const eng_request_params *p, int32_t block_size, uint64_t *key,
                         bool *is_session);

/* Session pins: where each live session's requests go. */
typedef struct router_pin {
    uint64_t key;    /* 0: empty */
    int replica;
    double last_ms;  /* eng_clock_ms of its latest request */
} router_pin;

/* The replica key is pinned to, or -1 (none, idle past ROUTER_PIN_IDLE_MS at now_ms, or a
 * replica out of rotation). Refreshes a pin it returns. */
int router_pin_get(router_pin *pins, uint64_t key, double now_ms, const router_view *v, int n);
void router_pin_set(router_pin *pins, uint64_t key, int replica, double now_ms);

#endif
