/* test_grpc_limits.c — the gRPC server's hardening, in-process (rpc_grpc_server_start over a
 * real engine, so each test sets its own limits): draining (Health says DRAINING, new calls get
 * UNAVAILABLE, drain_wait times out, drain_abort ends it, stop returns), no client starving the
 * others (request-message timeout, streams per connection, per-token caps, generation timeout,
 * byte caps before tokenizing), Health without a token, one server per port (no SO_REUSEPORT
 * sharing), and TLS with a real grpcio client. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "grpc_client.h"
#include "grpc_server.h"
#include "grpc_test_util.h"
#include "serval.pb-c.h"
#include "serval_engine.h"
#include "testutil.h"

#define TOKEN "limits-token-1"
#define TOKEN2 "limits-token-2"

/* One engine, two tokens and a gRPC server with the test's config. */
typedef struct fixture {
    eng_model *m;
    eng_engine *e;
    rpc_auth *auth;
    rpc_grpc_server *s;
    char target[64];
    char *data_dir;
} fixture;

static void fx_engine_with(fixture *f, int32_t step_tokens)
{
    memset(f, 0, sizeof *f);
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &f->m, &err), ENG_OK, "%s", err.msg);
    eng_engine_config ec = {.n_threads = 2, .prefix_caching = true, .step_tokens = step_tokens};
    cr_assert_eq(eng_engine_create(f->m, &ec, &f->e, &err), ENG_OK, "%s", err.msg);
    const char *tokens[] = {TOKEN, TOKEN2};
    f->data_dir = tu_temp_path(".d");
    unlink(f->data_dir);
    rpc_auth_config ac = {.tokens = tokens, .n_tokens = 2, .data_dir = f->data_dir};
    const char *gen = NULL;
    cr_assert_eq(rpc_auth_create(&ac, &f->auth, &gen, &err), ENG_OK, "%s", err.msg);
}

static void fx_engine(fixture *f) { fx_engine_with(f, 0); }

static eng_status fx_try(fixture *f, rpc_grpc_config cfg, eng_err *err)
{
    int port = 0;
    eng_status st = rpc_grpc_server_start(&cfg, f->e, f->auth, &f->s, &port, err);
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", port);
    return st;
}

static void fx_start(fixture *f, rpc_grpc_config cfg)
{
    fx_engine(f);
    eng_err err = {{0}};
    cr_assert_eq(fx_try(f, cfg, &err), ENG_OK, "%s", err.msg);
}

static void fx_stop(fixture *f)
{
    rpc_grpc_server_stop(f->s, 0);
    rpc_auth_free(f->auth);
    eng_engine_free(f->e);
    eng_model_free(f->m);
    free(f->data_dir);
}

/* A call on its own thread: a stream of `max_tokens` (ignore_eos), its status and chunks. */
typedef struct bg_call {
    rpc_client *cl;
    const char *method;
    int max_tokens;
    int timeout_ms;
    int chunks;
    rpc_client_result res;
    pthread_t th;
} bg_call;

static bool count_chunk(void *user, const uint8_t *d, size_t n)
{
    (void)d;
    (void)n;
    ((bg_call *)user)->chunks++;
    return true;
}

static void *bg_main(void *arg)
{
    bg_call *b = arg;
    size_t len;
    uint8_t *req = gt_pack_complete("Once upon a time", b->max_tokens, &len);
    rpc_client_call(b->cl, b->method, req, len, b->timeout_ms, count_chunk, b, &b->res);
    free(req);
    return NULL;
}

static void bg_start(bg_call *b, rpc_client *cl, const char *method, int max_tokens)
{
    *b = (bg_call){.cl = cl, .method = method, .max_tokens = max_tokens, .timeout_ms = 120000};
    cr_assert_eq(pthread_create(&b->th, NULL, bg_main, b), 0);
}

/* Waits until the stream has sent at least n chunks (it is generating). */
static void bg_wait_chunks(bg_call *b, int n)
{
    for (int i = 0; i < 600 && __atomic_load_n(&b->chunks, __ATOMIC_SEQ_CST) < n; i++)
        usleep(50 * 1000);
    cr_assert_geq(b->chunks, n, "the background stream never got going");
}

/* ---- pollers only move events ------------------------------------------------------------- */

typedef struct big_call {
    rpc_client *cl;
    const uint8_t *req;
    size_t len;
    rpc_client_result res;
    double ms;
} big_call;

