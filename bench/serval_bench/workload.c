/* workload.c — what the simulated clients do: developer sessions (type through a file, a
 * Tabby-shaped request after the debounce, abort it on the next keystroke; Poisson session
 * arrivals) and the classic modes (fixed prompts, closed-loop concurrency or open-loop rate). */
#include "bench.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- requests ---------------------------------------------------------------------------- */

/* Developer (or worker) i's token: --token-file's, round robin, else --token. */
static const char *session_token(const bench_cfg *cfg, int i)
{
    return cfg->n_tokens ? cfg->tokens[i % cfg->n_tokens] : cfg->token;
}

static void bench_conn_close(bench_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    bench_grpc_close(&c->grpc);
}

/* The body for one completion: Tabby segments, or an OpenAI prompt (the prefix alone). */
static char *request_body(const bench_cfg *cfg, const bench_file *f, const char *prefix,
                          size_t prefix_len, const char *suffix, size_t suffix_len)
{
    json_t *j;
    if (cfg->target == BENCH_TARGET_TABBY) {
        json_t *seg = json_pack("{s:s%}", "prefix", prefix, prefix_len);
        if (seg && suffix_len)
            json_object_set_new(seg, "suffix", json_stringn(suffix, suffix_len));
        if (seg && f) {
            json_object_set_new(seg, "filepath", json_string(f->rel));
            if (f->git_url)
                json_object_set_new(seg, "git_url", json_string(f->git_url));
        }
        j = json_pack("{s:s,s:o}", "language", f ? f->lang : "unknown", "segments", seg);
    } else if (cfg->target == BENCH_TARGET_CHAT) {
        j = json_pack("{s:s,s:[{s:s,s:s%}],s:i,s:b,s:f}", "model", cfg->model ? cfg->model : "",
                      "messages", "role", "user", "content", prefix, prefix_len, "max_tokens",
                      cfg->max_tokens, "stream", cfg->stream, "temperature", 0.0);
    } else if (cfg->target == BENCH_TARGET_LLAMACPP) {
        j = json_pack("{s:s%,s:i,s:b,s:f,s:b}", "prompt", prefix, prefix_len, "n_predict",
                      cfg->max_tokens, "stream", cfg->stream, "temperature", 0.0, "cache_prompt",
                      1);
    } else {
        j = json_pack("{s:s,s:s%,s:i,s:b,s:f}", "model", cfg->model ? cfg->model : "", "prompt",
                      prefix, prefix_len, "max_tokens", cfg->max_tokens, "stream", cfg->stream,
                      "temperature", 0.0);
    }
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* tabby-agent's telemetry for a suggestion it showed: view, then select (the developer took
 * it) or dismiss (typed on). Failures are counted, not recorded as requests. */
static void post_events(bench_run *r, bench_conn *conn, const char *id, bool accepted,
                        int session, long n)
{
    const bench_cfg *cfg = r->cfg;
    char view_id[64];
    snprintf(view_id, sizeof view_id, "view-%d-%ld", session, n);
    const char *types[2] = {"view", accepted ? "select" : "dismiss"};
    for (int i = 0; i < 2; i++) {
        json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:i}", "type", types[i], "completion_id", id,
                              "choice_index", 0, "view_id", view_id, "elapsed",
                              i ? (int)cfg->accept_ms : 0);
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        bench_http_result res;
        if (body)
            bench_http_post(cfg, conn->token, &conn->fd, "/v1/events", body, false, 1e300,
                            bench_now_ms() + 5000, &res);
        atomic_fetch_add(body && !res.error[0] ? &r->events_sent : &r->events_failed, 1);
        if (body)
            free(res.text);
        free(body);
    }
}

/* Sends one request and records it. truth: the text that follows the cursor (quality).
 * Returns the suggestion to accept (malloc'd) or NULL. */
