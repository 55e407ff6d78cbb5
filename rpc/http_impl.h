/* http_impl.h — private pieces of the HTTP front end shared by http_server.c (daemon,
 * auth, limits, responses), http_routes.c, http_gen.c (generation, SSE) and http_metrics.c. */
#ifndef SERVAL_RPC_HTTP_IMPL_H
#define SERVAL_RPC_HTTP_IMPL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "clock.h"
#include "http_server.h"
#include "prompt.h"

/* The routes. Each has one row in http_routes.c's table (path, methods, auth, body, handler);
 * dispatch, 404/405 answers, auth, the log line and the metrics label all come from it. */
typedef enum http_route {
    HTTP_ROUTE_V1_HEALTH = 0,
    HTTP_ROUTE_SERVER_SETTING,
    HTTP_ROUTE_V1_COMPLETIONS,
    HTTP_ROUTE_V1_EVENTS,
    HTTP_ROUTE_V1_CHAT,
    HTTP_ROUTE_V1BETA_CHAT,
    HTTP_ROUTE_V1BETA_MODELS,
    HTTP_ROUTE_V1_MODELS,
    HTTP_ROUTE_COMPLETION,   /* llama.cpp */
    HTTP_ROUTE_HEALTH,       /* llama.cpp */
    HTTP_ROUTE_TOKENIZE,
    HTTP_ROUTE_EMBEDDINGS,   /* llama.cpp's /embeddings (http_embed.c) */
    HTTP_ROUTE_V1_EMBEDDINGS, /* OpenAI's /v1/embeddings (http_embed.c) */
    HTTP_ROUTE_EMBEDDING,    /* llama.cpp's /embedding before b4356 (http_embed.c) */
    HTTP_ROUTE_V1BETA_SEARCH, /* code search over the indexed repositories */
    HTTP_ROUTE_METRICS,
    HTTP_ROUTE_STATUS_PAGE,  /* GET /: the status page (http_status.c) */
    HTTP_ROUTE_V1_STATUS,    /* GET /v1/status: the JSON behind it */
    HTTP_ROUTE_OTHER,        /* unknown paths */
    HTTP_ROUTE_COUNT
} http_route;

/* Methods a route answers (OPTIONS, the CORS preflight, is answered for every path). */
typedef enum http_method {
    HTTP_METHOD_GET = 1u << 0,
    HTTP_METHOD_POST = 1u << 1,
    HTTP_METHOD_ANY = 0xFFu      /* not checked: every method reaches the handler */
} http_method;

typedef struct http_req http_req;

/* A route's handler; `body` is the parsed JSON object for routes with json_body (borrowed:
 * the dispatcher frees it), NULL otherwise. Replies exactly once. */
typedef enum MHD_Result (*http_handler)(http_req *r, json_t *body);

enum { HTTP_BODY_NONE = -1, HTTP_BODY_SERVER = 0 };

typedef struct http_route_def {
    const char *path;        /* NULL for HTTP_ROUTE_OTHER, which no path names */
    const char *alias;       /* a second path served the same way, or NULL */
    unsigned methods;        /* http_method bits; others get 405 with an Allow header */
    unsigned auth;           /* 0: open; else a bearer token holding these scopes (auth.h's
                              * RPC_SCOPE_*: true is RPC_SCOPE_TOKEN, any valid token) and the
                              * per-token rate limit */
    bool json_body;          /* the body must be a JSON object, parsed before the handler */
    bool logged;             /* one log line per request (not probes nor scrapes) */
    long max_body;           /* body bytes taken: HTTP_BODY_NONE, HTTP_BODY_SERVER (the
                              * server's max_body_bytes) or a smaller cap */
    http_handler handler;
} http_route_def;

/* The route's row (every route has one; out-of-range values get HTTP_ROUTE_OTHER's). */
const http_route_def *http_route_get(http_route r);
/* The route a request path names (exact match on path or alias); HTTP_ROUTE_OTHER if none. */
http_route http_route_find(const char *url);
/* The metrics label: the route's path, "other" for HTTP_ROUTE_OTHER. */
const char *http_route_name(http_route r);

/* ---- metrics ---------------------------------------------------------------------------- */

#define HTTP_HIST_BUCKETS 14
#define HTTP_N_STATUS 16

