/* test_http.c — the HTTP front end end to end: a real `serval serve` process and the tu_http.h
 * client. Replays every request tabby-agent 1.5.0 was recorded sending, the OpenAI and
 * llama.cpp routes and shapes, sampling, bad input, the route table, 200 clients, the request
 * log, OpenAI's error shape and the per-token prefix cache. Hardening (rate limits,
 * disconnects, slow clients, drains, caps, exposure, TLS) is in test_http_limits.c. */
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
#include "testutil.h"


/* ---- the recorded tabby-agent traffic ------------------------------------------------------ */

static size_t count_lines_in_dir(const char *dir)
{
    DIR *d = opendir(dir);
    size_t lines = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096 + 512];
        snprintf(path, sizeof path, "%.4000s/%.256s", dir, e->d_name);
        size_t len;
        char *t = tu_read_file(path, &len);
        for (size_t i = 0; t && i < len; i++)
            lines += t[i] == '\n';
        free(t);
    }
    if (d)
        closedir(d);
    return lines;
}

Test(http, replays_every_recorded_tabby_agent_request, .timeout = 180)
{
    server s = server_start(NULL);
    char *path = tu_source_path("tests/fixtures/tabby-agent/requests.jsonl");
    size_t flen;
    char *fx = tu_read_file(path, &flen);
    cr_assert_not_null(fx, "%s", path);
    int fd = hc_connect(s.port, 60); /* one keep-alive connection, as the agent keeps */
    size_t n_req = 0, n_events = 0;
    for (char *line = fx, *nl; line < fx + flen; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            nl = fx + flen;
        if (nl == line)
            continue;
        tu_json *rec = tu_json_parse(line, (size_t)(nl - line));
        cr_assert_not_null(rec);
        const char *scenario = jstr(rec, "scenario"), *method = jstr(rec, "method");
        const char *p = jstr(rec, "path"), *query = jstr(rec, "query");
        const tu_json *body = tu_json_get(rec, "body");
        const tu_json *hdrs = tu_json_get(rec, "headers");
        char extra[2048] = "", url[512];
        snprintf(url, sizeof url, "%s%s%s", p, query && *query ? "?" : "", query ? query : "");
        for (size_t i = 0; i < hdrs->n; i++) {
            const char *k = hdrs->items[i]->items[0]->str, *v = hdrs->items[i]->items[1]->str;
            if (strcasecmp(k, "content-length") == 0 || strcasecmp(k, "content-type") == 0)
                continue;
            size_t el = strlen(extra);
            snprintf(extra + el, sizeof extra - el, "%s: %s\r\n", k, v);
        }
        bool has_body = body->str_len > 0;
        if (!has_body) { /* the agent sends Content-Type on GETs too */
            size_t el = strlen(extra);
            snprintf(extra + el, sizeof extra - el, "Content-Type: application/json\r\n");
        }
        cr_assert(tu_http_send(fd, method, url, NULL, extra, has_body ? body->str : NULL,
                               body->str_len),
                  "%s: send", scenario);
        tu_http_resp r = tu_http_read(fd);
        cr_assert(r.status >= 200 && r.status < 300, "%s: %s %s answered %d: %.300s", scenario,
                  method, url, r.status, r.body ? r.body : "");
        if (!strcmp(p, "/v1/events")) {
            n_events++;
        } else {
            tu_json *j = json_of(&r);
            cr_assert_eq(j->type, TU_JSON_OBJ, "%s: not a JSON object", scenario);
            if (!strcmp(p, "/v1/health")) {
                const tu_json *model = tu_json_get(j, "model"), *ver = tu_json_get(j, "version");
                cr_assert(model && model->type == TU_JSON_STR && model->str_len > 0,
                          "%s: health needs a non-empty model to enable completion", scenario);
                cr_assert_not_null(tu_json_get(j, "device"));
                cr_assert(ver && ver->type == TU_JSON_OBJ,
                          "%s: version must be an object (tabby-agent 1.5.0 crashes otherwise)",
                          scenario);
                cr_assert_not_null(jstr(ver, "git_describe"));
            } else if (!strcmp(p, "/v1/completions")) {
                cr_assert(jstr(j, "id") && !strncmp(jstr(j, "id"), "cmpl-", 5), "%s: id", scenario);
                const tu_json *ch = tu_json_get(j, "choices");
                cr_assert(ch && ch->type == TU_JSON_ARR && ch->n >= 1, "%s: choices", scenario);
                const char *text = jstr(ch->items[0], "text");
                cr_assert_not_null(text, "%s: choices[0].text", scenario);
                tu_json *req = tu_json_parse(body->str, body->str_len);
                const char *prefix = jstr(tu_json_get(req, "segments"), "prefix");
                cr_assert(strlen(prefix) < 12 || !strstr(text, prefix),
                          "%s: the text repeats the prefix: %s", scenario, text);
                tu_json_free(req);
            }
            tu_json_free(j);
        }
        tu_http_resp_free(&r);
        tu_json_free(rec);
        n_req++;
    }
    close(fd);
    cr_assert_eq(n_req, 22, "every recorded request was replayed");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/events", s.data_dir);
    cr_assert_eq(count_lines_in_dir(dir), n_events, "each event is one line in %s", dir);
    cr_assert_eq(server_stop(&s), 0);
    free(fx);
    free(path);
}

