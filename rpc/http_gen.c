/* http_gen.c — runs engine requests for the HTTP routes: blocking generations that watch the
 * client socket (a disconnect cancels at once), and SSE streams in the OpenAI and llama.cpp
 * shapes whose reader cancels the request when the client goes away. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_impl.h"
#include "rpc_request.h"

#define POLL_MS 25

/* Submits g (prompt tokens, stops) to the engine, in the prefix cache of r's token when the
 * server keeps one per token. */
static eng_status submit(http_req *r, http_gen *g, eng_request **er, eng_err *err)
{
    http_server *s = r->s;
    const char *stops[RPC_MAX_STOPS];
    size_t n = rpc_stops_merge(&g->prompt, g->extra_stops, g->n_extra_stops, stops);
    eng_request_params p = eng_request_params_defaults();
    p.tokens = g->prompt.tokens;
    p.n_tokens = (int32_t)g->prompt.n_tokens;
    p.sampling = g->sampling;
    p.max_tokens = g->max_tokens;
    p.stop = stops;
    p.n_stop = n;
    p.cache_salt = rpc_auth_cache_salt(s->auth, r->token_idx);
    p.session_key = g->session_key;
    p.deadline_ms = g->deadline_ms;
    return eng_router_submit(s->router, &p, er, NULL, err);
}

/* Frees the text gathered so far: every path that answers (or closes) itself drops it. */
static void drop_text(http_gen_result *res)
{
    free(res->text);
    res->text = NULL;
    res->len = 0;
}

enum MHD_Result http_gen_run(http_req *r, http_gen *g, http_gen_result *res, bool *replied)
{
    http_server *s = r->s;
    memset(res, 0, sizeof *res);
    *replied = false;
    eng_request *er = NULL;
    eng_err err = {{0}};
    eng_status st = submit(r, g, &er, &err);
    bool crlf = g->prompt.crlf;
    prompt_result_clear(&g->prompt);
    if (st != ENG_OK) {
        *replied = true;
        return http_reply_eng_error(r, st, err.msg);
    }
    size_t cap = 1024;
    res->text = malloc(cap);
    if (!res->text) {
        eng_request_release(er);
        *replied = true;
        return http_reply_error(r, 500, "server_error", "out of memory");
    }
    double deadline_ms = r->t_start_ms + s->cfg.request_timeout_s * 1e3;
    char buf[4096];
    for (;;) {
        eng_request_output o;
        st = eng_request_read(er, buf, sizeof buf, POLL_MS, &o);
        if (st != ENG_OK) {
            eng_request_release(er);
            drop_text(res);
            *replied = true;
            return http_reply_eng_error(r, st, "reading the engine request failed");
        }
        if (res->len + o.text_len + 1 > cap) {
            while (res->len + o.text_len + 1 > cap)
                cap *= 2;
            char *t = realloc(res->text, cap);
            if (!t) {
                eng_request_release(er);
                drop_text(res);
                *replied = true;
                return http_reply_error(r, 500, "server_error", "out of memory");
            }
            res->text = t;
        }
        memcpy(res->text + res->len, buf, o.text_len);
        res->len += o.text_len;
        res->text[res->len] = 0;
        if (o.done) {
            res->out = o;
            break;
        }
        if (http_client_gone(r->fd) || atomic_load(&s->stopping)) {
            eng_request_cancel(er);
            (void)eng_request_read(er, buf, sizeof buf, 1000, &o);
            http_metrics_generation(&s->metrics, &o, true);
            r->gen = o;
            r->has_gen = true;
            eng_request_release(er);
            drop_text(res);
            *replied = true;
            r->status = 499;
            return MHD_NO; /* nobody to answer: close */
        }
        if (eng_clock_ms() > deadline_ms) {
            eng_request_cancel(er);
            eng_request_release(er);
            drop_text(res);
            pthread_mutex_lock(&s->metrics.mu);
            s->metrics.timeouts++;
            pthread_mutex_unlock(&s->metrics.mu);
            *replied = true;
            return http_reply_error(r, 408, "timeout", "generation took longer than %d s",
                                    s->cfg.request_timeout_s);
        }
    }
    http_metrics_generation(&s->metrics, &res->out, false);
    r->gen = res->out;
    r->has_gen = true;
    eng_request_release(er);
    if (res->out.finish == ENG_FINISH_ERROR) {
        drop_text(res);
        *replied = true;
        return http_reply_error(r, 500, "server_error", "generation failed: %s", res->out.error);
    }
    if (res->out.finish == ENG_FINISH_SUPERSEDED) {
        res->len = 0; /* a newer request took over: an empty completion, answered at once */
        res->text[0] = '\0';
    }
    if (res->out.finish == ENG_FINISH_CANCELLED) {
        drop_text(res);
        *replied = true;
        return http_reply_eng_error(r, ENG_ERR_CANCELLED, "cancelled");
    }
    if (crlf) {
        size_t n;
        char *t = prompt_lf_to_crlf(res->text, res->len, &n);
        if (t) {
            free(res->text);
            res->text = t;
            res->len = n;
        }
    }
    return MHD_YES;
}

