/* report.c — serval-bench's clocks and random numbers, the per-request records, quality
 * against the file, and the outputs: requests.jsonl, summary.json, summary.csv, `compare`. */
#include "bench.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const char *bench_target_name(bench_target t)
{
    static const char *const NAMES[BENCH_TARGET_COUNT] = {
        [BENCH_TARGET_TABBY] = "tabby", [BENCH_TARGET_OPENAI] = "openai",
        [BENCH_TARGET_LLAMACPP] = "llamacpp", [BENCH_TARGET_GRPC] = "grpc",
        [BENCH_TARGET_CHAT] = "openai-chat"};
    return (unsigned)t < BENCH_TARGET_COUNT ? NAMES[t] : "?";
}

/* ---- clocks and random numbers ----------------------------------------------------------- */

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void bench_sleep_until(const bench_run *r, double t_ms)
{
    double left = r->t0 + t_ms - bench_now_ms();
    while (left > 0 && !atomic_load(&r->stop)) {
        double step = left < 100 ? left : 100; /* wake up to notice a stop */
        struct timespec ts = {(time_t)(step / 1e3), (long)(fmod(step, 1e3) * 1e6)};
        nanosleep(&ts, NULL);
        left = r->t0 + t_ms - bench_now_ms();
    }
}

double bench_rand01(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

double bench_rand_exp(uint64_t *s, double mean)
{
    return -mean * log(1.0 - bench_rand01(s));
}

static double rand_normal(uint64_t *s)
{
    double u = 1.0 - bench_rand01(s), v = bench_rand01(s);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Marsaglia–Tsang for Gamma(shape, 1) (shape < 1 boosted with U^(1/shape)), scaled so that
 * the mean is `mean`. */
double bench_rand_gamma(uint64_t *s, double shape, double mean)
{
    double k = shape, boost = 1.0;
    if (k < 1.0) {
        boost = pow(1.0 - bench_rand01(s), 1.0 / k);
        k += 1.0;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rand_normal(s), v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = bench_rand01(s);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v * boost * mean / shape;
    }
}

/* ---- records and quality ----------------------------------------------------------------- */

bool bench_record(bench_run *r, const bench_rec *rec)
{
    pthread_mutex_lock(&r->lock);
    if (r->n_recs == r->cap_recs) {
        size_t cap = r->cap_recs ? r->cap_recs * 2 : 1024;
        bench_rec *p = realloc(r->recs, cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&r->lock);
            free(rec->error);
            free(rec->suggestion);
            free(rec->expected);
            return false;
        }
        r->recs = p;
        r->cap_recs = cap;
    }
    r->recs[r->n_recs++] = *rec;
    pthread_mutex_unlock(&r->lock);
    return true;
}

#define QUALITY_MAX 512 /* characters compared; longer suggestions are cut */

static size_t rtrim(const char *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
    return n;
}

static size_t levenshtein(const char *a, size_t n, const char *b, size_t m)
{
    size_t row[QUALITY_MAX + 1];
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

void bench_quality(const char *s, const char *truth, size_t truth_len, double *em, double *es,
                   bool *accept, size_t *ref_len)
{
    size_t n = rtrim(s, strlen(s));
    *accept = n > 0 && strlen(s) <= truth_len && memcmp(s, truth, strlen(s)) == 0;
    *ref_len = 0;
    if (n == 0) { /* no suggestion: nothing to score */
        *em = *es = -1;
        return;
    }
    size_t lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += s[i] == '\n';
    size_t m = 0;
    for (size_t seen = 0; m < truth_len; m++)
        if (truth[m] == '\n' && seen++ == lines)
            break;
    m = rtrim(truth, m);
    *ref_len = m;
    *em = n == m && memcmp(s, truth, n) == 0;
    size_t nn = n < QUALITY_MAX ? n : QUALITY_MAX, mm = m < QUALITY_MAX ? m : QUALITY_MAX;
    size_t big = nn > mm ? nn : mm;
    *es = big ? 1.0 - (double)levenshtein(s, nn, truth, mm) / (double)big : 1.0;
}

/* ---- summary ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    double k = p * (double)(n - 1);
    size_t i = (size_t)k;
    return i + 1 < n ? v[i] + (k - (double)i) * (v[i + 1] - v[i]) : v[n - 1];
}

/* {"n", "mean", "p50", "p90", "p95", "p99", "max"} of v (sorted here); nulls when n = 0. */
static json_t *dist(double *v, size_t n)
{
    if (!n)
        return json_pack("{s:i,s:n,s:n,s:n,s:n,s:n,s:n}", "n", 0, "mean", "p50", "p90", "p95",
                         "p99", "max");
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    return json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "n", (json_int_t)n, "mean", sum / (double)n,
                     "p50", pct(v, n, 0.5), "p90", pct(v, n, 0.9), "p95", pct(v, n, 0.95), "p99",
                     pct(v, n, 0.99), "max", v[n - 1]);
}

static json_t *num_or_null(bool ok, double v)
{
    return ok ? json_real(v) : json_null();
}

static const char *OUTCOME[] = {"answered", "superseded", "error"};

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : (c & 0xF0) == 0xE0 ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!k || k > n)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] > 0x8F))
        return 0; /* overlong, surrogate, above U+10FFFF */
    return k;
}

