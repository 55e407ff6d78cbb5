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
#include "status.h"

#define SERVE_MAX_TOKENS 64
#define SERVE_MAX_ORIGINS 32
#define SERVE_STOP_GRACE_MS 10000 /* how long stopping may take once the drain has ended */
#define SERVE_ABORT_GRACE_MS 2500 /* ...and after a second signal */

typedef struct serve_opts {
    const char *model;
    cli_engine_opts eng;
    const char *bind;
    long grpc_port;
    long http_port; /* the HTTP shim's port (rpc/http_server.c); parsed here for it */
    const char *token_items[SERVE_MAX_TOKENS];
    cli_list tokens;
    const char *token_file;
    const char *data_dir;
    bool no_auth, allow_readable_token_file, prefix_cache_per_token;
    long max_running, max_waiting, max_inflight, max_message_mb, drain_ms;
    long http_max_body_kb, http_timeout_s, http_client_timeout_s; /* HTTP shim limits */
    long http_rate, http_burst;
    long per_ip_connections, max_inflight_per_token, generation_timeout_ms;
    long max_streams_per_connection;
    const char *tls_cert, *tls_key, *metrics_token;
    const char *origin_items[SERVE_MAX_ORIGINS];
    cli_list origins;
    char cors[4096]; /* the --cors-origin values joined with commas */
    bool quiet;
} serve_opts;

/* Joins the --cors-origin values (each one origin or a comma list) into o->cors; a usage
 * error for an empty entry or a list too long. */
static cli_parse_result join_origins(const cli_command *cmd, serve_opts *o)
{
    size_t at = 0;
    o->cors[0] = '\0';
    for (size_t i = 0; i < o->origins.n; i++) {
        const char *v = o->origins.items[i];
        for (const char *p = v;; p++) {
            size_t n = strcspn(p, ",");
            while (n > 0 && (*p == ' ' || *p == '\t')) p++, n--;
            while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
            if (n == 0 || memchr(p, ' ', n))
                return cli_usage_error(cmd, "--cors-origin expects origins such as "
                                            "https://ide.example.com, got '%s'", v);
            int w = snprintf(o->cors + at, sizeof o->cors - at, "%s%.*s", at ? "," : "",
                             (int)n, p);
            if (w < 0 || (size_t)w >= sizeof o->cors - at)
                return cli_usage_error(cmd, "--cors-origin: the origins are too long together");
            at += (size_t)w;
            p = strchr(p, ',');
            if (!p) break;
        }
    }
    return CLI_PARSE_OK;
}

/* Checks between flags, after parsing. */
static cli_parse_result check_serve(const cli_command *cmd, serve_opts *o)
{
    if (!o->tls_cert != !o->tls_key)
        return cli_usage_error(cmd, "%s needs %s too: TLS takes a certificate and its key",
                               o->tls_cert ? "--tls-cert" : "--tls-key",
                               o->tls_cert ? "--tls-key" : "--tls-cert");
    const char *files[2][2] = {{"--tls-cert", o->tls_cert}, {"--tls-key", o->tls_key}};
    for (int i = 0; i < 2; i++)
        if (files[i][1] && access(files[i][1], R_OK) != 0)
            return cli_usage_error(cmd, "%s %s: %s", files[i][0], files[i][1], strerror(errno));
    return join_origins(cmd, o);
}

