/* grpc_server.c — the serval.v1 gRPC call machinery: a completion queue served by a few poller
 * threads that only move events, one state machine per call, request parsing and tokenizing on
 * a small worker pool, engine output pushed to calls by a pump thread that the engine's notify
 * callback wakes (pollers never wait on the engine or a tokenizer). Start, limits, drain and
 * stop: grpc_lifecycle.c. */
#include "grpc_impl.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "prompt.h"
#include "rpc_request.h"
#include "serval.pb-c.h"

/* ---- call lifetime ----------------------------------------------------------------------- */

static gs_call *call_new(rpc_grpc_server *s)
{
    gs_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->s = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    c->t_new = (gs_tag){.c = c, .kind = TAG_NEW};
    c->t_recv = (gs_tag){.c = c, .kind = TAG_RECV};
    c->t_send = (gs_tag){.c = c, .kind = TAG_SEND};
    c->t_close = (gs_tag){.c = c, .kind = TAG_CLOSE};
    atomic_init(&c->refs, 1); /* the request-call slot */
    atomic_init(&c->in_ready, false);
    pthread_mutex_init(&c->mu, NULL);
    c->status = GRPC_STATUS_OK;
    c->token = RPC_AUTH_NONE;
    atomic_init(&c->phase, GS_PHASE_SLOT);
    pthread_mutex_lock(&s->mu);
    s->live++;
    c->live_next = s->live_head;
    if (s->live_head) s->live_head->live_prev = c;
    s->live_head = c;
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
    for (size_t i = 0; i < c->n_md_out; i++) {
        grpc_slice_unref(c->md_out[i].key);
        grpc_slice_unref(c->md_out[i].value);
    }
    if (c->counted) atomic_fetch_sub(&s->inflight, 1);
    if (c->token_counted) atomic_fetch_sub(&s->token_inflight[c->token], 1);
    /* Unlinked last: a scan holding s->mu may still look at c (and skip it: refs are 0). */
    pthread_mutex_lock(&s->mu);
    if (c->live_prev) c->live_prev->live_next = c->live_next;
    else s->live_head = c->live_next;
    if (c->live_next) c->live_next->live_prev = c->live_prev;
    s->live--;
    pthread_cond_broadcast(&s->cv_state);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&c->mu);
    free(c->text);
    free(c);
}

static void call_ref(gs_call *c) { atomic_fetch_add(&c->refs, 1); }

/* Never called with c->mu held. */
static void call_unref(gs_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

void gs_call_unref(gs_call *c) { call_unref(c); }

gs_call **gs_live_calls(rpc_grpc_server *s, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&s->mu);
    gs_call **v = malloc((size_t)(s->live > 0 ? s->live : 1) * sizeof *v);
    for (gs_call *c = s->live_head; v && c; c = c->live_next) {
        if (atomic_load(&c->phase) == GS_PHASE_SLOT) continue;
        int r = atomic_load(&c->refs);
        while (r > 0 && !atomic_compare_exchange_weak(&c->refs, &r, r + 1)) {
        }
        if (r > 0) v[(*n)++] = c;
    }
    pthread_mutex_unlock(&s->mu);
    return v;
}

/* ---- logging ----------------------------------------------------------------------------- */