Test(http, tabby_debug_options_snippets_and_crlf, .timeout = 60)
{
    server s = server_start(NULL);
    tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN,
                     "{\"language\":\"python\",\"segments\":{\"prefix\":\"def f(x):\\r\\n    \","
                     "\"declarations\":[{\"filepath\":\"m.py\",\"body\":\"def g(): pass\"}]},"
                     "\"debug_options\":{\"return_prompt\":true,\"return_snippets\":true},"
                     "\"mode\":\"standard\",\"unknown_field\":[1,2]}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    const tu_json *dd = tu_json_get(j, "debug_data");
    cr_assert_not_null(dd, "%s", r.body);
    /* SmolLM2-Instruct has no FIM tokens: the prompt is the snippets plus the prefix, LF only. */
    cr_assert_str_eq(jstr(dd, "prompt"), "# Path: m.py\n# def g(): pass\ndef f(x):\n    ");
    cr_assert_eq(tu_json_get(dd, "snippets")->n, 1);
    cr_assert_str_eq(jstr(j, "mode"), "standard");
    const char *text = jstr(tu_json_get(j, "choices")->items[0], "text");
    for (const char *c = text; *c; c++)
        if (*c == '\n')
            cr_assert(c > text && c[-1] == '\r', "CRLF input gets CRLF output: %s", text);
    tu_json_free(j);
    tu_http_resp_free(&r);
    /* raw_prompt is used as is. */
    r = request(s.port, "POST", "/v1/completions", TOKEN,
                "{\"debug_options\":{\"raw_prompt\":\"import os\\n\",\"return_prompt\":true}}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    cr_assert_str_eq(jstr(tu_json_get(j, "debug_data"), "prompt"), "import os\n");
    tu_json_free(j);
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- OpenAI and llama.cpp routes ----------------------------------------------------------- */

Test(http, openai_completions_and_chat_both_modes, .timeout = 90)
{
    server s = server_start(NULL);
    const char *body = "{\"model\":\"x\",\"prompt\":\"def add(a, b):\",\"max_tokens\":6,"
                       "\"temperature\":0}";
    tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "text_completion");
    const tu_json *c0 = tu_json_get(j, "choices")->items[0];
    char *full = strdup(jstr(c0, "text"));
    cr_assert_gt(strlen(full), 0);
    cr_assert_eq(tu_json_get(tu_json_get(j, "usage"), "completion_tokens")->num, 6);
    cr_assert_str_eq(jstr(c0, "finish_reason"), "length");
    tu_json_free(j);
    tu_http_resp_free(&r);

    /* Streaming gives the same greedy text, chunk by chunk, then [DONE]. */
    r = request(s.port, "POST", "/v1/completions", TOKEN,
                "{\"prompt\":\"def add(a, b):\",\"max_tokens\":6,\"temperature\":0,\"stream\":true}");
    cr_assert_eq(r.status, 200);
    cr_assert(strcasestr(r.headers, "text/event-stream"));
    size_t n;
    bool done;
    tu_json **ev = sse_events(&r, &n, &done);
    cr_assert(done && n >= 2);
    char joined[4096] = "";
    for (size_t i = 0; i < n; i++)
        strcat(joined, jstr(tu_json_get(ev[i], "choices")->items[0], "text"));
    cr_assert_str_eq(joined, full);
    cr_assert_str_eq(jstr(tu_json_get(ev[n - 1], "choices")->items[0], "finish_reason"), "length");
    const tu_json *su = tu_json_get(ev[n - 1], "usage"); /* the last event's, as whole */
    cr_assert(su && tu_json_get(su, "completion_tokens")->num == 6 &&
                  tu_json_get(su, "total_tokens")->num ==
                      tu_json_get(su, "prompt_tokens")->num + 6,
              "%s", r.body);
    sse_free(ev, n);
    tu_http_resp_free(&r);
    free(full);

    const char *chat = "{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],"
                       "\"max_tokens\":5,\"temperature\":0%s}";
    char b[512];
    snprintf(b, sizeof b, chat, "");
    r = request(s.port, "POST", "/v1/chat/completions", TOKEN, b);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "chat.completion");
    const tu_json *msg = tu_json_get(tu_json_get(j, "choices")->items[0], "message");
    cr_assert_str_eq(jstr(msg, "role"), "assistant");
    full = strdup(jstr(msg, "content"));
    cr_assert_gt(strlen(full), 0);
    cr_assert_str_eq(jstr(tu_json_get(j, "choices")->items[0], "finish_reason"), "length");
    const tu_json *cu = tu_json_get(j, "usage");
    cr_assert(cu && tu_json_get(cu, "completion_tokens")->num == 5 &&
                  tu_json_get(cu, "prompt_tokens")->num > 0 &&
                  tu_json_get(cu, "total_tokens")->num ==
                      tu_json_get(cu, "prompt_tokens")->num + 5,
              "%s", r.body);
    tu_json_free(j);
    tu_http_resp_free(&r);
    snprintf(b, sizeof b, chat, ",\"stream\":true");
    const char *paths[] = {"/v1/chat/completions", "/v1beta/chat/completions"};
    for (int k = 0; k < 2; k++) {
        /* /v1beta always streams (Tabby's chat), even without "stream". */
        if (k == 1)
            snprintf(b, sizeof b, chat, "");
        r = request(s.port, "POST", paths[k], TOKEN, b);
        cr_assert_eq(r.status, 200);
        ev = sse_events(&r, &n, &done);
        cr_assert(n >= 2, "%s: %s", paths[k], r.body);
        joined[0] = 0;
        for (size_t i = 0; i < n; i++) {
            cr_assert_str_eq(jstr(ev[i], "object"), "chat.completion.chunk");
            const char *d = jstr(tu_json_get(tu_json_get(ev[i], "choices")->items[0], "delta"),
                                 "content");
            if (d)
                strcat(joined, d);
        }
        cr_assert_str_eq(joined, full, "%s", paths[k]);
        sse_free(ev, n);
        tu_http_resp_free(&r);
    }
    free(full);
    r = request(s.port, "GET", "/v1/models", TOKEN, NULL);
    j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "list");
    cr_assert_gt(strlen(jstr(tu_json_get(j, "data")->items[0], "id")), 0);
    tu_json_free(j);
    tu_http_resp_free(&r);
    r = request(s.port, "GET", "/v1beta/models", TOKEN, NULL);
    j = json_of(&r);
    cr_assert_eq(tu_json_get(j, "completion")->type, TU_JSON_ARR);
    cr_assert_eq(tu_json_get(j, "chat")->type, TU_JSON_ARR, "SmolLM2 has a ChatML template");
    tu_json_free(j);
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

