/* test_grpc.c — the gRPC API end to end: a real `serval serve` process, a C client (grpc C
 * core) calling every RPC, cancellation and deadlines freeing KV blocks, bad input, bounds,
 * 200 concurrent streams, graceful shutdown, and the Python grpcio peer client. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "grpc_client.h"
#include "grpc_test_util.h"
#include "serval.pb-c.h"
#include "testutil.h"
#include "tu_server.h"

#define TOKEN "test-token-1"

/* The server each test talks to: this file's token, started once its gRPC listener is up. */
typedef tu_server server;

static server server_start(const char *const *extra)
{
    return tu_server_start("grpc", TOKEN, false, extra);
}

static int server_stop(server *s) { return tu_server_stop(s); }

static char *server_log(server *s) { return tu_read_file(s->log_path, NULL); }

/* ---- request helpers ---------------------------------------------------------------------- */

typedef struct gen {
    const char *prompt;
    int max_tokens;
    bool ignore_eos;
    char **stop;
    size_t n_stop;
    float temperature;
    int32_t top_k;
    uint64_t seed;
} gen;

static uint8_t *complete_req(const gen *g, size_t *len)
{
    Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
    Serval__V1__SamplingParams sp = SERVAL__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = g->temperature;
    sp.top_k = g->top_k;
    sp.seed = g->seed;
    rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_PROMPT;
    rq.prompt = (char *)g->prompt;
    rq.max_tokens = g->max_tokens;
    rq.ignore_eos = g->ignore_eos;
    rq.stop = g->stop;
    rq.n_stop = g->n_stop;
    rq.sampling = &sp;
    return gt_pack(&rq.base, len);
}

/* Concatenates stream chunks; remembers the last one's finish reason and usage. */
typedef struct stream_acc {
    char text[8192];
    size_t len;
    int chunks;
    int finish;
    int output_tokens;
    int stop_after;                 /* cancel after this many chunks (0: never) */
    bool (*on_chunk)(struct stream_acc *a);
    void *user;
} stream_acc;

static bool acc_chunk(void *user, const uint8_t *d, size_t n)
{
    stream_acc *a = user;
    Serval__V1__CompletionChunk *ch = serval__v1__completion_chunk__unpack(NULL, n, d);
    cr_assert_not_null(ch, "a stream message is not a CompletionChunk");
    size_t l = strlen(ch->text);
    cr_assert_lt(a->len + l, sizeof a->text);
    memcpy(a->text + a->len, ch->text, l);
    a->len += l;
    a->text[a->len] = '\0';
    a->chunks++;
    a->finish = ch->finish_reason;
    if (ch->usage) a->output_tokens = ch->usage->output_tokens;
    serval__v1__completion_chunk__free_unpacked(ch, NULL);
    if (a->on_chunk && !a->on_chunk(a)) return false;
    return !(a->stop_after && a->chunks >= a->stop_after);
}

static Serval__V1__CompleteResponse *complete(rpc_client *cl, const gen *g, int timeout_ms,
                                              rpc_client_result *res)
{
    size_t len;
    uint8_t *b = complete_req(g, &len);
    rpc_client_call(cl, M_COMPLETE, b, len, timeout_ms, NULL, NULL, res);
    free(b);
    if (res->code != GRPC_STATUS_OK) return NULL;
    cr_assert_eq(res->n_messages, 1);
    return serval__v1__complete_response__unpack(NULL, res->last_len, res->last);
}

static grpc_status_code stream(rpc_client *cl, const gen *g, stream_acc *a, int timeout_ms,
                               rpc_client_result *res)
{
    size_t len;
    uint8_t *b = complete_req(g, &len);
    rpc_client_call(cl, M_STREAM, b, len, timeout_ms, acc_chunk, a, res);
    free(b);
    return res->code;
}

static Serval__V1__EngineStats *health(rpc_client *cl, Serval__V1__HealthResponse **keep)
{
    *keep = gt_health(cl);
    cr_assert_not_null((*keep)->engine);
    return (*keep)->engine;
}

/* Polls Health until no sequence runs, no KV block is referenced and every submitted request
 * has finished. */
