/* main.c — serval-bench: the command line (every knob in --help), the run (health check,
 * workload, progress line on stderr, the client's own CPU) and `serval-bench compare`. */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *const USAGE[] = {
    "usage: serval-bench --target tabby|openai|openai-chat|llamacpp|grpc --url URL [--token T]\n"
    "                    --developers N --duration S --repos DIR --out DIR [options]\n"
    "       serval-bench compare A/summary.json B/summary.json\n"
    "       serval-bench null-server --grpc-port N [--text T]   (N 0: a free port)\n"
    "\n"
    "Load generator for code-completion servers. The default workload simulates developers:\n"
    "each types through a real source file from --repos, and after Tabby's debounce sends a\n"
    "Tabby-shaped completion request; when the developer types on before the answer came, the\n"
    "request is aborted by closing the connection (as tabby-agent does) and counted superseded.\n"
    "A suggestion equal to what the developer types next is accepted (Tab) and skipped over.\n"
    "Sessions arrive open-loop (Poisson); each session is closed-loop. Latencies count from the\n"
    "intended send time, so a late client never hides server delay (no coordinated omission).\n"
    "\n",
    "null-server answers every serval.v1 Complete/CompleteStream/ListModels at once with T (no\n"
    "model): --target grpc against it measures the client's own overhead.\n"
    "\n",
    "Target and output (the stable contract):\n"
    "  --target tabby|openai|openai-chat|llamacpp|grpc\n"
    "                         tabby: POST /v1/completions with {language, segments: {prefix,\n"
    "                         suffix, filepath, git_url}}; openai: POST /v1/completions with\n"
    "                         {prompt, max_tokens, stream}; llamacpp: POST /completion with\n"
    "                         {prompt, n_predict, stream, cache_prompt} (llama.cpp's server, the\n"
    "                         engine Tabby runs); openai and llamacpp send the prefix window as\n"
    "                         the prompt; grpc: Serval's serval.v1 Complete (CompleteStream with\n"
    "                         --stream) with Segments (classic: a raw prompt) and --max-tokens,\n"
    "                         cancelled when the developer types on; --url grpc://HOST:PORT;\n"
    "                         openai-chat: POST /v1/chat/completions with the prompt as one\n"
    "                         user message, max_tokens, stream\n"
    "  --url URL              server, http://HOST:PORT[/base] (default http://127.0.0.1:8080)\n"
    "  --token T              bearer token (default: $SERVAL_TOKEN, else none)\n"
    "  --token-file PATH      one token a line: developer (or classic client) i uses token\n"
    "                         i mod count, as every Tabby user has their own; servers cap\n"
    "                         requests in flight per token (Serval: 16)\n"
    "  --metrics-url URL      Serval's /metrics, read before and after each run for the\n"
    "                         summary's \"server\": aborts, abort-to-free time, wasted tokens\n"
    "                         (default: --url for the HTTP targets; grpc: give the HTTP port,\n"
    "                         http://HOST:PORT; none: skip; servers without them give null)\n"
    "  --developers N         developers typing at once, on average (default 4)\n"
    "  --duration S           seconds of load; no request starts after it (default 30)\n"
    "  --repos DIR            directory of source trees to type through (required)\n"
    "  --out DIR              where requests.jsonl, summary.json, summary.csv go (required)\n"
    "  --mode developer|classic  workload (default developer)\n"
    "\n",
    "Developer sessions:\n"
    "  --session S            a session types for S seconds (default 60); sessions start at\n"
    "                         --developers/S per second, Poisson, and the run opens with\n"
    "                         --developers sessions part-way through, so concurrency is steady\n"
    "  --keystroke-ms MS      mean time between keystrokes (default 120)\n"
    "  --jitter F             keystroke times vary uniformly by +-F of the mean (default 0.5)\n"
    "  --pause-prob P         chance of a thinking pause after a space, '(', '.' or newline\n"
    "                         (default 0.3)\n"
    "  --pause-ms MS          mean of those pauses, exponential (default 1500)\n"
    "  --debounce-ms MS       a request goes out this long after the last keystroke if no other\n"
    "                         came (tabby-agent: adaptive 100-1000; default 150)\n"
    "  --accept-ms MS         time to press Tab on a correct suggestion (default 200)\n"
    "  --events               tabby: after each suggestion POST /v1/events view, then select\n"
    "                         or dismiss, as tabby-agent does (counted as events_sent/failed,\n"
    "                         not as requests)\n"
    "  --prefix-lines N       lines before the cursor sent as the prefix (tabby-agent: 20)\n"
    "  --suffix-lines N       lines after the hole sent as the suffix (tabby-agent: 20)\n"
    "  --hole-lines N         lines a developer writes in one place before switching file\n"
    "                         (default 3); the file's text after the hole is the suffix, the\n"
    "                         text of the hole itself the ground truth for quality\n"
    "  --ext LIST             file extensions to use, comma-separated (default: common code)\n"
    "  --git-url URL          git_url for every request (default: each repository's remote from\n"
    "                         its .git/config; none when there is no .git)\n"
    "\n",
    "Classic mode (--mode classic; prompts are slices of --repos files):\n"
    "  --concurrency C        closed loop: C clients, each sends its next request when the last\n"
    "                         is answered (default 4)\n"
    "  --rate R               open loop instead: R requests/s on a precomputed seeded schedule\n"
    "  --arrival poisson|gamma  gaps of the open loop (default poisson)\n"
    "  --gamma-shape K        gamma shape (K < 1 burstier, default 0.5)\n"
    "  --max-inflight N       open loop: client connections at most; a request due while all are\n"
    "                         busy goes late and its latency still counts from its due time\n"
    "                         (default 256)\n"
    "  --prompt-chars N       prompt length in characters (default 600, ~150 tokens of code)\n"
    "  --prefix-groups G      shared-prefix groups: each prompt starts with the head of one of G\n"
    "                         files (picked per request), as developers of one repository share\n"
    "                         its context, then its own slice (default 0: none)\n"
    "  --shared-prefix-chars N  length of that shared head (default 400)\n"
    "  --max-tokens N         openai, openai-chat, grpc: max_tokens; llamacpp: n_predict\n"
    "                         (default 32); tabby: the server's default (applies to developer\n"
    "                         sessions too)\n"
    "  --stream               openai, openai-chat, llamacpp: SSE; grpc: CompleteStream; time\n"
    "                         to first token is the first text piece, inter-token latency the\n"
    "                         mean gap between pieces\n"
    "  --model NAME           openai, openai-chat: the model field (default \"\")\n"
    "\n",
    "Developers at SLO (--search):\n"
    "  --search               instead of one run: the largest --developers whose p95\n"
    "                         keystroke-to-suggestion stays within --slo-ms with at least\n"
    "                         --min-answered of the requests that were not superseded answered:\n"
    "                         grow 1, 2, 4, ... until one fails, then bisect, each trial a run of\n"
    "                         --duration; repeated with other seeds for a 95% confidence\n"
    "                         interval. Writes DIR/search.json and every trial's outputs under\n"
    "                         DIR/search/rep<R>-dev<N>/\n"
    "  --search-max N         developers tried at most (default 256)\n"
    "  --search-start N       first trial (default 1): doubles from there while trials pass,\n"
    "                         halves while they fail, then bisects; a start near the answer\n"
    "                         saves trials (the answer does not depend on it)\n"
    "  --search-repeats R     searches, seeds --seed, --seed+1, ... (default 3)\n"
    "  --min-answered F       answered share of non-superseded requests to pass (default 0.99)\n"
    "\n",
    "Sweep (--sweep):\n"
    "  --sweep LIST           one run per load in the comma list: --developers (developer\n"
    "                         mode), --rate (classic with --rate) or --concurrency (classic);\n"
    "                         each run's outputs in DIR/sweep/<load>/, the curve in\n"
    "                         DIR/sweep.json (and sweep.png, latency against throughput, with\n"
    "                         --plot)\n"
    "\n",
    "Common:\n"
    "  --slo-ms MS            goodput counts answers within MS (keystroke-to-suggestion for\n"
    "                         developers, end-to-end for classic; default 2000)\n"
    "  --timeout S            a request running longer is an error (default 120, tabby-agent's)\n"
    "  --grace S              after --duration, requests in flight get S seconds more before\n"
    "                         they are cut off and counted as errors (default 30)\n"
    "  --seed N               seeds files, holes, keystrokes, arrivals (default 1)\n"
    "  --quiet                no progress line\n"
    "  --plot                 draw PNGs with gnuplot (apt install gnuplot-nox): latency_cdf.png\n"
    "                         (ttft, e2e, keystroke-to-suggestion CDFs); with --search,\n"
    "                         search.png (p95 against developers and against throughput, the\n"
    "                         SLO line); the .dat and .gp files stay beside them\n"
    "  --help                 this text\n"
    "\n",
    "Outputs (see bench/README.md for every key): requests.jsonl (one line per request:\n"
    "intended and actual send time, ttft, e2e, keystroke-to-suggestion, superseded, tokens from\n"
    "the server's usage field, status, error, exact match and edit similarity of the suggestion\n"
    "against the text typed next), summary.json (counts, superseded_fraction, p50/p90/p95/p99/max\n"
    "of ttft_ms, e2e_ms, keystroke_to_suggestion_ms, throughput, goodput under --slo-ms, quality,\n"
    "the client's CPU and a warning when the client is the bottleneck), summary.csv (the same,\n"
    "flattened). Exit status: 0 when the run completed (errors are data), 2 on usage errors or\n"
    "an unreachable server.\n",
};

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "serval-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

