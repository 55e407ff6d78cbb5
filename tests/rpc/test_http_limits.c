/* test_http_limits.c — the HTTP front end's hardening end to end, on a real `serval serve` or
 * an in-process http_server with its own config: rate limits per token, disconnects and slow
 * clients, overload, deep JSON, drains, per-IP connections and header deadlines, per-token
 * caps, oversized text, stream timeouts, what the server exposes (events, CORS, health,
 * metrics, logged paths) and TLS. The routes themselves are in test_http.c. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "http_impl.h"
#include "http_test_util.h"
#include "tls_pem.h"
#include "testutil.h"

/* ---- rate limits -------------------------------------------------------------------------- */

Test(http, rate_limit_per_token, .timeout = 60)
{
    const char *extra[] = {"--token", "other", "--http-rate-limit", "1", "--http-rate-burst", "3",
                           NULL};
    server s = server_start(extra);
    int ok = 0, limited = 0;
    for (int i = 0; i < 6; i++) {
        tu_http_resp r = request(s.port, "GET", "/v1beta/server_setting", TOKEN, NULL);
        if (r.status == 200)
            ok++;
        if (r.status == 429) {
            limited++;
            cr_assert(strcasestr(r.headers, "Retry-After:"));
        }
        tu_http_resp_free(&r);
    }
    cr_assert_geq(ok, 3);
    cr_assert_geq(limited, 2, "a burst of 3 at 1/s lets at most 4 of 6 through");
    expect(s.port, "GET", "/v1beta/server_setting", "other", NULL, 200, NULL);
    expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- disconnects and slow clients ---------------------------------------------------------- */

Test(http, a_client_that_disconnects_cancels_its_generation, .timeout = 90)
{
    server s = server_start(NULL);
    const char *bodies[] = {
        "{\"prompt\":\"Once upon a time\",\"n_predict\":3000,\"stream\":false}",
        "{\"prompt\":\"Once upon a time\",\"n_predict\":3000,\"stream\":true}"};
    for (int k = 0; k < 2; k++) {
        int fd = hc_connect(s.port, 10);
        tu_http_send(fd, "POST", "/completion", TOKEN, NULL, bodies[k], strlen(bodies[k]));
        if (k == 1) { /* wait for the first event, then go */
            char buf[256];
            cr_assert_gt(recv(fd, buf, sizeof buf, 0), 0);
        }
        double tw = now_s();
        while (metric(s.port, "serval_running_sequences") != 1 && now_s() - tw < 10)
            usleep(20 * 1000);
        cr_assert_eq(metric(s.port, "serval_running_sequences"), 1, "it is generating");
        close(fd);
        double t0 = now_s();
        while (metric(s.port, "serval_running_sequences") != 0 && now_s() - t0 < 5)
            usleep(20 * 1000);
        cr_assert_eq(metric(s.port, "serval_running_sequences"), 0,
                     "closing the connection stops the work");
        cr_assert_lt(now_s() - t0, 2.0, "cancelled within %f s", now_s() - t0);
    }
    cr_assert_geq(metric(s.port, "serval_http_client_disconnects_total"), 2);
    expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
    cr_assert_eq(server_stop(&s), 0);
}

Test(http, slow_and_stalled_clients_are_cut_off, .timeout = 60)
{
    const char *extra[] = {"--http-client-timeout", "2", NULL};
    server s = server_start(extra);
    /* A stalled body: headers promise 100 bytes, 10 arrive. */
    int stalled = hc_connect(s.port, 10);
    const char *h = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                    "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"segments";
    tu_http_send_all(stalled, h, strlen(h));
    /* A drip: one byte every 300 ms keeps the idle timer happy but not the body timer. */
    int drip = hc_connect(s.port, 10);
    h = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
        "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    tu_http_send_all(drip, h, strlen(h));
    double t0 = now_s();
    bool drip_cut = false;
    for (int i = 0; i < 40 && !drip_cut; i++) {
        drip_cut = !tu_http_send_all(drip, " ", 1);
        /* Others are served meanwhile. */
        if (i == 2)
            expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
        usleep(300 * 1000);
        struct pollfd pf = {.fd = drip, .events = POLLIN | POLLRDHUP};
        if (poll(&pf, 1, 0) > 0) {
            char c;
            if (recv(drip, &c, 1, MSG_DONTWAIT) <= 0)
                drip_cut = true;
        }
    }
    cr_assert(drip_cut, "a slow-drip client is disconnected");
    cr_assert_lt(now_s() - t0, 8);
    char c;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(stalled, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cr_assert_leq(recv(stalled, &c, 1, 0), 0, "a stalled client is disconnected");
    close(stalled);
    close(drip);
    expect(s.port, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":\"x = \"}}", 200,
           "choices");
    cr_assert_eq(server_stop(&s), 0);
}

Test(http, overload_answers_503_with_retry_after, .timeout = 90)
{
    const char *extra[] = {"--max-running", "1", "--max-waiting", "1", NULL};
    server s = server_start(extra);
    const char *body = "{\"prompt\":\"Once upon a time\",\"n_predict\":4000,\"stream\":false}";
    int fds[2];
    for (int k = 0; k < 2; k++) { /* one running, one waiting */
        fds[k] = hc_connect(s.port, 10);
        tu_http_send(fds[k], "POST", "/completion", TOKEN, NULL, body, strlen(body));
        double t0 = now_s();
        while ((metric(s.port, "serval_running_sequences") + metric(s.port, "serval_queue_depth")) <
                   k + 1 && now_s() - t0 < 10)
            usleep(20 * 1000);
    }
    cr_assert_eq(metric(s.port, "serval_running_sequences"), 1);
    cr_assert_eq(metric(s.port, "serval_queue_depth"), 1);
    double t0 = now_s();
    tu_http_resp r = request(s.port, "POST", "/completion", TOKEN, body);
    cr_assert_eq(r.status, 503, "a third request with a full queue: %d %s", r.status,
                 r.body ? r.body : "");
    cr_assert_lt(now_s() - t0, 5.0, "answered at once, not after the queue drained");
    cr_assert(r.headers && strcasestr(r.headers, "Retry-After:"), "headers:\n%s", r.headers);
    cr_assert(r.body && strstr(r.body, "overloaded"), "%s", r.body);
    tu_http_resp_free(&r);
    close(fds[0]);
    close(fds[1]);
    t0 = now_s();
    while (metric(s.port, "serval_running_sequences") != 0 && now_s() - t0 < 10)
        usleep(50 * 1000);
    expect(s.port, "POST", "/completion", TOKEN,
           "{\"prompt\":\"Once upon a time\",\"n_predict\":2}", 200, "content");
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- hardening: in-process servers with their own config ---------------------------------- */

/* A server in this process (model, engine, auth with TOKEN and "other"), for what the
 * command line does not set and for the drain API. */
typedef struct inproc {
    eng_model *m;
    eng_engine *e;
    rpc_auth *auth;
    http_server *s;
    int port;
    char data_dir[64];
} inproc;

static inproc inproc_start(http_server_config cfg)
{
    signal(SIGPIPE, SIG_IGN);
    inproc p = {0};
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &p.m, &err), ENG_OK, "%s", err.msg);
    eng_engine_config ec = eng_engine_config_defaults();
    ec.n_threads = 2;
    ec.max_seq_len = 2048;
    ec.kv_bytes = 256 << 20;
    cr_assert_eq(eng_engine_create(p.m, &ec, &p.e, &err), ENG_OK, "%s", err.msg);
    const char *toks[] = {TOKEN, "other"};
    rpc_auth_config ac = {.tokens = toks, .n_tokens = 2};
    const char *gen = NULL;
    cr_assert_eq(rpc_auth_create(&ac, &p.auth, &gen, &err), ENG_OK, "%s", err.msg);
    snprintf(p.data_dir, sizeof p.data_dir, "/tmp/serval-http-XXXXXX");
    cr_assert_not_null(mkdtemp(p.data_dir));
    if (!cfg.data_dir)
        cfg.data_dir = p.data_dir;
    cfg.port = 0;
    cr_assert_eq(http_server_start(&cfg, p.e, p.auth, &p.s, &p.port, &err), ENG_OK, "%s",
                 err.msg);
    return p;
}

static void inproc_stop(inproc *p, int drain_ms)
{
    http_server_stop(p->s, drain_ms);
    eng_engine_free(p->e);
    rpc_auth_free(p->auth);
    eng_model_free(p->m);
}

static int engine_running(eng_engine *e)
{
    eng_engine_stats st;
    eng_engine_stats_get(e, &st);
    return st.running + st.waiting;
}

/* A request on its own thread (the answer lands in `r`). */
typedef struct bg_req {
    int port;
    const char *path, *body, *token;
    tu_http_resp r;
    double t_done;
    pthread_t th;
} bg_req;

static void *bg_main(void *p)
{
    bg_req *b = p;
    int fd = hc_connect(b->port, 60);
    tu_http_send(fd, "POST", b->path, b->token, NULL, b->body, strlen(b->body));
    b->r = tu_http_read(fd);
    b->t_done = now_s();
    close(fd);
    return NULL;
}

static void bg_start(bg_req *b, int port, const char *path, const char *body)
{
    *b = (bg_req){.port = port, .path = path, .body = body, .token = b->token ? b->token : TOKEN};
    cr_assert_eq(pthread_create(&b->th, NULL, bg_main, b), 0);
}

static void wait_running(eng_engine *e, int n)
{
    double t0 = now_s();
    while (engine_running(e) < n && now_s() - t0 < 20)
        usleep(10 * 1000);
    cr_assert_geq(engine_running(e), n, "the generation is running");
}

/* JSON nested d levels: {"a":[[[...]]]} (d counts the object). */
static char *nested(int d)
{
    char *b = malloc((size_t)d * 2 + 16);
    size_t n = (size_t)sprintf(b, "{\"a\":");
    for (int i = 1; i < d; i++)
        b[n++] = '[';
    for (int i = 1; i < d; i++)
        b[n++] = ']';
    b[n++] = '}';
    b[n] = 0;
    return b;
}

/* Was: POST /v1/events with ~1,900 levels killed the process (re-serialising recursed on a
 * 512 KiB thread stack). Every POST route of the table refuses deep JSON before parsing. */
Test(http, deeply_nested_json_to_every_post_route_is_refused_and_the_server_lives,
     .timeout = 90)
{
    server s = server_start(NULL);
    char *deep = nested(1900), *limit = nested(HTTP_MAX_JSON_DEPTH),
         *over = nested(HTTP_MAX_JSON_DEPTH + 1);
    int n_routes = 0;
    for (int i = 0; i < HTTP_ROUTE_OTHER; i++) {
        const http_route_def *d = http_route_get((http_route)i);
        if (!(d->methods & HTTP_METHOD_POST) || !d->json_body)
            continue;
        n_routes++;
        expect(s.port, "POST", d->path, TOKEN, deep, 400, "nests deeper than 64 levels");
        expect(s.port, "POST", d->path, TOKEN, over, 400, "nests deeper than 64 levels");
        tu_http_resp r = request(s.port, "POST", d->path, TOKEN, limit);
        cr_assert(r.status != 0 && r.status < 500, "%s at the limit: %d %s", d->path, r.status,
                  r.body);
        cr_assert(!r.body || !strstr(r.body, "nests deeper"), "%s: %s", d->path, r.body);
        if (i == HTTP_ROUTE_V1_EVENTS)
            cr_assert_eq(r.status, 200, "an event at the limit is taken: %s", r.body);
        tu_http_resp_free(&r);
    }
    cr_assert_geq(n_routes, 6);
    /* A well-formed search on a server that indexes nothing says so (and only then). */
    expect(s.port, "POST", "/v1beta/search", TOKEN, "{\"query\":\"socket\"}", 501,
           "indexes no repository");
    expect(s.port, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":\"def f():\\n\"}}",
           200, "choices");
    free(deep);
    free(limit);
    free(over);
    cr_assert_eq(server_stop(&s), 0);
}

#define LONG_GEN "{\"prompt\":\"Once upon a time\",\"n_predict\":4000,\"stream\":false}"

Test(http, drain_lets_in_flight_requests_finish_and_answers_new_ones_503, .timeout = 120)
{
    inproc p = inproc_start((http_server_config){0});
    bg_req b = {0};
    bg_start(&b, p.port, "/completion", "{\"prompt\":\"def add(a, b):\",\"n_predict\":24}");
    wait_running(p.e, 1);
    http_server_drain_begin(p.s);
    tu_http_resp r =
        request(p.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"n_predict\":2}");
    cr_assert_eq(r.status, 503, "%d %s", r.status, r.body);
    cr_assert(strcasestr(r.headers, "Connection: close"), "%s", r.headers);
    tu_json_free(json_of(&r));
    tu_http_resp_free(&r);
    expect(p.port, "GET", "/v1/health", TOKEN, NULL, 503, "draining");
    expect(p.port, "GET", "/health", NULL, NULL, 503, "draining");
    cr_assert(http_server_drain_wait(p.s, 60000), "every request finished");
    pthread_join(b.th, NULL);
    cr_assert_eq(b.r.status, 200, "the in-flight request finished: %d %s", b.r.status, b.r.body);
    tu_http_resp_free(&b.r);
    inproc_stop(&p, 0);
}

Test(http, drain_wait_times_out_and_stop_still_returns, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){0});
    bg_req b = {0};
    bg_start(&b, p.port, "/completion", LONG_GEN);
    wait_running(p.e, 1);
    double t0 = now_s();
    cr_assert_not(http_server_drain_wait(p.s, 300), "a 4000-token generation is still going");
    cr_assert_lt(now_s() - t0, 2.0);
    t0 = now_s();
    http_server_stop(p.s, 200);
    cr_assert_lt(now_s() - t0, 5.0, "stop returned after %.1f s", now_s() - t0);
    pthread_join(b.th, NULL);
    cr_assert_neq(b.r.status, 200, "the generation was cut");
    tu_http_resp_free(&b.r);
    p.s = NULL;
    double t1 = now_s();
    while (engine_running(p.e) > 0 && now_s() - t1 < 5)
        usleep(10 * 1000);
    cr_assert_eq(engine_running(p.e), 0, "its engine request was cancelled");
    inproc_stop(&p, 0);
}

