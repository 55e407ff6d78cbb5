/* bench.h — serval-bench's shared types: the run configuration, the source corpus, one record
 * per request, and the functions each file of bench/serval_bench/ exports (see README). */
#ifndef SERVAL_BENCH_H
#define SERVAL_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum bench_target {
    BENCH_TARGET_TABBY,   /* POST /v1/completions, Tabby's segments */
    BENCH_TARGET_OPENAI,  /* POST /v1/completions, OpenAI's prompt */
    BENCH_TARGET_LLAMACPP, /* POST /completion, llama.cpp server's prompt/n_predict */
    BENCH_TARGET_GRPC,     /* serval.v1 Complete / CompleteStream */
    BENCH_TARGET_CHAT,     /* POST /v1/chat/completions, the prompt as one user message */
    BENCH_TARGET_COUNT
} bench_target;
typedef enum bench_mode { BENCH_MODE_DEVELOPER, BENCH_MODE_CLASSIC } bench_mode;
typedef enum bench_outcome {
    BENCH_OUTCOME_ANSWERED,   /* a 2xx with a well-formed completion */
    BENCH_OUTCOME_SUPERSEDED, /* aborted (connection closed) because the developer typed on */
    BENCH_OUTCOME_ERROR       /* anything else: non-2xx, malformed body, timeout, cut off */
} bench_outcome;

/* Everything the command line sets (main.c parses it; every knob is in --help). */
typedef struct bench_cfg {
    bench_target target;
    bench_mode mode;
    char host[256];
    int port;
    char base_path[256]; /* URL path before /v1/... (usually empty) */
    const char *token, *repos, *out, *exts, *git_url, *model;
    /* --metrics-url: the server's /metrics, read before and after each run (port 0: none) */
    char metrics_host[256], metrics_base[256];
    int metrics_port;
    char **tokens;     /* --token-file: one per developer, round robin (malloc'd), or NULL */
    int n_tokens;
    int developers;
    double duration_s, session_s, grace_s, timeout_s;
    double keystroke_ms, jitter, pause_prob, pause_ms, debounce_ms, accept_ms;
    int prefix_lines, suffix_lines, hole_lines;
    /* classic */
    int concurrency;
    double rate;
    bool gamma;
    double gamma_shape;
    int prompt_chars, max_tokens, max_inflight;
    int prefix_groups, shared_chars; /* shared-prefix groups (0: none) */
    const char *sweep;               /* comma list of loads, or NULL */
    bool stream;
    double slo_ms;
    uint64_t seed;
    bool quiet, plot;
    bool events; /* tabby: POST /v1/events view, then select or dismiss, per suggestion */
    /* developers-at-SLO search */
    bool search;
    int search_max, search_repeats, search_start;
    double min_answered;
} bench_cfg;

/* What a search needs from one run's summary. */
typedef struct bench_headline {
    size_t requests, answered, superseded, errors;
    double k2s_p95; /* < 0 when nothing was answered */
    double throughput; /* answered per second of the duration */
    double lat_p50, lat_p95; /* the SLO metric (keystroke-to-suggestion / e2e); < 0: none */
    double ttft_p95;
} bench_headline;

typedef struct bench_file {
    char *rel;        /* path relative to --repos (malloc'd) */
    const char *lang; /* Tabby language id (static string) */
    char *git_url;    /* the repository's remote, or NULL (malloc'd) */
    char *text;       /* whole file, NUL-terminated (malloc'd) */
    size_t len;
} bench_file;

typedef struct bench_corpus {
    bench_file *files;
    size_t n;
} bench_corpus;

/* One request as requests.jsonl writes it. Times are ms since the run started. */
typedef struct bench_rec {
    int session;           /* developer session or classic worker */
    bench_outcome outcome;
    int status;            /* HTTP status, 0 when none came; grpc: 200 for OK, else its code */
    double t_key;          /* keystroke that triggered it (developer mode; else = t_intended) */
    double t_intended, t_sent;
    double ttft_ms, e2e_ms; /* from t_intended; < 0 when not reached */
    double itl_ms;         /* mean gap between streamed text pieces; < 0 without two pieces */
    double k2s_ms;         /* keystroke to suggestion (answered only), else < 0 */
    int prompt_tokens, completion_tokens; /* server's usage; -1 when it sent none */
    int cached_tokens;     /* gRPC usage: prompt tokens from the prefix cache; -1: not reported */
    double server_queue_ms, server_total_ms; /* gRPC timings; < 0: not reported */
    double em, es;         /* exact match, edit similarity vs the text typed next; < 0: none */
    bool accepted;
    bool server_superseded; /* superseded by the server, not by the client's abort */
    int prompt_chars;
    int group;             /* classic shared-prefix group, -1 for none */
    char *error;           /* malloc'd or NULL */
    char *suggestion;      /* answered: the text (malloc'd), else NULL */
    char *expected;        /* scored: what the file has there, cut as compared (malloc'd) */
    char id[64];           /* the server's completion id */
    char request_id[64];   /* the server's request id (X-Request-Id, gRPC x-request-id), or "" */
    const char *file;      /* corpus file (borrowed) */
} bench_rec;

