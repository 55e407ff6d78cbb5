/* test_http.c — the HTTP front end end to end: a real `serval serve` process and a raw-socket
 * HTTP/1.1 client. Replays every request tabby-agent 1.5.0 was recorded sending, the OpenAI
 * and llama.cpp routes, bad input, auth, limits, disconnects, slow clients, 200 clients. */
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
#include "testutil.h"
#include "tu_json.h"
#include "tu_server.h"

#define TOKEN "auth_test_token" /* the token the fixture's requests carry */

/* The server each test talks to: this file's token, started once its HTTP listener is up;
 * quiet unless a test reads the request log. */
typedef tu_server server;

static server server_start_log(const char *const *extra, bool quiet)
{
    signal(SIGPIPE, SIG_IGN);
    return tu_server_start("http", TOKEN, quiet, extra);
}

static server server_start(const char *const *extra) { return server_start_log(extra, true); }

static int server_stop(server *s) { return tu_server_stop(s); }

/* ---- a small HTTP/1.1 client -------------------------------------------------------------- */

typedef struct resp {
    int status;            /* 0: no response (connection closed or timed out) */
    char *headers;         /* raw header block */
    char *body;
    size_t len;
} resp;

static void resp_free(resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int hc_connect(int port, int timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect to %d", port);
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Sends a request; `headers` is extra header lines ("K: V\r\n..."), token NULL for none. */
static bool hc_send(int fd, const char *method, const char *path, const char *token,
                    const char *headers, const char *body, size_t len)
{
    char head[4096];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s%s", method,
                     path, token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", headers ? headers : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    return send_all(fd, head, (size_t)n) && (!body || send_all(fd, body, len));
}

/* Reads one response (Content-Length, chunked, or until close). */
static resp hc_read(int fd)
{
    resp r = {0};
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    char *hend = NULL;
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        buf[len] = 0;
        if (!hend && (hend = strstr(buf, "\r\n\r\n")))
            break;
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0) {
            free(buf);
            return r;
        }
        len += (size_t)k;
    }
    size_t hlen = (size_t)(hend - buf) + 4;
    r.headers = strndup(buf, hlen);
    r.status = atoi(buf + 9);
    const char *cl = strcasestr(r.headers, "\r\ncontent-length:");
    bool chunked = strcasestr(r.headers, "transfer-encoding: chunked") != NULL;
    size_t have = len - hlen;
    memmove(buf, buf + hlen, have);
    len = have;
    size_t want = cl ? (size_t)atol(cl + 17) : (size_t)-1;
    if (r.status == 204 || r.status == 304)
        want = 0;
    for (;;) {
        if (!chunked && len >= want)
            break;
        if (chunked) {
            buf[len] = 0;
            /* Done when the terminating zero-size chunk has arrived. */
            if (len >= 5 && (strstr(buf, "\r\n0\r\n\r\n") || !strncmp(buf, "0\r\n\r\n", 5)))
                break;
        }
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    if (chunked) { /* de-chunk in place */
        size_t o = 0, i = 0;
        while (i < len) {
            size_t sz = strtoul(buf + i, NULL, 16);
            char *crlf = strstr(buf + i, "\r\n");
            if (!crlf || sz == 0)
                break;
            i = (size_t)(crlf - buf) + 2;
            memmove(buf + o, buf + i, sz);
            o += sz;
            i += sz + 2;
        }
        len = o;
    } else if (want != (size_t)-1 && len > want) {
        len = want;
    }
    buf[len] = 0;
    r.body = buf;
    r.len = len;
    return r;
}

static resp request(int port, const char *method, const char *path, const char *token,
                    const char *body)
{
    int fd = hc_connect(port, 60);
    cr_assert(hc_send(fd, method, path, token, NULL, body, body ? strlen(body) : 0));
    resp r = hc_read(fd);
    close(fd);
    return r;
}

static tu_json *json_of(const resp *r)
{
    tu_json *j = tu_json_parse(r->body, r->len);
    cr_assert_not_null(j, "not JSON (status %d): %.300s", r->status, r->body ? r->body : "");
    return j;
}

static const char *jstr(const tu_json *o, const char *k)
{
    const tu_json *v = o ? tu_json_get(o, k) : NULL;
    return v && v->type == TU_JSON_STR ? v->str : NULL;
}

/* The "data: {...}" events of an SSE body, parsed (NULL-terminated array; [DONE] skipped). */
static tu_json **sse_events(const resp *r, size_t *n, bool *saw_done)
{
    tu_json **ev = calloc(4096, sizeof *ev);
    *n = 0;
    *saw_done = false;
    const char *p = r->body;
    while (p && (p = strstr(p, "data: ")) != NULL) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        cr_assert_not_null(end, "an SSE event without its blank line");
        if (!strncmp(p, "[DONE]", 6)) {
            *saw_done = true;
        } else {
            ev[*n] = tu_json_parse(p, (size_t)(end - p));
            cr_assert_not_null(ev[*n], "SSE data is not JSON: %.200s", p);
            (*n)++;
        }
        p = end + 2;
    }
    return ev;
}

