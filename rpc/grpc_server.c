/* grpc_server.c — the serval.v1 gRPC server: a completion queue served by a few poller threads,
 * one state machine per call, engine output pushed to calls by a pump thread that the
 * engine's notify callback wakes (pollers never wait on the engine). */
#include "grpc_server.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "grpc_handlers.h"
#include "prompt.h"
#include "serval.pb-c.h"

#define GS_REQUEST_SLOTS 16 /* grpc_server_request_call kept outstanding */

typedef enum gs_tag_kind { TAG_NEW, TAG_RECV, TAG_SEND, TAG_CLOSE, TAG_SHUTDOWN } gs_tag_kind;

typedef struct gs_tag {
    gs_call *c; /* NULL for TAG_SHUTDOWN */
    gs_tag_kind kind;
} gs_tag;

struct gs_call {
    rpc_grpc_server *s;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv_bb; /* request message, owned until parsed */
    grpc_byte_buffer *send_bb; /* message of the send in flight */
    grpc_slice status_details;
    bool has_status_details;
    int cancelled_flag; /* RECV_CLOSE_ON_SERVER output */
    gs_tag t_new, t_recv, t_send, t_close;
    atomic_int refs;          /* outstanding batches + engine request + ready-list entry */
    atomic_bool in_ready;     /* queued for the pump */
    gs_call *ready_next;
    pthread_mutex_t mu;       /* guards everything below and the engine request's reads */
    uint64_t id;
    gs_method method;
    bool counted;             /* holds an in-flight slot */
    bool md_sent, send_pending, final_sent, cancelled, logged;
    bool crlf;                /* send "\r\n" for the output's "\n" (the editor uses CRLF) */
    eng_request *req;
    bool req_done;
    eng_request_output out;   /* last read: counts and timings */
    char *text;               /* unary: whole output; stream: the chunk being sent */
    size_t text_len, text_cap;
    grpc_status_code status;  /* final status, for the log */
};

struct rpc_grpc_server {
    rpc_grpc_config cfg;
    gs_context ctx;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *pollers;
    int n_pollers;
    pthread_t pump;
    bool pump_started;
    gs_tag t_shutdown;
    atomic_bool draining;
    atomic_int inflight;      /* counted calls */
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mu;       /* guards ready list, live count, shutdown flag */
    pthread_cond_t cv_ready;  /* pump wakes */
    pthread_cond_t cv_state;  /* live count / shutdown tag changes */
    gs_call *ready_head, *ready_tail;
    bool pump_stop;
    int live;                 /* gs_call objects alive */
    bool shutdown_done;
    char model_id[128];
    prompt_builder *prompts;
};

/* ---- call lifetime ----------------------------------------------------------------------- */

