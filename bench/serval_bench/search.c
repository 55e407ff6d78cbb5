/* search.c — runs of many loads: "developers at SLO" (the largest number of simulated
 * developers whose p95 keystroke-to-suggestion stays within --slo-ms with enough requests
 * answered; grow, then bisect, repeated with other seeds for a confidence interval;
 * out/search.json) and --sweep (one run per load; latency against throughput, out/sweep.json). */
#include "bench.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Student's t, two-sided 95%, for 1..30 degrees of freedom. */
static const double T95[31] = {0,     12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                               2.262, 2.228,  2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110,
                               2.101, 2.093,  2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                               2.052, 2.048,  2.045, 2.042};

#define SEARCH_MAX_TRIALS 2048

typedef struct search_ctx {
    const bench_cfg *base;
    const bench_corpus *corpus;
    json_t *trials;
    int rep;
    /* for the plot */
    double devs[SEARCH_MAX_TRIALS], tput[SEARCH_MAX_TRIALS], p95[SEARCH_MAX_TRIALS];
    int reps[SEARCH_MAX_TRIALS];
    size_t n;
} search_ctx;

/* One trial at n developers: 1 pass, 0 fail, -1 the run itself failed. */
static int trial(search_ctx *x, int n)
{
    bench_cfg cfg = *x->base;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/search/rep%d-dev%d", x->base->out, x->rep, n);
    cfg.out = dir;
    cfg.developers = n;
    cfg.seed = x->base->seed + (uint64_t)x->rep;
    cfg.quiet = true;
    cfg.plot = false;
    bench_headline h;
    if (bench_run_once(&cfg, x->corpus, &h) != 0)
        return -1;
    size_t settled = h.answered + h.errors;
    double answered = settled ? (double)h.answered / (double)settled : 0;
    bool pass = h.answered > 0 && h.k2s_p95 >= 0 && h.k2s_p95 <= cfg.slo_ms &&
                answered >= cfg.min_answered;
    fprintf(stderr,
            "[serval-bench search] rep %d: %d developers: p95 keystroke-to-suggestion %.0f ms, "
            "%.1f%% of %zu non-superseded answered: %s\n",
            x->rep, n, h.k2s_p95, 100 * answered, settled, pass ? "pass" : "fail");
    if (x->n < SEARCH_MAX_TRIALS) {
        x->devs[x->n] = n;
        x->tput[x->n] = h.throughput;
        x->p95[x->n] = h.k2s_p95;
        x->reps[x->n++] = x->rep;
    }
    json_array_append_new(x->trials,
                          json_pack("{s:i,s:i,s:b,s:o,s:f,s:I,s:I,s:I,s:s}", "rep", x->rep,
                                    "developers", n, "pass", pass, "p95_keystroke_to_suggestion_ms",
                                    h.k2s_p95 >= 0 ? json_real(h.k2s_p95) : json_null(),
                                    "answered_fraction", answered, "requests",
                                    (json_int_t)h.requests, "superseded", (json_int_t)h.superseded,
                                    "errors", (json_int_t)h.errors, "dir", dir));
    usleep(500 * 1000); /* let the server finish what the last trial aborted */
    return pass;
}

/* One search: from --search-start, grow by doubling to the first failure (or --search-max),
 * or halve to the first pass when the start fails; then bisect between the two. */
static int search_once(search_ctx *x, int *found)
{
    int lo = 0, hi = 0, n = x->base->search_start;
    if (n > x->base->search_max)
        n = x->base->search_max;
    int p = trial(x, n);
    if (p < 0)
        return -1;
    while (!p) { /* the start is already too many: halve until one passes (or 1 fails) */
        hi = n;
        if (n == 1)
            break;
        n /= 2;
        if ((p = trial(x, n)) < 0)
            return -1;
    }
    if (p) {
        lo = n;
        while (lo < x->base->search_max && (!hi || hi > 2 * lo)) {
            n = lo * 2 < x->base->search_max ? lo * 2 : x->base->search_max;
            if (hi && n >= hi)
                break;
            if ((p = trial(x, n)) < 0)
                return -1;
            if (!p) {
                hi = n;
                break;
            }
            lo = n;
        }
    }
    while (hi && hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        p = trial(x, mid);
        if (p < 0)
            return -1;
        if (p)
            lo = mid;
        else
            hi = mid;
    }
    *found = lo;
    return 0;
}