static void call_log(gs_call *c, const char *status)
{
    if (c->logged || !c->s->cfg.log_requests || gs_method_is_health(c->method)) return;
    c->logged = true;
    char route[96];
    size_t n = GRPC_SLICE_LENGTH(c->details.method);
    if (n >= sizeof route) n = sizeof route - 1;
    memcpy(route, GRPC_SLICE_START_PTR(c->details.method), n);
    route[n] = '\0';
    char head[160], who[RPC_TOKEN_NAME_MAX + 1];
    snprintf(head, sizeof head, "req %llu grpc %s", (unsigned long long)c->id, route);
    rpc_auth_name(c->s->ctx.auth, c->token, who, sizeof who);
    char *peer = c->call ? grpc_call_get_peer(c->call) : NULL;
    rpc_log_kv kv[] = {
        RPC_LOG_JINT("request_id", c->id), RPC_LOG_JSTR("proto", "grpc"),
        RPC_LOG_JSTR("rpc", route), RPC_LOG_INT("prompt_tokens", c->out.n_prompt_tokens),
        RPC_LOG_INT("output_tokens", c->out.n_output_tokens),
        RPC_LOG_INT("cached_tokens", c->out.n_cached_tokens),
        RPC_LOG_NUM("queue_ms", c->out.queue_ms), RPC_LOG_NUM("first_token_ms", c->out.first_token_ms),
        RPC_LOG_NUM("total_ms", c->out.total_ms), RPC_LOG_STR("status", status),
        RPC_LOG_STR("token", who), RPC_LOG_STR("client", peer)};
    rpc_log_event(RPC_LOG_INFO, "request", head, kv, sizeof kv / sizeof kv[0]);
    gpr_free(peer);
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
    if (atomic_load(&c->phase) == GS_PHASE_TIMED_OUT) return "DEADLINE_EXCEEDED";
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

/* Appends key: value to the call's outgoing metadata (md_out); false when it is full. */
static bool md_out_add(gs_call *c, const char *key, const char *value)
{
    if (c->n_md_out >= sizeof c->md_out / sizeof c->md_out[0]) return false;
    grpc_metadata *m = &c->md_out[c->n_md_out++];
    memset(m, 0, sizeof *m);
    m->key = grpc_slice_from_static_string(key);
    m->value = grpc_slice_from_copied_string(value);
    return true;
}

/* Starts one send batch: initial metadata (first time), the message (may be NULL) and, when
 * final, the status. Only one send is ever pending on a call. Called with c->mu held.
 * Initial metadata carries x-request-id ("grpc-<n>", the log line's "req <n> grpc"); the
 * trailers repeat it and, once a generation ran, x-serval-timings (rpc_server_timing). */
static void call_send(gs_call *c, const ProtobufCMessage *m, bool final, grpc_status_code code,
                      const char *details)
{
    ENG_ASSERT(!c->send_pending && !c->final_sent);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    char rid[32];
    rpc_request_id(rid, sizeof rid, "grpc", (unsigned long long)c->id);
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        size_t first = c->n_md_out;
        if (md_out_add(c, "x-request-id", rid)) {
            ops[n].data.send_initial_metadata.count = 1;
            ops[n].data.send_initial_metadata.metadata = &c->md_out[first];
        }
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
        size_t first = c->n_md_out, count = 0;
        count += md_out_add(c, "x-request-id", rid);
        if (c->out.total_ms > 0 || c->out.queue_ms > 0) {
            char timing[160];
            rpc_server_timing(timing, sizeof timing, &c->out);
            count += md_out_add(c, "x-serval-timings", timing);
        }
        ops[n].data.send_status_from_server.trailing_metadata_count = count;
        ops[n].data.send_status_from_server.trailing_metadata = count ? &c->md_out[first] : NULL;
        n++;
        c->final_sent = true;
        c->status = code;
    }
    c->send_pending = true;
    call_ref(c);
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, gs_tag_arm(&c->t_send), NULL);
    ENG_ASSERT(e == GRPC_CALL_OK);
}

void gs_call_finish(gs_call *c, const ProtobufCMessage *m, grpc_status_code code,
                    const char *details)
{
    pthread_mutex_lock(&c->mu);
    if (!c->final_sent && !c->send_pending) call_send(c, m, true, code, details);
    pthread_mutex_unlock(&c->mu);
}

const gs_context *gs_call_context(const gs_call *c) { return &c->s->ctx; }

bool gs_call_authorized(const gs_call *c) { return c->token != RPC_AUTH_NONE; }

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
    if (done && c->gen_timed_out && c->out.finish == ENG_FINISH_CANCELLED) {
        /* As when the client's own deadline passes: what was streamed stays sent, no more. */
        char msg[128];
        snprintf(msg, sizeof msg, "generation took longer than the server's limit of %d ms",
                 atomic_load(&c->s->gen_timeout_ms));
        call_send(c, NULL, true, GRPC_STATUS_DEADLINE_EXCEEDED, msg);
        return true;
    }
    if (!done && c->text_len == 0) return false;
    if (done && c->out.finish == ENG_FINISH_SUPERSEDED) {
        /* What was streamed stays sent; the caller learns why it ends. */
        call_send(c, NULL, true, GRPC_STATUS_CANCELLED,
                  "superseded by a newer request with the same session key");
        return true;
    }

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
    rpc_grpc_server *s = c->s;
    pthread_mutex_lock(&c->mu);
    bool gone = c->cancelled || c->final_sent || atomic_load(&s->aborted);
    c->crlf = crlf;
    pthread_mutex_unlock(&c->mu);
    if (gone) return; /* the call ends through its close */
    p->notify = on_notify;
    p->notify_user = c;
    p->cache_salt = rpc_auth_cache_salt(s->ctx.auth, c->token);
    if (p->session_key) { /* per token: one user never supersedes another's requests */
        const char *k = (const char *)&p->session_key;
        size_t klen = sizeof p->session_key;
        p->session_key = rpc_session_key(c->token, &k, &klen, 1);
    }
    eng_err err = {{0}};
    eng_request *r = NULL;
    call_ref(c); /* the engine request's reference, dropped when it is done */
    /* Tokenizes here, on a worker, without the call's lock (a poller may want it). Output
     * notifications before c->req is set find nothing to read; the push below looks again. */
    eng_status st = eng_router_submit(s->ctx.router, p, &r, NULL, &err);
    pthread_mutex_lock(&c->mu);
    if (st != ENG_OK) {
        atomic_fetch_sub(&c->refs, 1); /* the caller still holds its reference */
        if (!c->final_sent) call_send(c, NULL, true, status_from_eng(st), err.msg);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->req = r;
    c->t_gen = eng_clock_ms();
    atomic_store(&c->phase, GS_PHASE_GENERATING);
    if (c->cancelled || atomic_load(&s->aborted)) eng_request_cancel(r);
    pthread_mutex_unlock(&c->mu);
    ready_push(c);
}