typedef struct drain_arg {
    http_server *s;
    bool all_done;
    double t_done;
} drain_arg;

static void *drain_main(void *p)
{
    drain_arg *a = p;
    a->all_done = http_server_drain_wait(a->s, 60000);
    a->t_done = now_s();
    return NULL;
}

Test(http, drain_abort_ends_a_drain_at_once_and_cancels_generations, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){0});
    bg_req b[2] = {{0}};
    bg_start(&b[0], p.port, "/completion", LONG_GEN);
    bg_start(&b[1], p.port, "/completion",
             "{\"prompt\":\"Once upon a time\",\"n_predict\":4000,\"stream\":true}");
    wait_running(p.e, 2);
    drain_arg a = {.s = p.s};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, drain_main, &a), 0);
    usleep(300 * 1000);
    double t0 = now_s();
    http_server_drain_abort(p.s);
    pthread_join(th, NULL);
    cr_assert_lt(a.t_done - t0, 0.5, "drain_wait returned %.2f s after the abort", a.t_done - t0);
    for (int k = 0; k < 2; k++) {
        pthread_join(b[k].th, NULL);
        cr_assert_lt(b[k].t_done - t0, 3.0, "request %d ended %.2f s after the abort", k,
                     b[k].t_done - t0);
        tu_http_resp_free(&b[k].r);
    }
    double t1 = now_s();
    while (engine_running(p.e) > 0 && now_s() - t1 < 5)
        usleep(10 * 1000);
    cr_assert_eq(engine_running(p.e), 0, "the generations were cancelled");
    inproc_stop(&p, 1000);
}

