/* grpc_starting.c — the placeholder `serve` runs on the gRPC port while the model loads:
 * Health answers OK with status "STARTING", gRPC's standard grpc.health.v1 Check NOT_SERVING,
 * every other call UNAVAILABLE ("the server is starting"), so load balancers and clients see *starting* instead of a refused connection.
 * One thread, one completion queue, one call answered at a time (each in one batch). */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_server.h"
#include "health.pb-c.h"
#include "serval.pb-c.h"

#define STARTING_HEALTH "/serval.v1.Serval/Health"
#define STARTING_GRPC_HEALTH "/grpc.health.v1.Health/Check"
#define STARTING_DETAILS "the server is starting: the model is loading; retry shortly"

enum { TAG_CALL = 1, TAG_DONE, TAG_SHUTDOWN };

/* One accepted call and what its batch sends; freed when the batch completes. */
typedef struct starting_call {
    int kind; /* TAG_CALL until the batch starts, then TAG_DONE */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    int cancelled;
} starting_call;

struct rpc_grpc_starting {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int shutdown_tag; /* its address is the shutdown tag */
};

static starting_call *call_request(rpc_grpc_starting *s)
{
    starting_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = TAG_CALL;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return NULL;
    }
    return c;
}

static void call_free(starting_call *c)
{
    if (c->call) grpc_call_unref(c->call);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    free(c);
}

/* m packed into a byte buffer (owned by the caller). */
static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    grpc_slice sl = grpc_slice_malloc(protobuf_c_message_get_packed_size(m));
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Health: OK + HealthResponse{status: "STARTING"}; Check: OK + NOT_SERVING; anything else:
 * UNAVAILABLE. */
static void call_answer(starting_call *c)
{
    bool health = grpc_slice_str_cmp(c->details.method, STARTING_HEALTH) == 0;
    bool check = grpc_slice_str_cmp(c->details.method, STARTING_GRPC_HEALTH) == 0;
    if (health) {
        Serval__V1__HealthResponse r = SERVAL__V1__HEALTH_RESPONSE__INIT;
        r.status = "STARTING";
        c->reply = pack(&r.base);
    } else if (check) {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        c->reply = pack(&r.base);
        health = true;
    }
    c->status_details = grpc_slice_from_static_string(health ? "" : STARTING_DETAILS);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = health ? GRPC_STATUS_OK : GRPC_STATUS_UNAVAILABLE;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->kind = TAG_DONE;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) call_free(c);
}

static void *starting_main(void *p)
{
    rpc_grpc_starting *s = p;
    bool shutting = false;
    call_request(s);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        if (ev.tag == &s->shutdown_tag) {
            shutting = true;
            grpc_completion_queue_shutdown(s->cq);
            continue;
        }
        starting_call *c = ev.tag;
        if (c->kind == TAG_CALL && ev.success && !shutting) {
            call_answer(c);
            call_request(s); /* the next one */
        } else {
            call_free(c); /* a batch done, or a request slot ended by the shutdown */
        }
    }
    return NULL;
}

eng_status rpc_grpc_starting_start(const char *bind, int port, rpc_grpc_starting **out,
                                   int *bound_port, eng_err *err)
{
    *out = NULL;
    if (port < 0 || port > 65535)
        return eng_fail(err, ENG_ERR_INVALID, "gRPC port %d is out of range", port);
    rpc_grpc_starting *s = calloc(1, sizeof *s);
    if (!s) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    grpc_init();
    grpc_arg no_reuseport = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT,
                             .value.integer = 0}; /* as the real server: one port, one server */
    grpc_channel_args chargs = {1, &no_reuseport};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    char addr[300];
    snprintf(addr, sizeof addr, strchr(bind, ':') ? "[%s]:%d" : "%s:%d", bind, port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int got = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (got <= 0) {
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
        grpc_shutdown();
        free(s);
        return eng_fail(err, ENG_ERR_IO, "gRPC: cannot listen on %s (address in use or not "
                        "local?)", addr);
    }
    grpc_server_start(s->server);
    if (pthread_create(&s->thread, NULL, starting_main, s) != 0) {
        s->thread = 0;
        rpc_grpc_starting_stop(s);
        return eng_fail(err, ENG_ERR_NOMEM, "gRPC: cannot start a thread");
    }
    if (bound_port) *bound_port = got;
    *out = s;
    return ENG_OK;
}

void rpc_grpc_starting_stop(rpc_grpc_starting *s)
{
    if (!s) return;
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->server);
    if (s->thread) {
        pthread_join(s->thread, NULL);
    } else { /* no thread: drain the queue here */
        grpc_completion_queue_shutdown(s->cq);
        grpc_event ev;
        while ((ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                NULL)).type != GRPC_QUEUE_SHUTDOWN) {
        }
    }
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    free(s);
}