void gs_call_gen_timeout(gs_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->req && !c->req_done) {
        c->gen_timed_out = true;
        eng_request_cancel(c->req);
    }
    pthread_mutex_unlock(&c->mu);
}

void gs_call_abort(gs_call *c, bool release)
{
    bool drop = false;
    pthread_mutex_lock(&c->mu);
    if (!c->final_sent)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE,
                                     "the server is shutting down", NULL);
    if (c->req && !c->req_done) {
        if (release) {
            /* After release the engine never calls on_notify for c again (nor is it running). */
            eng_request_release(c->req);
            c->req = NULL;
            c->req_done = true;
            drop = true;
        } else {
            eng_request_cancel(c->req);
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (drop) call_unref(c); /* the engine request's reference */
}

void *gs_pump_main(void *arg)
{
    rpc_grpc_server *s = arg;
    double next_watch = eng_clock_ms() + 100;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->ready_head && !s->pump_stop && eng_clock_ms() < next_watch) {
            struct timespec ts = eng_clock_deadline(100);
            pthread_cond_timedwait(&s->cv_ready, &s->mu, &ts);
        }
        if (eng_clock_ms() >= next_watch) {
            pthread_mutex_unlock(&s->mu);
            gs_watchdog(s);
            next_watch = eng_clock_ms() + 100;
            pthread_mutex_lock(&s->mu);
            continue;
        }
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

void gs_request_next(rpc_grpc_server *s)
{
    if (atomic_load(&s->shut_down)) return;
    gs_call *c = call_new(s);
    if (!c) return;
    grpc_call_error e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq,
                                                 s->cq, gs_tag_arm(&c->t_new));
    if (e != GRPC_CALL_OK) {
        c->call = NULL;
        call_unref(c);
    }
}

/* Which configured token the call carries (rpc_auth_match). */
static int call_token(gs_call *c)
{
    const rpc_auth *auth = c->s->ctx.auth;
    if (!auth) return RPC_AUTH_ANONYMOUS;
    for (size_t i = 0; i < c->md.count; i++) {
        if (grpc_slice_str_cmp(c->md.metadata[i].key, "authorization") != 0) continue;
        const grpc_slice *v = &c->md.metadata[i].value;
        return rpc_auth_match(auth, (const char *)GRPC_SLICE_START_PTR(*v),
                              GRPC_SLICE_LENGTH(*v));
    }
    return rpc_auth_match(auth, NULL, 0);
}

/* The scope (auth.h) each method needs; Health is open and never asked. */
static unsigned method_scope(gs_method m)
{
    switch (m) {
    case GS_M_COMPLETE: case GS_M_COMPLETE_STREAM: return RPC_SCOPE_COMPLETION;
    case GS_M_CHAT: return RPC_SCOPE_CHAT;
    case GS_M_EMBED: case GS_M_SEARCH: return RPC_SCOPE_EMBEDDINGS;
    default: return RPC_SCOPE_TOKEN;
    }
}

