/* serve.c — `serval serve`: its flag table, model and engine set-up, the gRPC listener (and
 * the HTTP shim beside it), where the tokens come from, the start-up order (HTTP answers
 * "starting" while the model loads; one "ready" summary event), SIGHUP reloads (tokens, log
 * level), and the shutdown: on SIGTERM/SIGINT both front ends stop accepting at once and
 * drain in parallel; a second signal ends the drain. */
#include "serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "engine_flags.h"
#include "flags.h"
#include "grpc_server.h"
#include "http_server.h"
#include "clock.h"
#include "cpuinfo.h"
#include "serval_embed.h"
#include "serval_index.h"
#include "serval_engine.h"
#include "serve_opts.h"
#include "serve_replicas.h"
#include "sd_notify.h"
#include "status.h"

#define SERVE_STOP_GRACE_MS 10000 /* how long stopping may take once the drain has ended */
#define SERVE_ABORT_GRACE_MS 2500 /* ...and after a second signal */

/* Whether addr only reaches this machine: 127.0.0.0/8, ::1 (also v4-mapped), "localhost". */
static bool bind_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(addr, "localhost")) return true;
    if (inet_pton(AF_INET, addr, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) != 1) return false;
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
}

/* Builds the token store from the flags, $SERVAL_TOKEN or the data directory, and says once
 * where the tokens come from. A generated token is printed only by the start that created
 * it; later starts print the file's path, never the secret. */
static eng_status setup_auth(const serve_opts *o, const char *data_dir, rpc_auth **auth,
                             eng_err *err)
{
    const char *env = getenv("SERVAL_TOKEN");
    const char *env_tokens[1] = {env};
    rpc_auth_config ac = {.tokens = o->tokens.items, .n_tokens = o->tokens.n,
                          .token_file = o->token_file, .data_dir = data_dir,
                          .no_auth = o->no_auth,
                          .allow_readable_token_file = o->allow_readable_token_file,
                          .prefix_cache_per_token = o->prefix_cache_per_token};
    bool use_env = !o->no_auth && o->tokens.n == 0 && !o->token_file && env && *env;
    if (use_env) {
        ac.tokens = env_tokens;
        ac.n_tokens = 1;
        ac.tokens_origin = "$SERVAL_TOKEN";
    }
    const char *generated = NULL;
    eng_status st = rpc_auth_create(&ac, auth, &generated, err);
    if (st != ENG_OK) return st;
    const char *path = rpc_auth_data_token_path(*auth);
    if (generated)
        rpc_log(RPC_LOG_WARN, "no token given; generated one, shown only this once: clients "
                              "send 'authorization: Bearer %s' (kept in %s)", generated, path);
    else if (path)
        rpc_log(RPC_LOG_INFO, "clients send the bearer token kept in %s", path);
    else if (use_env)
        rpc_log(RPC_LOG_INFO, "clients send the bearer token from $SERVAL_TOKEN");
    if (!o->no_auth)
        rpc_log(RPC_LOG_INFO, "%zu tokens (named ones from %s/tokens; `serval token list`)",
                rpc_auth_n_tokens(*auth), data_dir ? data_dir : "?");
    if (o->no_auth && o->prefix_cache_per_token)
        rpc_log(RPC_LOG_WARN, "--prefix-cache-per-token does nothing with --no-auth: without "
                              "tokens every request shares one cache");
    if (o->no_auth && bind_is_loopback(o->bind))
        rpc_log(RPC_LOG_WARN, "--no-auth: every request is accepted without a token");
    else if (o->no_auth)
        rpc_log(RPC_LOG_WARN,
                "WARNING: --no-auth with --bind %s: ANYONE WHO CAN REACH THIS MACHINE "
                "CAN USE THIS SERVER without a token (and read /metrics). Bind 127.0.0.1, or "
                "drop --no-auth and give clients a token.", o->bind);
    return ENG_OK;
}

/* ---- shutdown: stop accepting on both front ends, drain them in parallel ------------------ */

typedef struct drain_job {
    const char *name;
    bool (*wait)(void *server, int drain_ms);
    void *server;
    int drain_ms;
    bool drained;
    atomic_bool done;
} drain_job;

static bool http_wait(void *s, int ms) { return http_server_drain_wait(s, ms); }
static bool grpc_wait(void *s, int ms) { return rpc_grpc_server_drain_wait(s, ms); }

static void *drain_main(void *p)
{
    drain_job *j = p;
    j->drained = j->wait(j->server, j->drain_ms);
    atomic_store(&j->done, true);
    return NULL;
}

/* Ends the process if stopping hangs past a deadline (a bug elsewhere must not keep a
 * deployment's restart waiting forever). The deadline only ever moves earlier. */
typedef struct watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double deadline_ms;
    bool finished;
} watchdog;