typedef struct http_hist {
    uint64_t counts[HTTP_HIST_BUCKETS + 1]; /* last: +Inf */
    double sum;
    uint64_t n;
} http_hist;

typedef struct http_metrics {
    pthread_mutex_t mu;
    uint64_t requests[HTTP_ROUTE_COUNT][HTTP_N_STATUS];
    http_hist http_seconds[HTTP_ROUTE_COUNT];
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    uint64_t client_disconnects, rate_limited, timeouts;
} http_metrics;

void http_metrics_init(http_metrics *m);
void http_metrics_destroy(http_metrics *m);
void http_metrics_request(http_metrics *m, http_route r, int status, double seconds);
/* A generation finished (any way): engine timings and token counts. */
void http_metrics_generation(http_metrics *m, const eng_request_output *o, bool disconnected);
/* Prometheus text (malloc'd, caller frees). */
char *http_metrics_render(http_metrics *m, eng_router *rt, int inflight, size_t *len);

/* ---- server ----------------------------------------------------------------------------- */

typedef struct http_bucket {
    bool used;
    double tokens;
    double last_ms;     /* eng_clock_ms() of the last refill */
} http_bucket;

/* Where a connection is (http_limits.c's watchdog gives READING and IDLE a deadline). */
typedef enum http_conn_phase {
    HTTP_CONN_READING = 0,  /* request line, headers, body: body_timeout_s in all */
    HTTP_CONN_SERVING,      /* the request is in; generation limits apply instead */
    HTTP_CONN_IDLE,         /* between keep-alive requests: idle_timeout_s */
    HTTP_CONN_CUT           /* shut down by the watchdog */
} http_conn_phase;

typedef struct http_conn http_conn;

/* The JSON nesting cap of every JSON body (checked on the raw bytes before parsing). */
#define HTTP_MAX_JSON_DEPTH 64
/* One /v1/events body at most (Tabby's are under 2 KiB). */
#define HTTP_EVENT_MAX_BYTES 8192

struct http_server {
    struct MHD_Daemon *daemon;
    eng_engine *engine;         /* replica 0: the model and limits every replica shares */
    eng_router *router;         /* where requests are submitted and load is read (cfg.router,
                                 * or own_router over `engine` alone) */
    eng_router *own_router;
    rpc_auth *auth;
    prompt_builder *prompts;
    http_server_config cfg;     /* strings below are owned copies */
    char *bind_addr, *data_dir, *model_name, *version, *device;
    char cpu_info[128];
    int port;
    http_metrics metrics;
    char *cors_origins, *metrics_token; /* owned copies; NULL: none */
    char *tls_cert, *tls_key;   /* PEM text read at start; NULL: plain HTTP */
    pthread_mutex_t rl_mu;
    int n_token_slots;          /* configured tokens + 1 (anonymous / no auth) */
    http_bucket *buckets;       /* [n_token_slots], under rl_mu */
    atomic_int *tok_inflight;   /* [n_token_slots] */
    /* the limits SIGHUP may change (http_server_set_limits), read by every request */
    atomic_int per_token_cap;   /* cfg.max_inflight_per_token as it is now; < 0: not counted */
    atomic_size_t max_body;     /* cfg.max_body_bytes as it is now */
    pthread_mutex_t conns_mu;
    http_conn *conns;           /* every open connection, under conns_mu */
    pthread_t watchdog;
    bool watchdog_started;
    atomic_bool watchdog_stop;
    pthread_mutex_t events_mu;
    struct http_status *status; /* the status page's time series (http_status.c; owned) */
    atomic_int inflight;
    atomic_bool draining;       /* http_server_drain_begin: new requests get 503 */
    atomic_bool stopping;       /* drain aborted or stop: in-flight generations are cancelled */
    atomic_ullong next_id;      /* request ids for the log */
};

