/* kv_cache.c — paged KV cache bookkeeping: block free list, refcounts, per-sequence block
 * tables, and the prefix cache (hash-chain map plus LRU of unreferenced full blocks). */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#define KV_MAX_BLOCKS (1 << 28)
#define KV_MAX_BLOCK_SIZE 4096
#define KV_NONE (-1)

struct kv_seq {
    kv_seq *prev, *next; /* the cache's list of live sequences (for kv_cache_check) */
    int32_t max_tokens;
    int32_t max_blocks; /* capacity of table */
    int32_t n_tokens;   /* positions computed */
    int32_t n_blocks;   /* entries of table in use (reserved) */
    /* The first n_tokens / block_size blocks are full and have been hashed (registered or
     * not); chain_hash is the last one's hash (root when none). */
    uint64_t chain_hash;
    uint64_t root; /* kv_hash_root(the sequence's salt) */
    int32_t table[]; /* [max_blocks] block ids */
};

struct kv_cache {
    int32_t n_blocks;
    int32_t block_size;
    bool prefix_caching;

    /* Per block, views carved out of one allocation (mem). */
    uint64_t *hash;      /* [n_blocks] valid when registered */
    uint64_t *parent;    /* [n_blocks] parent block's hash, valid when registered */
    int32_t *ref;        /* [n_blocks] number of sequence tables holding the block */
    int32_t *lru_prev;   /* [n_blocks] LRU links, valid while cached */
    int32_t *lru_next;   /* [n_blocks] */
    int32_t *free_stack; /* [n_blocks] free block ids, n_free of them */
    int32_t *tokens;     /* [n_blocks, block_size] tokens of registered blocks (or NULL) */
    uint8_t *registered; /* [n_blocks] 1 when the block is in the hash map */
    int32_t *map;        /* [map_cap] block ids or KV_NONE; open addressing, linear probes */
    uint32_t map_mask;   /* map_cap - 1 (map_cap a power of two >= 2 * n_blocks) */
    void *mem;

    int32_t n_free;
    int32_t lru_head, lru_tail; /* head = least recently released, evicted first */
    int32_t n_lru;
    int32_t n_registered;

    kv_seq *seqs; /* live sequences, intrusive list */
    int32_t n_seqs;

    int64_t prefix_lookups, prefix_query_tokens, prefix_hit_blocks, prefix_hit_tokens;
    int64_t evictions;
};

/* ---- hashing ------------------------------------------------------------------------------ */

/* xxhash64's primes, round and avalanche, applied to the parent hash and then the tokens two
 * per 64-bit lane. */
#define KV_P1 UINT64_C(0x9E3779B185EBCA87)
#define KV_P2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define KV_P3 UINT64_C(0x165667B19E3779F9)
#define KV_P4 UINT64_C(0x85EBCA77C2B2AE63)
#define KV_P5 UINT64_C(0x27D4EB2F165667C5)

/* The parent hash salted roots are hashed under: never the parent of a stored block. */
#define KV_SALT_ROOT UINT64_C(0x53616c7465644b56)

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t xx_lane(uint64_t h, uint64_t lane)
{
    uint64_t k = rotl64(lane * KV_P2, 31) * KV_P1;
    h ^= k;
    return rotl64(h, 27) * KV_P1 + KV_P4;
}

uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int32_t n)
{
    uint64_t h = KV_P5 + 8u + 4u * (uint64_t)(n > 0 ? n : 0);
    h = xx_lane(h, parent);
    int32_t i = 0;
    for (; i + 1 < n; i += 2)
        h = xx_lane(h, (uint64_t)(uint32_t)tokens[i] | (uint64_t)(uint32_t)tokens[i + 1] << 32);
    if (i < n) {
        h ^= (uint64_t)(uint32_t)tokens[i] * KV_P1;
        h = rotl64(h, 23) * KV_P2 + KV_P3;
    }
    h ^= h >> 33;
    h *= KV_P2;
    h ^= h >> 29;
    h *= KV_P3;
    h ^= h >> 32;
    return h;
}

