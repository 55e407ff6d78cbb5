/* http_status.c — the administrator's status page: GET /v1/status (JSON: model, backend,
 * devices and memory, engine load, latency percentiles per 10 s over the last 10 minutes
 * (from the engine's histograms, sampled once a second: every front end's requests),
 * indexed repositories, Tabby-style usage per user per day from the /v1/events files) and
 * GET / (one self-contained HTML page drawing that JSON, which it carries inline: no external
 * asset, no second request, so it works with a token or from loopback alike). Also the
 * placeholder listener `serve` runs on the HTTP port while the model loads: every request,
 * health probes included, gets 503 and "starting". */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <unistd.h>

#include "http_impl.h"

#define STATUS_BUCKET_S 10
#define STATUS_N_BUCKETS 60  /* 10 minutes */
#define STATUS_SAMPLE_MS 1000 /* the sampler's period */
#define STATUS_USAGE_DAYS 7
#define STATUS_MAX_USERS 256

/* The engine's cumulative counters at one moment: its latency histograms count every request
 * it finished, whichever front end sent it (HTTP or gRPC, streamed or not), the same numbers
 * /metrics exports. A time slot's latencies are the difference of two of these. */
typedef struct status_snap {
    int64_t total[ENG_HIST_BUCKETS + 1];
    int64_t first[ENG_HIST_BUCKETS + 1];
    int64_t finished, tokens;
} status_snap;

typedef struct status_bucket {
    long long slot;          /* unix seconds / STATUS_BUCKET_S; -1: empty */
    status_snap start, end;  /* the first and the last sample taken in this slot */
    int max_running, max_waiting;
} status_bucket;

struct http_status {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    pthread_t sampler;
    bool have_sampler;
    eng_router *router;
    status_bucket b[STATUS_N_BUCKETS];
};

static void snap_take(eng_router *rt, status_snap *sn, eng_engine_stats *es)
{
    eng_router_stats_get(rt, es); /* every replica's, histograms merged */
    memcpy(sn->total, es->total_hist.buckets, sizeof sn->total);
    memcpy(sn->first, es->first_token_hist.buckets, sizeof sn->first);
    sn->finished = es->total_hist.count;
    sn->tokens = es->tokens_generated;
}

/* Records one sample in the current slot (a new slot starts from it). Takes mu. */
static void sample(struct http_status *st)
{
    status_snap sn;
    eng_engine_stats es;
    snap_take(st->router, &sn, &es);
    long long slot = (long long)time(NULL) / STATUS_BUCKET_S;
    pthread_mutex_lock(&st->mu);
    status_bucket *b = &st->b[slot % STATUS_N_BUCKETS];
    if (b->slot != slot) {
        memset(b, 0, sizeof *b);
        b->slot = slot;
        b->start = sn;
    }
    b->end = sn;
    if (es.running > b->max_running) b->max_running = es.running;
    if (es.waiting > b->max_waiting) b->max_waiting = es.waiting;
    pthread_mutex_unlock(&st->mu);
}

/* Samples the engine once a second, so load and latency are there for every front end, even
 * when nobody looks at the page. */