static gs_call *call_new(rpc_grpc_server *s)
{
    gs_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    c->t_new = (gs_tag){c, TAG_NEW};
    c->t_recv = (gs_tag){c, TAG_RECV};
    c->t_send = (gs_tag){c, TAG_SEND};
    c->t_close = (gs_tag){c, TAG_CLOSE};
    atomic_init(&c->refs, 1); /* the request-call slot */
    atomic_init(&c->in_ready, false);
    pthread_mutex_init(&c->mu, NULL);
    c->status = GRPC_STATUS_OK;
    pthread_mutex_lock(&s->mu);
    s->live++;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void call_free(gs_call *c)
{
    rpc_grpc_server *s = c->s;
    if (c->req) eng_request_release(c->req);
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    if (c->has_status_details) grpc_slice_unref(c->status_details);
    if (c->counted) atomic_fetch_sub(&s->inflight, 1);
    pthread_mutex_destroy(&c->mu);
    free(c->text);
    free(c);
    pthread_mutex_lock(&s->mu);
    s->live--;
    pthread_cond_broadcast(&s->cv_state);
    pthread_mutex_unlock(&s->mu);
}

static void call_ref(gs_call *c) { atomic_fetch_add(&c->refs, 1); }

/* Never called with c->mu held. */
static void call_unref(gs_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

/* ---- logging ----------------------------------------------------------------------------- */

static void call_log(gs_call *c, const char *status)
{
    if (c->logged || !c->s->cfg.log_requests || c->method == GS_M_HEALTH) return;
    c->logged = true;
    char route[96];
    size_t n = GRPC_SLICE_LENGTH(c->details.method);
    if (n >= sizeof route) n = sizeof route - 1;
    memcpy(route, GRPC_SLICE_START_PTR(c->details.method), n);
    route[n] = '\0';
    fprintf(stderr,
            "serval: req %llu grpc %s prompt_tokens=%d output_tokens=%d cached_tokens=%d "
            "queue_ms=%.1f first_token_ms=%.1f total_ms=%.1f status=%s\n",
            (unsigned long long)c->id, route, c->out.n_prompt_tokens, c->out.n_output_tokens,
            c->out.n_cached_tokens, c->out.queue_ms, c->out.first_token_ms, c->out.total_ms,
            status);
}

static const char *status_name(grpc_status_code code)
{
    switch (code) {
    case GRPC_STATUS_OK: return "OK";
    case GRPC_STATUS_CANCELLED: return "CANCELLED";
    case GRPC_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case GRPC_STATUS_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case GRPC_STATUS_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case GRPC_STATUS_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case GRPC_STATUS_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case GRPC_STATUS_INTERNAL: return "INTERNAL";
    case GRPC_STATUS_UNAVAILABLE: return "UNAVAILABLE";
    case GRPC_STATUS_UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "ERROR";
    }
}

/* How a call that the client side ended went: its deadline passed, or it was cancelled. */
static const char *cancel_reason(const gs_call *c)
{
    gpr_timespec deadline = gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC);
    return gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), deadline) >= 0 ? "DEADLINE_EXCEEDED"
                                                                     : "CANCELLED";
}

/* ---- sending ----------------------------------------------------------------------------- */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return NULL;
    protobuf_c_message_pack(m, buf);
    grpc_slice sl = grpc_slice_new(buf, size, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Starts one send batch: initial metadata (first time), the message (may be NULL) and, when
 * final, the status. Only one send is ever pending on a call. Called with c->mu held. */
static void call_send(gs_call *c, const ProtobufCMessage *m, bool final, grpc_status_code code,
                      const char *details)
{
    ENG_ASSERT(!c->send_pending && !c->final_sent);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->md_sent = true;
    }
    if (m) {
        c->send_bb = pack(m);
        if (!c->send_bb) {
            m = NULL;
            final = true;
            code = GRPC_STATUS_INTERNAL;
            details = "out of memory";
        } else {
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = c->send_bb;
            n++;
        }
    }
    if (final) {
        c->status_details = grpc_slice_from_copied_string(details ? details : "");
        c->has_status_details = true;
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = code;
        ops[n].data.send_status_from_server.status_details = &c->status_details;
        n++;
        c->final_sent = true;
        c->status = code;
    }
    c->send_pending = true;
    call_ref(c);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    ENG_ASSERT(e == GRPC_CALL_OK);
}

void gs_call_finish(gs_call *c, const ProtobufCMessage *m, grpc_status_code code,
                    const char *details)
{
    call_send(c, m, true, code, details);
}

const gs_context *gs_call_context(const gs_call *c) { return &c->s->ctx; }

uint64_t gs_call_id(const gs_call *c) { return c->id; }

/* ---- engine output ----------------------------------------------------------------------- */

static void ready_push(gs_call *c)
{
    if (atomic_exchange(&c->in_ready, true)) return;
    call_ref(c);
    rpc_grpc_server *s = c->s;
    pthread_mutex_lock(&s->mu);
    c->ready_next = NULL;
    if (s->ready_tail) s->ready_tail->ready_next = c;
    else s->ready_head = c;
    s->ready_tail = c;
    pthread_cond_signal(&s->cv_ready);
    pthread_mutex_unlock(&s->mu);
}

/* Step-loop thread: only queue the call for the pump. */
static void on_notify(void *user, eng_request *r)
{
    (void)r;
    ready_push(user);
}