static void sse_free(tu_json **ev, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tu_json_free(ev[i]);
    free(ev);
}

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
        cr_assert(hc_send(fd, method, url, NULL, extra, has_body ? body->str : NULL, body->str_len),
                  "%s: send", scenario);
        resp r = hc_read(fd);
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
        resp_free(&r);
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
    resp r = request(s.port, "POST", "/v1/completions", TOKEN,
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
    resp_free(&r);
    /* raw_prompt is used as is. */
    r = request(s.port, "POST", "/v1/completions", TOKEN,
                "{\"debug_options\":{\"raw_prompt\":\"import os\\n\",\"return_prompt\":true}}");
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_of(&r);
    cr_assert_str_eq(jstr(tu_json_get(j, "debug_data"), "prompt"), "import os\n");
    tu_json_free(j);
    resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- OpenAI and llama.cpp routes ----------------------------------------------------------- */

Test(http, openai_completions_and_chat_both_modes, .timeout = 90)
{
    server s = server_start(NULL);
    const char *body = "{\"model\":\"x\",\"prompt\":\"def add(a, b):\",\"max_tokens\":6,"
                       "\"temperature\":0}";
    resp r = request(s.port, "POST", "/v1/completions", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "text_completion");
    const tu_json *c0 = tu_json_get(j, "choices")->items[0];
    char *full = strdup(jstr(c0, "text"));
    cr_assert_gt(strlen(full), 0);
    cr_assert_eq(tu_json_get(tu_json_get(j, "usage"), "completion_tokens")->num, 6);
    cr_assert_str_eq(jstr(c0, "finish_reason"), "length");
    tu_json_free(j);
    resp_free(&r);

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
    sse_free(ev, n);
    resp_free(&r);
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
    tu_json_free(j);
    resp_free(&r);
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
        resp_free(&r);
    }
    free(full);
    r = request(s.port, "GET", "/v1/models", TOKEN, NULL);
    j = json_of(&r);
    cr_assert_str_eq(jstr(j, "object"), "list");
    cr_assert_gt(strlen(jstr(tu_json_get(j, "data")->items[0], "id")), 0);
    tu_json_free(j);
    resp_free(&r);
    r = request(s.port, "GET", "/v1beta/models", TOKEN, NULL);
    j = json_of(&r);
    cr_assert_eq(tu_json_get(j, "completion")->type, TU_JSON_ARR);
    cr_assert_eq(tu_json_get(j, "chat")->type, TU_JSON_ARR, "SmolLM2 has a ChatML template");
    tu_json_free(j);
    resp_free(&r);
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
    resp r = request(s.port, "POST", "/completion", TOKEN, b);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    char *full = strdup(jstr(j, "content"));
    cr_assert_eq(tu_json_get(j, "stop")->b, true);
    tu_json_free(j);
    resp_free(&r);
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
    resp_free(&r);
    free(full);
    r = request(s.port, "POST", "/tokenize", TOKEN, "{\"content\":\"hello world\"}");
    j = json_of(&r);
    cr_assert_eq(tu_json_get(j, "tokens")->n, 2);
    tu_json_free(j);
    resp_free(&r);
    r = request(s.port, "POST", "/embeddings", TOKEN, "{\"content\":\"x\"}");
    cr_assert_eq(r.status, 501);
    cr_assert(strstr(r.body, "embedding"), "%s", r.body);
    resp_free(&r);
    r = request(s.port, "GET", "/health", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "\"ok\""));
    resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- bad input, auth, limits --------------------------------------------------------------- */

