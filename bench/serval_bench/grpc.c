/* grpc.c — the Serval gRPC target: serval.v1 Complete (unary) or CompleteStream with editor
 * Segments (developer sessions) or a raw prompt (classic), cancelled when the developer types
 * on; usage (cached tokens included) and the server's timings from the reply. */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_client.h"
#include "serval.pb-c.h"

typedef struct call_state {
    bench_http_result *out;
    bool stream;
    double abort_at;
    char *text;
    size_t len;
} call_state;

static void take_usage(const Serval__V1__Usage *u, const Serval__V1__Timings *t,
                       bench_http_result *out)
{
    if (u) {
        out->prompt_tokens = u->prompt_tokens;
        out->completion_tokens = u->output_tokens;
        out->cached_tokens = u->cached_tokens;
    }
    if (t) {
        out->server_queue_ms = t->queue_ms;
        out->server_total_ms = t->total_ms;
    }
}

static bool append(call_state *c, const char *t)
{
    size_t n = strlen(t);
    char *p = realloc(c->text, c->len + n + 1);
    if (!p)
        return false;
    memcpy(p + c->len, t, n + 1);
    c->text = p;
    c->len += n;
    return true;
}

/* Each reply message: text, ids, usage; false (cancel) once the developer has typed on. */
static bool on_msg(void *user, const uint8_t *data, size_t len)
{
    call_state *c = user;
    bench_http_result *out = c->out;
    double now = bench_now_ms();
    if (out->t_first_byte < 0)
        out->t_first_byte = now;
    if (c->stream) {
        Serval__V1__CompletionChunk *m = serval__v1__completion_chunk__unpack(NULL, len, data);
        if (!m) {
            snprintf(out->error, sizeof out->error, "malformed CompletionChunk");
            return false;
        }
        if (m->text && *m->text) {
            out->t_last_token = now;
            if (out->t_first_token < 0)
                out->t_first_token = now;
            out->pieces++;
            append(c, m->text);
        }
        if (m->id && *m->id)
            snprintf(out->id, sizeof out->id, "%s", m->id);
        take_usage(m->usage, m->timings, out);
        serval__v1__completion_chunk__free_unpacked(m, NULL);
    } else {
        Serval__V1__CompleteResponse *m = serval__v1__complete_response__unpack(NULL, len, data);
        if (!m) {
            snprintf(out->error, sizeof out->error, "malformed CompleteResponse");
            return false;
        }
        out->t_first_token = now;
        append(c, m->text ? m->text : "");
        if (m->id)
            snprintf(out->id, sizeof out->id, "%s", m->id);
        take_usage(m->usage, m->timings, out);
        serval__v1__complete_response__free_unpacked(m, NULL);
    }
    return bench_now_ms() < c->abort_at;
}

void bench_grpc_complete(const bench_cfg *cfg, const char *token, void **client,
                         const bench_grpc_input *in,
                         double abort_at_ms, double deadline_ms, bench_http_result *out)
{
    memset(out, 0, sizeof *out);
    out->t_first_byte = out->t_first_token = out->t_last_token = out->t_done = -1;
    out->prompt_tokens = out->completion_tokens = out->cached_tokens = -1;
    out->server_queue_ms = out->server_total_ms = -1;
    if (!*client) {
        char target[300];
        snprintf(target, sizeof target, "%s:%d", cfg->host, cfg->port);
        *client = rpc_client_create(target, token);
        if (!*client) {
            snprintf(out->error, sizeof out->error, "cannot create the gRPC client");
            out->text = strdup("");
            return;
        }
    }
    Serval__V1__CompleteRequest req = SERVAL__V1__COMPLETE_REQUEST__INIT;
    Serval__V1__Segments seg = SERVAL__V1__SEGMENTS__INIT;
    if (in->segments) {
        seg.prefix = (char *)in->prefix;
        seg.suffix = (char *)(in->suffix ? in->suffix : "");
        seg.filepath = (char *)(in->filepath ? in->filepath : "");
        seg.git_url = (char *)(in->git_url ? in->git_url : "");
        seg.language = (char *)(in->language ? in->language : "");
        req.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS;
        req.segments = &seg;
    } else {
        req.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_PROMPT;
        req.prompt = (char *)in->prefix;
    }
    req.max_tokens = cfg->max_tokens;
    size_t n = serval__v1__complete_request__get_packed_size(&req);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        snprintf(out->error, sizeof out->error, "out of memory");
        out->text = strdup("");
        return;
    }
    serval__v1__complete_request__pack(&req, buf);
    call_state c = {out, cfg->stream, abort_at_ms, NULL, 0};
    double until = abort_at_ms < deadline_ms ? abort_at_ms : deadline_ms;
    out->t_sent = bench_now_ms();
    int timeout = (int)(until - out->t_sent);
    rpc_client_result res = {0};
    grpc_status_code code = rpc_client_call(
        *client, cfg->stream ? "/serval.v1.Serval/CompleteStream" : "/serval.v1.Serval/Complete",
        buf, n, timeout > 1 ? timeout : 1, on_msg, &c, &res);
    out->t_done = bench_now_ms();
    free(buf);
    bool past = out->t_done >= abort_at_ms - 1;
    if (code == GRPC_STATUS_OK) {
        out->status = 200;
        out->complete = true;
    } else if ((code == GRPC_STATUS_DEADLINE_EXCEEDED || code == GRPC_STATUS_CANCELLED) && past &&
               abort_at_ms <= deadline_ms) {
        out->aborted = true; /* the developer typed on: the call was cancelled */
    } else if (code == GRPC_STATUS_CANCELLED && strstr(res.details, "superseded")) {
        out->server_superseded = true; /* Serval's supersede: a newer call of this session */
    } else {
        out->status = (int)code; /* gRPC status code (HTTP 200 stands for OK) */
        if (!out->error[0])
            snprintf(out->error, sizeof out->error, "gRPC status %d: %.120s", (int)code,
                     code == GRPC_STATUS_DEADLINE_EXCEEDED ? "timed out" : res.details);
    }
    snprintf(out->request_id, sizeof out->request_id, "%s", res.request_id);
    rpc_client_result_clear(&res);
    out->text = c.text ? c.text : strdup("");
}

void bench_grpc_close(void **client)
{
    if (*client)
        rpc_client_free(*client);
    *client = NULL;
}

int bench_grpc_health(const bench_cfg *cfg)
{
    char target[300];
    snprintf(target, sizeof target, "%s:%d", cfg->host, cfg->port);
    rpc_client *cl = rpc_client_create(target, cfg->token);
    if (!cl)
        return 0;
    rpc_client_result res = {0};
    grpc_status_code code =
        rpc_client_call(cl, "/serval.v1.Serval/ListModels", "", 0, 10000, NULL, NULL, &res);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    return code == GRPC_STATUS_OK ? 200 : code == GRPC_STATUS_UNAUTHENTICATED ? 401 : 0;
}