static void *watchdog_main(void *p)
{
    watchdog *w = p;
    pthread_mutex_lock(&w->mu);
    while (!w->finished && eng_clock_ms() < w->deadline_ms) {
        struct timespec ts = eng_clock_deadline(50);
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    bool stuck = !w->finished;
    pthread_mutex_unlock(&w->mu);
    if (stuck) {
        rpc_log(RPC_LOG_ERROR, "shutdown is stuck; exiting without finishing it");
        _exit(1);
    }
    return NULL;
}

static void watchdog_set(watchdog *w, double deadline_ms, bool finished)
{
    pthread_mutex_lock(&w->mu);
    if (deadline_ms < w->deadline_ms) w->deadline_ms = deadline_ms;
    w->finished = w->finished || finished;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int in_flight(eng_router *e)
{
    eng_engine_stats st;
    eng_router_stats_get(e, &st); /* every replica's */
    return st.running + st.waiting;
}

static const char *sig_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

/* After the first signal: both front ends refuse new work at once, then drain side by side
 * (each up to drain_ms), a second signal ends the drain, then both stop and are freed. */
static void drain_and_stop(http_server *http, rpc_grpc_server *grpc, eng_router *e,
                           const sigset_t *sigs, int sig, int drain_ms)
{
    http_server_drain_begin(http);
    rpc_grpc_server_stop_accepting(grpc);
    rpc_log(RPC_LOG_INFO, "%s: stopped accepting; draining %d in flight, up to %d ms",
            sig_name(sig), in_flight(e), drain_ms);

    watchdog w = {.deadline_ms = eng_clock_ms() + drain_ms + SERVE_STOP_GRACE_MS};
    pthread_mutex_init(&w.mu, NULL);
    pthread_condattr_t ca; /* eng_clock_deadline is on CLOCK_MONOTONIC, so is this wait */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t wt;
    bool have_wt = pthread_create(&wt, NULL, watchdog_main, &w) == 0;

    drain_job jobs[2] = {{.name = "http", .wait = http_wait, .server = http, .drain_ms = drain_ms},
                         {.name = "grpc", .wait = grpc_wait, .server = grpc, .drain_ms = drain_ms}};
    pthread_t t[2];
    bool started[2];
    for (int i = 0; i < 2; i++) {
        atomic_init(&jobs[i].done, false);
        started[i] = pthread_create(&t[i], NULL, drain_main, &jobs[i]) == 0;
        if (!started[i]) drain_main(&jobs[i]); /* no thread: drain it here, one after the other */
    }
    bool aborted = false;
    while (!(atomic_load(&jobs[0].done) && atomic_load(&jobs[1].done))) {
        struct timespec tick = {.tv_nsec = 20 * 1000 * 1000};
        int again = sigtimedwait(sigs, NULL, &tick);
        if (again > 0 && !aborted) {
            aborted = true;
            rpc_log(RPC_LOG_WARN, "second signal (%s): ending drain now, cancelling %d",
                    sig_name(again), in_flight(e));
            watchdog_set(&w, eng_clock_ms() + SERVE_ABORT_GRACE_MS, false);
            http_server_drain_abort(http);
            rpc_grpc_server_drain_abort(grpc);
        }
    }
    for (int i = 0; i < 2; i++)
        if (started[i]) pthread_join(t[i], NULL);
    bool drained = jobs[0].drained && jobs[1].drained;
    if (drained)
        rpc_log(RPC_LOG_INFO, "drained");
    else if (!aborted)
        rpc_log(RPC_LOG_WARN, "drain timed out after %d ms, cancelling %d", drain_ms,
                in_flight(e));
    http_server_stop(http, 0);
    rpc_grpc_server_stop(grpc, 0);
    watchdog_set(&w, 0, true);
    if (have_wt) pthread_join(wt, NULL);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

/* The HTTP shim (rpc/http_server.{h,c}) and gRPC listener settings the flags describe. */
static http_server_config http_config(const serve_opts *o, const char *data_dir)
{
    return (http_server_config){
        .bind_addr = o->bind, .port = (int)o->http_port, .data_dir = data_dir,
        .max_body_bytes = (size_t)o->http_max_body_kb << 10,
        .rate_limit_rps = (double)o->http_rate, .rate_limit_burst = (double)o->http_burst,
        .request_timeout_s = (int)o->http_timeout_s, .version = SERVAL_VERSION,
        .idle_timeout_s = (int)o->http_client_timeout_s,
        .body_timeout_s = (int)o->http_client_timeout_s,
        .device = cli_backend_name(&o->eng), .log_requests = !o->quiet,
        .per_ip_connections = (unsigned)o->per_ip_connections,
        .max_inflight_per_token = o->max_inflight_per_token ? (int)o->max_inflight_per_token : -1,
        .cors_origins = o->cors[0] ? o->cors : NULL, .metrics_token = o->metrics_token,
        .tls_cert_file = o->tls_cert, .tls_key_file = o->tls_key};
}

static rpc_grpc_config grpc_config(const serve_opts *o, int32_t ctx_len)
{
    return (rpc_grpc_config){
        .bind = o->bind, .port = (int)o->grpc_port, .max_inflight = (int)o->max_inflight,
        .max_message_bytes = (int64_t)o->max_message_mb << 20,
        .backend_name = cli_backend_name(&o->eng), .context_length = ctx_len,
        .log_requests = !o->quiet,
        .max_inflight_per_token = o->max_inflight_per_token ? (int)o->max_inflight_per_token : -1,
        .generation_timeout_ms = (int)o->generation_timeout_ms,
        .max_streams_per_connection = (int)o->max_streams_per_connection,
        .tls_cert_file = o->tls_cert, .tls_key_file = o->tls_key};
}

static void log_listening(const char *what, const char *bind, int port, bool tls)
{
    char head[160];
    snprintf(head, sizeof head, strchr(bind, ':') ? "%s listening on [%s]:%d%s"
                                                  : "%s listening on %s:%d%s",
             what, bind, port, tls ? " (TLS)" : "");
    rpc_log_kv kv[] = {RPC_LOG_JSTR("listener", what), RPC_LOG_JSTR("address", bind),
                       RPC_LOG_JINT("port", port), RPC_LOG_JINT("tls", tls)};
    rpc_log_event(RPC_LOG_INFO, "listening", head, kv, sizeof kv / sizeof kv[0]);
}

/* ---- SIGHUP: reload what can change without a restart ------------------------------------ */

/* The value of `key = value  # source` lines of --print-config's text, or NULL. */
static bool setting_value(const char *text, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) || strncmp(p + kl, " = ", 3)) continue;
        const char *v = p + kl + 3, *end = strchr(v, '\n');
        size_t n = end ? (size_t)(end - v) : strlen(v);
        const char *hash = memmem(v, n, "  #", 3); /* the source comment */
        if (hash) n = (size_t)(hash - v);
        while (n && v[n - 1] == ' ') n--;
        snprintf(out, cap, "%.*s", (int)n, v);
        return true;
    }
    return false;
}

