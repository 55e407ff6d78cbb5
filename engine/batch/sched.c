/* sched.c — the iteration-level scheduler (scheduler.h): each step it plans the decodes of
 * running sequences, then prefill chunks of running and waiting prompts, under a token budget;
 * reserves their KV blocks and preempts the newest running sequences when blocks run out. */
#include <stdlib.h>
#include <string.h>

#include "engine_impl.h"
#include "scheduler.h"

enum { MODEL_MIN_STEPS = 2 }; /* observations before the fit replaces the prior guess */
#define MODEL_DECAY 0.9
#define PRIOR_MS 10.0
#define PRIOR_MS_PER_TOKEN 2.0
#define DEFAULT_MAX_STEP_MS 250.0
#define DEFAULT_MIN_PREFILL 0

/* Decoding requests in the running list (exactly one token left to compute). */
static int32_t n_decoding(const sched_state *s)
{
    int32_t n = 0;
    for (int32_t i = 0; i < s->n_running; i++)
        n += s->running[i]->n_tokens - s->running[i]->n_computed == 1;
    return n;
}

void sched_observe(sched_state *s, int32_t tokens, double ms)
{
    sched_step_model *m = &s->model;
    double x = tokens, y = ms;
    m->sw = m->sw * MODEL_DECAY + 1;
    m->sx = m->sx * MODEL_DECAY + x;
    m->sy = m->sy * MODEL_DECAY + y;
    m->sxx = m->sxx * MODEL_DECAY + x * x;
    m->sxy = m->sxy * MODEL_DECAY + x * y;
    m->n++;
}

/* Whether the recent steps' sizes spread enough to tell the per-step cost from the per-token
 * cost (standard deviation at least a quarter of the mean). */
static bool model_spread(const sched_step_model *m)
{
    if (m->sw <= 0)
        return false;
    double mx = m->sx / m->sw;
    return m->sxx / m->sw - mx * mx >= 0.0625 * mx * mx;
}

/* The fitted line: *a ms per step, *b ms per token. With too little spread in the step sizes
 * seen to tell them apart, the step time is taken as proportional to its tokens. */
static void model_line(const sched_step_model *m, double *a, double *b)
{
    if (m->sw < MODEL_MIN_STEPS * 0.95 || m->sx <= 0) {
        *a = PRIOR_MS;
        *b = PRIOR_MS_PER_TOKEN;
        return;
    }
    double mx = m->sx / m->sw, my = m->sy / m->sw;
    double vx = m->sxx / m->sw - mx * mx, cxy = m->sxy / m->sw - mx * my;
    if (vx > 1.0 && cxy > 0) {
        *b = cxy / vx;
        *a = my - *b * mx;
        if (*a < 0) {
            *a = 0;
            *b = my / mx;
        }
    } else {
        *a = 0;
        *b = my / mx;
    }
    if (*b < 1e-6)
        *b = 1e-6;
}

double sched_predict_ms(const sched_state *s, int32_t tokens)
{
    double a, b;
    model_line(&s->model, &a, &b);
    return a + b * tokens;
}

/* Steps r still needs to finish: one per token left to generate (each step samples one; a
 * prompt's last chunk samples the first), at least 1. */
static int32_t steps_left(const eng_request *r)
{
    int32_t more = r->max_tokens - (r->n_tokens - r->n_prompt);
    return more > 1 ? more : 1;
}

bool sched_is_late(const sched_state *s, const eng_request *r, int32_t n_dec)
{
    if (r->deadline <= 0)
        return false;
    double slack = r->deadline - s->now;
    if (slack <= 0)
        return true;
    if (!r->seq)
        return false;
    return slack < steps_left(r) * sched_predict_ms(s, n_dec > 0 ? n_dec : 1);
}

int32_t sched_budget(const sched_state *s)
{
    double a, b;
    model_line(&s->model, &a, &b);
    int32_t n_dec = n_decoding(s);
    double target = s->cfg.max_step_ms > 0 ? s->cfg.max_step_ms : DEFAULT_MAX_STEP_MS;
    for (int32_t i = 0; i < s->n_running; i++) {
        const eng_request *r = s->running[i];
        if (r->deadline <= 0 || r->n_tokens - r->n_computed > 1 || sched_is_late(s, r, n_dec))
            continue; /* prompts gain from big steps; their decode is constrained once it starts */
        double per = (r->deadline - s->now) / steps_left(r);
        if (per < target)
            target = per;
    }
    double t = (target - a) / b + 1e-9; /* 94.99999... of a fitted line is 95 */
    int32_t min_prefill = s->cfg.min_prefill > 0 ? s->cfg.min_prefill : DEFAULT_MIN_PREFILL;
    int32_t lo = n_dec + min_prefill > 0 ? n_dec + min_prefill : 1, hi = s->cfg.step_tokens;
    int32_t budget = t >= hi ? hi : t <= lo ? lo : (int32_t)t;
    /* Steps all of one size cannot separate the fixed cost from the per-token one, and the
     * fallback (all per-token) underestimates what a bigger step costs so little more: every
     * other step is twice as big until the sizes spread. */
    if (!model_spread(&s->model) && (s->model.n & 1))
        budget *= 2;
    return budget < hi ? budget : hi;
}