static void *big_main(void *arg)
{
    big_call *b = arg;
    double t0 = eng_clock_ms();
    rpc_client_call(b->cl, M_COMPLETE, b->req, b->len, 120000, NULL, NULL, &b->res);
    b->ms = eng_clock_ms() - t0;
    return NULL;
}

/* ---- one port, one server ----------------------------------------------------------------- */

Test(grpc_limits, a_second_server_on_a_port_in_use_is_refused_not_shared)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){0});
    int port = atoi(strchr(f.target, ':') + 1);
    rpc_grpc_server *second = NULL;
    int got = 0;
    eng_err err = {{0}};
    /* gRPC's default SO_REUSEPORT would let it start, and the kernel split clients between the
     * two servers. */
    cr_assert_eq(rpc_grpc_server_start(&(rpc_grpc_config){.port = port}, f.e, f.auth, &second,
                                       &got, &err), ENG_ERR_IO, "a second server started");
    cr_assert(strstr(err.msg, "cannot listen"), "%s", err.msg);
    rpc_grpc_starting *starting = NULL;
    cr_assert_eq(rpc_grpc_starting_start("127.0.0.1", port, &starting, &got, &err), ENG_ERR_IO,
                 "the start-up placeholder took a port in use");
    cr_assert(strstr(err.msg, "cannot listen"), "%s", err.msg);
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    Serval__V1__HealthResponse *h = gt_health(cl);
    cr_assert_str_eq(h->status, "SERVING", "the first server still serves");
    serval__v1__health_response__free_unpacked(h, NULL);
    rpc_client_free(cl);
    fx_stop(&f);
}

/* ---- draining ----------------------------------------------------------------------------- */

Test(grpc_limits, a_stream_in_flight_finishes_while_draining_and_health_says_so, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){0});
    rpc_client *cl = rpc_client_create(f.target, TOKEN), *anon = rpc_client_create(f.target, NULL);
    bg_call b;
    int serving = 0;
    cr_assert_eq(gt_grpc_health_check(anon, "", &serving), GRPC_STATUS_OK, "no token needed");
    cr_assert_eq(serving, 1, "grpc.health.v1 SERVING");
    cr_assert_eq(gt_grpc_health_check(anon, "serval.v1.Serval", &serving), GRPC_STATUS_OK);
    cr_assert_eq(serving, 1);
    cr_assert_eq(gt_grpc_health_check(anon, "other.Service", &serving), GRPC_STATUS_NOT_FOUND);
    bg_start(&b, cl, M_STREAM, 24);
    bg_wait_chunks(&b, 1);
    rpc_grpc_server_stop_accepting(f.s);

    cr_assert_eq(gt_grpc_health_check(anon, "", &serving), GRPC_STATUS_OK);
    cr_assert_eq(serving, 2, "grpc.health.v1 NOT_SERVING while draining");
    Serval__V1__HealthResponse *h = gt_health(anon);
    cr_assert_str_eq(h->status, "DRAINING");
    serval__v1__health_response__free_unpacked(h, NULL);
    h = gt_health(cl);
    cr_assert_str_eq(h->status, "DRAINING");
    cr_assert_not_null(h->engine);
    serval__v1__health_response__free_unpacked(h, NULL);

    size_t len;
    uint8_t *req = gt_pack_complete("x", 2, &len);
    rpc_client_result res;
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 5000, NULL, NULL, &res),
                 GRPC_STATUS_UNAVAILABLE, "a new call while draining: %s", res.details);
    cr_assert(strstr(res.details, "shutting down"), "%s", res.details);
    free(req);

    cr_assert(rpc_grpc_server_drain_wait(f.s, 60000), "the stream did not finish");
    pthread_join(b.th, NULL);
    cr_assert_eq(b.res.code, GRPC_STATUS_OK, "%s", b.res.details);
    rpc_client_result_clear(&b.res);
    rpc_client_free(anon);
    rpc_client_free(cl);
    fx_stop(&f);
}

