/* serve.c — `serval serve`: its flag table, model and engine set-up, the gRPC listener (and
 * the HTTP shim beside it), where the tokens come from, and the shutdown: on SIGTERM/SIGINT
 * both front ends stop accepting at once and drain in parallel; a second signal ends the
 * drain. */
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
#include <unistd.h>

#include "auth.h"
#include "engine_flags.h"
#include "flags.h"
#include "grpc_server.h"
#include "http_server.h"
#include "clock.h"
#include "serval_engine.h"
#include "serve_opts.h"
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
        fprintf(stderr, "serval: no token given; generated one, shown only this once: clients "
                        "send 'authorization: Bearer %s' (kept in %s)\n", generated, path);
    else if (path)
        fprintf(stderr, "serval: clients send the bearer token kept in %s\n", path);
    else if (use_env)
        fprintf(stderr, "serval: clients send the bearer token from $SERVAL_TOKEN\n");
    if (o->no_auth && o->prefix_cache_per_token)
        fprintf(stderr, "serval: --prefix-cache-per-token does nothing with --no-auth: without "
                        "tokens every request shares one cache\n");
    if (o->no_auth && bind_is_loopback(o->bind))
        fprintf(stderr, "serval: --no-auth: every request is accepted without a token\n");
    else if (o->no_auth)
        fprintf(stderr,
                "serval: WARNING: --no-auth with --bind %s: ANYONE WHO CAN REACH THIS MACHINE "
                "CAN USE THIS SERVER without a token (and read /metrics). Bind 127.0.0.1, or "
                "drop --no-auth and give clients a token.\n", o->bind);
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
        fprintf(stderr, "serval: shutdown is stuck; exiting without finishing it\n");
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

static int in_flight(eng_engine *e)
{
    eng_engine_stats st;
    eng_engine_stats_get(e, &st);
    return st.running + st.waiting;
}

static const char *sig_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

/* After the first signal: both front ends refuse new work at once, then drain side by side
 * (each up to drain_ms), a second signal ends the drain, then both stop and are freed. */
static void drain_and_stop(http_server *http, rpc_grpc_server *grpc, eng_engine *e,
                           const sigset_t *sigs, int sig, int drain_ms)
{
    http_server_drain_begin(http);
    rpc_grpc_server_stop_accepting(grpc);
    fprintf(stderr, "serval: %s: stopped accepting; draining %d in flight, up to %d ms\n",
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
            fprintf(stderr, "serval: second signal (%s): ending drain now, cancelling %d\n",
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
        fprintf(stderr, "serval: drained\n");
    else if (!aborted)
        fprintf(stderr, "serval: drain timed out after %d ms, cancelling %d\n", drain_ms,
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
    fprintf(stderr, strchr(bind, ':') ? "serval: %s listening on [%s]:%d%s\n"
                                      : "serval: %s listening on %s:%d%s\n",
            what, bind, port, tls ? " (TLS)" : "");
}

int cli_serve_main(int argc, char **argv)
{
    serve_opts o;
    int pr = cli_serve_opts_parse(argc, argv, "serval serve", &o);
    if (pr >= 0) return pr;

    /* Every thread started below inherits this mask; the main thread takes the signals. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);

    int rc = 1;
    eng_err err = {{0}};
    eng_model *m = NULL;
    eng_engine *e = NULL;
    rpc_auth *auth = NULL;
    rpc_grpc_server *grpc = NULL;
    http_server *http = NULL;

    const char *data_dir = cli_serve_data_dir(&o);
    if (setup_auth(&o, data_dir, &auth, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: auth: %s\n", err.msg);
        goto out;
    }

    if (eng_model_load(o.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: cannot load model '%s': %s\n", o.model, err.msg);
        goto out;
    }
    eng_engine_config ec = cli_engine_config(&o.eng);
    if (o.max_running) ec.max_running = (int32_t)o.max_running;
    if (o.max_waiting) ec.max_waiting = (int32_t)o.max_waiting;
    if (eng_engine_create(m, &ec, &e, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: cannot start the engine: %s\n", err.msg);
        goto out;
    }
    int32_t ctx_len = eng_engine_max_seq_len(e);
    fprintf(stderr, "serval: model %s (%s, %d layers, context %d) on %s\n", eng_model_name(m),
            eng_model_arch_name(m), eng_model_n_layer(m), ctx_len, cli_backend_name(&o.eng));

    rpc_grpc_config gc = grpc_config(&o, ctx_len);
    int grpc_port = 0;
    if (rpc_grpc_server_start(&gc, e, auth, &grpc, &grpc_port, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: %s\n", err.msg);
        goto out;
    }
    log_listening("grpc", o.bind, grpc_port, o.tls_cert != NULL);

    /* The HTTP shim: same engine and auth as gRPC. */
    http_server_config hc = http_config(&o, data_dir);
    int http_port = 0;
    if (http_server_start(&hc, e, auth, &http, &http_port, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: %s\n", err.msg);
        goto out;
    }
    log_listening("http", o.bind, http_port, o.tls_cert != NULL);
    /* systemd (Type=notify) starts the units that need us only now: model loaded, ports open. */
    char why[256];
    if (!cli_sd_notify("READY=1\nSTATUS=serving", why, sizeof why))
        fprintf(stderr, "serval: cannot tell systemd that serve is ready: %s\n", why);

    int sig = 0;
    sigwait(&sigs, &sig);
    if (!cli_sd_notify("STOPPING=1\nSTATUS=draining", why, sizeof why))
        fprintf(stderr, "serval: cannot tell systemd that serve is stopping: %s\n", why);
    drain_and_stop(http, grpc, e, &sigs, sig, (int)o.drain_ms);
    http = NULL;
    grpc = NULL;
    fprintf(stderr, "serval: stopped\n");
    rc = 0;
out:
    http_server_stop(http, 0);
    rpc_grpc_server_stop(grpc, 0);
    eng_engine_free(e);
    eng_model_free(m);
    rpc_auth_free(auth);
    cli_serve_opts_free(&o);
    return rc;
}