static char *do_request(bench_run *r, int session, bench_conn *conn, const bench_file *f,
                        double t_key, double t_intended, double abort_at, const char *prefix,
                        size_t plen, const char *suffix, size_t slen, const char *truth,
                        size_t tlen, int group)
{
    const bench_cfg *cfg = r->cfg;
    bench_rec rec = {.session = session, .t_key = t_key, .t_intended = t_intended,
                     .ttft_ms = -1, .e2e_ms = -1, .itl_ms = -1, .k2s_ms = -1, .em = -1, .es = -1,
                     .prompt_chars = (int)plen, .file = f ? f->rel : NULL, .group = group};
    bool grpc = cfg->target == BENCH_TARGET_GRPC;
    char *body = grpc ? NULL : request_body(cfg, f, prefix, plen, suffix, slen);
    if (!grpc && !body) {
        rec.outcome = BENCH_OUTCOME_ERROR;
        rec.error = strdup("cannot build the request (prefix not UTF-8?)");
        rec.prompt_tokens = rec.completion_tokens = rec.cached_tokens = -1;
        rec.server_queue_ms = rec.server_total_ms = -1;
        rec.t_sent = bench_now_ms() - r->t0;
        bench_record(r, &rec);
        atomic_fetch_add(&r->errors, 1);
        return NULL;
    }
    double hard_end = r->t0 + (cfg->duration_s + cfg->grace_s) * 1000.0;
    double deadline = bench_now_ms() + cfg->timeout_s * 1000.0;
    if (deadline > hard_end)
        deadline = hard_end;
    bench_http_result res;
    atomic_fetch_add(&r->sent, 1);
    atomic_fetch_add(&r->inflight, 1);
    if (grpc) {
        char *pre = strndup(prefix, plen), *suf = suffix ? strndup(suffix, slen) : NULL;
        bench_grpc_input in = {cfg->mode == BENCH_MODE_DEVELOPER, pre, suf, f ? f->rel : NULL,
                               f ? f->git_url : NULL, f ? f->lang : NULL};
        if (pre)
            bench_grpc_complete(cfg, conn->token, &conn->grpc, &in, abort_at, deadline, &res);
        else
            res = (bench_http_result){.error = "out of memory", .text = strdup("")};
        free(pre);
        free(suf);
    } else {
        bench_http_post(cfg, conn->token, &conn->fd,
                        cfg->target == BENCH_TARGET_LLAMACPP ? "/completion"
                        : cfg->target == BENCH_TARGET_CHAT   ? "/v1/chat/completions"
                                                             : "/v1/completions",
                        body, cfg->stream, abort_at, deadline, &res);
    }
    atomic_fetch_sub(&r->inflight, 1);
    free(body);
    double t_int_abs = r->t0 + t_intended;
    rec.t_sent = res.t_sent - r->t0;
    rec.status = res.status;
    rec.prompt_tokens = res.prompt_tokens;
    rec.completion_tokens = res.completion_tokens;
    rec.cached_tokens = grpc ? res.cached_tokens : -1;
    rec.server_queue_ms = res.server_queue_ms;
    rec.server_total_ms = res.server_total_ms;
    snprintf(rec.id, sizeof rec.id, "%s", res.id);
    snprintf(rec.request_id, sizeof rec.request_id, "%s", res.request_id);
    char *accept = NULL;
    if (res.aborted || res.server_superseded) {
        rec.outcome = BENCH_OUTCOME_SUPERSEDED;
        rec.server_superseded = !res.aborted;
        atomic_fetch_add(&r->superseded, 1);
    } else if (res.error[0] || res.status / 100 != 2) {
        rec.outcome = BENCH_OUTCOME_ERROR;
        bool cut = bench_now_ms() >= hard_end - 1;
        rec.error = strdup(cut ? "cut off at the end of the run (--grace)"
                               : res.error[0] ? res.error : "non-2xx status");
        atomic_fetch_add(&r->errors, 1);
    } else {
        rec.outcome = BENCH_OUTCOME_ANSWERED;
        rec.ttft_ms = res.t_first_token - t_int_abs;
        if (res.pieces >= 2)
            rec.itl_ms = (res.t_last_token - res.t_first_token) / (res.pieces - 1);
        rec.e2e_ms = res.t_done - t_int_abs;
        rec.k2s_ms = res.t_done - (r->t0 + t_key);
        size_t ref_len;
        bench_quality(res.text, truth, tlen, &rec.em, &rec.es, &rec.accepted, &ref_len);
        if (rec.accepted)
            accept = strdup(res.text);
        if (cfg->events && cfg->target == BENCH_TARGET_TABBY && rec.em >= 0 && res.id[0])
            post_events(r, conn, res.id, rec.accepted, session, atomic_load(&r->sent));
        rec.suggestion = res.text;
        res.text = NULL;
        if (rec.em >= 0) {
            /* The file is UTF-8 text; end the reference on a character boundary. */
            while (ref_len < tlen && (truth[ref_len] & 0xC0) == 0x80)
                ref_len++;
            rec.expected = strndup(truth, ref_len);
        }
        atomic_fetch_add(&r->answered, 1);
    }
    free(res.text);
    bench_record(r, &rec);
    return accept;
}