Test(grpc_limits, drain_wait_times_out_and_stop_still_returns, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){0});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    bg_call b;
    bg_start(&b, cl, M_STREAM, 4000);
    bg_wait_chunks(&b, 1);
    double t0 = eng_clock_ms();
    cr_assert_not(rpc_grpc_server_drain_wait(f.s, 300), "a 4000-token stream ended in 300 ms");
    double waited = eng_clock_ms() - t0;
    cr_assert(waited >= 250 && waited < 2000, "drain_wait(300) took %.0f ms", waited);
    t0 = eng_clock_ms();
    rpc_grpc_server_stop(f.s, 0);
    f.s = NULL;
    double stopped = eng_clock_ms() - t0;
    cr_assert_lt(stopped, 5000, "stop took %.0f ms", stopped);
    pthread_join(b.th, NULL);
    cr_assert_neq(b.res.code, GRPC_STATUS_OK);
    rpc_client_result_clear(&b.res);
    rpc_client_free(cl);
    /* The engine let go of the request: nothing runs, nothing is held. */
    eng_engine_stats st;
    for (int i = 0; i < 100; i++) {
        eng_engine_stats_get(f.e, &st);
        if (st.running == 0 && st.kv_blocks_used == 0) break;
        usleep(20 * 1000);
    }
    cr_assert(st.running == 0 && st.kv_blocks_used == 0, "%d running, %d blocks", st.running,
              st.kv_blocks_used);
    fx_stop(&f);
}

typedef struct drainer {
    rpc_grpc_server *s;
    bool finished;
    double ms;
} drainer;

static void *drainer_main(void *arg)
{
    drainer *d = arg;
    double t0 = eng_clock_ms();
    d->finished = rpc_grpc_server_drain_wait(d->s, 60000);
    d->ms = eng_clock_ms() - t0;
    return NULL;
}

Test(grpc_limits, drain_abort_ends_the_drain_at_once_and_cancels_calls, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){0});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    bg_call b;
    bg_start(&b, cl, M_STREAM, 4000);
    bg_wait_chunks(&b, 1);
    drainer d = {.s = f.s};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drainer_main, &d), 0);
    usleep(300 * 1000);
    double t0 = eng_clock_ms();
    rpc_grpc_server_drain_abort(f.s);
    pthread_join(th, NULL);
    double after = eng_clock_ms() - t0;
    cr_assert_lt(after, 500, "drain_wait returned %.0f ms after the abort", after);
    pthread_join(b.th, NULL);
    cr_assert_eq(b.res.code, GRPC_STATUS_UNAVAILABLE, "%d %s", b.res.code, b.res.details);
    rpc_client_result_clear(&b.res);
    rpc_client_free(cl);
    fx_stop(&f);
}

/* One engine step (a whole long prompt's prefill) outlasts the drain: stop returns without
 * waiting for it, and the engine, finishing the step later, touches no freed call (ASan). */
Test(grpc_limits, stop_returns_while_one_engine_step_outlasts_the_drain, .timeout = 120)
{
    fixture f;
    fx_engine_with(&f, 4096);
    eng_err err = {{0}};
    cr_assert_eq(fx_try(&f, (rpc_grpc_config){0}, &err), ENG_OK, "%s", err.msg);
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    size_t n = 200 * 6; /* about 600 tokens: one prefill step of seconds on two cores */
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i++) text[i] = "word \n"[i % 6];
    text[n] = '\0';
    size_t len;
    big_call b = {.cl = cl};
    b.req = gt_pack_complete(text, 4, &len);
    b.len = len;
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, big_main, &b), 0);
    eng_engine_stats st;
    for (int i = 0; i < 500; i++) { /* until the engine has it; then its one prefill step runs */
        eng_engine_stats_get(f.e, &st);
        if (st.requests_submitted == 1) break;
        usleep(10 * 1000);
    }
    if (st.requests_submitted != 1) {
        pthread_join(th, NULL);
        cr_assert_fail("the long prompt never reached the engine: %d %s", b.res.code,
                       b.res.details);
    }
    usleep(200 * 1000);
    double t0 = eng_clock_ms();
    rpc_grpc_server_stop(f.s, 100);
    f.s = NULL;
    double ms = eng_clock_ms() - t0;
    eng_engine_stats_get(f.e, &st);
    double t_free = eng_clock_ms();
    cr_assert_lt(ms, 2000, "stop waited %.0f ms", ms);
    pthread_join(th, NULL);
    cr_assert_neq(b.res.code, GRPC_STATUS_OK);
    rpc_client_result_clear(&b.res);
    free((void *)b.req);
    free(text);
    rpc_client_free(cl);
    fx_stop(&f); /* eng_engine_free waits for the step; the released request notifies nobody */
    cr_log_info("stop took %.0f ms; the engine's step went on for %.0f ms more", ms,
                eng_clock_ms() - t_free);
}