/* s as a JSON string; bytes that are not UTF-8 become U+FFFD and set *bad (a server that
 * sends them is itself a finding). */
static json_t *json_text(const char *s, bool *bad)
{
    size_t n = strlen(s);
    char *o = malloc(3 * n + 1), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(q, s + i, k);
            q += k;
            i += k;
        } else {
            memcpy(q, "\xEF\xBF\xBD", 3);
            q += 3;
            i++;
            *bad = true;
        }
    }
    json_t *j = json_stringn(o, (size_t)(q - o));
    free(o);
    return j;
}

static int write_jsonl(bench_run *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_rec *x = &r->recs[i];
        json_t *j = json_pack(
            "{s:I,s:i,s:s,s:i,s:f,s:f,s:f,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:i,s:s?,s:s?,s:o}",
            "index", (json_int_t)i, "session", x->session, "outcome", OUTCOME[x->outcome], "status",
            x->status, "t_key_ms", x->t_key, "t_intended_ms", x->t_intended, "t_sent_ms", x->t_sent,
            "ttft_ms", num_or_null(x->ttft_ms >= 0, x->ttft_ms), "e2e_ms",
            num_or_null(x->e2e_ms >= 0, x->e2e_ms), "keystroke_to_suggestion_ms",
            num_or_null(x->k2s_ms >= 0, x->k2s_ms), "superseded",
            json_boolean(x->outcome == BENCH_OUTCOME_SUPERSEDED), "prompt_tokens",
            x->prompt_tokens >= 0 ? json_integer(x->prompt_tokens) : json_null(),
            "completion_tokens",
            x->completion_tokens >= 0 ? json_integer(x->completion_tokens) : json_null(),
            "exact_match", x->em >= 0 ? json_boolean(x->em > 0) : json_null(), "accepted",
            x->accepted, "prompt_chars", x->prompt_chars, "file", x->file, "id",
            x->id[0] ? x->id : NULL, "error", x->error ? json_string(x->error) : json_null());
        if (j && x->es >= 0)
            json_object_set_new(j, "edit_similarity", json_real(x->es));
        bool bad = false;
        if (j && x->suggestion)
            json_object_set_new(j, "suggestion", json_text(x->suggestion, &bad));
        if (j && bad)
            json_object_set_new(j, "suggestion_not_utf8", json_true());
        if (j && x->expected)
            json_object_set_new(j, "expected", json_string(x->expected));
        if (j && x->cached_tokens >= 0)
            json_object_set_new(j, "cached_tokens", json_integer(x->cached_tokens));
        if (j && x->server_superseded)
            json_object_set_new(j, "superseded_by_server", json_true());
        if (j && x->request_id[0])
            json_object_set_new(j, "server_request_id", json_string(x->request_id));
        if (j && x->server_queue_ms >= 0)
            json_object_set_new(j, "server_queue_ms", json_real(x->server_queue_ms));
        if (j && x->server_total_ms >= 0)
            json_object_set_new(j, "server_total_ms", json_real(x->server_total_ms));
        if (j && x->group >= 0)
            json_object_set_new(j, "group", json_integer(x->group));
        if (j && x->itl_ms >= 0)
            json_object_set_new(j, "itl_ms", json_real(x->itl_ms));
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!s) {
            fclose(f);
            return -1;
        }
        fprintf(f, "%s\n", s);
        free(s);
    }
    return fclose(f);
}

