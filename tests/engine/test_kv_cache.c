/* test_kv_cache.c — paged KV cache bookkeeping: accounting, overload, prefix reuse through the
 * hash chain, LRU eviction, and a seeded random stress checked against shadow block contents. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kv_cache.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        eng_err e_ = {{0}};                                                                        \
        eng_status st_ = kv_cache_check((c), &e_);                                                 \
        cr_assert_eq(st_, ENG_OK, "kv_cache_check: %s", e_.msg);                                   \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static int32_t rng_below(uint64_t *s, int32_t n) { return (int32_t)(rng_next(s) % (uint64_t)n); }

static void fill_tokens(int32_t *t, int32_t n, uint64_t *rng)
{
    for (int32_t i = 0; i < n; i++)
        t[i] = rng_below(rng, 32000);
}

static kv_cache *mk_cache(int32_t n_blocks, int32_t block_size, bool prefix)
{
    kv_cache *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(kv_cache_create(n_blocks, block_size, prefix, &c, &err), ENG_OK, "%s", err.msg);
    CHECK(c);
    return c;
}

static kv_seq *mk_seq(kv_cache *c, int32_t max_tokens)
{
    kv_seq *s = NULL;
    eng_err err = {{0}};
    cr_assert_eq(kv_seq_create(c, max_tokens, 0, &s, &err), ENG_OK, "%s", err.msg);
    CHECK(c);
    return s;
}

/* Matches the prompt, then computes the rest of it in one go. Returns the tokens reused. */
static int32_t run_prompt(kv_cache *c, kv_seq *s, const int32_t *tok, int32_t n)
{
    int32_t m = kv_seq_match_prefix(c, s, tok, n);
    CHECK(c);
    cr_assert_eq(kv_seq_n_tokens(s), m);
    cr_assert_eq(kv_seq_reserve(c, s, n), ENG_OK);
    CHECK(c);
    kv_seq_commit(c, s, tok, n);
    CHECK(c);
    cr_assert_eq(kv_seq_n_tokens(s), n);
    return m;
}

static kv_stats stats(const kv_cache *c)
{
    kv_stats st;
    kv_cache_stats(c, &st);
    return st;
}

Test(kv_cache, create_rejects_bad_arguments)
{
    kv_cache *c = (kv_cache *)1;
    eng_err err = {{0}};
    cr_assert_eq(kv_cache_create(0, 16, true, &c, &err), ENG_ERR_INVALID);
    cr_assert_null(c);
    cr_assert(strstr(err.msg, "n_blocks"), "%s", err.msg);
    cr_assert_eq(kv_cache_create(8, 0, true, &c, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "block_size"), "%s", err.msg);
    c = mk_cache(8, 16, true);
    kv_seq *s = (kv_seq *)1;
    cr_assert_eq(kv_seq_create(c, 0, 0, &s, &err), ENG_ERR_INVALID);
    cr_assert_null(s);
    kv_seq_free(c, NULL);
    kv_cache_free(c);
    kv_cache_free(NULL);
}