static void log_index(void *user, const char *line)
{
    (void)user;
    rpc_log(RPC_LOG_INFO, "%s", line);
}

/* --repo values ("PATH[=GIT_URL]") as the indexer's specs; paths holds their PATH parts. */
static void repo_specs(const cli_list *repos, idx_repo_spec *specs,
                       char (*paths)[1024])
{
    for (size_t i = 0; i < repos->n && i < SERVE_MAX_REPOS; i++) {
        const char *v = repos->items[i], *eq = strchr(v, '=');
        snprintf(paths[i], 1024, "%.*s", (int)(eq ? (size_t)(eq - v) : strlen(v)), v);
        specs[i] = (idx_repo_spec){paths[i], eq && eq[1] ? eq + 1 : NULL};
    }
}

/* The indexer a reload may restart: the index (opened at start, shared with both front ends),
 * the background service, and the repository list it runs over (owned copies: the settings
 * a reload parses are freed after it). */
typedef struct serve_indexer {
    idx_index *index;     /* NULL: serve started without repositories */
    idx_service *service;
    char *repos[SERVE_MAX_REPOS];
    size_t n_repos;
    long reindex_s;
} serve_indexer;

/* Remembers `repos` as the list the service runs over. */
static void indexer_set_repos(serve_indexer *ix, const cli_list *repos, long reindex_s)
{
    for (size_t i = 0; i < ix->n_repos; i++) free(ix->repos[i]);
    ix->n_repos = 0;
    for (size_t i = 0; i < repos->n && i < SERVE_MAX_REPOS; i++)
        if ((ix->repos[ix->n_repos] = strdup(repos->items[i]))) ix->n_repos++;
    ix->reindex_s = reindex_s;
}

/* Whether the list names `v`. */
static bool repos_has(const char *const *items, size_t n, const char *v)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(items[i], v)) return true;
    return false;
}

/* SIGHUP with a changed `repos` or `reindex_interval`: the service restarts over the new list
 * (a repository added is indexed at once). Appends what happened to `applied`; false when it
 * cannot apply them (serve started without repositories: the front ends hold no index). */