/* Start of the line `lines` lines before pos (0 = pos's own line start). */
static size_t lines_back(const char *t, size_t pos, int lines)
{
    size_t p = pos;
    for (int n = 0; p > 0; p--)
        if (t[p - 1] == '\n' && n++ == lines)
            break;
    return p;
}

/* End (after the '\n') of the `lines`-th line starting at pos. */
static size_t lines_fwd(const char *t, size_t len, size_t pos, int lines)
{
    size_t p = pos;
    for (int n = 0; p < len && n < lines; p++)
        if (t[p] == '\n')
            n++;
    return p;
}

/* ---- developer sessions ------------------------------------------------------------------ */

typedef struct session_arg {
    bench_run *r;
    int id;
    double end_ms; /* run time at which this developer stops typing */
    uint64_t rng;
} session_arg;

static double keystroke_gap(const bench_cfg *cfg, uint64_t *rng, char typed)
{
    double g = cfg->keystroke_ms * (1.0 + cfg->jitter * (2.0 * bench_rand01(rng) - 1.0));
    bool boundary = typed == '\n' || typed == ' ' || typed == '(' || typed == '.';
    if (boundary && bench_rand01(rng) < cfg->pause_prob)
        g += bench_rand_exp(rng, cfg->pause_ms);
    return g > 1 ? g : 1;
}

static bool blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
    return true;
}

static void *session_main(void *arg)
{
    session_arg *a = arg;
    bench_run *r = a->r;
    const bench_cfg *cfg = r->cfg;
    double run_end = cfg->duration_s * 1000.0;
    double end = a->end_ms < run_end ? a->end_ms : run_end;
    bench_conn conn = {-1, NULL, session_token(cfg, a->id)};
    /* The next keystroke, run time. A session opens with a think, so the developers present at
     * the start do not all type their first key at once. */
    double think = cfg->keystroke_ms + cfg->pause_prob * cfg->pause_ms;
    double t = bench_now_ms() - r->t0 + bench_rand01(&a->rng) * think;
    while (t < end && !atomic_load(&r->stop)) {
        /* Switch to a file and a hole of hole_lines lines to write. */
        const bench_file *f =
            &r->corpus->files[(size_t)(bench_rand01(&a->rng) * (double)r->corpus->n)];
        size_t n_lines = 0;
        for (size_t i = 0; i < f->len; i++)
            n_lines += f->text[i] == '\n';
        size_t start =
            lines_fwd(f->text, f->len, 0, (int)(bench_rand01(&a->rng) * (double)n_lines));
        size_t hole_end = lines_fwd(f->text, f->len, start, cfg->hole_lines);
        size_t c = start;
        if (hole_end <= start) { /* the file's last, empty line: think, then switch */
            t += cfg->keystroke_ms;
            continue;
        }
        while (c < hole_end && t < end && !atomic_load(&r->stop)) {
            bench_sleep_until(r, t);
            double t_key = t;
            char typed = f->text[c++];
            double gap = keystroke_gap(cfg, &a->rng, typed);
            t = t_key + gap;
            size_t p0 = lines_back(f->text, c, cfg->prefix_lines);
            if (gap <= cfg->debounce_ms || blank(f->text + p0, c - p0) ||
                t_key + cfg->debounce_ms >= end)
                continue;
            double t_int = t_key + cfg->debounce_ms;
            bench_sleep_until(r, t_int);
            size_t s1 = lines_fwd(f->text, f->len, hole_end, cfg->suffix_lines);
            char *acc =
                do_request(r, a->id, &conn, f, t_key, t_int, r->t0 + t, f->text + p0, c - p0,
                           f->text + hole_end, s1 - hole_end, f->text + c, f->len - c, -1);
            if (acc) { /* Tab: the suggestion is what the developer was about to type */
                double now = bench_now_ms() - r->t0;
                c += strlen(acc);
                t = now + cfg->accept_ms;
                free(acc);
            }
        }
    }
    bench_conn_close(&conn);
    bench_sleep_until(r, end); /* still at the keyboard, thinking, until the session ends */
    atomic_fetch_sub(&r->sessions_live, 1);
    free(a);
    return NULL;
}

