/* sampler.c — greedy/temperature/top-k/top-p sampling with a per-sampler xoshiro256** RNG,
 * and the stop-string matcher. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

eng_sampler_params eng_sampler_defaults(void)
{
    eng_sampler_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
    return p;
}

eng_status eng_sampler_params_check(const eng_sampler_params *p, eng_err *err)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return eng_fail(err, ENG_ERR_INVALID, "temperature %g is outside [0, 100]",
                        (double)p->temperature);
    if (p->top_k < 0)
        return eng_fail(err, ENG_ERR_INVALID, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return eng_fail(err, ENG_ERR_INVALID, "top_p %g is outside (0, 1]", (double)p->top_p);
    return ENG_OK;
}

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct eng_sampler {
    eng_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    cand *cands; /* [n_vocab] scratch */
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double rng_uniform(eng_sampler *s) { return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53; }

eng_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out,
                              eng_err *err)
{
    *out = NULL;
    eng_status st = eng_sampler_params_check(p, err);
    if (st != ENG_OK)
        return st;
    if (n_vocab < 1)
        return eng_fail(err, ENG_ERR_INVALID, "sampler: empty vocabulary");
    eng_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->cands = malloc(sizeof(cand) * (size_t)n_vocab))) {
        free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "sampler: out of memory");
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return ENG_OK;
}

void eng_sampler_free(eng_sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s);
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return x->id - y->id; /* ties: lower id first, so order is deterministic */
}

int32_t eng_sampler_sample(eng_sampler *s, const float *logits)
{
    const int32_t n = s->n_vocab;
    if (s->p.temperature <= 0.0f)
        return argmax(logits, n);
    int32_t k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    for (int32_t i = 0; i < n; i++) {
        s->cands[i].logit = logits[i];
        s->cands[i].id = i;
    }
    /* Top-k: a full sort is simple and fast enough for 50-150k vocabularies once per token;
     * when k is small, partially select first to sort only k candidates. */
    if (k < n) {
        /* quickselect the k largest into the front */
        int32_t lo = 0, hi = n - 1;
        while (lo < hi) {
            cand pivot = s->cands[(lo + hi) / 2];
            int32_t i = lo, j = hi;
            while (i <= j) {
                while (cand_desc(&s->cands[i], &pivot) < 0) i++;
                while (cand_desc(&s->cands[j], &pivot) > 0) j--;
                if (i <= j) {
                    cand t = s->cands[i];
                    s->cands[i] = s->cands[j];
                    s->cands[j] = t;
                    i++;
                    j--;
                }
            }
            if (k - 1 <= j)
                hi = j;
            else if (k - 1 >= i)
                lo = i;
            else
                break;
        }
    }
    qsort(s->cands, (size_t)k, sizeof(cand), cand_desc);
    /* softmax with temperature over the k candidates (already sorted, max first) */
    const float inv_t = 1.0f / s->p.temperature, mx = s->cands[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < k; i++) {
        float e = expf((s->cands[i].logit - mx) * inv_t);
        s->cands[i].logit = e; /* reuse as unnormalised probability */
        sum += e;
    }
    /* top-p: keep the smallest prefix whose mass reaches top_p */
    int32_t keep = k;
    if (s->p.top_p < 1.0f) {
        double acc = 0.0;
        for (int32_t i = 0; i < k; i++) {
            acc += s->cands[i].logit;
            if (acc >= s->p.top_p * sum) {
                keep = i + 1;
                sum = acc;
                break;
            }
        }
    }
    double r = rng_uniform(s) * sum, acc = 0.0;
    for (int32_t i = 0; i < keep; i++) {
        acc += s->cands[i].logit;
        if (r < acc)
            return s->cands[i].id;
    }
    return s->cands[keep - 1].id;
}

/* ---- stop strings ------------------------------------------------------------------------- */

struct eng_stop {
    char **stops;
    size_t *lens;
    size_t n;
    size_t max_len;
    char *buf;       /* context tail + output */
    size_t ctx_len;  /* bytes of context at the start of buf */
    size_t len, cap;
    bool failed;     /* an allocation failed: the output stops where it was */
};

bool eng_stop_failed(const eng_stop *s) { return s->failed; }

eng_status eng_stop_create(const char *const *stops, size_t n, const char *context,
                           size_t context_len, eng_stop **out, eng_err *err)
{
    *out = NULL;
    eng_stop *s = calloc(1, sizeof *s);
    if (!s)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->stops = calloc(n ? n : 1, sizeof *s->stops);
    s->lens = calloc(n ? n : 1, sizeof *s->lens);
    if (!s->stops || !s->lens)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        if (l == 0)
            continue;
        if (!(s->stops[s->n] = malloc(l + 1)))
            goto nomem;
        memcpy(s->stops[s->n], stops[i], l + 1);
        s->lens[s->n++] = l;
        if (l > s->max_len)
            s->max_len = l;
    }
    /* Only the context's last max_len - 1 bytes can take part in a straddling match. */
    size_t keep_ctx = s->max_len > 1 ? s->max_len - 1 : 0;
    if (!context)
        context_len = 0;
    if (context_len > keep_ctx) {
        context += context_len - keep_ctx;
        context_len = keep_ctx;
    }
    s->cap = 256 + context_len;
    if (!(s->buf = malloc(s->cap)))
        goto nomem;
    if (context_len > 0)
        memcpy(s->buf, context, context_len);
    s->ctx_len = s->len = context_len;
    *out = s;
    return ENG_OK;
nomem:
    eng_stop_free(s);
    return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
}

void eng_stop_free(eng_stop *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->stops[i]);
    free(s->stops);
    free(s->lens);
    free(s->buf);
    free(s);
}

bool eng_stop_feed(eng_stop *s, const char *piece, size_t len, size_t *keep)
{
    size_t old = s->len;
    if (s->len + len + 1 > s->cap) {
        size_t cap = (s->len + len + 1) * 2;
        char *b = realloc(s->buf, cap);
        if (!b) { /* out of memory: report a stop here; eng_stop_failed tells it apart */
            s->failed = true;
            *keep = s->len > s->ctx_len ? s->len - s->ctx_len : 0;
            return true;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, piece, len);
    s->len += len;
    s->buf[s->len] = '\0';
    /* A new match must end inside the new bytes, so it starts at or after old - max_len + 1. */
    size_t best_start = SIZE_MAX;
    for (size_t i = 0; i < s->n; i++) {
        size_t l = s->lens[i];
        if (l > s->len)
            continue;
        size_t from = old + 1 > l ? old + 1 - l : 0;
        for (size_t p = from; p + l <= s->len; p++) {
            if (p + l <= s->ctx_len)
                continue; /* lies wholly inside the context */
            if (memcmp(s->buf + p, s->stops[i], l) == 0) {
                if (p < best_start)
                    best_start = p;
                break;
            }
        }
    }
    if (best_start != SIZE_MAX) {
        *keep = best_start > s->ctx_len ? best_start - s->ctx_len : 0;
        return true;
    }
    /* Hold back the longest tail that is a prefix of some stop string. */
    size_t hold = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t l = s->lens[i];
        for (size_t h = l - 1; h > hold; h--) {
            if (h <= s->len && memcmp(s->buf + s->len - h, s->stops[i], h) == 0) {
                hold = h;
                break;
            }
        }
    }
    size_t out_len = s->len - s->ctx_len;
    *keep = hold < out_len ? out_len - hold : 0;
    return false;
}

const char *eng_stop_output(const eng_stop *s, size_t *len)
{
    *len = s->len - s->ctx_len;
    return s->buf + s->ctx_len;
}