static bool text_reserve(gs_call *c, size_t extra)
{
    if (c->text_len + extra + 1 <= c->text_cap) return true;
    size_t cap = c->text_cap ? c->text_cap : 4096;
    while (cap < c->text_len + extra + 1) cap *= 2;
    char *t = realloc(c->text, cap);
    if (!t) return false;
    c->text = t;
    c->text_cap = cap;
    return true;
}

static Serval__V1__FinishReason finish_reason(eng_finish f)
{
    switch (f) {
    case ENG_FINISH_STOP: return SERVAL__V1__FINISH_REASON__FINISH_REASON_STOP;
    case ENG_FINISH_LENGTH: return SERVAL__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case ENG_FINISH_CANCELLED: return SERVAL__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    default: return SERVAL__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
    }
}

/* Reads what the engine has and sends it: a chunk per send for streams, the whole response at
 * the end for unary calls. Returns true when the engine request is done (the caller drops the
 * engine's reference). Called with c->mu held; never waits. */
static bool call_progress(gs_call *c)
{
    if (!c->req || c->req_done || c->send_pending) return false;
    bool stream = c->method != GS_M_COMPLETE;
    if (stream) c->text_len = 0;
    for (;;) {
        if (!text_reserve(c, 16384)) {
            eng_request_cancel(c->req);
            return false;
        }
        eng_request_output o;
        eng_request_read(c->req, c->text + c->text_len, c->text_cap - c->text_len - 1, 0, &o);
        c->text_len += o.text_len;
        c->out = o;
        if (o.done || (stream && c->text_len > 0) || o.text_len == 0) break;
    }
    c->text[c->text_len] = '\0';
    bool done = c->out.done;
    if (done) {
        /* After release returns the engine makes no more notify calls for it (and none is
         * running), so dropping the engine's reference on the call afterwards is safe. */
        c->req_done = true;
        eng_request_release(c->req);
        c->req = NULL;
    }
    if (c->cancelled) {
        if (done) call_log(c, cancel_reason(c));
        return done;
    }
    if (!done && c->text_len == 0) return false;

    Serval__V1__Usage usage = SERVAL__V1__USAGE__INIT;
    Serval__V1__Timings timings = SERVAL__V1__TIMINGS__INIT;
    usage.prompt_tokens = c->out.n_prompt_tokens;
    usage.output_tokens = c->out.n_output_tokens;
    usage.cached_tokens = c->out.n_cached_tokens;
    timings.queue_ms = c->out.queue_ms;
    timings.first_token_ms = c->out.first_token_ms;
    timings.total_ms = c->out.total_ms;
    char id[32];
    snprintf(id, sizeof id, "cmpl-%llu", (unsigned long long)c->id);
    char *text = c->text, *converted = NULL;
    if (c->crlf) {
        size_t n;
        if ((converted = prompt_lf_to_crlf(c->text, c->text_len, &n))) text = converted;
    }
    if (done && c->out.finish == ENG_FINISH_ERROR) {
        call_send(c, NULL, true, GRPC_STATUS_INTERNAL, c->out.error);
        return true;
    }
    if (stream) {
        Serval__V1__CompletionChunk ch = SERVAL__V1__COMPLETION_CHUNK__INIT;
        ch.id = id;
        ch.text = text;
        if (done) {
            ch.finish_reason = finish_reason(c->out.finish);
            ch.usage = &usage;
            ch.timings = &timings;
        }
        call_send(c, &ch.base, done, GRPC_STATUS_OK, NULL);
    } else if (done) {
        Serval__V1__CompleteResponse r = SERVAL__V1__COMPLETE_RESPONSE__INIT;
        r.id = id;
        r.text = text;
        r.finish_reason = finish_reason(c->out.finish);
        r.usage = &usage;
        r.timings = &timings;
        r.model = c->s->model_id;
        call_send(c, &r.base, true, GRPC_STATUS_OK, NULL);
    }
    free(converted);
    return done;
}

