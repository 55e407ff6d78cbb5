/* fuzz_http.c — libFuzzer target: the HTTP request path as a client drives it. The real HTTP
 * front end (http_server_start, the public API) runs in this process on 127.0.0.1, port 0,
 * over the default model; each input becomes one request — method, path (a route of the
 * table, or fuzzed bytes), headers (auth, Content-Type, Origin, fuzzed extras) and body —
 * sent on a fresh loopback connection (tests/tu_http.c, compiled in), so MHD's parsing, the route dispatch, auth, the JSON
 * nesting pre-scan, jansson and every route's body validation run under ASan/UBSan.
 *
 * Must never crash, hang (an answer within 10 s) or answer 500; the status line must be
 * well formed. The engine's context is 2 tokens, so a prompt over 1 token is refused once
 * it has been parsed, validated and tokenized: generation (a decode step costs ~0.5 s in this
 * Debug+ASan build) is reached only by 1-token prompts. rpc/http_*.c keep their parsing
 * static; a direct entry point (http_request_fuzz(method, path, headers, body) -> status,
 * without a socket or a thread per request) would make this many times faster.
 *
 * Input layout: byte 0 picks the path (routes[], or the bytes up to the first '\n' of the
 * rest), byte 1 the method, byte 2 flags (bit 0 auth, bit 1 JSON Content-Type, bit 2 an Origin
 * header, bit 3 the rest starts with one extra header line up to '\n'); then the body.
 * The server's threads allocate across inputs: if LSan reports a leak from MHD or grpc
 * internals, run with -detect_leaks=0. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "http_server.h"
#include "serval_engine.h"
#include "tu_http.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_TOKEN "fuzz_http_token"

static int port;
/* The server and what it runs on live until the process ends (static: reachable for LSan). */
static eng_model *model;
static eng_engine *engine;
static rpc_auth *auth;
static http_server *srv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    signal(SIGPIPE, SIG_IGN);
    const char *env = getenv("SERVAL_MODEL");
    const char *path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    static char data_dir[] = "/tmp/fuzz_http.XXXXXX";
    eng_err err = {{0}};
    eng_engine_config ec = eng_engine_config_defaults();
    ec.n_threads = 1;
    ec.kv_bytes = 16 << 20;
    ec.max_seq_len = 2; /* a prompt over 1 token is refused once validated: no generation */
    ec.max_running = 4;
    ec.max_waiting = 8;
    const char *tokens[] = {FUZZ_TOKEN};
    if (!mkdtemp(data_dir)) {
        perror("fuzz_http: mkdtemp");
        exit(1);
    }
    rpc_auth_config ac = {.tokens = tokens, .n_tokens = 1, .data_dir = data_dir};
    http_server_config hc = {.port = 0, .data_dir = data_dir, .max_body_bytes = 64 << 10,
                             .request_timeout_s = 5, .idle_timeout_s = 5, .body_timeout_s = 5};
    if (eng_model_load(path, &model, &err) != ENG_OK ||
        eng_engine_create(model, &ec, &engine, &err) != ENG_OK ||
        rpc_auth_create(&ac, &auth, NULL, &err) != ENG_OK ||
        http_server_start(&hc, engine, auth, &srv, &port, &err) != ENG_OK) {
        fprintf(stderr, "fuzz_http: %s: %s\n", path, err.msg);
        exit(1);
    }
    return 0;
}

#define FUZZ_CHECK(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_http: %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

static double now_s(void) { return eng_clock_ms() / 1e3; }

/* A path, method, header or header value must not carry CR/LF/NUL of its own: the request
 * would be a different one (those are MHD's to reject, and are fuzzed in the body). */
static void clean(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            s[i] = '_';
}