Test(http, llamacpp_backend_round_trip, .timeout = 60)
{
    server s = server_start(NULL);
    /* Exactly what Tabby's llama.cpp/completion backend sends (temperature 0 to compare). */
    const char *body = "{\"seed\":0,\"prompt\":\"def fib(n):\",\"n_predict\":8,\"temperature\":0,"
                       "\"stream\":%s,\"penalty_last_n\":0,\"presence_penalty\":0}";
    char b[512];
    snprintf(b, sizeof b, body, "false");
    tu_http_resp r = request(s.port, "POST", "/completion", TOKEN, b);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    char *full = strdup(jstr(j, "content"));
    cr_assert_eq(tu_json_get(j, "stop")->b, true);
    tu_json_free(j);
    tu_http_resp_free(&r);
    snprintf(b, sizeof b, body, "true");
    r = request(s.port, "POST", "/completion", TOKEN, b);
    cr_assert_eq(r.status, 200);
    size_t n;
    bool done;
    tu_json **ev = sse_events(&r, &n, &done);
    char joined[4096] = "";
    for (size_t i = 0; i < n; i++) {
        strcat(joined, jstr(ev[i], "content"));
        cr_assert_eq(tu_json_get(ev[i], "stop")->b, i == n - 1, "only the last event stops");
    }
    cr_assert_str_eq(joined, full);
    sse_free(ev, n);
    tu_http_resp_free(&r);
    free(full);
    r = request(s.port, "POST", "/tokenize", TOKEN, "{\"content\":\"hello world\"}");
    j = json_of(&r);
    cr_assert_eq(tu_json_get(j, "tokens")->n, 2);
    tu_json_free(j);
    tu_http_resp_free(&r);
    /* The default embedding model (tools/setup.sh converts it) serves llama.cpp's route. */
    r = request(s.port, "POST", "/embeddings", TOKEN, "{\"content\":\"x\"}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, "\"embedding\":[["), "%s", r.body);
    tu_http_resp_free(&r);
    r = request(s.port, "GET", "/health", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"ok\""));
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- sampling: the engine's one policy -------------------------------------------------- */