static grpc_status_code status_from_eng(eng_status st)
{
    switch (st) {
    case ENG_ERR_OVERLOAD: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case ENG_ERR_INVALID: return GRPC_STATUS_INVALID_ARGUMENT;
    case ENG_ERR_TOO_LONG: return GRPC_STATUS_INVALID_ARGUMENT;
    case ENG_ERR_UNSUPPORTED: return GRPC_STATUS_UNIMPLEMENTED;
    case ENG_ERR_CANCELLED: return GRPC_STATUS_UNAVAILABLE;
    default: return GRPC_STATUS_INTERNAL;
    }
}

void gs_call_submit(gs_call *c, eng_request_params *p, bool crlf)
{
    c->crlf = crlf;
    p->notify = on_notify;
    p->notify_user = c;
    eng_err err = {{0}};
    call_ref(c); /* the engine request's reference, dropped when it is done */
    eng_status st = eng_submit(c->s->ctx.engine, p, &c->req, &err);
    if (st != ENG_OK) {
        c->req = NULL;
        atomic_fetch_sub(&c->refs, 1); /* the call still holds the recv reference */
        gs_call_finish(c, NULL, status_from_eng(st), err.msg);
        return;
    }
    /* Output may already be readable: let the pump look (it waits for c->mu). */
    ready_push(c);
}

static void *pump_main(void *arg)
{
    rpc_grpc_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->ready_head && !s->pump_stop) pthread_cond_wait(&s->cv_ready, &s->mu);
        if (!s->ready_head) break;
        gs_call *list = s->ready_head;
        s->ready_head = s->ready_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        while (list) {
            gs_call *c = list;
            list = c->ready_next;
            atomic_store(&c->in_ready, false);
            pthread_mutex_lock(&c->mu);
            bool done = call_progress(c);
            pthread_mutex_unlock(&c->mu);
            if (done) call_unref(c); /* engine request */
            call_unref(c);           /* ready-list entry */
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- accepting and dispatching ------------------------------------------------------------ */

static void request_next(rpc_grpc_server *s)
{
    if (atomic_load(&s->draining)) return;
    gs_call *c = call_new(s);
    if (!c) return;
    grpc_call_error e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq,
                                                 s->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        c->call = NULL;
        call_unref(c);
    }
}

static bool authorized(gs_call *c)
{
    const rpc_auth *auth = c->s->ctx.auth;
    if (!auth) return true;
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "authorization") != 0) continue;
        const grpc_slice *v = &c->md.metadata[i].value;
        return rpc_auth_check_header(auth, (const char *)GRPC_SLICE_START_PTR(*v),
                                     GRPC_SLICE_LENGTH(*v));
    }
    return rpc_auth_check_header(auth, NULL, 0);
}

/* A new call arrived (c->mu not held; no other thread knows c yet). */
static void on_new_call(gs_call *c, bool ok)
{
    rpc_grpc_server *s = c->s;
    if (!ok) { /* shutting down */
        call_unref(c);
        return;
    }
    request_next(s);
    c->id = atomic_fetch_add(&s->next_id, 1);
    c->method = gs_method_lookup(c->details.method);
    pthread_mutex_lock(&c->mu);
    /* RECV_CLOSE first, so cancellation is seen whatever state the call is in. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled_flag;
    call_ref(c);
    ENG_ASSERT(grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) == GRPC_CALL_OK);

    const char *reject = NULL;
    grpc_status_code code = GRPC_STATUS_OK;
    if (c->method == GS_M_UNKNOWN) {
        code = GRPC_STATUS_UNIMPLEMENTED;
        reject = "unknown method: serval.v1.Serval has Complete, CompleteStream, Chat, Embed, "
                 "Search, Health, ListModels";
    } else if (c->method != GS_M_HEALTH && !authorized(c)) {
        code = GRPC_STATUS_UNAUTHENTICATED;
        reject = "missing or invalid bearer token (send metadata 'authorization: Bearer <token>')";
    } else if (atomic_load(&s->draining)) {
        code = GRPC_STATUS_UNAVAILABLE;
        reject = "the server is shutting down";
    } else if (c->method != GS_M_HEALTH) {
        int n = atomic_fetch_add(&s->inflight, 1);
        c->counted = true;
        if (n >= s->cfg.max_inflight) {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            reject = "too many calls in flight: retry later";
        }
    }
    if (reject) {
        call_send(c, NULL, true, code, reject);
    } else {
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_RECV_MESSAGE;
        ops[1].data.recv_message.recv_message = &c->recv_bb;
        c->md_sent = true;
        call_ref(c);
        ENG_ASSERT(grpc_call_start_batch(c->call, ops, 2, &c->t_recv, NULL) == GRPC_CALL_OK);
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c); /* the request slot */
}