static void expect(int port, const char *method, const char *path, const char *token,
                   const char *body, int status, const char *needle)
{
    resp r = request(port, method, path, token, body);
    cr_assert_eq(r.status, status, "%s %s %.80s: got %d: %s", method, path, body ? body : "",
                 r.status, r.body ? r.body : "");
    if (needle)
        cr_assert(r.body && strstr(r.body, needle), "%s %s: '%s' not in %s", method, path,
                  needle, r.body);
    if (status >= 400 && status != 401 && status != 405 && r.len) {
        tu_json *j = json_of(&r);
        tu_json_free(j);
    }
    resp_free(&r);
}

/* ---- sampling: the engine's one policy -------------------------------------------------- */

/* The text of a non-streamed answer: choices[0].text (OpenAI) or content (llama.cpp). */
static char *generated_text(int port, const char *path, const char *body)
{
    resp r = request(port, "POST", path, TOKEN, body);
    cr_assert_eq(r.status, 200, "%s %s: %d %s", path, body, r.status, r.body ? r.body : "");
    tu_json *j = json_of(&r);
    const char *t = strcmp(path, "/completion") == 0
                        ? jstr(j, "content")
                        : jstr(tu_json_get(j, "choices")->items[0], "text");
    cr_assert_not_null(t, "%s: no text in %s", path, r.body);
    char *out = strdup(t);
    tu_json_free(j);
    resp_free(&r);
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
    resp r = request(p, "POST", "/v1/completions", NULL, "{}");
    cr_assert_eq(r.len, 0, "401 has an empty body");
    resp_free(&r);

    /* Huge bodies: refused by Content-Length before they are read, and when chunked. */
    size_t big = 3u << 20;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = 0;
    memcpy(huge, "{\"segments\":{\"prefix\":\"", 23);
    int fd = hc_connect(p, 10);
    hc_send(fd, "POST", "/v1/completions", TOKEN, NULL, huge, big); /* may fail midway */
    r = hc_read(fd);
    cr_assert_eq(r.status, 413, "%s", r.body ? r.body : "");
    resp_free(&r);
    close(fd);
    fd = hc_connect(p, 10);
    char head[256];
    int hn = snprintf(head, sizeof head, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                      "Authorization: Bearer " TOKEN "\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n");
    send_all(fd, head, (size_t)hn);
    for (int i = 0; i < 3; i++) {
        char ch[32];
        int cn = snprintf(ch, sizeof ch, "%x\r\n", 1 << 20);
        send_all(fd, ch, (size_t)cn);
        send_all(fd, huge, 1 << 20);
        send_all(fd, "\r\n", 2);
    }
    send_all(fd, "0\r\n\r\n", 5);
    r = hc_read(fd);
    cr_assert_eq(r.status, 413);
    resp_free(&r);
    close(fd);
    free(huge);

    /* CORS preflight without a token: answered, but no origin is allowed by default. */
    fd = hc_connect(p, 10);
    hc_send(fd, "OPTIONS", "/v1/completions", NULL,
            "Origin: http://x\r\nAccess-Control-Request-Method: POST\r\n", NULL, 0);
    r = hc_read(fd);
    cr_assert_eq(r.status, 204);
    cr_assert_null(strcasestr(r.headers, "Access-Control-Allow-Origin"), "%s", r.headers);
    resp_free(&r);
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
        {HTTP_ROUTE_EMBEDDINGS, "/embeddings", NULL},
        {HTTP_ROUTE_EMBEDDINGS, "/v1/embeddings", NULL},
        {HTTP_ROUTE_METRICS, "/metrics", "GET, OPTIONS"},
    };
    bool seen[HTTP_ROUTE_COUNT] = {false};
    server s = server_start(NULL);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(http_route_find(want[i].path), want[i].route, "%s", want[i].path);
        seen[want[i].route] = true;
        resp r = request(s.port, "DELETE", want[i].path, TOKEN, NULL);
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
        resp_free(&r);
    }
    for (int r = 0; r < HTTP_ROUTE_OTHER; r++)
        cr_assert(seen[r], "route %s is not listed in this test", http_route_name((http_route)r));
    cr_assert_eq(http_route_find("/nope"), HTTP_ROUTE_OTHER);
    cr_assert_eq(http_route_find("/v1/health/"), HTTP_ROUTE_OTHER, "paths match exactly");
    expect(s.port, "DELETE", "/nope", TOKEN, NULL, 404, "no route for DELETE /nope");
    expect(s.port, "DELETE", "/nope", NULL, NULL, 401, NULL);
    /* The metrics label is the route's path (the alias counts as its route). */
    resp r = request(s.port, "GET", "/metrics", TOKEN, NULL);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"/v1/models\",status=\"405\"} 1\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"/embeddings\",status=\"501\"} 2\n"),
              "%s", r.body);
    cr_assert(strstr(r.body, "serval_http_requests_total{route=\"other\",status=\"404\"} 1\n"),
              "%s", r.body);
    resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
}

