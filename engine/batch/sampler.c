/* sampler.c — greedy/temperature/top-k/top-p sampling as a pure function of (logits, params,
 * draw counter), the same rule kernels/sampling.cu follows on the GPU, and the stop-string
 * matcher. */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample_rng.h" /* eng_sample_uniform: the draw the GPU kernel shares */

eng_sampler_params eng_sampler_defaults(void)
{
    eng_sampler_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
    return p;
}

eng_status eng_sampler_params_check(eng_sampler_params *p, int32_t n_vocab, eng_err *err)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return eng_fail(err, ENG_ERR_INVALID, "temperature %g is outside [0, 100]",
                        (double)p->temperature);
    if (p->top_k < 0)
        return eng_fail(err, ENG_ERR_INVALID, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return eng_fail(err, ENG_ERR_INVALID, "top_p %g is outside (0, 1]", (double)p->top_p);
    if (n_vocab > 0 && p->top_k > n_vocab)
        p->top_k = n_vocab;
    return ENG_OK;
}

struct eng_sampler {
    eng_sampler_params p;
    int32_t n_vocab;
    uint64_t step;  /* draws so far: the next draw's counter */
    float *scratch; /* [n_vocab] */
};

eng_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out,
                              eng_err *err)
{
    *out = NULL;
    if (n_vocab < 1)
        return eng_fail(err, ENG_ERR_INVALID, "sampler: empty vocabulary");
    eng_sampler_params checked = *p;
    eng_status st = eng_sampler_params_check(&checked, n_vocab, err);
    if (st != ENG_OK)
        return st;
    eng_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->scratch = malloc(sizeof(float) * (size_t)n_vocab))) {
        free(s);
        return eng_fail(err, ENG_ERR_NOMEM, "sampler: out of memory");
    }
    s->p = checked;
    s->n_vocab = n_vocab;
    *out = s;
    return ENG_OK;
}

void eng_sampler_free(eng_sampler *s)
{
    if (!s)
        return;
    free(s->scratch);
    free(s);
}

int32_t eng_sampler_sample(eng_sampler *s, const float *logits)
{
    return eng_sample(logits, s->n_vocab, &s->p, s->step++, s->scratch);
}

static void swapf(float *a, float *b)
{
    float t = *a;
    *a = *b;
    *b = t;
}

/* Three-way partition of v[lo, hi) around pv: [lo, *gt) > pv, [*gt, *lt) == pv, [*lt, hi) < pv. */
static void partition3(float *v, int32_t lo, int32_t hi, float pv, int32_t *gt, int32_t *lt)
{
    int32_t i = lo, a = lo, b = hi;
    while (i < b) {
        if (v[i] > pv)
            swapf(&v[a++], &v[i++]);
        else if (v[i] < pv)
            swapf(&v[i], &v[--b]);
        else
            i++;
    }
    *gt = a;
    *lt = b;
}

/* Restores the min-heap h[0, k) below position i. */
static void heap_sift_down(float *h, int32_t k, int32_t i)
{
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= k)
            return;
        if (c + 1 < k && h[c + 1] < h[c])
            c++;
        if (h[i] <= h[c])
            return;
        swapf(&h[i], &h[c]);
        i = c;
    }
}

enum { HEAP_K_MAX = 256 };

/* The k-th largest of v[0, n) (1 <= k <= n); may reorder v. Small k (the usual top-k) keeps
 * a min-heap of the k largest seen: one predictable pass, since few values beat its root.
 * Larger k partitions around pivots: expected O(n), but a mispredicted branch per element. */
static float kth_largest(float *v, int32_t n, int32_t k)
{
    if (k <= HEAP_K_MAX) {
        float h[HEAP_K_MAX];
        for (int32_t i = 0; i < k; i++)
            h[i] = v[i];
        for (int32_t i = k / 2 - 1; i >= 0; i--)
            heap_sift_down(h, k, i);
        for (int32_t i = k; i < n; i++)
            if (v[i] > h[0]) {
                h[0] = v[i];
                heap_sift_down(h, k, 0);
            }
        return h[0];
    }
    int32_t lo = 0, hi = n;
    for (;;) {
        float pv = v[lo + (hi - lo) / 2];
        int32_t gt, lt;
        partition3(v, lo, hi, pv, &gt, &lt);
        if (k <= gt)
            hi = gt;
        else if (k <= lt)
            return pv;
        else
            lo = lt;
    }
}