/* ---- hardening: no client starves the others ---------------------------------------------- */

/* Whether the server closed fd within timeout_s (a read returns EOF or an error). */
static bool closed_within(int fd, double timeout_s)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN | POLLRDHUP};
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        if (poll(&pf, 1, 50) > 0) {
            char c[512];
            ssize_t k = recv(fd, c, sizeof c, MSG_DONTWAIT);
            if (k <= 0)
                return true;
        }
    }
    return false;
}

Test(http, per_ip_connections_and_an_absolute_header_deadline, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.per_ip_connections = 2, .body_timeout_s = 2});
    int a = hc_connect(p.port, 10), b = hc_connect(p.port, 10), c = hc_connect(p.port, 10);
    cr_assert(closed_within(c, 2), "a third connection from one address is closed");
    close(c);
    /* A slowloris: a header byte every 300 ms never lets MHD's idle timer fire; the absolute
     * deadline (2 s for request line, headers and body) cuts it. */
    const char *h = "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double t0 = now_s();
    bool cut = false;
    for (size_t i = 0; h[i] && !cut; i++) {
        cut = !tu_http_send_all(a, h + i, 1) || closed_within(a, 0.3);
    }
    cr_assert(cut, "the slow-header client is cut off");
    cr_assert_lt(now_s() - t0, 4.0, "cut after %.1f s", now_s() - t0);
    close(a);
    close(b);
    /* The address's count drops once MHD has cleaned the closed connections up. */
    tu_http_resp r = {0};
    for (double t1 = now_s(); r.status == 0 && now_s() - t1 < 5; usleep(50 * 1000)) {
        tu_http_resp_free(&r);
        r = request(p.port, "GET", "/v1/models", TOKEN, NULL);
    }
    cr_assert_eq(r.status, 200, "served again once the connections are gone: %d", r.status);
    tu_http_resp_free(&r);
    inproc_stop(&p, 0);
}

