/* grpc_handlers.c — the serval.v1 RPCs: parse and validate each request, render the prompt
 * (FIM from segments, ChatML from chat messages), submit it to the engine or answer directly. */
#include "grpc_handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"
#include "rpc_request.h"
#include "serval_embed.h"
#include "health.pb-c.h"
#include "serval.pb-c.h"

#define GS_DEFAULT_CHAT_TOKENS 256

static const struct {
    const char *path;
    gs_method m;
} methods[] = {
    {"/serval.v1.Serval/Complete", GS_M_COMPLETE},
    {"/serval.v1.Serval/CompleteStream", GS_M_COMPLETE_STREAM},
    {"/serval.v1.Serval/Chat", GS_M_CHAT},
    {"/serval.v1.Serval/Embed", GS_M_EMBED},
    {"/serval.v1.Serval/Search", GS_M_SEARCH},
    {"/serval.v1.Serval/Health", GS_M_HEALTH},
    {"/serval.v1.Serval/ListModels", GS_M_LIST_MODELS},
    {"/grpc.health.v1.Health/Check", GS_M_GRPC_HEALTH},
};

bool gs_method_is_health(gs_method m) { return m == GS_M_HEALTH || m == GS_M_GRPC_HEALTH; }

gs_method gs_method_lookup(grpc_slice path)
{
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (grpc_slice_str_cmp(path, methods[i].path) == 0) return methods[i].m;
    return GS_M_UNKNOWN;
}


/* Sampling, max_tokens, stops and model name shared by completion and chat requests. Returns
 * NULL when valid, else a message (in msg). */
static const char *common_params(const gs_context *ctx, const Serval__V1__SamplingParams *sp,
                                 int32_t max_tokens, int32_t default_max, char **stop,
                                 size_t n_stop, const char *model, eng_request_params *p,
                                 char *msg, size_t cap)
{
    if (model && model[0] && strcmp(model, ctx->model_id) != 0) {
        snprintf(msg, cap, "unknown model '%s' (this server serves '%s')", model, ctx->model_id);
        return msg;
    }
    if (max_tokens < 0) {
        snprintf(msg, cap, "max_tokens must be >= 0 (0: default %d), got %d", default_max,
                 max_tokens);
        return msg;
    }
    p->max_tokens = max_tokens ? max_tokens : default_max;
    if (rpc_stops_check(n_stop, msg, cap)) return msg;
    p->stop = (const char *const *)stop;
    p->n_stop = n_stop;
    p->sampling = eng_sampler_defaults();
    if (sp) {
        p->sampling.temperature = sp->temperature;
        p->sampling.top_k = sp->top_k;
        p->sampling.top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
        p->sampling.seed = sp->seed;
    }
    eng_err err = {{0}};
    if (eng_sampler_params_check(&p->sampling, eng_model_n_vocab(ctx->model), &err) != ENG_OK) {
        snprintf(msg, cap, "sampling: %.400s", err.msg);
        return msg;
    }
    return NULL;
}

/* Engine params from a built prompt: its tokens and its stop words followed by the request's
 * own (stops holds RPC_MAX_STOPS; both borrowed until gs_call_submit returns). */
static void params_from_prompt(const prompt_result *pr, char **user_stops, size_t n_user,
                               const char **stops, eng_request_params *p)
{
    p->tokens = pr->tokens;
    p->n_tokens = (int32_t)pr->n_tokens;
    p->stop = stops;
    p->n_stop = rpc_stops_merge(pr, (const char *const *)user_stops, n_user, stops);
}

static grpc_status_code prompt_status(eng_status st)
{
    return st == ENG_ERR_UNSUPPORTED ? GRPC_STATUS_FAILED_PRECONDITION
           : st == ENG_ERR_NOMEM     ? GRPC_STATUS_INTERNAL
                                     : GRPC_STATUS_INVALID_ARGUMENT;
}

/* Whether the engine would queue a request now (eng_engine_admission_check), asked before a
 * prompt is built and tokenized. NULL when it would, else the engine's message in msg and
 * *code the status an overload or shutdown answers. */
static const char *admission(const gs_context *ctx, char *msg, size_t cap,
                             grpc_status_code *code)
{
    eng_err err = {{0}};
    eng_status st = eng_router_admission_check(ctx->router, &err);
    if (st == ENG_OK) return NULL;
    *code = st == ENG_ERR_OVERLOAD ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE;
    snprintf(msg, cap, "%s", err.msg);
    return msg;
}