static void expect_engine_idle(rpc_client *cl, const char *what)
{
    Serval__V1__HealthResponse *h = NULL;
    for (int i = 0; i < 100; i++) {
        if (h) serval__v1__health_response__free_unpacked(h, NULL);
        Serval__V1__EngineStats *es = health(cl, &h);
        if (es->running == 0 && es->waiting == 0 && es->kv_blocks_used == 0 &&
            es->requests_finished == es->requests_submitted)
            break;
        usleep(50 * 1000);
    }
    Serval__V1__EngineStats *es = h->engine;
    cr_assert(es->running == 0 && es->kv_blocks_used == 0,
              "%s: the engine still runs %d sequences holding %d blocks", what, es->running,
              es->kv_blocks_used);
    cr_assert_eq(es->requests_finished, es->requests_submitted, "%s: requests left behind", what);
    serval__v1__health_response__free_unpacked(h, NULL);
}

/* `serval complete` on the same prompt: the reference output. */
static char *cli_complete(const char *prompt, int max_tokens)
{
    char *bin = tu_bin_path("serval");
    char mt[16];
    snprintf(mt, sizeof mt, "%d", max_tokens);
    char *argv[] = {bin, "complete", "--model", (char *)tu_default_model(), "--prompt",
                    (char *)prompt, "--max-tokens", mt, "--threads", "2", "--quiet", NULL};
    char *out = NULL;
    cr_assert_eq(tu_run(argv, &out, NULL, 120), 0);
    free(bin);
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n') out[n - 1] = '\0';
    return out;
}

/* ---- tests -------------------------------------------------------------------------------- */

