/* serve_opts.h — `serval serve`'s settings: the one flag table (cli/serve_opts.c) from which
 * the config file's keys and the SERVAL_* variables are derived (cli/config.h), and their
 * parsing and checks. `serval doctor` reads a deployment's settings through the same table. */
#ifndef SERVAL_CLI_SERVE_OPTS_H
#define SERVAL_CLI_SERVE_OPTS_H

#include <stdbool.h>

#include "config.h"
#include "engine_flags.h"
#include "flags.h"

#define SERVE_MAX_TOKENS 64
#define SERVE_MAX_ORIGINS 32
#define SERVE_MAX_REPOS 64
#define SERVE_CONFIG_DEFAULT "/etc/serval/serval.toml"

typedef struct serve_opts {
    const char *model;
    const char *embedding_model; /* --embedding-model; NULL: the default one when present */
    bool no_embeddings;          /* --no-embeddings */
    const char *repo_items[SERVE_MAX_REPOS];
    cli_list repos;              /* --repo PATH[=GIT_URL] (config: repos = [...]) */
    bool no_retrieval;           /* --no-retrieval */
    long reindex_s;              /* --reindex-interval */
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
    long replicas;       /* --replicas: engines behind one router (cli/serve_replicas.h) */
    long step_watchdog_ms; /* --step-watchdog-ms: the router's stalled-step bound, 0 off */
    long http_max_body_kb, http_timeout_s, http_client_timeout_s; /* HTTP shim limits */
    long http_rate, http_burst;
    long per_ip_connections, max_inflight_per_token, generation_timeout_ms;
    long max_streams_per_connection;
    int supersede;       /* --supersede: index in "on|off" */
    int schedule;        /* --schedule: index in "latency|throughput" (eng_schedule's order) */
    long deadline_ms;
    const char *tls_cert, *tls_key, *metrics_token;
    const char *origin_items[SERVE_MAX_ORIGINS];
    cli_list origins;
    char cors[4096]; /* the --cors-origin values joined with commas */
    bool quiet;
    int log_format;      /* --log-format: index in "text|json" (rpc_log_format's order) */
    int log_level;       /* --log-level: index in "debug|info|warn|error" (rpc_log_level's) */
    char *effective;     /* the effective settings as --print-config prints them (malloc'd),
                          * what SIGHUP compares against */
    const char *config;  /* --config: the TOML file named on the command line */
    bool print_config;   /* --print-config */
    cli_config *cfg;     /* the settings' sources; the file's strings o's fields borrow */
} serve_opts;

/* Parses `serve`'s arguments (those after the command's name) with the config file and the
 * environment into *o; prog prefixes every message ("serval serve"). Returns the exit code of
 * a finished parse (0: --help or --print-config printed; 2: an error printed on stderr), or -1
 * to go on: then o holds the settings until cli_serve_opts_free. */
int cli_serve_opts_parse(int argc, char **argv, const char *prog, serve_opts *o);

/* Frees what parsing kept (the config file's values); o's strings are then invalid. */
void cli_serve_opts_free(serve_opts *o);

/* The data directory: --data-dir (or its key or variable), else ~/.serval; a static buffer
 * when built from $HOME, NULL when neither is known. */
const char *cli_serve_data_dir(const serve_opts *o);

#endif
