/* http_test_util.c — the HTTP tests' shared helpers (http_test_util.h). */
#include "http_test_util.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"

int hc_connect(int port, int timeout_s)
{
    int fd = tu_http_connect(port, timeout_s, 0);
    cr_assert(fd >= 0, "connect to %d", port);
    return fd;
}

server server_start_log(const char *const *extra, bool quiet)
{
    signal(SIGPIPE, SIG_IGN);
    return tu_server_start("http", TOKEN, quiet, extra);
}

server server_start(const char *const *extra) { return server_start_log(extra, true); }

int server_stop(server *s) { return tu_server_stop(s); }

tu_http_resp request(int port, const char *method, const char *path, const char *token,
                     const char *body)
{
    int fd = hc_connect(port, 60);
    cr_assert(tu_http_send(fd, method, path, token, NULL, body, body ? strlen(body) : 0));
    tu_http_resp r = tu_http_read(fd);
    close(fd);
    return r;
}

tu_json *json_of(const tu_http_resp *r)
{
    tu_json *j = tu_json_parse(r->body, r->len);
    cr_assert_not_null(j, "not JSON (status %d): %.300s", r->status, r->body ? r->body : "");
    return j;
}

const char *jstr(const tu_json *o, const char *k)
{
    const tu_json *v = o ? tu_json_get(o, k) : NULL;
    return v && v->type == TU_JSON_STR ? v->str : NULL;
}

/* The "data: {...}" events of an SSE body, parsed (NULL-terminated array; [DONE] skipped). */
tu_json **sse_events(const tu_http_resp *r, size_t *n, bool *saw_done)
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

void sse_free(tu_json **ev, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tu_json_free(ev[i]);
    free(ev);
}

/* ---- bad input, auth, limits --------------------------------------------------------------- */

void expect(int port, const char *method, const char *path, const char *token, const char *body,
            int status, const char *needle)
{
    tu_http_resp r = request(port, method, path, token, body);
    cr_assert_eq(r.status, status, "%s %s %.80s: got %d: %s", method, path, body ? body : "",
                 r.status, r.body ? r.body : "");
    if (needle)
        cr_assert(r.body && strstr(r.body, needle), "%s %s: '%s' not in %s", method, path,
                  needle, r.body);
    if (status >= 400 && status != 401 && status != 405 && r.len) {
        tu_json *j = json_of(&r);
        tu_json_free(j);
    }
    tu_http_resp_free(&r);
}

double metric(int port, const char *name)
{
    tu_http_resp r = request(port, "GET", "/metrics", TOKEN, NULL);
    cr_assert_eq(r.status, 200);
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    double v = p ? atof(p + strlen(key)) : -1;
    tu_http_resp_free(&r);
    return v;
}

double now_s(void) { return eng_clock_ms() / 1e3; }