/* ---- no client starves the others --------------------------------------------------------- */

Test(grpc_limits, a_call_that_never_sends_its_message_is_cancelled, .timeout = 60)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){.request_message_timeout_ms = 300});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    rpc_client_result res;
    double t0 = eng_clock_ms();
    cr_assert_eq(rpc_client_call_silent(cl, M_COMPLETE, 10000, &res), GRPC_STATUS_DEADLINE_EXCEEDED,
                 "%d %s", res.code, res.details);
    double ms = eng_clock_ms() - t0;
    cr_assert(ms >= 250 && ms < 3000, "cancelled after %.0f ms", ms);
    cr_assert(strstr(res.details, "no request message"), "%s", res.details);
    /* It holds no slot afterwards. */
    int inflight = -1;
    for (int i = 0; i < 50 && inflight != 0; i++) {
        Serval__V1__HealthResponse *h = gt_health(cl);
        inflight = h->engine->in_flight_calls;
        serval__v1__health_response__free_unpacked(h, NULL);
        usleep(20 * 1000);
    }
    cr_assert_eq(inflight, 0);
    rpc_client_free(cl);
    fx_stop(&f);
}

Test(grpc_limits, one_connection_gets_at_most_max_streams_per_connection, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){.max_streams_per_connection = 1});
    rpc_client *cl = rpc_client_create(f.target, TOKEN), *other = rpc_client_create(f.target, TOKEN);
    bg_call b;
    bg_start(&b, cl, M_STREAM, 4000);
    bg_wait_chunks(&b, 1);
    rpc_client_result res;
    /* Same connection: the second stream waits for the first (and its deadline passes). */
    cr_assert_eq(rpc_client_call(cl, M_HEALTH, "", 0, 1000, NULL, NULL, &res),
                 GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", res.code, res.details);
    /* Another connection is served at once. */
    cr_assert_eq(rpc_client_call(other, M_HEALTH, "", 0, 5000, NULL, NULL, &res), GRPC_STATUS_OK);
    rpc_client_result_clear(&res);
    rpc_grpc_server_drain_abort(f.s);
    pthread_join(b.th, NULL);
    rpc_client_result_clear(&b.res);
    rpc_client_free(other);
    rpc_client_free(cl);
    fx_stop(&f);
}

Test(grpc_limits, one_token_gets_at_most_max_inflight_per_token, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){.max_inflight_per_token = 2});
    rpc_client *cl = rpc_client_create(f.target, TOKEN), *cl2 = rpc_client_create(f.target, TOKEN2);
    bg_call b[2];
    for (int i = 0; i < 2; i++) bg_start(&b[i], cl, M_STREAM, 4000);
    for (int i = 0; i < 2; i++) bg_wait_chunks(&b[i], 1);
    size_t len;
    uint8_t *req = gt_pack_complete("def f(x):", 2, &len);
    rpc_client_result res;
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 10000, NULL, NULL, &res),
                 GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", res.code, res.details);
    cr_assert(strstr(res.details, "this token"), "%s", res.details);
    /* The other token is not held back by the first one's calls. */
    cr_assert_eq(rpc_client_call(cl2, M_COMPLETE, req, len, 60000, NULL, NULL, &res),
                 GRPC_STATUS_OK, "%d %s", res.code, res.details);
    rpc_client_result_clear(&res);
    free(req);
    rpc_grpc_server_drain_abort(f.s);
    for (int i = 0; i < 2; i++) {
        pthread_join(b[i].th, NULL);
        rpc_client_result_clear(&b[i].res);
    }
    rpc_client_free(cl2);
    rpc_client_free(cl);
    fx_stop(&f);
}