uint64_t kv_hash_root(uint64_t salt)
{
    if (salt == 0)
        return KV_HASH_ROOT;
    const int32_t halves[2] = {(int32_t)(uint32_t)salt, (int32_t)(uint32_t)(salt >> 32)};
    return kv_block_hash(KV_SALT_ROOT, halves, 2);
}

/* ---- hash map: hash -> registered block id ------------------------------------------------ */

/* Slot holding the block registered under h, or -1. */
static int64_t map_find(const kv_cache *c, uint64_t h)
{
    for (uint32_t i = (uint32_t)h & c->map_mask;; i = (i + 1) & c->map_mask) {
        int32_t b = c->map[i];
        if (b == KV_NONE)
            return -1;
        if (c->hash[b] == h)
            return i;
    }
}

static void map_insert(kv_cache *c, int32_t b)
{
    uint32_t i = (uint32_t)c->hash[b] & c->map_mask;
    while (c->map[i] != KV_NONE)
        i = (i + 1) & c->map_mask;
    c->map[i] = b;
}

/* Removes slot i, shifting later entries of the probe run back so no tombstones are needed. */
static void map_remove_slot(kv_cache *c, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & c->map_mask;
        int32_t b = c->map[j];
        if (b == KV_NONE)
            break;
        uint32_t home = (uint32_t)c->hash[b] & c->map_mask;
        /* b may move to i only if its home is not cyclically within (i, j]. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        c->map[i] = b;
        i = j;
    }
    c->map[i] = KV_NONE;
}

/* ---- block states ------------------------------------------------------------------------- */

static void lru_push_tail(kv_cache *c, int32_t b)
{
    c->lru_prev[b] = c->lru_tail;
    c->lru_next[b] = KV_NONE;
    if (c->lru_tail != KV_NONE)
        c->lru_next[c->lru_tail] = b;
    else
        c->lru_head = b;
    c->lru_tail = b;
    c->n_lru++;
}

static void lru_remove(kv_cache *c, int32_t b)
{
    int32_t p = c->lru_prev[b], n = c->lru_next[b];
    if (p != KV_NONE)
        c->lru_next[p] = n;
    else
        c->lru_head = n;
    if (n != KV_NONE)
        c->lru_prev[n] = p;
    else
        c->lru_tail = p;
    c->lru_prev[b] = c->lru_next[b] = KV_NONE;
    c->n_lru--;
}

static void unregister(kv_cache *c, int32_t b)
{
    int64_t slot = map_find(c, c->hash[b]);
    ENG_ASSERT(slot >= 0 && c->map[slot] == b);
    map_remove_slot(c, (uint32_t)slot);
    c->registered[b] = 0;
    c->n_registered--;
}

/* A block for a sequence: a free one, else the least recently released cached one. The
 * caller has checked that one is available. */
static int32_t block_take(kv_cache *c)
{
    int32_t b;
    if (c->n_free > 0) {
        b = c->free_stack[--c->n_free];
    } else {
        b = c->lru_head;
        ENG_ASSERT(b != KV_NONE);
        lru_remove(c, b);
        unregister(c, b);
        c->evictions++;
    }
    ENG_ASSERT(c->ref[b] == 0 && !c->registered[b]);
    c->ref[b] = 1;
    return b;
}

static void block_release(kv_cache *c, int32_t b)
{
    ENG_ASSERT(c->ref[b] > 0);
    if (--c->ref[b] > 0)
        return;
    if (c->registered[b])
        lru_push_tail(c, b);
    else
        c->free_stack[c->n_free++] = b;
}

/* ---- cache -------------------------------------------------------------------------------- */

/* Appends an array of n elements of size elem, aligned to align, to a layout of *total bytes;
 * returns its offset, or SIZE_MAX on overflow. */
static size_t layout_add(size_t *total, size_t n, size_t elem, size_t align)
{
    if (*total == SIZE_MAX)
        return SIZE_MAX;
    size_t off = (*total + align - 1) / align * align;
    if (off < *total || (elem && n > (SIZE_MAX - off) / elem)) {
        *total = SIZE_MAX;
        return SIZE_MAX;
    }
    *total = off + n * elem;
    return off;
}

eng_status kv_cache_create(int32_t n_blocks, int32_t block_size, bool prefix_caching,
                           kv_cache **out, eng_err *err)
{
    *out = NULL;
    if (n_blocks < 1 || n_blocks > KV_MAX_BLOCKS)
        return eng_fail(err, ENG_ERR_INVALID, "kv cache: n_blocks %d is outside [1, %d]", n_blocks,
                        KV_MAX_BLOCKS);
    if (block_size < 1 || block_size > KV_MAX_BLOCK_SIZE)
        return eng_fail(err, ENG_ERR_INVALID, "kv cache: block_size %d is outside [1, %d]",
                        block_size, KV_MAX_BLOCK_SIZE);

    size_t n = (size_t)n_blocks, map_cap = 1;
    while (map_cap < 2 * n)
        map_cap <<= 1;
    size_t n_tok = prefix_caching ? n * (size_t)block_size : 0;
    size_t total = 0;
    size_t o_hash = layout_add(&total, n, sizeof(uint64_t), 8);
    size_t o_parent = layout_add(&total, n, sizeof(uint64_t), 8);
    size_t o_ref = layout_add(&total, n, sizeof(int32_t), 4);
    size_t o_prev = layout_add(&total, n, sizeof(int32_t), 4);
    size_t o_next = layout_add(&total, n, sizeof(int32_t), 4);
    size_t o_free = layout_add(&total, n, sizeof(int32_t), 4);
    size_t o_map = layout_add(&total, map_cap, sizeof(int32_t), 4);
    size_t o_tok = layout_add(&total, n_tok, sizeof(int32_t), 4);
    size_t o_reg = layout_add(&total, n, 1, 1);
    if (total == SIZE_MAX)
        return eng_fail(err, ENG_ERR_NOMEM, "kv cache: %d blocks of %d tokens overflow size_t",
                        n_blocks, block_size);

    kv_cache *c = calloc(1, sizeof *c);
    char *mem = calloc(1, total);
    if (!c || !mem) {
        free(c);
        free(mem);
        return eng_fail(err, ENG_ERR_NOMEM, "kv cache: cannot allocate %zu bytes of bookkeeping",
                        total);
    }
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    c->prefix_caching = prefix_caching;
    c->mem = mem;
    c->hash = (uint64_t *)(void *)(mem + o_hash);
    c->parent = (uint64_t *)(void *)(mem + o_parent);
    c->ref = (int32_t *)(void *)(mem + o_ref);
    c->lru_prev = (int32_t *)(void *)(mem + o_prev);
    c->lru_next = (int32_t *)(void *)(mem + o_next);
    c->free_stack = (int32_t *)(void *)(mem + o_free);
    c->map = (int32_t *)(void *)(mem + o_map);
    c->tokens = prefix_caching ? (int32_t *)(void *)(mem + o_tok) : NULL;
    c->registered = (uint8_t *)(mem + o_reg);
    c->map_mask = (uint32_t)(map_cap - 1);
    for (size_t i = 0; i < map_cap; i++)
        c->map[i] = KV_NONE;
    /* Stack order so that block 0 is taken first: handy when reading test output. */
    for (int32_t i = 0; i < n_blocks; i++) {
        c->free_stack[i] = n_blocks - 1 - i;
        c->lru_prev[i] = c->lru_next[i] = KV_NONE;
    }
    c->n_free = n_blocks;
    c->lru_head = c->lru_tail = KV_NONE;
    *out = c;
    return ENG_OK;
}

void kv_cache_free(kv_cache *c)
{
    if (!c)
        return;
    while (c->seqs)
        kv_seq_free(c, c->seqs);
    free(c->mem);
    free(c);
}

int32_t kv_cache_block_size(const kv_cache *c) { return c->block_size; }
int32_t kv_cache_n_blocks(const kv_cache *c) { return c->n_blocks; }
int32_t kv_cache_n_available(const kv_cache *c) { return c->n_free + c->n_lru; }

void kv_cache_stats(const kv_cache *c, kv_stats *out)
{
    memset(out, 0, sizeof *out);
    out->blocks_total = c->n_blocks;
    out->blocks_free = c->n_free;
    out->blocks_cached = c->n_lru;
    out->blocks_used = c->n_blocks - c->n_free - c->n_lru;
    out->blocks_registered = c->n_registered;
    out->n_seqs = c->n_seqs;
    out->prefix_lookups = c->prefix_lookups;
    out->prefix_query_tokens = c->prefix_query_tokens;
    out->prefix_hit_blocks = c->prefix_hit_blocks;
    out->prefix_hit_tokens = c->prefix_hit_tokens;
    out->evictions = c->evictions;
}

/* ---- sequences ---------------------------------------------------------------------------- */

eng_status kv_seq_create(kv_cache *c, int32_t max_tokens, uint64_t salt, kv_seq **out,
                         eng_err *err)
{
    *out = NULL;
    if (max_tokens < 1)
        return eng_fail(err, ENG_ERR_INVALID, "kv sequence: max_tokens %d must be >= 1",
                        max_tokens);
    /* A table never needs more entries than the pool has blocks. */
    int64_t want = ((int64_t)max_tokens + c->block_size - 1) / c->block_size;
    int32_t max_blocks = want < c->n_blocks ? (int32_t)want : c->n_blocks;
    kv_seq *s = malloc(sizeof *s + (size_t)max_blocks * sizeof(int32_t));
    if (!s)
        return eng_fail(err, ENG_ERR_NOMEM, "kv sequence: cannot allocate a %d-block table",
                        max_blocks);
    s->max_tokens = max_tokens;
    s->max_blocks = max_blocks;
    s->n_tokens = 0;
    s->n_blocks = 0;
    s->root = kv_hash_root(salt);
    s->chain_hash = s->root;
    s->prev = NULL;
    s->next = c->seqs;
    if (c->seqs)
        c->seqs->prev = s;
    c->seqs = s;
    c->n_seqs++;
    *out = s;
    return ENG_OK;
}

void kv_seq_free(kv_cache *c, kv_seq *s)
{
    if (!s)
        return;
    for (int32_t i = s->n_blocks - 1; i >= 0; i--)
        block_release(c, s->table[i]);
    if (s->prev)
        s->prev->next = s->next;
    else
        c->seqs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    c->n_seqs--;
    free(s);
}

/* The registered block for (parent, tokens[block_size]), or KV_NONE. */
static int32_t prefix_find(const kv_cache *c, uint64_t h, uint64_t parent, const int32_t *tokens)
{
    int64_t slot = map_find(c, h);
    if (slot < 0)
        return KV_NONE;
    int32_t b = c->map[slot];
    size_t bs = (size_t)c->block_size;
    if (c->parent[b] != parent || memcmp(c->tokens + (size_t)b * bs, tokens, bs * sizeof *tokens))
        return KV_NONE; /* a hash collision: different contents */
    return b;
}

int32_t kv_seq_match_prefix(kv_cache *c, kv_seq *s, const int32_t *tokens, int32_t n)
{
    ENG_ASSERT(s->n_tokens == 0 && s->n_blocks == 0);
    if (!c->prefix_caching || n <= 0)
        return 0;
    c->prefix_lookups++;
    c->prefix_query_tokens += n;
    const int32_t bs = c->block_size;
    /* Full blocks that leave at least one token to compute, and that fit the table. */
    int32_t n_full = (n - 1) / bs;
    if (n_full > s->max_tokens / bs)
        n_full = s->max_tokens / bs;
    if (n_full > s->max_blocks)
        n_full = s->max_blocks;
    uint64_t parent = s->root;
    int32_t i = 0;
    for (; i < n_full; i++) {
        const int32_t *blk = tokens + (size_t)i * (size_t)bs;
        uint64_t h = kv_block_hash(parent, blk, bs);
        int32_t b = prefix_find(c, h, parent, blk);
        if (b == KV_NONE)
            break;
        if (c->ref[b] == 0)
            lru_remove(c, b);
        c->ref[b]++;
        s->table[i] = b;
        parent = h;
    }
    s->n_blocks = i;
    s->n_tokens = i * bs;
    s->chain_hash = parent;
    c->prefix_hit_blocks += i;
    c->prefix_hit_tokens += (int64_t)i * bs;
    return i * bs;
}

int32_t kv_seq_blocks_needed(const kv_cache *c, const kv_seq *s, int32_t n_tokens)
{
    int64_t want = ((int64_t)n_tokens + c->block_size - 1) / c->block_size;
    return want > s->n_blocks ? (int32_t)(want - s->n_blocks) : 0;
}

eng_status kv_seq_reserve(kv_cache *c, kv_seq *s, int32_t n_tokens)
{
    if (n_tokens > s->max_tokens)
        return ENG_ERR_TOO_LONG;
    int32_t need = kv_seq_blocks_needed(c, s, n_tokens);
    if (need == 0)
        return ENG_OK;
    if (need > c->n_free + c->n_lru || s->n_blocks + need > s->max_blocks)
        return ENG_ERR_OVERLOAD;
    for (int32_t i = 0; i < need; i++)
        s->table[s->n_blocks++] = block_take(c);
    return ENG_OK;
}

/* Puts full block b (hash h, under parent) in the prefix cache unless that hash is taken. */
static void prefix_register(kv_cache *c, int32_t b, uint64_t h, uint64_t parent,
                            const int32_t *tokens)
{
    if (map_find(c, h) >= 0)
        return; /* the same prefix is already cached (or, rarely, a colliding one) */
    size_t bs = (size_t)c->block_size;
    c->hash[b] = h;
    c->parent[b] = parent;
    memcpy(c->tokens + (size_t)b * bs, tokens, bs * sizeof *tokens);
    c->registered[b] = 1;
    c->n_registered++;
    map_insert(c, b);
}

void kv_seq_commit(kv_cache *c, kv_seq *s, const int32_t *tokens, int32_t n_total)
{
    const int32_t bs = c->block_size;
    ENG_ASSERT(n_total >= s->n_tokens);
    ENG_ASSERT((int64_t)n_total <= (int64_t)s->n_blocks * bs);
    ENG_ASSERT(tokens || !c->prefix_caching);
    if (n_total == s->n_tokens)
        return;
    /* The blocks just written must be this sequence's alone and not in the prefix cache:
     * only full blocks are shared, and full blocks are never written again. */
    for (int32_t i = s->n_tokens / bs, end = (n_total + bs - 1) / bs; i < end; i++)
        ENG_ASSERT(c->ref[s->table[i]] == 1 && !c->registered[s->table[i]]);
    int32_t first_new_full = s->n_tokens / bs, n_full = n_total / bs;
    s->n_tokens = n_total;
    if (!c->prefix_caching)
        return;
    for (int32_t i = first_new_full; i < n_full; i++) {
        const int32_t *blk = tokens + (size_t)i * (size_t)bs;
        uint64_t h = kv_block_hash(s->chain_hash, blk, bs);
        prefix_register(c, s->table[i], h, s->chain_hash, blk);
        s->chain_hash = h;
    }
}

const int32_t *kv_seq_blocks(const kv_seq *s) { return s->table; }
int32_t kv_seq_n_blocks(const kv_seq *s) { return s->n_blocks; }
int32_t kv_seq_n_tokens(const kv_seq *s) { return s->n_tokens; }
int32_t kv_seq_max_tokens(const kv_seq *s) { return s->max_tokens; }

/* ---- invariant check ---------------------------------------------------------------------- */

enum { KV_MARK_NONE, KV_MARK_FREE, KV_MARK_LRU };

static eng_status check_lists(const kv_cache *c, uint8_t *mark, eng_err *err)
{
    if (c->n_free < 0 || c->n_free > c->n_blocks)
        return eng_fail(err, ENG_ERR_INVALID, "kv check: n_free %d out of range", c->n_free);
    for (int32_t i = 0; i < c->n_free; i++) {
        int32_t b = c->free_stack[i];
        if (b < 0 || b >= c->n_blocks)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: free list holds block id %d", b);
        if (mark[b] != KV_MARK_NONE)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: block %d twice on the free list", b);
        if (c->ref[b] != 0 || c->registered[b])
            return eng_fail(err, ENG_ERR_INVALID,
                            "kv check: free block %d has ref %d, registered %d", b, c->ref[b],
                            c->registered[b]);
        mark[b] = KV_MARK_FREE;
    }
    int32_t count = 0, prev = KV_NONE;
    for (int32_t b = c->lru_head; b != KV_NONE; prev = b, b = c->lru_next[b]) {
        if (b < 0 || b >= c->n_blocks || count >= c->n_blocks)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: LRU list broken at block %d", b);
        if (mark[b] != KV_MARK_NONE)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: LRU block %d is also %s", b,
                            mark[b] == KV_MARK_FREE ? "free" : "earlier in the LRU");
        if (c->lru_prev[b] != prev)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: LRU block %d has prev %d, not %d", b,
                            c->lru_prev[b], prev);
        if (c->ref[b] != 0 || !c->registered[b])
            return eng_fail(err, ENG_ERR_INVALID,
                            "kv check: cached block %d has ref %d, registered %d", b, c->ref[b],
                            c->registered[b]);
        mark[b] = KV_MARK_LRU;
        count++;
    }
    if (prev != c->lru_tail || count != c->n_lru)
        return eng_fail(err, ENG_ERR_INVALID,
                        "kv check: LRU walk found %d blocks ending at %d; counters say %d ending "
                        "at %d",
                        count, prev, c->n_lru, c->lru_tail);
    return ENG_OK;
}