static void *sampler_main(void *p)
{
    struct http_status *st = p;
    pthread_mutex_lock(&st->mu);
    while (!st->stop) {
        pthread_mutex_unlock(&st->mu);
        sample(st);
        pthread_mutex_lock(&st->mu);
        struct timespec ts = eng_clock_deadline(STATUS_SAMPLE_MS);
        if (!st->stop) pthread_cond_timedwait(&st->cv, &st->mu, &ts);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

struct http_status *http_status_create(eng_router *rt)
{
    struct http_status *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->router = rt;
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca; /* eng_clock_deadline is on CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < STATUS_N_BUCKETS; i++) st->b[i].slot = -1;
    sample(st); /* the baseline: requests finished before this are not in the window */
    st->have_sampler = pthread_create(&st->sampler, NULL, sampler_main, st) == 0;
    return st;
}

void http_status_free(struct http_status *st)
{
    if (!st) return;
    pthread_mutex_lock(&st->mu);
    st->stop = true;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (st->have_sampler) pthread_join(st->sampler, NULL);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* The p-th percentile of a histogram's counts h[0..ENG_HIST_BUCKETS] (n observations),
 * interpolated linearly within its bucket as Prometheus' histogram_quantile does; the bucket
 * above the last bound reads as that bound. NaN (null in JSON) for n == 0. */
static double hist_pct(const int64_t *h, int64_t n, double p)
{
    if (n <= 0) return NAN;
    double rank = p / 100.0 * (double)n, cum = 0;
    for (int i = 0; i <= ENG_HIST_BUCKETS; i++) {
        if (h[i] <= 0) continue;
        if (cum + (double)h[i] >= rank) {
            if (i == ENG_HIST_BUCKETS) return eng_hist_bounds_ms[ENG_HIST_BUCKETS - 1];
            double lo = i ? eng_hist_bounds_ms[i - 1] : 0, hi = eng_hist_bounds_ms[i];
            double frac = (rank - cum) / (double)h[i];
            return lo + (hi - lo) * (frac < 0 ? 0 : frac);
        }
        cum += (double)h[i];
    }
    return eng_hist_bounds_ms[ENG_HIST_BUCKETS - 1];
}

static json_t *num_or_null(double v) { return isnan(v) ? json_null() : json_real(round(v * 10) / 10); }

/* d = a - b, bucket by bucket (a later than b). */
static void snap_sub(const status_snap *a, const status_snap *b, status_snap *d)
{
    for (int i = 0; i <= ENG_HIST_BUCKETS; i++) {
        d->total[i] = a->total[i] - b->total[i];
        d->first[i] = a->first[i] - b->first[i];
    }
    d->finished = a->finished - b->finished;
    d->tokens = a->tokens - b->tokens;
}

/* The time series, oldest first, and the percentiles over the whole window. A slot counts
 * what finished between the last sample of the slot before it (its own first sample when that
 * one is missing) and its own last sample. */
static void add_series(http_server *s, json_t *root)
{
    struct http_status *st = s->status;
    sample(st); /* now, so the current slot is up to date */
    long long now = (long long)time(NULL) / STATUS_BUCKET_S;
    json_t *pts = json_array();
    status_snap win = {0};
    pthread_mutex_lock(&st->mu);
    const status_bucket *prev = NULL;
    for (long long slot = now - STATUS_N_BUCKETS + 1; slot <= now; slot++) {
        const status_bucket *b = &st->b[slot % STATUS_N_BUCKETS];
        status_snap d = {0};
        int running = 0, waiting = 0;
        if (b->slot == slot) {
            snap_sub(&b->end, prev ? &prev->end : &b->start, &d);
            running = b->max_running, waiting = b->max_waiting;
            prev = b;
        } else {
            prev = NULL;
        }
        for (int i = 0; i <= ENG_HIST_BUCKETS; i++)
            win.total[i] += d.total[i], win.first[i] += d.first[i];
        win.finished += d.finished;
        json_array_append_new(pts, json_pack(
            "{s:I,s:I,s:o,s:o,s:o,s:o,s:i,s:i,s:I}", "t", (json_int_t)(slot * STATUS_BUCKET_S),
            "requests", (json_int_t)d.finished, "p50_ms", num_or_null(hist_pct(d.total, d.finished, 50)),
            "p95_ms", num_or_null(hist_pct(d.total, d.finished, 95)),
            "p99_ms", num_or_null(hist_pct(d.total, d.finished, 99)),
            "first_token_p50_ms", num_or_null(hist_pct(d.first, d.finished, 50)),
            "running", running, "waiting", waiting, "generated_tokens", (json_int_t)d.tokens));
    }
    pthread_mutex_unlock(&st->mu);
    json_object_set_new(root, "series", json_pack("{s:i,s:i,s:o}", "bucket_s", STATUS_BUCKET_S,
                                                  "window_s", STATUS_BUCKET_S * STATUS_N_BUCKETS,
                                                  "points", pts));
    json_t *bounds = json_array();
    for (int i = 0; i < ENG_HIST_BUCKETS; i++)
        json_array_append_new(bounds, json_real(eng_hist_bounds_ms[i]));
    json_object_set_new(root, "latency_ms", json_pack(
        "{s:I,s:o,s:o,s:o,s:o,s:s,s:o}", "requests", (json_int_t)win.finished,
        "p50", num_or_null(hist_pct(win.total, win.finished, 50)),
        "p95", num_or_null(hist_pct(win.total, win.finished, 95)),
        "p99", num_or_null(hist_pct(win.total, win.finished, 99)),
        "first_token_p50", num_or_null(hist_pct(win.first, win.finished, 50)),
        "source", "the engine's histograms: every request it finished (stop or length), HTTP "
                  "and gRPC, streamed or not; interpolated within buckets",
        "bucket_bounds_ms", bounds));
}

typedef struct usage_row {
    char day[16];
    char user[RPC_TOKEN_NAME_MAX + 1];
    long long shown, accepted;
} usage_row;

/* One events file: counts "view" (shown) and "select" (accepted) per user. */
static void usage_file(const char *path, const char *day, usage_row *rows, int *n)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[HTTP_EVENT_MAX_BYTES + 256];
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(json_object_get(j, "event"), "type"));
        const char *user = json_string_value(json_object_get(j, "user"));
        if (!user) user = "unknown"; /* written before events carried the token's name */
        int view = type && !strcmp(type, "view"), sel = type && !strcmp(type, "select");
        if (view || sel) {
            int i = 0;
            while (i < *n && (strcmp(rows[i].day, day) || strcmp(rows[i].user, user))) i++;
            if (i == *n && *n < STATUS_MAX_USERS * STATUS_USAGE_DAYS) {
                rows[i] = (usage_row){0};
                snprintf(rows[i].day, sizeof rows[i].day, "%.10s", day);
                snprintf(rows[i].user, sizeof rows[i].user, "%s", user);
                (*n)++;
            }
            if (i < *n) rows[i].shown += view, rows[i].accepted += sel;
        }
        json_decref(j);
    }
    fclose(f);
}

