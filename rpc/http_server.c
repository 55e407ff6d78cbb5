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
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "cpuinfo.h"
#include "http_impl.h"
#include "log.h"
#include "rpc_request.h"
#include "tls_pem.h"

#define DEFAULT_MAX_BODY (1u << 20)
/* Connections one client address may hold: a quarter of the default connection limit, and
 * above the 200 keep-alive clients one proxy or test host is expected to bring. */
#define DEFAULT_PER_IP 256u
/* Requests one token may have in flight: a team often shares one token, so the same bound
 * as one address (the engine's waiting queue still bounds what is queued). */
#define DEFAULT_PER_TOKEN 256

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

/* ---- the MHD callbacks ------------------------------------------------------------------ */

/* The body bytes a request's route takes. */
static size_t route_body_cap(const http_req *r)
{
    long m = http_route_get(r->route)->max_body;
    if (m == HTTP_BODY_NONE)
        return 0;
    const size_t cap = atomic_load(&r->s->max_body);
    if (m == HTTP_BODY_SERVER || (size_t)m > cap)
        return cap;
    return (size_t)m;
}

/* Who the request is and whether it may call its route: 0, 401 (no valid token) or 403 (a
 * token without the route's scope). The metrics token opens /metrics; a loopback client
 * without a token opens the status page. */
static int authorize(http_req *r, const char *authz)
{
    http_server *s = r->s;
    unsigned need = http_route_get(r->route)->auth;
    r->token_idx = rpc_auth_match(s->auth, authz, authz ? strlen(authz) : 0);
    rpc_auth_name(s->auth, r->token_idx, r->who, sizeof r->who);
    if (!need)
        return 0;
    if (r->token_idx != RPC_AUTH_NONE)
        return rpc_auth_allows(s->auth, r->token_idx, need) ? 0 : 403;
    if ((r->route == HTTP_ROUTE_STATUS_PAGE || r->route == HTTP_ROUTE_V1_STATUS) && !authz &&
        r->loopback)
        return 0;
    if (r->route == HTTP_ROUTE_METRICS && s->metrics_token && authz &&
        strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *t = authz + 7;
        while (*t == ' ')
            t++;
        size_t n = strlen(t), m = strlen(s->metrics_token);
        unsigned char diff = (unsigned char)(n != m);
        for (size_t i = 0; i < m; i++) /* constant time in the token's length */
            diff |= (unsigned char)(s->metrics_token[i] ^ (i < n ? t[i] : 0));
        return diff == 0 ? 0 : 401;
    }
    return 401;
}

/* Checks that happen once the headers are in: auth, rate limit, per-token in-flight cap,
 * declared body size, Content-Type. Returns true when a reply has been queued. */
