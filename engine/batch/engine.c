/* engine.c — the continuous-batching engine: request submission and lifecycle, the
 * step-loop thread (plan with sched.c, run the backend, sample, publish output), stats. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "engine_impl.h"
#include "utf8.h"

enum {
    MAX_STOPS = 64,
    MAX_STOP_LEN = 1024,
    STOP_CONTEXT_TOKENS = 32, /* prompt tail a stop string may straddle (token prompts) */
    /* A text prompt longer than this many bytes per position the server accepts is refused
     * without tokenizing it: real text averages 3-5 bytes per token, and only a vocabulary
     * with very long tokens (runs of 64+ spaces) could fit more. */
    MAX_PROMPT_BYTES_PER_TOKEN = 64,
    DEFAULT_DEADLINE_MS = 1000,
    MAX_DEADLINE_MS = 3600000
};

eng_engine_config eng_engine_config_defaults(void)
{
    return (eng_engine_config){.backend = ENG_BACKEND_CPU, .prefix_caching = true,
                               .supersede = true};
}

eng_request_params eng_request_params_defaults(void)
{
    eng_request_params p;
    memset(&p, 0, sizeof p);
    p.sampling = eng_sampler_defaults();
    p.max_tokens = 64;
    return p;
}

const char *eng_finish_str(eng_finish f)
{
    switch (f) {
    case ENG_FINISH_STOP: return "stop";
    case ENG_FINISH_LENGTH: return "length";
    case ENG_FINISH_CANCELLED: return "cancelled";
    case ENG_FINISH_ERROR: return "error";
    case ENG_FINISH_SUPERSEDED: return "superseded";
    default: return "";
    }
}

const eng_model *eng_engine_model(const eng_engine *e) { return e->m; }
int32_t eng_engine_max_seq_len(const eng_engine *e) { return e->cfg.max_seq_len; }

/* ---- requests ------------------------------------------------------------------------------ */

/* The key supersede compares: the client's key mixed with its prefix-cache salt (splitmix64's
 * finaliser), never 0. */