/* Service order: higher priority first, then (SCHED_LATENCY) on time before late and earlier
 * deadline first, then older (smaller id) first. */
static bool sched_before(const sched_state *s, const eng_request *a, const eng_request *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    if (s->cfg.policy == SCHED_LATENCY) {
        int32_t n_dec = s->n_decoding;
        bool la = sched_is_late(s, a, n_dec), lb = sched_is_late(s, b, n_dec);
        if (la != lb)
            return lb;
        double da = a->deadline > 0 ? a->deadline : 1e300, db = b->deadline > 0 ? b->deadline : 1e300;
        if (da != db)
            return da < db;
    }
    return a->id < b->id;
}

/* Inserts r into list (n entries, room for one more) keeping service order. */
static void list_insert(const sched_state *s, eng_request **list, int32_t *n, eng_request *r)
{
    int32_t i = *n;
    while (i > 0 && sched_before(s, r, list[i - 1])) {
        list[i] = list[i - 1];
        i--;
    }
    list[i] = r;
    (*n)++;
}

/* Re-sorts a list into service order (insertion sort: stable, the lists are short and mostly
 * sorted already). */
static void list_sort(const sched_state *s, eng_request **list, int32_t n)
{
    for (int32_t k = 1; k < n; k++) {
        eng_request *r = list[k];
        int32_t i = k;
        while (i > 0 && sched_before(s, r, list[i - 1])) {
            list[i] = list[i - 1];
            i--;
        }
        list[i] = r;
    }
}

static bool list_remove(eng_request **list, int32_t *n, const eng_request *r)
{
    for (int32_t i = 0; i < *n; i++) {
        if (list[i] == r) {
            memmove(list + i, list + i + 1, sizeof *list * (size_t)(*n - i - 1));
            (*n)--;
            return true;
        }
    }
    return false;
}

eng_status sched_create(kv_cache *kv, const sched_config *cfg, sched_state **out, eng_err *err)
{
    *out = NULL;
    if (cfg->max_running < 1 || cfg->max_waiting < 1 || cfg->step_tokens < cfg->max_running)
        return eng_fail(err, ENG_ERR_INVALID,
                        "scheduler limits: max_running %d and max_waiting %d must be >= 1, "
                        "step_tokens %d >= max_running", cfg->max_running, cfg->max_waiting,
                        cfg->step_tokens);
    sched_state *s = calloc(1, sizeof *s);
    if (!s)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    s->kv = kv;
    size_t nr = (size_t)cfg->max_running;
    s->waiting = calloc((size_t)cfg->max_waiting + nr, sizeof *s->waiting);
    s->running = calloc(nr, sizeof *s->running);
    s->plan = calloc(nr, sizeof *s->plan);
    if (!s->waiting || !s->running || !s->plan) {
        sched_free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory allocating the scheduler's lists");
    }
    *out = s;
    return ENG_OK;
}

void sched_free(sched_state *s)
{
    if (!s)
        return;
    free(s->waiting);
    free(s->running);
    free(s->plan);
    free(s);
}

void sched_waiting_insert(sched_state *s, eng_request *r)
{
    ENG_ASSERT(s->n_waiting < s->cfg.max_waiting + s->cfg.max_running);
    ENG_ASSERT(r->seq == NULL && r->n_computed == 0);
    list_insert(s, s->waiting, &s->n_waiting, r);
}

void sched_remove(sched_state *s, eng_request *r)
{
    if (!list_remove(s->running, &s->n_running, r))
        list_remove(s->waiting, &s->n_waiting, r);
    for (int32_t i = 0; i < s->n_plan; i++) {
        if (s->plan[i].r == r) {
            memmove(s->plan + i, s->plan + i + 1, sizeof *s->plan * (size_t)(s->n_plan - i - 1));
            s->n_plan--;
            break;
        }
    }
}

/* Frees a running request's blocks and puts it back in the waiting list: it will recompute
 * its prompt and the tokens it generated so far (mostly from the prefix cache) and go on. */
static void preempt(sched_state *s, eng_request *r)
{
    sched_remove(s, r);
    kv_seq_free(s->kv, r->seq);
    r->seq = NULL;
    r->n_computed = 0;
    if (s->cfg.on_preempt)
        s->cfg.on_preempt(s->cfg.user, r);
    sched_waiting_insert(s, r);
}

/* Reserves blocks for r to hold n positions, preempting the newest running requests until it
 * fits. Returns false when r itself was the newest and got preempted. */
