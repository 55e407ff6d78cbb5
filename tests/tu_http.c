/* tu_http.c — the tests' HTTP/1.1 client (tu_http.h). No Criterion: fuzz_http compiles it. */
#include "tu_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

void tu_http_resp_free(tu_http_resp *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static void set_timeout(int fd, int opt, double s)
{
    struct timeval tv = {.tv_sec = (time_t)s,
                         .tv_usec = (suseconds_t)((s - (double)(time_t)s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

int tu_http_connect(int port, double recv_timeout_s, double send_timeout_s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    set_timeout(fd, SO_RCVTIMEO, recv_timeout_s);
    set_timeout(fd, SO_SNDTIMEO, send_timeout_s);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

bool tu_http_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

int tu_http_head(char *buf, size_t cap, const char *method, const char *path, const char *token,
                 const char *headers, size_t body_len)
{
    int n = snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s%s", method, path,
                     token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", headers ? headers : "");
    if (n < 0 || (size_t)n >= cap)
        return n;
    if (body_len != TU_HTTP_NO_BODY)
        n += snprintf(buf + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_len);
    if ((size_t)n >= cap)
        return n;
    n += snprintf(buf + n, cap - (size_t)n, "\r\n");
    return n;
}

bool tu_http_send(int fd, const char *method, const char *path, const char *token,
                  const char *headers, const char *body, size_t len)
{
    char head[4096];
    int n = tu_http_head(head, sizeof head, method, path, token, headers,
                         body ? len : TU_HTTP_NO_BODY);
    if (n < 0 || (size_t)n >= sizeof head)
        return false;
    return tu_http_send_all(fd, head, (size_t)n) && (!body || tu_http_send_all(fd, body, len));
}

tu_http_resp tu_http_read(int fd)
{
    tu_http_resp r = {0};
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