Test(grpc_limits, generation_timeout_ends_calls_deadline_exceeded_like_a_client_deadline,
     .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){.generation_timeout_ms = 500});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    bg_call b;
    bg_start(&b, cl, M_STREAM, 4000);
    pthread_join(b.th, NULL);
    cr_assert_eq(b.res.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", b.res.code, b.res.details);
    cr_assert(strstr(b.res.details, "500 ms"), "%s", b.res.details);
    cr_assert_gt(b.chunks, 0, "the stream's chunks before the limit were sent");
    rpc_client_result_clear(&b.res);
    bg_start(&b, cl, M_COMPLETE, 4000);
    pthread_join(b.th, NULL);
    cr_assert_eq(b.res.code, GRPC_STATUS_DEADLINE_EXCEEDED, "%d %s", b.res.code, b.res.details);
    cr_assert_eq(b.res.n_messages, 0, "a unary call past its deadline gets no response");
    rpc_client_result_clear(&b.res);
    eng_engine_stats st;
    for (int i = 0; i < 100; i++) {
        eng_engine_stats_get(f.e, &st);
        if (st.running == 0 && st.requests_cancelled >= 2) break;
        usleep(20 * 1000);
    }
    cr_assert_eq(st.running, 0);
    cr_assert_geq(st.requests_cancelled, 2);
    rpc_client_free(cl);
    fx_stop(&f);
}

