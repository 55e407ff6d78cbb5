/* test_sampler.c — sampling (greedy, temperature, top-k, top-p, seeds) and stop strings. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

enum { NV = 1000 };

static void random_logits(float *l, unsigned seed)
{
    srand(seed);
    for (int i = 0; i < NV; i++)
        l[i] = (float)rand() / (float)RAND_MAX * 10.0f - 5.0f;
}

static eng_sampler *make(float temp, int k, float p, uint64_t seed)
{
    eng_sampler_params sp = {.temperature = temp, .top_k = k, .top_p = p, .seed = seed};
    eng_sampler *s = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_sampler_create(&sp, NV, &s, &err), ENG_OK, "%s", err.msg);
    return s;
}

Test(sampler, greedy_picks_argmax)
{
    float l[NV];
    random_logits(l, 1);
    l[617] = 100.0f;
    eng_sampler *s = make(0.0f, 0, 1.0f, 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(eng_sampler_sample(s, l), 617);
    eng_sampler_free(s);
}

Test(sampler, same_seed_same_tokens_other_seed_differs)
{
    float l[NV];
    random_logits(l, 2);
    int32_t a[64], b[64], c[64];
    eng_sampler *s1 = make(1.0f, 0, 1.0f, 42), *s2 = make(1.0f, 0, 1.0f, 42),
                *s3 = make(1.0f, 0, 1.0f, 43);
    for (int i = 0; i < 64; i++) {
        a[i] = eng_sampler_sample(s1, l);
        b[i] = eng_sampler_sample(s2, l);
        c[i] = eng_sampler_sample(s3, l);
    }
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert(memcmp(a, c, sizeof a) != 0, "different seeds gave identical samples");
    eng_sampler_free(s1);
    eng_sampler_free(s2);
    eng_sampler_free(s3);
}

Test(sampler, top_k_only_returns_the_k_best)
{
    float l[NV];
    random_logits(l, 3);
    int best[5] = {10, 200, 333, 512, 999};
    for (int i = 0; i < 5; i++)
        l[best[i]] = 20.0f + (float)i;
    eng_sampler *s = make(5.0f, 5, 1.0f, 7); /* high temperature flattens: only top-k limits */
    int seen[5] = {0};
    for (int i = 0; i < 2000; i++) {
        int32_t t = eng_sampler_sample(s, l);
        int found = -1;
        for (int j = 0; j < 5; j++)
            if (t == best[j])
                found = j;
        cr_assert(found >= 0, "token %d is not among the top 5", t);
        seen[found]++;
    }
    for (int j = 0; j < 5; j++)
        cr_assert_gt(seen[j], 100, "top-%d token sampled only %d times", j, seen[j]);
    eng_sampler_free(s);
}

Test(sampler, top_p_keeps_the_nucleus)
{
    float l[NV];
    for (int i = 0; i < NV; i++)
        l[i] = -10.0f;
    l[5] = 3.0f; /* p ≈ 0.88 */
    l[6] = 1.0f; /* p ≈ 0.12 */
    eng_sampler *s = make(1.0f, 0, 0.5f, 9);
    for (int i = 0; i < 500; i++)
        cr_assert_eq(eng_sampler_sample(s, l), 5);
    eng_sampler_free(s);
    s = make(1.0f, 0, 0.95f, 9);
    int n6 = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t t = eng_sampler_sample(s, l);
        cr_assert(t == 5 || t == 6, "token %d outside the nucleus", t);
        n6 += t == 6;
    }
    cr_assert(n6 > 120 && n6 < 380, "token 6 sampled %d/2000 times, expected about 240", n6);
    eng_sampler_free(s);
}

