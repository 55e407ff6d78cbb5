/* http_server.c — the libmicrohttpd daemon behind the HTTP front end: one thread per
 * connection, routing, bearer auth, per-token rate limits, body limits and timeouts, CORS,
 * and the response helpers the routes use. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "cpuinfo.h"
#include "http_impl.h"
#include "rpc_request.h"

#define DEFAULT_MAX_BODY (1u << 20)

bool http_client_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    int n = poll(&p, 1, 0);
    return n > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void http_make_id(const char *prefix, char *buf, size_t cap)
{
    unsigned char u[16];
    if (getrandom(u, sizeof u, 0) != (ssize_t)sizeof u) {
        uint64_t t = (uint64_t)(eng_clock_ms() * 1e6);
        for (int i = 0; i < 16; i++)
            u[i] = (unsigned char)(t >> (8 * (i % 8))) ^ (unsigned char)(i * 37);
    }
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    snprintf(buf, cap,
             "%s%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", prefix,
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
             u[13], u[14], u[15]);
}

/* ---- responses -------------------------------------------------------------------------- */

static void add_common_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(resp, "Server", "serval");
}

static enum MHD_Result queue(http_req *r, int status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    add_common_headers(resp);
    r->status = status;
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

enum MHD_Result http_reply_text(http_req *r, int status, const char *ctype, const char *text,
                                size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(len ? text : ""), MHD_RESPMEM_MUST_COPY);
    if (resp && ctype)
        MHD_add_response_header(resp, "Content-Type", ctype);
    return queue(r, status, resp);
}

enum MHD_Result http_reply_empty(http_req *r, int status, const char *header, const char *value)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp && header)
        MHD_add_response_header(resp, header, value);
    return queue(r, status, resp);
}

enum MHD_Result http_reply_json(http_req *r, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(body);
    if (!s)
        return http_reply_text(r, 500, "text/plain", "out of memory\n", 14);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    return queue(r, status, resp);
}

enum MHD_Result http_reply_error(http_req *r, int status, const char *type, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:s,s:s,s:i}}", "error", "message", msg, "type", type, "code",
                          status);
    return http_reply_json(r, status, j);
}

enum MHD_Result http_reply_stream(http_req *r, MHD_ContentReaderCallback reader, void *cls,
                                  MHD_ContentReaderFreeCallback free_cb)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, cls, free_cb);
    if (!resp) {
        free_cb(cls);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    return queue(r, 200, resp);
}

enum MHD_Result http_reply_eng_error(http_req *r, eng_status st, const char *msg)
{
    switch (st) {
    case ENG_ERR_OVERLOAD:
    case ENG_ERR_CANCELLED: {
        char body[512];
        int n = snprintf(body, sizeof body,
                         "{\"error\":{\"message\":\"server overloaded: %s\",\"type\":"
                         "\"overloaded\",\"code\":503}}",
                         st == ENG_ERR_CANCELLED ? "shutting down" : "request queue is full");
        struct MHD_Response *resp =
            MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
        if (resp) {
            MHD_add_response_header(resp, "Content-Type", "application/json");
            MHD_add_response_header(resp, "Retry-After", "1");
        }
        return queue(r, 503, resp);
    }
    case ENG_ERR_TOO_LONG:
        return http_reply_error(r, 400, "context_length_exceeded", "%s", msg);
    case ENG_ERR_INVALID:
        return http_reply_error(r, 422, "invalid_request_error", "%s", msg);
    case ENG_ERR_UNSUPPORTED:
        return http_reply_error(r, 501, "not_implemented", "%s", msg);
    default:
        return http_reply_error(r, 500, "server_error", "%s: %s", eng_status_str(st), msg);
    }
}

/* ---- auth, rate limit ------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ? h : 1;
}

/* Token bucket per bearer token: true when the request may go on. */
static bool rate_ok(http_server *s, const char *authz)
{
    if (s->cfg.rate_limit_rps <= 0)
        return true;
    uint64_t key = fnv1a(authz ? authz : "", authz ? strlen(authz) : 0);
    double burst = s->cfg.rate_limit_burst > 0 ? s->cfg.rate_limit_burst
                                               : (s->cfg.rate_limit_rps * 2 > 1 ? s->cfg.rate_limit_rps * 2 : 1);
    double now = eng_clock_ms();
    bool ok = false;
    pthread_mutex_lock(&s->rl_mu);
    size_t i = key & (HTTP_BUCKETS - 1), probes = 0;
    while (s->buckets[i].key && s->buckets[i].key != key && probes < HTTP_BUCKETS)
        i = (i + 1) & (HTTP_BUCKETS - 1), probes++;
    http_bucket *b = &s->buckets[i];
    if (b->key != key) { /* new token (or a full table: the slot is reused) */
        b->key = key;
        b->tokens = burst;
        b->last_ms = now;
    }
    b->tokens += (now - b->last_ms) / 1e3 * s->cfg.rate_limit_rps;
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

/* ---- the MHD callbacks ------------------------------------------------------------------ */

static enum MHD_Result preflight(http_req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, Accept");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
    return queue(r, 204, resp);
}

/* A request that arrives while draining: 503 and close the connection; health routes say
 * "draining" so load balancers take this instance out. */
static enum MHD_Result reply_draining(http_req *r)
{
    bool health = r->route == HTTP_ROUTE_V1_HEALTH || r->route == HTTP_ROUTE_HEALTH;
    const char *body = health ? "{\"status\":\"draining\"}"
                              : "{\"error\":{\"message\":\"server is shutting down: retry on "
                                "another instance\",\"type\":\"unavailable\",\"code\":503}}";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", "application/json");
        MHD_add_response_header(resp, "Connection", "close");
        MHD_add_response_header(resp, "Retry-After", "1");
    }
    return queue(r, 503, resp);
}

