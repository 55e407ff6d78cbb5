/* http_server.h — the HTTP front end (libmicrohttpd + jansson): Tabby, OpenAI and
 * llama.cpp-server compatible routes plus /metrics, over one engine. */
#ifndef SERVAL_RPC_HTTP_SERVER_H
#define SERVAL_RPC_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "serval_engine.h"
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
    int body_timeout_s;          /* a request body must arrive within this; 0: 10 */
    int request_timeout_s;       /* generation longer than this answers 408; 0: 120 */
    unsigned max_connections;    /* 0: 1024 */
    const char *model_name;      /* NULL: the model's general.name */
    const char *version;         /* Serval's version; NULL: "0.0.0" */
    const char *device;          /* "cpu" or "cuda"; NULL: "cpu" */
    int32_t default_max_tokens;  /* Tabby completions; 0: RPC_DEFAULT_COMPLETION_TOKENS (64) */
    bool log_requests;           /* one stderr line per request (health and metrics excepted) */
} http_server_config;

/* Starts the server on its own threads (one per connection). `e` and `auth` are borrowed and
 * must outlive the server. *bound_port gets the port actually bound (may be NULL). *out is
 * owned by the caller: stop it with http_server_stop. Ignores SIGPIPE process-wide. */
eng_status http_server_start(const http_server_config *cfg, eng_engine *e, rpc_auth *auth,
                             http_server **out, int *bound_port, eng_err *err);

/* Stops accepting, waits up to drain_ms for in-flight requests, cancels what is left, and
 * frees the server. NULL does nothing. */
void http_server_stop(http_server *s, int drain_ms);

#endif