static bool parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* HOST, PORT and /base of SCHEME://HOST:PORT[/base] (the scheme's 7 characters skipped);
 * host and base hold 256 bytes. 0, or 2 after a usage error naming flag. */
static int parse_hostport(const char *flag, const char *url, char *host, int *port, char *base)
{
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    const char *colon = memchr(h, ':', hl);
    size_t name_len = colon ? (size_t)(colon - h) : hl;
    if (name_len == 0 || name_len >= 256) {
        fprintf(stderr, "serval-bench: %s %s: no host (see --help)\n", flag, url);
        return 2;
    }
    memcpy(host, h, name_len);
    host[name_len] = 0;
    *port = colon ? atoi(colon + 1) : 80;
    if (*port <= 0 || *port > 65535) {
        fprintf(stderr, "serval-bench: %s %s: bad port (see --help)\n", flag, url);
        return 2;
    }
    snprintf(base, 256, "%s", slash ? slash : "");
    size_t bl = strlen(base);
    if (bl && base[bl - 1] == '/')
        base[bl - 1] = 0;
    return 0;
}

static int parse_url(bench_cfg *c, const char *url, const char *metrics_url)
{
    bool grpc = strncmp(url, "grpc://", 7) == 0;
    if (strncmp(url, "http://", 7) != 0 && !grpc)
        return usage_error("--url %s: http://HOST:PORT (or grpc://HOST:PORT for --target grpc)",
                           url);
    if (grpc != (c->target == BENCH_TARGET_GRPC))
        return usage_error("--url %s: --target grpc takes grpc://HOST:PORT, the others http://",
                           url);
    int rc = parse_hostport("--url", url, c->host, &c->port, c->base_path);
    if (rc)
        return rc;
    if (metrics_url && strcmp(metrics_url, "none") == 0)
        return 0; /* metrics_port stays 0: not read */
    if (!metrics_url) {
        if (grpc)
            return 0; /* gRPC has no /metrics: --metrics-url names the HTTP port */
        snprintf(c->metrics_host, sizeof c->metrics_host, "%s", c->host);
        snprintf(c->metrics_base, sizeof c->metrics_base, "%s", c->base_path);
        c->metrics_port = c->port;
        return 0;
    }
    if (strncmp(metrics_url, "http://", 7) != 0)
        return usage_error("--metrics-url %s: http://HOST:PORT or none", metrics_url);
    return parse_hostport("--metrics-url", metrics_url, c->metrics_host, &c->metrics_port,
                          c->metrics_base);
}