static void csv_cell(FILE *f, bool first, const char *key, const char *k2, json_t *v, int row)
{
    if (!first)
        fputc(',', f);
    if (row == 0)
        fprintf(f, k2 ? "%s.%s" : "%s", key, k2);
    else if (json_is_number(v))
        fprintf(f, "%.6g", json_number_value(v));
    else if (json_is_string(v))
        fputs(json_string_value(v), f); /* keys' values hold no commas or quotes */
    else if (json_is_boolean(v))
        fputc(json_is_true(v) ? '1' : '0', f);
}

/* summary.csv: one header row of flattened keys ("ttft_ms.p95"), one row of values; empty
 * cells for null; the warnings array is left out (it is in summary.json). */
static int write_csv(json_t *sum, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int row = 0; row < 2; row++) {
        const char *key, *k2;
        json_t *v, *v2;
        bool first = true;
        json_object_foreach(sum, key, v) {
            if (json_is_array(v))
                continue;
            if (!json_is_object(v)) {
                csv_cell(f, first, key, NULL, v, row);
                first = false;
                continue;
            }
            json_object_foreach(v, k2, v2) {
                csv_cell(f, first, key, k2, v2, row);
                first = false;
            }
        }
        fputc('\n', f);
    }
    return fclose(f);
}

static json_t *config_json(const bench_cfg *c)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:i,s:i,s:f,s:f,s:f,s:f,s:I}", "target",
                          bench_target_name(c->target), "mode",
                          c->mode == BENCH_MODE_DEVELOPER ? "developer" : "classic", "host",
                          c->host, "port", c->port, "developers", c->developers, "duration_s",
                          c->duration_s, "session_s", c->session_s, "keystroke_ms", c->keystroke_ms,
                          "debounce_ms", c->debounce_ms, "seed", (json_int_t)c->seed);
    if (j && c->mode == BENCH_MODE_CLASSIC)
        json_object_update_new(j, json_pack("{s:i,s:f,s:s,s:i,s:i,s:b,s:i,s:i}", "concurrency",
                                            c->concurrency, "rate", c->rate, "arrival",
                                            c->gamma ? "gamma" : "poisson", "prompt_chars",
                                            c->prompt_chars, "max_tokens", c->max_tokens, "stream",
                                            c->stream, "prefix_groups", c->prefix_groups,
                                            "shared_prefix_chars", c->shared_chars));
    return j;
}

/* What the summary counts over the records; the latency arrays are malloc'd, n_recs long. */
typedef struct tally {
    double *ttft, *e2e, *k2s, *lag, *itl;
    size_t nt, ne, nk, nl, ni;
    size_t cnt[3], cut, good, usage, scored, exact, accepted;
    double es_sum;
    long long ptok, ctok, cached, cached_of;
} tally;

static void tally_free(tally *t)
{
    free(t->ttft);
    free(t->e2e);
    free(t->k2s);
    free(t->lag);
    free(t->itl);
}