/* Sessions: developers at t = 0 with residual lengths uniform in (0, session_s] (a stationary
 * start), then Poisson arrivals at developers/session_s per second, so that on average
 * `developers` type at once (Little's law). */
static int run_developers(bench_run *r)
{
    const bench_cfg *cfg = r->cfg;
    uint64_t rng = cfg->seed * 0x9E3779B97F4A7C15ull + 1;
    double rate_per_ms = cfg->developers / (cfg->session_s * 1000.0);
    size_t cap = (size_t)cfg->developers * 2 + 16, n = 0;
    pthread_t *th = malloc(cap * sizeof *th);
    if (!th)
        return -1;
    double t_next = 0;
    int initial = cfg->developers;
    for (;;) {
        double t_start;
        double len_ms;
        if (initial > 0) {
            initial--;
            t_start = 0;
            len_ms = (1.0 - bench_rand01(&rng)) * cfg->session_s * 1000.0;
        } else {
            t_next += bench_rand_exp(&rng, 1.0 / rate_per_ms);
            t_start = t_next;
            len_ms = cfg->session_s * 1000.0;
        }
        if (t_start >= cfg->duration_s * 1000.0)
            break;
        bench_sleep_until(r, t_start);
        if (atomic_load(&r->stop))
            break;
        if (n == cap) {
            cap *= 2;
            pthread_t *t2 = realloc(th, cap * sizeof *th);
            if (!t2)
                break;
            th = t2;
        }
        session_arg *a = malloc(sizeof *a);
        if (!a)
            break;
        *a = (session_arg){r, (int)n, t_start + len_ms, rng ^ (0xD1B54A32D192ED03ull * (n + 1))};
        atomic_fetch_add(&r->sessions_live, 1);
        if (pthread_create(&th[n], NULL, session_main, a) != 0) {
            atomic_fetch_sub(&r->sessions_live, 1);
            free(a);
            fprintf(stderr, "serval-bench: cannot start session thread %zu\n", n);
            break;
        }
        n++;
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    free(th);
    return 0;
}

/* ---- classic modes ----------------------------------------------------------------------- */

typedef struct classic_ctx {
    bench_run *r;
    const double *arrivals; /* open loop: intended send times (run ms), n_arrivals */
    size_t n_arrivals;
    atomic_size_t next;
} classic_ctx;

typedef struct worker_arg {
    classic_ctx *x;
    int id;
    uint64_t rng;
} worker_arg;

/* n bytes of t, shortened to end on a UTF-8 boundary. */
static size_t utf8_cut(const char *t, size_t n, size_t len)
{
    while (n > 0 && n < len && (t[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* A prompt of prompt_chars from a seeded file and offset; the truth is what follows. With
 * shared-prefix groups, the prompt starts with its group's shared_chars (the head of the
 * group's file, as developers of one repository share its context) and the rest is the slice. */
static void classic_one(classic_ctx *x, worker_arg *w, bench_conn *conn, double t_int)
{
    bench_run *r = x->r;
    const bench_cfg *cfg = r->cfg;
    const bench_file *f = &r->corpus->files[(size_t)(bench_rand01(&w->rng) * (double)r->corpus->n)];
    int group = -1;
    size_t shared = 0;
    const bench_file *gf = NULL;
    if (cfg->prefix_groups > 0) {
        group = (int)(bench_rand01(&w->rng) * cfg->prefix_groups);
        gf = &r->corpus->files[((size_t)group * 2654435761u) % r->corpus->n];
        shared = (size_t)cfg->shared_chars < gf->len ? (size_t)cfg->shared_chars : gf->len;
        shared = utf8_cut(gf->text, shared, gf->len);
    }
    size_t slice = (size_t)cfg->prompt_chars > shared ? (size_t)cfg->prompt_chars - shared : 1;
    size_t want = slice < f->len ? slice : f->len;
    size_t off = (size_t)(bench_rand01(&w->rng) * (double)(f->len - want + 1));
    while (off > 0 && (f->text[off] & 0xC0) == 0x80) /* start on a UTF-8 boundary */
        off--;
    size_t end = off + want;
    while (end < f->len && (f->text[end] & 0xC0) == 0x80)
        end++;
    char *joined = NULL;
    const char *prompt = f->text + off;
    size_t plen = end - off;
    if (gf) {
        joined = malloc(shared + plen + 1);
        if (!joined)
            return;
        memcpy(joined, gf->text, shared);
        memcpy(joined + shared, f->text + off, plen);
        prompt = joined;
        plen += shared;
    }
    bench_sleep_until(r, t_int);
    char *acc = do_request(r, w->id, conn, f, t_int, t_int, 1e300, prompt, plen, NULL, 0,
                           f->text + end, f->len - end, group);
    free(acc);
    free(joined);
}

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    classic_ctx *x = w->x;
    bench_run *r = x->r;
    double end = r->cfg->duration_s * 1000.0;
    bench_conn conn = {-1, NULL, session_token(r->cfg, w->id)};
    for (;;) {
        double t_int;
        if (x->arrivals) {
            size_t i = atomic_fetch_add(&x->next, 1);
            if (i >= x->n_arrivals)
                break;
            t_int = x->arrivals[i];
        } else {
            t_int = bench_now_ms() - r->t0; /* closed loop: the next request at once */
        }
        if (t_int >= end || atomic_load(&r->stop))
            break;
        classic_one(x, w, &conn, t_int);
    }
    bench_conn_close(&conn);
    atomic_fetch_sub(&r->sessions_live, 1);
    return NULL;
}

static int run_classic(bench_run *r)
{
    const bench_cfg *cfg = r->cfg;
    classic_ctx x = {.r = r};
    double *arr = NULL;
    int workers = cfg->concurrency;
    if (cfg->rate > 0) { /* open loop: the whole schedule up front, seeded */
        uint64_t rng = cfg->seed * 0x9E3779B97F4A7C15ull + 7;
        size_t cap = (size_t)(cfg->rate * cfg->duration_s * 2) + 16;
        arr = malloc(cap * sizeof *arr);
        if (!arr)
            return -1;
        double t = 0, mean = 1000.0 / cfg->rate;
        while (x.n_arrivals < cap) {
            t += cfg->gamma ? bench_rand_gamma(&rng, cfg->gamma_shape, mean)
                            : bench_rand_exp(&rng, mean);
            if (t >= cfg->duration_s * 1000.0)
                break;
            arr[x.n_arrivals++] = t;
        }
        x.arrivals = arr;
        workers = cfg->max_inflight;
    }
    pthread_t *th = calloc((size_t)workers, sizeof *th);
    worker_arg *wa = calloc((size_t)workers, sizeof *wa);
    int n = 0;
    for (; th && wa && n < workers; n++) {
        wa[n] = (worker_arg){
            &x, n, cfg->seed * 0xBF58476D1CE4E5B9ull + (uint64_t)n * 0x94D049BB133111EBull + 3};
        atomic_fetch_add(&r->sessions_live, 1);
        if (pthread_create(&th[n], NULL, worker_main, &wa[n]) != 0) {
            atomic_fetch_sub(&r->sessions_live, 1);
            fprintf(stderr, "serval-bench: cannot start worker %d\n", n);
            break;
        }
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    free(th);
    free(wa);
    free(arr);
    return 0;
}

int bench_run_workload(bench_run *r)
{
    return r->cfg->mode == BENCH_MODE_DEVELOPER ? run_developers(r) : run_classic(r);
}