static bool reload_repos(const serve_opts *n, serve_indexer *ix, char *applied, size_t cap)
{
    const char *const *was = (const char *const *)ix->repos;
    size_t removed = 0, added = 0;
    for (size_t i = 0; i < ix->n_repos; i++)
        removed += !repos_has(n->repos.items, n->repos.n, was[i]);
    for (size_t j = 0; j < n->repos.n; j++)
        added += !repos_has(was, ix->n_repos, n->repos.items[j]);
    if (!added && !removed && n->repos.n == ix->n_repos && n->reindex_s == ix->reindex_s)
        return true;
    if (!ix->index) return false;
    size_t at = strlen(applied);
    indexer_set_repos(ix, &n->repos, n->reindex_s);
    idx_service_stop(ix->service); /* stops a run at its next file: what is indexed stays */
    ix->service = NULL;
    idx_repo_spec specs[SERVE_MAX_REPOS];
    char paths[SERVE_MAX_REPOS][1024];
    repo_specs(&n->repos, specs, paths);
    eng_err err = {{0}};
    if (n->repos.n && idx_service_start(ix->index, specs, n->repos.n, (int)n->reindex_s,
                                        log_index, NULL, &ix->service, &err) != ENG_OK) {
        snprintf(applied + at, cap - at, "; repos: cannot restart the indexer (%.200s): "
                 "nothing is re-indexed until a restart", err.msg);
        return true;
    }
    snprintf(applied + at, cap - at, "; repos: %zu indexed every %ld s (%zu added, %zu removed%s)",
             n->repos.n, n->reindex_s, added, removed,
             removed ? "; a removed repository's files stay searchable until it is indexed "
                       "again or the index is rebuilt" : "");
    return true;
}

/* SIGHUP's limits: the per-token in-flight cap (both front ends), the HTTP body limit and
 * gRPC's generation timeout, for requests from then on. Turning the cap on or off needs a
 * restart (a request counted before must be released after, see http_server_set_limits): the
 * cap then keeps its current value while the other two still apply. Appends what changed to
 * applied; returns whether max_inflight_per_token was applied (false: named as needing a
 * restart by the caller). */
static bool reload_limits(const serve_opts *n, serve_opts *o, http_server *http,
                          rpc_grpc_server *grpc, char *applied, size_t cap)
{
    const bool toggled = (n->max_inflight_per_token == 0) != (o->max_inflight_per_token == 0);
    const long cap_now = toggled ? o->max_inflight_per_token : n->max_inflight_per_token;
    const long cur[3] = {o->max_inflight_per_token, o->http_max_body_kb, o->generation_timeout_ms};
    const long now[3] = {cap_now, n->http_max_body_kb, n->generation_timeout_ms};
    static const char *const names[3] = {"max_inflight_per_token", "http_max_body_kb",
                                         "generation_timeout_ms"};
    bool any = false;
    for (int i = 0; i < 3; i++) {
        if (cur[i] == now[i]) continue;
        size_t at = strlen(applied);
        snprintf(applied + at, cap - at, "; %s %ld -> %ld", names[i], cur[i], now[i]);
        any = true;
    }
    if (!any) return !toggled;
    http_server_set_limits(http, cap_now ? (int)cap_now : -1, (size_t)n->http_max_body_kb << 10);
    rpc_grpc_server_set_limits(grpc, cap_now ? (int)cap_now : -1, (int)n->generation_timeout_ms);
    o->max_inflight_per_token = cap_now; /* what the next SIGHUP compares with */
    o->http_max_body_kb = n->http_max_body_kb;
    o->generation_timeout_ms = n->generation_timeout_ms;
    return !toggled;
}

/* Reads the settings again (file, environment, the same flags): tokens, the log level, the
 * HTTP per-token rate (http_rate_limit, http_rate_burst), the limits of reload_limits and the
 * repositories to index (repos, reindex_interval) are applied; every other changed setting is
 * named as needing a restart. One log line says what happened. */