/* --token-file: one token a line ('#' comments, blanks skipped); the first is also --token. */
static int load_tokens(bench_cfg *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "serval-bench: --token-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        p[strcspn(p, " \t\r\n")] = 0;
        if (!*p || *p == '#')
            continue;
        char **t = realloc(c->tokens, (size_t)(c->n_tokens + 1) * sizeof *t);
        if (!t || !(t[c->n_tokens] = strdup(p))) {
            if (t)
                c->tokens = t;
            fclose(f);
            fprintf(stderr, "serval-bench: out of memory\n");
            return -1;
        }
        c->tokens = t;
        c->n_tokens++;
    }
    fclose(f);
    if (!c->n_tokens) {
        fprintf(stderr, "serval-bench: --token-file %s holds no token\n", path);
        return -1;
    }
    c->token = c->tokens[0];
    return 0;
}

/* One numeric flag: name, where it goes, its range. */
typedef struct num_flag {
    const char *name;
    double *d;
    int *i;
    double lo, hi;
} num_flag;

static int parse_args(bench_cfg *c, int argc, char **argv)
{
    double smax = 256, sreps = 3, sstart = 1, groups = 0, shared = 400;
    double seed = 1, devs = 4, conc = 4, pl = 20, sl = 20, hl = 3, pc = 600, mt = 32, mi = 256;
    num_flag nums[] = {
        {"--duration", &c->duration_s, NULL, 0.1, 1e6},
        {"--session", &c->session_s, NULL, 0.1, 1e6},
        {"--keystroke-ms", &c->keystroke_ms, NULL, 1, 1e5},
        {"--jitter", &c->jitter, NULL, 0, 0.99},
        {"--pause-prob", &c->pause_prob, NULL, 0, 1},
        {"--pause-ms", &c->pause_ms, NULL, 0, 1e6},
        {"--debounce-ms", &c->debounce_ms, NULL, 0, 1e5},
        {"--accept-ms", &c->accept_ms, NULL, 0, 1e5},
        {"--rate", &c->rate, NULL, 0.001, 1e6},
        {"--gamma-shape", &c->gamma_shape, NULL, 0.01, 100},
        {"--slo-ms", &c->slo_ms, NULL, 1, 1e7},
        {"--timeout", &c->timeout_s, NULL, 0.01, 1e5},
        {"--grace", &c->grace_s, NULL, 0, 1e5},
        {"--seed", &seed, NULL, 0, 1e15},
        {"--developers", &devs, NULL, 1, 100000},
        {"--concurrency", &conc, NULL, 1, 100000},
        {"--prefix-lines", &pl, NULL, 0, 10000},
        {"--suffix-lines", &sl, NULL, 0, 10000},
        {"--hole-lines", &hl, NULL, 1, 10000},
        {"--prompt-chars", &pc, NULL, 1, 1e7},
        {"--max-tokens", &mt, NULL, 1, 1e6},
        {"--max-inflight", &mi, NULL, 1, 100000},
        {"--search-max", &smax, NULL, 1, 100000},
        {"--search-repeats", &sreps, NULL, 1, 30},
        {"--search-start", &sstart, NULL, 1, 100000},
        {"--min-answered", &c->min_answered, NULL, 0, 1},
        {"--prefix-groups", &groups, NULL, 0, 100000},
        {"--shared-prefix-chars", &shared, NULL, 0, 1e7},
    };
    const char *url = "http://127.0.0.1:8080", *target = NULL, *token_file = NULL;
    const char *metrics_url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        bool matched = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
            if (strcmp(a, nums[k].name) != 0)
                continue;
            if (!has_val || !parse_num(argv[i + 1], nums[k].lo, nums[k].hi, nums[k].d))
                return usage_error("%s needs a number in its range", a);
            i++;
            matched = true;
        }
        if (matched)
            continue;
