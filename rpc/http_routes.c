/* http_routes.c — the HTTP routes: Tabby (health, completions with segments, events, server
 * setting, chat, models), OpenAI (completions with prompt, chat, models), llama.cpp-server
 * (completion, health, tokenize, embeddings) and /metrics. Parses and validates JSON bodies;
 * unknown fields are ignored. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_impl.h"
#include "rpc_request.h"


/* ---- JSON field access with messages naming the field ----------------------------------- */

typedef struct jerr {
    char msg[256];
    char param[64];  /* the field's top-level name, OpenAI's "param" */
    bool set;
} jerr;

static void jfail(jerr *e, const char *fmt, const char *field)
{
    if (!e->set) {
        snprintf(e->msg, sizeof e->msg, fmt, field);
        size_t n = strcspn(field, " .[");
        snprintf(e->param, sizeof e->param, "%.*s", (int)(n < 63 ? n : 63), field);
        e->set = true;
    }
}

/* The cheap refusals before anything tokenizes a request's text (true: *ret holds the reply):
 * text over the engine's cap (eng_engine_max_text_bytes: 413, or OpenAI's 400 naming the param
 * on OpenAI routes) and, for a generation, an engine that would refuse it anyway (overloaded
 * or shutting down: eng_engine_admission_check, 503). */
static bool refused_before_tokenizing(http_req *r, bool openai, const char *param, size_t bytes,
                                      bool generates, enum MHD_Result *ret)
{
    eng_engine *e = r->s->engine;
    size_t cap = eng_engine_max_text_bytes(e);
    if (bytes > cap) {
        if (openai)
            *ret = http_reply_invalid(r, true, param,
                                      "%s is %zu bytes, more than the %zu bytes the context of %d "
                                      "tokens can hold", param, bytes, cap,
                                      eng_engine_max_seq_len(e));
        else
            *ret = http_reply_error(r, 413, "request_too_large",
                                    "%s is %zu bytes, more than the %zu bytes the context of %d "
                                    "tokens can hold", param, bytes, cap, eng_engine_max_seq_len(e));
        return true;
    }
    eng_err err = {{0}};
    eng_status st = generates ? eng_router_admission_check(r->s->router, &err) : ENG_OK;
    if (st != ENG_OK) {
        *ret = http_reply_eng_error(r, st, err.msg);
        return true;
    }
    return false;
}

/* Optional string: NULL when absent or null; a wrong type fails. */
static const char *jstr(json_t *o, const char *key, const char *field, jerr *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        jfail(e, "%s must be a string", field);
        return NULL;
    }
    return json_string_value(v);
}

/* Optional number, any value. */
static double jnumber(json_t *o, const char *key, double def, const char *field, jerr *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return def;
    if (!json_is_number(v)) {
        jfail(e, "%s must be a number", field);
        return def;
    }
    return json_number_value(v);
}

/* Optional number in [lo, hi]. */
static double jnum(json_t *o, const char *key, double def, double lo, double hi,
                   const char *field, jerr *e)
{
    double d = jnumber(o, key, def, field, e);
    if (d < lo || d > hi) {
        char f[128];
        snprintf(f, sizeof f, "%s must be in [%g, %g]", field, lo, hi);
        jfail(e, "%s", f);
        return def;
    }
    return d;
}

static bool jbool(json_t *o, const char *key, bool def, const char *field, jerr *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return def;
    if (!json_is_boolean(v)) {
        jfail(e, "%s must be true or false", field);
        return def;
    }
    return json_is_true(v);
}

/* Optional integer (a number with no fraction); beyond int32 it saturates, which only ever
 * meets a limit that clips (top_k above the vocabulary) or rejects (a negative). */
static int32_t jint32(json_t *o, const char *key, int32_t def, const char *field, jerr *e)
{
    double d = jnumber(o, key, def, field, e);
    if (d != floor(d)) {
        jfail(e, "%s must be an integer", field);
        return def;
    }
    return d < INT32_MIN ? INT32_MIN : d > INT32_MAX ? INT32_MAX : (int32_t)d;
}

/* "stop": a string or an array of strings (at most RPC_MAX_CLIENT_STOPS); empty ones are
 * dropped. out holds RPC_MAX_CLIENT_STOPS. */
static size_t jstops(json_t *o, const char **out, jerr *e)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        out[0] = json_string_value(v);
        return *out[0] ? 1 : 0;
    }
    if (!json_is_array(v)) {
        jfail(e, "%s must be a string or an array of strings", "stop");
        return 0;
    }
    char msg[128];
    if (rpc_stops_check(json_array_size(v), msg, sizeof msg)) {
        jfail(e, "%s", msg);
        return 0;
    }
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x)) {
            jfail(e, "%s must be a string or an array of strings", "stop");
            return 0;
        }
        if (*json_string_value(x))
            out[n++] = json_string_value(x);
    }
    return n;
}