static void reload(int argc, char **argv, serve_opts *o, rpc_auth *auth, http_server *http,
                   rpc_grpc_server *grpc, serve_indexer *ix)
{
    char tokens[1600], applied[1024] = "", ignored[1024] = "";
    eng_err err = {{0}};
    if (rpc_auth_reload(auth, tokens, sizeof tokens, &err) != ENG_OK)
        snprintf(tokens, sizeof tokens, "tokens unchanged: %s", err.msg);
    serve_opts n;
    if (cli_serve_opts_parse(argc, argv, "serval serve: SIGHUP", &n) >= 0) {
        rpc_log(RPC_LOG_ERROR, "SIGHUP: %s; the settings do not parse (see above): nothing else "
                "changed", tokens);
        return;
    }
    rpc_log_level lvl = (rpc_log_level)n.log_level;
    if (lvl != rpc_log_get_level()) {
        snprintf(applied, sizeof applied, "; log_level %s -> %s",
                 rpc_log_level_name(rpc_log_get_level()), rpc_log_level_name(lvl));
    }
    if (n.http_rate != o->http_rate || n.http_burst != o->http_burst) {
        size_t at = strlen(applied);
        snprintf(applied + at, sizeof applied - at,
                 "; http_rate_limit %ld -> %ld, http_rate_burst %ld -> %ld",
                 o->http_rate, n.http_rate, o->http_burst, n.http_burst);
        http_server_set_rate(http, (double)n.http_rate, (double)n.http_burst);
        o->http_rate = n.http_rate; /* what the next SIGHUP compares with */
        o->http_burst = n.http_burst;
    }
    bool repos_applied = reload_repos(&n, ix, applied, sizeof applied);
    bool cap_applied = reload_limits(&n, o, http, grpc, applied, sizeof applied);
    /* Every other setting: compare the effective values line by line. */
    for (const char *p = n.effective; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        char key[64], was[512], now[512];
        if (*p == '#' || sscanf(p, "%63[a-z_0-9] = ", key) != 1) continue;
        if (!strcmp(key, "log_level") || !strcmp(key, "http_rate_limit") ||
            !strcmp(key, "http_rate_burst") ||
            (repos_applied && (!strcmp(key, "repo") || !strcmp(key, "reindex_interval"))) ||
            !strcmp(key, "http_max_body_kb") || !strcmp(key, "generation_timeout_ms") ||
            (cap_applied && !strcmp(key, "max_inflight_per_token")))
            continue; /* applied above */
        if (!setting_value(n.effective, key, now, sizeof now)) continue;
        if (setting_value(o->effective, key, was, sizeof was) && !strcmp(was, now)) continue;
        size_t at = strlen(ignored);
        snprintf(ignored + at, sizeof ignored - at, "%s%s", at ? ", " : "", key);
    }
    char head[4096];
    snprintf(head, sizeof head, "SIGHUP: %s%s%s%s%s", tokens, applied,
             *ignored ? "; ignored (a restart applies them): " : "", ignored,
             *ignored ? "" : "; no other setting changed");
    rpc_log_kv kv[] = {RPC_LOG_JSTR("tokens", tokens), RPC_LOG_JSTR("log_level",
                       rpc_log_level_name(lvl)),
                       RPC_LOG_JSTR("applied", applied[0] ? applied + 2 : ""),
                       RPC_LOG_JSTR("needs_restart", ignored)};
    rpc_log_event(RPC_LOG_INFO, "reload", head, kv, sizeof kv / sizeof kv[0]);
    rpc_log_set_level(lvl); /* after the line saying so, which a higher level would hide */
    cli_serve_opts_free(&n);
}

/* ---- start-up ----------------------------------------------------------------------------- */

/* While eng_model_load runs: on a terminal, one line rewritten twice a second with the time
 * spent and how much of the model file is in memory (the process's RSS against its size).
 * Straight to stderr, not through rpc/log: a progress bar for a person, never a log line (it
 * runs only when stderr is a terminal and the format is text). */
typedef struct load_progress {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    const char *path;
} load_progress;

static void *progress_main(void *p)
{
    load_progress *lp = p;
    struct stat st;
    double size_mb = stat(lp->path, &st) == 0 ? (double)st.st_size / (1 << 20) : 0;
    double t0 = eng_clock_ms();
    bool drew = false;
    pthread_mutex_lock(&lp->mu);
    while (!lp->done) {
        struct timespec ts = eng_clock_deadline(500);
        pthread_cond_timedwait(&lp->cv, &lp->mu, &ts);
        if (lp->done) break;
        long long pages = 0, vsz = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f && fscanf(f, "%lld %lld", &vsz, &pages) != 2) pages = 0;
        if (f) fclose(f);
        double rss_mb = (double)pages * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
        fprintf(stderr, "\rserval: loading %s: %.1f s, %.0f of %.0f MiB resident   ",
                lp->path, (eng_clock_ms() - t0) / 1e3, rss_mb, size_mb);
        drew = true;
    }
    pthread_mutex_unlock(&lp->mu);
    if (drew) fprintf(stderr, "\r\033[K");
    return NULL;
}

