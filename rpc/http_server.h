/* http_server.h — the HTTP front end (libmicrohttpd + jansson): Tabby, OpenAI and
 * llama.cpp-server compatible routes plus /metrics, over one engine. */
#ifndef SERVAL_RPC_HTTP_SERVER_H
#define SERVAL_RPC_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "serval_embed.h"
#include "serval_engine.h"
#include "serval_index.h"
#include "serval_router.h"
#include "status.h"

typedef struct http_server http_server;

typedef struct http_server_config {
    const char *bind_addr;       /* IPv4 address; NULL: "127.0.0.1" */
    int port;                    /* 0: pick a free port (see *bound_port) */
    const char *data_dir;        /* events go to <data_dir>/events/YYYY-MM-DD.jsonl; NULL: "." */
    size_t max_body_bytes;       /* larger bodies get 413; 0: 1 MiB */
    double rate_limit_rps;       /* per bearer token; 0: no limit */
    double rate_limit_burst;     /* bucket size; 0: max(1, 2 * rps) */
    int idle_timeout_s;          /* a connection silent this long is closed; 0: 30 */
    int body_timeout_s;          /* request line + headers + body must arrive within this,
                                  * however steadily bytes trickle in; 0: 10 */
    int request_timeout_s;       /* generation longer than this answers 408 (a stream ends
                                  * with a timeout event); 0: 120 */
    unsigned max_connections;    /* 0: 1024 */
    const char *model_name;      /* NULL: the model's general.name */
    const char *version;         /* Serval's version; NULL: "0.0.0" */
    const char *device;          /* "cpu" or "cuda"; NULL: "cpu" */
    int32_t default_max_tokens;  /* Tabby completions; 0: RPC_DEFAULT_COMPLETION_TOKENS (64) */
    bool log_requests;           /* one stderr line per request (health and metrics excepted) */
    eng_embedder *embedder;      /* borrowed; serves /v1/embeddings and /embeddings (NULL: they
                                  * answer 501) */
    eng_router *router;          /* borrowed; replicas (serval_router.h) whose replica 0 is `e`:
                                  * completions are submitted through it, /metrics and health
                                  * report each replica. NULL: `e` alone */

    /* ---- abuse limits: no client may starve the others (0: the default given) ---- */
    unsigned per_ip_connections; /* connections one client address may hold; 0: 256 */
    int max_inflight_per_token;  /* requests one bearer token (rpc_auth_match's index) may have
                                  * in flight; more get 429 + Retry-After; 0: 256 (teams share
                                  * tokens); <0: no cap */
    size_t events_max_bytes_per_day; /* the day's events file stops growing here (429);
                                      * 0: 64 MiB */

    /* ---- exposure ---- */
    const char *cors_origins;    /* comma-separated origins allowed by CORS; NULL: none */
    const char *metrics_token;   /* a bearer token that opens /metrics only (API tokens open it
                                  * too); NULL: API tokens only */
    const char *tls_cert_file;   /* both set (PEM paths): serve HTTPS only; both NULL: HTTP */
    const char *tls_key_file;

    /* ---- repository retrieval (indexer/serval_index.h) ---- */
    idx_index *index;            /* borrowed; NULL: /v1beta/search answers 501, completions get
                                  * no retrieved snippets */
    bool no_retrieval;           /* --no-retrieval: completions get none even with an index */
} http_server_config;

/* What every route holds to, whatever a client sends: a JSON body nested deeper than 64
 * levels is refused before parsing (400); POST bodies must be Content-Type application/json
 * (415); each route has its own body cap (413; GET routes take none, /v1/events 8 KiB); text
 * meant for the model longer than eng_engine_max_text_bytes is refused before tokenizing
 * (413, or OpenAI's 400 naming the param on OpenAI routes); health without a token says only
 * {"status":"ok"}; CORS headers go only to cors_origins; error bodies name no server path.
 * With auth off nobody has an identity, so max_inflight_per_token does not apply. */

/* Starts the server on its own threads (one per connection). `e` and `auth` are borrowed and
 * must outlive the server. *bound_port gets the port actually bound (may be NULL). *out is
 * owned by the caller: stop it with http_server_stop. Ignores SIGPIPE process-wide. */
eng_status http_server_start(const http_server_config *cfg, eng_engine *e, rpc_auth *auth,
                             http_server **out, int *bound_port, eng_err *err);

/* Starts draining at once: every new request gets 503 with a JSON error and
 * "Connection: close"; /v1/health and /health answer 503 {"status":"draining"} so load
 * balancers stop sending; requests in flight (SSE streams too) go on. Idempotent; NULL does
 * nothing. Thread-safe. */
void http_server_drain_begin(http_server *s);

/* Waits until no request is in flight or drain_ms passes (begins the drain if it was not).
 * Returns whether every request finished. Returns at once (false unless idle) once
 * http_server_drain_abort was called. Thread-safe. */
bool http_server_drain_wait(http_server *s, int drain_ms);

/* Ends a drain now, from any thread (e.g. on a second signal): a drain_wait in progress
 * returns at once and in-flight generations are cancelled (blocking ones close their
 * connection, streams end). Frees nothing: http_server_stop still must be called. */
void http_server_drain_abort(http_server *s);

/* Graceful stop, safe in any state (never started draining, draining, aborted): drain_begin,
 * drain_wait(drain_ms), then cancels what is left and frees the server. Every engine request
 * is cancelled and released by the connection thread that owns it before that thread ends,
 * and MHD joins those threads before anything is freed, so the engine never points at freed
 * memory; never hangs on a slow engine step beyond that step. NULL does nothing. The engine
 * is left running: free it afterwards. */
void http_server_stop(http_server *s, int drain_ms);

/* Changes the per-token request rate and burst (as rate_limit_rps, rate_limit_burst) of a
 * running server (SIGHUP); buckets keep what they hold. Thread-safe. */
void http_server_set_rate(http_server *s, double rps, double burst);

/* Changes max_inflight_per_token (0: the default) and max_body_bytes (0: the default) of a
 * running server (SIGHUP), for requests that arrive from now on. Whether requests are counted
 * per token at all (max_inflight_per_token < 0: not) is fixed at start: a change between the
 * two is ignored. Thread-safe. */
void http_server_set_limits(http_server *s, int max_inflight_per_token, size_t max_body_bytes);

/* While the model loads, `serve` holds the HTTP port with a placeholder that answers every
 * request 503 (health probes: {"status":"starting"}, other routes an error of type
 * "starting"), so load balancers and systemd see *starting* rather than a refused
 * connection. Stop it, then start the real server on *bound_port (the port it took, for
 * port 0). No TLS: with --tls-cert nothing listens until the model is loaded. */
typedef struct http_starting http_starting;
eng_status http_starting_start(const char *bind_addr, int port, http_starting **out,
                               int *bound_port, eng_err *err);
void http_starting_stop(http_starting *s);

#endif