Test(grpc, complete_and_stream_match_the_cli, .timeout = 120)
{
    server s = server_start(NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    const char *prompt = "def fibonacci(n):";
    char *want = cli_complete(prompt, 8);
    gen g = {.prompt = prompt, .max_tokens = 8};
    rpc_client_result res;
    Serval__V1__CompleteResponse *r = complete(cl, &g, 60000, &res);
    cr_assert_not_null(r, "Complete: %d %s", res.code, res.details);
    cr_assert_str_eq(r->text, want, "gRPC and `serval complete` differ");
    cr_assert_gt(r->usage->prompt_tokens, 0);
    cr_assert(r->usage->output_tokens >= 1 && r->usage->output_tokens <= 8);
    cr_assert(r->finish_reason == SERVAL__V1__FINISH_REASON__FINISH_REASON_LENGTH ||
              r->finish_reason == SERVAL__V1__FINISH_REASON__FINISH_REASON_STOP);
    cr_assert(r->timings->total_ms >= r->timings->first_token_ms && r->timings->first_token_ms > 0);
    cr_assert(!strncmp(r->id, "cmpl-", 5));
    rpc_client_result_clear(&res);

    stream_acc a = {0};
    cr_assert_eq(stream(cl, &g, &a, 60000, &res), GRPC_STATUS_OK, "%s", res.details);
    cr_assert_str_eq(a.text, want, "streamed deltas do not add up to the completion");
    cr_assert_gt(a.chunks, 2, "a stream of 8 tokens came as %d messages", a.chunks);
    cr_assert_eq(a.finish, (int)r->finish_reason, "the last chunk carries the finish reason");
    cr_assert_eq(a.output_tokens, r->usage->output_tokens);
    rpc_client_result_clear(&res);
    serval__v1__complete_response__free_unpacked(r, NULL);
    free(want);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
    char *log = server_log(&s);
    cr_assert(strstr(log, "grpc /serval.v1.Serval/Complete prompt_tokens=") &&
                  strstr(log, "status=OK"),
              "no per-request log line: %s", log);
    free(log);
}

Test(grpc, every_rpc_answers, .timeout = 120)
{
    server s = server_start(NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client *anon = rpc_client_create(s.target, NULL);
    rpc_client_result res;

    /* Health needs no token but then says only whether it serves; with one, the engine too. */
    Serval__V1__HealthResponse *h = gt_health(anon);
    cr_assert_str_eq(h->status, "SERVING");
    cr_assert_null(h->engine, "Health without a token reports the engine's load");
    cr_assert_str_eq(h->model, "");
    serval__v1__health_response__free_unpacked(h, NULL);
    Serval__V1__EngineStats *es = health(cl, &h);
    cr_assert_str_eq(h->status, "SERVING");
    cr_assert_gt(es->kv_blocks_total, 0);
    cr_assert_gt(strlen(h->model), 0);
    serval__v1__health_response__free_unpacked(h, NULL);

    Serval__V1__ListModelsRequest lm = SERVAL__V1__LIST_MODELS_REQUEST__INIT;
    size_t len;
    uint8_t *b = gt_pack(&lm.base, &len);
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/ListModels", b, len, 5000, NULL, NULL,
                                 &res), GRPC_STATUS_OK);
    free(b);
    Serval__V1__ListModelsResponse *ml =
        serval__v1__list_models_response__unpack(NULL, res.last_len, res.last);
    cr_assert(ml && ml->n_models == 1);
    cr_assert_str_eq(ml->models[0]->architecture, "llama");
    cr_assert(ml->models[0]->supports_chat, "SmolLM2-Instruct has <|im_start|>");
    cr_assert_eq(ml->models[0]->vocab_size, 49152);
    serval__v1__list_models_response__free_unpacked(ml, NULL);
    rpc_client_result_clear(&res);

    /* Chat equals a raw completion of the ChatML rendering. */
    Serval__V1__ChatMessage m0 = SERVAL__V1__CHAT_MESSAGE__INIT, m1 = SERVAL__V1__CHAT_MESSAGE__INIT;
    m0.role = "system";
    m0.content = "You are a helpful assistant.";
    m1.role = "user";
    m1.content = "What is 2+2?";
    Serval__V1__ChatMessage *msgs[] = {&m0, &m1};
    Serval__V1__ChatRequest cr = SERVAL__V1__CHAT_REQUEST__INIT;
    cr.messages = msgs;
    cr.n_messages = 2;
    cr.max_tokens = 8;
    b = gt_pack(&cr.base, &len);
    stream_acc chat = {0};
    cr_assert_eq(rpc_client_call(cl, M_CHAT, b, len, 60000, acc_chunk, &chat, &res),
                 GRPC_STATUS_OK, "Chat: %s", res.details);
    rpc_client_result_clear(&res);
    cr_assert_gt(chat.len, 0, "Chat produced no text");
    gen g = {.prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                       "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
             .max_tokens = 8};
    Serval__V1__CompleteResponse *r = complete(cl, &g, 60000, &res);
    cr_assert_not_null(r);
    cr_assert_str_eq(chat.text, r->text, "Chat is not the ChatML rendering of its messages");
    serval__v1__complete_response__free_unpacked(r, NULL);
    rpc_client_result_clear(&res);
    m1.role = "wizard";
    free(b);
    b = gt_pack(&cr.base, &len);
    cr_assert_eq(rpc_client_call(cl, M_CHAT, b, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(res.details, "wizard"), "%s", res.details);
    free(b);

    /* Segments (no FIM tokens in this model: the prefix alone). */
    Serval__V1__Segments sg = SERVAL__V1__SEGMENTS__INIT;
    sg.prefix = "def add(a, b):\n    return";
    sg.suffix = "\n";
    sg.language = "python";
    Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
    rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS;
    rq.segments = &sg;
    rq.max_tokens = 4;
    b = gt_pack(&rq.base, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, b, len, 60000, NULL, NULL, &res),
                 GRPC_STATUS_OK, "segments: %s", res.details);
    r = serval__v1__complete_response__unpack(NULL, res.last_len, res.last);
    cr_assert(r && strstr(r->text, "a + b"), "segments completion: '%s'", r ? r->text : "");
    serval__v1__complete_response__free_unpacked(r, NULL);
    free(b);

    /* Embed (the default embedding model, tools/setup.sh's) refuses an empty request; Search
     * says why it is unavailable. */
    uint8_t empty = 0;
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Embed", &empty, 0, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT, "%s", res.details);
    cr_assert(strstr(res.details, "inputs"), "%s", res.details);
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Search", &empty, 0, 5000, NULL, NULL,
                                 &res), GRPC_STATUS_UNIMPLEMENTED);
    cr_assert(strstr(res.details, "indexer"), "%s", res.details);
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Nope", &empty, 0, 5000, NULL, NULL, &res),
                 GRPC_STATUS_UNIMPLEMENTED);
    rpc_client_result_clear(&res);
    rpc_client_free(anon);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
}