/* Usage over the last STATUS_USAGE_DAYS days (UTC), newest day first. */
static json_t *usage_json(http_server *s)
{
    usage_row *rows = calloc(STATUS_MAX_USERS * STATUS_USAGE_DAYS, sizeof *rows);
    json_t *arr = json_array();
    if (!rows) return arr;
    int n = 0;
    time_t now = time(NULL);
    pthread_mutex_lock(&s->events_mu); /* no half-written line */
    for (int d = 0; d < STATUS_USAGE_DAYS; d++) {
        time_t t = now - (time_t)d * 86400;
        struct tm tm;
        gmtime_r(&t, &tm);
        char day[48], path[4200];
        snprintf(day, sizeof day, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        snprintf(path, sizeof path, "%s/events/%s.jsonl", s->data_dir, day);
        usage_file(path, day, rows, &n);
    }
    pthread_mutex_unlock(&s->events_mu);
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_pack(
            "{s:s,s:s,s:I,s:I,s:o}", "day", rows[i].day, "user", rows[i].user, "shown",
            (json_int_t)rows[i].shown, "accepted", (json_int_t)rows[i].accepted,
            "acceptance_rate", rows[i].shown ? json_real(round(1000.0 * (double)rows[i].accepted /
                                                               (double)rows[i].shown) / 1000.0)
                                             : json_null()));
    free(rows);
    return arr;
}

/* MemTotal / MemAvailable (kB) from /proc/meminfo, the process's RSS from /proc/self/statm. */
static json_t *memory_json(const eng_engine_stats *es, const eng_model *m)
{
    long long total = 0, avail = 0, rss = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        sscanf(line, "MemTotal: %lld kB", &total);
        sscanf(line, "MemAvailable: %lld kB", &avail);
    }
    if (f) fclose(f);
    long long pages = 0;
    if ((f = fopen("/proc/self/statm", "r"))) {
        long long size_pages = 0;
        if (fscanf(f, "%lld %lld", &size_pages, &pages) != 2) pages = 0;
        fclose(f);
    }
    rss = pages * (long long)sysconf(_SC_PAGESIZE);
    return json_pack("{s:I,s:I,s:I,s:I,s:i,s:i,s:i,s:i,s:i}", "host_total_bytes",
                     (json_int_t)total * 1024, "host_available_bytes", (json_int_t)avail * 1024,
                     "process_rss_bytes", (json_int_t)rss, "weight_bytes",
                     (json_int_t)eng_model_weight_bytes(m), "kv_blocks_total", es->kv_blocks_total,
                     "kv_blocks_used", es->kv_blocks_used, "kv_blocks_free", es->kv_blocks_free,
                     "kv_blocks_cached", es->kv_blocks_cached, "kv_block_size", es->block_size);
}