Test(http, per_token_caps_and_rate_limits_key_on_the_token_not_its_spelling, .timeout = 90)
{
    inproc p = inproc_start((http_server_config){.max_inflight_per_token = 1,
                                                 .rate_limit_rps = 0.01, .rate_limit_burst = 3});
    bg_req b = {0};
    bg_start(&b, p.port, "/completion", LONG_GEN);
    wait_running(p.e, 1);
    /* The same token, spelled another way, is the same identity: its one slot is taken. */
    int fd = hc_connect(p.port, 10);
    tu_http_send(fd, "GET", "/v1/models", NULL, "Authorization: bearer    " TOKEN "  \r\n", NULL,
                 0);
    tu_http_resp r = tu_http_read(fd);
    close(fd);
    cr_assert_eq(r.status, 429, "%d %s", r.status, r.body);
    cr_assert(strcasestr(r.headers, "Retry-After:"), "%s", r.headers);
    cr_assert(strstr(r.body, "in flight"), "%s", r.body);
    tu_http_resp_free(&r);
    expect(p.port, "GET", "/v1/models", "other", NULL, 200, NULL); /* another token is served */
    /* TOKEN's burst of 3: the generation, the 429 above and one more spelling; the fourth
     * request is rate limited whatever its spelling. */
    const char *spellings[] = {"BEARER " TOKEN, "Bearer  " TOKEN};
    for (int i = 0; i < 2; i++) {
        char hdr[96];
        snprintf(hdr, sizeof hdr, "Authorization: %s\r\n", spellings[i]);
        fd = hc_connect(p.port, 10);
        tu_http_send(fd, "GET", "/v1/models", NULL, hdr, NULL, 0);
        r = tu_http_read(fd);
        close(fd);
        cr_assert_eq(r.status, 429, "%s: %d %s", spellings[i], r.status, r.body);
        if (i == 1)
            cr_assert(strstr(r.body, "rate limit"), "a new spelling is no new bucket: %s", r.body);
        tu_http_resp_free(&r);
    }
    usleep(100 * 1000); /* "other"'s last request leaves the count once MHD has finished it */
    expect(p.port, "GET", "/v1/models", "other", NULL, 200, NULL);
    http_server_drain_abort(p.s);
    pthread_join(b.th, NULL);
    tu_http_resp_free(&b.r);
    inproc_stop(&p, 0);
}