#define STR_FLAG(flag, dst)                                     \
    if (strcmp(a, flag) == 0) {                                 \
        if (!has_val)                                           \
            return usage_error("%s needs a value", a);          \
        dst = argv[++i];                                        \
        continue;                                               \
    }
        STR_FLAG("--target", target)
        STR_FLAG("--url", url)
        STR_FLAG("--token", c->token)
        STR_FLAG("--repos", c->repos)
        STR_FLAG("--out", c->out)
        STR_FLAG("--ext", c->exts)
        STR_FLAG("--git-url", c->git_url)
        STR_FLAG("--model", c->model)
        STR_FLAG("--sweep", c->sweep)
        STR_FLAG("--token-file", token_file)
        STR_FLAG("--metrics-url", metrics_url)
#undef STR_FLAG
        if (strcmp(a, "--mode") == 0 && has_val) {
            const char *m = argv[++i];
            if (strcmp(m, "developer") == 0)
                c->mode = BENCH_MODE_DEVELOPER;
            else if (strcmp(m, "classic") == 0)
                c->mode = BENCH_MODE_CLASSIC;
            else
                return usage_error("--mode %s: developer or classic", m);
        } else if (strcmp(a, "--arrival") == 0 && has_val) {
            const char *m = argv[++i];
            if (strcmp(m, "gamma") != 0 && strcmp(m, "poisson") != 0)
                return usage_error("--arrival %s: poisson or gamma", m);
            c->gamma = strcmp(m, "gamma") == 0;
        } else if (strcmp(a, "--stream") == 0) {
            c->stream = true;
        } else if (strcmp(a, "--events") == 0) {
            c->events = true;
        } else if (strcmp(a, "--plot") == 0) {
            c->plot = true;
        } else if (strcmp(a, "--search") == 0) {
            c->search = true;
        } else if (strcmp(a, "--quiet") == 0) {
            c->quiet = true;
        } else {
            return usage_error("unknown argument %s", a);
        }
    }
    if (!target)
        return usage_error("%s", "--target tabby|openai is required");
    if (strcmp(target, "tabby") == 0)
        c->target = BENCH_TARGET_TABBY;
    else if (strcmp(target, "openai") == 0)
        c->target = BENCH_TARGET_OPENAI;
    else if (strcmp(target, "llamacpp") == 0)
        c->target = BENCH_TARGET_LLAMACPP;
    else if (strcmp(target, "grpc") == 0)
        c->target = BENCH_TARGET_GRPC;
    else if (strcmp(target, "openai-chat") == 0)
        c->target = BENCH_TARGET_CHAT;
    else
        return usage_error("--target %s: tabby, openai, openai-chat, llamacpp or grpc", target);
    if (!c->repos || !c->out)
        return usage_error("%s", "--repos DIR and --out DIR are required");
    if (c->stream && c->target == BENCH_TARGET_TABBY)
        return usage_error("%s", "--stream: Tabby's /v1/completions does not stream");
    if (c->search && c->mode != BENCH_MODE_DEVELOPER)
        return usage_error("%s", "--search runs developer sessions (leave out --mode classic)");
    if (c->search && c->sweep)
        return usage_error("%s", "--search and --sweep: one at a time");
    c->prefix_groups = (int)groups;
    c->shared_chars = (int)shared;
    c->search_max = (int)smax;
    c->search_repeats = (int)sreps;
    c->search_start = (int)sstart;
    c->seed = (uint64_t)seed;
    c->developers = (int)devs;
    c->concurrency = (int)conc;
    c->prefix_lines = (int)pl;
    c->suffix_lines = (int)sl;
    c->hole_lines = (int)hl;
    c->prompt_chars = (int)pc;
    c->max_tokens = (int)mt;
    c->max_inflight = (int)mi;
    if (token_file && load_tokens(c, token_file) != 0)
        return 2;
    if (!c->token)
        c->token = getenv("SERVAL_TOKEN");
    return parse_url(c, url, metrics_url);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* GET /metrics from cfg's metrics URL (with cfg's token); false when there is none or the
 * server does not export Serval's metrics (m->ok false then). */
