/* serve.c — `serval serve`: flags, model and engine set-up, the gRPC listener (and the HTTP
 * shim beside it), auth, signal handling and graceful shutdown. */
#include "serve.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "grpc_server.h"
#include "http_server.h"
#include "serval_engine.h"
#include "status.h"

#define SERVE_MAX_TOKENS 64

typedef struct serve_opts {
    const char *model;
    eng_backend_kind backend;
    const char *bind;
    long grpc_port;
    long http_port; /* the HTTP shim's port (rpc/http_server.c); parsed here for it */
    const char *tokens[SERVE_MAX_TOKENS];
    size_t n_tokens;
    const char *token_file;
    const char *data_dir;
    bool no_auth;
    long kv_mb, max_running, max_waiting, max_inflight, threads, max_message_mb, drain_ms;
    long http_max_body_kb, http_timeout_s, http_client_timeout_s; /* HTTP shim limits */
    double http_rate, http_burst;
    bool quiet;
    bool no_cuda_graphs, cuda_fp16;
} serve_opts;

static void usage_serve(FILE *o)
{
    fprintf(o,
            "usage: serval serve [options]\n"
            "\n"
            "Serves completions and chat over gRPC (proto/serval.proto, package serval.v1) from\n"
            "one model. Logs go to stderr: one 'listening' line per listener, one line per\n"
            "request. SIGTERM or SIGINT stops accepting, lets calls in flight finish (up to\n"
            "--drain-ms), and exits 0.\n"
            "\n"
            "  --model PATH          GGUF model (default: %s)\n"
            "  --backend cpu|cuda    where the model runs (default cpu; cuda needs a CUDA build)\n"
            "  --cuda-fp16           cuda: fp16 weights and activations (default bf16)\n"
            "  --no-cuda-graphs      cuda: launch decode steps kernel by kernel instead of\n"
            "                        replaying CUDA graphs (slower; for debugging)\n"
            "  --bind ADDR           address to listen on (default 127.0.0.1: this machine only;\n"
            "                        0.0.0.0 or :: to serve the network)\n"
            "  --grpc-port N         gRPC port (default 50051; 0: pick a free one and log it)\n"
            "  --http-port N         HTTP port for the Tabby/OpenAI routes (default 8080; 0: pick)\n"
            "  --token T             accept bearer token T (repeatable)\n"
            "  --token-file PATH     accept the tokens in PATH (one per line, '#' comments)\n"
            "  --data-dir DIR        state directory (default $SERVAL_DATA_DIR or ~/.serval);\n"
            "                        without --token/--token-file a token is generated into\n"
            "                        DIR/token at first start and printed\n"
            "  --no-auth             accept every request without a token (local use only)\n"
            "  --kv-mb N             KV cache memory in MiB (default 1024)\n"
            "  --max-running N       sequences decoded together at most (default 64)\n"
            "  --max-waiting N       requests queued for the engine at most; more get\n"
            "                        RESOURCE_EXHAUSTED (default 256)\n"
            "  --max-inflight N      gRPC calls served at once; more get RESOURCE_EXHAUSTED\n"
            "                        (default 512)\n"
            "  --max-message-mb N    largest request message in MiB (default 4)\n"
            "  --threads N           CPU backend threads (default: the number of online CPUs)\n"
            "  --drain-ms N          how long shutdown waits for calls in flight (default 10000)\n"
            "  --http-max-body-kb N  largest HTTP request body in KiB; more get 413 (default 1024)\n"
            "  --http-rate-limit R   HTTP requests per second per token; more get 429 (default\n"
            "                        0 = no limit)\n"
            "  --http-rate-burst B   requests a token may send at once above the rate (default 2R)\n"
            "  --http-timeout S      HTTP generation time limit in seconds; 408 after (default 120)\n"
            "  --http-client-timeout S  close HTTP clients idle this long, or whose request body\n"
            "                        takes longer than this to arrive (default 30 idle, 10 body)\n"
            "  --quiet               no per-request log lines\n",
            SERVAL_DEFAULT_MODEL);
}