Test(http, rate_limit_per_token, .timeout = 60)
{
    const char *extra[] = {"--token", "other", "--http-rate-limit", "1", "--http-rate-burst", "3",
                           NULL};
    server s = server_start(extra);
    int ok = 0, limited = 0;
    for (int i = 0; i < 6; i++) {
        resp r = request(s.port, "GET", "/v1beta/server_setting", TOKEN, NULL);
        if (r.status == 200)
            ok++;
        if (r.status == 429) {
            limited++;
            cr_assert(strcasestr(r.headers, "Retry-After:"));
        }
        resp_free(&r);
    }
    cr_assert_geq(ok, 3);
    cr_assert_geq(limited, 2, "a burst of 3 at 1/s lets at most 4 of 6 through");
    expect(s.port, "GET", "/v1beta/server_setting", "other", NULL, 200, NULL);
    expect(s.port, "GET", "/v1/health", NULL, NULL, 200, NULL);
    cr_assert_eq(server_stop(&s), 0);
}

/* ---- disconnects and slow clients ---------------------------------------------------------- */

static double metric(int port, const char *name)
{
    resp r = request(port, "GET", "/metrics", TOKEN, NULL);
    cr_assert_eq(r.status, 200);
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    double v = p ? atof(p + strlen(key)) : -1;
    resp_free(&r);
    return v;
}

/* Seconds on the engine's monotonic clock. */
static double now_s(void) { return eng_clock_ms() / 1e3; }