/* The text of a non-streamed answer: choices[0].text (OpenAI) or content (llama.cpp). */
static char *generated_text(int port, const char *path, const char *body)
{
    tu_http_resp r = request(port, "POST", path, TOKEN, body);
    cr_assert_eq(r.status, 200, "%s %s: %d %s", path, body, r.status, r.body ? r.body : "");
    tu_json *j = json_of(&r);
    const char *t = strcmp(path, "/completion") == 0
                        ? jstr(j, "content")
                        : jstr(tu_json_get(j, "choices")->items[0], "text");
    cr_assert_not_null(t, "%s: no text in %s", path, r.body);
    char *out = strdup(t);
    tu_json_free(j);
    tu_http_resp_free(&r);
    return out;
}

Test(http, top_k_above_the_vocabulary_is_clipped_like_grpc_and_the_engine, .timeout = 90)
{
    server s = server_start(NULL);
    /* Both shapes that carry top_k: OpenAI's completions and llama.cpp's /completion. */
    /* OpenAI's route answers a bad parameter 400 (OpenAI's shape), llama.cpp's 422. */
    const struct {
        const char *path, *fmt;
        int bad;
    } shapes[] = {
        {"/v1/completions", "{\"prompt\":\"def fib(n):\",\"max_tokens\":8,\"temperature\":%s,"
                            "\"seed\":7,\"top_k\":%s}", 400},
        {"/completion", "{\"prompt\":\"def fib(n):\",\"n_predict\":8,\"temperature\":%s,"
                        "\"seed\":7,\"top_k\":%s}", 422},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        /* Greedy, then seeded sampling: 10^7 keeps every token, exactly as top_k 0 (off). */
        const char *temps[] = {"0", "0.9"};
        for (int t = 0; t < 2; t++) {
            char b0[256], b1[256];
            snprintf(b0, sizeof b0, shapes[k].fmt, temps[t], "0");
            snprintf(b1, sizeof b1, shapes[k].fmt, temps[t], "10000000");
            char *off = generated_text(s.port, shapes[k].path, b0);
            char *huge = generated_text(s.port, shapes[k].path, b1);
            cr_assert_gt(strlen(off), 0, "%s", b0);
            cr_assert_str_eq(huge, off, "%s: top_k 10^7 (temperature %s) differs from top_k 0",
                             shapes[k].path, temps[t]);
            free(off);
            free(huge);
        }
        /* Rejected with the engine's message, which names top_k. */
        char b[256];
        snprintf(b, sizeof b, shapes[k].fmt, "0", "-1");
        expect(s.port, "POST", shapes[k].path, TOKEN, b, shapes[k].bad, "top_k -1 is negative");
        snprintf(b, sizeof b, shapes[k].fmt, "0", "2.5");
        expect(s.port, "POST", shapes[k].path, TOKEN, b, shapes[k].bad, "top_k must be an integer");
        snprintf(b, sizeof b, shapes[k].fmt, "0", "\"40\"");
        expect(s.port, "POST", shapes[k].path, TOKEN, b, shapes[k].bad, "top_k must be a number");
        /* Any non-negative 32-bit integer is taken; larger ones too (they keep every token). */
        snprintf(b, sizeof b, shapes[k].fmt, "0", "2147483647");
        expect(s.port, "POST", shapes[k].path, TOKEN, b, 200, NULL);
        snprintf(b, sizeof b, shapes[k].fmt, "0", "1e12");
        expect(s.port, "POST", shapes[k].path, TOKEN, b, 200, NULL);
    }
    /* The other ranges are the engine's too: its message, on HTTP as on gRPC. */
    expect(s.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"temperature\":-1}", 422,
           "temperature -1 is outside [0, 100]");
    expect(s.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"top_p\":0}", 422,
           "top_p 0 is outside (0, 1]");
    cr_assert_eq(server_stop(&s), 0);
}



