/* spec.h — speculative decoding drafted from the prompt (prompt-lookup decoding): the draft of
 * a decoding request, the rule that verifies it, the per-request draft length, and how many
 * drafted tokens a step can afford. */
#ifndef SERVAL_SPEC_H
#define SERVAL_SPEC_H

/*
 * A code completion copies from its own context: the prompt (prefix, suffix, retrieved
 * snippets) and what it generated so far. Each step, a decoding request whose last n tokens
 * (n = 3, then 2, then 1) occurred earlier in its context proposes the tokens that followed the
 * most recent occurrence (spec_draft_find). The engine writes the k drafted tokens after the
 * request's last token (r->tokens[n_tokens .. n_tokens + k), scratch that holds nothing yet)
 * and sets r->n_draft = k; the scheduler plans the request as one entry of 1 + k positions
 * [n_tokens - 1, n_tokens + k) (scheduler.h, pass 0). The backend computes the entry with
 * logits at each of its 1 + k positions and samples each row with the request's sampler and
 * the draw index it would have without speculation (tokens generated before it), giving
 * y_0 .. y_k.
 *
 * Verification (spec_accept_count): d_i is accepted while y_{i-1} == d_i; the request gets the
 * a accepted drafts and then y_a, the model's own token at the first disagreement (or after
 * the last draft): a + 1 tokens from one pass. This is exact for any sampler, because the
 * draft is a point mass on d: y ~ p, so d is accepted with probability p(d), and on rejection
 * y is distributed as p with d removed and renormalised — the speculative-sampling rule for a
 * point-mass draft. Since each y_i uses the same (seed, draw index) as the non-speculative
 * draw of that token, greedy and seeded output are the same token for token with speculation
 * on and off (given the same logits).
 *
 * Rollback: only positions [n_tokens - 1, n_tokens + a) hold K/V of verified tokens; the
 * engine sets n_computed to n_tokens + a and commits exactly that (kv_seq_commit hashes only
 * blocks that became full below it). The K/V written for the rejected drafts stay in the
 * sequence's own, unshared tail blocks (only full committed blocks are ever shared or
 * registered), are never attended to (a token attends to positions <= its own), and are
 * overwritten when those positions are computed for real. Blocks reserved past n_computed stay
 * in the table and are used by the next steps.
 *
 * Not thread-safe: the step loop calls everything here.
 */

#include <stdbool.h>
#include <stdint.h>

#include "scheduler.h"

enum {
    SPEC_DRAFT_CAP = 16,   /* most drafted tokens per request per step (--draft-max limit) */
    SPEC_NGRAM_MAX = 3,    /* longest suffix matched against the context */
    SPEC_PROBE_STEPS = 16, /* steps a request waits before drafting again after low acceptance */
};

/* A request's speculation state, zeroed at submit. */
typedef struct spec_req {
    int32_t len;       /* draft length to try next, [1, draft_max]; 0: not started (the start
                        * length, 4 or draft_max if smaller) */
    int32_t cooldown;  /* steps left without drafting (acceptance was low) */
    float rate;        /* acceptance rate, exponentially averaged over passes */
    int32_t n_passes;  /* verification passes so far */
} spec_req;

/* The engine's speculation settings (resolved: no zeros meaning defaults). */
typedef struct spec_config {
    bool on;
    int32_t draft_max;   /* [1, SPEC_DRAFT_CAP] */
    int32_t step_tokens; /* a step is compute-bound above this many tokens: drafts are added
                          * only to a step whose own tokens (decodes, prefill chunks) are at
                          * most a quarter of it, and only while the step with its drafts
                          * stays within it */
    float min_rate;      /* below this averaged acceptance a request pauses drafting */
} spec_config;

/* Finds a draft for the context tokens[0, n): the longest suffix of n-gram size g
 * (SPEC_NGRAM_MAX down to 1, g < n) that occurs earlier in tokens, at its most recent earlier
 * occurrence, and copies up to cap (<= SPEC_DRAFT_CAP) of the tokens that followed it into
 * out[cap]. Returns how many (0: no match). Tokens are compared, never interpreted.
 * O(n * SPEC_NGRAM_MAX) in the worst case. */
int32_t spec_draft_find(const int32_t *tokens, int32_t n, int32_t cap, int32_t *out);

/* The verification rule: draft[k] proposed after the last token, sampled[k + 1] the tokens the
 * model drew at the k + 1 positions of the pass. Returns a, the number of leading drafts that
 * agree (draft[i] == sampled[i] for i < a); the pass yields draft[0, a) then sampled[a]. */
int32_t spec_accept_count(const int32_t *draft, int32_t k, const int32_t *sampled);

/* The draft length to ask for now: 0 while cooling down (and counts that step down), else
 * s->len. Call once per step per decoding request. */
int32_t spec_req_want(spec_req *s, const spec_config *c);

/* Adapts after a pass that drafted k tokens and accepted a of them: the length grows by one
 * on full acceptance and shrinks to a + 1 (at least 1, at most one less than before) on a
 * rejection; the averaged rate below c->min_rate (after a few passes) starts a cooldown of
 * SPEC_PROBE_STEPS, after which the request probes again with one token. */
void spec_req_update(spec_req *s, const spec_config *c, int32_t k, int32_t a);

/* Drafts for the step about to be planned (call right before sched_step_plan). Every running
 * request's n_draft is reset to 0; then, if the step's own tokens are at most a quarter of
 * c->step_tokens, and while the step stays within c->step_tokens, each
 * decoding request in service order gets min(spec_req_want, what spec_draft_find finds, what
 * the step has left, max_tokens - generated - 1) drafted tokens written at r->tokens[n_tokens
 * ...). The step's tokens without drafts are counted as one per decoding request, the prompt
 * left to compute of each prefilling one and, while a batch slot is free, the whole prompt of
 * the head of the waiting list: a prefill chunk makes the step compute-bound, and so do many
 * decodes, so then nothing is drafted. Returns the tokens drafted in all. O(running requests *
 * their context length). */
int32_t spec_step_draft(sched_state *s, const spec_config *c);

#endif
