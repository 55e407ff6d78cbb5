/* sched.c — the iteration-level scheduler: each step it plans the decodes of running
 * sequences, then prefill chunks of running and waiting prompts, under a token budget;
 * reserves their KV blocks and preempts the newest running sequences when blocks run out. */
#include <string.h>

#include "clock.h"
#include "engine_impl.h"

/* Service order: higher priority first, then older (smaller id) first. */
bool engine_before(const eng_request *a, const eng_request *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    return a->id < b->id;
}

/* Inserts r into list (n entries, room for one more) keeping service order. */
static void list_insert(eng_request **list, int32_t *n, eng_request *r)
{
    int32_t i = *n;
    while (i > 0 && engine_before(r, list[i - 1])) {
        list[i] = list[i - 1];
        i--;
    }
    list[i] = r;
    (*n)++;
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

void sched_waiting_insert(eng_engine *e, eng_request *r)
{
    ENG_ASSERT(e->n_waiting < e->cfg.max_waiting + e->cfg.max_running);
    list_insert(e->waiting, &e->n_waiting, r);
}

void sched_remove(eng_engine *e, eng_request *r)
{
    if (!list_remove(e->running, &e->n_running, r))
        list_remove(e->waiting, &e->n_waiting, r);
    for (int32_t i = 0; i < e->n_plan; i++) {
        if (e->plan[i].r == r) {
            memmove(e->plan + i, e->plan + i + 1, sizeof *e->plan * (size_t)(e->n_plan - i - 1));
            e->n_plan--;
            break;
        }
    }
}

/* Frees a running request's blocks and puts it back in the waiting list: it will recompute
 * its prompt and the tokens it generated so far (mostly from the prefix cache) and go on. */
void engine_preempt(eng_engine *e, eng_request *r)
{
    sched_remove(e, r);
    kv_seq_free(e->kv, r->seq);
    r->seq = NULL;
    r->n_computed = 0;
    pthread_mutex_lock(&r->mu);
    r->n_preempt++;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->mu);
    e->stats.preemptions++;
    pthread_mutex_unlock(&e->mu);
    sched_waiting_insert(e, r);
}

/* Reserves blocks for r to hold n positions, preempting the newest running requests until it
 * fits. Returns false when r itself was the newest and got preempted. */
static bool reserve_or_preempt(eng_engine *e, eng_request *r, int32_t n)
{
    for (;;) {
        eng_status st = kv_seq_reserve(e->kv, r->seq, n);
        if (st == ENG_OK)
            return true;
        ENG_ASSERT(st == ENG_ERR_OVERLOAD && e->n_running > 0);
        eng_request *victim = e->running[e->n_running - 1];
        engine_preempt(e, victim);
        if (victim == r)
            return false;
    }
}

static void plan_add(eng_engine *e, eng_request *r, int32_t len)
{
    e->plan[e->n_plan++] = (sched_entry){.r = r, .start = r->n_computed, .len = len};
}

/* Admits the oldest waiting request when its first chunk fits, keeping one free block of
 * headroom per running sequence so that admissions don't immediately force preemptions. */
static bool admit_one(eng_engine *e, int32_t budget)
{
    eng_request *r = e->waiting[0];
    kv_seq *s = NULL;
    if (kv_seq_create(e->kv, r->n_prompt + r->max_tokens, &s, NULL) != ENG_OK)
        return false;
    int32_t cached = kv_seq_match_prefix(e->kv, s, r->tokens, r->n_tokens);
    int32_t need = r->n_tokens - cached;
    int32_t len = need < budget ? need : budget;
    int32_t blocks = kv_seq_blocks_needed(e->kv, s, cached + len);
    if ((e->n_running > 0 && blocks + e->n_running > kv_cache_n_available(e->kv)) ||
        kv_seq_reserve(e->kv, s, cached + len) != ENG_OK) {
        kv_seq_free(e->kv, s);
        return false;
    }
    list_remove(e->waiting, &e->n_waiting, r);
    r->seq = s;
    r->n_computed = cached;
    list_insert(e->running, &e->n_running, r);
    if (!r->admitted_once) {
        r->admitted_once = true;
        pthread_mutex_lock(&r->mu);
        r->n_cached = cached;
        r->t_sched = eng_clock_ms() - r->t_submit;
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&e->mu);
        e->n_waiting_new--;
        e->stats.prompt_tokens_cached += cached;
        pthread_mutex_unlock(&e->mu);
    }
    plan_add(e, r, len);
    return true;
}

int32_t sched_step_plan(eng_engine *e)
{
    int32_t budget = e->cfg.step_tokens;
    e->n_plan = 0;
    /* Pass 0: one token for every decoding sequence; pass 1: prefill chunks of running ones
     * (a preempted-and-readmitted or chunked prompt), oldest first. */
    for (int pass = 0; pass < 2; pass++) {
        int32_t i = 0;
        while (i < e->n_running && budget > 0) {
            eng_request *r = e->running[i];
            int32_t need = r->n_tokens - r->n_computed;
            ENG_ASSERT(need >= 1);
            if ((pass == 0) != (need == 1)) {
                i++;
                continue;
            }
            int32_t len = need < budget ? need : budget;
            if (!reserve_or_preempt(e, r, r->n_computed + len))
                continue; /* r was the last; the loop ends */
            plan_add(e, r, len);
            budget -= len;
            i++;
        }
    }
    /* Pass 2: admit waiting requests while budget, batch slots and blocks last. */
    while (budget > 0 && e->n_waiting > 0 && e->n_running < e->cfg.max_running) {
        if (!admit_one(e, budget))
            break;
        budget -= e->plan[e->n_plan - 1].len;
    }
    /* Preemption may have dropped entries planned earlier in this step: count what is left. */
    int32_t n = 0;
    for (int32_t i = 0; i < e->n_plan; i++)
        n += e->plan[i].len;
    return n;
}