/* Counts each block's occurrences in sequence tables into refs and checks each table. */
static eng_status check_seqs(const kv_cache *c, const uint8_t *mark, int32_t *refs, eng_err *err)
{
    const int32_t bs = c->block_size;
    int32_t n_seqs = 0;
    for (const kv_seq *s = c->seqs; s; s = s->next, n_seqs++) {
        if (n_seqs >= c->n_seqs || (s->next && s->next->prev != s))
            return eng_fail(err, ENG_ERR_INVALID, "kv check: sequence list broken");
        if (s->n_blocks < 0 || s->n_blocks > s->max_blocks || s->n_tokens < 0 ||
            (int64_t)s->n_tokens > (int64_t)s->n_blocks * bs || s->n_tokens > s->max_tokens)
            return eng_fail(err, ENG_ERR_INVALID,
                            "kv check: sequence %d has %d tokens in %d blocks (max %d, %d)", n_seqs,
                            s->n_tokens, s->n_blocks, s->max_tokens, s->max_blocks);
        if (s->n_tokens < bs && s->chain_hash != s->root)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: sequence %d has no full block but "
                            "a chain hash", n_seqs);
        for (int32_t i = 0; i < s->n_blocks; i++) {
            int32_t b = s->table[i];
            if (b < 0 || b >= c->n_blocks)
                return eng_fail(err, ENG_ERR_INVALID, "kv check: sequence %d block %d is id %d",
                                n_seqs, i, b);
            if (mark[b] != KV_MARK_NONE)
                return eng_fail(err, ENG_ERR_INVALID,
                                "kv check: sequence %d holds block %d, which is %s", n_seqs, b,
                                mark[b] == KV_MARK_FREE ? "free" : "in the LRU");
            if (i >= s->n_tokens / bs && c->registered[b])
                return eng_fail(err, ENG_ERR_INVALID,
                                "kv check: sequence %d's non-full block %d (id %d) is registered",
                                n_seqs, i, b);
            refs[b]++;
        }
    }
    if (n_seqs != c->n_seqs)
        return eng_fail(err, ENG_ERR_INVALID, "kv check: %d sequences listed, counter says %d",
                        n_seqs, c->n_seqs);
    /* A partial or not-yet-written block must belong to one table only. */
    for (const kv_seq *s = c->seqs; s; s = s->next)
        for (int32_t i = s->n_tokens / bs; i < s->n_blocks; i++)
            if (refs[s->table[i]] != 1)
                return eng_fail(err, ENG_ERR_INVALID,
                                "kv check: writable block %d is in %d tables", s->table[i],
                                refs[s->table[i]]);
    return ENG_OK;
}