/* The byte caps on segments (the engine's text cap on prefix + suffix, rpc_request.h's on
 * snippets), checked before anything is tokenized. NULL when they hold, else a message in msg. */
static const char *segments_check(const gs_context *ctx, const Serval__V1__Segments *sg,
                                  char *msg, size_t cap)
{
    const char *bad = rpc_bytes_check("segments.prefix + suffix",
                                      strlen(sg->prefix) + strlen(sg->suffix),
                                      eng_engine_max_text_bytes(ctx->engine), msg, cap);
    for (size_t i = 0; !bad && i < sg->n_declarations && i < RPC_MAX_SNIPPETS; i++)
        bad = rpc_bytes_check("a declaration's body", strlen(sg->declarations[i]->body),
                              RPC_MAX_SNIPPET_BYTES, msg, cap);
    for (size_t i = 0; !bad && i < sg->n_snippets && i < RPC_MAX_SNIPPETS; i++)
        bad = rpc_bytes_check("a snippet's body", strlen(sg->snippets[i]->body),
                              RPC_MAX_SNIPPET_BYTES, msg, cap);
    return bad;
}

/* Segments -> the model's FIM prompt (engine/prompt.c: template, snippets as comments,
 * clipping, the language's stop words). */
static eng_status build_segments(const gs_context *ctx, const Serval__V1__Segments *sg,
                                 prompt_result *pr, eng_err *err)
{
    size_t nd = sg->n_declarations, ns = sg->n_snippets;
    if (nd > RPC_MAX_SNIPPETS) nd = RPC_MAX_SNIPPETS; /* the rest are dropped, as on HTTP */
    if (ns > RPC_MAX_SNIPPETS) ns = RPC_MAX_SNIPPETS;
    /* room for the retrieved snippets, after the client's */
    prompt_snippet *sn = calloc(nd + ns + IDX_RETRIEVE_TOP_K + 1, sizeof *sn);
    const char **bodies = calloc(nd + ns + 1, sizeof *bodies);
    if (!sn || !bodies) {
        free(sn), free(bodies);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < nd; i++)
        sn[i] = (prompt_snippet){sg->declarations[i]->filepath, sg->declarations[i]->body};
    for (size_t i = 0; i < ns; i++)
        sn[nd + i] = (prompt_snippet){sg->snippets[i]->filepath, sg->snippets[i]->body};
    for (size_t i = 0; i < nd + ns; i++)
        bodies[i] = sn[i].body;
    prompt_completion_input in = {
        .language = sg->language[0] ? sg->language : NULL,
        .prefix = sg->prefix, .prefix_len = strlen(sg->prefix),
        .suffix = sg->suffix, .suffix_len = strlen(sg->suffix),
        .declarations = sn, .n_declarations = nd, .recent = sn + nd, .n_recent = ns};
    idx_hit *got = NULL;
    size_t n_got = 0;
    if (ctx->retrieval && !sg->no_retrieval && sg->git_url[0]) {
        idx_retrieve_input ri = {
            .git_url = sg->git_url, .filepath = sg->filepath, .prefix = in.prefix,
            .prefix_len = in.prefix_len, .suffix = in.suffix, .suffix_len = in.suffix_len,
            .client_bodies = bodies, .n_client = nd + ns, .budget = PROMPT_DEFAULT_SNIPPET_BUDGET};
        eng_err rerr = {{0}};
        if (idx_retrieve(ctx->index, &ri, &got, &n_got, &rerr) != ENG_OK)
            n_got = 0; /* the completion goes on without them */
        for (size_t i = 0; i < n_got; i++)
            sn[nd + ns + i] = (prompt_snippet){got[i].filepath, got[i].body};
        in.n_recent += n_got;
    }
    eng_status st = prompt_build_completion(ctx->prompts, &in, pr, err);
    idx_hits_free(got, n_got);
    free(sn), free(bodies);
    return st;
}

/* Supersede and deadline of a CompleteRequest (proto/serval.proto): the explicit session_key,
 * else segments' filepath + git_url (none without a filepath). gs_call_submit hashes the key
 * with the caller's token. NULL when valid, else a message. */
