/* metrics.c — what a Serval server says about a run: its /metrics (Prometheus text, read by
 * main.c before and after the run) parsed, and the difference for summary.json's "server"
 * object: requests the engine ended cancelled, the prompt and generated tokens they cost
 * (wasted), and the abort-to-free histogram (a client's abort to the request's KV blocks
 * freed). Servers without these metrics (llama.cpp's llama-server) give "server": null. */
#include "bench.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ABORT_HIST "serval_request_abort_to_free_seconds"

/* The value of the sample line that starts with `name` followed by a space or '{' (labels are
 * matched as written when name includes them). false when absent. */
static bool sample(const char *text, const char *name, double *v)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, n) != 0 || (p[n] != ' ' && p[n] != '{'))
            continue;
        const char *sp = strchr(p + n, ' ');
        const char *nl = strchr(p, '\n');
        if (!sp || (nl && sp > nl))
            continue;
        char *end;
        double x = strtod(sp + 1, &end);
        if (end == sp + 1)
            continue;
        *v = x;
        return true;
    }
    return false;
}

bool bench_metrics_parse(const char *text, bench_metrics *m)
{
    memset(m, 0, sizeof *m);
    if (!sample(text, ABORT_HIST "_count", &m->abort_count) ||
        !sample(text, ABORT_HIST "_sum", &m->abort_sum_s) ||
        !sample(text, "serval_wasted_prompt_tokens_total", &m->wasted_prompt) ||
        !sample(text, "serval_wasted_generated_tokens_total", &m->wasted_generated) ||
        !sample(text, "serval_engine_requests_cancelled_total", &m->cancelled))
        return false;
    if (!sample(text, "serval_engine_requests_superseded_total", &m->superseded))
        m->superseded = -1; /* servers from before supersede */
    const char *key = ABORT_HIST "_bucket{le=\"";
    size_t kl = strlen(key);
    for (const char *p = strstr(text, key); p && m->n_buckets < BENCH_METRICS_MAX_BUCKETS;
         p = strstr(p + kl, key)) {
        const char *le = p + kl;
        double bound = strncmp(le, "+Inf", 4) == 0 ? 1e300 : strtod(le, NULL);
        const char *sp = strchr(le, ' ');
        if (!sp)
            break;
        m->bucket_le_s[m->n_buckets] = bound;
        m->bucket_cum[m->n_buckets] = strtod(sp + 1, NULL);
        m->n_buckets++;
    }
    m->ok = m->n_buckets > 0;
    return m->ok;
}

/* The q-quantile of a histogram given by cumulative counts at upper bounds (Prometheus's
 * histogram_quantile: linear within the bucket; the highest finite bound past the last). */
static double hist_quantile(const double *le, const double *cum, int n, double q)
{
    double total = cum[n - 1];
    double rank = q * total, prev_le = 0, prev_cum = 0;
    for (int i = 0; i < n; i++) {
        if (cum[i] >= rank) {
            if (le[i] >= 1e300)
                return prev_le;
            double in = cum[i] - prev_cum;
            return in > 0 ? prev_le + (le[i] - prev_le) * (rank - prev_cum) / in : le[i];
        }
        prev_le = le[i] >= 1e300 ? prev_le : le[i];
        prev_cum = cum[i];
    }
    return prev_le;
}

json_t *bench_metrics_delta_json(const bench_metrics *a, const bench_metrics *b)
{
    if (!a->ok || !b->ok || a->n_buckets != b->n_buckets)
        return json_null();
    double n = b->abort_count - a->abort_count;
    json_t *af = json_null();
    if (n > 0) {
        double cum[BENCH_METRICS_MAX_BUCKETS];
        for (int i = 0; i < b->n_buckets; i++)
            cum[i] = b->bucket_cum[i] - a->bucket_cum[i];
        af = json_pack("{s:I,s:f,s:f,s:f,s:f}", "n", (json_int_t)n, "mean",
                       1e3 * (b->abort_sum_s - a->abort_sum_s) / n, "p50",
                       1e3 * hist_quantile(b->bucket_le_s, cum, b->n_buckets, 0.50), "p95",
                       1e3 * hist_quantile(b->bucket_le_s, cum, b->n_buckets, 0.95), "p99",
                       1e3 * hist_quantile(b->bucket_le_s, cum, b->n_buckets, 0.99));
    }
    json_t *sup = a->superseded >= 0 && b->superseded >= 0
                      ? json_integer((json_int_t)(b->superseded - a->superseded))
                      : json_null();
    return json_pack("{s:I,s:o,s:I,s:I,s:o}", "requests_cancelled",
                     (json_int_t)(b->cancelled - a->cancelled), "requests_superseded", sup,
                     "wasted_prompt_tokens",
                     (json_int_t)(b->wasted_prompt - a->wasted_prompt), "wasted_generated_tokens",
                     (json_int_t)(b->wasted_generated - a->wasted_generated), "abort_to_free_ms",
                     af);
}