static void accounting(bool prefix)
{
    kv_cache *c = mk_cache(10, 16, prefix);
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_total, 10);
    cr_assert_eq(st.blocks_free, 10);
    cr_assert_eq(kv_cache_n_available(c), 10);

    uint64_t rng = 1;
    int32_t tok[40];
    fill_tokens(tok, 40, &rng);
    kv_seq *s = mk_seq(c, 40);
    cr_assert_eq(kv_seq_blocks_needed(c, s, 33), 3);
    cr_assert_eq(kv_seq_reserve(c, s, 33), ENG_OK);
    CHECK(c);
    cr_assert_eq(kv_seq_n_blocks(s), 3);
    st = stats(c);
    cr_assert_eq(st.blocks_used, 3);
    cr_assert_eq(st.blocks_free, 7);
    /* Reserving less than held changes nothing. */
    cr_assert_eq(kv_seq_blocks_needed(c, s, 20), 0);
    cr_assert_eq(kv_seq_reserve(c, s, 20), ENG_OK);
    cr_assert_eq(kv_seq_n_blocks(s), 3);
    /* The table holds distinct ids. */
    const int32_t *t = kv_seq_blocks(s);
    cr_assert(t[0] != t[1] && t[1] != t[2] && t[0] != t[2]);

    kv_seq_commit(c, s, tok, 10);
    CHECK(c);
    kv_seq_commit(c, s, tok, 33);
    CHECK(c);
    cr_assert_eq(kv_seq_n_tokens(s), 33);
    st = stats(c);
    cr_assert_eq(st.blocks_registered, prefix ? 2 : 0);

    kv_seq_free(c, s);
    CHECK(c);
    st = stats(c);
    cr_assert_eq(st.blocks_used, 0);
    cr_assert_eq(st.n_seqs, 0);
    /* The two full blocks stay cached with prefix caching; the partial one is freed. */
    cr_assert_eq(st.blocks_cached, prefix ? 2 : 0);
    cr_assert_eq(st.blocks_free, prefix ? 8 : 10);
    cr_assert_eq(kv_cache_n_available(c), 10);
    kv_cache_free(c);
}

Test(kv_cache, alloc_free_accounting) { accounting(true); }
Test(kv_cache, alloc_free_accounting_no_prefix) { accounting(false); }

Test(kv_cache, reserve_beyond_capacity_is_overload_and_leaks_nothing)
{
    kv_cache *c = mk_cache(4, 16, true);
    kv_seq *a = mk_seq(c, 100), *b = mk_seq(c, 100);
    cr_assert_eq(kv_seq_reserve(c, a, 48), ENG_OK);
    CHECK(c);
    cr_assert_eq(kv_seq_reserve(c, b, 16), ENG_OK);
    int32_t b0 = kv_seq_blocks(b)[0];
    cr_assert_eq(kv_seq_reserve(c, b, 33), ENG_ERR_OVERLOAD);
    CHECK(c);
    cr_assert_eq(kv_seq_n_blocks(b), 1, "a failed reserve must not keep part of what it took");
    cr_assert_eq(kv_seq_blocks(b)[0], b0);
    cr_assert_eq(stats(c).blocks_free, 0);
    cr_assert_eq(kv_seq_reserve(c, a, 64), ENG_ERR_OVERLOAD);
    cr_assert_eq(kv_seq_n_blocks(a), 3);
    kv_seq_free(c, a);
    CHECK(c);
    cr_assert_eq(kv_seq_reserve(c, b, 64), ENG_OK);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_used, 4);
    kv_seq_free(c, b);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_free, 4);
    kv_cache_free(c);
}

Test(kv_cache, reserve_beyond_max_tokens_is_too_long)
{
    kv_cache *c = mk_cache(64, 16, true);
    kv_seq *s = mk_seq(c, 100);
    cr_assert_eq(kv_seq_reserve(c, s, 101), ENG_ERR_TOO_LONG);
    CHECK(c);
    cr_assert_eq(kv_seq_n_blocks(s), 0);
    cr_assert_eq(kv_seq_reserve(c, s, 100), ENG_OK);
    cr_assert_eq(kv_seq_n_blocks(s), 7);
    cr_assert_eq(kv_seq_reserve(c, s, 101), ENG_ERR_TOO_LONG);
    cr_assert_eq(kv_seq_n_blocks(s), 7);
    CHECK(c);
    /* A sequence longer than the whole pool is OVERLOAD, not a crash or TOO_LONG. */
    kv_seq *big = mk_seq(c, 100000);
    cr_assert_eq(kv_seq_reserve(c, big, 100000), ENG_ERR_OVERLOAD);
    CHECK(c);
    kv_cache_free(c); /* frees the live sequences too */
}