/* ---- SSE -------------------------------------------------------------------------------- */

typedef struct sse {
    http_server *s;
    eng_request *er;
    int fd;
    http_stream_kind kind;
    char id[64];
    char request_id[32];        /* X-Request-Id's value, repeated in the final event */
    char *model;
    long created;
    bool crlf;
    bool sent_role;
    bool finished;      /* the final event is queued */
    bool ended;         /* everything written */
    bool gone;
    double deadline_ms;         /* eng_clock_ms() after which the stream is cut */
    char *pend;         /* bytes waiting to be written */
    size_t pend_len, pend_off, pend_cap;
    eng_request_output last;
} sse;

static bool pend_put(sse *x, const char *d, size_t n)
{
    if (x->pend_len + n > x->pend_cap) {
        size_t cap = x->pend_cap ? x->pend_cap * 2 : 4096;
        while (cap < x->pend_len + n)
            cap *= 2;
        char *p = realloc(x->pend, cap);
        if (!p)
            return false;
        x->pend = p;
        x->pend_cap = cap;
    }
    memcpy(x->pend + x->pend_len, d, n);
    x->pend_len += n;
    return true;
}

/* The final event's "serval" object: the request id and the engine's timings (a stream's
 * headers leave before they are known). Returns j. */
static json_t *with_timings(sse *x, json_t *j, const eng_request_output *o)
{
    if (j)
        json_object_set_new(j, "serval",
                            json_pack("{s:s,s:f,s:f,s:f}", "request_id", x->request_id,
                                      "queue_ms", o->queue_ms, "first_token_ms",
                                      o->first_token_ms, "total_ms", o->total_ms));
    return j;
}

static bool pend_event(sse *x, json_t *j)
{
    if (j && x->finished && x->last.finish == ENG_FINISH_SUPERSEDED)
        json_object_set_new(j, "superseded", json_true()); /* the stream's last events */
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!s)
        return false;
    bool ok = pend_put(x, "data: ", 6) && pend_put(x, s, strlen(s)) && pend_put(x, "\n\n", 2);
    free(s);
    return ok;
}

const char *http_finish_reason(eng_finish f)
{
    return f == ENG_FINISH_LENGTH ? "length" : "stop";
}

json_t *http_usage(const eng_request_output *o)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", o->n_prompt_tokens, "completion_tokens",
                     o->n_output_tokens, "total_tokens", o->n_prompt_tokens + o->n_output_tokens);
}