Test(grpc, bad_requests_get_the_right_status_and_the_server_keeps_serving, .timeout = 120)
{
    const char *extra[] = {"--max-message-mb", "1", NULL};
    server s = server_start(extra);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client *anon = rpc_client_create(s.target, NULL);
    rpc_client *wrong = rpc_client_create(s.target, "test-token-2");
    rpc_client_result res;
    gen g = {.prompt = "int main(void) {", .max_tokens = 4};
    size_t len;
    uint8_t *b = complete_req(&g, &len);

    cr_assert_eq(rpc_client_call(anon, M_COMPLETE, b, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_UNAUTHENTICATED);
    cr_assert_eq(rpc_client_call(wrong, M_STREAM, b, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_UNAUTHENTICATED);
    cr_assert_eq(res.n_messages, 0);
    free(b);

    const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, garbage, sizeof garbage, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(res.details, "malformed"), "%s", res.details);

    size_t big = (size_t)3 << 19; /* 1.5 MiB prompt, over the 1 MiB limit */
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = '\0';
    gen gh = {.prompt = huge, .max_tokens = 4};
    b = complete_req(&gh, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, b, len, 10000, NULL, NULL, &res),
                 GRPC_STATUS_RESOURCE_EXHAUSTED, "oversized: %d %s", res.code, res.details);
    free(b);

    /* Engine errors: a prompt past the context (ENG_ERR_TOO_LONG), bad sampling. */
    huge[40000] = '\0';
    for (int i = 0; i < 40000; i += 2) huge[i] = ' ';
    gh.prompt = huge;
    b = complete_req(&gh, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, b, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT, "too long: %d %s", res.code, res.details);
    cr_assert_gt(strlen(res.details), 10, "the status says why");
    free(b);
    free(huge);
    gen gt = {.prompt = "x", .max_tokens = 4, .temperature = -1};
    b = complete_req(&gt, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, b, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(res.details, "temperature"), "%s", res.details);
    free(b);
    gen ge = {.prompt = "", .max_tokens = 4};
    b = complete_req(&ge, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, b, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    free(b);

    /* Still serving. */
    Serval__V1__CompleteResponse *r = complete(cl, &g, 60000, &res);
    cr_assert_not_null(r, "after the bad requests: %d %s", res.code, res.details);
    cr_assert_gt(strlen(r->text), 0);
    serval__v1__complete_response__free_unpacked(r, NULL);
    rpc_client_result_clear(&res);
    rpc_client_free(wrong);
    rpc_client_free(anon);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
}

/* One policy for sampling (eng_sampler_params_check), the same on HTTP: a top_k above the
 * vocabulary keeps every token, a negative one is refused naming it. */
Test(grpc, top_k_above_the_vocabulary_is_clipped_like_http_and_the_engine, .timeout = 120)
{
    server s = server_start(NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client_result res;
    const float temps[] = {0.0f, 0.9f}; /* greedy, then seeded sampling */
    for (int t = 0; t < 2; t++) {
        gen off = {.prompt = "def fib(n):", .max_tokens = 8, .temperature = temps[t], .seed = 7};
        gen huge = off;
        huge.top_k = 10000000;
        Serval__V1__CompleteResponse *a = complete(cl, &off, 60000, &res);
        cr_assert_not_null(a, "top_k 0: %d %s", res.code, res.details);
        rpc_client_result_clear(&res);
        Serval__V1__CompleteResponse *b = complete(cl, &huge, 60000, &res);
        cr_assert_not_null(b, "top_k 10^7: %d %s", res.code, res.details);
        rpc_client_result_clear(&res);
        cr_assert_gt(strlen(a->text), 0);
        cr_assert_str_eq(b->text, a->text, "top_k 10^7 (temperature %g) differs from top_k 0",
                         (double)temps[t]);
        serval__v1__complete_response__free_unpacked(a, NULL);
        serval__v1__complete_response__free_unpacked(b, NULL);
    }
    gen neg = {.prompt = "def fib(n):", .max_tokens = 8, .top_k = -1};
    size_t len;
    uint8_t *req = complete_req(&neg, &len);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(res.details, "top_k -1 is negative"), "%s", res.details);
    rpc_client_result_clear(&res);
    free(req);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
}

/* Checks the engine holds the stream's blocks, then cancels it. */
static bool check_busy_then_cancel(stream_acc *a)
{
    if (a->chunks < 2) return true;
    Serval__V1__HealthResponse *h;
    Serval__V1__EngineStats *es = health(a->user, &h);
    cr_assert_eq(es->running, 1, "the streaming request should be running");
    cr_assert_gt(es->kv_blocks_used, 0, "a running request holds KV blocks");
    serval__v1__health_response__free_unpacked(h, NULL);
    return false;
}

Test(grpc, cancel_and_deadline_free_the_requests_blocks, .timeout = 120)
{
    server s = server_start(NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client_result res;
    gen g = {.prompt = "Write a long story about a cat.", .max_tokens = 2000, .ignore_eos = true};

    stream_acc a = {.on_chunk = check_busy_then_cancel, .user = cl};
    cr_assert_eq(stream(cl, &g, &a, 60000, &res), GRPC_STATUS_CANCELLED);
    cr_assert_eq(a.chunks, 2);
    expect_engine_idle(cl, "after a client cancel");

    double t0 = eng_clock_ms();
    cr_assert_null(complete(cl, &g, 500, &res));
    double ms = eng_clock_ms() - t0;
    cr_assert_eq(res.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", res.code, res.details);
    cr_assert_lt(ms, 3000, "a 500 ms deadline took %.0f ms", ms);
    expect_engine_idle(cl, "after a deadline");

    /* Idle within seconds although each asked for 2000 tokens: the engine dropped them. */
    Serval__V1__HealthResponse *h;
    Serval__V1__EngineStats *es = health(cl, &h);
    cr_assert_geq(es->requests_cancelled, 1, "the cancelled stream was cancelled in the engine");
    cr_assert_eq(es->in_flight_calls, 0);
    serval__v1__health_response__free_unpacked(h, NULL);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
    char *log = server_log(&s);
    cr_assert(strstr(log, "status=CANCELLED") && strstr(log, "status=DEADLINE_EXCEEDED"),
              "the log names how each call ended: %s", log);
    free(log);
}

/* ---- concurrency ------------------------------------------------------------------------- */

#define N_PROMPTS 4
static const char *const conc_prompts[N_PROMPTS] = {
    "def quicksort(arr):", "The capital of France is", "#include <stdio.h>\nint main(",
    "SELECT name FROM users WHERE"};

typedef struct worker {
    rpc_client *cl;
    int which;
    int max_tokens;
    bool ignore_eos;
    pthread_barrier_t *start;
    stream_acc acc;
    rpc_client_result res;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    gen g = {.prompt = conc_prompts[w->which], .max_tokens = w->max_tokens,
             .ignore_eos = w->ignore_eos};
    if (w->start) pthread_barrier_wait(w->start);
    stream(w->cl, &g, &w->acc, 120000, &w->res);
    return NULL;
}

/* 200 streams at once from 16 clients, each with its own token: under the per-token cap
 * (16 calls in flight per token by default), so none is refused. */
Test(grpc, two_hundred_concurrent_streams_match_their_solo_runs, .timeout = 180)
{
    enum { N_TOK = 16 };
    char toks[N_TOK][32], file[N_TOK * 32] = "";
    for (int i = 0; i < N_TOK; i++) {
        snprintf(toks[i], sizeof toks[i], "conc-token-%d", i);
        strcat(file, toks[i]);
        strcat(file, "\n");
    }
    char *token_file = tu_temp_path(".tokens");
    cr_assert_eq(tu_write_file(token_file, file, strlen(file)), 0);
    const char *extra[] = {"--token-file", token_file, NULL};
    server s = server_start(extra);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client *cls[N_TOK];
    for (int i = 0; i < N_TOK; i++) cls[i] = rpc_client_create(s.target, toks[i]);
    /* Each client's connection is made before the storm: grpc's channels connect lazily and a
     * call fails fast (UNAVAILABLE) when its channel's first connect attempt does, which is the
     * client's start-up, not what this test is about (one of 200 streams saw it once). */
    for (int i = 0; i < N_TOK; i++) {
        grpc_status_code code = GRPC_STATUS_UNAVAILABLE;
        for (int attempt = 0; attempt < 5 && code == GRPC_STATUS_UNAVAILABLE; attempt++) {
            rpc_client_result res;
            code = rpc_client_call(cls[i], M_HEALTH, "", 0, 10000, NULL, NULL, &res);
            rpc_client_result_clear(&res);
            if (code == GRPC_STATUS_UNAVAILABLE) usleep(100 * 1000);
        }
        cr_assert_eq(code, GRPC_STATUS_OK, "client %d connects", i);
    }
    char *solo[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        gen g = {.prompt = conc_prompts[i], .max_tokens = 6};
        rpc_client_result res;
        Serval__V1__CompleteResponse *r = complete(cl, &g, 60000, &res);
        cr_assert_not_null(r);
        solo[i] = strdup(r->text);
        serval__v1__complete_response__free_unpacked(r, NULL);
        rpc_client_result_clear(&res);
    }
    enum { N = 200 };
    worker *w = calloc(N, sizeof *w);
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){.cl = cls[i % N_TOK], .which = i % N_PROMPTS, .max_tokens = 6};
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 << 10);
        cr_assert_eq(pthread_create(&th[i], &at, worker_main, &w[i]), 0);
        pthread_attr_destroy(&at);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(w[i].res.code, GRPC_STATUS_OK, "stream %d: %d %s", i, w[i].res.code,
                     w[i].res.details);
        cr_assert_str_eq(w[i].acc.text, solo[w[i].which],
                         "stream %d under load differs from the same prompt alone", i);
        ok++;
        rpc_client_result_clear(&w[i].res);
    }
    cr_assert_eq(ok, N);
    expect_engine_idle(cl, "after 200 streams");
    for (int i = 0; i < N_PROMPTS; i++) free(solo[i]);
    free(w);
    for (int i = 0; i < N_TOK; i++) rpc_client_free(cls[i]);
    rpc_client_free(cl);
    unlink(token_file);
    free(token_file);
    cr_assert_eq(server_stop(&s), 0);
}