/* What one read of a Serval server's /metrics holds for the summary (metrics.c). */
#define BENCH_METRICS_MAX_BUCKETS 32
typedef struct bench_metrics {
    bool ok; /* every value below was found */
    double cancelled, wasted_prompt, wasted_generated;
    double superseded; /* serval_engine_requests_superseded_total; -1: not exported */
    double abort_count, abort_sum_s;
    int n_buckets; /* the abort-to-free histogram: cumulative counts at upper bounds (s) */
    double bucket_le_s[BENCH_METRICS_MAX_BUCKETS], bucket_cum[BENCH_METRICS_MAX_BUCKETS];
} bench_metrics;

/* The run: config, corpus, records (appended under lock), live counters for progress. */
typedef struct bench_run {
    const bench_cfg *cfg;
    const bench_corpus *corpus;
    double t0;             /* bench_now_ms() at start */
    pthread_mutex_t lock;
    bench_rec *recs;
    size_t n_recs, cap_recs;
    atomic_int sessions_live, inflight;
    atomic_long sent, answered, superseded, errors;
    atomic_long events_sent, events_failed;
    atomic_bool stop;
    bench_metrics metrics_before, metrics_after; /* the server's /metrics around the run */
} bench_run;

/* ---- util (report.c) ---- */
/* "tabby", "openai", "llamacpp", "grpc", "openai-chat": --target's spelling. */
const char *bench_target_name(bench_target t);
double bench_now_ms(void);                   /* CLOCK_MONOTONIC in ms */
void bench_sleep_until(const bench_run *r, double t_ms); /* t in run time */
double bench_rand01(uint64_t *s);            /* splitmix64 in [0,1) */
double bench_rand_exp(uint64_t *s, double mean);
double bench_rand_gamma(uint64_t *s, double shape, double mean);
/* Appends a record (takes ownership of rec's strings); false when out of memory. */
bool bench_record(bench_run *r, const bench_rec *rec);
/* Exact match and edit similarity of suggestion s against `truth` (the text that follows the
 * cursor): the reference is truth cut to as many lines as s has, both with trailing
 * whitespace trimmed. *accept: s is non-empty and truth starts with it. */
void bench_quality(const char *s, const char *truth, size_t truth_len, double *em, double *es,
                   bool *accept, size_t *ref_len);
/* Writes requests.jsonl, summary.json, summary.csv under cfg->out and prints the summary's
 * headline to stdout (and into *h when not NULL); returns 0, or 1 with a message on stderr. */
int bench_report(bench_run *r, double wall_s, double cpu_s, bench_headline *h);
/* `serval-bench compare A B`: prints B/A for every numeric key; returns an exit status. */
int bench_compare(const char *a, const char *b);

/* ---- corpus (corpus.c) ---- */
/* Walks dir for files whose extension is in exts (comma list, NULL: the default code set),
 * reads them (UTF-8 text without NULs, 64 B..512 KiB), sorted by path. Returns 0, or -1 with
 * a message. */
int bench_corpus_load(bench_corpus *c, const char *dir, const char *exts, const char *git_url);
void bench_corpus_free(bench_corpus *c);

/* ---- HTTP (http.c) ---- */
typedef struct bench_http_result {
    int status;
    double t_sent, t_first_byte, t_first_token, t_done; /* absolute ms; < 0 when not reached */
    double t_last_token; /* the last text piece of a stream */
    int pieces;          /* streamed events that carried text */
    bool aborted;           /* abort_at came first: the connection was closed */
    bool server_superseded; /* the server ended it for a newer request of the same session
                             * (Serval's supersede: HTTP "superseded": true, gRPC CANCELLED) */
    bool complete;          /* the whole response (and [DONE] for streams) arrived */
    char *text;             /* the completion text (malloc'd) */
    int prompt_tokens, completion_tokens;
    int cached_tokens;      /* gRPC only; -1 otherwise */
    double server_queue_ms, server_total_ms; /* gRPC only; -1 otherwise */
    char id[64];
    char request_id[64];    /* X-Request-Id / gRPC x-request-id, or "" */
    char error[160];
} bench_http_result;