Test(kv_cache, prefix_reuse_shares_physical_blocks)
{
    kv_cache *c = mk_cache(64, 16, true);
    uint64_t rng = 7;
    int32_t a_tok[100], b_tok[120];
    fill_tokens(a_tok, 100, &rng);
    /* The same first 72 tokens: 4 full blocks and half of the fifth. */
    memcpy(b_tok, a_tok, 72 * sizeof *b_tok);
    fill_tokens(b_tok + 72, 48, &rng);
    b_tok[72] = a_tok[72] + 1;

    kv_seq *a = mk_seq(c, 128);
    cr_assert_eq(run_prompt(c, a, a_tok, 100), 0);
    int32_t a_blocks[7];
    memcpy(a_blocks, kv_seq_blocks(a), sizeof a_blocks);
    kv_seq_free(c, a);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_cached, 6, "A's 6 full blocks stay cached");

    kv_seq *b = mk_seq(c, 128);
    cr_assert_eq(kv_seq_match_prefix(c, b, b_tok, 120), 64);
    CHECK(c);
    cr_assert_eq(kv_seq_n_blocks(b), 4);
    cr_assert_eq(kv_seq_n_tokens(b), 64);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(kv_seq_blocks(b)[i], a_blocks[i], "block %d not shared", i);
    cr_assert_eq(kv_seq_reserve(c, b, 120), ENG_OK);
    for (int i = 4; i < 8; i++)
        for (int j = 0; j < 6; j++) /* A's partial block 6 was freed: fair game */
            cr_assert_neq(kv_seq_blocks(b)[i], a_blocks[j], "B writes into A's cached block");
    kv_seq_commit(c, b, b_tok, 120);
    CHECK(c);
    kv_stats st = stats(c);
    cr_assert_eq(st.prefix_lookups, 2);
    cr_assert_eq(st.prefix_hit_blocks, 4);
    cr_assert_eq(st.prefix_hit_tokens, 64);
    cr_assert_eq(st.prefix_query_tokens, 100 + 120);
    /* Blocks 4 and 5 of A (now unreferenced) are still cached; B's own 7 are used. */
    cr_assert_eq(st.blocks_cached, 2);
    cr_assert_eq(st.blocks_used, 8);

    /* A shared block survives one of its sequences. */
    kv_seq *b2 = mk_seq(c, 128);
    cr_assert_eq(kv_seq_match_prefix(c, b2, b_tok, 120), 112);
    kv_seq_free(c, b);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_used, 7);
    kv_seq_free(c, b2);
    CHECK(c);
    st = stats(c);
    cr_assert_eq(st.blocks_used, 0);
    cr_assert_eq(st.blocks_cached, 6 + 3);
    kv_cache_free(c);
}

Test(kv_cache, fully_cached_prompt_recomputes_the_last_block)
{
    kv_cache *c = mk_cache(32, 16, true);
    uint64_t rng = 11;
    int32_t tok[80];
    fill_tokens(tok, 80, &rng);
    kv_seq *a = mk_seq(c, 80);
    run_prompt(c, a, tok, 80);
    int32_t a_blocks[5];
    memcpy(a_blocks, kv_seq_blocks(a), sizeof a_blocks);
    kv_seq_free(c, a);
    CHECK(c);

    /* 64 tokens, all cached: reuse 48, compute the last 16 (the model needs a token). */
    kv_seq *b = mk_seq(c, 80);
    cr_assert_eq(run_prompt(c, b, tok, 64), 48);
    /* B's block 3 has the same prefix as A's cached block 3: it is not registered twice, and
     * B keeps writing its own copy. */
    cr_assert_neq(kv_seq_blocks(b)[3], a_blocks[3]);
    cr_assert_eq(stats(c).blocks_registered, 5);
    kv_seq_free(c, b);
    CHECK(c);
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_cached, 5, "the unregistered copy goes back to the free list");
    cr_assert_eq(st.blocks_free, 27);

    /* One token past a block boundary: every full block is reused. */
    kv_seq *d = mk_seq(c, 80);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok, 65), 64);
    kv_seq_free(c, d);
    /* A prompt of one block or less reuses nothing. */
    d = mk_seq(c, 80);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok, 16), 0);
    kv_seq_free(c, d);
    d = mk_seq(c, 80);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok, 17), 16);
    kv_seq_free(c, d);
    /* The reuse is capped by the sequence's own length. */
    d = mk_seq(c, 40);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok, 80), 32);
    CHECK(c);
    cr_assert_eq(kv_seq_reserve(c, d, 41), ENG_ERR_TOO_LONG);
    kv_seq_free(c, d);
    CHECK(c);
    kv_cache_free(c);
}