static json_t *parse_body(http_req *r, enum MHD_Result *res)
{
    json_error_t je;
    if (!r->len) {
        *res = http_reply_error(r, 400, "invalid_request_error", "the request body is empty: "
                                "send a JSON object");
        return NULL;
    }
    /* Before the parser: jansson takes 2,048 levels, and what walks the tree recurses. */
    if (!http_json_depth_ok(r->body, r->len, HTTP_MAX_JSON_DEPTH)) {
        *res = http_reply_error(r, 400, "invalid_request_error",
                                "the JSON body nests deeper than %d levels",
                                HTTP_MAX_JSON_DEPTH);
        return NULL;
    }
    json_t *j = json_loadb(r->body, r->len, 0, &je);
    if (!j) {
        *res = http_reply_error(r, 400, "invalid_request_error",
                                "the body is not valid JSON (line %d, column %d): %s", je.line,
                                je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *res = http_reply_invalid(r, r->route == HTTP_ROUTE_V1_CHAT, NULL,
                                  "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Sampling fields. Their JSON types are checked here; their ranges are the engine's one
 * policy (eng_sampler_params_check: a top_k above the vocabulary clipped, a negative one
 * rejected, ...), so HTTP takes exactly what gRPC and the engine take, with the same message. */
static eng_sampler_params sampling_from(const http_server *s, json_t *o, double def_temp,
                                        jerr *e)
{
    eng_sampler_params p = eng_sampler_defaults();
    p.temperature = (float)jnumber(o, "temperature", def_temp, "temperature", e);
    p.top_p = (float)jnumber(o, "top_p", 1, "top_p", e);
    p.top_k = jint32(o, "top_k", 0, "top_k", e);
    p.seed = (uint64_t)jnum(o, "seed", 0, 0, 9007199254740991.0, "seed", e);
    eng_err err = {{0}};
    if (!e->set &&
        eng_sampler_params_check(&p, eng_model_n_vocab(eng_engine_model(s->engine)), &err) !=
            ENG_OK)
        jfail(e, "%.255s", err.msg);
    return p;
}

/* ---- Tabby ------------------------------------------------------------------------------ */

/* Each replica's load and prefix cache (serval_router.h), for health checks that watch one. */
static json_t *replicas_json(eng_router *rt)
{
    json_t *a = json_array();
    for (int i = 0; a && i < eng_router_n_replicas(rt); i++) {
        eng_router_replica_stats rs;
        eng_router_replica_stats_get(rt, i, &rs);
        json_array_append_new(
            a, json_pack("{s:i,s:b,s:s,s:i,s:i,s:i,s:f,s:I}", "replica", i, "in_rotation",
                         rs.in_rotation, "down_reason", rs.down_reason, "load", rs.load,
                         "running", rs.engine.running, "waiting", rs.engine.waiting,
                         "prefix_hit_rate", rs.engine.prefix_hit_rate, "requests_finished",
                         (json_int_t)rs.engine.requests_finished));
    }
    return a;
}

/* Tabby's health body (model, device, version: what tabby-agent needs to enable completion)
 * for a caller with a token; liveness only for anyone else. Tabby's fields keep Tabby's
 * meaning ("arch" is the CPU's); Serval's own follow: the model's GGUF architecture, whether
 * completions use fill-in-the-middle and with which template ("none" without), and the chat
 * template kind ("none": chat answers 501). */
static enum MHD_Result route_health(http_req *r, json_t *body)
{
    (void)body;
    http_server *s = r->s;
    if (r->token_idx == RPC_AUTH_NONE)
        return http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
    json_t *cuda = json_array();
    prompt_fim_kind fim = prompt_builder_fim(s->prompts);
    prompt_chat_kind chat = prompt_builder_chat(s->prompts);
    json_t *j = json_pack(
        "{s:s,s:s?,s:s,s:s,s:s,s:i,s:o,s:{s:s,s:s,s:s,s:s},s:b,s:s,s:s,s:b,s:s,s:s}", "model",
        s->model_name, "chat_model", chat != PROMPT_CHAT_NONE ? s->model_name : NULL, "device",
        s->device, "arch", "x86_64", "cpu_info", s->cpu_info, "cpu_count",
        (int)sysconf(_SC_NPROCESSORS_ONLN), "cuda_devices", cuda, "version", "build_date",
        __DATE__, "build_timestamp", __DATE__ " " __TIME__,
        "git_sha", "", "git_describe", "v0.32.0", "webserver", 0, "serval_version", s->version,
        "model_architecture", eng_model_arch_name(eng_engine_model(s->engine)),
        "supports_fim", fim != PROMPT_FIM_NONE, "fim", prompt_fim_name(fim), "chat_format",
        prompt_chat_name(chat));
    if (j)
        json_object_set_new(j, "replicas", replicas_json(s->router));
    return http_reply_json(r, 200, j);
}

static void snippets_from(json_t *seg, const char *key, prompt_snippet *out, size_t *n,
                          jerr *e)
{
    json_t *a = json_object_get(seg, key);
    *n = 0;
    if (!a || json_is_null(a))
        return;
    char field[96];
    snprintf(field, sizeof field, "segments.%s", key);
    if (!json_is_array(a)) {
        jfail(e, "%s must be an array", field);
        return;
    }
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        if (!json_is_object(x)) {
            jfail(e, "%s must hold objects with filepath and body", field);
            return;
        }
        const char *fp = jstr(x, "filepath", field, e);
        const char *body = jstr(x, "body", field, e);
        if (e->set)
            return;
        if (body && *n < RPC_MAX_SNIPPETS)
            out[(*n)++] = (prompt_snippet){fp, body};
    }
}

/* Supersede and deadline (rpc_request.h, eng_request_params): the session key is the body's
 * "session_key" (a string), else the X-Serval-Session header, else for Tabby's segments (seg)
 * the one derived from "user", segments.filepath and segments.git_url (none without a
 * filepath); always hashed with the caller's token. "deadline_ms": an integer in [1, 3600000],
 * the latency target (absent: the server's --deadline-ms). */
static void session_from(http_req *r, json_t *req, json_t *seg, http_gen *g, jerr *e)
{
    const char *key = jstr(req, "session_key", "session_key", e);
    if (!key)
        key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Serval-Session");
    size_t klen = key ? strlen(key) : 0;
    if (klen > RPC_MAX_SESSION_KEY_BYTES)
        jfail(e, "%s is longer than 1024 bytes", "session_key");
    if (klen) {
        g->session_key = rpc_session_key(r->token_idx, &key, &klen, 1);
    } else if (json_is_object(seg)) {
        const char *parts[3] = {json_string_value(json_object_get(req, "user")),
                                json_string_value(json_object_get(seg, "filepath")),
                                json_string_value(json_object_get(seg, "git_url"))};
        size_t lens[3];
        for (int i = 0; i < 3; i++)
            lens[i] = parts[i] ? strlen(parts[i]) : 0;
        if (lens[1] > 0)
            g->session_key = rpc_session_key(r->token_idx, parts, lens, 3);
    }
    json_t *d = json_object_get(req, "deadline_ms");
    if (d && !json_is_null(d)) {
        if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > 3600000)
            jfail(e, "%s must be an integer in [1, 3600000] (milliseconds)", "deadline_ms");
        else
            g->deadline_ms = (int32_t)json_integer_value(d);
    }
}

static enum MHD_Result reply_tabby_completion(http_req *r, json_t *req, http_gen *g, bool ret_prompt,
                                              bool ret_snippets, size_t n_snip, json_t *snips)
{
    char *prompt_text = ret_prompt ? strndup(g->prompt.text, g->prompt.text_len) : NULL;
    http_gen_result res;
    bool replied;
    enum MHD_Result m = http_gen_run(r, g, &res, &replied);
    if (replied) {
        free(prompt_text);
        json_decref(snips);
        return m;
    }
    char id[64];
    http_make_id("cmpl-", id, sizeof id);
    json_t *text = json_stringn(res.text, res.len);
    free(res.text);
    if (!text)
        text = json_string("");
    json_t *j = json_pack("{s:s,s:[{s:i,s:o}]}", "id", id, "choices", "index", 0, "text", text);
    if (res.out.finish == ENG_FINISH_SUPERSEDED) /* an empty completion, as tabby-agent takes */
        json_object_set_new(j, "superseded", json_true());
    json_t *mode = json_object_get(req, "mode");
    if (json_is_string(mode))
        json_object_set(j, "mode", mode);
    if (ret_prompt || ret_snippets) {
        json_t *dd = json_object();
        if (ret_prompt && prompt_text)
            json_object_set_new(dd, "prompt", json_string(prompt_text));
        if (ret_snippets) {
            json_t *used = json_array();
            for (size_t i = 0; snips && i < n_snip && i < json_array_size(snips); i++)
                json_array_append(used, json_array_get(snips, i));
            json_object_set_new(dd, "snippets", used);
        }
        json_object_set_new(j, "debug_data", dd);
    }
    free(prompt_text);
    json_decref(snips);
    return http_reply_json(r, 200, j);
}

static enum MHD_Result route_tabby_completion(http_req *r, json_t *req)
{
    http_server *s = r->s;
    jerr e = {0};
    json_t *dbg = json_object_get(req, "debug_options");
    if (dbg && !json_is_null(dbg) && !json_is_object(dbg))
        return http_reply_error(r, 422, "invalid_request_error", "debug_options must be an object");
    const char *raw = dbg ? jstr(dbg, "raw_prompt", "debug_options.raw_prompt", &e) : NULL;
    bool ret_prompt = dbg ? jbool(dbg, "return_prompt", false, "debug_options.return_prompt", &e) : false;
    bool ret_snippets = dbg ? jbool(dbg, "return_snippets", false, "debug_options.return_snippets", &e) : false;
    const char *language = jstr(req, "language", "language", &e);
    json_t *seg = json_object_get(req, "segments");
    http_gen g = {0};
    g.sampling = sampling_from(s, req, 0.1, &e);
    g.max_tokens = s->cfg.default_max_tokens;
    session_from(r, req, seg, &g, &e);
    if (e.set)
        return http_reply_error(r, 422, "invalid_request_error", "%s", e.msg);
    eng_err err = {{0}};
    eng_status st;
    enum MHD_Result refused;
    if (raw && refused_before_tokenizing(r, false, "debug_options.raw_prompt", strlen(raw), true,
                                         &refused))
        return refused;
    if (raw) {
        st = prompt_build_raw(s->prompts, raw, strlen(raw), true, language ? language : "unknown",
                              &g.prompt, &err);
        if (st != ENG_OK)
            return http_reply_eng_error(r, st, err.msg);
        return reply_tabby_completion(r, req, &g, ret_prompt, false, 0, NULL);
    }
    if (!seg || json_is_null(seg))
        return http_reply_error(r, 400, "invalid_request_error",
                                "the body needs segments (Tabby) or prompt (OpenAI)");
    if (!json_is_object(seg))
        return http_reply_error(r, 422, "invalid_request_error", "segments must be an object");
    json_t *pj = json_object_get(seg, "prefix");
    if (!json_is_string(pj))
        return http_reply_error(r, 422, "invalid_request_error",
                                pj ? "segments.prefix must be a string"
                                   : "segments.prefix is required");
    json_t *sj = json_object_get(seg, "suffix");
    if (sj && !json_is_null(sj) && !json_is_string(sj))
        return http_reply_error(r, 422, "invalid_request_error", "segments.suffix must be a string");
    const char *filepath = jstr(seg, "filepath", "segments.filepath", &e);
    const char *git_url = jstr(seg, "git_url", "segments.git_url", &e);
    bool retrieval = jbool(req, "retrieval", true, "retrieval", &e); /* Serval's own option */
    /* rec has room for the snippets retrieval adds after the client's (http_search.c). */
    prompt_snippet decl[RPC_MAX_SNIPPETS], chg[RPC_MAX_SNIPPETS];
    prompt_snippet rec[RPC_MAX_SNIPPETS + IDX_RETRIEVE_TOP_K];
    prompt_completion_input in = {
        .language = language ? language : "unknown",
        .prefix = json_string_value(pj), .prefix_len = json_string_length(pj),
        .suffix = json_is_string(sj) ? json_string_value(sj) : NULL,
        .suffix_len = json_is_string(sj) ? json_string_length(sj) : 0,
        .declarations = decl, .changed = chg, .recent = rec};
    snippets_from(seg, "declarations", decl, &in.n_declarations, &e);
    snippets_from(seg, "relevant_snippets_from_changed_files", chg, &in.n_changed, &e);
    snippets_from(seg, "relevant_snippets_from_recently_opened_files", rec, &in.n_recent, &e);
    if (e.set)
        return http_reply_error(r, 422, "invalid_request_error", "%s", e.msg);
    size_t text_bytes = in.prefix_len + in.suffix_len;
    const char *keys[3] = {"declarations", "relevant_snippets_from_changed_files",
                           "relevant_snippets_from_recently_opened_files"};
    for (int l = 0; l < 3; l++) { /* every snippet sent counts, used or not */
        json_t *a = json_object_get(seg, keys[l]);
        for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++)
            text_bytes += json_string_length(json_object_get(json_array_get(a, i), "body"));
    }
    if (refused_before_tokenizing(r, false, "segments", text_bytes, true, &refused))
        return refused;
    idx_hit *got = NULL;
    size_t n_got = retrieval ? http_retrieve_snippets(s, &in, rec, filepath, git_url, &got) : 0;
    st = prompt_build_completion(s->prompts, &in, &g.prompt, &err);
    if (st != ENG_OK) {
        idx_hits_free(got, n_got);
        return http_reply_eng_error(r, st, err.msg);
    }
    json_t *snips = NULL;
    if (ret_snippets) {
        snips = json_array();
        const prompt_snippet *lists[3] = {decl, chg, rec};
        size_t counts[3] = {in.n_declarations, in.n_changed, in.n_recent};
        for (int l = 0; l < 3; l++)
            for (size_t i = 0; i < counts[l]; i++)
                json_array_append_new(snips, json_pack("{s:s?,s:s}", "filepath", lists[l][i].filepath,
                                                       "body", lists[l][i].body));
    }
    idx_hits_free(got, n_got);
    return reply_tabby_completion(r, req, &g, ret_prompt, ret_snippets, g.prompt.n_snippets, snips);
}

/* ---- OpenAI ----------------------------------------------------------------------------- */

/* OpenAI's n: one choice per request is what Serval generates. */
static void check_n(json_t *req, jerr *e)
{
    json_t *v = json_object_get(req, "n");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == 1))
        jfail(e, "%s must be 1 (one choice per request)", "n");
}