/* true when s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n || (k == 2 && c < 0xC2))
            return false;
        uint32_t cp = k == 1 ? c : c & (0x7Fu >> k);
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3Fu);
        }
        if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const routes[] = {
        "/v1/health", "/v1beta/server_setting", "/v1/completions", "/v1/events",
        "/v1/chat/completions", "/v1beta/chat/completions", "/v1beta/models", "/v1/models",
        "/completion", "/health", "/tokenize", "/embeddings", "/v1/embeddings", "/metrics",
        "/v1/events?select_kind=line", "/nope"};
    static const char *const methods[] = {"POST", "GET", "OPTIONS", "PUT", "HEAD", "DELETE"};
    if (size < 3)
        return 0;
    const char *rest = (const char *)data + 3;
    size_t n = size - 3;
    char path[256];
    size_t r = data[0] % (sizeof routes / sizeof routes[0] + 1);
    if (r < sizeof routes / sizeof routes[0]) {
        snprintf(path, sizeof path, "%s", routes[r]);
    } else {
        const char *nl = memchr(rest, '\n', n);
        size_t k = nl ? (size_t)(nl - rest) : 0;
        if (k > sizeof path - 2)
            k = sizeof path - 2;
        path[0] = '/';
        memcpy(path + 1, rest, k);
        path[k + 1] = 0;
        clean(path, k + 1);
        for (char *c = path; *c; c++)
            if (*c == ' ')
                *c = '+';
        rest += nl ? k + 1 : 0;
        n -= nl ? k + 1 : 0;
    }
    const char *method = methods[data[1] % (sizeof methods / sizeof methods[0])];
    unsigned flags = data[2];
    char extra[256] = "";
    if (flags & 8) {
        const char *nl = memchr(rest, '\n', n);
        size_t k = nl ? (size_t)(nl - rest) : 0;
        if (k > 200)
            k = 200;
        if (k && memchr(rest, ':', k)) {
            memcpy(extra, rest, k);
            clean(extra, k);
            memcpy(extra + k, "\r\n", 3);
        }
        rest += nl ? (size_t)(nl - rest) + 1 : 0;
        n = size - (size_t)(rest - (const char *)data);
    }
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s%s%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, flags & 1 ? "Authorization: Bearer " FUZZ_TOKEN "\r\n" : "",
                      flags & 2 ? "Content-Type: application/json\r\n" : "",
                      flags & 4 ? "Origin: http://localhost:8080\r\n" : "", extra, n);
    if (hn <= 0 || (size_t)hn >= sizeof head)
        return 0;

    int fd = tu_http_connect(port, 0, 0);
    FUZZ_CHECK(fd >= 0, "connect: %s", strerror(errno));
    /* the server may answer (413, 401) and close before the body is all sent */
    if (tu_http_send_all(fd, head, (size_t)hn))
        tu_http_send_all(fd, rest, n);
    shutdown(fd, SHUT_WR);
    char buf[4096];
    size_t got = 0;
    double t0 = now_s();
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        double left = 10.0 - (now_s() - t0);
        FUZZ_CHECK(left > 0, "no complete answer within 10 s to %s %s", method, path);
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        if (got == sizeof buf - 1) /* enough to judge the status line; drain the rest */
            got = 12 < got ? 12 : got;
    }
    close(fd);
    buf[got] = 0;
    if (got == 0)
        return 0; /* closed without answering: allowed (malformed requests) */
    FUZZ_CHECK(got >= 12 && memcmp(buf, "HTTP/1.", 7) == 0, "not an HTTP answer: %.40s", buf);
    int status = atoi(buf + 9);
    FUZZ_CHECK(status >= 100 && status <= 599, "status %d", status);
    /* (A path that is not UTF-8 got 500 "out of memory" instead of 404 until 8fec67d: this
     * target found it; tests/fuzz/corpus_http/bad_utf8_path keeps the input.) */
    FUZZ_CHECK(status != 500, "500 to %s %s (path UTF-8: %s): %.300s", method, path,
               utf8_ok((const unsigned char *)path, strlen(path)) ? "yes" : "no", buf);
    return 0;
}