Test(kv_cache, same_block_under_a_different_parent_is_not_reused)
{
    kv_cache *c = mk_cache(32, 16, true);
    uint64_t rng = 5;
    int32_t a_tok[65], b_tok[65];
    fill_tokens(a_tok, 65, &rng);
    memcpy(b_tok, a_tok, sizeof b_tok);
    b_tok[16 + 7] ^= 1; /* block 1 (the second) differs; blocks 2 and 3 are identical */
    kv_seq *a = mk_seq(c, 65);
    run_prompt(c, a, a_tok, 65);
    kv_seq_free(c, a);
    kv_seq *b = mk_seq(c, 65);
    cr_assert_eq(run_prompt(c, b, b_tok, 65), 16);
    kv_seq_free(c, b);
    CHECK(c);
    /* Both chains are now cached side by side: 4 + 3 blocks. */
    cr_assert_eq(stats(c).blocks_cached, 7);
    kv_seq *d = mk_seq(c, 65);
    cr_assert_eq(kv_seq_match_prefix(c, d, b_tok, 65), 64);
    kv_seq_free(c, d);
    /* A different first block: nothing at all. */
    b_tok[0] ^= 1;
    d = mk_seq(c, 65);
    cr_assert_eq(kv_seq_match_prefix(c, d, b_tok, 65), 0);
    kv_seq_free(c, d);
    CHECK(c);
    kv_cache_free(c);
}

static kv_seq *mk_seq_salted(kv_cache *c, int32_t max_tokens, uint64_t salt)
{
    kv_seq *s = NULL;
    eng_err err = {{0}};
    cr_assert_eq(kv_seq_create(c, max_tokens, salt, &s, &err), ENG_OK, "%s", err.msg);
    CHECK(c);
    return s;
}

/* A salted sequence finds the blocks of its own salt only: same prompt, same salt -> reused;
 * another salt or the shared cache (salt 0) -> nothing, either way round. */
Test(kv_cache, a_salted_prefix_is_found_only_under_the_same_salt)
{
    kv_cache *c = mk_cache(64, 16, true);
    uint64_t rng = 9;
    int32_t tok[65];
    fill_tokens(tok, 65, &rng);
    kv_seq *a = mk_seq_salted(c, 65, 7);
    cr_assert_eq(run_prompt(c, a, tok, 65), 0);
    kv_seq_free(c, a);
    const struct { uint64_t salt; int32_t want; } look[] = {
        {7, 64}, {8, 0}, {0, 0}, {UINT64_C(7) << 32, 0}, {UINT64_MAX, 0}};
    for (size_t i = 0; i < sizeof look / sizeof look[0]; i++) {
        kv_seq *d = mk_seq_salted(c, 65, look[i].salt);
        cr_assert_eq(kv_seq_match_prefix(c, d, tok, 65), look[i].want, "salt %llu",
                     (unsigned long long)look[i].salt);
        kv_seq_free(c, d);
    }
    /* the shared cache's blocks are not found by a salted sequence either */
    int32_t tok2[65];
    fill_tokens(tok2, 65, &rng);
    kv_seq *b = mk_seq(c, 65);
    cr_assert_eq(run_prompt(c, b, tok2, 65), 0);
    kv_seq_free(c, b);
    kv_seq *d = mk_seq_salted(c, 65, 7);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok2, 65), 0);
    kv_seq_free(c, d);
    d = mk_seq(c, 65);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok2, 65), 64);
    kv_seq_free(c, d);
    CHECK(c);
    cr_assert_eq(kv_hash_root(0), KV_HASH_ROOT);
    cr_assert_neq(kv_hash_root(1), kv_hash_root(2));
    cr_assert_neq(kv_hash_root(1), KV_HASH_ROOT);
    kv_cache_free(c);
}