static bool parse_num(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "serval serve: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo,
                hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* Returns 0 when parsed, 1 on bad usage, 2 when help was printed. */
static int parse_serve(int argc, char **argv, serve_opts *o)
{
    *o = (serve_opts){.model = SERVAL_DEFAULT_MODEL, .backend = ENG_BACKEND_CPU,
                      .bind = "127.0.0.1", .grpc_port = 50051, .http_port = 8080,
                      .max_message_mb = 4, .drain_ms = 10000};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage_serve(stdout);
            return 2;
        }
        if (!strcmp(a, "--no-auth")) {
            o->no_auth = true;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        if (!strcmp(a, "--no-cuda-graphs")) {
            o->no_cuda_graphs = true;
            continue;
        }
        if (!strcmp(a, "--cuda-fp16")) {
            o->cuda_fp16 = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "serval serve: unexpected argument '%s' (see --help)\n", a);
            return 1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "serval serve: %s needs a value (see --help)\n", a);
            return 1;
        }
        const char *v = argv[++i];
        bool ok = true;
        if (!strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "--bind")) o->bind = v;
        else if (!strcmp(a, "--token-file")) o->token_file = v;
        else if (!strcmp(a, "--data-dir")) o->data_dir = v;
        else if (!strcmp(a, "--token")) {
            if (o->n_tokens == SERVE_MAX_TOKENS) {
                fprintf(stderr, "serval serve: at most %d --token flags (use --token-file)\n",
                        SERVE_MAX_TOKENS);
                return 1;
            }
            o->tokens[o->n_tokens++] = v;
        } else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "cpu")) {
                o->backend = ENG_BACKEND_CPU;
            } else if (!strcmp(v, "cuda")) {
#ifdef SERVAL_HAVE_CUDA
                o->backend = ENG_BACKEND_CUDA;
#else
                fprintf(stderr, "serval serve: --backend cuda: this serval was built without CUDA "
                                "(rebuild with -DSERVAL_CUDA=ON on a machine with nvcc)\n");
                return 1;
#endif
            } else {
                fprintf(stderr, "serval serve: --backend is cpu or cuda, got '%s'\n", v);
                return 1;
            }
        } else if (!strcmp(a, "--grpc-port")) ok = parse_num(a, v, 0, 65535, &o->grpc_port);
        else if (!strcmp(a, "--http-port")) ok = parse_num(a, v, 0, 65535, &o->http_port);
        else if (!strcmp(a, "--kv-mb")) ok = parse_num(a, v, 1, 1L << 20, &o->kv_mb);
        else if (!strcmp(a, "--max-running")) ok = parse_num(a, v, 1, 4096, &o->max_running);
        else if (!strcmp(a, "--max-waiting")) ok = parse_num(a, v, 1, 1 << 20, &o->max_waiting);
        else if (!strcmp(a, "--max-inflight")) ok = parse_num(a, v, 1, 1 << 20, &o->max_inflight);
        else if (!strcmp(a, "--max-message-mb")) ok = parse_num(a, v, 1, 1024, &o->max_message_mb);
        else if (!strcmp(a, "--threads")) ok = parse_num(a, v, 1, 256, &o->threads);
        else if (!strcmp(a, "--drain-ms")) ok = parse_num(a, v, 0, 3600000, &o->drain_ms);
        else if (!strcmp(a, "--http-max-body-kb"))
            ok = parse_num(a, v, 1, 1L << 20, &o->http_max_body_kb);
        else if (!strcmp(a, "--http-timeout")) ok = parse_num(a, v, 1, 86400, &o->http_timeout_s);
        else if (!strcmp(a, "--http-client-timeout"))
            ok = parse_num(a, v, 1, 3600, &o->http_client_timeout_s);
        else if (!strcmp(a, "--http-rate-limit") || !strcmp(a, "--http-rate-burst")) {
            long x = 0;
            ok = parse_num(a, v, 0, 1000000, &x);
            *(!strcmp(a, "--http-rate-limit") ? &o->http_rate : &o->http_burst) = (double)x;
        }
        else {
            fprintf(stderr, "serval serve: unknown option '%s' (see --help)\n", a);
            return 1;
        }
        if (!ok) return 1;
    }
    return 0;
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

int rpc_serve_main(int argc, char **argv)
{
    serve_opts o;
    int pr = parse_serve(argc, argv, &o);
    if (pr) return pr == 2 ? 0 : 2;

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
    rpc_auth_config ac = {.tokens = o.tokens, .n_tokens = o.n_tokens,
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
    eng_engine_config ec = eng_engine_config_defaults();
    ec.backend = o.backend;
    ec.no_cuda_graphs = o.no_cuda_graphs;
    ec.cuda_fp16 = o.cuda_fp16;
    if (o.threads) ec.n_threads = (int)o.threads;
    if (o.kv_mb) ec.kv_bytes = (int64_t)o.kv_mb << 20;
    if (o.max_running) ec.max_running = (int32_t)o.max_running;
    if (o.max_waiting) ec.max_waiting = (int32_t)o.max_waiting;
    if (eng_engine_create(m, &ec, &e, &err) != ENG_OK) {
        fprintf(stderr, "serval serve: cannot start the engine: %s\n", err.msg);
        goto out;
    }
    int32_t ctx_len = eng_engine_max_seq_len(e);
    fprintf(stderr, "serval: model %s (%s, %d layers, context %d) on %s\n", eng_model_name(m),
            eng_model_arch_name(m), eng_model_n_layer(m), ctx_len, o.backend == ENG_BACKEND_CPU ? "cpu" : "cuda");

    rpc_grpc_config gc = {.bind = o.bind, .port = (int)o.grpc_port,
                          .max_inflight = (int)o.max_inflight,
                          .max_message_bytes = (int64_t)o.max_message_mb << 20,
                          .backend_name = o.backend == ENG_BACKEND_CPU ? "cpu" : "cuda",
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
                             .rate_limit_rps = o.http_rate, .rate_limit_burst = o.http_burst,
                             .request_timeout_s = (int)o.http_timeout_s, .version = SERVAL_VERSION,
                             .idle_timeout_s = (int)o.http_client_timeout_s,
                             .body_timeout_s = (int)o.http_client_timeout_s,
                             .device = o.backend == ENG_BACKEND_CPU ? "cpu" : "cuda",
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