Test(grpc_limits, a_4_mib_prompt_is_refused_before_tokenizing, .timeout = 60)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){.max_message_bytes = 16 << 20});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    size_t big = (size_t)4 << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = '\0';
    size_t len;
    uint8_t *req = gt_pack_complete(huge, 2, &len);
    rpc_client_result res;
    double t0 = eng_clock_ms();
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", res.code, res.details);
    double ms = eng_clock_ms() - t0;
    cr_assert(strstr(res.details, "prompt is 4194304 bytes"), "%s", res.details);
    cr_assert_lt(ms, 2000, "refusing a 4 MiB prompt took %.0f ms", ms);
    free(req);

    /* Segments: prefix + suffix together; a snippet body. */
    Serval__V1__Segments sg = SERVAL__V1__SEGMENTS__INIT;
    huge[(1 << 20) - 10] = '\0';
    sg.prefix = huge;
    sg.suffix = huge + (1 << 19);
    Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
    rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS;
    rq.segments = &sg;
    len = protobuf_c_message_get_packed_size(&rq.base);
    req = malloc(len);
    protobuf_c_message_pack(&rq.base, req);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", res.code, res.details);
    cr_assert(strstr(res.details, "prefix + suffix"), "%s", res.details);
    free(req);
    sg.prefix = "def f():";
    sg.suffix = "";
    Serval__V1__Snippet sn = SERVAL__V1__SNIPPET__INIT, *sns[1] = {&sn};
    huge[(100 << 10)] = '\0';
    sn.filepath = "a.py";
    sn.body = huge;
    sg.snippets = sns;
    sg.n_snippets = 1;
    len = protobuf_c_message_get_packed_size(&rq.base);
    req = malloc(len);
    protobuf_c_message_pack(&rq.base, req);
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_RESOURCE_EXHAUSTED, "%d %s", res.code, res.details);
    cr_assert(strstr(res.details, "snippet"), "%s", res.details);
    free(req);

    /* Chat: at most 256 messages. */
    enum { NM = 257 };
    Serval__V1__ChatMessage m[NM], *mp[NM];
    for (int i = 0; i < NM; i++) {
        serval__v1__chat_message__init(&m[i]);
        m[i].role = "user";
        m[i].content = "hi";
        mp[i] = &m[i];
    }
    Serval__V1__ChatRequest cr = SERVAL__V1__CHAT_REQUEST__INIT;
    cr.messages = mp;
    cr.n_messages = NM;
    len = protobuf_c_message_get_packed_size(&cr.base);
    req = malloc(len);
    protobuf_c_message_pack(&cr.base, req);
    cr_assert_eq(rpc_client_call(cl, M_CHAT, req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT, "%d %s", res.code, res.details);
    cr_assert(strstr(res.details, "at most 256 messages"), "%s", res.details);
    free(req);

    Serval__V1__HealthResponse *h = gt_health(cl);
    cr_assert_eq(h->engine->requests_submitted, 0, "a refused request reached the engine");
    serval__v1__health_response__free_unpacked(h, NULL);
    rpc_client_result_clear(&res);
    free(huge);
    rpc_client_free(cl);
    fx_stop(&f);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

/* A self-signed P-256 certificate for localhost / 127.0.0.1 in dir; false when openssl is
 * missing. */
static bool make_cert(const char *dir, char *cert, char *key, size_t cap)
{
    snprintf(cert, cap, "%s/cert.pem", dir);
    snprintf(key, cap, "%s/key.pem", dir);
    if (access("/usr/bin/openssl", X_OK) != 0) return false;
    char *argv[] = {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                    "-out", cert, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 30);
    cr_assert_eq(rc, 0, "openssl: %s", err);
    free(err);
    return true;
}

Test(grpc_limits, tls_serves_a_grpcio_client_and_bad_files_are_named, .timeout = 120)
{
    char dir[] = "/tmp/serval-tls-XXXXXX", cert[256], key[256];
    cr_assert_not_null(mkdtemp(dir));
    if (!make_cert(dir, cert, key, sizeof cert)) cr_skip_test("openssl is not installed");
    fixture f;
    fx_engine(&f);
    eng_err err = {{0}};
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.pem", dir);
    cr_assert_neq(fx_try(&f, (rpc_grpc_config){.tls_cert_file = missing, .tls_key_file = key},
                         &err), ENG_OK);
    cr_assert(strstr(err.msg, "nope.pem") && strstr(err.msg, "certificate"), "%s", err.msg);
    cr_assert_neq(fx_try(&f, (rpc_grpc_config){.tls_cert_file = key, .tls_key_file = key}, &err),
                  ENG_OK);
    cr_assert(strstr(err.msg, "not PEM"), "%s", err.msg);
    cr_assert_neq(fx_try(&f, (rpc_grpc_config){.tls_cert_file = cert}, &err), ENG_OK);
    cr_assert(strstr(err.msg, "both"), "%s", err.msg);

    cr_assert_eq(fx_try(&f, (rpc_grpc_config){.tls_cert_file = cert, .tls_key_file = key}, &err),
                 ENG_OK, "%s", err.msg);
    /* A plaintext client gets nowhere. */
    rpc_client *plain = rpc_client_create(f.target, TOKEN);
    rpc_client_result res;
    cr_assert_neq(rpc_client_call(plain, M_HEALTH, "", 0, 2000, NULL, NULL, &res), GRPC_STATUS_OK);
    rpc_client_free(plain);
    char *script = tu_source_path("tests/rpc/grpc_peer.py");
    char *argv[] = {"/usr/bin/python3", script, "--target", f.target, "--token", TOKEN,
                    "--stubs", SERVAL_PY_STUBS, "--tls-root", cert, NULL};
    char *out = NULL, *perr = NULL;
    int rc = tu_run(argv, &out, &perr, 100);
    cr_assert_eq(rc, 0, "grpc_peer.py over TLS failed (%d):\n%s\n%s", rc, out, perr);
    cr_assert(strstr(out, "peer: tls ok"), "%s", out);
    free(out);
    free(perr);
    free(script);
    fx_stop(&f);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

Test(grpc_limits, health_answers_while_big_prompts_are_tokenized, .timeout = 120)
{
    fixture f;
    fx_start(&f, (rpc_grpc_config){0});
    rpc_client *cl = rpc_client_create(f.target, TOKEN);
    size_t big = 400 << 10; /* under the engine's no-tokenize bound: tokenized, then too long */
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++) text[i] = "ab cd\n"[i % 6];
    text[big] = '\0';
    size_t len;
    uint8_t *req = gt_pack_complete(text, 2, &len);
    enum { NB = 4 };
    big_call b[NB];
    pthread_t th[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = (big_call){.cl = rpc_client_create(f.target, TOKEN), .req = req, .len = len};
        cr_assert_eq(pthread_create(&th[i], NULL, big_main, &b[i]), 0);
    }
    usleep(100 * 1000);
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = eng_clock_ms();
        Serval__V1__HealthResponse *h = gt_health(cl);
        serval__v1__health_response__free_unpacked(h, NULL);
        double ms = eng_clock_ms() - t0;
        if (ms > worst) worst = ms;
    }
    double slowest_big = 0;
    for (int i = 0; i < NB; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(b[i].res.code, GRPC_STATUS_INVALID_ARGUMENT, "%d %s", b[i].res.code,
                     b[i].res.details);
        if (b[i].ms > slowest_big) slowest_big = b[i].ms;
        rpc_client_result_clear(&b[i].res);
        rpc_client_free(b[i].cl);
    }
    cr_log_info("Health at worst %.0f ms while %d 400 KiB prompts took up to %.0f ms", worst, NB,
                slowest_big);
    cr_assert_lt(worst, 1000, "Health took %.0f ms while prompts were tokenized", worst);
    free(req);
    free(text);
    rpc_client_free(cl);
    fx_stop(&f);
}