Test(kv_cache, chunked_commits_register_the_same_chain)
{
    kv_cache *c = mk_cache(32, 16, true);
    uint64_t rng = 3;
    int32_t tok[90];
    fill_tokens(tok, 90, &rng);
    kv_seq *a = mk_seq(c, 90);
    cr_assert_eq(kv_seq_match_prefix(c, a, tok, 90), 0);
    /* Chunked prefill with chunks that straddle block boundaries, then decode steps. */
    int32_t n = 0;
    const int32_t chunks[] = {5, 20, 7, 1, 30, 3, 1, 1, 1, 1};
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        n += chunks[i];
        cr_assert_eq(kv_seq_reserve(c, a, n), ENG_OK);
        kv_seq_commit(c, a, tok, n);
        CHECK(c);
    }
    cr_assert_eq(n, 70);
    cr_assert_eq(stats(c).blocks_registered, 4);
    kv_seq *b = mk_seq(c, 90);
    cr_assert_eq(kv_seq_match_prefix(c, b, tok, 90), 64, "chunked hashing must equal whole");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(kv_seq_blocks(b)[i], kv_seq_blocks(a)[i]);
    kv_seq_free(c, a);
    kv_seq_free(c, b);
    CHECK(c);
    kv_cache_free(c);
}

Test(kv_cache, concurrent_identical_prefixes_register_once)
{
    kv_cache *c = mk_cache(32, 16, true);
    uint64_t rng = 9;
    int32_t tok[50];
    fill_tokens(tok, 50, &rng);
    kv_seq *a = mk_seq(c, 50), *b = mk_seq(c, 50);
    cr_assert_eq(kv_seq_match_prefix(c, a, tok, 50), 0);
    cr_assert_eq(kv_seq_match_prefix(c, b, tok, 50), 0);
    cr_assert_eq(kv_seq_reserve(c, a, 50), ENG_OK);
    cr_assert_eq(kv_seq_reserve(c, b, 50), ENG_OK);
    kv_seq_commit(c, a, tok, 50);
    kv_seq_commit(c, b, tok, 50);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_registered, 3);
    kv_seq *d = mk_seq(c, 50);
    cr_assert_eq(kv_seq_match_prefix(c, d, tok, 50), 48);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(kv_seq_blocks(d)[i], kv_seq_blocks(a)[i], "the first to commit is cached");
    kv_seq_free(c, a);
    kv_seq_free(c, b);
    CHECK(c);
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_used, 3);
    cr_assert_eq(st.blocks_cached, 0);
    kv_seq_free(c, d);
    CHECK(c);
    cr_assert_eq(stats(c).blocks_cached, 3);
    kv_cache_free(c);
}

