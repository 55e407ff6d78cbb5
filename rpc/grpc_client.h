/* grpc_client.h — a small blocking gRPC client (grpc C core) for serval.v1, used by the tests
 * and bench/bench_grpc.c: one call at a time per thread, raw protobuf bytes in and out. */
#ifndef SERVAL_RPC_GRPC_CLIENT_H
#define SERVAL_RPC_GRPC_CLIENT_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rpc_client rpc_client;

/* Connects (lazily) to target ("127.0.0.1:50051"); token NULL: no authorization metadata.
 * Thread-safe: many threads may call through one client. Free with rpc_client_free. */
rpc_client *rpc_client_create(const char *target, const char *token);
void rpc_client_free(rpc_client *cl);

/* Called for each received message (bytes valid during the call); return false to cancel
 * the call (its status then reads CANCELLED). */
typedef bool (*rpc_client_msg_fn)(void *user, const uint8_t *data, size_t len);

typedef struct rpc_client_result {
    grpc_status_code code;
    char details[512];  /* status message */
    size_t n_messages;  /* messages received */
    uint8_t *last;      /* the last message's bytes (malloc'd, owned by the result) */
    size_t last_len;
    char request_id[64]; /* the server's x-request-id (initial or trailing metadata), or "" */
    char timings[160];   /* its x-serval-timings trailer ("queue;dur=1.0, ttft;..."), or "" */
} rpc_client_result;

/* Calls `method` ("/serval.v1.Serval/Complete") with one request message of raw bytes
 * (they need not be valid protobuf) and reads every response message until the status.
 * timeout_ms <= 0: no deadline. Returns the status code (also in res). */
grpc_status_code rpc_client_call(rpc_client *cl, const char *method, const void *req,
                                 size_t req_len, int timeout_ms, rpc_client_msg_fn on_msg,
                                 void *user, rpc_client_result *res);

/* Opens a call to `method`, sends its metadata and then nothing (no message, no half-close),
 * and waits up to timeout_ms for the server's status (a client that tries to hold a call open:
 * tests of request_message_timeout_ms). Returns the status code (also in res); after
 * timeout_ms without a status the call is cancelled and the code reads CANCELLED. */
grpc_status_code rpc_client_call_silent(rpc_client *cl, const char *method, int timeout_ms,
                                        rpc_client_result *res);

void rpc_client_result_clear(rpc_client_result *res);

#endif