/* The top-p threshold over the n values in v (temperature-scaled logits, zmax their maximum):
 * walking the values from the largest down, the value at which the softmax mass first reaches
 * top_p of the total. Ties at that value are all kept. Reorders v; expected O(n). */
static float top_p_threshold(float *v, int32_t n, float zmax, double top_p)
{
    double total = 0.0;
    for (int32_t i = 0; i < n; i++)
        total += exp((double)v[i] - zmax);
    double need = top_p * total;
    int32_t lo = 0, hi = n;
    float last = v[0];
    while (lo < hi) {
        float pv = v[lo + (hi - lo) / 2];
        int32_t gt, lt;
        partition3(v, lo, hi, pv, &gt, &lt);
        double m_gt = 0.0, m_eq = 0.0;
        for (int32_t i = lo; i < gt; i++)
            m_gt += exp((double)v[i] - zmax);
        for (int32_t i = gt; i < lt; i++)
            m_eq += exp((double)v[i] - zmax);
        if (m_gt >= need && gt > lo) {
            hi = gt;
        } else if (m_gt + m_eq >= need) {
            return pv;
        } else {
            need -= m_gt + m_eq;
            last = pv;
            lo = lt;
        }
    }
    return last; /* rounding left the mass just short: keep everything seen */
}

int32_t eng_sample(const float *logits, int32_t n, const eng_sampler_params *p, uint64_t step,
                   float *scratch)
{
    if (p->temperature <= 0.0f) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++)
            if (logits[i] > logits[best])
                best = i;
        return best;
    }
    const float inv_t = 1.0f / p->temperature;
    float zmax = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        scratch[i] = logits[i] * inv_t;
        zmax = fmaxf(zmax, scratch[i]);
    }
    float thr = -INFINITY;
    int32_t n_keep = n;
    if (p->top_k > 0 && p->top_k < n) {
        thr = kth_largest(scratch, n, p->top_k);
        n_keep = 0; /* the kept values to the front, ties at the k-th value included */
        for (int32_t i = 0; i < n; i++)
            if (scratch[i] >= thr)
                scratch[n_keep++] = scratch[i];
    }
    if (p->top_p < 1.0f)
        thr = top_p_threshold(scratch, n_keep, zmax, (double)p->top_p);
    /* one draw, walked over the kept tokens in vocabulary order */
    double mass = 0.0;
    for (int32_t i = 0; i < n; i++) {
        const float z = logits[i] * inv_t;
        if (z >= thr)
            mass += exp((double)z - zmax);
    }
    const double target = (double)eng_sample_uniform(p->seed, step) * mass;
    double acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        const float z = logits[i] * inv_t;
        if (z < thr)
            continue;
        acc += exp((double)z - zmax);
        last = i;
        if (acc > target)
            return i;
    }
    return last; /* rounding left the draw just past the end: the last kept token */
}

/* ---- stop strings ------------------------------------------------------------------------- */

/* Each stop string is matched with Knuth-Morris-Pratt: state[i] is the length of the longest
 * suffix of the text so far that is a proper prefix of stop i, carried from feed to feed, so
 * every byte is looked at once per stop string (amortised O(1) each) however the output is
 * cut into pieces. The longest held-back tail is the largest state. */
struct eng_stop {
    char **stops;
    size_t *lens;
    size_t **fail;   /* fail[i][q]: longest proper border of stops[i][0 .. q), q in [1, lens[i]] */
    size_t *state;   /* [n] matched prefix length of each stop, < lens[i] */
    size_t n;
    size_t max_len;
    char *buf;       /* context tail + output */
    size_t ctx_len;  /* bytes of context at the start of buf */
    size_t len, cap;
    bool failed;     /* an allocation failed: the output stops where it was */
};

bool eng_stop_failed(const eng_stop *s) { return s->failed; }