static eng_status check_map(const kv_cache *c, eng_err *err)
{
    const size_t bs = (size_t)c->block_size;
    int32_t entries = 0;
    for (uint32_t i = 0; i <= c->map_mask; i++) {
        int32_t b = c->map[i];
        if (b == KV_NONE)
            continue;
        if (b < 0 || b >= c->n_blocks || !c->registered[b])
            return eng_fail(err, ENG_ERR_INVALID, "kv check: map slot %u holds unregistered %d",
                            i, b);
        /* Linear probing: no empty slot between the home slot and this one. */
        for (uint32_t j = (uint32_t)c->hash[b] & c->map_mask; j != i; j = (j + 1) & c->map_mask)
            if (c->map[j] == KV_NONE)
                return eng_fail(err, ENG_ERR_INVALID,
                                "kv check: block %d unreachable in map slot %u", b, i);
        if (map_find(c, c->hash[b]) != (int64_t)i)
            return eng_fail(err, ENG_ERR_INVALID, "kv check: hash of block %d registered twice",
                            b);
        if (kv_block_hash(c->parent[b], c->tokens + (size_t)b * bs, c->block_size) != c->hash[b])
            return eng_fail(err, ENG_ERR_INVALID,
                            "kv check: block %d's hash does not match its tokens", b);
        entries++;
    }
    int32_t n_reg = 0;
    for (int32_t b = 0; b < c->n_blocks; b++)
        n_reg += c->registered[b] != 0;
    if (entries != c->n_registered || n_reg != c->n_registered)
        return eng_fail(err, ENG_ERR_INVALID,
                        "kv check: %d map entries, %d registered blocks, counter says %d", entries,
                        n_reg, c->n_registered);
    if (!c->prefix_caching && (c->n_registered || c->n_lru))
        return eng_fail(err, ENG_ERR_INVALID, "kv check: prefix caching is off but %d blocks "
                        "are registered", c->n_registered);
    return ENG_OK;
}