/* A string of n bytes of 'a' inside fmt (which has one %s). */
static char *big_body(const char *fmt, size_t n)
{
    char *a = malloc(n + 1);
    memset(a, 'a', n);
    a[n] = 0;
    char *out = malloc(n + strlen(fmt) + 1);
    sprintf(out, fmt, a);
    free(a);
    return out;
}

Test(http, oversized_text_is_refused_before_tokenizing, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.max_body_bytes = 8u << 20});
    const struct {
        const char *path, *fmt;
        int status;
        const char *needle;
    } cases[] = {
        {"/completion", "{\"prompt\":\"%s\"}", 413, "prompt is 4194304 bytes"},
        {"/v1/completions", "{\"prompt\":\"%s\"}", 400, "\"param\":\"prompt\""},
        {"/v1/completions", "{\"segments\":{\"prefix\":\"%s\"}}", 413, "segments is"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", 400,
         "\"param\":\"messages\""},
        {"/tokenize", "{\"content\":\"%s\"}", 413, "content is 4194304 bytes"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = big_body(cases[i].fmt, 4u << 20);
        double t0 = now_s();
        expect(p.port, "POST", cases[i].path, TOKEN, body, cases[i].status, cases[i].needle);
        cr_assert_lt(now_s() - t0, 2.0, "%s: answered in %.2f s", cases[i].path, now_s() - t0);
        free(body);
    }
    /* /tokenize: up to the engine's text cap, 64 bytes per context position (2048 here). */
    char *ok = big_body("{\"content\":\"%s\"}", 64 * 2048 - 1);
    expect(p.port, "POST", "/tokenize", TOKEN, ok, 200, "tokens");
    free(ok);
    char *over = big_body("{\"content\":\"%s\"}", 64 * 2048);
    expect(p.port, "POST", "/tokenize", TOKEN, over, 413, "the context of 2048 tokens");
    free(over);
    inproc_stop(&p, 0);
}