/* The KMP state after byte c from state q of pattern p (length l, failure table f). */
static size_t stop_step(const char *p, size_t l, const size_t *f, size_t q, char c)
{
    for (;;) {
        if (q < l && p[q] == c)
            return q + 1;
        if (q == 0)
            return 0;
        q = f[q];
    }
}

static void stop_fail_init(const char *p, size_t l, size_t *f)
{
    f[0] = 0;
    if (l >= 1)
        f[1] = 0;
    for (size_t q = 1; q < l; q++) /* f[q + 1] = the state after p[q] from f[q] */
        f[q + 1] = stop_step(p, l, f, f[q], p[q]);
}

/* Advances every stop's state over b[0 .. n), the bytes at buffer offsets [at, at + n).
 * Returns the earliest start (buffer offset) of a stop string ending in them, or SIZE_MAX
 * (a longer stop ending later may start before a shorter one that ends first). */
static size_t stop_scan(eng_stop *s, const char *b, size_t n, size_t at)
{
    size_t best = SIZE_MAX;
    for (size_t j = 0; j < n; j++) {
        for (size_t i = 0; i < s->n; i++) {
            size_t l = s->lens[i];
            size_t q = stop_step(s->stops[i], l, s->fail[i], s->state[i], b[j]);
            if (q == l) {
                size_t start = at + j + 1 - l;
                if (start < best)
                    best = start;
                q = s->fail[i][l];
            }
            s->state[i] = q;
        }
    }
    return best;
}

eng_status eng_stop_create(const char *const *stops, size_t n, const char *context,
                           size_t context_len, eng_stop **out, eng_err *err)
{
    *out = NULL;
    eng_stop *s = calloc(1, sizeof *s);
    if (!s)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    s->stops = calloc(n ? n : 1, sizeof *s->stops);
    s->lens = calloc(n ? n : 1, sizeof *s->lens);
    s->fail = calloc(n ? n : 1, sizeof *s->fail);
    s->state = calloc(n ? n : 1, sizeof *s->state);
    if (!s->stops || !s->lens || !s->fail || !s->state)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        if (l == 0)
            continue;
        if (!(s->stops[s->n] = malloc(l + 1)) || !(s->fail[s->n] = malloc((l + 1) * sizeof(size_t))))
            goto nomem_n;
        memcpy(s->stops[s->n], stops[i], l + 1);
        stop_fail_init(s->stops[s->n], l, s->fail[s->n]);
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
    /* The states start where the context leaves them; a stop wholly inside it does not count
     * (it is shorter than max_len, and the scan only reports matches, which are dropped). */
    for (size_t j = 0; j < context_len; j++)
        for (size_t i = 0; i < s->n; i++) {
            size_t q = stop_step(s->stops[i], s->lens[i], s->fail[i], s->state[i], context[j]);
            s->state[i] = q == s->lens[i] ? s->fail[i][q] : q;
        }
    *out = s;
    return ENG_OK;
nomem_n:
    free(s->stops[s->n]); /* the one half-made entry; the rest are counted in s->n */
    s->stops[s->n] = NULL;
nomem:
    eng_stop_free(s);
    return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
}

void eng_stop_free(eng_stop *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->stops[i]);
        free(s->fail[i]);
    }
    free(s->stops);
    free(s->lens);
    free(s->fail);
    free(s->state);
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
    /* Every match found here ends in the new bytes, so it is not wholly inside the context. */
    size_t best_start = stop_scan(s, s->buf + old, len, old);
    if (best_start != SIZE_MAX) {
        *keep = best_start > s->ctx_len ? best_start - s->ctx_len : 0;
        return true;
    }
    /* Hold back the longest tail that is a prefix of some stop string. */
    size_t hold = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->state[i] > hold)
            hold = s->state[i];
    size_t out_len = s->len - s->ctx_len;
    *keep = hold < out_len ? out_len - hold : 0;
    return false;
}

const char *eng_stop_output(const eng_stop *s, size_t *len)
{
    *len = s->len - s->ctx_len;
    return s->buf + s->ctx_len;
}