/* OpenAI's max_tokens (or max_completion_tokens): an integer in [1, 2^20]. */
static int32_t openai_max_tokens(json_t *req, const char *key, int32_t def, jerr *e)
{
    int32_t v = jint32(req, key, def, key, e);
    if (!e->set && (v < 1 || v > (1 << 20)))
        jfail(e, "%s must be an integer in [1, 1048576]", key);
    return v;
}

static enum MHD_Result route_openai_completion(http_req *r, json_t *req)
{
    http_server *s = r->s;
    jerr e = {0};
    json_t *pj = json_object_get(req, "prompt");
    if (json_is_array(pj) && json_array_size(pj) == 1)
        pj = json_array_get(pj, 0);
    if (!json_is_string(pj))
        return http_reply_invalid(r, true, "prompt",
                                  "prompt must be a string (or an array of one string)");
    enum MHD_Result refused;
    if (refused_before_tokenizing(r, true, "prompt", json_string_length(pj), true, &refused))
        return refused;
    const char *stops[RPC_MAX_CLIENT_STOPS];
    http_gen g = {0};
    g.sampling = sampling_from(s, req, 1.0, &e);
    g.max_tokens = openai_max_tokens(req, "max_tokens", 16, &e);
    g.n_extra_stops = jstops(req, stops, &e);
    g.extra_stops = stops;
    session_from(r, req, NULL, &g, &e);
    bool stream = jbool(req, "stream", false, "stream", &e);
    check_n(req, &e);
    if (e.set)
        return http_reply_invalid(r, true, e.param, "%s", e.msg);
    eng_err err = {{0}};
    eng_status st = prompt_build_raw(s->prompts, json_string_value(pj), json_string_length(pj),
                                     false, NULL, &g.prompt, &err);
    if (st != ENG_OK)
        return http_reply_eng_error(r, st, err.msg);
    char id[64];
    http_make_id("cmpl-", id, sizeof id);
    if (stream)
        return http_gen_stream(r, &g, HTTP_STREAM_OPENAI_COMPLETION, id);
    http_gen_result res;
    bool replied;
    enum MHD_Result m = http_gen_run(r, &g, &res, &replied);
    if (replied)
        return m;
    json_t *text = json_stringn(res.text, res.len);
    free(res.text);
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:n,s:s}],s:o}", "id", id,
                          "object", "text_completion", "created", (json_int_t)time(NULL), "model",
                          s->model_name, "choices", "index", 0, "text",
                          text ? text : json_string(""), "logprobs", "finish_reason",
                          http_finish_reason(res.out.finish), "usage", http_usage(&res.out));
    if (j && res.out.finish == ENG_FINISH_SUPERSEDED)
        json_object_set_new(j, "superseded", json_true());
    return http_reply_json(r, 200, j);
}

