/* test_request_metrics.c — what a client and an operator see of each request's life, end to
 * end against a real `serval serve`: the request id and server timings on every response (HTTP
 * X-Request-Id and Server-Timing, a stream's final "serval" object, gRPC x-request-id and
 * x-serval-timings metadata) matching the request log, and /metrics' engine histograms (queue,
 * first token, end to end, abort to free) and wasted-token counters. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"

#define TABBY_BODY                                                                               \
    "{\"language\":\"python\",\"segments\":{\"prefix\":\"def add(a, b):\\n    \",\"suffix\":\"\"}}"
#define STREAM_BODY(n)                                                                           \
    "{\"prompt\":\"def fib(n):\",\"max_tokens\":" #n ",\"stream\":true}"

/* The value of header `name` in a raw header block (malloc'd), or NULL. */
static char *header(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = strstr(headers, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            const char *v = h + n + 1 + strspn(h + n + 1, " ");
            return strndup(v, strcspn(v, "\r\n"));
        }
    }
    return NULL;
}

/* The dur= of `name` in a Server-Timing value, or -1 when it is not there. */
static double dur(const char *timing, const char *name)
{
    char key[32];
    snprintf(key, sizeof key, "%s;dur=", name);
    const char *p = strstr(timing, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* queue <= ttft <= total, all present and non-negative: what a finished generation reports. */
static void expect_timings(const char *timing, const char *where)
{
    cr_assert_not_null(timing, "%s: no timings", where);
    double q = dur(timing, "queue"), f = dur(timing, "ttft"), t = dur(timing, "total");
    cr_assert(q >= 0 && f > 0 && t > 0, "%s: queue, ttft and total in '%s'", where, timing);
    cr_assert(q <= f && f <= t, "%s: queue <= ttft <= total in '%s'", where, timing);
}

/* The port of the server's other listener ("grpc" or "http"), from its log. */
static int log_port(const server *s, const char *listener)
{
    char *log = tu_read_file(s->log_path, NULL);
    char key[64];
    snprintf(key, sizeof key, "serval: %s listening on 127.0.0.1:", listener);
    const char *p = log ? strstr(log, key) : NULL;
    int port = p ? atoi(p + strlen(key)) : 0;
    free(log);
    cr_assert_gt(port, 0, "no '%s' line in the log", key);
    return port;
}

Test(request_metrics, every_http_response_carries_its_request_id_and_the_log_line_has_it,
     .timeout = 60)
{
    server s = server_start_log(NULL, false);
    tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN, TABBY_BODY);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *id = header(r.headers, "X-Request-Id");
    char *timing = header(r.headers, "Server-Timing");
    cr_assert(id && strncmp(id, "http-", 5) == 0, "X-Request-Id: %s", id ? id : "(none)");
    expect_timings(timing, "Tabby completion");
    tu_http_resp_free(&r);

    /* A reply without a generation has an id and no timings; ids differ per request. */
    r = request(s.port, "GET", "/v1/health", TOKEN, NULL);
    char *id2 = header(r.headers, "X-Request-Id");
    cr_assert(id2 && strncmp(id2, "http-", 5) == 0 && strcmp(id, id2) != 0, "%s then %s", id,
              id2 ? id2 : "(none)");
    cr_assert_null(header(r.headers, "Server-Timing"));
    tu_http_resp_free(&r);
    r = request(s.port, "POST", "/v1/completions", NULL, TABBY_BODY);
    cr_assert_eq(r.status, 401);
    cr_assert_not_null(header(r.headers, "X-Request-Id"), "errors carry the id too");
    tu_http_resp_free(&r);

    cr_assert_eq(server_stop(&s), 0);
    char *log = tu_read_file(s.log_path, NULL), line[64];
    snprintf(line, sizeof line, "serval: req %s http POST /v1/completions status=200", id + 5);
    cr_assert_not_null(strstr(log, line), "the log line of %s: %s", id, log);
    free(log);
    free(id);
    free(id2);
    free(timing);
}

Test(request_metrics, a_streams_id_comes_first_and_its_timings_in_the_last_event, .timeout = 60)
{
    server s = server_start(NULL);
    const char *paths[] = {"/v1/completions", "/v1/chat/completions", "/completion"};
    const char *bodies[] = {
        STREAM_BODY(6),
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":6,\"stream\":true}",
        "{\"prompt\":\"def fib(n):\",\"n_predict\":6,\"stream\":true}"};
    for (int k = 0; k < 3; k++) {
        tu_http_resp r = request(s.port, "POST", paths[k], TOKEN, bodies[k]);
        cr_assert_eq(r.status, 200, "%s: %s", paths[k], r.body);
        char *id = header(r.headers, "X-Request-Id");
        cr_assert_not_null(id, "%s: X-Request-Id on the stream's headers", paths[k]);
        size_t n;
        bool done;
        tu_json **ev = sse_events(&r, &n, &done);
        cr_assert_geq(n, 1);
        const tu_json *sv = tu_json_get(ev[n - 1], "serval");
        cr_assert_not_null(sv, "%s: the last event has the serval object: %s", paths[k], r.body);
        cr_assert_str_eq(jstr(sv, "request_id"), id, "%s", paths[k]);
        double q = tu_json_get(sv, "queue_ms")->num, f = tu_json_get(sv, "first_token_ms")->num,
               t = tu_json_get(sv, "total_ms")->num;
        cr_assert(q >= 0 && q <= f && f > 0 && f <= t, "%s: %g %g %g", paths[k], q, f, t);
        for (size_t i = 0; i + 1 < n; i++)
            cr_assert_null(tu_json_get(ev[i], "serval"), "%s: only the last event", paths[k]);
        sse_free(ev, n);
        free(id);
        tu_http_resp_free(&r);
    }
    cr_assert_eq(server_stop(&s), 0);
}

/* Sum of the histogram's bucket counts must be non-decreasing and end at its _count. */
static void expect_histogram(int port, const char *name, double want_count)
{
    /* The engine counts a request just after its reader saw it done: allow it a moment. */
    char count[160];
    snprintf(count, sizeof count, "%s_count", name);
    double t0 = now_s();
    while (metric(port, count) != want_count && now_s() - t0 < 2)
        usleep(10 * 1000);
    tu_http_resp r = request(port, "GET", "/metrics", TOKEN, NULL);
    cr_assert_eq(r.status, 200);
    char key[160];
    snprintf(key, sizeof key, "\n%s_bucket{le=\"", name);
    double last = -1, inf = -1;
    int buckets = 0;
    for (const char *p = strstr(r.body, key); p; p = strstr(p + 1, key)) {
        const char *sp = strchr(p + 1, ' ');
        double v = atof(sp + 1);
        cr_assert_geq(v, last, "%s: cumulative buckets never decrease", name);
        last = v;
        buckets++;
        if (strncmp(p + strlen(key), "+Inf", 4) == 0)
            inf = v;
    }
    tu_http_resp_free(&r);
    cr_assert_geq(buckets, 10, "%s: its buckets", name);
    cr_assert_eq(inf, metric(port, count), "%s: le=+Inf equals _count", name);
    cr_assert_eq(metric(port, count), want_count, "%s_count: %g, want %g", name,
                 metric(port, count), want_count);
}

Test(request_metrics, histograms_count_each_finished_request_and_an_abort_once, .timeout = 90)
{
    server s = server_start(NULL);
    for (int i = 0; i < 3; i++) {
        tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN, TABBY_BODY);
        cr_assert_eq(r.status, 200);
        tu_http_resp_free(&r);
    }
    expect_histogram(s.port, "serval_request_queue_seconds", 3);
    expect_histogram(s.port, "serval_request_first_token_seconds", 3);
    expect_histogram(s.port, "serval_request_total_seconds", 3);
    expect_histogram(s.port, "serval_request_abort_to_free_seconds", 0);
    cr_assert_eq(metric(s.port, "serval_wasted_generated_tokens_total"), 0);

    /* A client that reads two events of a long stream and hangs up, as tabby-agent does. */
    int fd = hc_connect(s.port, 30);
    const char *body = "{\"prompt\":\"Once upon a time\",\"n_predict\":3000,\"stream\":true}";
    cr_assert(tu_http_send(fd, "POST", "/completion", TOKEN, NULL, body, strlen(body)));
    char buf[8192];
    size_t got = 0;
    int events = 0;
    while (events < 3 && got < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        cr_assert_gt(n, 0, "the stream ended before two events");
        got += (size_t)n;
        buf[got] = 0;
        events = 0;
        for (const char *p = strstr(buf, "data: "); p; p = strstr(p + 1, "data: "))
            events++;
    }
    double t_close = now_s();
    close(fd);
    while (metric(s.port, "serval_request_abort_to_free_seconds_count") < 1 &&
           now_s() - t_close < 5)
        usleep(20 * 1000);
    expect_histogram(s.port, "serval_request_abort_to_free_seconds", 1);
    double sum = metric(s.port, "serval_request_abort_to_free_seconds_sum");
    cr_assert(sum >= 0 && sum < now_s() - t_close + 0.001, "abort to free took %g s", sum);
    cr_assert_eq(metric(s.port, "serval_engine_requests_cancelled_total"), 1);
    double gen = metric(s.port, "serval_wasted_generated_tokens_total");
    cr_assert(gen >= 2 && gen < 3000, "tokens generated for the aborted stream: %g", gen);
    cr_assert_geq(metric(s.port, "serval_wasted_prompt_tokens_total"), 3,
                  "its prompt was computed");
    /* Finished requests only: the abort is not an end-to-end sample. */
    expect_histogram(s.port, "serval_request_total_seconds", 3);
    cr_assert_eq(server_stop(&s), 0);
}