Test(kv_cache, lru_evicts_oldest_and_never_referenced_blocks)
{
    kv_cache *c = mk_cache(8, 4, true);
    int32_t a_tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, b_tok[9] = {11, 12, 13, 14, 15, 16, 17, 18, 19};
    kv_seq *a = mk_seq(c, 8), *b = mk_seq(c, 8);
    run_prompt(c, a, a_tok, 8);
    run_prompt(c, b, b_tok, 8);
    int32_t a0 = kv_seq_blocks(a)[0], a1 = kv_seq_blocks(a)[1];
    int32_t b0 = kv_seq_blocks(b)[0], b1 = kv_seq_blocks(b)[1];
    kv_seq_free(c, a); /* LRU, oldest first: a1 a0 */
    kv_seq_free(c, b); /* a1 a0 b1 b0 */
    CHECK(c);
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_cached, 4);
    cr_assert_eq(st.blocks_free, 4);

    kv_seq *big = mk_seq(c, 64);
    cr_assert_eq(kv_seq_reserve(c, big, 16), ENG_OK);
    cr_assert_eq(stats(c).evictions, 0, "free blocks go before cached ones");
    cr_assert_eq(kv_seq_reserve(c, big, 20), ENG_OK);
    CHECK(c);
    cr_assert_eq(stats(c).evictions, 1);
    cr_assert_eq(kv_seq_blocks(big)[4], a1, "A's tail is the oldest");

    /* A's head is still found; using it makes it the most recent. */
    kv_seq *d = mk_seq(c, 9);
    cr_assert_eq(kv_seq_match_prefix(c, d, a_tok, 9), 4);
    cr_assert_eq(kv_seq_blocks(d)[0], a0);
    kv_seq_free(c, d); /* b1 b0 a0 */
    CHECK(c);
    cr_assert_eq(kv_seq_reserve(c, big, 24), ENG_OK);
    cr_assert_eq(kv_seq_blocks(big)[5], b1);

    /* Hold B's head: it can no longer be evicted. */
    kv_seq *e = mk_seq(c, 9);
    cr_assert_eq(kv_seq_match_prefix(c, e, b_tok, 9), 4);
    cr_assert_eq(kv_seq_blocks(e)[0], b0);
    CHECK(c);
    cr_assert_eq(kv_seq_reserve(c, big, 28), ENG_OK);
    cr_assert_eq(kv_seq_blocks(big)[6], a0);
    cr_assert_eq(kv_cache_n_available(c), 0);
    cr_assert_eq(kv_seq_reserve(c, big, 32), ENG_ERR_OVERLOAD);
    CHECK(c);
    cr_assert_eq(kv_seq_blocks(e)[0], b0);
    st = stats(c);
    cr_assert_eq(st.evictions, 3);
    cr_assert_eq(st.blocks_used, 8);
    kv_seq *f = mk_seq(c, 9);
    cr_assert_eq(kv_seq_match_prefix(c, f, b_tok, 9), 4, "B's head is still cached");
    cr_assert_eq(kv_seq_match_prefix(c, mk_seq(c, 9), a_tok, 9), 0, "A's chain is gone");
    kv_cache_free(c);
}

Test(kv_cache, prefix_caching_disabled_never_reuses)
{
    kv_cache *c = mk_cache(32, 16, false);
    uint64_t rng = 13;
    int32_t tok[100];
    fill_tokens(tok, 100, &rng);
    kv_seq *a = mk_seq(c, 100);
    cr_assert_eq(run_prompt(c, a, tok, 100), 0);
    kv_seq_free(c, a);
    kv_seq *b = mk_seq(c, 100);
    cr_assert_eq(run_prompt(c, b, tok, 100), 0);
    kv_seq_free(c, b);
    CHECK(c);
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_cached, 0);
    cr_assert_eq(st.blocks_registered, 0);
    cr_assert_eq(st.blocks_free, 32);
    cr_assert_eq(st.prefix_hit_tokens, 0);
    kv_cache_free(c);
}

/* ---- randomized stress ---------------------------------------------------------------------- */

#define ST_BS 4
#define ST_MAXT 96
#define ST_ACTIVE 10

typedef struct {
    kv_seq *s;
    int32_t tok[ST_MAXT];
    int32_t n_prompt, n_final;
} st_seq;

typedef struct {
    int32_t n_blocks;
    int32_t *shadow; /* [n_blocks, ST_BS] the token whose K/V the backend last wrote there */
    int64_t overloads, finished, cancelled, preempted, too_long;
} st_world;

/* The backend's side: write the K/V of positions [from, to) into the blocks. */
static void st_write(st_world *w, const st_seq *q, int32_t from, int32_t to)
{
    const int32_t *t = kv_seq_blocks(q->s);
    for (int32_t p = from; p < to; p++)
        w->shadow[t[p / ST_BS] * ST_BS + p % ST_BS] = q->tok[p];
}