/* Starts n calls at once (48 tokens each) and counts how they ended. */
static void run_burst(rpc_client *cl, int n, int *n_ok, int *n_inflight, int *n_queue)
{
    worker w[8];
    pthread_t th[8];
    pthread_barrier_t bar;
    cr_assert_leq(n, 8);
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        w[i] = (worker){.cl = cl, .which = 0, .max_tokens = 48, .ignore_eos = true, .start = &bar};
        cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    *n_ok = *n_inflight = *n_queue = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (w[i].res.code == GRPC_STATUS_OK) {
            (*n_ok)++;
            cr_assert_eq(w[i].acc.output_tokens, 48);
        } else {
            cr_assert_eq(w[i].res.code, GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", w[i].res.code,
                         w[i].res.details);
            if (strstr(w[i].res.details, "in flight")) (*n_inflight)++;
            else (*n_queue)++;
        }
        rpc_client_result_clear(&w[i].res);
    }
    pthread_barrier_destroy(&bar);
}

Test(grpc, bounds_reject_with_resource_exhausted, .timeout = 120)
{
    /* The call bound: 3 calls in flight (one decoding, two queued), the rest refused. */
    const char *ex1[] = {"--max-inflight", "3", "--max-running", "1", NULL};
    server s = server_start(ex1);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    int ok, inflight, queue;
    run_burst(cl, 6, &ok, &inflight, &queue);
    cr_assert(ok == 3 && inflight == 3 && queue == 0,
              "--max-inflight 3: %d ok, %d refused by the call bound, %d by the engine", ok,
              inflight, queue);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);

    /* The engine's queue bound: one running, one waiting, the rest refused by the engine. */
    const char *ex2[] = {"--max-running", "1", "--max-waiting", "1", NULL};
    s = server_start(ex2);
    cl = rpc_client_create(s.target, TOKEN);
    run_burst(cl, 5, &ok, &inflight, &queue);
    cr_assert(ok >= 1 && ok <= 2 && inflight == 0 && queue == 5 - ok,
              "--max-waiting 1: %d ok, %d refused by the call bound, %d by the engine", ok,
              inflight, queue);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- shutdown and the Python peer --------------------------------------------------------- */