static void on_recv(gs_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    if (ok && !c->cancelled && !c->final_sent) {
        if (!c->recv_bb) {
            call_send(c, NULL, true, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        } else {
            grpc_byte_buffer_reader rd;
            grpc_slice all = grpc_empty_slice();
            if (grpc_byte_buffer_reader_init(&rd, c->recv_bb)) {
                all = grpc_byte_buffer_reader_readall(&rd);
                grpc_byte_buffer_reader_destroy(&rd);
            }
            grpc_byte_buffer_destroy(c->recv_bb);
            c->recv_bb = NULL;
            gs_handle(c, c->method, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
            grpc_slice_unref(all);
        }
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void on_send(gs_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->send_pending = false;
    if (c->send_bb) {
        grpc_byte_buffer_destroy(c->send_bb);
        c->send_bb = NULL;
    }
    bool done = false;
    if (c->final_sent) call_log(c, status_name(c->status));
    else done = call_progress(c);
    pthread_mutex_unlock(&c->mu);
    if (done) call_unref(c);
    call_unref(c);
}

static void on_close(gs_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->cancelled_flag) {
        c->cancelled = true;
        if (c->req && !c->req_done) eng_request_cancel(c->req);
        else call_log(c, cancel_reason(c));
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c);
}

static void *poller_main(void *arg)
{
    rpc_grpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        gs_tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW: on_new_call(t->c, ev.success); break;
        case TAG_RECV: on_recv(t->c, ev.success); break;
        case TAG_SEND: on_send(t->c); break;
        case TAG_CLOSE: on_close(t->c); break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = true;
            pthread_cond_broadcast(&s->cv_state);
            pthread_mutex_unlock(&s->mu);
            break;
        }
    }
    return NULL;
}

/* ---- start / stop -------------------------------------------------------------------------- */

bool gs_draining(const gs_call *c) { return atomic_load(&c->s->draining); }

int gs_inflight(const gs_call *c) { return atomic_load(&c->s->inflight); }

eng_status rpc_grpc_server_start(const rpc_grpc_config *cfg, eng_engine *e, const rpc_auth *auth,
                                 rpc_grpc_server **out, int *bound_port, eng_err *err)
{
    *out = NULL;
    if (cfg->port < 0 || cfg->port > 65535)
        return eng_fail(err, ENG_ERR_INVALID, "gRPC port %d is out of range", cfg->port);
    rpc_grpc_server *s = calloc(1, sizeof *s);
    if (!s) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    if (!s->cfg.bind) s->cfg.bind = "127.0.0.1";
    if (s->cfg.n_pollers <= 0) s->cfg.n_pollers = 2;
    if (s->cfg.max_inflight <= 0) s->cfg.max_inflight = 512;
    if (s->cfg.max_message_bytes <= 0) s->cfg.max_message_bytes = 4 << 20;
    if (!s->cfg.backend_name) s->cfg.backend_name = "cpu";
    const eng_model *m = eng_engine_model(e);
    snprintf(s->model_id, sizeof s->model_id, "%s", cfg->model_id ? cfg->model_id : eng_model_name(m));
    if (s->cfg.context_length <= 0) s->cfg.context_length = eng_model_n_ctx_train(m);
    if (prompt_builder_create(m, &s->prompts, err) != ENG_OK) {
        free(s);
        return ENG_ERR_INVALID;
    }
    s->ctx = (gs_context){.engine = e, .model = m, .auth = auth, .prompts = s->prompts,
                          .model_id = s->model_id,
                          .backend = s->cfg.backend_name, .context_length = s->cfg.context_length};
    s->t_shutdown = (gs_tag){NULL, TAG_SHUTDOWN};
    atomic_init(&s->draining, false);
    atomic_init(&s->inflight, 0);
    atomic_init(&s->next_id, 1);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_ready, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv_state, &ca);
    pthread_condattr_destroy(&ca);

    grpc_init();
    grpc_arg args[1];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = s->cfg.max_message_bytes > INT32_MAX ? INT32_MAX
                                                                 : (int)s->cfg.max_message_bytes;
    grpc_channel_args chargs = {1, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    char addr[300];
    bool v6 = strchr(s->cfg.bind, ':') != NULL;
    snprintf(addr, sizeof addr, v6 ? "[%s]:%d" : "%s:%d", s->cfg.bind, s->cfg.port);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        eng_fail(err, ENG_ERR_IO, "gRPC: cannot listen on %s (address in use or not local?)",
                 addr);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
        grpc_shutdown();
        prompt_builder_free(s->prompts);
        free(s);
        return ENG_ERR_IO;
    }
    grpc_server_start(s->server);
    s->pollers = calloc((size_t)s->cfg.n_pollers, sizeof *s->pollers);
    ENG_ASSERT(s->pollers != NULL);
    ENG_ASSERT(pthread_create(&s->pump, NULL, pump_main, s) == 0);
    s->pump_started = true;
    for (int i = 0; i < s->cfg.n_pollers; i++) {
        ENG_ASSERT(pthread_create(&s->pollers[i], NULL, poller_main, s) == 0);
        s->n_pollers++;
    }
    for (int i = 0; i < GS_REQUEST_SLOTS; i++) request_next(s);
    if (bound_port) *bound_port = port;
    *out = s;
    return ENG_OK;
}