static void st_create(kv_cache *c, st_world *w, st_seq *q, int32_t prefixes[][64], uint64_t *rng)
{
    int32_t n = 0;
    int k = rng_below(rng, 5);
    if (k < 4) {
        n = rng_below(rng, 65);
        memcpy(q->tok, prefixes[k], (size_t)n * sizeof *q->tok);
    }
    /* A tiny vocabulary now and then makes equal block contents under different parents. */
    int32_t vocab = rng_below(rng, 3) == 0 ? 2 : 32000;
    int32_t tail = 1 + rng_below(rng, 16);
    for (int32_t i = 0; i < tail; i++)
        q->tok[n++] = rng_below(rng, vocab);
    q->n_prompt = n;
    q->n_final = n + 1 + rng_below(rng, 16);
    q->s = mk_seq(c, q->n_final);
    int32_t m = kv_seq_match_prefix(c, q->s, q->tok, n);
    cr_assert(m % ST_BS == 0 && m >= 0 && m < n, "match returned %d for %d tokens", m, n);
    const int32_t *t = kv_seq_blocks(q->s);
    for (int32_t p = 0; p < m; p++)
        cr_assert_eq(w->shadow[t[p / ST_BS] * ST_BS + p % ST_BS], q->tok[p],
                     "position %d reused from block %d holds another token's K/V", p,
                     t[p / ST_BS]);
}

/* One scheduler step for q: a prefill chunk or one decode token. Returns true when q ends. */
static bool st_step(kv_cache *c, st_world *w, st_seq *q, uint64_t *rng)
{
    int32_t cur = kv_seq_n_tokens(q->s), next;
    if (cur < q->n_prompt) {
        next = cur + 1 + rng_below(rng, 12);
        if (next > q->n_prompt)
            next = q->n_prompt;
    } else {
        next = cur + 1;
        q->tok[cur] = rng_below(rng, 4) == 0 ? q->tok[cur % 8] : rng_below(rng, 32000);
    }
    if (rng_below(rng, 50) == 0) {
        int32_t nb = kv_seq_n_blocks(q->s);
        cr_assert_eq(kv_seq_reserve(c, q->s, q->n_final + 1), ENG_ERR_TOO_LONG);
        cr_assert_eq(kv_seq_n_blocks(q->s), nb);
        w->too_long++;
    }
    int32_t avail = kv_cache_n_available(c), nb = kv_seq_n_blocks(q->s);
    eng_status st = kv_seq_reserve(c, q->s, next);
    if (st == ENG_ERR_OVERLOAD) {
        cr_assert_eq(kv_seq_n_blocks(q->s), nb, "overload changed the table");
        cr_assert_eq(kv_cache_n_available(c), avail, "overload changed the pool");
        cr_assert_gt(kv_seq_blocks_needed(c, q->s, next), avail);
        w->overloads++;
        if (rng_below(rng, 3) == 0) {
            w->preempted++;
            return true;
        }
        return false;
    }
    cr_assert_eq(st, ENG_OK);
    st_write(w, q, cur, next);
    kv_seq_commit(c, q->s, q->tok, next);
    if (next == q->n_final) {
        w->finished++;
        return true;
    }
    return false;
}