static const char *session_params(const Serval__V1__CompleteRequest *rq, eng_request_params *p)
{
    size_t klen = strlen(rq->session_key);
    if (klen > RPC_MAX_SESSION_KEY_BYTES) return "session_key is longer than 1024 bytes";
    if (rq->deadline_ms < 0 || rq->deadline_ms > 3600000)
        return "deadline_ms must be in [0, 3600000] (0: the server's default)";
    p->deadline_ms = rq->deadline_ms;
    const Serval__V1__Segments *sg =
        rq->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS ? rq->segments : NULL;
    if (klen) {
        const char *key = rq->session_key;
        p->session_key = rpc_session_key(-1, &key, &klen, 1);
    } else if (sg && sg->filepath[0]) {
        const char *parts[3] = {NULL, sg->filepath, sg->git_url};
        size_t lens[3] = {0, strlen(sg->filepath), strlen(sg->git_url)};
        p->session_key = rpc_session_key(-1, parts, lens, 3);
    }
    return NULL;
}

static void handle_complete(gs_call *c, const uint8_t *data, size_t len)
{
    const gs_context *ctx = gs_call_context(c);
    Serval__V1__CompleteRequest *rq = serval__v1__complete_request__unpack(NULL, len, data);
    if (!rq) {
        gs_call_finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed CompleteRequest (not a valid protobuf message)");
        return;
    }
    char msg[512];
    eng_request_params p = eng_request_params_defaults();
    prompt_result pr = {0};
    const char *stops[RPC_MAX_STOPS];
    grpc_status_code code = GRPC_STATUS_INVALID_ARGUMENT;
    const char *bad = common_params(ctx, rq->sampling, rq->max_tokens, RPC_DEFAULT_COMPLETION_TOKENS,
                                    rq->stop, rq->n_stop, rq->model, &p, msg, sizeof msg);
    if (!bad) bad = session_params(rq, &p);
    if (!bad) {
        if (rq->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_PROMPT) {
            /* Raw prompts go to the engine as text: special tokens written in them count. */
            p.text = rq->prompt;
            p.text_len = strlen(rq->prompt);
            if (p.text_len == 0) bad = "prompt is empty";
            else if ((bad = rpc_bytes_check("prompt", p.text_len,
                                            eng_engine_max_text_bytes(ctx->engine), msg,
                                            sizeof msg)))
                code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        } else if (rq->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS &&
                   (bad = segments_check(ctx, rq->segments, msg, sizeof msg))) {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        } else if (rq->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS &&
                   (bad = admission(ctx, msg, sizeof msg, &code))) {
            /* overloaded or stopping: refused before building the prompt */
        } else if (rq->input_case == SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS) {
            eng_err err = {{0}};
            eng_status st = build_segments(ctx, rq->segments, &pr, &err);
            if (st != ENG_OK) {
                code = prompt_status(st);
                snprintf(msg, sizeof msg, "segments: %.480s", err.msg);
                bad = msg;
            } else {
                params_from_prompt(&pr, rq->stop, rq->n_stop, stops, &p);
            }
        } else {
            bad = "give either segments or prompt";
        }
    }
    if (bad) {
        gs_call_finish(c, NULL, code, bad);
    } else {
        p.ignore_eos = rq->ignore_eos;
        gs_call_submit(c, &p, pr.crlf);
    }
    prompt_result_clear(&pr);
    serval__v1__complete_request__free_unpacked(rq, NULL);
}