static bool tally_records(const bench_run *r, tally *t)
{
    const bench_cfg *cfg = r->cfg;
    size_t n = r->n_recs + 1;
    memset(t, 0, sizeof *t);
    t->ttft = malloc(n * sizeof(double));
    t->e2e = malloc(n * sizeof(double));
    t->k2s = malloc(n * sizeof(double));
    t->lag = malloc(n * sizeof(double));
    t->itl = malloc(n * sizeof(double));
    if (!t->ttft || !t->e2e || !t->k2s || !t->lag || !t->itl) {
        tally_free(t);
        return false;
    }
    bool dev = cfg->mode == BENCH_MODE_DEVELOPER;
    for (size_t i = 0; i < r->n_recs; i++) {
        const bench_rec *x = &r->recs[i];
        t->cnt[x->outcome]++;
        t->lag[t->nl++] = x->t_sent - x->t_intended;
        if (x->error && strncmp(x->error, "cut off", 7) == 0)
            t->cut++;
        if (x->outcome != BENCH_OUTCOME_ANSWERED)
            continue;
        if (x->ttft_ms >= 0)
            t->ttft[t->nt++] = x->ttft_ms;
        t->e2e[t->ne++] = x->e2e_ms;
        if (x->itl_ms >= 0)
            t->itl[t->ni++] = x->itl_ms;
        t->k2s[t->nk++] = x->k2s_ms;
        if ((dev ? x->k2s_ms : x->e2e_ms) <= cfg->slo_ms)
            t->good++;
        if (x->completion_tokens >= 0) {
            t->usage++;
            t->ctok += x->completion_tokens;
            t->ptok += x->prompt_tokens > 0 ? x->prompt_tokens : 0;
        }
        if (x->cached_tokens >= 0 && x->prompt_tokens > 0) {
            t->cached += x->cached_tokens;
            t->cached_of += x->prompt_tokens;
        }
        if (x->em >= 0) {
            t->scored++;
            t->exact += x->em > 0;
            t->es_sum += x->es;
        }
        t->accepted += x->accepted;
    }
    return true;
}

/* a / b as a JSON number, null when b is 0. */
static json_t *ratio(double a, double b)
{
    return b != 0 ? json_real(a / b) : json_null();
}