/* Checks that happen once the headers are in: auth, rate limit, declared body size.
 * Returns true when a reply has been queued. */
static bool first_call_checks(http_req *r, enum MHD_Result *res)
{
    http_server *s = r->s;
    const char *authz = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    bool auth = http_route_get(r->route)->auth;
    if (auth && !rpc_auth_disabled(s->auth) &&
        !rpc_auth_check_header(s->auth, authz, authz ? strlen(authz) : 0)) {
        *res = http_reply_empty(r, 401, "WWW-Authenticate", "Bearer");
        return true;
    }
    if (auth && !rate_ok(s, authz)) {
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.rate_limited++;
        pthread_mutex_unlock(&s->metrics.mu);
        char body[160];
        int n = snprintf(body, sizeof body,
                         "{\"error\":{\"message\":\"rate limit exceeded (%.3g requests/s per "
                         "token)\",\"type\":\"rate_limited\",\"code\":429}}",
                         s->cfg.rate_limit_rps);
        struct MHD_Response *resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
        if (resp) {
            MHD_add_response_header(resp, "Content-Type", "application/json");
            MHD_add_response_header(resp, "Retry-After", "1");
        }
        *res = queue(r, 429, resp);
        return true;
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > s->cfg.max_body_bytes) {
            *res = http_reply_error(r, 413, "request_too_large",
                                    "request body of %s bytes exceeds the limit of %zu bytes",
                                    cl, s->cfg.max_body_bytes);
            return true;
        }
    }
    return false;
}

static bool body_append(http_req *r, const char *data, size_t n)
{
    if (r->too_big || r->len + n > r->s->cfg.max_body_bytes) {
        r->too_big = true;
        return true;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return false;
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = 0;
    return true;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->route = http_route_find(url);
        r->t_start_ms = eng_clock_ms();
        r->status = 0;
        r->id = atomic_fetch_add(&s->next_id, 1) + 1;
        snprintf(r->path, sizeof r->path, "%s", url);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = ci ? ci->connect_fd : -1;
        atomic_fetch_add(&s->inflight, 1);
        *con_cls = r;
        if (atomic_load(&s->draining))
            return reply_draining(r);
        if (strcmp(method, "OPTIONS") == 0)
            return preflight(r);
        enum MHD_Result res;
        if (first_call_checks(r, &res))
            return res;
        return MHD_YES;
    }
    if (r->status)  /* already answered (e.g. 413 before the body): drop what still comes */
    {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (eng_clock_ms() - r->t_start_ms > s->cfg.body_timeout_s * 1e3) {
            /* A slow-drip client: close rather than hold a thread for it. */
            r->status = 408;
            return MHD_NO;
        }
        if (!body_append(r, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->too_big)
        return http_reply_error(r, 413, "request_too_large",
                                "request body exceeds the limit of %zu bytes",
                                s->cfg.max_body_bytes);
    return http_dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r)
        return;
    int status = r->status ? r->status : 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status == 200 &&
        r->route != HTTP_ROUTE_OTHER)
        status = 499; /* the client went away during the response */
    double ms = eng_clock_ms() - r->t_start_ms;
    http_metrics_request(&s->metrics, r->route, status, ms / 1e3);
    if (s->cfg.log_requests && http_route_get(r->route)->logged) {
        const eng_request_output *g = &r->gen;
        if (r->has_gen)
            fprintf(stderr,
                    "serval: req %llu http %s %s status=%d prompt_tokens=%d output_tokens=%d "
                    "cached_tokens=%d queue_ms=%.1f first_token_ms=%.1f total_ms=%.1f\n",
                    r->id, r->method, r->path, status, g->n_prompt_tokens, g->n_output_tokens,
                    g->n_cached_tokens, g->queue_ms, g->first_token_ms, ms);
        else
            fprintf(stderr, "serval: req %llu http %s %s status=%d total_ms=%.1f\n", r->id,
                    r->method, r->path, status, ms);
    }
    free(r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}

/* ---- start / stop ----------------------------------------------------------------------- */

static char *dup_or(const char *s, const char *def)
{
    return strdup(s ? s : def);
}

static void server_free(http_server *s)
{
    if (!s)
        return;
    prompt_builder_free(s->prompts);
    http_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->rl_mu);
    pthread_mutex_destroy(&s->events_mu);
    free(s->bind_addr);
    free(s->data_dir);
    free(s->model_name);
    free(s->version);
    free(s->device);
    free(s);
}