static bool bench_metrics_scrape(const bench_cfg *cfg, bench_metrics *m)
{
    memset(m, 0, sizeof *m);
    if (!cfg->metrics_port)
        return false;
    bench_cfg c = *cfg; /* the metrics endpoint's host, port and base path */
    snprintf(c.host, sizeof c.host, "%s", cfg->metrics_host);
    c.port = cfg->metrics_port;
    snprintf(c.base_path, sizeof c.base_path, "%s", cfg->metrics_base);
    char *body = NULL;
    int status = bench_http_get(&c, "/metrics", &body);
    bool ok = status == 200 && body && bench_metrics_parse(body, m);
    free(body);
    return ok;
}

/* The progress line: once a second while the workload runs. */
static void *progress_main(void *arg)
{
    bench_run *r = arg;
    bool tty = isatty(2);
    double next = 1000;
    while (!atomic_load(&r->stop)) {
        bench_sleep_until(r, next);
        if (atomic_load(&r->stop))
            break;
        next += 1000;
        double t = (bench_now_ms() - r->t0) / 1000.0;
        fprintf(stderr,
                "%s[serval-bench] %5.1f/%.0f s  %s %d  sent %ld  answered %ld  superseded %ld"
                "  errors %ld  in flight %d  client cpu %.0f%%%s",
                tty ? "\r" : "", t, r->cfg->duration_s,
                r->cfg->mode == BENCH_MODE_DEVELOPER ? "developers" : "clients",
                atomic_load(&r->sessions_live), atomic_load(&r->sent), atomic_load(&r->answered),
                atomic_load(&r->superseded), atomic_load(&r->errors), atomic_load(&r->inflight),
                100 * cpu_seconds() / (t > 0 ? t : 1), tty ? "   " : "\n");
    }
    if (tty)
        fputc('\n', stderr);
    return NULL;
}