/* Queues the events for a piece of text and, when done, the final ones. */
static bool sse_emit(sse *x, const char *text, size_t len, const eng_request_output *o)
{
    char *conv = NULL;
    if (x->crlf && len) {
        conv = prompt_lf_to_crlf(text, len, &len);
        if (!conv)
            return false;
        text = conv;
    }
    bool ok = true;
    json_t *piece = len ? json_stringn(text, len) : NULL;
    free(conv);
    if (len && !piece)
        return false; /* not UTF-8: the engine holds back partial sequences, so never here */
    switch (x->kind) {
    case HTTP_STREAM_OPENAI_CHAT:
        if (!x->sent_role) {
            x->sent_role = true;
            ok = pend_event(x, json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s},s:n}]}", "id", x->id,
                                         "object", "chat.completion.chunk", "created",
                                         (json_int_t)x->created, "model", x->model, "choices",
                                         "index", 0, "delta", "role", "assistant", "content", "",
                                         "finish_reason"));
        }
        if (ok && piece)
            ok = pend_event(x, json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:O},s:n}]}", "id", x->id,
                                         "object", "chat.completion.chunk", "created",
                                         (json_int_t)x->created, "model", x->model, "choices",
                                         "index", 0, "delta", "content", piece, "finish_reason"));
        if (ok && o->done)
            ok = pend_event(x, with_timings(x, json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{},s:s}]}",
                                         "id", x->id,
                                         "object", "chat.completion.chunk", "created",
                                         (json_int_t)x->created, "model", x->model, "choices",
                                         "index", 0, "delta", "finish_reason",
                                         http_finish_reason(o->finish)), o));
        if (ok && o->done)
            ok = pend_put(x, "data: [DONE]\n\n", 14);
        break;
    case HTTP_STREAM_OPENAI_COMPLETION:
        if (piece)
            ok = pend_event(x, json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:O,s:n,s:n}]}", "id", x->id,
                                         "object", "text_completion", "created",
                                         (json_int_t)x->created, "model", x->model, "choices",
                                         "index", 0, "text", piece, "logprobs", "finish_reason"));
        if (ok && o->done)
            ok = pend_event(x, with_timings(x, json_pack(
                                         "{s:s,s:s,s:I,s:s,s:[{s:i,s:s,s:n,s:s}],s:o}",
                                         "id", x->id, "object", "text_completion", "created",
                                         (json_int_t)x->created, "model", x->model, "choices",
                                         "index", 0, "text", "", "logprobs", "finish_reason",
                                         http_finish_reason(o->finish), "usage",
                                         http_usage(o)), o));
        if (ok && o->done)
            ok = pend_put(x, "data: [DONE]\n\n", 14);
        break;
    case HTTP_STREAM_LLAMA:
        if (piece)
            ok = pend_event(x, json_pack("{s:O,s:b}", "content", piece, "stop", 0));
        if (ok && o->done)
            ok = pend_event(x, with_timings(x, json_pack(
                                         "{s:s,s:b,s:s,s:i,s:i,s:b,s:b,s:{s:f,s:f}}", "content", "",
                                         "stop", 1, "model", x->model, "tokens_predicted",
                                         o->n_output_tokens, "tokens_evaluated",
                                         o->n_prompt_tokens, "stopped_eos",
                                         o->finish == ENG_FINISH_STOP, "stopped_limit",
                                         o->finish == ENG_FINISH_LENGTH, "timings",
                                         "first_token_ms", o->first_token_ms, "total_ms",
                                         o->total_ms), o));
        break;
    default:
        ok = false;
    }
    json_decref(piece);
    return ok;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse *x = cls;
    char text[2048];
    while (x->pend_off == x->pend_len) {
        x->pend_off = x->pend_len = 0;
        if (x->finished) {
            x->ended = true;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (http_client_gone(x->fd) || atomic_load(&x->s->stopping)) {
            x->gone = true;
            eng_request_cancel(x->er);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        eng_request_output o;
        if (eng_clock_ms() > x->deadline_ms) {
            /* --http-timeout holds for streams too, however steadily they produce: cut it
             * and say why in a last event. */
            eng_request_cancel(x->er);
            (void)eng_request_read(x->er, text, sizeof text, 0, &o);
            x->last = o;
            x->finished = true;
            pthread_mutex_lock(&x->s->metrics.mu);
            x->s->metrics.timeouts++;
            pthread_mutex_unlock(&x->s->metrics.mu);
            char msg[96];
            snprintf(msg, sizeof msg, "generation took longer than %d s",
                     x->s->cfg.request_timeout_s);
            pend_event(x, json_pack("{s:{s:s,s:s}}", "error", "message", msg, "type", "timeout"));
            continue;
        }
        eng_status st = eng_request_read(x->er, text, sizeof text, POLL_MS, &o);
        if (st != ENG_OK)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (o.text_len || o.done) {
            if (o.done) {
                x->finished = true;
                x->last = o;
                if (o.finish == ENG_FINISH_ERROR) {
                    pend_event(x, json_pack("{s:{s:s,s:s}}", "error", "message", o.error,
                                            "type", "server_error"));
                    continue;
                }
            }
            if (!sse_emit(x, text, o.text_len, &o))
                return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = x->pend_len - x->pend_off;
    if (n > max)
        n = max;
    memcpy(buf, x->pend + x->pend_off, n);
    x->pend_off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    sse *x = cls;
    if (!x)
        return;
    if (x->er) {
        if (!x->finished) {
            /* The client went away (a failed write or a hang-up): stop the work now. */
            eng_request_cancel(x->er);
            eng_request_output o;
            char t[256];
            (void)eng_request_read(x->er, t, sizeof t, 1000, &o);
            http_metrics_generation(&x->s->metrics, &o, true);
        } else {
            http_metrics_generation(&x->s->metrics, &x->last, !x->ended);
        }
        eng_request_release(x->er);
    }
    free(x->model);
    free(x->pend);
    free(x);
}

enum MHD_Result http_gen_stream(http_req *r, http_gen *g, http_stream_kind kind, const char *id)
{
    http_server *s = r->s;
    sse *x = calloc(1, sizeof *x);
    if (!x) {
        prompt_result_clear(&g->prompt);
        return http_reply_error(r, 500, "server_error", "out of memory");
    }
    x->s = s;
    x->fd = r->fd;
    x->kind = kind;
    x->crlf = g->prompt.crlf;
    snprintf(x->id, sizeof x->id, "%s", id);
    rpc_request_id(x->request_id, sizeof x->request_id, "http", r->id);
    x->model = strdup(s->model_name);
    x->created = (long)time(NULL);
    x->deadline_ms = r->t_start_ms + s->cfg.request_timeout_s * 1e3;
    eng_err err = {{0}};
    eng_status st = submit(r, g, &x->er, &err);
    prompt_result_clear(&g->prompt);
    if (st != ENG_OK || !x->model) {
        if (st == ENG_OK)
            eng_request_release(x->er);
        x->er = NULL;
        sse_free(x);
        return http_reply_eng_error(r, st != ENG_OK ? st : ENG_ERR_NOMEM, err.msg);
    }
    return http_reply_stream(r, sse_read, x, sse_free);
}