Test(http, streams_obey_the_request_timeout, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.request_timeout_s = 1});
    double t0 = now_s();
    tu_http_resp r = request(p.port, "POST", "/v1/completions", TOKEN,
                     "{\"prompt\":\"Once upon a time\",\"max_tokens\":4000,\"stream\":true}");
    cr_assert_lt(now_s() - t0, 4.0, "the stream ended after %.1f s", now_s() - t0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.body && strstr(r.body, "generation took longer than 1 s"), "%s", r.body);
    tu_http_resp_free(&r);
    inproc_stop(&p, 0);
}

/* ---- hardening: what the server exposes ----------------------------------------------------- */

static tu_http_resp raw_request(int port, const char *text)
{
    int fd = hc_connect(port, 10);
    cr_assert(tu_http_send_all(fd, text, strlen(text)));
    tu_http_resp r = tu_http_read(fd);
    close(fd);
    return r;
}

Test(http, events_keep_known_fields_under_caps_and_never_show_paths, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.events_max_bytes_per_day = 400});
    expect(p.port, "POST", "/v1/events?select_kind=line", TOKEN,
           "{\"type\":\"select\",\"completion_id\":\"cmpl-1\",\"choice_index\":0,\"elapsed\":12,"
           "\"secret\":\"dropped\",\"view_id\":{\"nested\":1}}", 200, NULL);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/events", p.data_dir);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *de;
    char path[512] = "";
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".jsonl"))
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    closedir(d);
    char *log = tu_read_file(path, NULL);
    cr_assert(log && strstr(log, "\"type\":\"select\"") && strstr(log, "\"select_kind\":\"line\""),
              "%s", log);
    cr_assert_null(strstr(log, "secret"), "unknown fields are dropped: %s", log);
    cr_assert_null(strstr(log, "nested"), "only scalar values are kept: %s", log);
    free(log);
    char *big = big_body("{\"type\":\"view\",\"view_id\":\"%s\"}", 9000);
    expect(p.port, "POST", "/v1/events", TOKEN, big, 413, "8192");
    free(big);
    int limited = 0;
    for (int i = 0; i < 8; i++) {
        tu_http_resp r = request(p.port, "POST", "/v1/events", TOKEN,
                         "{\"type\":\"view\",\"completion_id\":\"cmpl-1234567890\"}");
        limited += r.status == 429;
        tu_http_resp_free(&r);
    }
    cr_assert_geq(limited, 4, "the day's 400 bytes are spent");
    inproc_stop(&p, 0);
    /* An unwritable data dir: a 500 that names no path. */
    inproc q = inproc_start((http_server_config){.data_dir = "/proc/serval-no-such-dir"});
    tu_http_resp r = request(q.port, "POST", "/v1/events", TOKEN, "{\"type\":\"view\"}");
    cr_assert_eq(r.status, 500);
    cr_assert_null(strstr(r.body, "/proc"), "%s", r.body);
    tu_http_resp_free(&r);
    inproc_stop(&q, 0);
}