eng_status kv_cache_check(const kv_cache *c, eng_err *err)
{
    uint8_t *mark = calloc((size_t)c->n_blocks, 1);
    int32_t *refs = calloc((size_t)c->n_blocks, sizeof *refs);
    eng_status st = ENG_ERR_NOMEM;
    if (!mark || !refs) {
        eng_fail(err, st, "kv check: cannot allocate scratch");
        goto done;
    }
    if ((st = check_lists(c, mark, err)) != ENG_OK || (st = check_seqs(c, mark, refs, err)) != ENG_OK ||
        (st = check_map(c, err)) != ENG_OK)
        goto done;
    int32_t n_used = 0;
    for (int32_t b = 0; b < c->n_blocks; b++) {
        if (c->ref[b] != refs[b]) {
            st = eng_fail(err, ENG_ERR_INVALID, "kv check: block %d has ref %d but is in %d tables",
                          b, c->ref[b], refs[b]);
            goto done;
        }
        if (mark[b] == KV_MARK_NONE && refs[b] == 0) {
            st = eng_fail(err, ENG_ERR_INVALID, "kv check: block %d is leaked (in no list or "
                          "table)", b);
            goto done;
        }
        n_used += refs[b] > 0;
    }
    if (c->n_free + c->n_lru + n_used != c->n_blocks)
        st = eng_fail(err, ENG_ERR_INVALID, "kv check: free %d + cached %d + used %d != %d",
                      c->n_free, c->n_lru, n_used, c->n_blocks);
done:
    free(mark);
    free(refs);
    return st;
}