/* Counts the messages of a stream. */
static bool count_msg(void *user, const uint8_t *data, size_t len)
{
    (void)data;
    (void)len;
    ++*(int *)user;
    return true;
}

Test(request_metrics, grpc_metadata_carries_the_request_id_and_timings_the_log_joins,
     .timeout = 60)
{
    server s = server_start_log(NULL, false);
    int gport = log_port(&s, "grpc");
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", gport);
    rpc_client *cl = rpc_client_create(target, TOKEN);
    size_t len;
    uint8_t *req = gt_pack_complete("def add(a, b):", 8, &len);
    const char *methods[] = {M_COMPLETE, M_STREAM};
    char ids[2][64];
    for (int k = 0; k < 2; k++) {
        rpc_client_result res;
        int msgs = 0;
        cr_assert_eq(rpc_client_call(cl, methods[k], req, len, 30000, count_msg, &msgs, &res),
                     GRPC_STATUS_OK, "%s: %s", methods[k], res.details);
        cr_assert(strncmp(res.request_id, "grpc-", 5) == 0, "%s: x-request-id '%s'", methods[k],
                  res.request_id);
        expect_timings(res.timings, methods[k]);
        snprintf(ids[k], sizeof ids[k], "%s", res.request_id);
        rpc_client_result_clear(&res);
    }
    cr_assert_str_neq(ids[0], ids[1]);
    /* A refused call still says which one it was, without timings. */
    rpc_client *anon = rpc_client_create(target, NULL);
    rpc_client_result res;
    cr_assert_eq(rpc_client_call(anon, M_COMPLETE, req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_UNAUTHENTICATED);
    cr_assert(strncmp(res.request_id, "grpc-", 5) == 0, "'%s'", res.request_id);
    cr_assert_str_eq(res.timings, "");
    rpc_client_result_clear(&res);
    rpc_client_free(anon);
    free(req);
    rpc_client_free(cl);
    /* gRPC requests count in the engine's histograms, which /metrics (HTTP) shows. */
    cr_assert_eq(metric(s.port, "serval_request_total_seconds_count"), 2);
    cr_assert_eq(server_stop(&s), 0);
    char *log = tu_read_file(s.log_path, NULL), line[96];
    for (int k = 0; k < 2; k++) {
        snprintf(line, sizeof line, "serval: req %s grpc %s ", ids[k] + 5, methods[k]);
        cr_assert_not_null(strstr(log, line), "the log line of %s: %s", ids[k], log);
    }
    free(log);
}