Test(http, exposure_content_type_cors_health_metrics_and_bodies, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.cors_origins = "http://a.example, http://b.example",
                                                 .metrics_token = "scrape"});
    /* POST bodies must be JSON. */
    tu_http_resp r =
        raw_request(p.port, "POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                            "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 415, "%d %s", r.status, r.body);
    tu_http_resp_free(&r);
    r = raw_request(p.port, "POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                            "\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 415, "no Content-Type: %d", r.status);
    tu_http_resp_free(&r);
    expect(p.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"n_predict\":1}", 200, NULL);
    /* CORS: only listed origins. */
    const char *origins[] = {"http://b.example", "http://evil.example"};
    for (int i = 0; i < 2; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "Origin: %s\r\n", origins[i]);
        int fd = hc_connect(p.port, 10);
        tu_http_send(fd, "GET", "/v1/models", TOKEN, hdr, NULL, 0);
        r = tu_http_read(fd);
        close(fd);
        char want[128];
        snprintf(want, sizeof want, "Access-Control-Allow-Origin: %s", origins[i]);
        cr_assert_eq(strcasestr(r.headers, "Access-Control-Allow-Origin") != NULL, i == 0, "%s",
                     r.headers);
        if (i == 0)
            cr_assert(strcasestr(r.headers, want), "%s", r.headers);
        tu_http_resp_free(&r);
    }
    /* Health: liveness only without a token; a body is refused. */
    r = request(p.port, "GET", "/v1/health", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, "model"), "no model without a token: %s", r.body);
    tu_http_resp_free(&r);
    r = raw_request(p.port, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    cr_assert_eq(r.status, 400, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "takes no request body"), "%s", r.body);
    tu_http_resp_free(&r);
    /* /v1/health: a small body (older Tabby clients POST one) is ignored, a big one refused. */
    r = raw_request(p.port, "POST /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    tu_http_resp_free(&r);
    r = raw_request(p.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n");
    cr_assert_eq(r.status, 413, "%d %s", r.status, r.body);
    tu_http_resp_free(&r);
    /* /metrics: an API token or the metrics token, which opens nothing else. */
    expect(p.port, "GET", "/metrics", "scrape", NULL, 200, "serval_");
    expect(p.port, "GET", "/metrics", TOKEN, NULL, 200, "serval_");
    expect(p.port, "GET", "/metrics", NULL, NULL, 401, NULL);
    expect(p.port, "GET", "/v1/models", "scrape", NULL, 401, NULL);
    inproc_stop(&p, 0);
}

/* Control bytes in a path cannot forge log lines. */
Test(http, logged_paths_escape_control_bytes, .timeout = 60)
{
    server s = server_start_log(NULL, false);
    expect(s.port, "GET", "/x%0aserval:%20req%201%20http%20FORGED", TOKEN, NULL, 404, NULL);
    /* Was: a path that is not UTF-8 answered 500 (the 404's message quoted it, jansson refused
     * it); found by fuzz_http. */
    expect(s.port, "GET", "/caf\xe9%ff", TOKEN, NULL, 404, "no route for GET /caf\\\\xe9\\\\xff");
    cr_assert_eq(server_stop(&s), 0);
    char *log = tu_read_file(s.log_path, NULL);
    cr_assert_not_null(log);
    cr_assert_null(strstr(log, "\nserval: req 1 http FORGED"), "log:\n%s", log);
    cr_assert(strstr(log, "/x\\x0aserval:"), "log:\n%s", log);
    free(log);
}

/* ---- TLS ------------------------------------------------------------------------------------ */

Test(http, tls_serves_https_to_a_real_client, .timeout = 60)
{
    if (access("/usr/bin/openssl", X_OK) != 0 || access("/usr/bin/curl", X_OK) != 0)
        cr_skip_test("openssl or curl is missing");
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
        cr_skip_test("libmicrohttpd was built without TLS");
    char dir[] = "/tmp/serval-tls-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cert[64], key[64];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    char *gen[] = {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                   "-keyout", key, "-out", cert, NULL};
    char *err = NULL;
    cr_assert_eq(tu_run(gen, NULL, &err, 30), 0, "openssl: %s", err);
    free(err);
    inproc p = inproc_start((http_server_config){.tls_cert_file = cert, .tls_key_file = key});
    char url[128];
    snprintf(url, sizeof url, "https://localhost:%d/v1/health", p.port);
    char *curl[] = {"/usr/bin/curl", "-sS", "--cacert", cert, "--resolve", NULL, url, NULL};
    char resolve[64];
    snprintf(resolve, sizeof resolve, "localhost:%d:127.0.0.1", p.port);
    curl[5] = resolve;
    char *out = NULL;
    err = NULL;
    cr_assert_eq(tu_run(curl, &out, &err, 30), 0, "curl: %s", err);
    cr_assert(out && strstr(out, "\"status\":\"ok\""), "%s", out);
    free(out);
    free(err);
    /* Plain HTTP to the TLS port gets no HTTP answer. */
    tu_http_resp r = request(p.port, "GET", "/v1/health", NULL, NULL);
    cr_assert_neq(r.status, 200);
    tu_http_resp_free(&r);
    inproc_stop(&p, 0);
    /* A key that is not PEM: a clear error, nothing served. */
    eng_err e = {{0}};
    inproc q = {0};
    cr_assert_eq(eng_model_load(tu_default_model(), &q.m, &e), ENG_OK);
    eng_engine_config ec = eng_engine_config_defaults();
    ec.max_seq_len = 2048;
    ec.kv_bytes = 64 << 20;
    cr_assert_eq(eng_engine_create(q.m, &ec, &q.e, &e), ENG_OK, "%s", e.msg);
    rpc_auth_config ac = {.no_auth = true};
    const char *g = NULL;
    cr_assert_eq(rpc_auth_create(&ac, &q.auth, &g, &e), ENG_OK);
    http_server_config bad = {.tls_cert_file = cert, .tls_key_file = "/etc/hostname"};
    cr_assert_neq(http_server_start(&bad, q.e, q.auth, &q.s, NULL, &e), ENG_OK);
    cr_assert(strstr(e.msg, "not PEM"), "%s", e.msg);
    /* A key file past the 1 MiB cap (no NUL in it, the marker only past the cap): refused by
     * size, read no further than the cap. */
    char big[300];
    snprintf(big, sizeof big, "%s.big", cert);
    FILE *bf = fopen(big, "wb");
    cr_assert_not_null(bf);
    for (unsigned i = 0; i < RPC_PEM_MAX_BYTES; i++)
        fputc('A', bf);
    fputs("-----BEGIN PRIVATE KEY-----\n", bf);
    fclose(bf);
    bad.tls_key_file = big;
    cr_assert_neq(http_server_start(&bad, q.e, q.auth, &q.s, NULL, &e), ENG_OK);
    cr_assert(strstr(e.msg, "larger than") && strstr(e.msg, big), "%s", e.msg);
    unlink(big);
    bad.tls_key_file = NULL;
    cr_assert_neq(http_server_start(&bad, q.e, q.auth, &q.s, NULL, &e), ENG_OK);
    cr_assert(strstr(e.msg, "both"), "%s", e.msg);
    inproc_stop(&q, 0);
}

/* serval_prompt_tokens_cached_total from /metrics. */