static bool first_call_checks(http_req *r, enum MHD_Result *res)
{
    http_server *s = r->s;
    const http_route_def *d = http_route_get(r->route);
    const char *authz = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    int denied = authorize(r, authz);
    if (denied == 401) {
        *res = http_reply_empty(r, 401, "WWW-Authenticate", "Bearer");
        return true;
    }
    if (denied) {
        char need[64];
        rpc_scopes_format(d->auth, need, sizeof need);
        *res = http_reply_error(r, 403, "forbidden", "the token '%s' does not have the '%s' "
                                "scope %s needs", r->who, need, http_route_name(r->route));
        return true;
    }
    int retry_s = 0;
    if (d->auth && !rpc_auth_rate_take(s->auth, r->token_idx, eng_clock_ms(), &retry_s)) {
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.rate_limited++;
        pthread_mutex_unlock(&s->metrics.mu);
        *res = http_reply_retry_after(r, 429, retry_s, "rate_limited", "the token '%s' is over "
                                      "its own rate limit; retry in %d s", r->who, retry_s);
        return true;
    }
    if (d->auth && !rpc_auth_has_rate(s->auth, r->token_idx) && !http_rate_ok(s, r->token_idx)) {
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.rate_limited++;
        pthread_mutex_unlock(&s->metrics.mu);
        *res = http_reply_retry(r, 429, "rate_limited",
                                "rate limit exceeded (%.3g requests/s per token)",
                                s->cfg.rate_limit_rps);
        return true;
    }
    /* With auth off nobody has an identity: one cap for everyone would be a global limit. */
    if (d->auth && r->token_idx != RPC_AUTH_ANONYMOUS) {
        if (!http_token_acquire(s, r->token_idx)) {
            pthread_mutex_lock(&s->metrics.mu);
            s->metrics.rate_limited++;
            pthread_mutex_unlock(&s->metrics.mu);
            *res = http_reply_retry(r, 429, "rate_limited",
                                    "too many requests in flight for this token (at most %d)",
                                    atomic_load(&s->per_token_cap));
            return true;
        }
        r->token_held = true;
    }
    size_t cap = route_body_cap(r);
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (d->max_body == HTTP_BODY_NONE && ((cl && strtoull(cl, NULL, 10) > 0) || te)) {
        *res = http_reply_error(r, 400, "invalid_request_error", "%s takes no request body",
                                http_route_name(r->route));
        return true;
    }
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > cap) {
            *res = http_reply_error(r, 413, "request_too_large",
                                    "request body of %.20s bytes exceeds the limit of %zu bytes "
                                    "for %s", cl, cap, http_route_name(r->route));
            return true;
        }
    }
    if (d->json_body && strcmp(r->method, "POST") == 0 &&
        !http_ctype_is_json(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                        "Content-Type"))) {
        *res = http_reply_error(r, 415, "invalid_request_error",
                                "the body must be sent as Content-Type: application/json");
        return true;
    }
    return false;
}

static bool body_append(http_req *r, const char *data, size_t n)
{
    if (r->too_big || r->len + n > route_body_cap(r)) {
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

/* "203.0.113.7" / "::1" into buf; *loopback for 127.0.0.0/8, ::1 and v4-mapped 127/8. */
static void client_address(struct MHD_Connection *conn, char *buf, size_t cap, bool *loopback)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(buf, cap, "-");
    *loopback = false;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, buf, (socklen_t)cap);
        *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, buf, (socklen_t)cap);
        *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
                    (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127);
    }
}