/* One HTTP request (MHD's con_cls). */
struct http_req {
    http_server *s;
    struct MHD_Connection *conn;
    http_route route;
    const char *method;
    const char *url;
    char *body;
    size_t len, cap;
    bool too_big;
    bool started;
    int token_idx;              /* rpc_auth_match's index (RPC_AUTH_NONE: no valid token) */
    bool token_held;            /* counted in tok_inflight until on_completed */
    double t_start_ms;          /* eng_clock_ms() when the headers arrived */
    int status;                 /* what was answered (for metrics) */
    int fd;                     /* the client socket, to notice a disconnect while generating */
    unsigned long long id;      /* for the log line */
    char path[96];              /* the URL, control bytes escaped and clipped, for the log */
    char client[64];            /* the client's address, for the log */
    bool loopback;              /* the client is on this machine (127.0.0.0/8, ::1) */
    char who[RPC_TOKEN_NAME_MAX + 1]; /* the token's name (rpc_auth_name), never the token */
    bool has_gen;               /* a non-streamed generation ran: gen is its last output */
    eng_request_output gen;
};

/* true when the client closed its end (or the socket failed). */
bool http_client_gone(int fd);
/* "cmpl-" + a random UUID, into buf (>= 48 bytes). */
void http_make_id(const char *prefix, char *buf, size_t cap);

/* Responses; each returns MHD's result and records the status. `body` is stolen. */
enum MHD_Result http_reply_json(http_req *r, int status, json_t *body);
enum MHD_Result http_reply_text(http_req *r, int status, const char *ctype, const char *text,
                                size_t len);