/* summary.json's object (see bench/README.md for the keys). */
static json_t *summary_build(const bench_run *r, tally *t, double wall_s, double cpu_s)
{
    const bench_cfg *cfg = r->cfg;
    bool dev = cfg->mode == BENCH_MODE_DEVELOPER;
    double n = (double)r->n_recs, dur = cfg->duration_s;
    json_t *lagd = dist(t->lag, t->nl);
    double lag_p99 = t->nl ? pct(t->lag, t->nl, 0.99) : 0; /* sorted by dist */
    double cpu_frac = wall_s > 0 ? cpu_s / wall_s : 0;
    json_t *warnings = json_array();
    if (cpu_frac > 0.5)
        json_array_append_new(warnings, json_sprintf(
            "the client used %.0f%% of a core: on a shared machine it competes with the server "
            "(the client may be the bottleneck)", 100 * cpu_frac));
    if (lag_p99 > 20)
        json_array_append_new(warnings, json_sprintf(
            "p99 send lag %.1f ms: the client sent late (the client is the bottleneck; latencies "
            "still count from the intended time)", lag_p99));
    double answered = (double)t->cnt[BENCH_OUTCOME_ANSWERED];
    double non_sup = answered + (double)t->cnt[BENCH_OUTCOME_ERROR];
    json_t *s =
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f}", "schema", "serval-bench/1",
                  "requests", (json_int_t)r->n_recs, "answered", (json_int_t)t->cnt[0],
                  "superseded", (json_int_t)t->cnt[1], "errors", (json_int_t)t->cnt[2], "cut_off",
                  (json_int_t)t->cut, "superseded_fraction", n ? (double)t->cnt[1] / n : 0.0,
                  "error_fraction", n ? (double)t->cnt[2] / n : 0.0, "duration_s", dur, "wall_s",
                  wall_s, "throughput_rps", answered / dur);
    json_object_set_new(s, "requests_per_s", json_real(n / dur));
    json_object_set_new(s, "ttft_ms", dist(t->ttft, t->nt));
    json_object_set_new(s, "e2e_ms", dist(t->e2e, t->ne));
    json_object_set_new(s, "keystroke_to_suggestion_ms", dist(t->k2s, t->nk));
    json_object_set_new(s, "itl_ms", dist(t->itl, t->ni));
    json_object_set_new(s, "send_lag_ms", lagd);
    json_object_set_new(s, "slo_ms", json_real(cfg->slo_ms));
    json_object_set_new(s, "slo_metric",
                        json_string(dev ? "keystroke_to_suggestion_ms" : "e2e_ms"));
    json_object_set_new(s, "goodput_rps", json_real((double)t->good / dur));
    json_object_set_new(s, "slo_attainment", ratio((double)t->good, non_sup));
    json_object_set_new(s, "usage_reported", json_integer((json_int_t)t->usage));
    json_object_set_new(s, "prompt_tokens", t->usage ? json_integer(t->ptok) : json_null());
    json_object_set_new(s, "completion_tokens", t->usage ? json_integer(t->ctok) : json_null());
    json_object_set_new(s, "cached_tokens", t->cached_of ? json_integer(t->cached) : json_null());
    json_object_set_new(s, "prefix_cache_hit_rate", ratio((double)t->cached, (double)t->cached_of));
    json_object_set_new(s, "output_tokens_per_s", num_or_null(t->usage > 0, (double)t->ctok / dur));
    json_object_set_new(s, "suggestions_scored", json_integer((json_int_t)t->scored));
    json_object_set_new(s, "exact_match", ratio((double)t->exact, (double)t->scored));
    json_object_set_new(s, "edit_similarity", ratio(t->es_sum, (double)t->scored));
    json_object_set_new(s, "accepted", json_integer((json_int_t)t->accepted));
    json_object_set_new(s, "events_sent", json_integer(atomic_load(&r->events_sent)));
    json_object_set_new(s, "events_failed", json_integer(atomic_load(&r->events_failed)));
    json_object_set_new(s, "client_cpu_s", json_real(cpu_s));
    json_object_set_new(s, "client_cpu_fraction", json_real(cpu_frac));
    json_object_set_new(s, "client_bottleneck", json_boolean(json_array_size(warnings) > 0));
    json_object_set_new(s, "warnings", warnings);
    json_object_set_new(s, "server",
                        bench_metrics_delta_json(&r->metrics_before, &r->metrics_after));
    json_object_set_new(s, "config", config_json(cfg));
    return s;
}

/* obj.key.sub as a number, or -1 when it is null or absent. */
static double get2(json_t *obj, const char *key, const char *sub)
{
    json_t *v = json_object_get(json_object_get(obj, key), sub);
    return json_is_number(v) ? json_number_value(v) : -1;
}