int bench_run_once(const bench_cfg *cfg, const bench_corpus *corpus, bench_headline *h)
{
    bench_run run = {.cfg = cfg, .corpus = corpus};
    pthread_mutex_init(&run.lock, NULL);
    double cpu0 = cpu_seconds();
    bench_metrics_scrape(cfg, &run.metrics_before);
    run.t0 = bench_now_ms();
    pthread_t prog;
    bool have_prog = !cfg->quiet && pthread_create(&prog, NULL, progress_main, &run) == 0;
    int rc = bench_run_workload(&run);
    double wall = (bench_now_ms() - run.t0) / 1000.0;
    double cpu = cpu_seconds() - cpu0;
    atomic_store(&run.stop, true);
    if (have_prog)
        pthread_join(prog, NULL);
    if (run.metrics_before.ok) {
        /* The last aborts are freed at the server's next step: give it that long. */
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        bench_metrics_scrape(cfg, &run.metrics_after);
    }
    if (rc != 0)
        fprintf(stderr, "serval-bench: the workload could not start (out of memory)\n");
    else
        rc = bench_report(&run, wall, cpu, h);
    if (rc == 0 && cfg->plot)
        bench_plot_run(&run); /* optional: a missing gnuplot is said, not an error */
    for (size_t i = 0; i < run.n_recs; i++) {
        free(run.recs[i].error);
        free(run.recs[i].suggestion);
        free(run.recs[i].expected);
    }
    free(run.recs);
    pthread_mutex_destroy(&run.lock);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            for (size_t k = 0; k < sizeof USAGE / sizeof USAGE[0]; k++)
                fputs(USAGE[k], stdout);
            return 0;
        }
    if (argc >= 2 && strcmp(argv[1], "null-server") == 0)
        return bench_null_server(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "compare") == 0) {
        if (argc != 4)
            return usage_error("%s", "compare needs two summary.json paths");
        return bench_compare(argv[2], argv[3]);
    }
    bench_cfg cfg = {.duration_s = 30, .session_s = 60, .grace_s = 30, .timeout_s = 120,
                     .keystroke_ms = 120, .jitter = 0.5, .pause_prob = 0.3, .pause_ms = 1500,
                     .debounce_ms = 150, .accept_ms = 200, .gamma_shape = 0.5, .slo_ms = 2000,
                     .min_answered = 0.99};
    int rc = parse_args(&cfg, argc, argv);
    if (rc)
        return rc;
    bench_corpus corpus;
    if (bench_corpus_load(&corpus, cfg.repos, cfg.exts, cfg.git_url) != 0) {
        bench_corpus_free(&corpus);
        return 2;
    }
    /* Fail fast on a wrong URL or token instead of a run full of errors. */
    const char *probe = cfg.target == BENCH_TARGET_TABBY    ? "/v1/health"
                        : cfg.target == BENCH_TARGET_OPENAI || cfg.target == BENCH_TARGET_CHAT
                            ? "/v1/models"
                        : cfg.target == BENCH_TARGET_GRPC   ? "ListModels (gRPC)"
                                                            : "/health";
    int st = cfg.target == BENCH_TARGET_GRPC ? bench_grpc_health(&cfg)
                                             : bench_http_get(&cfg, probe, NULL);
    if (st / 100 != 2) {
        fprintf(stderr, "serval-bench: %s%s on %s:%d answered %d%s\n", cfg.base_path, probe,
                cfg.host, cfg.port, st, st == 0 ? " (no answer: is the server up?)"
                                        : st == 401 || st == 403 ? " (check --token)" : "");
        bench_corpus_free(&corpus);
        return 2;
    }
    rc = cfg.search  ? bench_search(&cfg, &corpus)
         : cfg.sweep ? bench_sweep(&cfg, &corpus)
                     : bench_run_once(&cfg, &corpus, NULL);
    bench_corpus_free(&corpus);
    for (int i = 0; i < cfg.n_tokens; i++)
        free(cfg.tokens[i]);
    free(cfg.tokens);
    return rc;
}