static void stress(bool prefix, uint64_t seed)
{
    enum { N_BLOCKS = 40, N_EVENTS = 20000 };
    kv_cache *c = mk_cache(N_BLOCKS, ST_BS, prefix);
    st_world w = {.n_blocks = N_BLOCKS};
    w.shadow = malloc(N_BLOCKS * ST_BS * sizeof *w.shadow);
    cr_assert_not_null(w.shadow);
    for (int i = 0; i < N_BLOCKS * ST_BS; i++)
        w.shadow[i] = -1;
    uint64_t rng = seed;
    int32_t prefixes[4][64];
    for (int k = 0; k < 4; k++)
        fill_tokens(prefixes[k], 64, &rng);
    prefixes[1][0] = prefixes[0][0]; /* prefixes sharing some blocks but not others */
    memcpy(prefixes[2], prefixes[0], 24 * sizeof(int32_t));
    st_seq *act = calloc(ST_ACTIVE, sizeof *act);
    cr_assert_not_null(act);
    int n_act = 0;

    for (int ev = 0; ev < N_EVENTS; ev++) {
        int r = rng_below(&rng, 100);
        if ((r < 15 || n_act == 0) && n_act < ST_ACTIVE) {
            st_create(c, &w, &act[n_act++], prefixes, &rng);
        } else if (r < 20 && n_act > 0) {
            int i = rng_below(&rng, n_act);
            kv_seq_free(c, act[i].s);
            act[i] = act[--n_act];
            w.cancelled++;
        } else if (n_act > 0) {
            int i = rng_below(&rng, n_act);
            if (st_step(c, &w, &act[i], &rng)) {
                kv_seq_free(c, act[i].s);
                act[i] = act[--n_act];
            }
        }
        CHECK(c);
    }
    while (n_act > 0) {
        kv_seq_free(c, act[--n_act].s);
        CHECK(c);
    }
    kv_stats st = stats(c);
    cr_assert_eq(st.blocks_used, 0);
    cr_assert_eq(st.n_seqs, 0);
    cr_assert_eq(st.blocks_free + st.blocks_cached, st.blocks_total);
    cr_assert_gt(w.finished, 300, "too few sequences finished (%ld)", (long)w.finished);
    cr_assert_gt(w.overloads, 100, "the pool never ran out (%ld)", (long)w.overloads);
    cr_assert_gt(w.cancelled, 100);
    cr_assert_gt(w.preempted, 10);
    cr_assert_gt(w.too_long, 10);
    if (prefix) {
        cr_assert_gt(st.prefix_hit_tokens, 5000, "hits %ld", (long)st.prefix_hit_tokens);
        cr_assert_gt(st.evictions, 500, "evictions %ld", (long)st.evictions);
    } else {
        cr_assert_eq(st.prefix_hit_tokens, 0);
        cr_assert_eq(st.blocks_cached, 0);
    }
    free(act);
    free(w.shadow);
    kv_cache_free(c);
}

Test(kv_cache, random_stress_prefix_caching) { stress(true, 42); }
Test(kv_cache, random_stress_prefix_caching_seed2) { stress(true, 20240601); }
Test(kv_cache, random_stress_no_prefix_caching) { stress(false, 42); }

/* ---- the hash --------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

Test(kv_cache, block_hash_has_no_collisions_in_100k_blocks)
{
    enum { N_RANDOM = 100000, N_NEAR = 16 * 3000, N_PARENT = 2000 };
    uint64_t *h = malloc((N_RANDOM + N_NEAR + N_PARENT) * sizeof *h);
    cr_assert_not_null(h);
    uint64_t rng = 99;
    int32_t blk[16];
    size_t n = 0;
    for (int i = 0; i < N_RANDOM; i++) {
        for (int j = 0; j < 16; j++)
            blk[j] = (int32_t)(uint32_t)rng_next(&rng);
        h[n++] = kv_block_hash(rng_next(&rng), blk, 16);
    }
    /* Near neighbours: one token nudged, or the same tokens under a nearby parent. */
    int32_t base[16];
    for (int j = 0; j < 16; j++)
        base[j] = j;
    for (int i = 0; i < N_NEAR; i++) {
        memcpy(blk, base, sizeof blk);
        blk[i % 16] += 1 + i / 16;
        h[n++] = kv_block_hash(KV_HASH_ROOT, blk, 16);
    }
    for (int i = 0; i < N_PARENT; i++)
        h[n++] = kv_block_hash(KV_HASH_ROOT + 1 + (uint64_t)i, base, 16);
    qsort(h, n, sizeof *h, cmp_u64);
    for (size_t i = 1; i < n; i++)
        cr_assert_neq(h[i], h[i - 1], "collision at sorted index %zu", i);
    free(h);

    /* The parent matters, the length matters, and the value is pinned (replicas and restarts
     * must agree on it). */
    cr_assert_neq(kv_block_hash(1, base, 16), kv_block_hash(2, base, 16));
    cr_assert_neq(kv_block_hash(1, base, 15), kv_block_hash(1, base, 16));
    cr_assert_eq(kv_block_hash(KV_HASH_ROOT, base, 16), UINT64_C(0x79573bed170f174c));
}
