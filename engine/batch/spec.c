/* spec.c — prompt-lookup speculative decoding (spec.h): finds drafts in a request's own
 * context, verifies them against the model's draws, adapts each request's draft length and
 * keeps drafts out of compute-bound steps. */
#include "spec.h"

#include <string.h>

#include "engine_impl.h"

enum { SPEC_START_LEN = 4, SPEC_MIN_PASSES = 4 };

int32_t spec_draft_find(const int32_t *tokens, int32_t n, int32_t cap, int32_t *out)
{
    if (cap > SPEC_DRAFT_CAP)
        cap = SPEC_DRAFT_CAP;
    for (int32_t g = SPEC_NGRAM_MAX; g >= 1; g--) {
        if (g >= n || cap < 1)
            continue;
        const int32_t *key = tokens + n - g;
        /* most recent earlier occurrence first: the nearest copy is the likeliest to continue */
        for (int32_t i = n - g - 1; i >= 0; i--) {
            if (tokens[i] != key[0] || memcmp(tokens + i, key, sizeof(int32_t) * (size_t)g) != 0)
                continue;
            int32_t from = i + g, k = n - from < cap ? n - from : cap;
            memcpy(out, tokens + from, sizeof(int32_t) * (size_t)k);
            return k;
        }
    }
    return 0;
}

int32_t spec_accept_count(const int32_t *draft, int32_t k, const int32_t *sampled)
{
    int32_t a = 0;
    while (a < k && sampled[a] == draft[a])
        a++;
    return a;
}

int32_t spec_req_want(spec_req *s, const spec_config *c)
{
    if (s->len == 0)
        s->len = SPEC_START_LEN < c->draft_max ? SPEC_START_LEN : c->draft_max;
    if (s->cooldown > 0) {
        s->cooldown--;
        return 0;
    }
    return s->len < c->draft_max ? s->len : c->draft_max;
}

void spec_req_update(spec_req *s, const spec_config *c, int32_t k, int32_t a)
{
    if (k <= 0)
        return;
    if (a == k) {
        s->len = k + 1 < c->draft_max ? k + 1 : c->draft_max;
    } else {
        int32_t len = a + 1 < k - 1 ? a + 1 : k - 1;
        s->len = len > 1 ? len : 1;
    }
    float r = (float)a / (float)k;
    s->rate = s->n_passes == 0 ? r : 0.7f * s->rate + 0.3f * r;
    s->n_passes++;
    if (s->n_passes >= SPEC_MIN_PASSES && s->rate < c->min_rate) {
        /* pause, then probe with one token; a fresh start for the average */
        s->cooldown = SPEC_PROBE_STEPS;
        s->len = 1;
        s->n_passes = 0;
    }
}

int32_t spec_step_draft(sched_state *s, const spec_config *c)
{
    int32_t load = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        eng_request *r = s->running[i];
        r->n_draft = 0;
        load += r->n_tokens - r->n_computed;
    }
    if (s->n_waiting > 0 && s->n_running < s->cfg.max_running)
        load += s->waiting[0]->n_tokens;
    /* Drafts only while the step's own tokens are at most a quarter of the budget (CPU: 1-2
     * decode rows): the few-token matmuls made 3-4-row steps cheap, and drafts pushing them
     * to the budget cost more than they saved (bench/RESULTS.md, fourth session: on/off 0.92
     * at batch 3, 0.85-0.90 at batch 4; 1.09-1.47 at batch 1-2). */
    if (!c->on || 4 * load > c->step_tokens)
        return 0;
    int32_t left = c->step_tokens - load, total = 0;
    for (int32_t i = 0; i < s->n_running && left > 0; i++) {
        eng_request *r = s->running[i];
        if (r->n_tokens - r->n_computed != 1)
            continue;
        int32_t cap = spec_req_want(&r->spec, c);
        int32_t room = r->max_tokens - (r->n_tokens - r->n_prompt) - 1;
        cap = cap < room ? cap : room;
        cap = cap < left ? cap : left;
        if (cap <= 0)
            continue;
        /* the draft goes right after the last token, into r->tokens' unused tail */
        int32_t k = spec_draft_find(r->tokens, r->n_tokens, cap, r->tokens + r->n_tokens);
        r->n_draft = k;
        left -= k;
        total += k;
    }
    return total;
}
