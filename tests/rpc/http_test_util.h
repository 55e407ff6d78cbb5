/* http_test_util.h — what the HTTP end-to-end tests (test_http.c, test_http_limits.c) share:
 * their token, a real `serval serve` started on its HTTP listener, and Criterion-asserting
 * conveniences over the tu_http.h client (a request on a fresh connection, its JSON, SSE
 * events, an expected status, a /metrics value). A failed connect or send fails the test. */
#ifndef SERVAL_HTTP_TEST_UTIL_H
#define SERVAL_HTTP_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "tu_http.h"
#include "tu_json.h"
#include "tu_server.h"

#define TOKEN "auth_test_token" /* the token the fixture's requests carry */

/* The server each test talks to: TOKEN, started once its HTTP listener is up; quiet unless a
 * test reads the request log (server_start_log with quiet false). SIGPIPE is ignored. */
typedef tu_server server;
server server_start_log(const char *const *extra, bool quiet);
server server_start(const char *const *extra);
int server_stop(server *s);

/* tu_http_connect with a timeout_s receive timeout; the test fails when it cannot connect. */
int hc_connect(int port, int timeout_s);
/* One request on a fresh connection (60 s receive timeout), body as JSON when not NULL, token
 * NULL for none; the test fails when the request cannot be sent. */
tu_http_resp request(int port, const char *method, const char *path, const char *token,
                     const char *body);
/* The body parsed as JSON (the caller frees); the test fails when it is not JSON. */
tu_json *json_of(const tu_http_resp *r);
/* o[k] when it is a string, else NULL (o may be NULL). */
const char *jstr(const tu_json *o, const char *k);
/* The "data: {...}" events of an SSE body, parsed (NULL-terminated array; [DONE] skipped and
 * reported in *saw_done). Free with sse_free. */
tu_json **sse_events(const tu_http_resp *r, size_t *n, bool *saw_done);
void sse_free(tu_json **ev, size_t n);
/* request() must answer `status`, with `needle` in the body when not NULL, and an error body
 * (4xx/5xx other than 401 and 405, non-empty) must be JSON. */
void expect(int port, const char *method, const char *path, const char *token, const char *body,
            int status, const char *needle);
/* The value of the Prometheus sample `name` in GET /metrics, -1 when absent. */
double metric(int port, const char *name);
/* Seconds on the engine's monotonic clock. */
double now_s(void);

#endif
