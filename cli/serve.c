/* serve.c — `serval serve`: its flag table, model and engine set-up, the gRPC listener (and
 * the HTTP shim beside it), auth, signal handling and graceful shutdown. */
#include "serve.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "engine_flags.h"
#include "flags.h"
#include "grpc_server.h"
#include "http_server.h"
#include "serval_engine.h"
#include "status.h"

#define SERVE_MAX_TOKENS 64

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
    bool no_auth;
    long max_running, max_waiting, max_inflight, max_message_mb, drain_ms;
    long http_max_body_kb, http_timeout_s, http_client_timeout_s; /* HTTP shim limits */
    long http_rate, http_burst;
    bool quiet;
} serve_opts;

/* Returns the exit code for a finished parse (0 help, 2 usage), or -1 to go on. */
static int parse_serve(int argc, char **argv, serve_opts *o)
{
    *o = (serve_opts){0};
    o->tokens = (cli_list){.items = o->token_items, .cap = SERVE_MAX_TOKENS};
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
         "accept bearer token T (repeatable, up to 64; more with --token-file)"},
        {"--token-file", "PATH", CLI_FLAG_STRING, &o->token_file, NULL, 0, 0, NULL,
         "accept the tokens in PATH (one per line, '#' comments)"},
        {"--data-dir", "DIR", CLI_FLAG_STRING, &o->data_dir, NULL, 0, 0, NULL,
         "state directory (default $SERVAL_DATA_DIR or ~/.serval); without --token/--token-file "
         "a token is generated into DIR/token at first start and printed"},
        {"--no-auth", NULL, CLI_FLAG_BOOL, &o->no_auth, NULL, 0, 0, NULL,
         "accept every request without a token (local use only)"},
        CLI_ENGINE_FLAGS(&o->eng),
        {"--max-running", "N", CLI_FLAG_INT, &o->max_running, NULL, 1, 4096, NULL,
         "sequences decoded together at most (default 64)"},
        {"--max-waiting", "N", CLI_FLAG_INT, &o->max_waiting, NULL, 1, 1L << 20, NULL,
         "requests queued for the engine at most; more get RESOURCE_EXHAUSTED (default 256)"},
        {"--max-inflight", "N", CLI_FLAG_INT, &o->max_inflight, NULL, 1, 1L << 20, NULL,
         "gRPC calls served at once; more get RESOURCE_EXHAUSTED (default 512)"},
        {"--max-message-mb", "N", CLI_FLAG_INT, &o->max_message_mb, "4", 1, 1024, NULL,
         "largest request message in MiB"},
        {"--drain-ms", "N", CLI_FLAG_INT, &o->drain_ms, "10000", 0, 3600000, NULL,
         "how long shutdown waits for calls in flight"},
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
        {"--quiet", NULL, CLI_FLAG_BOOL, &o->quiet, NULL, 0, 0, NULL, "no per-request log lines"},
    };
    const cli_command cmd = {
        .prog = "serval serve",
        .usage = "[options]",
        .about = "Serves completions and chat over gRPC (proto/serval.proto, package serval.v1) "
                 "and HTTP (the Tabby, OpenAI and llama.cpp routes) from one model. Logs go to "
                 "stderr: one 'listening' line per listener, one line per request. SIGTERM or "
                 "SIGINT stops accepting, lets calls in flight finish (up to --drain-ms), and "
                 "exits 0.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    cli_parse_result pr = cli_parse(&cmd, argc, argv);
    if (pr == CLI_PARSE_OK)
        pr = cli_engine_opts_check(&cmd, &o->eng);
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

    const char *generated = NULL;
    const char *data_dir = o.data_dir ? o.data_dir : default_data_dir();
    rpc_auth_config ac = {.tokens = o.tokens.items, .n_tokens = o.tokens.n,
                          .token_file = o.token_file, .data_dir = data_dir, .no_auth = o.no_auth};
    if (rpc_auth_create(&ac, &auth, &generated, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: auth: %s\n", err.msg);
        goto out;
    }
    if (generated)
        fprintf(stderr, "serval: no token given; clients must send 'authorization: Bearer %s' "
                        "(kept in %s/token)\n", generated, data_dir);
    if (o.no_auth)
        fprintf(stderr, "serval: --no-auth: every request is accepted without a token\n");

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

    rpc_grpc_config gc = {.bind = o.bind, .port = (int)o.grpc_port,
                          .max_inflight = (int)o.max_inflight,
                          .max_message_bytes = (int64_t)o.max_message_mb << 20,
                          .backend_name = cli_backend_name(&o.eng),
                          .context_length = ctx_len, .log_requests = !o.quiet};
    int grpc_port = 0;
    if (rpc_grpc_server_start(&gc, e, auth, &grpc, &grpc_port, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, strchr(o.bind, ':') ? "serval: grpc listening on [%s]:%d\n"
                                        : "serval: grpc listening on %s:%d\n",
            o.bind, grpc_port);

    /* ---- HTTP shim (rpc/http_server.{h,c}): same engine and auth as gRPC ---------------- */
    http_server_config hc = {.bind_addr = o.bind, .port = (int)o.http_port, .data_dir = data_dir,
                             .max_body_bytes = (size_t)o.http_max_body_kb << 10,
                             .rate_limit_rps = (double)o.http_rate,
                             .rate_limit_burst = (double)o.http_burst,
                             .request_timeout_s = (int)o.http_timeout_s, .version = SERVAL_VERSION,
                             .idle_timeout_s = (int)o.http_client_timeout_s,
                             .body_timeout_s = (int)o.http_client_timeout_s,
                             .device = cli_backend_name(&o.eng),
                             .log_requests = !o.quiet};
    int http_port = 0;
    if (http_server_start(&hc, e, auth, &http, &http_port, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, strchr(o.bind, ':') ? "serval: http listening on [%s]:%d\n"
                                        : "serval: http listening on %s:%d\n",
            o.bind, http_port);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "serval: %s: draining (up to %ld ms), then exiting\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", o.drain_ms);
    rpc_grpc_server_stop_accepting(grpc); /* both front ends refuse new work while draining */
    http_server_stop(http, (int)o.drain_ms);
    http = NULL;
    rpc_grpc_server_stop(grpc, (int)o.drain_ms);
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