/* Message content: a string, or an array of {"type":"text","text":...} parts (joined). */
static char *message_content(json_t *m, size_t i, jerr *e)
{
    json_t *c = json_object_get(m, "content");
    char field[64];
    snprintf(field, sizeof field, "messages[%zu].content", i);
    if (json_is_string(c))
        return strdup(json_string_value(c));
    if (json_is_null(c) || !c)
        return strdup("");
    if (!json_is_array(c)) {
        jfail(e, "%s must be a string or an array of text parts", field);
        return NULL;
    }
    size_t k, len = 0;
    json_t *part;
    char *out = calloc(1, 1);
    json_array_foreach(c, k, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            continue;
        char *grown = out ? realloc(out, len + json_string_length(t) + 1) : NULL;
        if (!grown) {
            free(out);
            return NULL;
        }
        out = grown;
        memcpy(out + len, json_string_value(t), json_string_length(t));
        len += json_string_length(t);
        out[len] = 0;
    }
    return out;
}

static enum MHD_Result chat(http_req *r, json_t *req, bool always_stream)
{
    http_server *s = r->s;
    jerr e = {0};
    bool openai = !always_stream; /* /v1beta/chat/completions is Tabby's */
    json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return http_reply_invalid(r, openai, "messages",
                                  "messages must be a non-empty array of {role, content}");
    if (json_array_size(msgs) > RPC_MAX_CHAT_MESSAGES)
        return http_reply_invalid(r, openai, "messages", "more than %d messages",
                                  RPC_MAX_CHAT_MESSAGES);
    size_t text_bytes = 0;
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *c = json_object_get(json_array_get(msgs, i), "content");
        if (json_is_string(c))
            text_bytes += json_string_length(c);
        for (size_t k = 0; json_is_array(c) && k < json_array_size(c); k++)
            text_bytes += json_string_length(json_object_get(json_array_get(c, k), "text"));
    }
    enum MHD_Result refused;
    if (refused_before_tokenizing(r, openai, "messages", text_bytes, true, &refused))
        return refused;
    size_t n = json_array_size(msgs);
    prompt_chat_message pm[RPC_MAX_CHAT_MESSAGES];
    char *contents[RPC_MAX_CHAT_MESSAGES] = {0};
    enum MHD_Result res = MHD_YES;
    bool done = false;
    for (size_t i = 0; i < n && !e.set; i++) {
        json_t *m = json_array_get(msgs, i);
        if (!json_is_object(m)) {
            jfail(&e, "%s must be an object", "messages[]");
            break;
        }
        pm[i].role = jstr(m, "role", "messages[].role", &e);
        contents[i] = message_content(m, i, &e);
        pm[i].content = contents[i];
    }
    const char *stops[RPC_MAX_CLIENT_STOPS];
    http_gen g = {0};
    g.sampling = sampling_from(s, req, 0.7, &e);
    g.max_tokens = json_object_get(req, "max_tokens")
                       ? openai_max_tokens(req, "max_tokens", 512, &e)
                       : openai_max_tokens(req, "max_completion_tokens", 512, &e);
    g.n_extra_stops = jstops(req, stops, &e);
    g.extra_stops = stops;
    session_from(r, req, NULL, &g, &e);
    bool stream = always_stream || jbool(req, "stream", false, "stream", &e);
    if (openai)
        check_n(req, &e);
    if (e.set) {
        res = http_reply_invalid(r, openai, e.param, "%s", e.msg);
        done = true;
    }
    eng_err err = {{0}};
    eng_status st = ENG_OK;
    if (!done && (st = prompt_build_chat(s->prompts, pm, n, &g.prompt, &err)) != ENG_OK) {
        res = http_reply_eng_error(r, st, err.msg);
        done = true;
    }
    for (size_t i = 0; i < n; i++)
        free(contents[i]);
    if (done)
        return res;
    char id[64];
    http_make_id("chatcmpl-", id, sizeof id);
    if (stream)
        return http_gen_stream(r, &g, HTTP_STREAM_OPENAI_CHAT, id);
    http_gen_result gr;
    bool replied;
    enum MHD_Result m = http_gen_run(r, &g, &gr, &replied);
    if (replied)
        return m;
    json_t *text = json_stringn(gr.text, gr.len);
    free(gr.text);
    json_t *j = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:o},s:s}],s:o}", "id", id,
                          "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
                          s->model_name, "choices", "index", 0, "message", "role", "assistant",
                          "content", text ? text : json_string(""), "finish_reason",
                          http_finish_reason(gr.out.finish), "usage", http_usage(&gr.out));
    if (j && gr.out.finish == ENG_FINISH_SUPERSEDED)
        json_object_set_new(j, "superseded", json_true());
    return http_reply_json(r, 200, j);
}