static uint64_t session_mix(uint64_t key, uint64_t salt)
{
    uint64_t z = key ^ (salt * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z ? z : 1;
}

static void request_destroy(eng_request *r)
{
    free(r->tokens);
    eng_stop_free(r->stop);
    free(r->text);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->notify_mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void request_unref(eng_request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        request_destroy(r);
}

void eng_request_cancel(eng_request *r)
{
    if (!r)
        return;
    /* The first cancel's time, for the abort-to-free histogram (finish reads it). */
    int64_t none = 0;
    atomic_compare_exchange_strong(&r->t_cancel_us, &none, (int64_t)(eng_clock_ms() * 1e3));
    atomic_store(&r->cancel, true);
}

/* Calls the request's notify callback unless it was released. The caller's user data may be
 * freed as soon as eng_request_release returns, so release waits for a callback in progress. */
static void notify(eng_request *r)
{
    pthread_mutex_lock(&r->notify_mu);
    if (r->notify)
        r->notify(r->notify_user, r);
    pthread_mutex_unlock(&r->notify_mu);
}

void eng_request_release(eng_request *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->notify_mu);
    r->notify = NULL;
    pthread_mutex_unlock(&r->notify_mu);
    eng_request_cancel(r);
    request_unref(r);
}

/* Appends output text [r->published, upto) to what readers see. False when the text buffer
 * cannot grow (out of memory): the caller ends the request with an error. */
static bool publish(eng_request *r, const char *out, size_t upto, bool new_token, double now)
{
    bool ok = true;
    pthread_mutex_lock(&r->mu);
    if (upto > r->published) {
        /* Clients get well-formed UTF-8 (a JSON or proto3 string must be): bytes that are not
         * (an invalid byte token, a character cut off by the end of the generation) become
         * U+FFFD, up to 3 bytes each. */
        size_t add = upto - r->published, room = 3 * add;
        if (r->text_len + room > r->text_cap) {
            size_t cap = r->text_cap ? r->text_cap : 256;
            while (cap < r->text_len + room)
                cap *= 2;
            char *t = realloc(r->text, cap);
            if (t) {
                r->text = t;
                r->text_cap = cap;
            } else {
                ok = false;
            }
        }
        if (ok) {
            r->text_len += eng_utf8_sanitize(out + r->published, add, r->text + r->text_len);
            r->published = upto;
        }
    }
    if (new_token) {
        r->n_gen++;
        if (r->t_first == 0)
            r->t_first = now - r->t_submit;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

const double eng_hist_bounds_ms[ENG_HIST_BUCKETS] = {1,    2,    5,    10,    25,    50,
                                                     100,  250,  500,  1000,  2500,  5000,
                                                     10000, 30000, 60000, 120000};

static void hist_observe(eng_hist *h, double ms)
{
    if (ms < 0)
        ms = 0;
    int i = 0;
    while (i < ENG_HIST_BUCKETS && ms > eng_hist_bounds_ms[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_ms += ms;
    if (ms > h->max_ms)
        h->max_ms = ms;
}

/* A request that ended cancelled or superseded (aborted work): what was spent on it, and how
 * long a caller's cancel took to free it (when a caller cancelled it). Called under e->mu,
 * after its blocks are freed. */
static void cancelled_account(eng_engine *e, eng_request *r)
{
    eng_engine_stats *s = &e->stats;
    s->wasted_prompt_tokens += r->n_prompt_computed;
    s->wasted_generated_tokens += r->n_gen;
    int64_t t_us = atomic_load(&r->t_cancel_us);
    if (t_us != 0) /* else the engine's own shutdown: no caller's cancel */
        hist_observe(&s->abort_free_hist, eng_clock_ms() - (double)t_us / 1e3);
}

/* Ends a request: frees its blocks, takes it off every list, wakes readers, drops the
 * engine's reference. */
static void finish(eng_engine *e, eng_request *r, eng_finish f, eng_status st, const char *msg)
{
    sched_remove(e->sched, r);
    if (r->seq) {
        kv_seq_free(e->kv, r->seq);
        r->seq = NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->done = true;
    r->finish = f;
    r->status = st;
    if (msg)
        snprintf(r->error, sizeof r->error, "%s", msg);
    r->t_done = eng_clock_ms() - r->t_submit;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    notify(r);
    pthread_mutex_lock(&e->mu);
    if (!r->admitted_once)
        e->n_waiting_new--; /* cancelled before it ever ran: its queue slot is free again */
    e->stats.requests_finished++;
    if (f == ENG_FINISH_SUPERSEDED)
        e->stats.requests_superseded++;
    if (f == ENG_FINISH_CANCELLED)
        e->stats.requests_cancelled++;
    if (f == ENG_FINISH_CANCELLED || f == ENG_FINISH_SUPERSEDED)
        cancelled_account(e, r);
    if (f == ENG_FINISH_STOP || f == ENG_FINISH_LENGTH) {
        hist_observe(&e->stats.queue_hist, r->t_sched);
        if (r->t_first > 0)
            hist_observe(&e->stats.first_token_hist, r->t_first);
        hist_observe(&e->stats.total_hist, r->t_done);
    }
    pthread_mutex_unlock(&e->mu);
    request_unref(r);
}

/* Bytes of out[0, n) that end on a UTF-8 character boundary (an incomplete trailing
 * sequence is held back until its remaining bytes arrive). */
static size_t utf8_complete(const char *out, size_t n)
{
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)out[n - back];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: keep looking for the lead */
        size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return want > back ? n - back : n;
    }
    return n;
}

/* Takes a sampled token: appends it, checks end-of-generation, stop strings and length, and
 * publishes the text that can no longer become part of a stop string. Returns true when that
 * ended the request (r may be gone then). */
static bool accept_token(eng_engine *e, eng_request *r, int32_t t, double now)
{
    const tok_vocab *v = e->m->vocab;
    r->tokens[r->n_tokens++] = t;
    eng_finish f = ENG_FINISH_NONE;
    bool matched = false;
    size_t keep = 0;
    if (!r->ignore_eos && tok_is_eog(v, t)) {
        f = ENG_FINISH_STOP;
    } else {
        size_t len = 0;
        const char *piece = tok_piece(v, t, &len);
        matched = eng_stop_feed(r->stop, piece, len, &keep);
        if (eng_stop_failed(r->stop)) {
            finish(e, r, ENG_FINISH_ERROR, ENG_ERR_NOMEM, "out of memory for the output text");
            return true;
        }
        if (matched)
            f = ENG_FINISH_STOP;
    }
    if (f == ENG_FINISH_NONE && r->n_tokens - r->n_prompt >= r->max_tokens)
        f = ENG_FINISH_LENGTH;
    size_t olen = 0;
    const char *out = eng_stop_output(r->stop, &olen);
    size_t upto = matched ? keep : f != ENG_FINISH_NONE ? olen : utf8_complete(out, keep);
    if (!publish(r, out, upto, true, now)) {
        finish(e, r, ENG_FINISH_ERROR, ENG_ERR_NOMEM, "out of memory for the output text");
        return true;
    }
    if (f != ENG_FINISH_NONE) {
        finish(e, r, f, ENG_OK, NULL);
        return true;
    }
    notify(r);
    return false;
}

/* A decoding request's pass over its draft (spec.h): drawn[0, k] are the model's tokens at the
 * pass's k + 1 positions. Keeps the K/V of the verified positions only (the last token and the
 * accepted drafts), then takes the accepted drafts and the model's own token one by one, as
 * if decoded without speculation (stop strings, EOS and max_tokens end it mid-run). Returns
 * the tokens taken. */
static int32_t accept_verified(eng_engine *e, eng_request *r, const sched_entry *en,
                               const int32_t *drawn, double now)
{
    int32_t k = en->start + en->len - r->n_tokens;
    int32_t a = spec_accept_count(r->tokens + r->n_tokens, k, drawn);
    spec_req_update(&r->spec, &e->spec, k, a);
    r->n_draft = 0;
    r->n_computed = r->n_tokens + a; /* rejected drafts' positions are rolled back */
    kv_seq_commit(e->kv, r->seq, r->tokens, r->n_computed);
    int32_t taken = 0;
    while (taken <= a)
        if (accept_token(e, r, drawn[taken++], now))
            break;
    e->spec_drafted += k;
    e->spec_accepted += a;
    e->spec_passes++;
    e->spec_emitted += taken;
    return taken;
}

/* Validates a request; *sp gets its sampling parameters as the engine will use them. */
static eng_status check_params(const eng_engine *e, const eng_request_params *p,
                               eng_sampler_params *sp, eng_err *err)
{
    if (p->n_tokens < 0 || (p->n_tokens > 0 && !p->tokens))
        return eng_fail(err, ENG_ERR_INVALID, "bad token array");
    if (p->n_tokens == 0 && (!p->text || p->text_len == 0))
        return eng_fail(err, ENG_ERR_INVALID, "empty prompt");
    if (p->max_tokens < 1)
        return eng_fail(err, ENG_ERR_INVALID, "max_tokens must be at least 1 (got %d)",
                        p->max_tokens);
    if (p->deadline_ms < 0 || p->deadline_ms > MAX_DEADLINE_MS)
        return eng_fail(err, ENG_ERR_INVALID, "deadline_ms must be in [1, %d] (0: the server's "
                        "default), got %d", MAX_DEADLINE_MS, p->deadline_ms);
    if (p->n_stop > MAX_STOPS || (p->n_stop > 0 && !p->stop))
        return eng_fail(err, ENG_ERR_INVALID, "at most %d stop strings", MAX_STOPS);
    for (size_t i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || strlen(p->stop[i]) > MAX_STOP_LEN)
            return eng_fail(err, ENG_ERR_INVALID, "stop string %zu is missing or longer than %d "
                            "bytes", i, MAX_STOP_LEN);
    *sp = p->sampling;
    return eng_sampler_params_check(sp, e->m->hp.n_vocab, err);
}

/* The text a stop string may start in: the prompt's last bytes. */
static eng_status stop_create(const eng_engine *e, const eng_request_params *p,
                              const int32_t *ids, int32_t n, eng_stop **out, eng_err *err)
{
    if (p->n_tokens == 0)
        return eng_stop_create(p->stop, p->n_stop, p->text, p->text_len, out, err);
    int32_t from = n > STOP_CONTEXT_TOKENS ? n - STOP_CONTEXT_TOKENS : 0;
    char buf[4096];
    size_t len = 0;
    if (tok_decode(e->m->vocab, ids + from, (size_t)(n - from), buf, sizeof buf, &len) != ENG_OK)
        len = 0; /* a huge special-token tail: no context, stops still work within the output */
    return eng_stop_create(p->stop, p->n_stop, buf, len, out, err);
}

/* Whether a new request may wait now (the caller holds e->mu): ENG_ERR_CANCELLED while
 * shutting down, ENG_ERR_OVERLOAD (counted as rejected) when max_waiting requests wait. */
static eng_status admission_locked(eng_engine *e, eng_err *err)
{
    if (e->stopping)
        return eng_fail(err, ENG_ERR_CANCELLED, "the engine is shutting down");
    if (e->n_waiting_new >= e->cfg.max_waiting) {
        e->stats.requests_rejected++;
        return eng_fail(err, ENG_ERR_OVERLOAD,
                        "server overloaded: %d requests are already waiting; retry later",
                        e->n_waiting_new);
    }
    return ENG_OK;
}

eng_status eng_engine_admission_check(eng_engine *e, eng_err *err)
{
    pthread_mutex_lock(&e->mu);
    eng_status st = admission_locked(e, err);
    pthread_mutex_unlock(&e->mu);
    return st;
}

/* Positions a prompt + output can reach: max_seq_len, or the whole KV pool if smaller. */
static int64_t max_positions(const eng_engine *e)
{
    int64_t pool_tokens = (int64_t)e->be->n_blocks * e->cfg.block_size;
    return e->cfg.max_seq_len < pool_tokens ? e->cfg.max_seq_len : pool_tokens;
}

size_t eng_engine_max_text_bytes(const eng_engine *e)
{
    return (size_t)MAX_PROMPT_BYTES_PER_TOKEN * (size_t)max_positions(e) - 1;
}

eng_status eng_submit(eng_engine *e, const eng_request_params *p, eng_request **out,
                      eng_err *err)
{
    *out = NULL;
    eng_sampler_params sp;
    eng_status st = check_params(e, p, &sp, err);
    if (st != ENG_OK)
        return st;
    const eng_hparams *hp = &e->m->hp;
    const eng_engine_config *c = &e->cfg;
    int64_t pool_tokens = (int64_t)e->be->n_blocks * c->block_size;
    /* Cheap refusals first, so a flood of huge prompts costs no tokenizing: a full queue (it
     * is checked again when queueing), then text too long to fit whatever it tokenizes to. */
    st = eng_engine_admission_check(e, err);
    if (st != ENG_OK)
        return st;
    if (p->n_tokens == 0 && p->text_len > eng_engine_max_text_bytes(e))
        return eng_fail(err, ENG_ERR_TOO_LONG,
                        "the prompt is %zu bytes of text; this server accepts at most %lld "
                        "tokens, and refuses text over %d bytes per token without tokenizing it",
                        p->text_len, (long long)max_positions(e) - 1, MAX_PROMPT_BYTES_PER_TOKEN);
    int32_t *ids = NULL, n = 0;
    if (p->n_tokens > 0) {
        for (int32_t i = 0; i < p->n_tokens; i++)
            if (p->tokens[i] < 0 || p->tokens[i] >= hp->n_vocab)
                return eng_fail(err, ENG_ERR_INVALID, "token %d at index %d is outside [0, %d)",
                                p->tokens[i], i, hp->n_vocab);
        n = p->n_tokens;
    } else {
        st = eng_model_tokenize(e->m, p->text, p->text_len, true, true, &ids, &n, err);
        if (st != ENG_OK)
            return st;
        if (n == 0) {
            free(ids);
            return eng_fail(err, ENG_ERR_INVALID, "the prompt has no tokens");
        }
    }
    if (n >= c->max_seq_len || n >= pool_tokens) {
        free(ids);
        return eng_fail(err, ENG_ERR_TOO_LONG,
                        "the prompt has %d tokens; this server accepts at most %d (max sequence "
                        "length %d, KV pool %lld tokens, one position is kept for the output)",
                        n, (int32_t)(c->max_seq_len < pool_tokens ? c->max_seq_len : pool_tokens) - 1,
                        c->max_seq_len, (long long)pool_tokens);
    }
    int32_t room = c->max_seq_len - n;
    if (pool_tokens - n < room)
        room = (int32_t)(pool_tokens - n);

    eng_request *r = calloc(1, sizeof *r);
    if (!r) {
        free(ids);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->notify_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&r->refs, 2);
    atomic_init(&r->cancel, false);
    atomic_init(&r->t_cancel_us, 0);
    r->priority = p->priority;
    r->cache_salt = p->cache_salt;
    r->session_key = p->session_key ? session_mix(p->session_key, p->cache_salt) : 0;
    r->n_prompt = n;
    r->max_tokens = p->max_tokens < room ? p->max_tokens : room;
    r->ignore_eos = p->ignore_eos;
    r->notify = p->notify;
    r->notify_user = p->notify_user;
    r->t_submit = eng_clock_ms();
    r->deadline = r->t_submit + (p->deadline_ms > 0 ? p->deadline_ms : c->deadline_ms);
    r->tokens = malloc(sizeof(int32_t) * (size_t)(n + r->max_tokens));
    if (!r->tokens) {
        st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(r->tokens, ids ? ids : p->tokens, sizeof(int32_t) * (size_t)n);
    r->n_tokens = n;
    r->sampling = sp;
    st = stop_create(e, p, r->tokens, n, &r->stop, err);
    if (st != ENG_OK)
        goto fail;
    free(ids);
    ids = NULL;

    /* Checked again under the lock that queues: others may have filled the queue meanwhile. */
    pthread_mutex_lock(&e->mu);
    if ((st = admission_locked(e, err)) == ENG_OK) {
        r->id = e->next_id++;
        e->inbox[e->n_inbox++] = r;
        e->n_waiting_new++;
        e->stats.requests_submitted++;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (st != ENG_OK)
        goto fail;
    *out = r;
    return ENG_OK;
fail:
    free(ids);
    request_destroy(r);
    return st;
}

eng_status eng_request_read(eng_request *r, char *buf, size_t cap, int timeout_ms,
                            eng_request_output *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    if (timeout_ms != 0) {
        struct timespec until = eng_clock_deadline(timeout_ms);
        while (!r->done && r->read_pos == r->text_len && r->n_gen == r->n_gen_read) {
            if (timeout_ms < 0) {
                pthread_cond_wait(&r->cv, &r->mu);
            } else if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT) {
                break;
            }
        }
    }
    size_t n = r->text_len - r->read_pos;
    if (n > cap) {
        /* The text is well-formed UTF-8 (publish): end the chunk on a character boundary, so
         * each read is valid UTF-8 on its own (a cap of 4 or more always makes progress). */
        size_t whole = cap;
        while (whole > 0 && ((unsigned char)r->text[r->read_pos + whole] & 0xC0) == 0x80)
            whole--;
        n = whole > 0 ? whole : cap;
    }
    if (n > 0)
        memcpy(buf, r->text + r->read_pos, n);
    r->read_pos += n;
    out->text_len = n;
    out->n_new_tokens = r->n_gen - r->n_gen_read;
    r->n_gen_read = r->n_gen;
    out->done = r->done && r->read_pos == r->text_len;
    out->finish = r->done ? r->finish : ENG_FINISH_NONE;
    out->status = r->done ? r->status : ENG_OK;
    if (r->done && r->finish == ENG_FINISH_ERROR)
        snprintf(out->error, sizeof out->error, "%s", r->error);
    out->n_prompt_tokens = r->n_prompt;
    out->n_cached_tokens = r->n_cached;
    out->n_output_tokens = r->n_gen;
    out->n_preemptions = r->n_preempt;
    out->queue_ms = r->t_sched;
    out->first_token_ms = r->t_first;
    out->total_ms = r->t_done;
    pthread_mutex_unlock(&r->mu);
    return ENG_OK;
}

int32_t eng_request_tokens(eng_request *r, int32_t *ids, int32_t cap)
{
    pthread_mutex_lock(&r->mu);
    int32_t n = r->n_gen;
    int32_t m = n < cap ? n : cap;
    if (m > 0)
        memcpy(ids, r->tokens + r->n_prompt, sizeof(int32_t) * (size_t)m);
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* ---- the step loop ------------------------------------------------------------------------ */

/* Scheduler hook: the first admission ends the request's time in the queue and frees its
 * place in the max_waiting bound. */
static void on_admit(void *user, eng_request *r, int32_t n_cached)
{
    eng_engine *e = user;
    if (r->admitted_once)
        return;
    r->admitted_once = true;
    pthread_mutex_lock(&r->mu);
    r->n_cached = n_cached;
    r->t_sched = eng_clock_ms() - r->t_submit;
    pthread_mutex_unlock(&r->mu);
    bool late = e->sched->cfg.policy == SCHED_LATENCY && eng_clock_ms() > r->deadline;
    pthread_mutex_lock(&e->mu);
    e->n_waiting_new--;
    e->stats.prompt_tokens_cached += n_cached;
    e->stats.requests_late += late;
    pthread_mutex_unlock(&e->mu);
}

/* Scheduler hook: counts a preemption for the request's reader and the engine's stats. */
static void on_preempt(void *user, eng_request *r)
{
    eng_engine *e = user;
    pthread_mutex_lock(&r->mu);
    r->n_preempt++;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->mu);
    e->stats.preemptions++;
    pthread_mutex_unlock(&e->mu);
}

/* Supersede: ends every request older than r with r's session key (the one rule;
 * eng_request_params.session_key). Their computed prompt blocks stay in the prefix cache. */
static void supersede_older(eng_engine *e, const eng_request *r)
{
    eng_request *old[16];
    int32_t n;
    while ((n = sched_find_superseded(e->sched, r, old, 16)) > 0)
        for (int32_t i = 0; i < n; i++)
            finish(e, old[i], ENG_FINISH_SUPERSEDED, ENG_ERR_CANCELLED,
                   "superseded by a newer request with the same session key");
}

/* Lets each of the n new requests with ids from first (now in the waiting list) supersede
 * the older ones of its session, in submission order, so the newest of a session is left. */
static void supersede_new(eng_engine *e, uint64_t first, int32_t n)
{
    for (uint64_t id = first; id < first + (uint64_t)n; id++) {
        const eng_request *r = NULL;
        for (int32_t i = 0; !r && i < e->sched->n_waiting; i++)
            if (e->sched->waiting[i]->id == id)
                r = e->sched->waiting[i];
        if (r && r->session_key) /* NULL: already superseded by a newer one of the inbox */
            supersede_older(e, r);
    }
}

/* eng_engine_supersede's keys, taken over from e->mu with the inbox they apply after: each
 * ends its session's requests older than its cutoff, by the same rule (a probe request with
 * that key and id stands for the newer one that went to another engine). Frees the arrays. */
static void supersede_remote(eng_engine *e, uint64_t *key, uint64_t *before, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        eng_request probe = {.id = before[i], .session_key = key[i]};
        supersede_older(e, &probe);
    }
    free(key);
    free(before);
}

void eng_engine_supersede(eng_engine *e, uint64_t session_key, uint64_t cache_salt)
{
    if (!session_key || !e->cfg.supersede)
        return;
    pthread_mutex_lock(&e->mu);
    /* Nothing submitted and unfinished: nothing to end. */
    if (e->stats.requests_submitted > e->stats.requests_finished && !e->stopping) {
        if (e->n_remote == e->cap_remote) {
            int32_t cap = e->cap_remote ? 2 * e->cap_remote : 8;
            uint64_t *k = realloc(e->remote_key, sizeof(uint64_t) * (size_t)cap);
            if (k)
                e->remote_key = k;
            uint64_t *b = k ? realloc(e->remote_before, sizeof(uint64_t) * (size_t)cap) : NULL;
            if (b) {
                e->remote_before = b;
                e->cap_remote = cap;
            }
        }
        if (e->n_remote < e->cap_remote) { /* out of memory: the older request runs on */
            e->remote_key[e->n_remote] = session_mix(session_key, cache_salt);
            e->remote_before[e->n_remote++] = e->next_id;
            pthread_cond_signal(&e->cv);
        }
    }
    pthread_mutex_unlock(&e->mu);
}

static void reap_cancelled(eng_engine *e)
{
    for (int32_t i = e->sched->n_running - 1; i >= 0; i--)
        if (atomic_load(&e->sched->running[i]->cancel))
            finish(e, e->sched->running[i], ENG_FINISH_CANCELLED, ENG_ERR_CANCELLED, "cancelled");
    for (int32_t i = e->sched->n_waiting - 1; i >= 0; i--)
        if (atomic_load(&e->sched->waiting[i]->cancel))
            finish(e, e->sched->waiting[i], ENG_FINISH_CANCELLED, ENG_ERR_CANCELLED, "cancelled");
}

static void publish_stats(eng_engine *e, int32_t n_seqs, int32_t n_tokens, int32_t n_gen,
                          int64_t n_prompt, double ms, bool failed)
{
    kv_stats ks;
    kv_cache_stats(e->kv, &ks);
    int64_t reserved = 0, filled = 0;
    for (int32_t i = 0; i < e->sched->n_running; i++) {
        reserved += (int64_t)kv_seq_n_blocks(e->sched->running[i]->seq) * e->cfg.block_size;
        filled += kv_seq_n_tokens(e->sched->running[i]->seq);
    }
    int32_t w = (int32_t)(e->n_stat_steps % STAT_WINDOW);
    e->win_ms[w] = ms;
    e->win_tok[w] = n_gen;
    e->n_stat_steps++;
    e->sum_step_ms += ms;
    e->sum_batch_seqs += n_seqs;
    double wms = 0, wtok = 0;
    for (int32_t i = 0; i < STAT_WINDOW && i < e->n_stat_steps; i++) {
        wms += e->win_ms[i];
        wtok += e->win_tok[i];
    }

    pthread_mutex_lock(&e->mu);
    eng_engine_stats *s = &e->stats;
    s->running = e->sched->n_running;
    s->waiting = e->sched->n_waiting + e->n_inbox;
    s->kv_blocks_total = ks.blocks_total;
    s->kv_blocks_used = ks.blocks_used;
    s->kv_blocks_free = ks.blocks_free;
    s->kv_blocks_cached = ks.blocks_cached;
    s->block_size = e->cfg.block_size;
    s->kv_slots_reserved = reserved;
    s->kv_slots_filled = filled;
    s->prefix_hit_rate = ks.prefix_query_tokens
                             ? (double)ks.prefix_hit_tokens / (double)ks.prefix_query_tokens
                             : 0.0;
    if (n_tokens > 0)
        s->failed_steps_in_a_row = failed ? s->failed_steps_in_a_row + 1 : 0;
    if (n_tokens > 0) {
        s->prompt_tokens_computed += n_prompt;
        s->tokens_generated += n_gen;
        s->steps = e->n_stat_steps;
        if (n_seqs > s->max_batch_seqs)
            s->max_batch_seqs = n_seqs;
        if (n_tokens > s->max_batch_tokens)
            s->max_batch_tokens = n_tokens;
        s->mean_batch_seqs = e->sum_batch_seqs / (double)e->n_stat_steps;
        s->last_step_ms = ms;
        s->mean_step_ms = e->sum_step_ms / (double)e->n_stat_steps;
        s->gen_tokens_per_s = wms > 0 ? wtok * 1e3 / wms : 0.0;
    }
    s->spec_drafted = e->spec_drafted;
    s->spec_accepted = e->spec_accepted;
    s->spec_passes = e->spec_passes;
    s->spec_tokens = e->spec_emitted;
    pthread_mutex_unlock(&e->mu);
}

/* Runs the planned entries as one batch, commits their K/V and samples where a sequence
 * reached its end. */
static void run_step(eng_engine *e)
{
    int32_t k = 0, nl = 0;
    int64_t n_prompt = 0;
    for (int32_t j = 0; j < e->sched->n_plan; j++) {
        const sched_entry *en = &e->sched->plan[j];
        eng_request *r = en->r;
        for (int32_t t = en->start; t < en->start + en->len; t++, k++) {
            e->b_tokens[k] = r->tokens[t];
            e->b_pos[k] = t;
            e->b_seq[k] = j;
            n_prompt += t < r->n_prompt;
            r->n_prompt_computed += t < r->n_prompt;
        }
        /* Logits at the last token and, with a draft (spec.h), at every drafted one. The draw's
         * index: tokens generated before it, the same again after a preemption and the same
         * as without speculation. */
        for (int32_t t = r->n_tokens - 1; t < en->start + en->len; t++) {
            e->b_rows[nl] = (eng_sample_row){.p = r->sampling,
                                             .step = (uint64_t)(t + 1 - r->n_prompt)};
            e->b_logits_idx[nl++] = k - (en->start + en->len - t);
        }
        e->b_tables[j] = kv_seq_blocks(r->seq);
        e->b_prompt_len[j] = r->n_prompt;
    }
    eng_batch b = {.n_tokens = k, .tokens = e->b_tokens, .pos = e->b_pos, .seq = e->b_seq,
                   .block_tables = e->b_tables, .n_seqs = e->sched->n_plan,
                   .logits_idx = e->b_logits_idx, .n_logits = nl,
                   .prompt_len = e->b_prompt_len};
    eng_err err;
    double t0 = eng_clock_ms();
    eng_status st = e->be->ops->forward(e->be, &b, e->b_rows, e->b_next, NULL, &err);
    double t1 = eng_clock_ms();
    sched_observe(e->sched, k, t1 - t0); /* the latency schedule's step-time model */
    int32_t n_seqs = e->sched->n_plan, n_gen = 0;
    if (st != ENG_OK) {
        while (e->sched->n_plan > 0)
            finish(e, e->sched->plan[0].r, ENG_FINISH_ERROR, st, err.msg);
        publish_stats(e, n_seqs, k, 0, 0, t1 - t0, true);
        return;
    }
    /* The plan is emptied first, so finish() (from accept_token) has no entry to remove. */
    int32_t li = 0, n = e->sched->n_plan;
    e->sched->n_plan = 0;
    for (int32_t j = 0; j < n; j++) {
        const sched_entry en = e->sched->plan[j];
        eng_request *r = en.r;
        if (en.start + en.len > r->n_tokens) {
            int32_t rows = en.start + en.len - r->n_tokens + 1; /* r may end in the call */
            n_gen += accept_verified(e, r, &en, e->b_next + li, t1);
            li += rows;
            continue;
        }
        r->n_computed = en.start + en.len;
        kv_seq_commit(e->kv, r->seq, r->tokens, r->n_computed);
        if (en.start + en.len == r->n_tokens) {
            n_gen++;
            accept_token(e, r, e->b_next[li++], t1);
        }
    }
    publish_stats(e, n_seqs, k, n_gen, n_prompt, eng_clock_ms() - t0, false);
}

/* Aborts with the first violated invariant: the KV pool's own accounting, and each running
 * sequence's computed positions agreeing with its request. */
static void check_invariants(eng_engine *e)
{
    eng_err err;
    if (kv_cache_check(e->kv, &err) != ENG_OK) {
        fprintf(stderr, "serval: KV cache invariant broken: %s\n", err.msg);
        ENG_ASSERT(!"kv_cache_check");
    }
    for (int32_t i = 0; i < e->sched->n_running; i++) {
        const eng_request *r = e->sched->running[i];
        ENG_ASSERT(r->seq && kv_seq_n_tokens(r->seq) == r->n_computed);
        ENG_ASSERT(r->n_computed < r->n_tokens);
    }
    for (int32_t i = 0; i < e->sched->n_waiting; i++)
        ENG_ASSERT(e->sched->waiting[i]->seq == NULL);
}

static void *step_loop(void *arg)
{
    eng_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stopping && e->n_inbox == 0 && e->sched->n_running == 0 &&
               e->sched->n_waiting == 0)
            pthread_cond_wait(&e->cv, &e->mu);
        if (e->stopping) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        /* The inbox holds consecutive ids in submission order (eng_submit). */
        uint64_t first_new = e->n_inbox > 0 ? e->inbox[0]->id : 0;
        int32_t n_new = e->n_inbox;
        for (int32_t i = 0; i < e->n_inbox; i++)
            sched_waiting_insert(e->sched, e->inbox[i]);
        e->n_inbox = 0;
        /* with the inbox: every request older than a cutoff is in the lists now */
        uint64_t *rkey = e->remote_key, *rbefore = e->remote_before;
        int32_t n_remote = e->n_remote;
        e->remote_key = e->remote_before = NULL;
        e->n_remote = e->cap_remote = 0;
        pthread_mutex_unlock(&e->mu);

        if (e->cfg.supersede)
            supersede_new(e, first_new, n_new);
        supersede_remote(e, rkey, rbefore, n_remote);
        reap_cancelled(e);
        spec_step_draft(e->sched, &e->spec);
        e->sched->now = eng_clock_ms();
        if (sched_step_plan(e->sched) > 0)
            run_step(e);
        else
            publish_stats(e, 0, 0, 0, 0, 0, false); /* everything was cancelled: show the freed blocks */
        if (e->cfg.check_invariants)
            check_invariants(e);
    }
    return NULL;
}

/* ---- engine -------------------------------------------------------------------------------- */

static eng_status config_resolve(const eng_model *m, const eng_engine_config *in,
                                 eng_engine_config *c, eng_err *err)
{
    *c = *in;
    if (c->tp == 0)
        c->tp = 1;
    if (c->tp < 1 || c->tp > 64)
        return eng_fail(err, ENG_ERR_INVALID, "tensor-parallel degree %d outside [1, 64]", c->tp);
    if (c->n_gpus < 0 || c->n_gpus > 64)
        return eng_fail(err, ENG_ERR_INVALID, "%d GPUs outside [0, 64]", c->n_gpus);
    if (c->n_gpus > 0 && c->backend != ENG_BACKEND_CUDA)
        return eng_fail(err, ENG_ERR_INVALID, "%d GPUs named (--gpus) for the CPU backend: "
                        "GPUs are for the cuda backend", c->n_gpus);
    if (c->n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->n_threads = n > 0 ? (int)n : 1;
        if (c->n_threads < c->tp) /* one thread per rank at least */
            c->n_threads = c->tp;
    }
    if (c->kv_bytes == 0 && c->backend == ENG_BACKEND_CPU)
        c->kv_bytes = (int64_t)1 << 30; /* the CUDA backend sizes its pool from free memory */
    if (c->block_size == 0)
        c->block_size = 16;
    if (c->max_seq_len == 0)
        c->max_seq_len = m->hp.n_ctx_train < 8192 ? m->hp.n_ctx_train : 8192;
    if (c->max_running == 0)
        c->max_running = 64;
    if (c->max_waiting == 0)
        c->max_waiting = 256;
    if (c->step_tokens == 0)
        c->step_tokens = 512;
    if (c->deadline_ms == 0)
        c->deadline_ms = DEFAULT_DEADLINE_MS;
    if (c->deadline_ms < 1 || c->deadline_ms > MAX_DEADLINE_MS)
        return eng_fail(err, ENG_ERR_INVALID, "deadline %d ms outside [1, %d]", c->deadline_ms,
                        MAX_DEADLINE_MS);
    if (c->schedule != ENG_SCHEDULE_LATENCY && c->schedule != ENG_SCHEDULE_THROUGHPUT)
        return eng_fail(err, ENG_ERR_INVALID, "unknown schedule %d", (int)c->schedule);
    if (c->draft_max == 0)
        c->draft_max = 8;
    if (c->spec_step_tokens == 0) /* where a step turns compute-bound: bench/RESULTS.md */
        c->spec_step_tokens = c->backend == ENG_BACKEND_CPU ? 8 : 64;
    if (c->n_threads < 1 || c->n_threads > 256)
        return eng_fail(err, ENG_ERR_INVALID, "threads %d outside [1, 256]", c->n_threads);
    if (c->kv_bytes < 0)
        return eng_fail(err, ENG_ERR_INVALID, "negative KV budget");
    if (c->block_size < 1 || c->block_size > 1024)
        return eng_fail(err, ENG_ERR_INVALID, "block size %d outside [1, 1024]", c->block_size);
    if (c->max_seq_len < 2 || c->max_seq_len > m->hp.n_ctx_train)
        return eng_fail(err, ENG_ERR_INVALID,
                        "max sequence length %d outside [2, %d] (the model's training context)",
                        c->max_seq_len, m->hp.n_ctx_train);
    if (c->max_running < 1 || c->max_running > 4096)
        return eng_fail(err, ENG_ERR_INVALID, "max running %d outside [1, 4096]", c->max_running);
    if (c->max_waiting < 1 || c->max_waiting > 1000000)
        return eng_fail(err, ENG_ERR_INVALID, "max waiting %d outside [1, 1000000]",
                        c->max_waiting);
    if (c->speculate < ENG_SPECULATE_DEFAULT || c->speculate > ENG_SPECULATE_OFF)
        return eng_fail(err, ENG_ERR_INVALID, "speculate mode %d unknown", (int)c->speculate);
    if (c->draft_max < 1 || c->draft_max > SPEC_DRAFT_CAP)
        return eng_fail(err, ENG_ERR_INVALID, "draft max %d outside [1, %d]", c->draft_max,
                        SPEC_DRAFT_CAP);
    if (c->spec_step_tokens < 1 || c->spec_step_tokens > 65536)
        return eng_fail(err, ENG_ERR_INVALID, "speculation step tokens %d outside [1, 65536]",
                        c->spec_step_tokens);
    if (c->step_tokens < c->max_running || c->step_tokens > 65536)
        return eng_fail(err, ENG_ERR_INVALID,
                        "step token budget %d outside [max_running = %d, 65536]", c->step_tokens,
                        c->max_running);
    return ENG_OK;
}

eng_status eng_engine_create(const eng_model *m, const eng_engine_config *cfg, eng_engine **out,
                             eng_err *err)
{
    *out = NULL;
    eng_engine_config c;
    eng_status st = config_resolve(m, cfg, &c, err);
    if (st != ENG_OK)
        return st;
    eng_engine *e = calloc(1, sizeof *e);
    if (!e)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    e->m = m;
    e->cfg = c;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    bool spec_on = c.speculate == ENG_SPECULATE_ON ||
                   (c.speculate == ENG_SPECULATE_DEFAULT && c.backend == ENG_BACKEND_CPU);
    e->spec = (spec_config){.on = spec_on, .draft_max = c.draft_max,
                            .step_tokens = c.spec_step_tokens, .min_rate = 0.3f};
    /* logits rows: one per decoding request plus one per drafted token */
    int32_t max_logits = c.max_running + (e->spec.on ? c.spec_step_tokens : 0);
    if (max_logits > c.step_tokens)
        max_logits = c.step_tokens;
    eng_backend_config bc = {.kv_bytes = c.kv_bytes,
                             .block_size = c.block_size,
                             .min_blocks = (c.max_seq_len + c.block_size - 1) / c.block_size,
                             .max_pos = c.max_seq_len,
                             .max_tokens = c.step_tokens,
                             .max_logits = max_logits,
                             .n_threads = c.n_threads,
                             .tp = c.tp,
                             .gpus = c.n_gpus > 0 ? e->cfg.gpus : NULL,
                             .n_gpus = c.n_gpus,
                             .cuda_graphs = !c.no_cuda_graphs,
                             .cuda_fp16 = c.cuda_fp16};
    if (c.backend == ENG_BACKEND_CPU) {
        st = eng_backend_cpu_create(m, &bc, &e->be, err);
    } else {
#ifdef SERVAL_HAVE_CUDA
        st = eng_backend_cuda_create(m, &bc, &e->be, err);
#else
        st = eng_fail(err, ENG_ERR_UNSUPPORTED,
                      "this build has no CUDA backend (it was built without nvcc); use the CPU "
                      "backend");
#endif
    }
    if (st == ENG_OK)
        st = kv_cache_create(e->be->n_blocks, c.block_size, c.prefix_caching, &e->kv, err);
    if (st == ENG_OK) {
        sched_config sc = {.policy = c.schedule == ENG_SCHEDULE_LATENCY ? SCHED_LATENCY
                                                                        : SCHED_THROUGHPUT,
                           .step_tokens = c.step_tokens, .max_running = c.max_running,
                           .max_waiting = c.max_waiting, .on_admit = on_admit,
                           .on_preempt = on_preempt, .user = e};
        st = sched_create(e->kv, &sc, &e->sched, err);
    }
    if (st != ENG_OK)
        goto fail;
    size_t nr = (size_t)c.max_running, nt = (size_t)c.step_tokens;
    e->inbox = calloc((size_t)c.max_waiting, sizeof *e->inbox);
    e->b_tokens = malloc(nt * sizeof(int32_t));
    e->b_pos = malloc(nt * sizeof(int32_t));
    e->b_seq = malloc(nt * sizeof(int32_t));
    e->b_logits_idx = malloc(nt * sizeof(int32_t));
    e->b_tables = calloc(nr, sizeof *e->b_tables);
    e->b_prompt_len = calloc(nr, sizeof *e->b_prompt_len);
    e->b_rows = malloc((size_t)max_logits * sizeof *e->b_rows);
    e->b_next = malloc((size_t)max_logits * sizeof(int32_t));
    if (!e->inbox || !e->b_tokens || !e->b_pos || !e->b_seq || !e->b_logits_idx || !e->b_tables ||
        !e->b_prompt_len || !e->b_rows || !e->b_next) {
        st = eng_fail(err, ENG_ERR_NOMEM, "out of memory allocating engine buffers");
        goto fail;
    }
    publish_stats(e, 0, 0, 0, 0, 0, false);
    if (pthread_create(&e->thread, NULL, step_loop, e) != 0) {
        st = eng_fail(err, ENG_ERR_NOMEM, "cannot start the step-loop thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return ENG_OK;
fail:
    eng_engine_free(e);
    return st;
}

void eng_engine_free(eng_engine *e)
{
    if (!e)
        return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    /* The loop has stopped: this thread owns every list now. */
    if (e->sched) {
        sched_state *s = e->sched;
        for (int32_t i = 0; i < e->n_inbox; i++)
            sched_waiting_insert(s, e->inbox[i]);
        e->n_inbox = 0;
        s->n_plan = 0;
        while (s->n_running > 0)
            finish(e, s->running[0], ENG_FINISH_CANCELLED, ENG_ERR_CANCELLED, "engine shut down");
        while (s->n_waiting > 0)
            finish(e, s->waiting[0], ENG_FINISH_CANCELLED, ENG_ERR_CANCELLED, "engine shut down");
        sched_free(s);
    }
    kv_cache_free(e->kv);
    if (e->be)
        e->be->ops->free(e->be);
    free(e->inbox);
    free(e->remote_key);
    free(e->remote_before);
    free(e->b_tokens);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_logits_idx);
    free(e->b_tables);
    free(e->b_prompt_len);
    free(e->b_rows);
    free(e->b_next);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

void eng_engine_stats_get(eng_engine *e, eng_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}