/* Waits until every call (request slots included) is gone, or the deadline passes. */
static bool wait_live_zero(rpc_grpc_server *s, double deadline_ms)
{
    pthread_mutex_lock(&s->mu);
    while (s->live > 0 && eng_clock_ms() < deadline_ms) {
        struct timespec ts = eng_clock_deadline(20);
        pthread_cond_timedwait(&s->cv_state, &s->mu, &ts);
    }
    bool ok = s->live == 0;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void rpc_grpc_server_stop_accepting(rpc_grpc_server *s)
{
    if (!s || atomic_exchange(&s->draining, true)) return;
    /* The outstanding request slots complete unsuccessfully and go away. */
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->t_shutdown);
}

bool rpc_grpc_server_drain_wait(rpc_grpc_server *s, int drain_ms)
{
    if (!s) return true;
    rpc_grpc_server_stop_accepting(s);
    double deadline = eng_clock_ms() + (drain_ms > 0 ? drain_ms : 0);
    while (atomic_load(&s->inflight) > 0 && eng_clock_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->inflight) == 0;
}

void rpc_grpc_server_drain_abort(rpc_grpc_server *s)
{
    if (s) grpc_server_cancel_all_calls(s->server);
}

void rpc_grpc_server_stop(rpc_grpc_server *s, int drain_ms)
{
    if (!s) return;
    rpc_grpc_server_stop_accepting(s);
    if (!wait_live_zero(s, eng_clock_ms() + (drain_ms > 0 ? drain_ms : 0))) {
        grpc_server_cancel_all_calls(s->server);
        /* Cancelled calls cancel their engine requests; those finish at the next step. */
        wait_live_zero(s, eng_clock_ms() + 10000);
    }
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_done) pthread_cond_wait(&s->cv_state, &s->mu);
    pthread_mutex_unlock(&s->mu);
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    for (int i = 0; i < s->n_pollers; i++) pthread_join(s->pollers[i], NULL);
    pthread_mutex_lock(&s->mu);
    s->pump_stop = true;
    pthread_cond_signal(&s->cv_ready);
    pthread_mutex_unlock(&s->mu);
    if (s->pump_started) pthread_join(s->pump, NULL);
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown();
    free(s->pollers);
    prompt_builder_free(s->prompts);
    pthread_cond_destroy(&s->cv_ready);
    pthread_cond_destroy(&s->cv_state);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