Test(http, bad_requests_get_clear_errors_and_the_server_keeps_serving, .timeout = 60)
{
    server s = server_start(NULL);
    int p = s.port;
    expect(p, "POST", "/v1/completions", TOKEN, "{\"segments\":", 400, "not valid JSON");
    expect(p, "POST", "/v1/completions", TOKEN, "[1,2]", 422, "JSON object");
    expect(p, "POST", "/v1/completions", TOKEN, "{\"language\":\"python\"}", 400, "segments");
    expect(p, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":5}}", 422,
           "segments.prefix must be a string");
    expect(p, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":\"x\"},\"temperature\":\"hot\"}",
           422, "temperature");
    expect(p, "POST", "/v1/completions", TOKEN,
           "{\"segments\":{\"prefix\":\"x\",\"declarations\":{}}}", 422, "declarations");
    expect(p, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":\"a\xff\xfe\"}}", 400,
           "not valid JSON");
    /* OpenAI routes answer bad parameters 400 with OpenAI's body (see openai_errors_...). */
    expect(p, "POST", "/v1/chat/completions", TOKEN, "{\"messages\":[]}", 400, "messages");
    expect(p, "POST", "/v1/completions", TOKEN, "{\"prompt\":\"x\",\"max_tokens\":0}", 400,
           "max_tokens");
    expect(p, "POST", "/v1/completions", TOKEN, "", 400, "empty");
    /* Auth: every /v1 route but health; 401 has an empty body. */
    expect(p, "POST", "/v1/completions", NULL, "{\"segments\":{\"prefix\":\"x\"}}", 401, NULL);
    expect(p, "POST", "/v1/completions", "wrong", "{\"segments\":{\"prefix\":\"x\"}}", 401, NULL);
    expect(p, "GET", "/v1beta/server_setting", NULL, NULL, 401, NULL);
    expect(p, "GET", "/metrics", NULL, NULL, 401, NULL);
    /* Health: liveness for anyone, Tabby's full body with a token. */
    expect(p, "GET", "/v1/health", NULL, NULL, 200, "\"status\":\"ok\"");
    expect(p, "GET", "/v1/health", TOKEN, NULL, 200, "version");
    expect(p, "POST", "/v1/health", TOKEN, "", 200, "version");
    expect(p, "GET", "/nope", TOKEN, NULL, 404, "no route");
    expect(p, "GET", "/v1/completions", TOKEN, NULL, 405, NULL);
    tu_http_resp r = request(p, "POST", "/v1/completions", NULL, "{}");
    cr_assert_eq(r.len, 0, "401 has an empty body");
    tu_http_resp_free(&r);

    /* Huge bodies: refused by Content-Length before they are read, and when chunked. */
    size_t big = 3u << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = 0;
    memcpy(huge, "{\"segments\":{\"prefix\":\"", 23);
    int fd = hc_connect(p, 10);
    tu_http_send(fd, "POST", "/v1/completions", TOKEN, NULL, huge, big); /* may fail midway */
    r = tu_http_read(fd);
    cr_assert_eq(r.status, 413, "%s", r.body ? r.body : "");
    tu_http_resp_free(&r);
    close(fd);
    fd = hc_connect(p, 10);
    char head[256];
    int hn = snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer " TOKEN "\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n");
    tu_http_send_all(fd, head, (size_t)hn);
    for (int i = 0; i < 3; i++) {
        char ch[32];
        int cn = snprintf(ch, sizeof ch, "%x\r\n", 1 << 20);
        tu_http_send_all(fd, ch, (size_t)cn);
        tu_http_send_all(fd, huge, 1 << 20);
        tu_http_send_all(fd, "\r\n", 2);
    }
    tu_http_send_all(fd, "0\r\n\r\n", 5);
    r = tu_http_read(fd);
    cr_assert_eq(r.status, 413);
    tu_http_resp_free(&r);
    close(fd);
    free(huge);

    /* CORS preflight without a token: answered, but no origin is allowed by default. */
    fd = hc_connect(p, 10);
    tu_http_send(fd, "OPTIONS", "/v1/completions", NULL,
            "Origin: http://x\r\nAccess-Control-Request-Method: POST\r\n", NULL, 0);
    r = tu_http_read(fd);
    cr_assert_eq(r.status, 204);
    cr_assert_null(strcasestr(r.headers, "Access-Control-Allow-Origin"), "%s", r.headers);
    tu_http_resp_free(&r);
    close(fd);
    expect(p, "POST", "/v1/completions", TOKEN, "{\"segments\":{\"prefix\":\"def f():\\n\"}}",
           200, "choices");
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- the route table ----------------------------------------------------------------------- */

Test(http, every_route_answers_its_methods_and_refuses_the_others_with_405, .timeout = 60)
{
    /* What each route takes, written here independently of rpc/http_routes.c's table (NULL:
     * every method reaches the handler). Adding a route fails this test until it is listed. */
    static const struct {
        http_route route;
        const char *path;
        const char *allow;
    } want[] = {
        {HTTP_ROUTE_V1_HEALTH, "/v1/health", "GET, POST, OPTIONS"},
        {HTTP_ROUTE_SERVER_SETTING, "/v1beta/server_setting", "GET, OPTIONS"},
        {HTTP_ROUTE_V1_COMPLETIONS, "/v1/completions", "POST, OPTIONS"},
        {HTTP_ROUTE_V1_EVENTS, "/v1/events", "POST, OPTIONS"},
        {HTTP_ROUTE_V1_CHAT, "/v1/chat/completions", "POST, OPTIONS"},
        {HTTP_ROUTE_V1BETA_CHAT, "/v1beta/chat/completions", "POST, OPTIONS"},
        {HTTP_ROUTE_V1BETA_MODELS, "/v1beta/models", "GET, OPTIONS"},
        {HTTP_ROUTE_V1_MODELS, "/v1/models", "GET, OPTIONS"},
        {HTTP_ROUTE_COMPLETION, "/completion", "POST, OPTIONS"},
        {HTTP_ROUTE_HEALTH, "/health", "GET, OPTIONS"},
        {HTTP_ROUTE_TOKENIZE, "/tokenize", "POST, OPTIONS"},
        {HTTP_ROUTE_EMBEDDINGS, "/embeddings", "POST, OPTIONS"},
        {HTTP_ROUTE_V1_EMBEDDINGS, "/v1/embeddings", "POST, OPTIONS"},
        {HTTP_ROUTE_EMBEDDING, "/embedding", "POST, OPTIONS"},
        {HTTP_ROUTE_V1BETA_SEARCH, "/v1beta/search", "POST, OPTIONS"},
        {HTTP_ROUTE_METRICS, "/metrics", "GET, OPTIONS"},
        {HTTP_ROUTE_STATUS_PAGE, "/", "GET, OPTIONS"},
        {HTTP_ROUTE_V1_STATUS, "/v1/status", "GET, OPTIONS"},
    };
    bool seen[HTTP_ROUTE_COUNT] = {false};
    server s = server_start(NULL);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(http_route_find(want[i].path), want[i].route, "%s", want[i].path);
        seen[want[i].route] = true;
        tu_http_resp r = request(s.port, "DELETE", want[i].path, TOKEN, NULL);
        if (want[i].allow) {
            char allow[64];
            snprintf(allow, sizeof allow, "\nAllow: %s\r", want[i].allow);
            cr_assert_eq(r.status, 405, "DELETE %s: %d", want[i].path, r.status);
            cr_assert(strcasestr(r.headers, allow), "DELETE %s: no '%s' in %s", want[i].path,
                      want[i].allow, r.headers);
            cr_assert_eq(r.len, 0, "405 has an empty body");
        } else {
            cr_assert_eq(r.status, 501, "DELETE %s: %d %s", want[i].path, r.status, r.body);
        }
        tu_http_resp_free(&r);
    }
    for (int r = 0; r < HTTP_ROUTE_OTHER; r++)
        cr_assert(seen[r], "route %s is not listed in this test", http_route_name((http_route)r));
    cr_assert_eq(http_route_find("/nope"), HTTP_ROUTE_OTHER);
    cr_assert_eq(http_route_find("/v1/health/"), HTTP_ROUTE_OTHER, "paths match exactly");
    expect(s.port, "DELETE", "/nope", TOKEN, NULL, 404, "no route for DELETE /nope");
    expect(s.port, "DELETE", "/nope", NULL, NULL, 401, NULL);
    /* The metrics label is the route's path. */
    tu_http_resp r = request(s.port, "GET", "/metrics", TOKEN, NULL);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"/v1/models\",status=\"405\"} 1\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"/embeddings\",status=\"405\"} 1\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"/v1/embeddings\",status=\"405\"} 1\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"other\",status=\"404\"} 1\n"),
              "%s", r.body);
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- many clients -------------------------------------------------------------------------- */

