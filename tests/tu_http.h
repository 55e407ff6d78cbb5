/* tu_http.h — the tests' one HTTP/1.1 client: a raw loopback socket, a request written byte for
 * byte as given, and one response read back (status, raw header block, body with chunked
 * transfer decoded). It does not use Criterion (fuzz_http compiles tu_http.c into a libFuzzer
 * target): failures come back as values, and callers assert on them.
 *
 * Contract: every function works on a blocking socket to 127.0.0.1; tu_http_read trusts the
 * server's framing (Content-Length, chunked, 204/304 without a body, else until close) and
 * gives up at the socket's receive timeout, returning what it has. Nothing here retries,
 * follows redirects or reuses connections on its own: keep-alive is the caller's fd. */
#ifndef SERVAL_TU_HTTP_H
#define SERVAL_TU_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tu_http_resp {
    int status;     /* 0: no response (connection closed or timed out before the headers) */
    char *headers;  /* raw header block, status line included, up to its blank line (malloc'd) */
    char *body;     /* de-chunked body, NUL-terminated (malloc'd) */
    size_t len;     /* bytes of body */
} tu_http_resp;

/* Frees the header block and body and zeroes *r. */
void tu_http_resp_free(tu_http_resp *r);

/* A TCP connection to 127.0.0.1:port (close-on-exec, TCP_NODELAY), with SO_RCVTIMEO and
 * SO_SNDTIMEO set from the seconds given (0: no timeout; the send timeout also bounds
 * connect). -1 when the socket or the connect fails, errno as they left it. */
int tu_http_connect(int port, double recv_timeout_s, double send_timeout_s);

/* Sends all n bytes (MSG_NOSIGNAL); false when the peer closed or the send timed out. */
bool tu_http_send_all(int fd, const void *p, size_t n);

#define TU_HTTP_NO_BODY ((size_t)-1)
/* Formats a request head into buf: "<method> <path> HTTP/1.1", Host: 127.0.0.1, then
 * "Authorization: Bearer <token>" when token is not NULL, then `headers` verbatim (extra
 * "K: V\r\n" lines, may be NULL), then — unless body_len is TU_HTTP_NO_BODY —
 * "Content-Type: application/json" and "Content-Length: <body_len>", then the blank line.
 * Returns snprintf's count (>= cap: truncated). */
int tu_http_head(char *buf, size_t cap, const char *method, const char *path, const char *token,
                 const char *headers, size_t body_len);

/* Sends tu_http_head (body NULL: no body headers) and then len bytes of body; false when a
 * send failed or the head does not fit its 4 KiB. */
bool tu_http_send(int fd, const char *method, const char *path, const char *token,
                  const char *headers, const char *body, size_t len);

/* Reads one response from fd (see the framing above). A status of 0 means the connection
 * ended or timed out before a complete header block; the caller frees with tu_http_resp_free. */
tu_http_resp tu_http_read(int fd);

#endif