static bool sigterm_after_first(stream_acc *a)
{
    if (a->chunks == 1) kill(*(pid_t *)a->user, SIGTERM);
    return true;
}

Test(grpc, sigterm_drains_calls_in_flight_and_exits_zero, .timeout = 120)
{
    server s = server_start(NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    rpc_client_result res;
    gen g = {.prompt = "Once upon a time", .max_tokens = 24, .ignore_eos = true};
    stream_acc a = {.on_chunk = sigterm_after_first, .user = &s.pid};
    cr_assert_eq(stream(cl, &g, &a, 60000, &res), GRPC_STATUS_OK,
                 "a call in flight at SIGTERM finishes: %d %s", res.code, res.details);
    cr_assert_eq(a.output_tokens, 24);
    int st = 0;
    cr_assert_eq(waitpid(s.pid, &st, 0), s.pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "serval serve exit status %d", st);
    cr_assert_neq(rpc_client_call(cl, M_HEALTH, "", 0, 2000, NULL, NULL, &res), GRPC_STATUS_OK);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    char *log = server_log(&s);
    cr_assert(strstr(log, "draining") && strstr(log, "serval: stopped"), "%s", log);
    free(log);
}

Test(grpc, python_grpcio_peer_calls_every_rpc, .timeout = 120)
{
    server s = server_start(NULL);
    char *script = tu_source_path("tests/rpc/grpc_peer.py");
    char *argv[] = {"/usr/bin/python3", script, "--target", s.target, "--token", TOKEN,
                    "--stubs", SERVAL_PY_STUBS, NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 100);
    cr_assert_eq(rc, 0, "grpc_peer.py failed (%d):\n%s\n%s", rc, out, err);
    cr_assert(strstr(out, "peer: all RPCs ok"), "%s", out);
    free(out);
    free(err);
    free(script);
    cr_assert_eq(server_stop(&s), 0);
}

/* With --prefix-cache-per-token, a prompt one token cached is reused by that token only: the
 * same request from another token recomputes every block (no timing signal between users). */
Test(grpc, prefix_cache_per_token_keeps_each_tokens_prompts_to_itself, .timeout = 120)
{
    const char *extra[] = {"--token", "test-token-2", "--prefix-cache-per-token", NULL};
    server s = server_start(extra);
    rpc_client *a = rpc_client_create(s.target, TOKEN);
    rpc_client *b = rpc_client_create(s.target, "test-token-2");
    /* long enough for several full 16-token blocks */
    const char *prompt = "import os\nimport sys\n\ndef read_config(path):\n    \"\"\"Reads a key=value "
                         "file into a dict, skipping comments and blank lines.\"\"\"\n    out = {}\n"
                         "    with open(path) as f:\n        for line in f:\n";
    gen g = {.prompt = prompt, .max_tokens = 2};
    rpc_client_result res;
    int32_t cached[3];
    rpc_client *order[3] = {a, a, b};
    for (int i = 0; i < 3; i++) {
        Serval__V1__CompleteResponse *r = complete(order[i], &g, 60000, &res);
        cr_assert_not_null(r, "Complete %d: %d %s", i, res.code, res.details);
        cr_assert_gt(r->usage->prompt_tokens, 48);
        cached[i] = r->usage->cached_tokens;
        serval__v1__complete_response__free_unpacked(r, NULL);
        rpc_client_result_clear(&res);
    }
    cr_assert_eq(cached[0], 0, "the first request found %d cached tokens", cached[0]);
    cr_assert_geq(cached[1], 32, "the same token's second request reused only %d", cached[1]);
    cr_assert_eq(cached[2], 0, "another token reused %d cached tokens of the first's prompt",
                 cached[2]);
    rpc_client_free(a);
    rpc_client_free(b);
    cr_assert_eq(server_stop(&s), 0);
}
