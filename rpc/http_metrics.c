/* http_metrics.c — the HTTP front end's counters and latency histograms, rendered with the
 * engine's stats as Prometheus text for GET /metrics. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_impl.h"

static const double bounds[HTTP_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                 1, 2.5, 5, 10, 30, 60, 120};
static const int statuses[HTTP_N_STATUS - 1] = {200, 204, 400, 401, 404, 405, 408, 413,
                                                422, 429, 499, 500, 501, 503, 0};

static int status_index(int status)
{
    for (int i = 0; i < HTTP_N_STATUS - 1 && statuses[i]; i++)
        if (statuses[i] == status)
            return i;
    return HTTP_N_STATUS - 1;
}

void http_metrics_init(http_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void http_metrics_destroy(http_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

static void observe(http_hist *h, double v)
{
    int i = 0;
    while (i < HTTP_HIST_BUCKETS && v > bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

void http_metrics_request(http_metrics *m, http_route r, int status, double seconds)
{
    pthread_mutex_lock(&m->mu);
    m->requests[r][status_index(status)]++;
    if (status == 499)
        m->client_disconnects++;
    observe(&m->http_seconds[r], seconds);
    pthread_mutex_unlock(&m->mu);
}

void http_metrics_generation(http_metrics *m, const eng_request_output *o, bool disconnected)
{
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)(o->n_prompt_tokens > 0 ? o->n_prompt_tokens : 0);
    m->cached_tokens += (uint64_t)(o->n_cached_tokens > 0 ? o->n_cached_tokens : 0);
    m->generated_tokens += (uint64_t)(o->n_output_tokens > 0 ? o->n_output_tokens : 0);
    (void)disconnected; /* latency histograms: the engine's (eng_engine_stats) */
    pthread_mutex_unlock(&m->mu);
}

typedef struct out {
    char *buf;
    size_t len, cap;
    bool oom;
} out;

static void put(out *o, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void put(out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = true;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void put_hist(out *o, const char *name, const char *help, const char *labels,
                     const http_hist *h, bool header)
{
    if (header)
        put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < HTTP_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
            (unsigned long long)cum);
    }
    cum += h->counts[HTTP_HIST_BUCKETS];
    put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    put(o, "%s_sum%s%s%s %.6f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "", h->sum);
    put(o, "%s_count%s%s%s %llu\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
        (unsigned long long)h->n);
}

/* One of the engine's histograms (its bounds, ms) in seconds. */
static void put_eng_hist(out *o, const char *name, const char *help, const eng_hist *h)
{
    put(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    int64_t cum = 0;
    for (int i = 0; i < ENG_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        put(o, "%s_bucket{le=\"%g\"} %lld\n", name, eng_hist_bounds_ms[i] / 1e3, (long long)cum);
    }
    cum += h->buckets[ENG_HIST_BUCKETS];
    put(o, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name, (long long)cum,
        name, h->sum_ms / 1e3, name, (long long)h->count);
}

/* Each replica's load, prefix cache and routing (serval_router.h), labelled replica="i";
 * the unlabelled series above are their sums. */
static void put_replicas(out *o, eng_router *rt)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"serval_replica_load", "gauge", "Requests submitted to the replica and not finished."},
        {"serval_replica_running_sequences", "gauge", "Sequences holding KV blocks."},
        {"serval_replica_queue_depth", "gauge", "Requests waiting for the replica."},
        {"serval_replica_in_rotation", "gauge", "1 while the router sends it requests, 0 once "
                                                "it took the replica out."},
        {"serval_replica_prefix_cache_hit_rate", "gauge",
         "Reused prompt tokens / prompt tokens looked up, in the replica's own cache."},
        {"serval_replica_prompt_tokens_cached_total", "counter",
         "Prompt tokens the replica reused from its prefix cache."},
        {"serval_replica_prompt_tokens_computed_total", "counter",
         "Prompt tokens the replica computed."},
        {"serval_replica_requests_routed_total", "counter",
         "Requests the router queued on the replica, by why it was chosen."},
    };
    int n = eng_router_n_replicas(rt);
    eng_router_replica_stats *rs = calloc((size_t)n, sizeof *rs);
    if (!rs) {
        o->oom = true;
        return;
    }
    for (int i = 0; i < n; i++)
        eng_router_replica_stats_get(rt, i, &rs[i]);
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        put(o, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name, fam[f].type);
        for (int i = 0; i < n; i++) {
            const eng_engine_stats *e = &rs[i].engine;
            switch (f) {
            case 0: put(o, "%s{replica=\"%d\"} %d\n", fam[f].name, i, rs[i].load); break;
            case 1: put(o, "%s{replica=\"%d\"} %d\n", fam[f].name, i, e->running); break;
            case 2: put(o, "%s{replica=\"%d\"} %d\n", fam[f].name, i, e->waiting); break;
            case 3: put(o, "%s{replica=\"%d\"} %d\n", fam[f].name, i, rs[i].in_rotation); break;
            case 4:
                put(o, "%s{replica=\"%d\"} %.6f\n", fam[f].name, i, e->prefix_hit_rate);
                break;
            case 5:
                put(o, "%s{replica=\"%d\"} %lld\n", fam[f].name, i,
                    (long long)e->prompt_tokens_cached);
                break;
            case 6:
                put(o, "%s{replica=\"%d\"} %lld\n", fam[f].name, i,
                    (long long)e->prompt_tokens_computed);
                break;
            default:
                for (int w = 0; w < ENG_ROUTE_REASONS; w++)
                    put(o, "%s{replica=\"%d\",reason=\"%s\"} %lld\n", fam[f].name, i,
                        eng_route_reason_str((eng_route_reason)w), (long long)rs[i].routed[w]);
            }
        }
    }
    free(rs);
}