int bench_search(const bench_cfg *cfg, const bench_corpus *corpus)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/search", cfg->out);
    if ((mkdir(cfg->out, 0755) != 0 && errno != EEXIST) ||
        (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "serval-bench: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    search_ctx *xp = calloc(1, sizeof *xp);
    if (!xp)
        return 1;
    search_ctx *x = xp;
    x->base = cfg;
    x->corpus = corpus;
    x->trials = json_array();
    int reps = cfg->search_repeats;
    double found[30], sum = 0;
    json_t *per = json_array();
    for (x->rep = 0; x->rep < reps; x->rep++) {
        int f;
        if (search_once(x, &f) != 0) {
            json_decref(x->trials);
            json_decref(per);
            free(xp);
            return 1;
        }
        found[x->rep] = f;
        sum += f;
        json_array_append_new(per, json_integer(f));
    }
    double mean = sum / reps, var = 0;
    for (int i = 0; i < reps; i++)
        var += (found[i] - mean) * (found[i] - mean);
    double sd = reps > 1 ? sqrt(var / (reps - 1)) : 0;
    double half = reps > 1 ? T95[reps - 1 < 30 ? reps - 1 : 30] * sd / sqrt(reps) : 0;
    json_t *s = json_pack("{s:s,s:f,s:s,s:f,s:o,s:f,s:f,s:f,s:f,s:i,s:f,s:o}", "schema",
        "serval-bench-search/1", "slo_ms", cfg->slo_ms, "slo_metric",
        "p95 keystroke_to_suggestion_ms", "min_answered", cfg->min_answered,
        "developers_at_slo", per, "mean", mean, "sd", sd, "ci95_low", mean - half, "ci95_high",
        mean + half, "search_max", cfg->search_max, "trial_duration_s", cfg->duration_s,
        "trials", x->trials);
    json_object_set_new(s, "search_start", json_integer(cfg->search_start));
    if (cfg->plot)
        bench_plot_search(cfg->out, cfg->slo_ms, x->devs, x->tput, x->p95, x->reps, x->n);
    free(xp);
    snprintf(dir, sizeof dir, "%s/search.json", cfg->out);
    int rc = json_dump_file(s, dir, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    json_decref(s);
    if (rc != 0) {
        fprintf(stderr, "serval-bench: cannot write %s\n", dir);
        return 1;
    }
    printf("serval-bench search: developers at p95 keystroke-to-suggestion <= %.0f ms: mean %.1f, "
           "95%% CI [%.1f, %.1f] over %d searches\n",
           cfg->slo_ms, mean, mean - half, mean + half, reps);
    return 0;
}

#define SWEEP_MAX 256

int bench_sweep(const bench_cfg *cfg, const bench_corpus *corpus)
{
    bool dev = cfg->mode == BENCH_MODE_DEVELOPER, rate = !dev && cfg->rate > 0;
    const char *what = dev ? "developers" : rate ? "rate" : "concurrency";
    const char *metric = dev ? "keystroke_to_suggestion_ms" : "e2e_ms";
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/sweep", cfg->out);
    if ((mkdir(cfg->out, 0755) != 0 && errno != EEXIST) ||
        (mkdir(dir, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "serval-bench: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    double load[SWEEP_MAX], tput[SWEEP_MAX], p50[SWEEP_MAX], p95[SWEEP_MAX];
    size_t n = 0;
    json_t *points = json_array();
    for (const char *p = cfg->sweep; p && *p && n < SWEEP_MAX;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v > 0) || (!rate && v != (int)v)) {
            fprintf(stderr, "serval-bench: --sweep %s: loads are positive numbers (whole for %s)\n",
                    cfg->sweep, what);
            json_decref(points);
            return 2;
        }
        bench_cfg c = *cfg;
        char out[4096];
        snprintf(out, sizeof out, "%s/sweep/%s-%g", cfg->out, what, v);
        c.out = out;
        c.plot = false;
        if (dev)
            c.developers = (int)v;
        else if (rate)
            c.rate = v;
        else
            c.concurrency = (int)v;
        fprintf(stderr, "[serval-bench sweep] %s %g\n", what, v);
        bench_headline h;
        if (bench_run_once(&c, corpus, &h) != 0) {
            json_decref(points);
            return 1;
        }
        load[n] = v;
        tput[n] = h.throughput;
        p50[n] = h.lat_p50;
        p95[n] = h.lat_p95;
        json_array_append_new(
            points,
            json_pack("{s:f,s:f,s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:s}", "load", v, "throughput_rps",
                      h.throughput, "p50_ms", h.lat_p50 >= 0 ? json_real(h.lat_p50) : json_null(),
                      "p95_ms", h.lat_p95 >= 0 ? json_real(h.lat_p95) : json_null(), "ttft_p95_ms",
                      h.ttft_p95 >= 0 ? json_real(h.ttft_p95) : json_null(), "requests",
                      (json_int_t)h.requests, "answered", (json_int_t)h.answered, "superseded",
                      (json_int_t)h.superseded, "errors", (json_int_t)h.errors, "dir", out));
        n++;
        p = *end == ',' ? end + 1 : end;
        if (*p)
            usleep(500 * 1000);
    }
    json_t *s = json_pack("{s:s,s:s,s:s,s:o}", "schema", "serval-bench-sweep/1", "load", what,
                          "metric", metric, "points", points);
    snprintf(dir, sizeof dir, "%s/sweep.json", cfg->out);
    int rc = json_dump_file(s, dir, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
    json_decref(s);
    if (rc != 0) {
        fprintf(stderr, "serval-bench: cannot write %s\n", dir);
        return 1;
    }
    if (cfg->plot)
        bench_plot_sweep(cfg->out, metric, load, tput, p50, p95, n);
    return 0;
}
