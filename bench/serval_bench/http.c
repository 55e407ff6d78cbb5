/* http.c — serval-bench's HTTP/1.1 client: one request per call on a kept-alive connection,
 * read with poll until the reply ends, the developer types on (abort: close the connection, as
 * tabby-agent does) or the deadline; Content-Length and chunked bodies, OpenAI SSE streams. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* A growing byte buffer. */
typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static bool buf_put(buf *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

/* Non-blocking connect to cfg's host:port, waiting until deadline_ms. */
static int connect_to(const bench_cfg *cfg, double deadline_ms, char *err, size_t cap)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int rc = getaddrinfo(cfg->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, cap, "resolve %.100s: %s", cfg->host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno != EINPROGRESS) {
        snprintf(err, cap, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (rc < 0) {
        struct pollfd p = {fd, POLLOUT, 0};
        double left = deadline_ms - bench_now_ms();
        int e = 0;
        socklen_t el = sizeof e;
        if (left <= 0 || poll(&p, 1, (int)left + 1) <= 0 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
            snprintf(err, cap, "connect: %s", e ? strerror(e) : "timed out");
            close(fd);
            return -1;
        }
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n, double deadline_ms)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        struct pollfd q = {fd, POLLOUT, 0};
        double left = deadline_ms - bench_now_ms();
        if (left <= 0 || poll(&q, 1, (int)left + 1) < 0)
            return false;
    }
    return true;
}

/* Reading state of one response. */
typedef struct reader {
    buf raw, body;
    size_t hdr_end;   /* 0 until the header block is in */
    long content_len; /* -1: none */
    bool chunked, keep_alive, done;
    bool llama;       /* llama.cpp server shapes: content, tokens_predicted, stop */
    bool chat;        /* OpenAI chat: choices[0].message.content / delta.content */
    size_t pos;       /* chunked: next raw byte to decode */
    long chunk_left;  /* chunked: -1 size line next, 0 CRLF next, >0 data bytes, -2 the
                       * trailer after the last chunk, up to its empty line */
    size_t sse_pos;   /* stream: next body byte to scan for events */
    char request_id[64];             /* X-Request-Id */
    double server_queue_ms, server_total_ms; /* Server-Timing's queue and total; -1: none */
} reader;

/* The dur= of `name` in a Server-Timing header value ("queue;dur=0.4, total;dur=80"), or -1. */
static double timing_dur(const char *v, const char *eol, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = v; p && p < eol; p = strchr(p, ',')) {
        p += strspn(p, ", ");
        if (strncmp(p, name, n) == 0 && strncmp(p + n, ";dur=", 5) == 0)
            return strtod(p + n + 5, NULL);
    }
    return -1;
}

static void parse_head(reader *rd, int *status)
{
    char *end = strstr(rd->raw.p, "\r\n\r\n");
    if (!end)
        return;
    rd->hdr_end = (size_t)(end - rd->raw.p) + 4;
    *status = 0;
    /* Empty lines before the status line are tolerated (RFC 9112 2.2). */
    sscanf(rd->raw.p + strspn(rd->raw.p, "\r\n"), "HTTP/1.%*d %d", status);
    rd->content_len = -1;
    rd->keep_alive = true;
    rd->pos = rd->hdr_end;
    rd->chunk_left = -1;
    for (char *l = strstr(rd->raw.p, "\r\n"); l && l + 2 < end; l = strstr(l + 2, "\r\n")) {
        char *h = l + 2;
        if (strncasecmp(h, "content-length:", 15) == 0)
            rd->content_len = atol(h + 15);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && strstr(h, "chunked") &&
                 strstr(h, "chunked") < strstr(h, "\r\n"))
            rd->chunked = true;
        else if (strncasecmp(h, "connection:", 11) == 0 && strncasecmp(h + 11, " close", 6) == 0)
            rd->keep_alive = false;
        else if (strncasecmp(h, "x-request-id:", 13) == 0) {
            const char *v = h + 13 + strspn(h + 13, " ");
            size_t n = strcspn(v, "\r\n");
            if (n >= sizeof rd->request_id)
                n = sizeof rd->request_id - 1;
            memcpy(rd->request_id, v, n);
            rd->request_id[n] = 0;
        } else if (strncasecmp(h, "server-timing:", 14) == 0) {
            const char *eol = strstr(h, "\r\n");
            rd->server_queue_ms = timing_dur(h + 14, eol, "queue");
            rd->server_total_ms = timing_dur(h + 14, eol, "total");
        }
    }
}