static http_req *req_new(http_server *s, struct MHD_Connection *conn, const char *url,
                         const char *method)
{
    http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->s = s;
    r->conn = conn;
    r->method = method;
    r->url = url;
    r->route = http_route_find(url);
    r->t_start_ms = eng_clock_ms();
    r->token_idx = RPC_AUTH_NONE;
    r->id = atomic_fetch_add(&s->next_id, 1) + 1;
    http_log_path(r->path, sizeof r->path, url);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    client_address(conn, r->client, sizeof r->client, &r->loopback);
    atomic_fetch_add(&s->inflight, 1);
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_server *s = cls;
    http_req *r = *con_cls;
    if (!r) {
        if (!(r = req_new(s, conn, url, method)))
            return MHD_NO;
        *con_cls = r;
        if (atomic_load(&s->draining))
            return http_reply_draining(r);
        if (strcmp(method, "OPTIONS") == 0)
            return http_reply_preflight(r);
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
                                "request body exceeds the limit of %zu bytes for %s",
                                route_body_cap(r), http_route_name(r->route));
    http_conn_phase_set(s, conn, HTTP_CONN_SERVING);
    return http_dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
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
        char head[256];
        snprintf(head, sizeof head, "req %llu http %s %s", r->id, r->method, r->path);
        rpc_log_kv kv[] = {
            RPC_LOG_JINT("request_id", r->id), RPC_LOG_JSTR("proto", "http"),
            RPC_LOG_JSTR("method", r->method), RPC_LOG_JSTR("path", r->path),
            RPC_LOG_JSTR("route", http_route_name(r->route)), RPC_LOG_INT("status", status),
            RPC_LOG_INT("prompt_tokens", g->n_prompt_tokens),
            RPC_LOG_INT("output_tokens", g->n_output_tokens),
            RPC_LOG_INT("cached_tokens", g->n_cached_tokens),
            RPC_LOG_NUM("queue_ms", g->queue_ms), RPC_LOG_NUM("first_token_ms", g->first_token_ms),
            RPC_LOG_NUM("total_ms", ms), RPC_LOG_STR("token", r->who),
            RPC_LOG_STR("client", r->client)};
        enum { N = sizeof kv / sizeof kv[0] };
        if (r->has_gen) {
            rpc_log_event(status >= 500 ? RPC_LOG_WARN : RPC_LOG_INFO, "request", head, kv, N);
        } else { /* no generation: status, total_ms, token, client */
            rpc_log_kv k2[] = {kv[0], kv[1], kv[2], kv[3], kv[4], kv[5], kv[11], kv[12], kv[13]};
            rpc_log_event(status >= 500 ? RPC_LOG_WARN : RPC_LOG_INFO, "request", head, k2,
                          sizeof k2 / sizeof k2[0]);
        }
    }
    if (r->token_held)
        http_token_release(s, r->token_idx);
    free(r->body);
    free(r);
    *con_cls = NULL;
    http_conn_phase_set(s, conn, HTTP_CONN_IDLE);
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
    http_watchdog_stop(s);
    prompt_builder_free(s->prompts);
    http_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->rl_mu);
    pthread_mutex_destroy(&s->conns_mu);
    pthread_mutex_destroy(&s->events_mu);
    http_status_free(s->status);
    eng_router_free(s->own_router);
    free(s->buckets);
    free(s->tok_inflight);
    free(s->bind_addr);
    free(s->data_dir);
    free(s->model_name);
    free(s->version);
    free(s->device);
    free(s->cors_origins);
    free(s->metrics_token);
    free(s->tls_cert);
    free(s->tls_key);
    free(s);
}