/* The start-up summary as one event: model, backend, devices, memory, KV blocks, listeners. */
static void log_ready(const serve_opts *o, eng_model *m, eng_router *e, int grpc_port,
                      int http_port, double t_start_ms, double load_ms)
{
    eng_engine_stats es;
    eng_router_stats_get(e, &es); /* KV blocks: every replica's */
    char cpu[128] = "cpu";
    eng_cpuinfo_model_name(cpu, sizeof cpu);
    double ready_ms = eng_clock_ms() - t_start_ms;
    const long tp = o->eng.tp > 1 ? o->eng.tp : 1;
    char tp_note[48] = "";
    if (tp > 1)
        snprintf(tp_note, sizeof tp_note, " split over %d ranks", (int)tp);
    char head[1024];
    snprintf(head, sizeof head, "ready in %.0f ms (model loaded in %.0f ms): %s on %s%s (%s), "
             "weights %.1f MiB, KV %d blocks of %d tokens, grpc %s:%d, http %s:%d",
             ready_ms, load_ms, eng_model_name(m), cli_backend_name(&o->eng), tp_note, cpu,
             (double)eng_model_weight_bytes(m) / (1 << 20), es.kv_blocks_total, es.block_size,
             o->bind, grpc_port, o->bind, http_port);
    rpc_log_kv kv[] = {
        RPC_LOG_JSTR("model", eng_model_name(m)), RPC_LOG_JSTR("model_path", o->model),
        RPC_LOG_JSTR("architecture", eng_model_arch_name(m)),
        RPC_LOG_JINT("layers", eng_model_n_layer(m)),
        RPC_LOG_JINT("context", eng_router_max_seq_len(e)),
        RPC_LOG_JINT("replicas", eng_router_n_replicas(e)), RPC_LOG_JINT("tp", tp),
        RPC_LOG_JSTR("backend", cli_backend_name(&o->eng)), RPC_LOG_JSTR("device", cpu),
        RPC_LOG_JINT("weight_bytes", eng_model_weight_bytes(m)),
        RPC_LOG_JINT("kv_blocks", es.kv_blocks_total), RPC_LOG_JINT("kv_block_size", es.block_size),
        RPC_LOG_JSTR("bind", o->bind), RPC_LOG_JINT("grpc_port", grpc_port),
        RPC_LOG_JINT("http_port", http_port), RPC_LOG_JINT("tls", o->tls_cert != NULL),
        RPC_LOG_JINT("load_ms", (long long)load_ms), RPC_LOG_JINT("ready_ms", (long long)ready_ms)};
    rpc_log_event(RPC_LOG_INFO, "ready", head, kv, sizeof kv / sizeof kv[0]);
}

/* --repo PATH[=GIT_URL] (or `repos` in the config file): the index in <data_dir>/index, kept
 * up to date by a background thread while serve answers from what is indexed so far. */