/* Moves newly arrived raw bytes into body (de-chunking); sets done at the end. */
static bool advance_body(reader *rd)
{
    if (!rd->chunked) {
        if (rd->pos < rd->raw.len &&
            !buf_put(&rd->body, rd->raw.p + rd->pos, rd->raw.len - rd->pos))
            return false;
        rd->pos = rd->raw.len;
        if (rd->content_len >= 0 && rd->body.len >= (size_t)rd->content_len)
            rd->done = true;
        return true;
    }
    while (!rd->done) {
        size_t avail = rd->raw.len - rd->pos;
        const char *p = rd->raw.p + rd->pos;
        if (rd->chunk_left == -1) {
            const char *nl = memchr(p, '\n', avail);
            if (!nl)
                return true;
            long size = strtol(p, NULL, 16);
            rd->pos += (size_t)(nl - p) + 1;
            /* After the last chunk comes the trailer and its empty line: read to its end, or
             * its CRLF, arriving in a later segment (llama-server's), would start the next
             * reply on this kept-alive connection. */
            rd->chunk_left = size == 0 ? -2 : size;
        } else if (rd->chunk_left == -2) {
            const char *nl = memchr(p, '\n', avail);
            if (!nl)
                return true;
            bool empty = nl == p || (nl == p + 1 && p[0] == '\r');
            rd->pos += (size_t)(nl - p) + 1;
            if (empty)
                rd->done = true; /* trailer fields are ignored */
        } else if (rd->chunk_left == 0) {
            if (avail < 2)
                return true;
            rd->pos += 2;
            rd->chunk_left = -1;
        } else {
            size_t n = avail < (size_t)rd->chunk_left ? avail : (size_t)rd->chunk_left;
            if (n == 0)
                return true;
            if (!buf_put(&rd->body, p, n))
                return false;
            rd->pos += n;
            rd->chunk_left -= (long)n;
        }
    }
    return true;
}

static void take_usage(json_t *j, bench_http_result *out)
{
    json_t *tp = json_object_get(j, "tokens_predicted"),
           *te = json_object_get(j, "tokens_evaluated");
    if (json_is_integer(tp)) /* llama.cpp server's usage */
        out->completion_tokens = (int)json_integer_value(tp);
    if (json_is_integer(te))
        out->prompt_tokens = (int)json_integer_value(te);
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        json_t *pt = json_object_get(u, "prompt_tokens"),
               *ct = json_object_get(u, "completion_tokens");
        if (json_is_integer(pt))
            out->prompt_tokens = (int)json_integer_value(pt);
        if (json_is_integer(ct))
            out->completion_tokens = (int)json_integer_value(ct);
    }
    json_t *id = json_object_get(j, "id");
    if (json_is_string(id) && !out->id[0])
        snprintf(out->id, sizeof out->id, "%s", json_string_value(id));
    if (json_is_true(json_object_get(j, "superseded")))
        out->server_superseded = true; /* Serval ended it for a newer request of its session */
    /* Serval's last stream event: {"serval": {request_id, queue_ms, first_token_ms, total_ms}} */
    json_t *sv = json_object_get(j, "serval");
    if (json_is_object(sv)) {
        json_t *q = json_object_get(sv, "queue_ms"), *t = json_object_get(sv, "total_ms");
        if (json_is_number(q))
            out->server_queue_ms = json_number_value(q);
        if (json_is_number(t))
            out->server_total_ms = json_number_value(t);
    }
}

/* choices[0].text of an OpenAI/Tabby completion object, content of a llama.cpp one,
 * choices[0].message.content (delta.content in a stream) of a chat one (NULL when absent). */
static const char *choice_text(json_t *j, const reader *rd)
{
    if (rd->llama)
        return json_string_value(json_object_get(j, "content"));
    json_t *c = json_object_get(j, "choices");
    if (!json_is_array(c))
        return NULL;
    if (json_array_size(c) == 0)
        return "";
    json_t *c0 = json_array_get(c, 0);
    if (!rd->chat)
        return json_string_value(json_object_get(c0, "text"));
    json_t *m = json_object_get(c0, "message");
    if (!m)
        m = json_object_get(c0, "delta");
    json_t *content = json_object_get(m, "content");
    return json_is_string(content) ? json_string_value(content) : json_is_object(m) ? "" : NULL;
}

