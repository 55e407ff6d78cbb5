/* test_supersede.c — supersede end to end against a real `serval serve`: a newer completion
 * with the same session key (Tabby: token + segments.filepath; OpenAI: "session_key" or the
 * X-Serval-Session header; gRPC: session_key) answers the older one at once (HTTP: an empty
 * completion marked "superseded", streams included; gRPC: CANCELLED), the newer one reuses the
 * prompt blocks the older computed, one token never supersedes another's requests, and
 * --supersede off turns it off. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc_test_util.h"
#include "http_test_util.h"

#define TOKEN2 "second_user_token"

/* About 600 tokens of Python: long enough that its prefill and generation on two threads are
 * still running when a test sends the next request. Each function differs, so no block repeats another. */
static char *long_code(void)
{
    size_t cap = 16384, n = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    for (int i = 0; n + 400 < cap && i < 16; i++)
        n += (size_t)snprintf(s + n, cap - n,
                              "def handler_%d(request, retries=%d):\\n"
                              "    \\\"\\\"\\\"Serves route %d and retries %d times.\\\"\\\"\\\"\\n"
                              "    for attempt in range(retries):\\n"
                              "        result = request.fetch(\\\"/api/v%d/items\\\", page=attempt)\\n"
                              "        if result.status == %d:\\n"
                              "            return result.json()\\n"
                              "    raise TimeoutError(\\\"route %d failed\\\")\\n\\n",
                              i, i % 7 + 1, i, i % 7 + 1, i, 200 + i, i);
    return s;
}

/* A Tabby /v1/completions body for `prefix` + `more` in file `path` (JSON-escaped already). */
static char *tabby_body(const char *prefix, const char *more, const char *path)
{
    size_t cap = strlen(prefix) + strlen(more) + 512;
    char *b = malloc(cap);
    cr_assert_not_null(b);
    snprintf(b, cap,
             "{\"language\":\"python\",\"segments\":{\"prefix\":\"%s%s\",\"filepath\":\"%s\","
             "\"git_url\":\"https://git.example.com/team/app.git\"}}",
             prefix, more, path);
    return b;
}

/* Sends a request on its own connection without reading the answer; returns the socket. */
static int send_only(int port, const char *path, const char *token, const char *headers,
                     const char *body)
{
    int fd = hc_connect(port, 120);
    cr_assert(tu_http_send(fd, "POST", path, token, headers, body, strlen(body)));
    return fd;
}

/* Waits until the engine holds a running sequence (the request sent is being computed). */
static void wait_running(int port)
{
    for (int i = 0; i < 200; i++) {
        if (metric(port, "serval_running_sequences") >= 1)
            return;
        usleep(20 * 1000);
    }
    cr_assert_fail("no request started running within 4 s");
}

static bool is_superseded(const tu_json *j)
{
    const tu_json *v = tu_json_get(j, "superseded");
    return v && v->type == TU_JSON_BOOL && v->b;
}

/* The text of choices[0] of a completion body. */
static const char *choice_text(const tu_json *j)
{
    const tu_json *c = tu_json_get(j, "choices");
    cr_assert(c && c->type == TU_JSON_ARR && c->n >= 1, "no choices");
    return jstr(c->items[0], "text");
}

