/* http_limits.c — what keeps one HTTP client from crashing, starving or fooling the server:
 * the JSON nesting pre-scan, per-token rate limits and in-flight caps (keyed on
 * rpc_auth_match's index), the absolute header+body deadline per connection (a watchdog),
 * the CORS allow-list, the JSON Content-Type rule and log-safe paths. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_impl.h"

/* ---- request bytes ----------------------------------------------------------------------- */

bool http_json_depth_ok(const char *p, size_t n, int max_depth)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++; /* the escaped byte cannot end the string */
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

bool http_ctype_is_json(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

void http_log_path(char *out, size_t cap, const char *url)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)url; *p && o + 5 < cap; p++) {
        if (*p < 0x20 || *p >= 0x7f || *p == '\\') {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = 0;
}

bool http_origin_allowed(const http_server *s, const char *origin)
{
    const char *list = s->cors_origins;
    size_t olen = strlen(origin);
    while (list && *list) {
        while (*list == ',' || *list == ' ')
            list++;
        size_t n = strcspn(list, ", ");
        if (n && n == olen && strncmp(list, origin, n) == 0)
            return true;
        list += n;
    }
    return false;
}

/* ---- per-token identity: rate limit and in-flight cap ------------------------------------ */

/* The slot of a token index: one per configured token, the last for anonymous use. */
static int slot_of(const http_server *s, int token_idx)
{
    return token_idx >= 0 && token_idx < s->n_token_slots - 1 ? token_idx : s->n_token_slots - 1;
}

bool http_rate_ok(http_server *s, int token_idx)
{
    double now = eng_clock_ms();
    bool ok = false;
    pthread_mutex_lock(&s->rl_mu); /* the rate may change (SIGHUP: http_server_set_rate) */
    double rps = s->cfg.rate_limit_rps;
    if (rps <= 0) {
        pthread_mutex_unlock(&s->rl_mu);
        return true;
    }
    double burst = s->cfg.rate_limit_burst > 0 ? s->cfg.rate_limit_burst : (rps * 2 > 1 ? rps * 2 : 1);
    http_bucket *b = &s->buckets[slot_of(s, token_idx)];
    if (!b->used) {
        b->used = true;
        b->tokens = burst;
        b->last_ms = now;
    }
    b->tokens += (now - b->last_ms) / 1e3 * rps;
    if (b->tokens > burst)
        b->tokens = burst;
    b->last_ms = now;
    if (b->tokens >= 1) {
        b->tokens -= 1;
        ok = true;
    }
    pthread_mutex_unlock(&s->rl_mu);
    return ok;
}

bool http_token_acquire(http_server *s, int token_idx)
{
    const int cap = atomic_load(&s->per_token_cap);
    if (cap < 0)
        return true;
    atomic_int *c = &s->tok_inflight[slot_of(s, token_idx)];
    if (atomic_fetch_add(c, 1) >= cap) {
        atomic_fetch_sub(c, 1);
        return false;
    }
    return true;
}

void http_token_release(http_server *s, int token_idx)
{
    if (atomic_load(&s->per_token_cap) >= 0) /* counting never turns on or off while serving */
        atomic_fetch_sub(&s->tok_inflight[slot_of(s, token_idx)], 1);
}

/* ---- connections: the absolute deadline for a request's headers and body ----------------- */

/* MHD's connection timeout is idle time: a client sending a byte every few seconds resets it
 * forever. Each connection gets a phase and when it began; a watchdog shuts down the socket
 * of one reading a request (request line, headers, body) longer than body_timeout_s, or idle
 * between requests longer than idle_timeout_s, whatever trickles in. shutdown() does not
 * close the descriptor (MHD still owns it) and the entry is removed under the same lock in
 * MHD's CLOSED notification, before MHD closes it, so the descriptor is never a stranger's. */
struct http_conn {
    int fd;
    http_conn_phase phase;
    double since_ms;
    http_conn *prev, *next;
};

static http_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void http_conn_phase_set(http_server *s, struct MHD_Connection *c, http_conn_phase phase)
{
    pthread_mutex_lock(&s->conns_mu);
    http_conn *hc = conn_of(c);
    if (hc && hc->phase != HTTP_CONN_CUT && hc->phase != phase) {
        hc->phase = phase;
        hc->since_ms = eng_clock_ms();
    }
    pthread_mutex_unlock(&s->conns_mu);
}

void http_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe)
{
    http_server *s = cls;
    pthread_mutex_lock(&s->conns_mu);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        http_conn *hc = calloc(1, sizeof *hc);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (hc && ci) {
            hc->fd = ci->connect_fd;
            hc->phase = HTTP_CONN_READING; /* a new connection owes its request now */
            hc->since_ms = eng_clock_ms();
            hc->next = s->conns;
            if (s->conns)
                s->conns->prev = hc;
            s->conns = hc;
            *socket_context = hc;
        } else {
            free(hc);
        }
    } else if (*socket_context) {
        http_conn *hc = *socket_context;
        if (hc->prev)
            hc->prev->next = hc->next;
        else
            s->conns = hc->next;
        if (hc->next)
            hc->next->prev = hc->prev;
        free(hc);
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->conns_mu);
}

void *http_uri_log(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)uri;
    http_conn_phase_set(cls, c, HTTP_CONN_READING); /* a request line: its deadline starts */
    return NULL;
}

static void *watchdog_main(void *p)
{
    http_server *s = p;
    while (!atomic_load(&s->watchdog_stop)) {
        double now = eng_clock_ms();
        pthread_mutex_lock(&s->conns_mu);
        for (http_conn *hc = s->conns; hc; hc = hc->next) {
            double limit_ms = hc->phase == HTTP_CONN_READING ? s->cfg.body_timeout_s * 1e3
                              : hc->phase == HTTP_CONN_IDLE  ? s->cfg.idle_timeout_s * 1e3
                                                             : -1;
            if (limit_ms > 0 && now - hc->since_ms > limit_ms) {
                shutdown(hc->fd, SHUT_RDWR);
                hc->phase = HTTP_CONN_CUT;
            }
        }
        pthread_mutex_unlock(&s->conns_mu);
        usleep(100 * 1000);
    }
    return NULL;
}

bool http_watchdog_start(http_server *s)
{
    s->watchdog_started = pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0;
    return s->watchdog_started;
}

void http_watchdog_stop(http_server *s)
{
    if (!s->watchdog_started)
        return;
    atomic_store(&s->watchdog_stop, true);
    pthread_join(s->watchdog, NULL);
    s->watchdog_started = false;
}