/* ---- llama.cpp server ------------------------------------------------------------------- */

static enum MHD_Result route_llama_completion(http_req *r, json_t *req)
{
    http_server *s = r->s;
    jerr e = {0};
    json_t *pj = json_object_get(req, "prompt");
    if (!json_is_string(pj))
        return http_reply_error(r, 422, "invalid_request_error", "prompt must be a string");
    enum MHD_Result refused;
    if (refused_before_tokenizing(r, false, "prompt", json_string_length(pj), true, &refused))
        return refused;
    const char *stops[RPC_MAX_CLIENT_STOPS];
    http_gen g = {0};
    g.sampling = sampling_from(s, req, 0.8, &e);
    double np = jnum(req, "n_predict", -1, -1, 1 << 20, "n_predict", &e);
    g.max_tokens = np < 0 ? 256 : np == 0 ? 1 : (int32_t)np;
    g.n_extra_stops = jstops(req, stops, &e);
    g.extra_stops = stops;
    session_from(r, req, NULL, &g, &e);
    bool stream = jbool(req, "stream", false, "stream", &e);
    if (e.set)
        return http_reply_error(r, 422, "invalid_request_error", "%s", e.msg);
    eng_err err = {{0}};
    /* A backend's prompt arrives already templated: its special tokens are meant. */
    eng_status st = prompt_build_raw(s->prompts, json_string_value(pj), json_string_length(pj),
                                     true, NULL, &g.prompt, &err);
    if (st != ENG_OK)
        return http_reply_eng_error(r, st, err.msg);
    if (stream)
        return http_gen_stream(r, &g, HTTP_STREAM_LLAMA, "");
    http_gen_result res;
    bool replied;
    enum MHD_Result m = http_gen_run(r, &g, &res, &replied);
    if (replied)
        return m;
    json_t *text = json_stringn(res.text, res.len);
    free(res.text);
    json_t *j = json_pack("{s:o,s:b,s:s,s:i,s:i,s:b,s:b}", "content", text ? text : json_string(""),
                          "stop", 1, "model", s->model_name, "tokens_predicted",
                          res.out.n_output_tokens, "tokens_evaluated", res.out.n_prompt_tokens,
                          "stopped_eos", res.out.finish == ENG_FINISH_STOP, "stopped_limit",
                          res.out.finish == ENG_FINISH_LENGTH);
    if (j && res.out.finish == ENG_FINISH_SUPERSEDED)
        json_object_set_new(j, "superseded", json_true());
    return http_reply_json(r, 200, j);
}