Test(supersede, a_newer_tabby_request_for_the_same_file_answers_the_older_at_once_and_reuses_its_prompt,
     .timeout = 180)
{
    server s = server_start(NULL);
    char *code = long_code();
    char *a = tabby_body(code, "def main():\\n    config = ", "src/app.py");
    char *b = tabby_body(code, "def main():\\n    config = load(", "src/app.py");
    int fa = send_only(s.port, "/v1/completions", TOKEN, NULL, a);
    wait_running(s.port);
    usleep(600 * 1000); /* some of A's prompt blocks are computed */
    double cached0 = metric(s.port, "serval_prompt_tokens_cached_total");
    double t0 = now_s();
    int fb = send_only(s.port, "/v1/completions", TOKEN, NULL, b);
    tu_http_resp ra = tu_http_read(fa);
    double answered_s = now_s() - t0;
    cr_assert_eq(ra.status, 200, "%d %s", ra.status, ra.body);
    tu_json *ja = json_of(&ra);
    cr_assert(is_superseded(ja), "the older request was not marked superseded: %s", ra.body);
    cr_assert_str_eq(choice_text(ja), "", "a superseded completion is empty");
    cr_assert_not_null(jstr(ja, "id"), "tabby-agent needs an id");
    tu_http_resp rb = tu_http_read(fb);
    double newer_s = now_s() - t0;
    cr_assert_lt(answered_s, newer_s, "the older request was answered %.2f s after the newer "
                 "came, the newer one after %.2f s", answered_s, newer_s);
    cr_assert_eq(rb.status, 200, "%d %s", rb.status, rb.body);
    tu_json *jb = json_of(&rb);
    cr_assert(!is_superseded(jb), "the newer request was superseded too");
    double reused = metric(s.port, "serval_prompt_tokens_cached_total") - cached0;
    cr_assert_geq(reused, 32, "the newer request reused %.0f prompt tokens of the older's", reused);
    cr_assert_eq(metric(s.port, "serval_engine_requests_superseded_total"), 1);
    tu_json_free(ja);
    tu_json_free(jb);
    tu_http_resp_free(&ra);
    tu_http_resp_free(&rb);
    close(fa);
    close(fb);
    free(a);
    free(b);
    free(code);
    cr_assert_eq(server_stop(&s), 0);
}

Test(supersede, an_openai_stream_with_the_same_session_header_ends_with_a_superseded_event,
     .timeout = 180)
{
    server s = server_start(NULL);
    char *code = long_code();
    size_t cap = strlen(code) + 256;
    char *body = malloc(cap);
    cr_assert_not_null(body);
    snprintf(body, cap, "{\"prompt\":\"%s\",\"max_tokens\":8,\"stream\":true,\"temperature\":0}",
             code);
    const char *hdr = "X-Serval-Session: editor-7\r\n";
    int fa = send_only(s.port, "/v1/completions", TOKEN, hdr, body);
    wait_running(s.port);
    int fb = send_only(s.port, "/v1/completions", TOKEN, hdr, body);
    tu_http_resp ra = tu_http_read(fa);
    cr_assert_eq(ra.status, 200, "%d %s", ra.status, ra.body);
    size_t n;
    bool done;
    tu_json **ev = sse_events(&ra, &n, &done);
    cr_assert(done, "the superseded stream did not end with [DONE]: %s", ra.body);
    cr_assert_geq(n, 1);
    cr_assert(is_superseded(ev[n - 1]), "its last event does not say superseded: %s", ra.body);
    sse_free(ev, n);
    tu_http_resp rb = tu_http_read(fb);
    cr_assert_eq(rb.status, 200);
    cr_assert_null(strstr(rb.body, "superseded"), "the newer stream: %s", rb.body);
    /* Bad values are refused naming the field (OpenAI's 400 with param). */
    expect(s.port, "POST", "/v1/completions", TOKEN,
           "{\"prompt\":\"x\",\"max_tokens\":1,\"deadline_ms\":0}", 400, "deadline_ms");
    expect(s.port, "POST", "/v1/completions", TOKEN,
           "{\"prompt\":\"x\",\"max_tokens\":1,\"session_key\":7}", 400, "session_key");
    tu_http_resp_free(&ra);
    tu_http_resp_free(&rb);
    close(fa);
    close(fb);
    free(body);
    free(code);
    cr_assert_eq(server_stop(&s), 0);
}

/* Two users with the same key (same file, same explicit key) never end each other's requests;
 * and --supersede off ends nothing. Both answer like any completion. */
static void expect_no_supersede(const char *const *extra, const char *token_b)
{
    server s = server_start(extra);
    char *code = long_code();
    char *a = tabby_body(code, "", "src/app.py");
    char *b = tabby_body("import os\\n", "", "src/app.py");
    int fa = send_only(s.port, "/v1/completions", TOKEN, NULL, a);
    wait_running(s.port);
    tu_http_resp rb = request(s.port, "POST", "/v1/completions", token_b, b);
    cr_assert_eq(rb.status, 200, "%d %s", rb.status, rb.body);
    tu_http_resp ra = tu_http_read(fa);
    cr_assert_eq(ra.status, 200, "%d %s", ra.status, ra.body);
    cr_assert_null(strstr(ra.body, "superseded"), "the first request: %s", ra.body);
    cr_assert_eq(metric(s.port, "serval_engine_requests_superseded_total"), 0);
    tu_http_resp_free(&ra);
    tu_http_resp_free(&rb);
    close(fa);
    free(a);
    free(b);
    free(code);
    cr_assert_eq(server_stop(&s), 0);
}