static eng_status start_indexer(const serve_opts *o, const char *data_dir, eng_embedder *emb,
                                idx_index **ix, idx_service **svc)
{
    *ix = NULL, *svc = NULL;
    if (o->repos.n == 0)
        return ENG_OK;
    if (!emb) {
        rpc_log(RPC_LOG_ERROR, "serve: --repo needs the embedding model (--embedding-model; "
                "not --no-embeddings)");
        return ENG_ERR_INVALID;
    }
    if (!data_dir) {
        rpc_log(RPC_LOG_ERROR, "serve: --repo needs a data dir for the index (--data-dir)");
        return ENG_ERR_INVALID;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/index", data_dir);
    idx_repo_spec specs[SERVE_MAX_REPOS];
    char paths[SERVE_MAX_REPOS][1024];
    repo_specs(&o->repos, specs, paths);
    idx_embedder ie = idx_embedder_from_engine(emb);
    eng_err err = {{0}};
    if (idx_open(dir, &ie, ix, &err) != ENG_OK ||
        idx_service_start(*ix, specs, o->repos.n, (int)o->reindex_s, log_index, NULL, svc,
                          &err) != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: index %s: %s", dir, err.msg);
        idx_close(*ix);
        *ix = NULL;
        return ENG_ERR_IO;
    }
    rpc_log(RPC_LOG_INFO, "indexing %zu repositories into %s in the background (again every %ld "
            "s); completions %s retrieved snippets", o->repos.n, dir, o->reindex_s,
            o->no_retrieval ? "get no (--no-retrieval)" : "get");
    return ENG_OK;
}

/* The embedding model: --embedding-model, else the default one when it exists; none with
 * --no-embeddings. A model named explicitly that does not load is an error; the default one
 * missing is not (the embedding routes then answer 501). */
static eng_status start_embedder(const serve_opts *o, eng_embedder **out)
{
    *out = NULL;
    if (o->no_embeddings)
        return ENG_OK;
    const char *path = o->embedding_model;
    struct stat st;
    if (!path) {
        if (stat(SERVAL_DEFAULT_EMBED_MODEL, &st) != 0) {
            rpc_log(RPC_LOG_INFO, "no embedding model (%s is missing; tools/setup.sh makes it): "
                    "embeddings answer 501", SERVAL_DEFAULT_EMBED_MODEL);
            return ENG_OK;
        }
        path = SERVAL_DEFAULT_EMBED_MODEL;
    }
    eng_embedder_config cfg = eng_embedder_config_defaults();
    cfg.n_threads = (int)o->eng.threads;
    cfg.backend = (eng_backend_kind)o->eng.backend; /* the encoder runs where the model does */
    eng_err err = {{0}};
    eng_status s = eng_embedder_create(path, &cfg, out, &err);
    if (s != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: cannot load embedding model '%s': %s", path, err.msg);
        return s;
    }
    rpc_log(RPC_LOG_INFO, "embedding model %s (%d dimensions, %d tokens) on %s",
            eng_embedder_model_name(*out), eng_embedder_dim(*out),
            eng_embedder_max_tokens(*out), cfg.backend == ENG_BACKEND_CUDA ? "cuda (GPU 0)" : "cpu");
    return ENG_OK;
}

/* Threads that started before main() (OpenBLAS starts its pool when the library loads) do not
 * block SIGINT/SIGTERM/SIGHUP, and the kernel may hand a process-directed signal to any thread
 * that does not block it: whenever the main thread is not inside sigwait (just after READY=1,
 * during a reload or between the drain loop's waits), the default action would end the process
 * at once, with no drain, or on SIGHUP. This handler, which runs only in such a thread, passes
 * the signal on to the main thread, where it waits, blocked, for sigwait. */
static pthread_t serve_main_thread; /* set once, before the handler is installed */

static void forward_to_main(int sig) { pthread_kill(serve_main_thread, sig); }

int cli_serve_main(int argc, char **argv)
{
    serve_opts o;
    int pr = cli_serve_opts_parse(argc, argv, "serval serve", &o);
    if (pr >= 0) return pr;
    rpc_log_setup((rpc_log_format)o.log_format, (rpc_log_level)o.log_level);
    double t_start_ms = eng_clock_ms();

    /* Every thread started below inherits this mask; the main thread takes the signals:
     * SIGINT/SIGTERM stop (sigs), SIGHUP reloads (all = sigs + SIGHUP). */
    sigset_t sigs, all;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    all = sigs;
    sigaddset(&all, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    serve_main_thread = pthread_self();
    struct sigaction fwd = {.sa_handler = forward_to_main, .sa_flags = SA_RESTART};
    sigemptyset(&fwd.sa_mask);
    sigaction(SIGINT, &fwd, NULL);
    sigaction(SIGTERM, &fwd, NULL);
    sigaction(SIGHUP, &fwd, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);

    int rc = 1;
    eng_err err = {{0}};
    eng_model *m = NULL;
    cli_replicas reps = {0}; /* the engines (--replicas) and their router */
    eng_embedder *emb = NULL;
    idx_index *index = NULL;
    idx_service *indexer = NULL;
    serve_indexer sx = {0}; /* what a reload restarts, once started */
    rpc_auth *auth = NULL;
    rpc_grpc_server *grpc = NULL;
    http_server *http = NULL;
    http_starting *starting = NULL;      /* the placeholders answering "starting" */
    rpc_grpc_starting *grpc_starting = NULL;

    const char *data_dir = cli_serve_data_dir(&o);
    if (setup_auth(&o, data_dir, &auth, &err) != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: auth: %s", err.msg);
        goto out;
    }

    /* While the model loads the HTTP port already answers 503 "starting", and gRPC Health
     * "STARTING" (not with TLS). */
    int http_port_want = (int)o.http_port, grpc_port_want = (int)o.grpc_port;
    if (!o.tls_cert) {
        if (http_starting_start(o.bind, (int)o.http_port, &starting, &http_port_want, &err) !=
                ENG_OK ||
            rpc_grpc_starting_start(o.bind, (int)o.grpc_port, &grpc_starting, &grpc_port_want,
                                    &err) != ENG_OK) {
            rpc_log(RPC_LOG_ERROR, "serve: %s", err.msg);
            goto out;
        }
        rpc_log(RPC_LOG_INFO, "http on %s:%d answers 503 \"starting\" and grpc on %s:%d Health "
                "\"STARTING\" while the model loads", o.bind, http_port_want, o.bind,
                grpc_port_want);
    }
    char why[256];
    if (!cli_sd_notify("STATUS=loading the model", why, sizeof why))
        rpc_log(RPC_LOG_WARN, "cannot tell systemd that serve is starting: %s", why);
    load_progress lp = {.path = o.model};
    pthread_mutex_init(&lp.mu, NULL);
    pthread_condattr_t lca;
    pthread_condattr_init(&lca);
    pthread_condattr_setclock(&lca, CLOCK_MONOTONIC);
    pthread_cond_init(&lp.cv, &lca);
    pthread_condattr_destroy(&lca);
    pthread_t lpt;
    bool have_lpt = isatty(2) && o.log_format == RPC_LOG_TEXT &&
                    pthread_create(&lpt, NULL, progress_main, &lp) == 0;
    double t_load = eng_clock_ms();
    eng_status lst = eng_model_load(o.model, &m, &err);
    double load_ms = eng_clock_ms() - t_load;
    pthread_mutex_lock(&lp.mu);
    lp.done = true;
    pthread_cond_signal(&lp.cv);
    pthread_mutex_unlock(&lp.mu);
    if (have_lpt) pthread_join(lpt, NULL);
    pthread_cond_destroy(&lp.cv);
    pthread_mutex_destroy(&lp.mu);
    if (lst != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: cannot load model '%s': %s", o.model, err.msg);
        goto out;
    }
    eng_engine_config ec = cli_engine_config(&o.eng);
    if (o.max_running) ec.max_running = (int32_t)o.max_running;
    if (o.max_waiting) ec.max_waiting = (int32_t)o.max_waiting;
    ec.supersede = o.supersede == 0; /* "on|off" */
    ec.schedule = o.schedule == 0 ? ENG_SCHEDULE_LATENCY : ENG_SCHEDULE_THROUGHPUT;
    ec.deadline_ms = (int32_t)o.deadline_ms;
    if (cli_replicas_start(m, ec, (int)o.replicas, &reps, &err) != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: cannot start the engine: %s", err.msg);
        goto out;
    }
    eng_router_set_step_watchdog(reps.router, o.step_watchdog_ms);
    eng_engine *e = reps.engines[0];
    int32_t ctx_len = eng_router_max_seq_len(reps.router);
    rpc_log(RPC_LOG_INFO, "model %s (%s, %d layers, context %d) on %s", eng_model_name(m),
            eng_model_arch_name(m), eng_model_n_layer(m), ctx_len, cli_backend_name(&o.eng));
    if (reps.n > 1)
        rpc_log(RPC_LOG_INFO, "%d replicas behind one router (weights loaded once; each its own "
                "KV cache%s)", reps.n,
                o.eng.backend == ENG_BACKEND_CUDA ? (o.eng.gpus ? " and GPUs (--gpus)" : "")
                : o.eng.threads ? "" : ", the online CPUs shared among them");

    if (start_embedder(&o, &emb) != ENG_OK ||
        start_indexer(&o, data_dir, emb, &index, &indexer) != ENG_OK) {
        goto out;
    }
    sx = (serve_indexer){.index = index, .service = indexer};
    indexer = NULL;
    indexer_set_repos(&sx, &o.repos, o.reindex_s);

    rpc_grpc_config gc = grpc_config(&o, ctx_len);
    gc.port = grpc_port_want; /* the port the placeholder held (the one port 0 picked) */
    gc.embedder = emb;
    gc.index = index;
    gc.no_retrieval = o.no_retrieval;
    int grpc_port = 0;
    rpc_grpc_starting_stop(grpc_starting); /* hands the port over, as HTTP's below */
    grpc_starting = NULL;
    gc.router = reps.router;
    if (rpc_grpc_server_start(&gc, e, auth, &grpc, &grpc_port, &err) != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: %s", err.msg);
        goto out;
    }
    log_listening("grpc", o.bind, grpc_port, o.tls_cert != NULL);

    /* The HTTP shim: same engine and auth as gRPC. */
    http_server_config hc = http_config(&o, data_dir);
    hc.port = http_port_want; /* the port the placeholder held (the one port 0 picked) */
    hc.embedder = emb;
    hc.index = index;
    hc.no_retrieval = o.no_retrieval;
    int http_port = 0;
    http_starting_stop(starting); /* hands the port over: a few ms of refused connections */
    starting = NULL;
    hc.router = reps.router;
    if (http_server_start(&hc, e, auth, &http, &http_port, &err) != ENG_OK) {
        rpc_log(RPC_LOG_ERROR, "serve: %s", err.msg);
        goto out;
    }
    log_listening("http", o.bind, http_port, o.tls_cert != NULL);
    log_ready(&o, m, reps.router, grpc_port, http_port, t_start_ms, load_ms);
    /* systemd (Type=notify) starts the units that need us only now: model loaded, ports open. */
    if (!cli_sd_notify("READY=1\nSTATUS=serving", why, sizeof why))
        rpc_log(RPC_LOG_WARN, "cannot tell systemd that serve is ready: %s", why);

    int sig = 0;
    while (sigwait(&all, &sig) == 0 && sig == SIGHUP)
        reload(argc, argv, &o, auth, http, grpc, &sx);
    if (!cli_sd_notify("STOPPING=1\nSTATUS=draining", why, sizeof why))
        rpc_log(RPC_LOG_WARN, "cannot tell systemd that serve is stopping: %s", why);
    drain_and_stop(http, grpc, reps.router, &sigs, sig, (int)o.drain_ms);
    http = NULL;
    grpc = NULL;
    rpc_log(RPC_LOG_INFO, "stopped");
    rc = 0;
out:
    http_starting_stop(starting);
    rpc_grpc_starting_stop(grpc_starting);
    http_server_stop(http, 0);
    rpc_grpc_server_stop(grpc, 0);
    idx_service_stop(indexer); /* before the embedder it embeds with */
    idx_service_stop(sx.service);
    indexer_set_repos(&sx, &(cli_list){0}, 0);
    idx_close(index);
    cli_replicas_stop(&reps);
    eng_embedder_free(emb); /* after both front ends: none of their threads still embeds */
    eng_model_free(m);
    rpc_auth_free(auth);
    cli_serve_opts_free(&o);
    return rc;
}
