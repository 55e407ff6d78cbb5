/* grpc_server.h — the serval.v1 gRPC front end (grpc C core + protobuf-c) over one engine:
 * start it on an address, stop it gracefully. See proto/serval.proto for the API. */
#ifndef SERVAL_RPC_GRPC_SERVER_H
#define SERVAL_RPC_GRPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "serval_engine.h"
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
} rpc_grpc_config;

/* Starts listening and serving. `e` and `auth` are borrowed and must outlive the server
 * (auth NULL: every call passes). *out is owned by the caller: stop it with
 * rpc_grpc_server_stop. Errors: the address cannot be bound, bad config. */
eng_status rpc_grpc_server_start(const rpc_grpc_config *cfg, eng_engine *e, const rpc_auth *auth,
                                 rpc_grpc_server **out, int *bound_port, eng_err *err);

/* Stops accepting new calls at once (calls in flight go on); rpc_grpc_server_stop then
 * drains. Lets several front ends stop accepting together before any of them drains. */
void rpc_grpc_server_stop_accepting(rpc_grpc_server *s);

/* Graceful stop: no new calls are accepted, calls in flight get up to drain_ms to finish,
 * then the rest are cancelled (their engine requests too); frees the server. NULL does
 * nothing. The engine is left running: free it afterwards. */
void rpc_grpc_server_stop(rpc_grpc_server *s, int drain_ms);

#endif