static bool reserve_or_preempt(sched_state *s, eng_request *r, int32_t n)
{
    for (;;) {
        eng_status st = kv_seq_reserve(s->kv, r->seq, n);
        if (st == ENG_OK)
            return true;
        ENG_ASSERT(st == ENG_ERR_OVERLOAD && s->n_running > 0);
        eng_request *victim = s->running[s->n_running - 1];
        preempt(s, victim);
        if (victim == r)
            return false;
    }
}

static void plan_add(sched_state *s, eng_request *r, int32_t len)
{
    s->plan[s->n_plan++] = (sched_entry){.r = r, .start = r->n_computed, .len = len};
}

/* Admits the oldest waiting request when its first chunk fits, keeping one free block of
 * headroom per running sequence so that admissions don't immediately force preemptions. */
static bool admit_one(sched_state *s, int32_t budget)
{
    eng_request *r = s->waiting[0];
    kv_seq *q = NULL;
    if (kv_seq_create(s->kv, r->n_prompt + r->max_tokens, r->cache_salt, &q, NULL) != ENG_OK)
        return false;
    int32_t cached = kv_seq_match_prefix(s->kv, q, r->tokens, r->n_tokens);
    int32_t need = r->n_tokens - cached;
    int32_t len = need < budget ? need : budget;
    int32_t blocks = kv_seq_blocks_needed(s->kv, q, cached + len);
    if ((s->n_running > 0 && blocks + s->n_running > kv_cache_n_available(s->kv)) ||
        kv_seq_reserve(s->kv, q, cached + len) != ENG_OK) {
        kv_seq_free(s->kv, q);
        return false;
    }
    list_remove(s->waiting, &s->n_waiting, r);
    r->seq = q;
    r->n_computed = cached;
    list_insert(s, s->running, &s->n_running, r);
    if (s->cfg.on_admit)
        s->cfg.on_admit(s->cfg.user, r, cached);
    plan_add(s, r, len);
    return true;
}

int32_t sched_step_plan(sched_state *s)
{
    bool latency = s->cfg.policy == SCHED_LATENCY;
    if (latency) {
        s->n_decoding = n_decoding(s);
        list_sort(s, s->running, s->n_running);
        list_sort(s, s->waiting, s->n_waiting);
    }
    int32_t budget = latency ? sched_budget(s) : s->cfg.step_tokens;
    s->budget = budget;
    s->n_plan = 0;
    /* Pass 0: one token for every decoding sequence; pass 1: prefill chunks of running ones
     * (a preempted-and-readmitted or chunked prompt), oldest first. */
    for (int pass = 0; pass < 2; pass++) {
        int32_t i = 0;
        while (i < s->n_running && budget > 0) {
            eng_request *r = s->running[i];
            int32_t need = r->n_tokens - r->n_computed;
            ENG_ASSERT(need >= 1);
            if ((pass == 0) != (need == 1)) {
                i++;
                continue;
            }
            int32_t len = need < budget ? need : budget;
            if (pass == 0 && r->n_draft > 0) { /* speculation (spec.h): verify 1 + n_draft */
                int32_t d = r->n_draft < budget - len ? r->n_draft : budget - len;
                /* drafts take only free or cached blocks: they never cause a preemption */
                while (d > 0 && kv_seq_blocks_needed(s->kv, r->seq, r->n_computed + len + d) >
                                    kv_cache_n_available(s->kv))
                    d--;
                len += d;
            }
            if (!reserve_or_preempt(s, r, r->n_computed + len))
                continue; /* r was the last; the loop ends */
            plan_add(s, r, len);
            budget -= len;
            i++;
        }
    }
    /* Pass 2: admit waiting requests while budget, batch slots and blocks last. */
    while (budget > 0 && s->n_waiting > 0 && s->n_running < s->cfg.max_running) {
        if (!admit_one(s, budget))
            break;
        budget -= s->plan[s->n_plan - 1].len;
    }
    /* Preemption may have dropped entries planned earlier in this step: count what is left. */
    int32_t n = 0;
    for (int32_t i = 0; i < s->n_plan; i++)
        n += s->plan[i].len;
    return n;
}

int32_t sched_find_superseded(const sched_state *s, const eng_request *r, eng_request **out,
                              int32_t cap)
{
    int32_t n = 0;
    if (!r->session_key)
        return 0;
    for (int32_t i = 0; i < s->n_running && n < cap; i++)
        if (s->running[i]->session_key == r->session_key && s->running[i]->id < r->id)
            out[n++] = s->running[i];
    for (int32_t i = 0; i < s->n_waiting && n < cap; i++)
        if (s->waiting[i]->session_key == r->session_key && s->waiting[i]->id < r->id)
            out[n++] = s->waiting[i];
    return n;
}