typedef struct client_arg {
    int port;
    int ok;
} client_arg;

static void *client_main(void *p)
{
    client_arg *a = p;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {.tv_sec = 120};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    const char *body = "{\"prompt\":\"def main():\",\"max_tokens\":2}";
    for (int i = 0; i < 2; i++) { /* two requests on one keep-alive connection */
        char head[512];
        int n = snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                         "Authorization: Bearer " TOKEN "\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
        if (!tu_http_send_all(fd, head, (size_t)n))
            break;
        tu_http_resp r = tu_http_read(fd);
        tu_json *j = r.body ? tu_json_parse(r.body, r.len) : NULL;
        if (r.status == 200 && j && tu_json_get(j, "choices"))
            a->ok++;
        tu_json_free(j);
        tu_http_resp_free(&r);
    }
    close(fd);
    return NULL;
}

Test(http, two_hundred_concurrent_keep_alive_clients, .timeout = 150)
{
    /* One token, one address: lift the per-token and per-address caps this test is not about. */
    const char *extra[] = {"--max-inflight-per-token", "0", "--per-ip-connections", "256", NULL};
    server s = server_start(extra);
    enum { N = 200 };
    pthread_t th[N];
    client_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (client_arg){.port = s.port};
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 256 * 1024);
        cr_assert_eq(pthread_create(&th[i], &at, client_main, &args[i]), 0);
        pthread_attr_destroy(&at);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
    }
    cr_assert_eq(ok, 2 * N, "every request of every client succeeded (%d of %d)", ok, 2 * N);
    expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
    cr_assert_eq(server_stop(&s), 0);
}

