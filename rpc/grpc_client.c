/* grpc_client.c — blocking serval.v1 client over grpc C core (see grpc_client.h): one pluck
 * completion queue per call, messages handed to a callback as they arrive. */
#include "grpc_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rpc_client {
    grpc_channel *ch;
    char *auth; /* "Bearer <token>" or NULL */
};

rpc_client *rpc_client_create(const char *target, const char *token)
{
    rpc_client *cl = calloc(1, sizeof *cl);
    if (!cl) return NULL;
    grpc_init();
    /* Clients in tests send oversized messages on purpose: no client-side send limit. Each
     * client has a connection of its own (grpc shares one per target across channels by
     * default), so tests can tell per-connection limits from per-server ones. */
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = -1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    args[1].value.integer = 1;
    grpc_channel_args chargs = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    cl->ch = grpc_channel_create(target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (token) {
        size_t n = strlen(token) + 8;
        cl->auth = malloc(n);
        if (cl->auth) snprintf(cl->auth, n, "Bearer %s", token);
    }
    return cl;
}

void rpc_client_free(rpc_client *cl)
{
    if (!cl) return;
    grpc_channel_destroy(cl->ch);
    free(cl->auth);
    free(cl);
    grpc_shutdown();
}

void rpc_client_result_clear(rpc_client_result *res)
{
    free(res->last);
    memset(res, 0, sizeof *res);
}

static bool run_batch(grpc_completion_queue *cq, grpc_call *call, grpc_op *ops, size_t n,
                      void *tag)
{
    if (grpc_call_start_batch(call, ops, n, tag, NULL) != GRPC_CALL_OK) return false;
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Copies the value of metadata `key` in a into buf (NUL-terminated, clipped); buf is left as it
 * was when a has no such key. */
static void md_find(const grpc_metadata_array *a, const char *key, char *buf, size_t cap)
{
    for (size_t i = 0; i < a->count; i++) {
        if (grpc_slice_str_cmp(a->metadata[i].key, key) != 0) continue;
        size_t n = GRPC_SLICE_LENGTH(a->metadata[i].value);
        if (n >= cap) n = cap - 1;
        memcpy(buf, GRPC_SLICE_START_PTR(a->metadata[i].value), n);
        buf[n] = '\0';
        return;
    }
}

/* The end of a call: the status details into res (truncated), then frees what the call held
 * (the details, the authorization value, both metadata arrays, the call) and drains and
 * destroys its completion queue. */
static void call_end(rpc_client_result *res, grpc_slice details, grpc_slice auth,
                     grpc_metadata_array *initial, grpc_metadata_array *trailing,
                     grpc_call *call, grpc_completion_queue *cq)
{
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n >= sizeof res->details) n = sizeof res->details - 1;
    memcpy(res->details, GRPC_SLICE_START_PTR(details), n);
    res->details[n] = '\0';
    grpc_slice_unref(details);
    grpc_slice_unref(auth);
    grpc_metadata_array_destroy(initial);
    grpc_metadata_array_destroy(trailing);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

grpc_status_code rpc_client_call(rpc_client *cl, const char *method, const void *req,
                                 size_t req_len, int timeout_ms, rpc_client_msg_fn on_msg,
                                 void *user, rpc_client_result *res)
{
    memset(res, 0, sizeof *res);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(cl->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, deadline, NULL);
    grpc_slice_unref(path);

    grpc_metadata md;
    memset(&md, 0, sizeof md);
    md.key = grpc_slice_from_static_string("authorization");
    md.value = grpc_slice_from_copied_string(cl->auth ? cl->auth : "");
    grpc_slice body = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = cl->auth ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    /* May fail when the server answers at once (e.g. an oversized message): read on. */
    run_batch(cq, call, ops, 4, (void *)1);

    for (;;) {
        grpc_byte_buffer *bb = NULL;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &bb;
        if (!run_batch(cq, call, ops, 1, (void *)2) || !bb) break;
        grpc_byte_buffer_reader rd;
        grpc_slice all = grpc_empty_slice();
        if (grpc_byte_buffer_reader_init(&rd, bb)) {
            all = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
        }
        grpc_byte_buffer_destroy(bb);
        res->n_messages++;
        free(res->last);
        res->last_len = GRPC_SLICE_LENGTH(all);
        res->last = malloc(res->last_len ? res->last_len : 1);
        if (res->last) memcpy(res->last, GRPC_SLICE_START_PTR(all), res->last_len);
        bool go_on = !on_msg || on_msg(user, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
        grpc_slice_unref(all);
        if (!go_on) {
            grpc_call_cancel(call, NULL);
            break;
        }
    }

    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[0].data.recv_status_on_client.status = &code;
    ops[0].data.recv_status_on_client.status_details = &details;
    run_batch(cq, call, ops, 1, (void *)3);
    res->code = code;
    md_find(&initial, "x-request-id", res->request_id, sizeof res->request_id);
    md_find(&trailing, "x-request-id", res->request_id, sizeof res->request_id);
    md_find(&trailing, "x-serval-timings", res->timings, sizeof res->timings);
    grpc_byte_buffer_destroy(send);
    call_end(res, details, md.value, &initial, &trailing, call, cq);
    return code;
}

grpc_status_code rpc_client_call_silent(rpc_client *cl, const char *method, int timeout_ms,
                                        rpc_client_result *res)
{
    memset(res, 0, sizeof *res);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(cl->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    grpc_slice_unref(path);
    grpc_metadata md;
    memset(&md, 0, sizeof md);
    md.key = grpc_slice_from_static_string("authorization");
    md.value = grpc_slice_from_copied_string(cl->auth ? cl->auth : "");
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *bb = NULL;
    /* Status is only delivered once initial metadata and messages are being read too. */
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = cl->auth ? 1 : 0;
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[2].op = GRPC_OP_RECV_MESSAGE;
    ops[2].data.recv_message.recv_message = &bb;
    ops[3].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[3].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[3].data.recv_status_on_client.status = &code;
    ops[3].data.recv_status_on_client.status_details = &details;
    bool started = grpc_call_start_batch(call, ops, 2, (void *)1, NULL) == GRPC_CALL_OK &&
                   grpc_call_start_batch(call, ops + 2, 1, (void *)2, NULL) == GRPC_CALL_OK &&
                   grpc_call_start_batch(call, ops + 3, 1, (void *)3, NULL) == GRPC_CALL_OK;
    if (started) {
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                          gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_pluck(cq, (void *)3, until, NULL);
        if (ev.type != GRPC_OP_COMPLETE) {
            grpc_call_cancel(call, NULL);
            grpc_completion_queue_pluck(cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        for (intptr_t t = 1; t <= 2; t++)
            grpc_completion_queue_pluck(cq, (void *)t, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    res->code = code;
    call_end(res, details, md.value, &initial, &trailing, call, cq);
    return code;
}