static void handle_chat(gs_call *c, const uint8_t *data, size_t len)
{
    const gs_context *ctx = gs_call_context(c);
    Serval__V1__ChatRequest *rq = serval__v1__chat_request__unpack(NULL, len, data);
    if (!rq) {
        gs_call_finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed ChatRequest (not a valid protobuf message)");
        return;
    }
    char msg[512];
    eng_request_params p = eng_request_params_defaults();
    prompt_result pr = {0};
    prompt_chat_message *msgs = NULL;
    const char *stops[RPC_MAX_STOPS];
    grpc_status_code code = GRPC_STATUS_INVALID_ARGUMENT;
    const char *bad = common_params(ctx, rq->sampling, rq->max_tokens, GS_DEFAULT_CHAT_TOKENS,
                                    rq->stop, rq->n_stop, rq->model, &p, msg, sizeof msg);
    if (!bad && rq->n_messages == 0) bad = "messages: at least one message is needed";
    if (!bad && rq->n_messages > RPC_MAX_CHAT_MESSAGES) {
        snprintf(msg, sizeof msg, "messages: at most %d messages, got %zu", RPC_MAX_CHAT_MESSAGES,
                 rq->n_messages);
        bad = msg;
    }
    size_t total = 0;
    for (size_t i = 0; !bad && i < rq->n_messages; i++) total += strlen(rq->messages[i]->content);
    if (!bad && (bad = rpc_bytes_check("messages' contents together", total,
                                       eng_engine_max_text_bytes(ctx->engine), msg, sizeof msg)))
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    for (size_t i = 0; !bad && i < rq->n_messages; i++) {
        const char *role = rq->messages[i]->role;
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            snprintf(msg, sizeof msg,
                     "messages[%zu].role is '%.64s': use system, user or assistant", i, role);
            bad = msg;
        }
    }
    if (!bad) bad = admission(ctx, msg, sizeof msg, &code);
    if (!bad && !(msgs = calloc(rq->n_messages, sizeof *msgs))) {
        code = GRPC_STATUS_INTERNAL;
        bad = "out of memory";
    }
    if (!bad) {
        for (size_t i = 0; i < rq->n_messages; i++)
            msgs[i] = (prompt_chat_message){rq->messages[i]->role, rq->messages[i]->content};
        eng_err err = {{0}};
        eng_status st = prompt_build_chat(ctx->prompts, msgs, rq->n_messages, &pr, &err);
        if (st != ENG_OK) {
            code = prompt_status(st);
            snprintf(msg, sizeof msg, "model '%.100s': %.380s", ctx->model_id, err.msg);
            bad = msg;
        } else {
            params_from_prompt(&pr, rq->stop, rq->n_stop, stops, &p);
        }
    }
    if (bad) gs_call_finish(c, NULL, code, bad);
    else gs_call_submit(c, &p, false);
    free(msgs);
    prompt_result_clear(&pr);
    serval__v1__chat_request__free_unpacked(rq, NULL);
}

/* With a valid token (or auth off): status, model, version, backend and the engine's load.
 * Without: liveness only (the status), so probes work and nothing about load leaks. */
static void handle_health(gs_call *c)
{
    const gs_context *ctx = gs_call_context(c);
    if (!gs_call_authorized(c)) {
        Serval__V1__HealthResponse r = SERVAL__V1__HEALTH_RESPONSE__INIT;
        r.status = gs_draining(c) ? "DRAINING" : "SERVING";
        gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
        return;
    }
    eng_engine_stats st;
    eng_router_stats_get(ctx->router, &st); /* every replica's, summed */
    Serval__V1__EngineStats es = SERVAL__V1__ENGINE_STATS__INIT;
    es.running = st.running;
    es.waiting = st.waiting;
    es.kv_blocks_total = st.kv_blocks_total;
    es.kv_blocks_used = st.kv_blocks_used;
    es.kv_blocks_free = st.kv_blocks_free;
    es.kv_blocks_cached = st.kv_blocks_cached;
    es.block_size = st.block_size;
    es.requests_submitted = st.requests_submitted;
    es.requests_finished = st.requests_finished;
    es.requests_cancelled = st.requests_cancelled;
    es.requests_rejected = st.requests_rejected;
    es.tokens_generated = st.tokens_generated;
    es.prefix_hit_rate = st.prefix_hit_rate;
    es.in_flight_calls = gs_inflight(c);
    Serval__V1__HealthResponse r = SERVAL__V1__HEALTH_RESPONSE__INIT;
    r.status = gs_draining(c) ? "DRAINING" : "SERVING";
    r.model = (char *)ctx->model_id;
    r.version = SERVAL_VERSION;
    r.backend = (char *)ctx->backend;
    r.engine = &es;
    Serval__V1__ReplicaStats rs[ENG_ROUTER_MAX_REPLICAS], *rp[ENG_ROUTER_MAX_REPLICAS];
    eng_router_replica_stats one[ENG_ROUTER_MAX_REPLICAS];
    r.n_replicas = (size_t)eng_router_n_replicas(ctx->router);
    r.replicas = rp;
    for (size_t i = 0; i < r.n_replicas; i++) {
        eng_router_replica_stats_get(ctx->router, (int)i, &one[i]);
        serval__v1__replica_stats__init(&rs[i]);
        rs[i].replica = (int32_t)i;
        rs[i].in_rotation = one[i].in_rotation;
        rs[i].down_reason = one[i].down_reason;
        rs[i].load = one[i].load;
        rs[i].running = one[i].engine.running;
        rs[i].waiting = one[i].engine.waiting;
        rs[i].prefix_hit_rate = one[i].engine.prefix_hit_rate;
        rs[i].requests_finished = one[i].engine.requests_finished;
        rp[i] = &rs[i];
    }
    gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
}