Test(supersede, one_token_never_supersedes_another_tokens_request_for_the_same_file,
     .timeout = 180)
{
    const char *extra[] = {"--token", TOKEN2, NULL};
    expect_no_supersede(extra, TOKEN2);
}

Test(supersede, supersede_off_lets_every_request_finish, .timeout = 180)
{
    const char *extra[] = {"--supersede", "off", NULL};
    expect_no_supersede(extra, TOKEN);
}

typedef struct grpc_call_arg {
    rpc_client *cl;
    uint8_t *req;
    size_t len;
    const char *method;
    rpc_client_result res;
} grpc_call_arg;

static void *grpc_call_thread(void *p)
{
    grpc_call_arg *a = p;
    rpc_client_call(a->cl, a->method, a->req, a->len, 60000, NULL, NULL, &a->res);
    return NULL;
}

static uint8_t *pack_segments(const char *prefix, const char *path, const char *key, size_t *len)
{
    Serval__V1__Segments sg = SERVAL__V1__SEGMENTS__INIT;
    sg.prefix = (char *)prefix;
    sg.filepath = (char *)path;
    sg.language = "python";
    Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
    rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_SEGMENTS;
    rq.segments = &sg;
    rq.max_tokens = 200;
    rq.ignore_eos = true;
    rq.session_key = (char *)key;
    return gt_pack(&rq.base, len);
}

Test(supersede, grpc_ends_the_older_call_cancelled_and_the_newer_reuses_its_cached_prompt,
     .timeout = 180)
{
    tu_server s = tu_server_start("grpc", TOKEN, true, NULL);
    rpc_client *cl = rpc_client_create(s.target, TOKEN);
    /* The HTTP fixture's text has JSON escapes; gRPC takes the raw text: unescape \" and \n. */
    char *code = long_code();
    char *raw = malloc(strlen(code) + 1);
    size_t k = 0;
    for (const char *p = code; *p; p++) {
        if (p[0] == '\\' && p[1] == 'n') {
            raw[k++] = '\n';
            p++;
        } else if (p[0] == '\\' && p[1] == '"') {
            raw[k++] = '"';
            p++;
        } else {
            raw[k++] = *p;
        }
    }
    raw[k] = '\0';
    grpc_call_arg a = {.cl = cl, .method = M_STREAM};
    a.req = pack_segments(raw, "src/app.py", "", &a.len);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, grpc_call_thread, &a), 0);
    sleep(2); /* A's prompt is being computed (or done, and it decodes) */
    size_t lb;
    uint8_t *b = pack_segments(raw, "src/app.py", "", &lb);
    rpc_client_result rb;
    grpc_status_code cb = rpc_client_call(cl, M_COMPLETE, b, lb, 60000, NULL, NULL, &rb);
    pthread_join(th, NULL);
    cr_assert_eq(a.res.code, GRPC_STATUS_CANCELLED, "the older call ended %d: %s", a.res.code,
                 a.res.details);
    cr_assert(strstr(a.res.details, "superseded"), "its message: %s", a.res.details);
    cr_assert_eq(cb, GRPC_STATUS_OK, "%s", rb.details);
    Serval__V1__CompleteResponse *r =
        serval__v1__complete_response__unpack(NULL, rb.last_len, rb.last);
    cr_assert_not_null(r);
    cr_assert_geq(r->usage->cached_tokens, 64, "the newer call reused %d of %d prompt tokens",
                  r->usage->cached_tokens, r->usage->prompt_tokens);
    serval__v1__complete_response__free_unpacked(r, NULL);
    rpc_client_result_clear(&rb);
    rpc_client_result_clear(&a.res);
    free(a.req);
    free(b);
    free(raw);
    free(code);
    rpc_client_free(cl);
    cr_assert_eq(tu_server_stop(&s), 0);
}