/* Returns the exit code for a finished parse (0 help, 2 usage), or -1 to go on. */
static int parse_serve(int argc, char **argv, serve_opts *o)
{
    *o = (serve_opts){0};
    o->tokens = (cli_list){.items = o->token_items, .cap = SERVE_MAX_TOKENS};
    o->origins = (cli_list){.items = o->origin_items, .cap = SERVE_MAX_ORIGINS};
    const cli_flag flags[] = {
        {"--model", "PATH", CLI_FLAG_STRING, &o->model, SERVAL_DEFAULT_MODEL, 0, 0, NULL,
         "GGUF model"},
        {"--bind", "ADDR", CLI_FLAG_STRING, &o->bind, "127.0.0.1", 0, 0, NULL,
         "address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 or :: serves the "
         "network"},
        {"--grpc-port", "N", CLI_FLAG_INT, &o->grpc_port, "50051", 0, 65535, NULL,
         "gRPC port; 0 picks a free one and logs it"},
        {"--http-port", "N", CLI_FLAG_INT, &o->http_port, "8080", 0, 65535, NULL,
         "HTTP port for the Tabby/OpenAI routes; 0 picks a free one and logs it"},
        {"--token", "T", CLI_FLAG_LIST, &o->tokens, NULL, 0, 0, NULL,
         "accept bearer token T (repeatable, up to 64; more with --token-file); other users of "
         "this machine can read command lines: prefer --token-file or $SERVAL_TOKEN"},
        {"--token-file", "PATH", CLI_FLAG_STRING, &o->token_file, NULL, 0, 0, NULL,
         "accept the tokens in PATH (one per line, '#' comments); a file group or others may "
         "read or write is refused (chmod 600 it, or see --allow-readable-token-file)"},
        {"--allow-readable-token-file", NULL, CLI_FLAG_BOOL, &o->allow_readable_token_file, NULL,
         0, 0, NULL,
         "accept token files group or others may read (a mounted secret whose mode you cannot "
         "change); anyone who can read the file can use the server"},
        {"--data-dir", "DIR", CLI_FLAG_STRING, &o->data_dir, NULL, 0, 0, NULL,
         "state directory (default $SERVAL_DATA_DIR or ~/.serval); with no token from the "
         "flags or $SERVAL_TOKEN, one is generated into DIR/token (mode 0600) at first start "
         "and printed that once; later starts print only the file's path"},
        {"--no-auth", NULL, CLI_FLAG_BOOL, &o->no_auth, NULL, 0, 0, NULL,
         "accept every request without a token (local use only; a loud warning with a --bind "
         "other than loopback)"},
        CLI_ENGINE_FLAGS(&o->eng),
        {"--prefix-cache-per-token", NULL, CLI_FLAG_BOOL, &o->prefix_cache_per_token, NULL, 0, 0,
         NULL,
         "keep the prefix cache apart per token, so no user can tell from response times what "
         "others sent; the cost: no reuse across tokens (a repository's context shared by many "
         "users is computed once per token, and the KV cache holds every token's copy)"},
        {"--max-running", "N", CLI_FLAG_INT, &o->max_running, NULL, 1, 4096, NULL,
         "sequences decoded together at most (default 64)"},
        {"--max-waiting", "N", CLI_FLAG_INT, &o->max_waiting, NULL, 1, 1L << 20, NULL,
         "requests queued for the engine at most; more get RESOURCE_EXHAUSTED (default 256)"},
        {"--max-inflight", "N", CLI_FLAG_INT, &o->max_inflight, NULL, 1, 1L << 20, NULL,
         "gRPC calls served at once; more get RESOURCE_EXHAUSTED (default 512)"},
        {"--max-inflight-per-token", "N", CLI_FLAG_INT, &o->max_inflight_per_token, "16", 0,
         1L << 20, NULL,
         "requests one token may have in flight on each front end, so one client cannot take "
         "every slot; more get 429 (HTTP) or RESOURCE_EXHAUSTED (gRPC); 0 is no cap"},
        {"--max-message-mb", "N", CLI_FLAG_INT, &o->max_message_mb, "4", 1, 1024, NULL,
         "largest request message in MiB"},
        {"--max-streams-per-connection", "N", CLI_FLAG_INT, &o->max_streams_per_connection,
         NULL, 1, 1L << 20, NULL,
         "gRPC calls one HTTP/2 connection may have open at once (default 64)"},
        {"--generation-timeout-ms", "N", CLI_FLAG_INT, &o->generation_timeout_ms, "0", 0,
         86400000, NULL,
         "gRPC: a generation running longer ends with DEADLINE_EXCEEDED (HTTP has "
         "--http-timeout); 0 is no limit beyond the client's deadline"},
        {"--drain-ms", "N", CLI_FLAG_INT, &o->drain_ms, "10000", 0, 3600000, NULL,
         "how long shutdown waits for calls in flight"},
        {"--tls-cert", "FILE", CLI_FLAG_STRING, &o->tls_cert, NULL, 0, 0, NULL,
         "serve TLS only (HTTPS and gRPC over TLS) with this PEM certificate chain; needs "
         "--tls-key"},
        {"--tls-key", "FILE", CLI_FLAG_STRING, &o->tls_key, NULL, 0, 0, NULL,
         "the PEM private key of --tls-cert"},
        {"--http-max-body-kb", "N", CLI_FLAG_INT, &o->http_max_body_kb, NULL, 1, 1L << 20, NULL,
         "largest HTTP request body in KiB; more get 413 (default 1024)"},
        {"--http-rate-limit", "R", CLI_FLAG_INT, &o->http_rate, "0", 0, 1000000, NULL,
         "HTTP requests per second per token, more get 429; 0 is no limit"},
        {"--http-rate-burst", "B", CLI_FLAG_INT, &o->http_burst, NULL, 0, 1000000, NULL,
         "requests a token may send at once above the rate (default 2R)"},
        {"--http-timeout", "S", CLI_FLAG_INT, &o->http_timeout_s, NULL, 1, 86400, NULL,
         "HTTP generation time limit in seconds; 408 after (default 120)"},
        {"--http-client-timeout", "S", CLI_FLAG_INT, &o->http_client_timeout_s, NULL, 1, 3600,
         NULL,
         "close HTTP clients idle this long, or whose request body takes longer than this to "
         "arrive (default 30 idle, 10 body)"},
        {"--per-ip-connections", "N", CLI_FLAG_INT, &o->per_ip_connections, NULL, 1, 1L << 20,
         NULL,
         "HTTP connections one client address may hold open (default 64); behind a proxy every "
         "client has the proxy's address"},
        {"--cors-origin", "ORIGIN", CLI_FLAG_LIST, &o->origins, NULL, 0, 0, NULL,
         "let web pages from ORIGIN (https://ide.example.com) call the HTTP routes from a "
         "browser; repeatable or a comma list (default none: no CORS headers)"},
        {"--metrics-token", "T", CLI_FLAG_STRING, &o->metrics_token, NULL, 0, 0, NULL,
         "a bearer token that opens /metrics and nothing else, for a Prometheus scraper "
         "(API tokens open it too)"},
        {"--quiet", NULL, CLI_FLAG_BOOL, &o->quiet, NULL, 0, 0, NULL, "no per-request log lines"},
    };
    const cli_command cmd = {
        .prog = "serval serve",
        .usage = "[options]",
        .about = "Serves completions and chat over gRPC (proto/serval.proto, package serval.v1) "
                 "and HTTP (the Tabby, OpenAI and llama.cpp routes) from one model. Logs go to "
                 "stderr: one 'listening' line per listener, one line per request. Tokens: "
                 "every --token and those in --token-file; when neither is given, "
                 "$SERVAL_TOKEN; when that is unset too, the token in DATA_DIR/token "
                 "(generated at first start). SIGTERM or SIGINT stops both listeners accepting "
                 "(new requests get 503 or UNAVAILABLE), lets calls in flight finish (up to "
                 "--drain-ms) and exits 0; a second signal cancels what is still running and "
                 "exits at once.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_result pr = cli_parse(&cmd, argc, argv);
    if (pr == CLI_PARSE_OK)
        pr = cli_engine_opts_check(&cmd, &o->eng);
    if (pr == CLI_PARSE_OK)
        pr = check_serve(&cmd, o);
    return pr == CLI_PARSE_OK ? -1 : pr == CLI_PARSE_HELP ? 0 : 2;
}

/* $SERVAL_DATA_DIR, else ~/.serval (static buffer; NULL when neither can be formed). */
static const char *default_data_dir(void)
{
    static char buf[4096];
    const char *env = getenv("SERVAL_DATA_DIR");
    if (env && *env) return env;
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    if (snprintf(buf, sizeof buf, "%s/.serval", home) >= (int)sizeof buf) return NULL;
    return buf;
}

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
    int pr = parse_serve(argc, argv, &o);
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

    const char *data_dir = o.data_dir ? o.data_dir : default_data_dir();
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

    int sig = 0;
    sigwait(&sigs, &sig);
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
    return rc;
}