static enum MHD_Result route_tokenize(http_req *r, json_t *req)
{
    http_server *s = r->s;
    json_t *c = json_object_get(req, "content");
    if (!json_is_string(c))
        return http_reply_error(r, 422, "invalid_request_error", "content must be a string");
    enum MHD_Result refused;
    if (refused_before_tokenizing(r, false, "content", json_string_length(c), false, &refused))
        return refused;
    jerr e = {0};
    bool add_special = jbool(req, "add_special", false, "add_special", &e);
    if (e.set)
        return http_reply_error(r, 422, "invalid_request_error", "%s", e.msg);
    int32_t *ids = NULL, n = 0;
    eng_err err = {{0}};
    eng_status st = eng_model_tokenize(eng_engine_model(s->engine), json_string_value(c),
                                       json_string_length(c), add_special, true, &ids, &n, &err);
    if (st != ENG_OK)
        return http_reply_eng_error(r, st, err.msg);
    json_t *arr = json_array();
    for (int32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    free(ids);
    return http_reply_json(r, 200, json_pack("{s:o}", "tokens", arr));
}

/* Tabby's /v1beta/chat/completions always streams; OpenAI's only when asked. */
static enum MHD_Result route_openai_chat(http_req *r, json_t *req)
{
    return chat(r, req, false);
}

static enum MHD_Result route_tabby_chat(http_req *r, json_t *req)
{
    return chat(r, req, true);
}

/* One path, two shapes: OpenAI's body has prompt and no segments; Tabby's has segments (or
 * debug_options.raw_prompt). */
static enum MHD_Result route_v1_completions(http_req *r, json_t *req)
{
    if (!json_object_get(req, "segments") && json_object_get(req, "prompt") &&
        !json_object_get(req, "debug_options"))
        return route_openai_completion(r, req);
    return route_tabby_completion(r, req);
}

static enum MHD_Result route_server_setting(http_req *r, json_t *body)
{
    (void)body;
    return http_reply_json(r, 200, json_pack("{s:b}", "disable_client_side_telemetry", 0));
}

static enum MHD_Result route_tabby_models(http_req *r, json_t *body)
{
    (void)body;
    http_server *s = r->s;
    bool chat_ok = prompt_builder_chat(s->prompts) != PROMPT_CHAT_NONE;
    return http_reply_json(r, 200, json_pack("{s:[s],s:o}", "completion", s->model_name, "chat",
                                             chat_ok ? json_pack("[s]", s->model_name)
                                                     : json_null()));
}

static enum MHD_Result route_openai_models(http_req *r, json_t *body)
{
    (void)body;
    return http_reply_json(r, 200, json_pack("{s:s,s:[{s:s,s:s,s:i,s:s}]}", "object", "list",
                                             "data", "id", r->s->model_name, "object", "model",
                                             "created", 0, "owned_by", "serval"));
}

static enum MHD_Result route_llama_health(http_req *r, json_t *body)
{
    (void)body;
    return http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result route_metrics(http_req *r, json_t *body)
{
    (void)body;
    http_server *s = r->s;
    size_t len;
    char *text = http_metrics_render(&s->metrics, s->router, atomic_load(&s->inflight), &len);
    char *per_token = rpc_auth_disabled(s->auth) ? strdup("") : rpc_auth_metrics_render(s->auth);
    char *all = NULL;
    if (text && per_token && asprintf(&all, "%s%s", text, per_token) < 0)
        all = NULL;
    free(text);
    free(per_token);
    if (!all)
        return http_reply_error(r, 500, "server_error", "out of memory");
    enum MHD_Result res = http_reply_text(r, 200, "text/plain; version=0.0.4", all, strlen(all));
    free(all);
    return res;
}

static enum MHD_Result route_not_found(http_req *r, json_t *body)
{
    (void)body;
    return http_reply_error(r, 404, "not_found", "no route for %s %s", r->method, r->path);
}

/* ---- the route table -------------------------------------------------------------------- */

enum { GET = HTTP_METHOD_GET, POST = HTTP_METHOD_POST, ANY = HTTP_METHOD_ANY };
/* The auth column: true is any valid token (RPC_SCOPE_TOKEN); these need the token's scope. */
enum { COMPL = RPC_SCOPE_COMPLETION, CHAT = RPC_SCOPE_CHAT, EMBED = RPC_SCOPE_EMBEDDINGS,
       ADMIN = RPC_SCOPE_ADMIN };

/* Older Tabby clients POST /v1/health, some with a small body: read (at most this) and
 * ignored. Every other route without a JSON body takes none. */
#define HTTP_HEALTH_MAX_BYTES 1024

/* One row per route: everything about a route is decided here. Health probes are open (no
 * token) and unlogged; unknown paths need a token too, so a 404 tells a stranger nothing.
 * The auth column is the scope a token needs (403 without it); /metrics also opens to the
 * metrics token, the status page (/, /v1/status) to loopback clients without a token. */
static const http_route_def routes[HTTP_ROUTE_COUNT] = {
    /* [route]                  = {path,                     alias,            methods,    auth,  json,  logged, max_body,             handler} */
    [HTTP_ROUTE_V1_HEALTH]      = {"/v1/health",               NULL,             GET | POST, false, false, false, HTTP_HEALTH_MAX_BYTES, route_health},
    [HTTP_ROUTE_SERVER_SETTING] = {"/v1beta/server_setting",   NULL,             GET,        true,  false, true,  HTTP_BODY_NONE,       route_server_setting},
    [HTTP_ROUTE_V1_COMPLETIONS] = {"/v1/completions",          NULL,             POST,       COMPL, true,  true,  HTTP_BODY_SERVER,     route_v1_completions},
    [HTTP_ROUTE_V1_EVENTS]      = {"/v1/events",               NULL,             POST,       COMPL, true,  true,  HTTP_EVENT_MAX_BYTES, http_route_events},
    [HTTP_ROUTE_V1_CHAT]        = {"/v1/chat/completions",     NULL,             POST,       CHAT,  true,  true,  HTTP_BODY_SERVER,     route_openai_chat},
    [HTTP_ROUTE_V1BETA_CHAT]    = {"/v1beta/chat/completions", NULL,             POST,       CHAT,  true,  true,  HTTP_BODY_SERVER,     route_tabby_chat},
    [HTTP_ROUTE_V1BETA_MODELS]  = {"/v1beta/models",           NULL,             GET,        true,  false, true,  HTTP_BODY_NONE,       route_tabby_models},
    [HTTP_ROUTE_V1_MODELS]      = {"/v1/models",               NULL,             GET,        true,  false, true,  HTTP_BODY_NONE,       route_openai_models},
    [HTTP_ROUTE_COMPLETION]     = {"/completion",              NULL,             POST,       COMPL, true,  true,  HTTP_BODY_SERVER,     route_llama_completion},
    [HTTP_ROUTE_HEALTH]         = {"/health",                  NULL,             GET,        false, false, false, HTTP_BODY_NONE,       route_llama_health},
    [HTTP_ROUTE_TOKENIZE]       = {"/tokenize",                NULL,             POST,       true,  true,  true,  HTTP_BODY_SERVER,     route_tokenize},
    [HTTP_ROUTE_V1BETA_SEARCH]  = {"/v1beta/search",           NULL,             POST,       EMBED, true,  true,  HTTP_BODY_SERVER,     http_route_search},
    [HTTP_ROUTE_EMBEDDINGS]     = {"/embeddings",              NULL,             POST,       EMBED, true,  true,  HTTP_BODY_SERVER,     http_route_llama_embeddings},
    [HTTP_ROUTE_V1_EMBEDDINGS]  = {"/v1/embeddings",           NULL,             POST,       EMBED, true,  true,  HTTP_BODY_SERVER,     http_route_openai_embeddings},
    [HTTP_ROUTE_EMBEDDING]      = {"/embedding",               NULL,             POST,       EMBED, true,  true,  HTTP_BODY_SERVER,     http_route_llama_embedding_legacy},
    [HTTP_ROUTE_METRICS]        = {"/metrics",                 NULL,             GET,        ADMIN, false, false, HTTP_BODY_NONE,       route_metrics},
    [HTTP_ROUTE_STATUS_PAGE]    = {"/",                        NULL,             GET,        ADMIN, false, false, HTTP_BODY_NONE,       http_route_status_page},
    [HTTP_ROUTE_V1_STATUS]      = {"/v1/status",               NULL,             GET,        ADMIN, false, false, HTTP_BODY_NONE,       http_route_status_json},
    [HTTP_ROUTE_OTHER]          = {NULL,                       NULL,             ANY,        true,  false, true,  HTTP_BODY_SERVER,     route_not_found},
};

const http_route_def *http_route_get(http_route r)
{
    return &routes[(unsigned)r < HTTP_ROUTE_COUNT ? r : HTTP_ROUTE_OTHER];
}

http_route http_route_find(const char *url)
{
    for (int i = 0; i < HTTP_ROUTE_COUNT; i++) {
        const http_route_def *d = &routes[i];
        if ((d->path && strcmp(url, d->path) == 0) || (d->alias && strcmp(url, d->alias) == 0))
            return (http_route)i;
    }
    return HTTP_ROUTE_OTHER;
}

const char *http_route_name(http_route r)
{
    const char *path = http_route_get(r)->path;
    return path ? path : "other";
}

/* "GET, POST, OPTIONS": the Allow header of a 405. */
static void allow_header(unsigned methods, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s", methods & HTTP_METHOD_GET ? "GET, " : "",
             methods & HTTP_METHOD_POST ? "POST, " : "", "OPTIONS");
}

static unsigned method_bit(const char *method)
{
    return strcmp(method, "GET") == 0 ? HTTP_METHOD_GET
           : strcmp(method, "POST") == 0 ? HTTP_METHOD_POST
                                         : 0;
}

enum MHD_Result http_dispatch(http_req *r)
{
    const http_route_def *d = http_route_get(r->route);
    if (d->methods != HTTP_METHOD_ANY && !(d->methods & method_bit(r->method))) {
        char allow[32];
        allow_header(d->methods, allow, sizeof allow);
        return http_reply_empty(r, 405, "Allow", allow);
    }
    if (!d->json_body)
        return d->handler(r, NULL);
    enum MHD_Result res = MHD_YES;
    json_t *req = parse_body(r, &res);
    if (!req)
        return res;
    res = d->handler(r, req);
    json_decref(req);
    return res;
}