Test(http, a_client_that_disconnects_cancels_its_generation, .timeout = 90)
{
    server s = server_start(NULL);
    const char *bodies[] = {
        "{\"prompt\":\"Once upon a time\",\"n_predict\":3000,\"stream\":false}",
        "{\"prompt\":\"Once upon a time\",\"n_predict\":3000,\"stream\":true}"};
    for (int k = 0; k < 2; k++) {
        int fd = hc_connect(s.port, 10);
        hc_send(fd, "POST", "/completion", TOKEN, NULL, bodies[k], strlen(bodies[k]));
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
    send_all(stalled, h, strlen(h));
    /* A drip: one byte every 300 ms keeps the idle timer happy but not the body timer. */
    int drip = hc_connect(s.port, 10);
    h = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
        "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    send_all(drip, h, strlen(h));
    double t0 = now_s();
    bool drip_cut = false;
    for (int i = 0; i < 40 && !drip_cut; i++) {
        drip_cut = !send_all(drip, " ", 1);
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
        if (!send_all(fd, head, (size_t)n))
            break;
        resp r = hc_read(fd);
        tu_json *j = r.body ? tu_json_parse(r.body, r.len) : NULL;
        if (r.status == 200 && j && tu_json_get(j, "choices"))
            a->ok++;
        tu_json_free(j);
        resp_free(&r);
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
Test(http, overload_answers_503_with_retry_after, .timeout = 90)
{
    const char *extra[] = {"--max-running", "1", "--max-waiting", "1", NULL};
    server s = server_start(extra);
    const char *body = "{\"prompt\":\"Once upon a time\",\"n_predict\":4000,\"stream\":false}";
    int fds[2];
    for (int k = 0; k < 2; k++) { /* one running, one waiting */
        fds[k] = hc_connect(s.port, 10);
        hc_send(fds[k], "POST", "/completion", TOKEN, NULL, body, strlen(body));
        double t0 = now_s();
        while ((metric(s.port, "serval_running_sequences") + metric(s.port, "serval_queue_depth")) <
                   k + 1 && now_s() - t0 < 10)
            usleep(20 * 1000);
    }
    cr_assert_eq(metric(s.port, "serval_running_sequences"), 1);
    cr_assert_eq(metric(s.port, "serval_queue_depth"), 1);
    double t0 = now_s();
    resp r = request(s.port, "POST", "/completion", TOKEN, body);
    cr_assert_eq(r.status, 503, "a third request with a full queue: %d %s", r.status,
                 r.body ? r.body : "");
    cr_assert_lt(now_s() - t0, 5.0, "answered at once, not after the queue drained");
    cr_assert(r.headers && strcasestr(r.headers, "Retry-After:"), "headers:\n%s", r.headers);
    cr_assert(r.body && strstr(r.body, "overloaded"), "%s", r.body);
    resp_free(&r);
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
    resp r;
    double t_done;
    pthread_t th;
} bg_req;

static void *bg_main(void *p)
{
    bg_req *b = p;
    int fd = hc_connect(b->port, 60);
    hc_send(fd, "POST", b->path, b->token, NULL, b->body, strlen(b->body));
    b->r = hc_read(fd);
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
        resp r = request(s.port, "POST", d->path, TOKEN, limit);
        cr_assert(r.status != 0 && r.status < 500, "%s at the limit: %d %s", d->path, r.status,
                  r.body);
        cr_assert(!r.body || !strstr(r.body, "nests deeper"), "%s: %s", d->path, r.body);
        if (i == HTTP_ROUTE_V1_EVENTS)
            cr_assert_eq(r.status, 200, "an event at the limit is taken: %s", r.body);
        resp_free(&r);
    }
    cr_assert_geq(n_routes, 6);
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
    resp r = request(p.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"n_predict\":2}");
    cr_assert_eq(r.status, 503, "%d %s", r.status, r.body);
    cr_assert(strcasestr(r.headers, "Connection: close"), "%s", r.headers);
    tu_json_free(json_of(&r));
    resp_free(&r);
    expect(p.port, "GET", "/v1/health", TOKEN, NULL, 503, "draining");
    expect(p.port, "GET", "/health", NULL, NULL, 503, "draining");
    cr_assert(http_server_drain_wait(p.s, 60000), "every request finished");
    pthread_join(b.th, NULL);
    cr_assert_eq(b.r.status, 200, "the in-flight request finished: %d %s", b.r.status, b.r.body);
    resp_free(&b.r);
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
    resp_free(&b.r);
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
        resp_free(&b[k].r);
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
        cut = !send_all(a, h + i, 1) || closed_within(a, 0.3);
    }
    cr_assert(cut, "the slow-header client is cut off");
    cr_assert_lt(now_s() - t0, 4.0, "cut after %.1f s", now_s() - t0);
    close(a);
    close(b);
    /* The address's count drops once MHD has cleaned the closed connections up. */
    resp r = {0};
    for (double t1 = now_s(); r.status == 0 && now_s() - t1 < 5; usleep(50 * 1000)) {
        resp_free(&r);
        r = request(p.port, "GET", "/v1/models", TOKEN, NULL);
    }
    cr_assert_eq(r.status, 200, "served again once the connections are gone: %d", r.status);
    resp_free(&r);
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
    hc_send(fd, "GET", "/v1/models", NULL, "Authorization: bearer    " TOKEN "  \r\n", NULL, 0);
    resp r = hc_read(fd);
    close(fd);
    cr_assert_eq(r.status, 429, "%d %s", r.status, r.body);
    cr_assert(strcasestr(r.headers, "Retry-After:"), "%s", r.headers);
    cr_assert(strstr(r.body, "in flight"), "%s", r.body);
    resp_free(&r);
    expect(p.port, "GET", "/v1/models", "other", NULL, 200, NULL); /* another token is served */
    /* TOKEN's burst of 3: the generation, the 429 above and one more spelling; the fourth
     * request is rate limited whatever its spelling. */
    const char *spellings[] = {"BEARER " TOKEN, "Bearer  " TOKEN};
    for (int i = 0; i < 2; i++) {
        char hdr[96];
        snprintf(hdr, sizeof hdr, "Authorization: %s\r\n", spellings[i]);
        fd = hc_connect(p.port, 10);
        hc_send(fd, "GET", "/v1/models", NULL, hdr, NULL, 0);
        r = hc_read(fd);
        close(fd);
        cr_assert_eq(r.status, 429, "%s: %d %s", spellings[i], r.status, r.body);
        if (i == 1)
            cr_assert(strstr(r.body, "rate limit"), "a new spelling is no new bucket: %s", r.body);
        resp_free(&r);
    }
    usleep(100 * 1000); /* "other"'s last request leaves the count once MHD has finished it */
    expect(p.port, "GET", "/v1/models", "other", NULL, 200, NULL);
    http_server_drain_abort(p.s);
    pthread_join(b.th, NULL);
    resp_free(&b.r);
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
    resp r = request(p.port, "POST", "/v1/completions", TOKEN,
                     "{\"prompt\":\"Once upon a time\",\"max_tokens\":4000,\"stream\":true}");
    cr_assert_lt(now_s() - t0, 4.0, "the stream ended after %.1f s", now_s() - t0);
    cr_assert_eq(r.status, 200);
    cr_assert(r.body && strstr(r.body, "generation took longer than 1 s"), "%s", r.body);
    resp_free(&r);
    inproc_stop(&p, 0);
}

/* ---- hardening: what the server exposes ----------------------------------------------------- */

static resp raw_request(int port, const char *text)
{
    int fd = hc_connect(port, 10);
    cr_assert(send_all(fd, text, strlen(text)));
    resp r = hc_read(fd);
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
        resp r = request(p.port, "POST", "/v1/events", TOKEN,
                         "{\"type\":\"view\",\"completion_id\":\"cmpl-1234567890\"}");
        limited += r.status == 429;
        resp_free(&r);
    }
    cr_assert_geq(limited, 4, "the day's 400 bytes are spent");
    inproc_stop(&p, 0);
    /* An unwritable data dir: a 500 that names no path. */
    inproc q = inproc_start((http_server_config){.data_dir = "/proc/serval-no-such-dir"});
    resp r = request(q.port, "POST", "/v1/events", TOKEN, "{\"type\":\"view\"}");
    cr_assert_eq(r.status, 500);
    cr_assert_null(strstr(r.body, "/proc"), "%s", r.body);
    resp_free(&r);
    inproc_stop(&q, 0);
}