eng_status http_server_start(const http_server_config *cfg, eng_engine *e, rpc_auth *auth,
                             http_server **out, int *bound_port, eng_err *err)
{
    *out = NULL;
    signal(SIGPIPE, SIG_IGN);
    if (!cfg || !e || !auth)
        return eng_fail(err, ENG_ERR_INVALID, "http: config, engine and auth are required");
    if (cfg->port < 0 || cfg->port > 65535)
        return eng_fail(err, ENG_ERR_INVALID, "http: port %d is out of range", cfg->port);
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return eng_fail(err, ENG_ERR_NOMEM, "http: out of memory");
    http_metrics_init(&s->metrics);
    pthread_mutex_init(&s->rl_mu, NULL);
    pthread_mutex_init(&s->events_mu, NULL);
    s->engine = e;
    s->auth = auth;
    s->cfg = *cfg;
    const eng_model *m = eng_engine_model(e);
    s->bind_addr = dup_or(cfg->bind_addr, "127.0.0.1");
    s->data_dir = dup_or(cfg->data_dir, ".");
    s->model_name = dup_or(cfg->model_name, eng_model_name(m));
    s->version = dup_or(cfg->version, "0.0.0");
    s->device = dup_or(cfg->device, "cpu");
    if (!s->bind_addr || !s->data_dir || !s->model_name || !s->version || !s->device) {
        server_free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "http: out of memory");
    }
    if (!s->cfg.max_body_bytes)
        s->cfg.max_body_bytes = DEFAULT_MAX_BODY;
    if (s->cfg.idle_timeout_s <= 0)
        s->cfg.idle_timeout_s = 30;
    if (s->cfg.body_timeout_s <= 0)
        s->cfg.body_timeout_s = 10;
    if (s->cfg.request_timeout_s <= 0)
        s->cfg.request_timeout_s = 120;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 1024;
    if (s->cfg.default_max_tokens <= 0)
        s->cfg.default_max_tokens = RPC_DEFAULT_COMPLETION_TOKENS;
    if (!eng_cpuinfo_model_name(s->cpu_info, sizeof s->cpu_info))
        snprintf(s->cpu_info, sizeof s->cpu_info, "unknown");
    eng_status st = prompt_builder_create(m, &s->prompts, err);
    if (st != ENG_OK) {
        server_free(s);
        return st;
    }

    /* IPv4 or IPv6 ("::", "0.0.0.0", "127.0.0.1", ...). */
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)cfg->port)};
    struct sockaddr *addr = (struct sockaddr *)&a4;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, s->bind_addr, &a4.sin_addr) != 1) {
        if (inet_pton(AF_INET6, s->bind_addr, &a6.sin6_addr) != 1) {
            eng_fail(err, ENG_ERR_INVALID, "http: bind address '%s' is not an IP address",
                     s->bind_addr);
            server_free(s);
            return ENG_ERR_INVALID;
        }
        addr = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    }
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_access, s,
        MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(2u << 20),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 512u,
        MHD_OPTION_END);
    if (!s->daemon) {
        eng_fail(err, ENG_ERR_IO, "http: cannot listen on %s:%d (%s)", s->bind_addr, cfg->port,
                 strerror(errno));
        server_free(s);
        return ENG_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (bound_port)
        *bound_port = s->port;
    *out = s;
    return ENG_OK;
}

void http_server_drain_begin(http_server *s)
{
    if (s)
        atomic_store(&s->draining, true);
}

bool http_server_drain_wait(http_server *s, int drain_ms)
{
    if (!s)
        return true;
    http_server_drain_begin(s);
    double until = eng_clock_ms() + (drain_ms > 0 ? drain_ms : 0);
    while (atomic_load(&s->inflight) > 0 && !atomic_load(&s->stopping) &&
           eng_clock_ms() < until)
        usleep(5000);
    return atomic_load(&s->inflight) == 0;
}

void http_server_drain_abort(http_server *s)
{
    if (!s)
        return;
    atomic_store(&s->draining, true);
    /* Generations poll `stopping` every few ms (http_gen.c) and cancel their engine request. */
    atomic_store(&s->stopping, true);
}

void http_server_stop(http_server *s, int drain_ms)
{
    if (!s)
        return;
    (void)http_server_drain_wait(s, drain_ms);
    atomic_store(&s->stopping, true);
    MHD_socket l = MHD_quiesce_daemon(s->daemon);
    if (l != MHD_INVALID_SOCKET)
        close(l);
    /* Generations still running see `stopping`, cancel and release their engine requests on
     * their own connection threads; MHD joins those threads before returning, so nothing the
     * engine points at is freed below. */
    MHD_stop_daemon(s->daemon);
    server_free(s);
}