/* One client connection of a session or worker: HTTP socket or gRPC client. */
typedef struct bench_conn {
    int fd;            /* -1: none */
    void *grpc;        /* rpc_client, NULL: none */
    const char *token; /* this session's bearer token (borrowed from cfg), or NULL */
} bench_conn;

/* POSTs body to path with token (NULL: none) and reads the reply (the target's shape; SSE
 * when stream) until it ends, abort_at_ms (absolute; the connection is closed: the abort
 * tabby-agent does) or deadline_ms (an error). *fd: a kept-alive connection or -1; on return
 * the connection to reuse, or -1. out->text is malloc'd (the caller frees it). */
void bench_http_post(const bench_cfg *cfg, const char *token, int *fd, const char *path,
                     const char *body, bool stream, double abort_at_ms, double deadline_ms,
                     bench_http_result *out);
/* GET path; the status (0 when none) and, when body is not NULL, the body (malloc'd). */
int bench_http_get(const bench_cfg *cfg, const char *path, char **body);

/* ---- runs (main.c) and the developers-at-SLO search (search.c) ---- */
/* One run of cfg's workload with its outputs under cfg->out; 0, or an exit status. */
int bench_run_once(const bench_cfg *cfg, const bench_corpus *corpus, bench_headline *h);
/* Grows, then bisects --developers for the most whose p95 keystroke-to-suggestion stays within
 * --slo-ms with at least --min-answered of the non-superseded requests answered, repeated
 * --search-repeats times; writes out/search.json and each trial under out/search/. */
int bench_search(const bench_cfg *cfg, const bench_corpus *corpus);
/* One run per load in --sweep (developers, concurrency, or rate with --rate), each under
 * out/sweep/<load>/; out/sweep.json (and sweep.png with --plot): latency against throughput. */
int bench_sweep(const bench_cfg *cfg, const bench_corpus *corpus);

/* ---- plots (plot.c): gnuplot into cfg->out; 0 when drawn (or nothing to draw) ---- */
int bench_plot_run(const bench_run *r);
/* The search's trials: developers, answered/s, p95 keystroke-to-suggestion (< 0: none), rep. */
int bench_plot_search(const char *out, double slo_ms, const double *devs, const double *tput,
                      const double *p95, const int *rep, size_t n);
/* The sweep: per load, answered/s, p50 and p95 of the SLO metric (named by metric). */
int bench_plot_sweep(const char *out, const char *metric, const double *load, const double *tput,
                     const double *p50, const double *p95, size_t n);

/* ---- the server's /metrics (metrics.c) ---- */
/* Parses Prometheus text; true when every value of bench_metrics was in it. */
bool bench_metrics_parse(const char *text, bench_metrics *m);
struct json_t;
/* summary.json's "server": b - a (requests_cancelled, wasted_prompt_tokens,
 * wasted_generated_tokens, abort_to_free_ms {n, mean, p50, p95, p99}, null without aborts);
 * JSON null when either read failed. A new reference. */
struct json_t *bench_metrics_delta_json(const bench_metrics *a, const bench_metrics *b);

/* ---- gRPC (grpc.c) ---- */
typedef struct bench_grpc_input {
    bool segments; /* true: Segments from the fields below; false: prefix is a raw prompt */
    const char *prefix, *suffix, *filepath, *git_url, *language;
} bench_grpc_input;
/* Complete (or CompleteStream with cfg->stream) on *client (created on first use; NULL-terminated
 * strings in `in`); the call is cancelled at abort_at_ms (aborted) or deadline_ms (error). The
 * result has the same meaning as bench_http_post's; status 200 for OK. */
void bench_grpc_complete(const bench_cfg *cfg, const char *token, void **client,
                         const bench_grpc_input *in,
                         double abort_at_ms, double deadline_ms, bench_http_result *out);
void bench_grpc_close(void **client);
/* ListModels over gRPC (it needs the token, Health does not): 200 when OK, 401
 * unauthenticated, 0 otherwise. */
int bench_grpc_health(const bench_cfg *cfg);

/* ---- the null server (null_server.c) ---- */
/* `serval-bench null-server --grpc-port N [--text T]` (argv after "null-server"): serves
 * serval.v1 with an instant fixed answer until SIGINT/SIGTERM; an exit status. */
int bench_null_server(int argc, char **argv);

/* ---- workloads (workload.c) ---- */
/* Runs the configured workload to its end; returns when every session/worker has joined. */
int bench_run_workload(bench_run *r);

#endif