Test(http, exposure_content_type_cors_health_metrics_and_bodies, .timeout = 60)
{
    inproc p = inproc_start((http_server_config){.cors_origins = "http://a.example, http://b.example",
                                                 .metrics_token = "scrape"});
    /* POST bodies must be JSON. */
    resp r = raw_request(p.port, "POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                 TOKEN "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 415, "%d %s", r.status, r.body);
    resp_free(&r);
    r = raw_request(p.port, "POST /completion HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                            "\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 415, "no Content-Type: %d", r.status);
    resp_free(&r);
    expect(p.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"n_predict\":1}", 200, NULL);
    /* CORS: only listed origins. */
    const char *origins[] = {"http://b.example", "http://evil.example"};
    for (int i = 0; i < 2; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "Origin: %s\r\n", origins[i]);
        int fd = hc_connect(p.port, 10);
        hc_send(fd, "GET", "/v1/models", TOKEN, hdr, NULL, 0);
        r = hc_read(fd);
        close(fd);
        char want[128];
        snprintf(want, sizeof want, "Access-Control-Allow-Origin: %s", origins[i]);
        cr_assert_eq(strcasestr(r.headers, "Access-Control-Allow-Origin") != NULL, i == 0, "%s",
                     r.headers);
        if (i == 0)
            cr_assert(strcasestr(r.headers, want), "%s", r.headers);
        resp_free(&r);
    }
    /* Health: liveness only without a token; a body is refused. */
    r = request(p.port, "GET", "/v1/health", NULL, NULL);
    cr_assert_eq(r.status, 200);
    cr_assert_null(strstr(r.body, "model"), "no model without a token: %s", r.body);
    resp_free(&r);
    r = raw_request(p.port, "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    cr_assert_eq(r.status, 400, "%d %s", r.status, r.body);
    cr_assert(strstr(r.body, "takes no request body"), "%s", r.body);
    resp_free(&r);
    /* /v1/health: a small body (older Tabby clients POST one) is ignored, a big one refused. */
    r = raw_request(p.port, "POST /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    resp_free(&r);
    r = raw_request(p.port, "GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n");
    cr_assert_eq(r.status, 413, "%d %s", r.status, r.body);
    resp_free(&r);
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
            resp r = request(s.port, "POST", shapes[k][0], TOKEN, body);
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
            resp_free(&r);
        }
    /* Tabby's and llama.cpp's routes keep their codes. */
    expect(s.port, "POST", "/completion", TOKEN, "{\"prompt\":\"x\",\"top_p\":0}", 422, "top_p");
    expect(s.port, "POST", "/v1/completions", TOKEN,
           "{\"segments\":{\"prefix\":\"x\"},\"temperature\":-1}", 422, "temperature");
    cr_assert_eq(server_stop(&s), 0);
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
    resp r = request(p.port, "GET", "/v1/health", NULL, NULL);
    cr_assert_neq(r.status, 200);
    resp_free(&r);
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
    cr_assert(strstr(e.msg, "not a PEM file"), "%s", e.msg);
    bad.tls_key_file = NULL;
    cr_assert_neq(http_server_start(&bad, q.e, q.auth, &q.s, NULL, &e), ENG_OK);
    cr_assert(strstr(e.msg, "both"), "%s", e.msg);
    inproc_stop(&q, 0);
}

/* serval_prompt_tokens_cached_total from /metrics. */
static long long metrics_cached(int port)
{
    resp m = request(port, "GET", "/metrics", TOKEN, NULL);
    cr_assert_eq(m.status, 200);
    const char *p = strstr(m.body, "\nserval_prompt_tokens_cached_total ");
    cr_assert_not_null(p, "%s", m.body);
    long long v = atoll(p + strlen("\nserval_prompt_tokens_cached_total "));
    resp_free(&m);
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
        resp r = request(s.port, "POST", "/v1/completions", who[i], body);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        resp_free(&r);
        after[i] = metrics_cached(s.port);
    }
    cr_assert_eq(after[0], 0, "the first request found %lld cached tokens", after[0]);
    cr_assert_geq(after[1], 32, "the same token's second request reused only %lld", after[1]);
    cr_assert_eq(after[2], after[1], "another token reused %lld cached tokens of the first's",
                 after[2] - after[1]);
    cr_assert_eq(server_stop(&s), 0);
}
