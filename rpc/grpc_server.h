/* grpc_server.h — the serval.v1 gRPC front end (grpc C core + protobuf-c) over one engine:
 * start it on an address, stop it gracefully. See proto/serval.proto for the API. */
#ifndef SERVAL_RPC_GRPC_SERVER_H
#define SERVAL_RPC_GRPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "serval_engine.h"
#include "serval_index.h"
#include "serval_router.h"
#include "status.h"

typedef struct rpc_grpc_server rpc_grpc_server;

typedef struct rpc_grpc_config {
    const char *bind;          /* address to listen on, e.g. "127.0.0.1" or "::1"; NULL: 127.0.0.1 */
    int port;                  /* 0: pick a free port (reported through *bound_port) */
    int n_pollers;             /* completion-queue threads; 0: 2 */
    int max_inflight;          /* calls served at once (Health excluded); more get
                                * RESOURCE_EXHAUSTED; 0: 512 */
    int64_t max_message_bytes; /* largest request message; larger get RESOURCE_EXHAUSTED; 0: 4 MiB */
    const char *model_id;      /* the served model's name (ListModels, `model` fields);
                                * NULL: general.name from the GGUF */
    const char *backend_name;  /* "cpu" or "cuda", reported by Health; NULL: "cpu" */
    int32_t context_length;    /* the engine's prompt + output limit, for ListModels; 0: the
                                * model's training context */
    bool log_requests;         /* one line per finished call on stderr */
    struct eng_embedder *embedder; /* borrowed; serves Embed (NULL: Embed is UNIMPLEMENTED) */
    eng_router *router;        /* borrowed; replicas (serval_router.h) whose replica 0 is `e`:
                                * calls are submitted through it, Health reports their sum.
                                * NULL: `e` alone */

    /* ---- abuse limits: no client may starve the others (0: the default given) ---- */
    int request_message_timeout_ms; /* call start to its request message; slower calls are
                                     * cancelled (DEADLINE_EXCEEDED); 0: 10000; <0: none */
    int max_streams_per_connection; /* HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; 0: 64 */
    int max_inflight_per_token;     /* calls one bearer token may have in flight (keyed on
                                     * rpc_auth_match's index; none with auth off); more get
                                     * RESOURCE_EXHAUSTED; 0: 16; <0: no per-token cap */
    int generation_timeout_ms;      /* server-side limit on one generation, like HTTP's
                                     * --http-timeout (DEADLINE_EXCEEDED); 0: none */
    int keepalive_time_ms;          /* server pings an idle connection this often; 0: 2 h */
    int keepalive_timeout_ms;       /* ...and drops it when the ack is this late; 0: 20000 */
    int min_recv_ping_interval_ms;  /* client pings closer than this are strikes; 0: 60000 */
    int max_ping_strikes;           /* strikes before GOAWAY; 0: 2 */
    int max_connection_idle_ms;     /* close connections idle this long; 0: 30 min; <0: never */
    int max_connection_age_ms;      /* GOAWAY connections older than this; 0 or <0: never */
    int max_connection_age_grace_ms;/* then their calls get this long; 0: 30000 */

    /* ---- TLS: both set (PEM file paths) serve TLS only; both NULL serve plaintext ---- */
    const char *tls_cert_file;      /* certificate chain, PEM */
    const char *tls_key_file;       /* its private key, PEM */

    /* ---- repository retrieval (indexer/serval_index.h) ---- */
    idx_index *index;               /* borrowed; NULL: Search answers UNIMPLEMENTED */
    bool no_retrieval;              /* completions get no retrieved snippets */
} rpc_grpc_config;

/* Starts listening and serving. `e` and `auth` are borrowed and must outlive the server
 * (auth NULL: every call passes). *out is owned by the caller: stop it with
 * rpc_grpc_server_stop. Threads: n_pollers pollers (only move completion-queue events), 2
 * workers (parse, tokenize, submit), one pump (engine output, timeouts). Errors: the address
 * cannot be bound, bad config, a TLS file missing, unreadable or not PEM (named). */
eng_status rpc_grpc_server_start(const rpc_grpc_config *cfg, eng_engine *e, const rpc_auth *auth,
                                 rpc_grpc_server **out, int *bound_port, eng_err *err);

/* Starts draining at once: Health reports "DRAINING", every other new call gets UNAVAILABLE,
 * calls in flight go on. Lets several front ends stop accepting together before any of them
 * drains. Idempotent; NULL does nothing. */
void rpc_grpc_server_stop_accepting(rpc_grpc_server *s);

/* Changes max_inflight_per_token (0: the default, < 0: off) and generation_timeout_ms (<= 0:
 * none) of a running server (SIGHUP), for calls counted from now on; a call keeps the slot it
 * holds. Thread-safe. */
void rpc_grpc_server_set_limits(rpc_grpc_server *s, int max_inflight_per_token,
                                int generation_timeout_ms);

/* Waits until no call is in flight or drain_ms passes (calls stop_accepting first if it was
 * not). Returns whether every call finished. Returns at once (false unless idle) once
 * rpc_grpc_server_drain_abort was called. */
bool rpc_grpc_server_drain_wait(rpc_grpc_server *s, int drain_ms);

/* Ends a drain now, from any thread (e.g. a second SIGINT handled by the main loop): a
 * drain_wait in progress returns at once and calls in flight are cancelled (their engine
 * requests too). Does not free anything; rpc_grpc_server_stop still must be called. */
void rpc_grpc_server_drain_abort(rpc_grpc_server *s);

/* Graceful stop: stop_accepting, drain_wait(drain_ms), then cancels what is left (engine
 * requests cancelled and released before their calls are freed, so the engine never points
 * at a freed call) and frees the server. Never waits for an engine step: release is the
 * sync point. Should grpc still hold a call 10 s after the cancel, the server is left
 * allocated (and says so on stderr) rather than freed under it. NULL does nothing. The engine
 * is left running: free it afterwards. */
void rpc_grpc_server_stop(rpc_grpc_server *s, int drain_ms);


/* While the model loads, `serve` holds the gRPC port with a placeholder (rpc/grpc_starting.c):
 * Health answers OK with status "STARTING", every other call UNAVAILABLE "the server is
 * starting", so load balancers and clients see *starting* rather than a refused connection.
 * Stop it, then start the real server on *bound_port (the port it took, for port 0). No TLS,
 * like HTTP's placeholder: with --tls-cert nothing listens until the model is loaded. */
typedef struct rpc_grpc_starting rpc_grpc_starting;
eng_status rpc_grpc_starting_start(const char *bind, int port, rpc_grpc_starting **out,
                                   int *bound_port, eng_err *err);
/* Stops answering and frees it (calls in progress are cancelled). NULL does nothing. */
void rpc_grpc_starting_stop(rpc_grpc_starting *s);

#endif