enum MHD_Result http_reply_error(http_req *r, int status, const char *type, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Queues a streaming (chunked, text/event-stream) response from a content reader. */
enum MHD_Result http_reply_stream(http_req *r, MHD_ContentReaderCallback reader, void *cls,
                                  MHD_ContentReaderFreeCallback free_cb);
/* Maps an engine/prompt status to an HTTP error reply. */
enum MHD_Result http_reply_eng_error(http_req *r, eng_status st, const char *msg);

/* Like http_reply_error with a Retry-After: retry_s header (429 of a token's own rate). */
enum MHD_Result http_reply_retry_after(http_req *r, int status, int retry_s, const char *type,
                                       const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
/* Like http_reply_error with a Retry-After: 1 header (429, 503). */
enum MHD_Result http_reply_retry(http_req *r, int status, const char *type, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* An invalid parameter: on OpenAI routes (openai true) 400 with OpenAI's body
 * {"error":{"message","type":"invalid_request_error","param","code":null}}; elsewhere the
 * server's 422 invalid_request_error. */
enum MHD_Result http_reply_invalid(http_req *r, bool openai, const char *param, const char *fmt,
                                   ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Queues resp (consumed) with the common headers; records the status. */
enum MHD_Result http_queue(http_req *r, int status, struct MHD_Response *resp);
/* 204 to an OPTIONS; CORS headers only for an allow-listed Origin. */
enum MHD_Result http_reply_preflight(http_req *r);
/* 503 + Connection: close while draining; health routes say {"status":"draining"}. */
enum MHD_Result http_reply_draining(http_req *r);

/* Sends an empty-bodied reply with one extra header (NULL: none): 401, 405. */
enum MHD_Result http_reply_empty(http_req *r, int status, const char *header, const char *value);

/* ---- limits (http_limits.c) ------------------------------------------------------------ */

/* Whether a JSON text nests arrays/objects at most max_depth deep (strings skipped). O(n). */
bool http_json_depth_ok(const char *p, size_t n, int max_depth);
/* Whether a Content-Type is application/json (parameters such as charset allowed). */
bool http_ctype_is_json(const char *ct);
/* The URL for a log line: control bytes, DEL, non-ASCII and backslashes as \xNN. */
void http_log_path(char *out, size_t cap, const char *url);
/* Whether an Origin is on the cors_origins allow-list (exact match). */
bool http_origin_allowed(const http_server *s, const char *origin);
/* Token bucket of a token index: true when the request may go on. */
bool http_rate_ok(http_server *s, int token_idx);
/* Counts a request against its token's in-flight cap; false (nothing counted) when full. */
bool http_token_acquire(http_server *s, int token_idx);
void http_token_release(http_server *s, int token_idx);
/* MHD callbacks (NOTIFY_CONNECTION, URI_LOG) and phase changes feeding the watchdog. */
void http_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe);
void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *c);
void http_conn_phase_set(http_server *s, struct MHD_Connection *c, http_conn_phase phase);
bool http_watchdog_start(http_server *s);
void http_watchdog_stop(http_server *s);

/* Routes (http_routes.c): called once the whole body is in r->body. Answers from the route's
 * row: 405 for a method it does not take, 400/422 for a body that is not a JSON object. */
enum MHD_Result http_dispatch(http_req *r);
/* POST /v1/embeddings (OpenAI) and POST /embeddings (llama.cpp server) (http_embed.c). */
enum MHD_Result http_route_openai_embeddings(http_req *r, json_t *req);
enum MHD_Result http_route_llama_embeddings(http_req *r, json_t *req);
enum MHD_Result http_route_llama_embedding_legacy(http_req *r, json_t *req);
/* POST /v1/events (http_events.c). */
enum MHD_Result http_route_events(http_req *r, json_t *req);
/* POST /v1beta/search (http_search.c). */
enum MHD_Result http_route_search(http_req *r, json_t *req);
/* Completion retrieval (http_search.c): with an index, retrieval on and git_url indexed,
 * appends the retrieved snippets (idx_retrieve's rule) to in->recent, which is rec with room
 * for IDX_RETRIEVE_TOP_K more; returns how many, their text held by *got (free with
 * idx_hits_free after the prompt is built). Failures only log: the completion goes on. */
size_t http_retrieve_snippets(http_server *s, prompt_completion_input *in, prompt_snippet *rec,
                              const char *filepath, const char *git_url, idx_hit **got);
/* GET / and GET /v1/status (http_status.c): admin scope, or a loopback client without a
 * token. */
enum MHD_Result http_route_status_page(http_req *r, json_t *body);
enum MHD_Result http_route_status_json(http_req *r, json_t *body);
/* The GPUs NVML reports (http_gpus.c; libnvidia-ml.so.1 opened at run time): up to cap into
 * out, the count returned (0: no library or no GPU); the driver's version into driver ("" when
 * unknown). Thread-safe. Unknown numbers are -1. */
typedef struct http_gpu {
    int index;
    char name[96];
    int64_t mem_total, mem_used; /* bytes */
    int util_pct;                /* busy time over NVML's last sample period */
} http_gpu;
int http_gpus_get(http_gpu *out, int cap, char *driver, size_t driver_cap);
/* The status page's time series: a thread samples rt (borrowed: every replica) once a second,
 * its load and its latency histograms (every front end's requests); made and freed with the
 * server, freed before the router. NULL: out of memory (the page then has no series). */
struct http_status *http_status_create(eng_router *rt);
void http_status_free(struct http_status *st);

/* ---- generation (http_gen.c) ------------------------------------------------------------ */

typedef enum http_stream_kind {
    HTTP_STREAM_NONE = 0,
    HTTP_STREAM_OPENAI_COMPLETION,
    HTTP_STREAM_OPENAI_CHAT,
    HTTP_STREAM_LLAMA
} http_stream_kind;

typedef struct http_gen {
    prompt_result prompt;       /* owned */
    const char **extra_stops;   /* client stop strings (borrowed from the JSON) */
    size_t n_extra_stops;
    eng_sampler_params sampling;
    int32_t max_tokens;
    uint64_t session_key;       /* supersede (0: none); rpc_session_key */
    int32_t deadline_ms;        /* 0: the engine's default */
} http_gen;

typedef struct http_gen_result {
    char *text;                 /* malloc'd, NUL-terminated */
    size_t len;
    eng_request_output out;     /* the final read */
} http_gen_result;

/* Runs a generation to the end while watching the client. On success fills *res (caller
 * frees res->text) and returns MHD_YES without replying; otherwise replies with the error
 * (408, 499-style close, 503, ...) and sets *replied. Takes ownership of g->prompt. */
enum MHD_Result http_gen_run(http_req *r, http_gen *g, http_gen_result *res, bool *replied);

/* Starts a generation and streams it as SSE of `kind`. Takes ownership of g->prompt. */
enum MHD_Result http_gen_stream(http_req *r, http_gen *g, http_stream_kind kind, const char *id);

/* OpenAI's finish_reason for how a generation ended, streamed or whole: "length" when it
 * stopped at max_tokens, else "stop". */
const char *http_finish_reason(eng_finish f);
/* OpenAI's usage object of a finished generation: prompt_tokens, completion_tokens and their
 * total_tokens. A new reference, NULL when out of memory (json_pack's "o" then fails). */
json_t *http_usage(const eng_request_output *o);

#endif