/* Scans complete SSE events in the body: text pieces, usage, [DONE]. */
static bool scan_sse(reader *rd, buf *text, bench_http_result *out)
{
    for (;;) {
        char *start = rd->body.p + rd->sse_pos;
        char *end = strstr(start, "\n\n");
        if (!end)
            return true;
        rd->sse_pos = (size_t)(end - rd->body.p) + 2;
        if (strncmp(start, "data:", 5) != 0)
            continue;
        char *d = start + 5;
        while (*d == ' ')
            d++;
        if (strncmp(d, "[DONE]", 6) == 0) {
            out->complete = true;
            continue;
        }
        json_t *j = json_loadb(d, (size_t)(end - d), 0, NULL);
        if (!j) {
            snprintf(out->error, sizeof out->error, "malformed SSE event");
            return false;
        }
        const char *t = choice_text(j, rd);
        if (t && *t) {
            out->t_last_token = bench_now_ms();
            if (out->t_first_token < 0)
                out->t_first_token = out->t_last_token;
            out->pieces++;
            buf_put(text, t, strlen(t));
        }
        if (rd->llama && json_is_true(json_object_get(j, "stop")))
            out->complete = true; /* llama.cpp's last event; no [DONE] */
        take_usage(j, out);
        json_decref(j);
    }
}

static void finish_plain(reader *rd, buf *text, bench_http_result *out)
{
    json_t *j = json_loadb(rd->body.p ? rd->body.p : "", rd->body.len, 0, NULL);
    if (!j) {
        snprintf(out->error, sizeof out->error, "status %d: body is not JSON", out->status);
        return;
    }
    if (out->status / 100 == 2) {
        const char *t = choice_text(j, rd);
        if (!t)
            snprintf(out->error, sizeof out->error, "no %s in the reply",
                     rd->llama  ? "content"
                     : rd->chat ? "choices[0].message.content"
                                : "choices[0].text");
        else {
            buf_put(text, t, strlen(t));
            out->complete = true;
        }
    } else {
        json_t *e = json_object_get(j, "error");
        const char *m = json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                          : json_string_value(e);
        snprintf(out->error, sizeof out->error, "status %d: %.120s", out->status, m ? m : "");
    }
    take_usage(j, out);
    json_decref(j);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Connects when *fd is -1 and sends; a kept-alive connection (*reused) the server closed
 * meanwhile fails here or at the first read, and is retried once on a new one. false: error
 * set, *fd closed. */
static bool send_request(const bench_cfg *cfg, int *fd, const char *req, size_t len,
                         double deadline_ms, bool *reused, char *err, size_t cap)
{
    *reused = *fd >= 0;
    if (*fd < 0 && (*fd = connect_to(cfg, deadline_ms, err, cap)) < 0)
        return false;
    if (send_all(*fd, req, len, deadline_ms))
        return true;
    close_fd(fd);
    bool retry = *reused;
    *reused = false;
    if (retry && (*fd = connect_to(cfg, deadline_ms, err, cap)) >= 0 &&
        send_all(*fd, req, len, deadline_ms))
        return true;
    if (!err[0])
        snprintf(err, cap, "send: %s", strerror(errno));
    close_fd(fd);
    return false;
}

/* Reads the reply into rd (SSE text into text) until it ends: true. false: aborted (out->aborted),
 * timed out or failed (out->error); *fd is closed then. */
static bool read_reply(const bench_cfg *cfg, int *fd, const char *req, size_t len, bool reused,
                       bool stream, double abort_at_ms, double deadline_ms, reader *rd, buf *text,
                       bench_http_result *out)
{
    char chunk[16384];
    const char *fail = NULL;
    while (!rd->done && !fail) {
        double now = bench_now_ms();
        double until = abort_at_ms < deadline_ms ? abort_at_ms : deadline_ms;
        if (now >= until) {
            out->aborted = abort_at_ms <= deadline_ms;
            fail = out->aborted ? "" : "timed out";
            break;
        }
        struct pollfd p = {*fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)(until - now) + 1);
        if (pr < 0 && errno != EINTR)
            fail = "poll failed";
        if (pr <= 0)
            continue;
        ssize_t n = recv(*fd, chunk, sizeof chunk, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0 && rd->hdr_end && rd->content_len < 0 && !rd->chunked) {
            rd->done = true; /* a body that runs until close */
            close_fd(fd);
        } else if (n <= 0 && !rd->raw.len && reused) { /* the idle connection was closed */
            reused = false;
            close_fd(fd);
            if ((*fd = connect_to(cfg, deadline_ms, out->error, sizeof out->error)) < 0 ||
                !send_all(*fd, req, len, deadline_ms))
                fail = out->error[0] ? out->error : "resend failed";
        } else if (n <= 0) {
            fail = "connection closed mid-reply";
        } else {
            if (out->t_first_byte < 0)
                out->t_first_byte = bench_now_ms();
            if (!buf_put(&rd->raw, chunk, (size_t)n))
                fail = "out of memory";
            else if (!rd->hdr_end && (parse_head(rd, &out->status), !rd->hdr_end))
                continue;
            else if (!advance_body(rd))
                fail = "out of memory";
            else if (stream && out->status / 100 == 2 && rd->body.len && !scan_sse(rd, text, out))
                fail = out->error;
        }
    }
    if (!fail)
        return true;
    if (!out->error[0] && *fail)
        snprintf(out->error, sizeof out->error, "%s", fail);
    close_fd(fd);
    return false;
}

