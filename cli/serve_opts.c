/* serve_opts.c — `serval serve`'s flag table (the one list of its settings: flags, config keys
 * and SERVAL_* variables all come from it), the checks between settings, and the data
 * directory's default. */
#include "serve_opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>



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
int cli_serve_opts_parse(int argc, char **argv, const char *prog, serve_opts *o)
{
    *o = (serve_opts){0};
    o->tokens = (cli_list){.items = o->token_items, .cap = SERVE_MAX_TOKENS};
    o->origins = (cli_list){.items = o->origin_items, .cap = SERVE_MAX_ORIGINS};
    o->repos = (cli_list){.items = o->repo_items, .cap = SERVE_MAX_REPOS};
    const cli_flag flags[] = {
        {"--config", "PATH", CLI_FLAG_STRING, &o->config, NULL, 0, 0, NULL,
         "read settings from this TOML file (default " SERVE_CONFIG_DEFAULT " when it exists, "
         "or $SERVAL_CONFIG); its keys are these flags' names without '--', '_' for '-'"},
        {"--print-config", NULL, CLI_FLAG_BOOL, &o->print_config, NULL, 0, 0, NULL,
         "print every setting's effective value and where it came from (default, file:line, "
         "env, flag), then exit"},
        {"--model", "PATH", CLI_FLAG_STRING, &o->model, SERVAL_DEFAULT_MODEL, 0, 0, NULL,
         "GGUF model"},
        {"--embedding-model", "PATH", CLI_FLAG_STRING, &o->embedding_model, NULL, 0, 0, NULL,
         "embedding model (a `bert` GGUF from `serval convert`) for /v1/embeddings, /embeddings "
         "and gRPC Embed, run on the CPU by its own worker beside the completion engine; "
         "default: " SERVAL_DEFAULT_EMBED_MODEL " when it exists (tools/setup.sh makes it); a "
         "PATH given that does not load stops serve"},
        {"--no-embeddings", NULL, CLI_FLAG_BOOL, &o->no_embeddings, NULL, 0, 0, NULL,
         "load no embedding model: the embedding routes answer 501, gRPC Embed UNIMPLEMENTED"},
        {"--repo", "PATH[=GIT_URL]", CLI_FLAG_LIST, &o->repos, NULL, 0, 0, NULL,
         "index this repository (a git work tree's tracked files, or a folder) into "
         "<data-dir>/index in the background, again every --reindex-interval, serving all the "
         "while; completions whose segments.git_url is GIT_URL (default: PATH made absolute) "
         "get snippets retrieved from it, and /v1beta/search and gRPC Search search it "
         "(repeatable; config file: repos = [\"PATH=URL\", ...])"},
        {"--no-retrieval", NULL, CLI_FLAG_BOOL, &o->no_retrieval, NULL, 0, 0, NULL,
         "index and search the --repo repositories, but add no retrieved snippets to "
         "completions (a request can also say \"retrieval\": false)"},
        {"--reindex-interval", "S", CLI_FLAG_INT, &o->reindex_s, "300", 5, 86400, NULL,
         "seconds between re-index runs of the --repo repositories (only changed files are "
         "embedded again)"},
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
         "state directory (default $SERVAL_DATA_DIR, else $STATE_DIRECTORY (set by systemd's "
         "StateDirectory=), else ~/.serval); with no token from the "
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
        {"--replicas", "N", CLI_FLAG_INT, &o->replicas, "1", 1, 64, NULL,
         "engines serving the model in this process (loaded once, weights shared), each with "
         "its own KV cache and prefix cache; --threads, --kv-mb, --max-running and "
         "--max-waiting apply to each. A router sends a request to the replica its session "
         "(Tabby: token + filepath + git_url) or its prompt's first blocks was sent to, or to "
         "the least loaded when that one is 64 requests and 1.5x busier; /metrics reports each "
         "(replica=\"0\"...). CPU: without --threads each replica gets the online CPUs / N"},
        {"--step-watchdog-ms", "N", CLI_FLAG_INT, &o->step_watchdog_ms, "30000", 0, 86400000,
         NULL,
         "a replica with requests whose step has not completed for this long (a GPU that "
         "stopped answering) leaves rotation, /metrics and /v1/health saying why, and returns "
         "when its steps complete again; 0 turns the watchdog off"},
        {"--supersede", "on|off", CLI_FLAG_CHOICE, &o->supersede, "on", 0, 0, "on|off",
         "a completion with a session key (Tabby: the token + segments.filepath + git_url; "
         "others: \"session_key\", X-Serval-Session, gRPC session_key) ends the older ones "
         "with the same key and token at once: their clients get an empty completion "
         "(\"superseded\": true) or gRPC CANCELLED, their KV blocks stay cached for the new one"},
        {"--schedule", "latency|throughput", CLI_FLAG_CHOICE, &o->schedule, "latency", 0, 0,
         "latency|throughput",
         "latency: earliest deadline first, steps sized from the measured step time so running "
         "requests meet their deadlines, requests past theirs deprioritised (never shed); "
         "throughput: oldest first, full 512-token steps (most tokens/s, worst keystroke "
         "latency under load)"},
        {"--deadline-ms", "N", CLI_FLAG_INT, &o->deadline_ms, "1000", 1, 3600000, NULL,
         "latency target of a request, from arrival to its last token; a request may set its "
         "own (\"deadline_ms\", gRPC deadline_ms)"},
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
        {"--log-format", "text|json", CLI_FLAG_CHOICE, &o->log_format, "text", 0, 0, "text|json",
         "stderr as 'serval: ...' lines, or one JSON object per line (time, level, event; "
         "requests: request_id, route or rpc, status, tokens, timings, client, the token's "
         "name, never the token; the start-up summary as one \"ready\" event)"},
        {"--log-level", "LEVEL", CLI_FLAG_CHOICE, &o->log_level, "info", 0, 0,
         "debug|info|warn|error", "the least severe messages logged (request lines are info; "
         "SIGHUP applies a changed level)"},
    };
    const cli_command cmd = {
        .prog = prog,
        .usage = "[options]",
        .about = "Serves completions and chat over gRPC (proto/serval.proto, package serval.v1) "
                 "and HTTP (the Tabby, OpenAI and llama.cpp routes) from one model. Logs go to "
                 "stderr: one 'listening' line per listener, one line per request. Tokens: "
                 "every --token and those in --token-file; when neither is given, "
                 "$SERVAL_TOKEN; when that is unset too, the token in DATA_DIR/token "
                 "(generated at first start). SIGTERM or SIGINT stops both listeners accepting "
                 "(new requests get 503 or UNAVAILABLE), lets calls in flight finish (up to "
                 "--drain-ms) and exits 0; a second signal cancels what is still running and "
                 "exits at once. SIGHUP re-reads the tokens (--token-file, DATA_DIR/tokens: see "
                 "`serval token`; also picked up within a second without a signal), the log "
                 "level, --http-rate-limit/--http-rate-burst, --max-inflight-per-token (a new number; "
                 "turning it on or off needs a restart), --http-max-body-kb, "
                 "--generation-timeout-ms and the repositories to index "
                 "(--repo, --reindex-interval: a new list is indexed at once, when serve "
                 "started with at least one), and logs which other changed settings need a "
                 "restart. While the model loads, the HTTP port answers 503 \"starting\" and "
                 "gRPC Health STARTING (not with TLS). Every setting can also come from the config file (key `grpc_port` for "
                 "--grpc-port) or the environment (SERVAL_GRPC_PORT); flags win over the "
                 "environment, which wins over the file. $SERVAL_TOKEN keeps its rule above.",
        .flags = flags,
        .n_flags = sizeof flags / sizeof flags[0]};
    static const char *const not_settings[] = {"--config", "--print-config", NULL};
    static const char *const no_env[] = {"--token", NULL}; /* $SERVAL_TOKEN: see the help */
    static const char *const secrets[] = {"--token", "--metrics-token", NULL};
    const cli_config_spec spec = {.default_path = SERVE_CONFIG_DEFAULT, .config_flag = "--config",
                                  .not_settings = not_settings, .no_env = no_env,
                                  .secrets = secrets};
    cli_parse_result pr = cli_config_parse(&cmd, &spec, argc, argv, &o->cfg);
    if (pr == CLI_PARSE_OK)
        pr = cli_engine_opts_check(&cmd, &o->eng);
    if (pr == CLI_PARSE_OK)
        pr = check_serve(&cmd, o);
    if (pr == CLI_PARSE_OK && o->print_config) {
        cli_config_print(o->cfg, &cmd, stdout);
        const char *env = getenv("SERVAL_TOKEN");
        if (env && *env && !o->no_auth && o->tokens.n == 0 && !o->token_file)
            printf("# and the token in $SERVAL_TOKEN (token and token_file are not set)\n");
        pr = CLI_PARSE_HELP;
    }
    if (pr == CLI_PARSE_OK) { /* what SIGHUP compares a reload against */
        size_t n = 0;
        FILE *m = open_memstream(&o->effective, &n);
        if (m) {
            cli_config_print(o->cfg, &cmd, m);
            fclose(m);
        }
    }
    if (pr != CLI_PARSE_OK) {
        cli_config_free(o->cfg);
        o->cfg = NULL;
    }
    return pr == CLI_PARSE_OK ? -1 : pr == CLI_PARSE_HELP ? 0 : 2;
}

void cli_serve_opts_free(serve_opts *o)
{
    cli_config_free(o->cfg);
    o->cfg = NULL;
    free(o->effective);
    o->effective = NULL;
}

const char *cli_serve_data_dir(const serve_opts *o)
{
    static char buf[4096];
    if (o->data_dir) return o->data_dir;
    const char *env = getenv("SERVAL_DATA_DIR"); /* also read by the config layer; kept for
                                                  * callers that skipped it */
    if (env && *env) return env;
    /* systemd's StateDirectory= (packaging/serval.service.in): /var/lib/serval; the first of a
     * ':'-separated list. */
    const char *state = getenv("STATE_DIRECTORY");
    if (state && *state) {
        int n = (int)strcspn(state, ":");
        if (snprintf(buf, sizeof buf, "%.*s", n, state) < (int)sizeof buf) return buf;
    }
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    if (snprintf(buf, sizeof buf, "%s/.serval", home) >= (int)sizeof buf) return NULL;
    return buf;
}