/* A new call arrived (c->mu not held; no other thread knows c yet). */
static void on_new_call(gs_call *c, bool ok)
{
    rpc_grpc_server *s = c->s;
    if (!ok) { /* shutting down */
        call_unref(c);
        return;
    }
    gs_request_next(s);
    c->id = atomic_fetch_add(&s->next_id, 1);
    c->method = gs_method_lookup(c->details.method);
    c->token = call_token(c);
    c->t_start = eng_clock_ms();
    pthread_mutex_lock(&c->mu);
    /* RECV_CLOSE first, so cancellation is seen whatever state the call is in. */
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled_flag;
    call_ref(c);
    ENG_ASSERT(grpc_call_start_batch(c->call, &op, 1, gs_tag_arm(&c->t_close), NULL) == GRPC_CALL_OK);

    const char *reject = NULL;
    char why[256];
    int retry_s = 0;
    grpc_status_code code = GRPC_STATUS_OK;
    if (c->method == GS_M_UNKNOWN) {
        code = GRPC_STATUS_UNIMPLEMENTED;
        reject = "unknown method: serval.v1.Serval has Complete, CompleteStream, Chat, Embed, "
                 "Search, Health, ListModels (and grpc.health.v1.Health has Check)";
    } else if (!gs_method_is_health(c->method) && !gs_call_authorized(c)) {
        code = GRPC_STATUS_UNAUTHENTICATED;
        reject = "missing or invalid bearer token (send metadata 'authorization: Bearer <token>')";
    } else if (!gs_method_is_health(c->method) &&
               !rpc_auth_allows(s->ctx.auth, c->token, method_scope(c->method))) {
        char who[RPC_TOKEN_NAME_MAX + 1], need[64];
        rpc_scopes_format(method_scope(c->method), need, sizeof need);
        snprintf(why, sizeof why, "the token '%s' does not have the '%s' scope this method "
                 "needs", rpc_auth_name(s->ctx.auth, c->token, who, sizeof who), need);
        code = GRPC_STATUS_PERMISSION_DENIED;
        reject = why;
    } else if (!gs_method_is_health(c->method) &&
               !rpc_auth_rate_take(s->ctx.auth, c->token, eng_clock_ms(), &retry_s)) {
        snprintf(why, sizeof why, "this token is over its own rate limit: retry after %d s",
                 retry_s);
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        reject = why;
    } else if (!gs_method_is_health(c->method) && atomic_load(&s->draining)) {
        /* Health still answers while draining: it says DRAINING. */
        code = GRPC_STATUS_UNAVAILABLE;
        reject = "the server is shutting down";
    } else if (!gs_method_is_health(c->method)) {
        int n = atomic_fetch_add(&s->inflight, 1);
        c->counted = true;
        if (n >= s->cfg.max_inflight) {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            reject = "too many calls in flight: retry later";
        } else if (c->token >= 0 && (size_t)c->token < s->n_tokens &&
                   atomic_load(&s->per_token_cap) > 0) {
            n = atomic_fetch_add(&s->token_inflight[c->token], 1);
            c->token_counted = true; /* released by this flag, whatever the cap becomes */
            if (n >= atomic_load(&s->per_token_cap)) {
                code = GRPC_STATUS_RESOURCE_EXHAUSTED;
                reject = "too many calls in flight for this token (max_inflight_per_token): "
                         "retry later";
            }
        }
    }
    if (!reject) atomic_store(&c->phase, GS_PHASE_WAIT_MSG); /* before the recv can complete */
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
        ENG_ASSERT(grpc_call_start_batch(c->call, ops, 2, gs_tag_arm(&c->t_recv), NULL) == GRPC_CALL_OK);
    }
    pthread_mutex_unlock(&c->mu);
    call_unref(c); /* the request slot */
}

/* Parses and answers the request message. Runs without c->mu on a worker (or, for the cheap
 * methods, on a poller); the caller holds a ref. */
static void handle_message(gs_call *c)
{
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

static void on_recv(gs_call *c, bool ok)
{
    rpc_grpc_server *s = c->s;
    int expect = GS_PHASE_WAIT_MSG; /* else the watchdog ended the call first */
    bool mine = atomic_compare_exchange_strong(&c->phase, &expect, GS_PHASE_HANDLING);
    pthread_mutex_lock(&c->mu);
    bool go = mine && ok && !c->cancelled && !c->final_sent;
    if (go && !c->recv_bb) {
        call_send(c, NULL, true, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        go = false;
    }
    pthread_mutex_unlock(&c->mu);
    if (!go) {
        call_unref(c);
        return;
    }
    if (c->method != GS_M_COMPLETE && c->method != GS_M_COMPLETE_STREAM &&
        c->method != GS_M_CHAT && c->method != GS_M_EMBED && c->method != GS_M_SEARCH) {
        handle_message(c); /* cheap: answered from memory */
        call_unref(c);
        return;
    }
    /* The recv reference moves to the work queue. */
    pthread_mutex_lock(&s->mu);
    c->work_next = NULL;
    if (s->work_tail) s->work_tail->work_next = c;
    else s->work_head = c;
    s->work_tail = c;
    pthread_cond_signal(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
}

void *gs_worker_main(void *arg)
{
    rpc_grpc_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->work_head && !s->work_stop) pthread_cond_wait(&s->cv_work, &s->mu);
        gs_call *c = s->work_head;
        if (!c) break;
        s->work_head = c->work_next;
        if (!s->work_head) s->work_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        if (!atomic_load(&s->aborted)) handle_message(c);
        call_unref(c);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
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

void *gs_poller_main(void *arg)
{
    rpc_grpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                                   NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        gs_tag *t = gs_tag_take(ev.tag);
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