int bench_report(bench_run *r, double wall_s, double cpu_s, bench_headline *h)
{
    const bench_cfg *cfg = r->cfg;
    tally t;
    if (!tally_records(r, &t)) {
        fprintf(stderr, "serval-bench: out of memory\n");
        return 1;
    }
    json_t *s = summary_build(r, &t, wall_s, cpu_s);
    tally_free(&t);
    if (!s) {
        fprintf(stderr, "serval-bench: out of memory\n");
        return 1;
    }
    char path[4096];
    int rc = 0;
    if (mkdir(cfg->out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "serval-bench: cannot create --out %s: %s\n", cfg->out, strerror(errno));
        json_decref(s);
        return 1;
    }
    snprintf(path, sizeof path, "%s/requests.jsonl", cfg->out);
    if (write_jsonl(r, path) != 0)
        rc = 1;
    snprintf(path, sizeof path, "%s/summary.json", cfg->out);
    if (rc == 0 &&
        json_dump_file(s, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8)) != 0)
        rc = 1;
    snprintf(path, sizeof path, "%s/summary.csv", cfg->out);
    if (rc == 0 && write_csv(s, path) != 0)
        rc = 1;
    if (rc)
        fprintf(stderr, "serval-bench: cannot write %s: %s\n", path, strerror(errno));
    bool dev = cfg->mode == BENCH_MODE_DEVELOPER;
    const char *metric = dev ? "keystroke_to_suggestion_ms" : "e2e_ms";
    size_t answered = t.cnt[0];
    double tput = (double)answered / cfg->duration_s;
    if (h)
        *h = (bench_headline){r->n_recs,
                              answered,
                              t.cnt[1],
                              t.cnt[2],
                              get2(s, "keystroke_to_suggestion_ms", "p95"),
                              tput,
                              get2(s, metric, "p50"),
                              get2(s, metric, "p95"),
                              get2(s, "ttft_ms", "p95")};
    char lat[96] = "no answers";
    if (answered)
        snprintf(lat, sizeof lat, "p50 %.0f p95 %.0f p99 %.0f ms", get2(s, metric, "p50"),
                 get2(s, metric, "p95"), get2(s, metric, "p99"));
    json_t *em = json_object_get(s, "exact_match");
    printf("serval-bench: %zu requests (%zu answered, %zu superseded, %zu errors) in %.1f s; "
           "%.2f answered/s; %s %s; exact match %.2f; client CPU %.0f%%\n",
           r->n_recs, answered, t.cnt[1], t.cnt[2], cfg->duration_s, tput,
           dev ? "keystroke-to-suggestion" : "e2e", lat,
           json_is_number(em) ? json_number_value(em) : 0.0,
           100 * (wall_s > 0 ? cpu_s / wall_s : 0));
    json_t *warnings = json_object_get(s, "warnings");
    for (size_t i = 0; i < json_array_size(warnings); i++)
        fprintf(stderr, "serval-bench: warning: %s\n",
                json_string_value(json_array_get(warnings, i)));
    json_decref(s);
    return rc;
}

/* ---- compare ----------------------------------------------------------------------------- */

static void compare_obj(const char *prefix, json_t *a, json_t *b)
{
    const char *key;
    json_t *va;
    json_object_foreach(a, key, va) {
        json_t *vb = json_object_get(b, key);
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, key);
        if (json_is_object(va) && json_is_object(vb) && strcmp(key, "config") != 0) {
            char p2[300];
            snprintf(p2, sizeof p2, "%s.", name);
            compare_obj(p2, va, vb);
        } else if (json_is_number(va) && json_is_number(vb)) {
            double x = json_number_value(va), y = json_number_value(vb);
            if (x != 0)
                printf("%-40s %14.4g %14.4g %9.3fx\n", name, x, y, y / x);
            else
                printf("%-40s %14.4g %14.4g %10s\n", name, x, y, y == 0 ? "=" : "n/a");
        }
    }
}

int bench_compare(const char *a, const char *b)
{
    json_error_t e;
    json_t *ja = json_load_file(a, 0, &e);
    if (!ja) {
        fprintf(stderr, "serval-bench compare: %s: %s (line %d)\n", a, e.text, e.line);
        return 1;
    }
    json_t *jb = json_load_file(b, 0, &e);
    if (!jb) {
        fprintf(stderr, "serval-bench compare: %s: %s (line %d)\n", b, e.text, e.line);
        json_decref(ja);
        return 1;
    }
    printf("%-40s %14s %14s %10s\n", "key", "A", "B", "B/A");
    compare_obj("", ja, jb);
    json_decref(ja);
    json_decref(jb);
    return 0;
}