/* Each indexed repository and how fresh it is: when its last indexing run finished (UTC and
 * seconds ago; null when none has), at which commit, how many files. */
static void add_repositories(idx_index *ix, json_t *arr, time_t now)
{
    enum { MAX_LISTED = 64 };
    idx_repo_info *info = calloc(MAX_LISTED, sizeof *info);
    if (!info)
        return;
    size_t n = idx_repos_get(ix, info, MAX_LISTED);
    for (size_t i = 0; i < n && i < MAX_LISTED; i++) {
        const idx_repo_info *r = &info[i];
        char when[32] = "";
        struct tm tm;
        time_t at = (time_t)r->indexed_at;
        if (r->indexed_at > 0 && gmtime_r(&at, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_array_append_new(arr, json_pack(
            "{s:s,s:s,s:s,s:o,s:o,s:I}", "name", r->git_url, "root", r->root, "commit", r->commit,
            "indexed_at", r->indexed_at > 0 ? json_string(when) : json_null(), "age_s",
            r->indexed_at > 0 ? json_integer((json_int_t)(now - at)) : json_null(), "files",
            (json_int_t)r->files));
    }
    free(info);
}

static json_t *status_json(http_server *s)
{
    eng_engine_stats es;
    eng_router_stats_get(s->router, &es); /* load and KV blocks: every replica's */
    const eng_model *m = eng_engine_model(s->engine);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *root = json_pack(
        "{s:I,s:s,s:{s:s,s:s,s:i,s:i},s:s,s:[{s:s,s:s,s:i}],s:o,s:{s:i,s:i,s:i,s:f,s:f,s:I,s:I,"
        "s:I,s:b},s:[],s:s,s:o,s:I}",
        "time_ms", (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "version", s->version,
        "model", "name", s->model_name, "architecture", eng_model_arch_name(m), "layers",
        eng_model_n_layer(m), "context", eng_engine_max_seq_len(s->engine), "backend", s->device,
        "devices", "kind", "cpu", "name", s->cpu_info, "cores",
        (int)sysconf(_SC_NPROCESSORS_ONLN), "memory", memory_json(&es, m), "engine", "running",
        es.running, "waiting", es.waiting, "inflight_http", atomic_load(&s->inflight),
        "gen_tokens_per_s", es.gen_tokens_per_s, "mean_step_ms", es.mean_step_ms,
        "requests_finished", (json_int_t)es.requests_finished, "requests_rejected",
        (json_int_t)es.requests_rejected, "tokens_generated", (json_int_t)es.tokens_generated,
        "draining", atomic_load(&s->draining), "repositories", "indexer",
        s->cfg.index ? "no repository has been indexed yet"
                     : "no repository is indexed (serve --repo, or repos in the config file)",
        "usage", usage_json(s), "tokens",
        (json_int_t)rpc_auth_n_tokens(s->auth));
    if (root)
        json_object_set_new(json_object_get(root, "engine"), "replicas",
                            json_integer(eng_router_n_replicas(s->router)));
    if (root && s->cfg.index)
        add_repositories(s->cfg.index, json_object_get(root, "repositories"), ts.tv_sec);
    if (root && s->cfg.index) {
        idx_totals t;
        idx_totals_get(s->cfg.index, &t);
        json_object_set_new(root, "index", json_pack(
            "{s:I,s:I,s:I,s:I,s:b}", "repositories", (json_int_t)t.repos, "files",
            (json_int_t)t.files, "chunks", (json_int_t)t.chunks, "vectors",
            (json_int_t)t.vectors_in_faiss, "approximate", t.approximate));
    }
    http_gpu gpus[16];
    char driver[80];
    int n_gpus = root ? http_gpus_get(gpus, 16, driver, sizeof driver) : 0;
    for (int i = 0; i < n_gpus; i++)
        json_array_append_new(json_object_get(root, "devices"), json_pack(
            "{s:s,s:i,s:s,s:I,s:I,s:i,s:s}", "kind", "gpu", "index", gpus[i].index, "name",
            gpus[i].name, "memory_total_bytes", (json_int_t)gpus[i].mem_total,
            "memory_used_bytes", (json_int_t)gpus[i].mem_used, "utilization_pct",
            gpus[i].util_pct, "driver", driver));
    if (root && s->status) add_series(s, root);
    return root;
}

enum MHD_Result http_route_status_json(http_req *r, json_t *body)
{
    (void)body;
    json_t *j = status_json(r->s);
    if (!j) return http_reply_error(r, 500, "server_error", "out of memory");
    return http_reply_json(r, 200, j);
}

/* The page: CSS and JS inline, the JSON in a <script type="application/json"> (slashes
 * escaped, so no value can close the element). Everything is drawn by the script from that
 * one object, so the page shows exactly what /v1/status said at that moment. */
static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
    "<title>Serval status</title><style>\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}"
    "header{background:#1d3557;color:#fff;padding:12px 24px}header h1{font-size:18px;margin:0}"
    "main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;padding:16px 24px}"
    "section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px}"
    "h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}"
    "td,th{text-align:left;padding:3px 8px 3px 0;border-bottom:1px solid #eef0f3}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#6b7480}"
    "svg{width:100%;height:180px}.legend span{margin-right:12px}.wide{grid-column:1/-1}"
    "</style></head><body>\n<header><h1>Serval <span id=\"version\"></span> — "
    "<span id=\"model-name\"></span></h1><div class=\"muted\" id=\"when\"></div></header>\n"
    "<main>\n"
    "<section><h2>Model and backend</h2><table id=\"model\"></table></section>\n"
    "<section><h2>Devices and memory</h2><table id=\"memory\"></table></section>\n"
    "<section><h2>Engine load</h2><table id=\"engine\"></table>"
    "<svg id=\"load-chart\" viewBox=\"0 0 600 180\" role=\"img\" aria-label=\"running and "
    "waiting sequences\"></svg><div class=\"legend\"><span style=\"color:#2a9d8f\">■ running"
    "</span><span style=\"color:#e76f51\">■ waiting</span></div></section>\n"
    "<section><h2>Latency (last 10 minutes)</h2><table id=\"latency\"></table>"
    "<svg id=\"latency-chart\" viewBox=\"0 0 600 180\" role=\"img\" aria-label=\"latency "
    "percentiles\"></svg><div class=\"legend\"><span style=\"color:#457b9d\">— p50</span>"
    "<span style=\"color:#f4a261\">— p95</span><span style=\"color:#e63946\">— p99</span>"
    "</div><div class=\"muted\" id=\"lat-source\"></div></section>\n"
    "<section><h2>Repositories</h2><div id=\"repos\"></div></section>\n"
    "<section class=\"wide\"><h2>Usage per user per day (from /v1/events)</h2>"
    "<table id=\"usage\"><thead><tr><th>Day</th><th>User</th><th>Shown</th><th>Accepted</th>"
    "<th>Acceptance</th></tr></thead><tbody></tbody></table></section>\n"
    "</main>\n<script type=\"application/json\" id=\"status-data\">";

static const char page_tail[] =
    "</script>\n<script>\n"
    "'use strict';\n"
    "const S=JSON.parse(document.getElementById('status-data').textContent);\n"
    "const $=id=>document.getElementById(id);\n"
    "const fmtB=b=>b>=1<<30?(b/(1<<30)).toFixed(2)+' GiB':(b/(1<<20)).toFixed(1)+' MiB';\n"
    "const ms=v=>v===null?'–':v.toFixed(1)+' ms';\n"
    "function rows(t,list){for(const[k,v,id]of list){const tr=t.insertRow();"
    "tr.insertCell().textContent=k;const c=tr.insertCell();c.className='n';c.textContent=v;"
    "if(id)c.id=id;}}\n"
    "$('version').textContent=S.version;$('model-name').textContent=S.model.name;\n"
    "$('when').textContent='as of '+new Date(S.time_ms).toISOString()+' — reload for fresh numbers';\n"
    "rows($('model'),[['model',S.model.name,'m-name'],['architecture',S.model.architecture],"
    "['layers',S.model.layers],['context',S.model.context,'m-context'],['backend',S.backend,'m-backend'],"
    "['named and unnamed tokens',S.tokens,'m-tokens']]);\n"
    "const M=S.memory;\n"
    "rows($('memory'),S.devices.map(d=>d.kind==='gpu'?['gpu '+d.index,d.name+': '+"
    "(d.memory_used_bytes<0?'?':fmtB(d.memory_used_bytes))+' of '+(d.memory_total_bytes<0?'?':"
    "fmtB(d.memory_total_bytes))+(d.utilization_pct<0?'':', '+d.utilization_pct+'% busy'),"
    "'gpu-'+d.index]:[d.kind,d.name+' ('+d.cores+' cores)']).concat(["
    "['weights',fmtB(M.weight_bytes)],['process RSS',fmtB(M.process_rss_bytes)],"
    "['host memory available',fmtB(M.host_available_bytes)+' of '+fmtB(M.host_total_bytes)],"
    "['KV blocks used / total',M.kv_blocks_used+' / '+M.kv_blocks_total,'kv-blocks'],"
    "['KV blocks cached',M.kv_blocks_cached]]));\n"
    "const E=S.engine;\n"
    "rows($('engine'),[['replicas',E.replicas,'e-replicas'],['running',E.running,'e-running'],['waiting',E.waiting,'e-waiting'],"
    "['generated tokens/s',E.gen_tokens_per_s.toFixed(1)],['requests finished',"
    "E.requests_finished,'e-finished'],['state',E.draining?'draining':'serving']]);\n"
    "const L=S.latency_ms;\n"
    "rows($('latency'),[['requests',L.requests,'lat-n'],['p50',ms(L.p50),'lat-p50'],"
    "['p95',ms(L.p95),'lat-p95'],['p99',ms(L.p99),'lat-p99'],['first token p50',ms(L.first_token_p50),'lat-ft50']]);\n"
    "$('lat-source').textContent='From '+L.source+' (bounds '+L.bucket_bounds_ms.join(', ')+' ms).';\n"
    "function chart(svg,series,colors){const P=S.series.points,W=600,H=180,pad=28;"
    "let max=1;for(const k of series)for(const p of P)if(p[k]!==null&&p[k]>max)max=p[k];"
    "const x=i=>pad+(W-pad-4)*i/Math.max(1,P.length-1),y=v=>H-18-(H-30)*v/max;"
    "let out='<line x1=\"'+pad+'\" y1=\"'+(H-18)+'\" x2=\"'+W+'\" y2=\"'+(H-18)+'\" stroke=\"#ccc\"/>'"
    "+'<text x=\"2\" y=\"14\" font-size=\"11\" fill=\"#6b7480\">'+(+max.toFixed(1))+'</text>'"
    "+'<text x=\"2\" y=\"'+(H-4)+'\" font-size=\"11\" fill=\"#6b7480\">-'+S.series.window_s/60+' min</text>'"
    "+'<text x=\"'+(W-30)+'\" y=\"'+(H-4)+'\" font-size=\"11\" fill=\"#6b7480\">now</text>';"
    "series.forEach((k,j)=>{let d='';P.forEach((p,i)=>{if(p[k]===null)return;"
    "d+=(d?'L':'M')+x(i).toFixed(1)+' '+y(p[k]).toFixed(1);});"
    "if(d)out+='<path class=\"line-'+k+'\" d=\"'+d+'\" fill=\"none\" stroke=\"'+colors[j]+'\" stroke-width=\"2\"/>';"
    "P.forEach((p,i)=>{if(p[k]!==null&&(k.endsWith('_ms')||p[k]>0))out+='<circle class=\"pt-'+k+'\" cx=\"'+x(i).toFixed(1)+'\" cy=\"'+y(p[k]).toFixed(1)+'\" r=\"3\" fill=\"'+colors[j]+'\"/>';});});"
    "svg.innerHTML=out;}\n"
    "chart($('latency-chart'),['p50_ms','p95_ms','p99_ms'],['#457b9d','#f4a261','#e63946']);\n"
    "chart($('load-chart'),['running','waiting'],['#2a9d8f','#e76f51']);\n";

/* The rest of the script (two literals: C99 compilers need only support 4095 characters). */
static const char page_tail2[] =
    "$('repos').textContent=S.repositories.length?'':'none listed ('+S.indexer+')';\n"
    "for(const r of S.repositories){const d=document.createElement('div');"
    "d.className='repo';d.textContent=r.name+' — '+r.files+' files'+(r.commit?' at '+r.commit.slice(0,10):'')+"
    "(r.indexed_at?', indexed '+r.indexed_at+' ('+Math.round(r.age_s/60)+' min ago)':', not indexed yet');"
    "$('repos').appendChild(d);}\n"
    "if(S.index){const t=document.createElement('table');t.id='index';$('repos').appendChild(t);"
    "rows(t,[['repositories in the index',S.index.repositories,'ix-repos'],['files',S.index.files,"
    "'ix-files'],['chunks',S.index.chunks,'ix-chunks'],['vector search',S.index.approximate?"
    "'approximate (IVF)':'exact']]);}\n"
    "const ub=$('usage').tBodies[0];\n"
    "if(!S.usage.length){const c=ub.insertRow().insertCell();c.colSpan=5;c.className='muted';"
    "c.textContent='no events in the last 7 days';}\n"
    "for(const u of S.usage){const tr=ub.insertRow();tr.dataset.user=u.user;tr.dataset.day=u.day;"
    "tr.insertCell().textContent=u.day;tr.insertCell().textContent=u.user;"
    "for(const [v,c] of [[u.shown,'shown'],[u.accepted,'accepted'],[u.acceptance_rate===null?'–':"
    "(100*u.acceptance_rate).toFixed(1)+'%','rate']]){const td=tr.insertCell();td.className='n '+c;"
    "td.textContent=v;}}\n"
    "document.body.dataset.renderMs=performance.now().toFixed(1);\n"
    "document.body.dataset.rendered='yes';\n"
    "</script></body></html>\n";

enum MHD_Result http_route_status_page(http_req *r, json_t *body)
{
    (void)body;
    json_t *j = status_json(r->s);
    char *data = j ? json_dumps(j, JSON_COMPACT | JSON_ESCAPE_SLASH) : NULL;
    json_decref(j);
    if (!data) return http_reply_error(r, 500, "server_error", "out of memory");
    size_t n = sizeof page_head - 1 + strlen(data) + sizeof page_tail - 1 + sizeof page_tail2 - 1;
    char *page = malloc(n + 1);
    if (!page) {
        free(data);
        return http_reply_error(r, 500, "server_error", "out of memory");
    }
    snprintf(page, n + 1, "%s%s%s%s", page_head, data, page_tail, page_tail2);
    free(data);
    enum MHD_Result res = http_reply_text(r, 200, "text/html; charset=utf-8", page, n);
    free(page);
    return res;
}

/* ---- while the model loads: a placeholder listener that says "starting" ------------------ */

struct http_starting {
    struct MHD_Daemon *daemon;
};

static enum MHD_Result starting_access(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **con_cls)
{
    (void)cls, (void)method, (void)version, (void)upload_data;
    if (!*con_cls) { /* headers in: wait for (and drop) the body */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    static const char health[] = "{\"status\":\"starting\"}";
    static const char other[] = "{\"error\":{\"message\":\"the server is starting: the model is "
                                "loading; retry shortly\",\"type\":\"starting\",\"code\":503}}";
    bool is_health = !strcmp(url, "/v1/health") || !strcmp(url, "/health");
    const char *body = is_health ? health : other;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                                MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Retry-After", "1");
    MHD_add_response_header(resp, "Connection", "close");
    enum MHD_Result r = MHD_queue_response(conn, 503, resp);
    MHD_destroy_response(resp);
    return r;
}

eng_status http_starting_start(const char *bind_addr, int port, http_starting **out,
                               int *bound_port, eng_err *err)
{
    *out = NULL;
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    struct sockaddr *addr = (struct sockaddr *)&a4;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, bind_addr, &a4.sin_addr) != 1) {
        if (inet_pton(AF_INET6, bind_addr, &a6.sin6_addr) != 1)
            return eng_fail(err, ENG_ERR_INVALID, "http: bind address '%s' is not an IP address",
                            bind_addr);
        addr = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    }
    http_starting *s = calloc(1, sizeof *s);
    if (!s) return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->daemon = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, starting_access, NULL,
                                 MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_CONNECTION_TIMEOUT, 5u,
                                 MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_END);
    if (!s->daemon) {
        free(s);
        return eng_fail(err, ENG_ERR_IO, "http: cannot listen on %s:%d (%s)", bind_addr, port,
                        strerror(errno));
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (bound_port) *bound_port = di ? di->port : port;
    *out = s;
    return ENG_OK;
}

void http_starting_stop(http_starting *s)
{
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    free(s);
}
