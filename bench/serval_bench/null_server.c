/* null_server.c — `serval-bench null-server`: a gRPC server of serval.v1 that answers every
 * Complete, CompleteStream and ListModels at once with a fixed completion, no model behind it.
 * Run against it, serval-bench's grpc target measures the client's own overhead: the latency
 * floor it adds (loopback, HTTP/2, protobuf, its threads) and its CPU per request. One thread
 * serves every call from one completion queue. */
#include "bench.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serval.pb-c.h"

static volatile sig_atomic_t null_stop;

static void on_signal(int sig)
{
    (void)sig;
    null_stop = 1;
}

/* One call: waiting for a call (NEW), its message read (READ), the answer sent (SENT). */
typedef enum null_stage { NULL_NEW, NULL_READ, NULL_SENT } null_stage;
typedef struct null_call {
    null_stage stage;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv, *send;
    grpc_slice status_details;
    int cancelled;
} null_call;

static null_call *call_new(grpc_server *srv, grpc_completion_queue *cq)
{
    null_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(srv, &c->call, &c->details, &c->md, cq, cq, c) != GRPC_CALL_OK) {
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return NULL;
    }
    return c;
}

static void call_free(null_call *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    if (c->send)
        grpc_byte_buffer_destroy(c->send);
    grpc_slice_unref(c->status_details);
    free(c);
}

/* The answer to the call's method: the fixed completion in its message type. */
static grpc_byte_buffer *answer(const null_call *c, const char *text)
{
    Serval__V1__Usage usage = SERVAL__V1__USAGE__INIT;
    usage.prompt_tokens = 1;
    usage.output_tokens = 1;
    Serval__V1__CompleteResponse r = SERVAL__V1__COMPLETE_RESPONSE__INIT;
    Serval__V1__CompletionChunk ch = SERVAL__V1__COMPLETION_CHUNK__INIT;
    Serval__V1__ListModelsResponse lm = SERVAL__V1__LIST_MODELS_RESPONSE__INIT;
    const ProtobufCMessage *m;
    if (grpc_slice_str_cmp(c->details.method, "/serval.v1.Serval/CompleteStream") == 0) {
        ch.id = "cmpl-null";
        ch.text = (char *)text;
        ch.finish_reason = SERVAL__V1__FINISH_REASON__FINISH_REASON_LENGTH;
        ch.usage = &usage;
        m = &ch.base;
    } else if (grpc_slice_str_cmp(c->details.method, "/serval.v1.Serval/Complete") == 0) {
        r.id = "cmpl-null";
        r.text = (char *)text;
        r.finish_reason = SERVAL__V1__FINISH_REASON__FINISH_REASON_LENGTH;
        r.usage = &usage;
        r.model = "null";
        m = &r.base;
    } else {
        m = &lm.base; /* ListModels, serval-bench's health check; anything else likewise */
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    protobuf_c_message_pack(m, buf);
    grpc_slice sl = grpc_slice_new(buf, n, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Moves a call one stage on after its batch completed; false when it is finished (freed). */
static bool call_step(null_call *c, grpc_server *srv, grpc_completion_queue *cq, bool ok,
                      const char *text)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    switch (c->stage) {
    case NULL_NEW:
        if (!ok) {
            call_free(c);
            return false;
        }
        call_new(srv, cq); /* the next call's slot */
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_RECV_MESSAGE;
        ops[1].data.recv_message.recv_message = &c->recv;
        c->stage = NULL_READ;
        if (grpc_call_start_batch(c->call, ops, 2, c, NULL) != GRPC_CALL_OK) {
            call_free(c);
            return false;
        }
        return true;
    case NULL_READ:
        c->send = ok ? answer(c, text) : NULL;
        c->status_details = grpc_slice_from_static_string("");
        size_t n = 0;
        if (c->send) {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = c->send;
        }
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = c->send ? GRPC_STATUS_OK
                                                             : GRPC_STATUS_INTERNAL;
        ops[n++].data.send_status_from_server.status_details = &c->status_details;
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
        c->stage = NULL_SENT;
        if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
            call_free(c);
            return false;
        }
        return true;
    case NULL_SENT:
    default:
        call_free(c);
        return false;
    }
}

int bench_null_server(int argc, char **argv)
{
    int port = -1;
    const char *text = " return a + b";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--grpc-port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--text") == 0 && i + 1 < argc)
            text = argv[++i];
        else {
            fprintf(stderr, "serval-bench null-server: unknown argument %s (usage: serval-bench "
                            "null-server --grpc-port N [--text T])\n", argv[i]);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        fprintf(stderr, "serval-bench null-server: --grpc-port N (0-65535; 0: a free one) is "
                        "required\n");
        return 2;
    }
    grpc_init();
    grpc_server *srv = grpc_server_create(NULL, NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv, cq, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    int bound = grpc_server_add_http2_port(srv, addr, cr);
    grpc_server_credentials_release(cr);
    if (bound <= 0 || (port && bound != port)) {
        fprintf(stderr, "serval-bench null-server: cannot listen on %s\n", addr);
        grpc_server_destroy(srv);
        grpc_completion_queue_destroy(cq);
        grpc_shutdown();
        return 1;
    }
    grpc_server_start(srv);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    for (int i = 0; i < 64; i++) /* calls accepted at once */
        call_new(srv, cq);
    fprintf(stderr, "serval-bench null-server: grpc listening on 127.0.0.1:%d\n", bound);
    bool shutting = false;
    for (;;) {
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(200, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (null_stop && !shutting) {
            shutting = true;
            grpc_server_shutdown_and_notify(srv, cq, NULL);
            grpc_server_cancel_all_calls(srv);
        }
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (!ev.tag) { /* the shutdown notification */
            grpc_completion_queue_shutdown(cq);
            continue;
        }
        call_step(ev.tag, srv, cq, ev.success, text);
    }
    grpc_server_destroy(srv);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return 0;
}