char *http_metrics_render(http_metrics *m, eng_router *rt, int inflight, size_t *len)
{
    eng_engine_stats es;
    eng_router_stats_get(rt, &es);
    out o = {.cap = 16384};
    o.buf = malloc(o.cap);
    if (!o.buf)
        return NULL;
    pthread_mutex_lock(&m->mu);
    http_metrics snap = *m; /* a copy, so rendering runs outside the lock */
    pthread_mutex_unlock(&m->mu);

    put(&o, "# HELP serval_http_requests_total HTTP requests by route and status.\n"
            "# TYPE serval_http_requests_total counter\n");
    for (int r = 0; r < HTTP_ROUTE_COUNT; r++)
        for (int i = 0; i < HTTP_N_STATUS; i++)
            if (snap.requests[r][i]) {
                if (i == HTTP_N_STATUS - 1)
                    put(&o, "serval_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                        http_route_name((http_route)r), (unsigned long long)snap.requests[r][i]);
                else
                    put(&o, "serval_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                        http_route_name((http_route)r), statuses[i],
                        (unsigned long long)snap.requests[r][i]);
            }
    bool first = true;
    for (int r = 0; r < HTTP_ROUTE_COUNT; r++) {
        if (!snap.http_seconds[r].n)
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "route=\"%s\"", http_route_name((http_route)r));
        put_hist(&o, "serval_http_request_duration_seconds",
                 "Time from the request's headers to the end of its response.", labels,
                 &snap.http_seconds[r], first);
        first = false;
    }
    /* The engine's own, so they cover both front ends (gRPC and HTTP). */
    put_eng_hist(&o, "serval_request_queue_seconds",
                 "Engine, finished requests: submit to first scheduled.", &es.queue_hist);
    put_eng_hist(&o, "serval_request_first_token_seconds",
                 "Engine, finished requests: submit to first token.", &es.first_token_hist);
    put_eng_hist(&o, "serval_request_total_seconds",
                 "Engine, finished requests: submit to finish (end to end).", &es.total_hist);
    put_eng_hist(&o, "serval_request_abort_to_free_seconds",
                 "Engine: a client's abort (disconnect, gRPC cancel) to its KV blocks freed.",
                 &es.abort_free_hist);
    put(&o, "# HELP serval_engine_requests_cancelled_total Requests that ended cancelled.\n"
            "# TYPE serval_engine_requests_cancelled_total counter\n"
            "serval_engine_requests_cancelled_total %lld\n", (long long)es.requests_cancelled);
    put(&o, "# HELP serval_wasted_prompt_tokens_total Prompt tokens computed for requests that "
            "ended cancelled or superseded.\n# TYPE serval_wasted_prompt_tokens_total counter\n"
            "serval_wasted_prompt_tokens_total %lld\n", (long long)es.wasted_prompt_tokens);
    put(&o, "# HELP serval_wasted_generated_tokens_total Tokens generated for requests that "
            "ended cancelled or superseded.\n# TYPE serval_wasted_generated_tokens_total counter\n"
            "serval_wasted_generated_tokens_total %lld\n", (long long)es.wasted_generated_tokens);
    put(&o, "# TYPE serval_prompt_tokens_total counter\nserval_prompt_tokens_total %llu\n",
        (unsigned long long)snap.prompt_tokens);
    put(&o, "# TYPE serval_prompt_tokens_cached_total counter\nserval_prompt_tokens_cached_total %llu\n",
        (unsigned long long)snap.cached_tokens);
    put(&o, "# TYPE serval_generated_tokens_total counter\nserval_generated_tokens_total %llu\n",
        (unsigned long long)snap.generated_tokens);
    put(&o, "# TYPE serval_http_client_disconnects_total counter\n"
            "serval_http_client_disconnects_total %llu\n",
        (unsigned long long)snap.client_disconnects);
    put(&o, "# TYPE serval_http_rate_limited_total counter\nserval_http_rate_limited_total %llu\n",
        (unsigned long long)snap.rate_limited);
    put(&o, "# TYPE serval_http_timeouts_total counter\nserval_http_timeouts_total %llu\n",
        (unsigned long long)snap.timeouts);
    put(&o, "# TYPE serval_http_inflight gauge\nserval_http_inflight %d\n", inflight);
    put(&o, "# HELP serval_queue_depth Requests waiting for the engine.\n"
            "# TYPE serval_queue_depth gauge\nserval_queue_depth %d\n", es.waiting);
    put(&o, "# TYPE serval_running_sequences gauge\nserval_running_sequences %d\n", es.running);
    put(&o, "# TYPE serval_kv_blocks_used gauge\nserval_kv_blocks_used %d\n", es.kv_blocks_used);
    put(&o, "# TYPE serval_kv_blocks_total gauge\nserval_kv_blocks_total %d\n", es.kv_blocks_total);
    put(&o, "# TYPE serval_kv_blocks_cached gauge\nserval_kv_blocks_cached %d\n", es.kv_blocks_cached);
    put(&o, "# HELP serval_prefix_cache_hit_rate Reused prompt tokens / prompt tokens looked up.\n"
            "# TYPE serval_prefix_cache_hit_rate gauge\nserval_prefix_cache_hit_rate %.6f\n",
        es.prefix_hit_rate);
    put(&o, "# TYPE serval_engine_requests_rejected_total counter\n"
            "serval_engine_requests_rejected_total %lld\n", (long long)es.requests_rejected);
    put(&o, "# TYPE serval_engine_preemptions_total counter\nserval_engine_preemptions_total %lld\n",
        (long long)es.preemptions);
    put(&o, "# HELP serval_engine_requests_superseded_total Requests ended by a newer request "
            "with the same session key.\n# TYPE serval_engine_requests_superseded_total counter\n"
            "serval_engine_requests_superseded_total %lld\n", (long long)es.requests_superseded);
    put(&o, "# HELP serval_engine_requests_late_total Requests first scheduled after their "
            "deadline (latency schedule).\n# TYPE serval_engine_requests_late_total counter\n"
            "serval_engine_requests_late_total %lld\n", (long long)es.requests_late);
    put(&o, "# TYPE serval_engine_steps_total counter\nserval_engine_steps_total %lld\n",
        (long long)es.steps);
    put(&o, "# TYPE serval_engine_mean_batch_seqs gauge\nserval_engine_mean_batch_seqs %.3f\n",
        es.mean_batch_seqs);
    put(&o, "# TYPE serval_engine_generated_tokens_per_second gauge\n"
            "serval_engine_generated_tokens_per_second %.3f\n", es.gen_tokens_per_s);
    /* speculative decoding (engine/batch/spec.h): acceptance rate = accepted / drafted,
     * tokens per verification pass = pass_tokens / passes */
    put(&o, "# HELP serval_spec_drafted_tokens_total Speculation: tokens drafted from the context.\n"
            "# TYPE serval_spec_drafted_tokens_total counter\nserval_spec_drafted_tokens_total %lld\n",
        (long long)es.spec_drafted);
    put(&o, "# HELP serval_spec_accepted_tokens_total Speculation: drafted tokens the model agreed "
            "with.\n# TYPE serval_spec_accepted_tokens_total counter\n"
            "serval_spec_accepted_tokens_total %lld\n", (long long)es.spec_accepted);
    put(&o, "# HELP serval_spec_verify_passes_total Speculation: verification passes (a request's "
            "step with a draft).\n# TYPE serval_spec_verify_passes_total counter\n"
            "serval_spec_verify_passes_total %lld\n", (long long)es.spec_passes);
    put(&o, "# HELP serval_spec_pass_tokens_total Speculation: tokens verification passes produced "
            "(accepted drafts plus the model's own).\n# TYPE serval_spec_pass_tokens_total counter\n"
            "serval_spec_pass_tokens_total %lld\n", (long long)es.spec_tokens);
    put_replicas(&o, rt);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