/* Without --quiet every request but health and metrics gets one log line with its id, route,
 * status and, for generations, tokens and timings (what an operator greps at 3 a.m.). */
Test(http, one_log_line_per_request, .timeout = 90)
{
    server s = server_start_log(NULL, false);
    expect(s.port, "POST", "/v1/completions", TOKEN,
           "{\"language\":\"python\",\"segments\":{\"prefix\":\"def add(a, b):\\n    \"}}",
           200, "choices");
    expect(s.port, "POST", "/v1/completions", "wrong", "{}", 401, NULL);
    expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
    cr_assert_eq(server_stop(&s), 0);
    char *log = tu_read_file(s.log_path, NULL);
    cr_assert_not_null(log);
    cr_assert(strstr(log, "http POST /v1/completions status=200 prompt_tokens="), "log:\n%s", log);
    cr_assert(strstr(log, "output_tokens=") && strstr(log, "first_token_ms="), "log:\n%s", log);
    cr_assert(strstr(log, "http POST /v1/completions status=401 total_ms="), "log:\n%s", log);
    cr_assert_null(strstr(log, "/v1/health status="), "health polls are not logged:\n%s", log);
    free(log);
}

/* A full engine queue answers 503 with Retry-After at once (clients back off and retry),
 * instead of holding the connection; the server keeps serving once the queue drains. */
