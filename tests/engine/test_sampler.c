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

/* The rule eng_stop_feed must follow, the slow way: over context tail + output fed so far, the
 * earliest start of any stop string that ends after the context (and after `old`, the bytes
 * before this feed), and otherwise the longest tail that is a proper prefix of a stop. */
static bool ref_stop(const char *const *stops, size_t n, const char *buf, size_t ctx_len,
                     size_t old, size_t len, size_t *keep)
{
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(stops[i]);
        for (size_t p = 0; l && p + l <= len; p++)
            if (p + l > old && p + l > ctx_len && memcmp(buf + p, stops[i], l) == 0 && p < best)
                best = p;
    }
    if (best != SIZE_MAX) {
        *keep = best > ctx_len ? best - ctx_len : 0;
        return true;
    }
    size_t hold = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t h = 1; h < strlen(stops[i]) && h <= len; h++)
            if (h > hold && memcmp(buf + len - h, stops[i], h) == 0)
                hold = h;
    *keep = hold < len - ctx_len ? len - ctx_len - hold : 0;
    return false;
}

Test(stop, matches_the_slow_rule_on_random_overlapping_text)
{
    /* A two-letter alphabet makes stops overlap, share borders and straddle pieces. */
    unsigned x = 12345;
    for (int round = 0; round < 2000; round++) {
        char stop_buf[4][8], *stops[4], ctx[8], text[64];
        size_t n = 1 + (x = x * 1103515245u + 12345u) % 4;
        for (size_t i = 0; i < n; i++) {
            size_t l = (x = x * 1103515245u + 12345u) % 7; /* 0: ignored empty stop */
            for (size_t j = 0; j < l; j++)
                stop_buf[i][j] = "ab"[(x = x * 1103515245u + 12345u) >> 16 & 1];
            stop_buf[i][l] = '\0';
            stops[i] = stop_buf[i];
        }
        size_t cl = (x = x * 1103515245u + 12345u) % 7, tl = (x = x * 1103515245u + 12345u) % 60;
        for (size_t j = 0; j < cl; j++)
            ctx[j] = "ab"[(x = x * 1103515245u + 12345u) >> 16 & 1];
        for (size_t j = 0; j < tl; j++)
            text[j] = "ab"[(x = x * 1103515245u + 12345u) >> 16 & 1];
        /* The reference sees the context cut as eng_stop_create cuts it (max_len - 1 bytes). */
        size_t max_len = 0;
        for (size_t i = 0; i < n; i++)
            max_len = strlen(stops[i]) > max_len ? strlen(stops[i]) : max_len;
        size_t rc = cl < (max_len ? max_len - 1 : 0) ? cl : (max_len ? max_len - 1 : 0);
        char all[80];
        memcpy(all, ctx + cl - rc, rc);
        memcpy(all + rc, text, tl);
        eng_stop *s = NULL;
        cr_assert_eq(eng_stop_create((const char *const *)stops, n, ctx, cl, &s, NULL), ENG_OK);
        for (size_t at = 0; at < tl;) {
            size_t k = 1 + (x = x * 1103515245u + 12345u) % 5;
            if (k > tl - at)
                k = tl - at;
            size_t keep, want_keep;
            bool m = eng_stop_feed(s, text + at, k, &keep);
            bool want = ref_stop((const char *const *)stops, n, all, rc, rc + at, rc + at + k,
                                 &want_keep);
            cr_assert_eq(m, want, "round %d at %zu", round, at);
            cr_assert_eq(keep, want_keep, "round %d at %zu: keep %zu, want %zu", round, at, keep,
                         want_keep);
            at += k;
            if (m)
                break;
        }
        eng_stop_free(s);
    }
}

/* 64 stops of 1024 bytes that share a 1023-byte prefix, against 1 MiB of output fed one byte
 * at a time that keeps almost matching them: the old matcher compared ~10^11 bytes here. */
Test(stop, a_megabyte_fed_bytewise_against_64_long_stops_is_linear, .timeout = 60)
{
    enum { N_STOPS = 64, STOP_LEN = 1024, OUT = 1 << 20 };
    char *mem = malloc((size_t)N_STOPS * (STOP_LEN + 1));
    const char *stops[N_STOPS];
    for (int i = 0; i < N_STOPS; i++) {
        char *p = mem + (size_t)i * (STOP_LEN + 1);
        memset(p, 'a', STOP_LEN - 1);
        p[STOP_LEN - 1] = (char)(0x80 + i); /* a byte the output never has until the end */
        p[STOP_LEN] = '\0';
        stops[i] = p;
    }
    eng_stop *s = NULL;
    cr_assert_eq(eng_stop_create(stops, N_STOPS, NULL, 0, &s, NULL), ENG_OK);
    size_t run = 0, keep = 0;
    for (size_t i = 0; i < OUT - 1; i++) {
        /* runs of 'a' of varying length (some past 1023) broken by a byte no stop ends in */
        char c = (i * 2654435761u >> 7) % 1500 == 0 ? 'x' : 'a';
        cr_assert(!eng_stop_feed(s, &c, 1, &keep), "no stop at byte %zu", i);
        run = c == 'a' ? run + 1 : 0;
        size_t hold = run < STOP_LEN - 1 ? run : STOP_LEN - 1;
        if (keep != i + 1 - hold)
            cr_assert_fail("byte %zu: keep %zu, want %zu", i, keep, i + 1 - hold);
    }
    /* top the run up to 1023 'a', then the byte that completes stop 37 */
    for (; run < STOP_LEN - 1; run++)
        cr_assert(!eng_stop_feed(s, "a", 1, &keep));
    size_t len;
    eng_stop_output(s, &len);
    cr_assert(eng_stop_feed(s, "\xA5", 1, &keep)); /* 0x80 + 37: completes stop 37 */
    cr_assert_eq(keep, len - (STOP_LEN - 1));
    eng_stop_free(s);
    free(mem);
}