void bench_http_post(const bench_cfg *cfg, const char *token, int *fd, const char *path,
                     const char *body, bool stream, double abort_at_ms, double deadline_ms,
                     bench_http_result *out)
{
    memset(out, 0, sizeof *out);
    out->t_first_byte = out->t_first_token = out->t_last_token = out->t_done = -1;
    out->prompt_tokens = out->completion_tokens = out->cached_tokens = -1;
    out->server_queue_ms = out->server_total_ms = -1;
    size_t blen = strlen(body);
    char *req = malloc(blen + 1024);
    reader rd = {.llama = cfg->target == BENCH_TARGET_LLAMACPP,
                 .chat = cfg->target == BENCH_TARGET_CHAT,
                 .server_queue_ms = -1,
                 .server_total_ms = -1};
    buf text = {0};
    if (!req) {
        snprintf(out->error, sizeof out->error, "out of memory");
        out->text = strdup("");
        return;
    }
    int hl =
        snprintf(req, 1024,
                 "POST %s%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                 "%s%s%sUser-Agent: serval-bench\r\nAccept: */*\r\nContent-Length: %zu\r\n\r\n",
                 cfg->base_path, path, cfg->host, cfg->port, token ? "Authorization: Bearer " : "",
                 token ? token : "", token ? "\r\n" : "", blen);
    memcpy(req + hl, body, blen);
    size_t len = (size_t)hl + blen;
    out->t_sent = bench_now_ms();
    bool reused;
    if (send_request(cfg, fd, req, len, deadline_ms, &reused, out->error, sizeof out->error) &&
        read_reply(cfg, fd, req, len, reused, stream, abort_at_ms, deadline_ms, &rd, &text, out)) {
        out->t_done = bench_now_ms();
        if (!rd.keep_alive)
            close_fd(fd);
        if (strcmp(path, "/v1/events") == 0) { /* any 2xx; nobody reads the body */
            if (out->status / 100 != 2)
                snprintf(out->error, sizeof out->error, "status %d", out->status);
        } else if (stream && out->status / 100 == 2) {
            if (!out->complete)
                snprintf(out->error, sizeof out->error, "stream ended without %s",
                         rd.llama ? "a stop event" : "[DONE]");
        } else {
            finish_plain(&rd, &text, out);
        }
        if (out->t_first_token < 0)
            out->t_first_token = out->t_first_byte;
    }
    /* The headers' id and timings (a stream's final event may have given its own already). */
    snprintf(out->request_id, sizeof out->request_id, "%s", rd.request_id);
    if (out->server_queue_ms < 0)
        out->server_queue_ms = rd.server_queue_ms;
    if (out->server_total_ms < 0)
        out->server_total_ms = rd.server_total_ms;
    out->text = text.p ? text.p : strdup("");
    free(rd.raw.p);
    free(rd.body.p);
    free(req);
}

int bench_http_get(const bench_cfg *cfg, const char *path, char **body)
{
    /* One-off GETs (the start-up health check) reuse the POST reader with an empty JSON body
     * would be wrong for a GET; a tiny blocking exchange is enough. */
    char err[160];
    double deadline = bench_now_ms() + 10000;
    int fd = connect_to(cfg, deadline, err, sizeof err);
    if (body)
        *body = NULL;
    if (fd < 0)
        return 0;
    char req[1024];
    int hl = snprintf(
        req, sizeof req, "GET %s%s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sConnection: close\r\n\r\n",
        cfg->base_path, path, cfg->host, cfg->port, cfg->token ? "Authorization: Bearer " : "",
        cfg->token ? cfg->token : "", cfg->token ? "\r\n" : "");
    reader rd = {0};
    int status = 0;
    if (send_all(fd, req, (size_t)hl, deadline)) {
        char chunk[8192];
        for (;;) {
            struct pollfd p = {fd, POLLIN, 0};
            double left = deadline - bench_now_ms();
            if (left <= 0 || poll(&p, 1, (int)left + 1) <= 0)
                break;
            ssize_t n = recv(fd, chunk, sizeof chunk, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0 || !buf_put(&rd.raw, chunk, (size_t)n))
                break;
            if (!rd.hdr_end)
                parse_head(&rd, &status);
            if (rd.hdr_end && (!advance_body(&rd) || rd.done))
                break;
        }
    }
    close(fd);
    if (body && rd.body.p)
        *body = rd.body.p;
    else
        free(rd.body.p);
    free(rd.raw.p);
    return rd.hdr_end ? status : 0;
}