/* gRPC's standard Check (proto/health.proto): "" or serval.v1.Serval SERVING, NOT_SERVING
 * while draining; other names NOT_FOUND, as the protocol says. */
static void handle_grpc_health(gs_call *c, const uint8_t *data, size_t len)
{
    Grpc__Health__V1__HealthCheckRequest *rq =
        grpc__health__v1__health_check_request__unpack(NULL, len, data);
    if (!rq) {
        gs_call_finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, "not a HealthCheckRequest");
        return;
    }
    bool known = !rq->service[0] || !strcmp(rq->service, "serval.v1.Serval");
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    if (!known) {
        gs_call_finish(c, NULL, GRPC_STATUS_NOT_FOUND, "unknown service: this server has \"\" "
                       "and \"serval.v1.Serval\"");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = gs_draining(c) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                              : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
}

static void handle_list_models(gs_call *c)
{
    const gs_context *ctx = gs_call_context(c);
    Serval__V1__ModelInfo mi = SERVAL__V1__MODEL_INFO__INIT;
    mi.id = (char *)ctx->model_id;
    mi.architecture = (char *)eng_model_arch_name(ctx->model);
    mi.context_length = ctx->context_length;
    mi.vocab_size = eng_model_n_vocab(ctx->model);
    mi.supports_fim = prompt_builder_fim(ctx->prompts) != PROMPT_FIM_NONE;
    mi.supports_chat = prompt_builder_chat(ctx->prompts) != PROMPT_CHAT_NONE;
    mi.fim_template = (char *)prompt_fim_name(prompt_builder_fim(ctx->prompts));
    mi.chat_template = (char *)prompt_chat_name(prompt_builder_chat(ctx->prompts));
    Serval__V1__ModelInfo *list[1] = {&mi};
    Serval__V1__ListModelsResponse r = SERVAL__V1__LIST_MODELS_RESPONSE__INIT;
    r.n_models = 1;
    r.models = list;
    gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
}

/* Embed runs on a worker (it blocks until the embedder's batch is done). */
static void handle_embed(gs_call *c, const uint8_t *data, size_t len)
{
    const gs_context *ctx = gs_call_context(c);
    if (!ctx->embedder) {
        gs_call_finish(c, NULL, GRPC_STATUS_UNIMPLEMENTED,
                       "Embed is not available: this server runs without an embedding model "
                       "(start it with --embedding-model PATH)");
        return;
    }
    Serval__V1__EmbedRequest *rq = serval__v1__embed_request__unpack(NULL, len, data);
    if (!rq) {
        gs_call_finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                       "malformed EmbedRequest (not a valid protobuf message)");
        return;
    }
    const int32_t d = eng_embedder_dim(ctx->embedder);
    size_t n = rq->n_inputs;
    const char **texts = n ? calloc(n, sizeof *texts) : NULL;
    size_t *lens = n ? calloc(n, sizeof *lens) : NULL;
    float *out = n ? malloc(sizeof(float) * n * (size_t)d) : NULL;
    Serval__V1__Embedding *embs = n ? calloc(n, sizeof *embs) : NULL;
    Serval__V1__Embedding **ptrs = n ? calloc(n, sizeof *ptrs) : NULL;
    eng_err err = {{0}};
    eng_status st = ENG_OK;
    if (n == 0)
        st = eng_fail(&err, ENG_ERR_INVALID, "inputs: at least one text is needed");
    else if (rq->model[0] && strcmp(rq->model, eng_embedder_model_name(ctx->embedder)) != 0)
        st = eng_fail(&err, ENG_ERR_INVALID, "model '%.64s' is not served here: the embedding "
                      "model is '%s' (or leave model empty)", rq->model,
                      eng_embedder_model_name(ctx->embedder));
    else if (n > INT32_MAX)
        st = eng_fail(&err, ENG_ERR_INVALID, "inputs: too many texts");
    else if (!texts || !lens || !out || !embs || !ptrs)
        st = eng_fail(&err, ENG_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == ENG_OK && i < n; i++) {
        texts[i] = rq->inputs[i];
        lens[i] = strlen(rq->inputs[i]);
    }
    if (st == ENG_OK)
        st = eng_embed(ctx->embedder, texts, lens, (int32_t)n, out, NULL, NULL, &err);
    if (st == ENG_OK) {
        Serval__V1__EmbedResponse r = SERVAL__V1__EMBED_RESPONSE__INIT;
        for (size_t i = 0; i < n; i++) {
            serval__v1__embedding__init(&embs[i]);
            embs[i].n_values = (size_t)d;
            embs[i].values = out + i * (size_t)d;
            ptrs[i] = &embs[i];
        }
        r.n_embeddings = n;
        r.embeddings = ptrs;
        gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
    } else {
        grpc_status_code code = st == ENG_ERR_INVALID ? GRPC_STATUS_INVALID_ARGUMENT
                                : st == ENG_ERR_OVERLOAD ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                : st == ENG_ERR_CANCELLED ? GRPC_STATUS_UNAVAILABLE
                                                          : GRPC_STATUS_INTERNAL;
        gs_call_finish(c, NULL, code, err.msg);
    }
    free(texts), free(lens), free(out), free(embs), free(ptrs);
    serval__v1__embed_request__free_unpacked(rq, NULL);
}