Test(sampler, temperature_follows_softmax)
{
    float l[NV];
    for (int i = 0; i < NV; i++)
        l[i] = -1e9f;
    l[1] = 0.0f;
    l[2] = logf(3.0f); /* p(2) = 0.75 at T=1 */
    eng_sampler *s = make(1.0f, 0, 1.0f, 123);
    int n2 = 0;
    for (int i = 0; i < 4000; i++)
        n2 += eng_sampler_sample(s, l) == 2;
    cr_assert(n2 > 2850 && n2 < 3150, "p(2) measured %d/4000, expected 3000", n2);
    eng_sampler_free(s);
}

Test(sampler, rejects_bad_params)
{
    eng_sampler *s = NULL;
    eng_err err = {{0}};
    eng_sampler_params bad[] = {
        {.temperature = -1.0f, .top_p = 1.0f}, {.temperature = NAN, .top_p = 1.0f},
        {.temperature = 1.0f, .top_k = -3, .top_p = 1.0f}, {.temperature = 1.0f, .top_p = 0.0f},
        {.temperature = 1.0f, .top_p = 1.5f}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(eng_sampler_create(&bad[i], NV, &s, &err), ENG_ERR_INVALID, "case %zu", i);
        cr_assert_null(s);
        cr_assert(strlen(err.msg) > 0);
    }
}

/* Feeds pieces; returns the output kept once a stop matched (or all of it). */
static char *run_stop(const char *const *stops, size_t n, const char *ctx, const char *const *pieces,
                      size_t np, bool *matched)
{
    eng_stop *s = NULL;
    cr_assert_eq(eng_stop_create(stops, n, ctx, ctx ? strlen(ctx) : 0, &s, NULL), ENG_OK);
    size_t keep = 0;
    *matched = false;
    for (size_t i = 0; i < np && !*matched; i++)
        *matched = eng_stop_feed(s, pieces[i], strlen(pieces[i]), &keep);
    size_t len;
    const char *out = eng_stop_output(s, &len);
    if (!*matched)
        keep = len;
    char *r = strndup(out, keep);
    eng_stop_free(s);
    return r;
}

Test(stop, match_across_pieces_truncates_before_it)
{
    const char *stops[] = {"\ndef ", "\n\n"};
    const char *pieces[] = {"return x", "\nd", "ef", " foo():"};
    bool m;
    char *r = run_stop(stops, 2, NULL, pieces, 4, &m);
    cr_assert(m);
    cr_assert_str_eq(r, "return x");
    free(r);
}

Test(stop, holds_back_a_possible_prefix)
{
    const char *stops[] = {"STOP"};
    eng_stop *s = NULL;
    cr_assert_eq(eng_stop_create(stops, 1, NULL, 0, &s, NULL), ENG_OK);
    size_t keep;
    cr_assert(!eng_stop_feed(s, "abcST", 5, &keep));
    cr_assert_eq(keep, 3, "only 'abc' is safe, got %zu", keep);
    cr_assert(!eng_stop_feed(s, "x", 1, &keep));
    cr_assert_eq(keep, 6);
    eng_stop_free(s);
}

Test(stop, straddles_the_prompt_boundary)
{
    /* Tabby matches stop words against prompt + output: a prompt ending in "\n" followed by
     * "\n" in the output is a blank line. */
    const char *stops[] = {"\n\n"};
    const char *pieces[] = {"\nmore"};
    bool m;
    char *r = run_stop(stops, 1, "x = 1\n", pieces, 1, &m);
    cr_assert(m);
    cr_assert_str_eq(r, "");
    free(r);
    /* but a stop string wholly inside the prompt does not count */
    const char *p2[] = {"y"};
    r = run_stop(stops, 1, "a\n\n", p2, 1, &m);
    cr_assert(!m);
    cr_assert_str_eq(r, "y");
    free(r);
}

Test(stop, no_stops_keeps_everything)
{
    const char *pieces[] = {"a", "b"};
    bool m;
    char *r = run_stop(NULL, 0, NULL, pieces, 2, &m);
    cr_assert(!m);
    cr_assert_str_eq(r, "ab");
    free(r);
}