/* Defaults for every 0 in the config, owned copies of its strings, the per-token tables. */
static eng_status server_setup(http_server *s, const http_server_config *cfg, eng_err *err)
{
    const eng_model *m = eng_engine_model(s->engine);
    s->cfg = *cfg;
    s->bind_addr = dup_or(cfg->bind_addr, "127.0.0.1");
    s->data_dir = dup_or(cfg->data_dir, ".");
    s->model_name = dup_or(cfg->model_name, eng_model_name(m));
    s->version = dup_or(cfg->version, "0.0.0");
    s->device = dup_or(cfg->device, "cpu");
    s->cors_origins = cfg->cors_origins && *cfg->cors_origins ? strdup(cfg->cors_origins) : NULL;
    s->metrics_token = cfg->metrics_token && *cfg->metrics_token ? strdup(cfg->metrics_token) : NULL;
    s->n_token_slots = (int)rpc_auth_n_slots(s->auth) + 1;
    s->buckets = calloc((size_t)s->n_token_slots, sizeof *s->buckets);
    s->tok_inflight = calloc((size_t)s->n_token_slots, sizeof *s->tok_inflight);
    if (!s->bind_addr || !s->data_dir || !s->model_name || !s->version || !s->device ||
        !s->buckets || !s->tok_inflight || (cfg->cors_origins && *cfg->cors_origins && !s->cors_origins) ||
        (cfg->metrics_token && *cfg->metrics_token && !s->metrics_token))
        return eng_fail(err, ENG_ERR_NOMEM, "http: out of memory");
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
    if (!s->cfg.per_ip_connections)
        s->cfg.per_ip_connections = DEFAULT_PER_IP;
    if (s->cfg.max_inflight_per_token == 0)
        s->cfg.max_inflight_per_token = DEFAULT_PER_TOKEN;
    if (!s->cfg.events_max_bytes_per_day)
        s->cfg.events_max_bytes_per_day = (size_t)64 << 20;
    atomic_init(&s->per_token_cap, s->cfg.max_inflight_per_token);
    atomic_init(&s->max_body, s->cfg.max_body_bytes);
    if (s->cfg.default_max_tokens <= 0)
        s->cfg.default_max_tokens = RPC_DEFAULT_COMPLETION_TOKENS;
    if (!eng_cpuinfo_model_name(s->cpu_info, sizeof s->cpu_info))
        snprintf(s->cpu_info, sizeof s->cpu_info, "unknown");
    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        return eng_fail(err, ENG_ERR_INVALID,
                        "http: TLS needs both a certificate and a key file (got only the %s)",
                        cfg->tls_cert_file ? "certificate" : "key");
    if (cfg->tls_cert_file) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return eng_fail(err, ENG_ERR_UNSUPPORTED,
                            "http: TLS was asked for, but this libmicrohttpd was built without "
                            "TLS support (GnuTLS)");
        if (!(s->tls_cert = rpc_read_pem("HTTP", "certificate", cfg->tls_cert_file,
                                         "-----BEGIN CERTIFICATE-----", err)) ||
            !(s->tls_key = rpc_read_pem("HTTP", "key", cfg->tls_key_file, "PRIVATE KEY-----", err)))
            return err->msg[0] ? ENG_ERR_IO : ENG_ERR_NOMEM;
    }
    return prompt_builder_create(m, &s->prompts, err);
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
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_mutex_init(&s->events_mu, NULL);
    s->engine = e;
    s->auth = auth;
    eng_status st = cfg->router ? ENG_OK : eng_router_create(&e, 1, &s->own_router, err);
    s->router = cfg->router ? cfg->router : s->own_router;
    if (st == ENG_OK && eng_router_replica(s->router, 0) != e)
        st = eng_fail(err, ENG_ERR_INVALID, "http: the router's replica 0 is not the engine");
    if (st == ENG_OK)
        s->status = http_status_create(s->router); /* after the router: it samples every replica */
    if (st == ENG_OK)
        st = server_setup(s, cfg, err);
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
    if (s->tls_cert)
        flags |= MHD_USE_TLS;
    /* The TLS options come last: with no TLS they are the end of the list. */
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_access, s,
        MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->cfg.idle_timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->cfg.per_ip_connections,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, http_conn_notify, s,
        MHD_OPTION_URI_LOG_CALLBACK, http_uri_log, s,
        /* jansson, the prompt builder and the tokenizer run on these threads. */
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(2u << 20),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 512u,
        s->tls_cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, s->tls_key,
        MHD_OPTION_HTTPS_MEM_CERT, s->tls_cert,
        MHD_OPTION_END);
    if (!s->daemon) {
        eng_fail(err, ENG_ERR_IO, "http: cannot listen on %s:%d%s (%s)", s->bind_addr, cfg->port,
                 s->tls_cert ? " with TLS (is the key the certificate's?)" : "", strerror(errno));
        server_free(s);
        return ENG_ERR_IO;
    }
    if (!http_watchdog_start(s)) {
        MHD_stop_daemon(s->daemon);
        server_free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "http: cannot start the connection watchdog");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    if (bound_port)
        *bound_port = s->port;
    *out = s;
    return ENG_OK;
}

void http_server_set_rate(http_server *s, double rps, double burst)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->rl_mu);
    s->cfg.rate_limit_rps = rps;
    s->cfg.rate_limit_burst = burst;
    pthread_mutex_unlock(&s->rl_mu);
}

void http_server_set_limits(http_server *s, int max_inflight_per_token, size_t max_body_bytes)
{
    if (!s)
        return;
    /* counted or not is fixed at start: a request counted before must be released after */
    if ((max_inflight_per_token < 0) == (atomic_load(&s->per_token_cap) < 0))
        atomic_store(&s->per_token_cap, max_inflight_per_token ? max_inflight_per_token
                                                                 : DEFAULT_PER_TOKEN);
    atomic_store(&s->max_body, max_body_bytes ? max_body_bytes : DEFAULT_MAX_BODY);
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