/* Search: hybrid BM25 + vector search over the indexed repositories (indexer/). */
static void handle_search(gs_call *c, const uint8_t *data, size_t len)
{
    const gs_context *ctx = gs_call_context(c);
    if (!ctx->index) {
        gs_call_finish(c, NULL, GRPC_STATUS_UNIMPLEMENTED,
                       "Search is not available: the indexer has no repository on this server "
                       "(start it with --repo PATH)");
        return;
    }
    Serval__V1__SearchRequest *rq = serval__v1__search_request__unpack(NULL, len, data);
    if (!rq) {
        gs_call_finish(c, NULL, GRPC_STATUS_INVALID_ARGUMENT, "malformed SearchRequest");
        return;
    }
    char msg[600];
    idx_hit *hits = NULL;
    size_t n = 0;
    eng_err err = {{0}};
    eng_status st = ENG_ERR_INVALID;
    if (rq->top_k < 0 || rq->top_k > 100)
        snprintf(err.msg, sizeof err.msg, "top_k must be in [0, 100] (0: 10), got %d", rq->top_k);
    else if (!rq->query[0])
        snprintf(err.msg, sizeof err.msg, "query is empty");
    else {
        idx_query q = {.text = rq->query, .top_k = (size_t)rq->top_k,
                       .git_url = rq->git_url[0] ? rq->git_url : NULL};
        st = idx_search(ctx->index, &q, &hits, &n, &err);
    }
    if (st != ENG_OK) {
        snprintf(msg, sizeof msg, "%s", err.msg);
        gs_call_finish(c, NULL, st == ENG_ERR_INVALID ? GRPC_STATUS_INVALID_ARGUMENT
                                                      : GRPC_STATUS_INTERNAL, msg);
        serval__v1__search_request__free_unpacked(rq, NULL);
        return;
    }
    Serval__V1__SearchHit *hv = calloc(n ? n : 1, sizeof *hv);
    Serval__V1__SearchHit **hp = calloc(n ? n : 1, sizeof *hp);
    Serval__V1__SearchResponse r = SERVAL__V1__SEARCH_RESPONSE__INIT;
    if (!hv || !hp) {
        gs_call_finish(c, NULL, GRPC_STATUS_INTERNAL, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            serval__v1__search_hit__init(&hv[i]);
            hv[i].filepath = hits[i].filepath;
            hv[i].git_url = hits[i].git_url;
            hv[i].start_line = hits[i].start_line;
            hv[i].end_line = hits[i].end_line;
            hv[i].body = hits[i].body;
            hv[i].score = hits[i].score;
            hv[i].similarity = hits[i].similarity;
            hp[i] = &hv[i];
        }
        r.n_hits = n;
        r.hits = hp;
        gs_call_finish(c, &r.base, GRPC_STATUS_OK, NULL);
    }
    free(hv), free(hp);
    idx_hits_free(hits, n);
    serval__v1__search_request__free_unpacked(rq, NULL);
}

void gs_handle(gs_call *c, gs_method m, const uint8_t *data, size_t len)
{
    switch (m) {
    case GS_M_COMPLETE:
    case GS_M_COMPLETE_STREAM: handle_complete(c, data, len); break;
    case GS_M_CHAT: handle_chat(c, data, len); break;
    case GS_M_EMBED: handle_embed(c, data, len); break;
    case GS_M_SEARCH: handle_search(c, data, len); break;
    case GS_M_HEALTH: handle_health(c); break;
    case GS_M_LIST_MODELS: handle_list_models(c); break;
    case GS_M_GRPC_HEALTH: handle_grpc_health(c, data, len); break;
    default: gs_call_finish(c, NULL, GRPC_STATUS_UNIMPLEMENTED, "unknown method"); break;
    }
}