/* ---- OpenAI's error shape ------------------------------------------------------------------ */

Test(http, openai_routes_answer_bad_parameters_400_naming_the_param, .timeout = 60)
{
    server s = server_start(NULL);
    const struct {
        const char *field, *value, *param;
    } bad[] = {
        {"temperature", "-1", "temperature"}, {"temperature", "\"hot\"", "temperature"},
        {"top_p", "0", "top_p"},              {"top_p", "2", "top_p"},
        {"max_tokens", "0", "max_tokens"},    {"max_tokens", "2.5", "max_tokens"},
        {"n", "2", "n"},                      {"n", "0", "n"},
    };
    const char *shapes[][2] = {
        {"/v1/completions", "{\"prompt\":\"x\",\"%s\":%s}"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"%s\":%s}"},
    };
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char body[256];
            snprintf(body, sizeof body, shapes[k][1], bad[i].field, bad[i].value);
            tu_http_resp r = request(s.port, "POST", shapes[k][0], TOKEN, body);
            cr_assert_eq(r.status, 400, "%s %s: %d %s", shapes[k][0], body, r.status, r.body);
            tu_json *j = json_of(&r);
            const tu_json *e = tu_json_get(j, "error");
            cr_assert_not_null(e, "%s", r.body);
            cr_assert_str_eq(jstr(e, "type"), "invalid_request_error");
            cr_assert(jstr(e, "param") && !strcmp(jstr(e, "param"), bad[i].param),
                      "%s %s: param in %s", shapes[k][0], body, r.body);
            cr_assert_not_null(jstr(e, "message"));
            const tu_json *code = tu_json_get(e, "code");
            cr_assert(code && code->type == TU_JSON_NULL, "code is null: %s", r.body);
            tu_json_free(j);
            tu_http_resp_free(&r);
        }
    /* Tabby's and llama.cpp's routes keep their codes. */
    expect(s.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"top_p\":0}", 422, "top_p");
    expect(s.port, "POST", "/v1/completions", TOKEN,
           "{\"segments\":{\"prefix\":\"x\"},\"temperature\":-1}", 422, "temperature");
    cr_assert_eq(server_stop(&s), 0);
}

static long long metrics_cached(int port)
{
    tu_http_resp m = request(port, "GET", "/metrics", TOKEN, NULL);
    cr_assert_eq(m.status, 200);
    const char *p = strstr(m.body, "\nserval_prompt_tokens_cached_total ");
    cr_assert_not_null(p, "%s", m.body);
    long long v = atoll(p + strlen("\nserval_prompt_tokens_cached_total "));
    tu_http_resp_free(&m);
    return v;
}

/* With --prefix-cache-per-token, HTTP requests reuse only their own token's cached prompts. */
Test(http, prefix_cache_per_token_keeps_each_tokens_prompts_to_itself, .timeout = 120)
{
    const char *extra[] = {"--token", "test-token-2", "--prefix-cache-per-token", NULL};
    server s = server_start(extra);
    const char *body = "{\"prompt\":\"import os\\nimport sys\\n\\ndef read_config(path):\\n    "
                       "\\\"\\\"\\\"Reads a key=value file into a dict, skipping comments and blank "
                       "lines.\\\"\\\"\\\"\\n    out = {}\\n    with open(path) as f:\\n        for "
                       "line in f:\\n\",\"max_tokens\":2,\"temperature\":0}";
    const char *who[3] = {TOKEN, TOKEN, "test-token-2"};
    long long after[3];
    for (int i = 0; i < 3; i++) {
        tu_http_resp r = request(s.port, "POST", "/v1/completions", who[i], body);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        tu_http_resp_free(&r);
        after[i] = metrics_cached(s.port);
    }
    cr_assert_eq(after[0], 0, "the first request found %lld cached tokens", after[0]);
    cr_assert_geq(after[1], 32, "the same token's second request reused only %lld", after[1]);
    cr_assert_eq(after[2], after[1], "another token reused %lld cached tokens of the first's",
                 after[2] - after[1]);
    cr_assert_eq(server_stop(&s), 0);
}
