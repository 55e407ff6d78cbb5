/* kv_cache.h — paged KV cache bookkeeping: which block ids each sequence uses, reference
 * counts, a free list, and prefix caching (full blocks found again by a hash chain). */
#ifndef SERVAL_KV_CACHE_H
#define SERVAL_KV_CACHE_H

/*
 * The backend owns the K/V tensor memory ([n_blocks, block_size, ...] per layer) and indexes
 * it by block id; this module only decides which ids a sequence's positions live in. Position
 * p of a sequence is slot p % block_size of block kv_seq_blocks(s)[p / block_size].
 *
 * Every block is in exactly one state:
 *   free    — on the free list (refcount 0, holds nothing useful);
 *   used    — in one or more sequences' block tables (refcount = number of tables);
 *   cached  — refcount 0 but it holds a full block registered in the prefix cache; it sits in
 *             an LRU list and is reused when a later prompt starts with the same tokens, or
 *             evicted (oldest first) when the free list is empty and a block is needed.
 *
 * Prefix caching: a full block is named by kv_block_hash(parent's hash, its tokens), where the
 * parent is the previous block of the same sequence (the root for block 0), so a hash
 * names the whole prefix up to the end of that block. A lookup also compares the stored
 * parent hash and tokens, so a false reuse needs a 64-bit collision of a parent hash.
 * A sequence created with a salt (kv_hash_root) starts its chain from a different root, so
 * its blocks are never found by sequences with another salt (a per-tenant cache).
 * Only full blocks are ever shared, and a sequence writes only into its last partial block or
 * into fresh blocks, so shared blocks are never written and no copy-on-write is needed.
 *
 * Usage for one request (the scheduler's step loop; the module is not thread-safe):
 *   kv_seq_create(c, ctx_len, &s, &err);
 *   n_done = kv_seq_match_prefix(c, s, prompt, n_prompt);   // skip computing these
 *   per step: kv_seq_reserve(c, s, n_done + chunk)  -> ENG_ERR_OVERLOAD: wait or preempt
 *             backend computes positions [n_done, n_done + chunk) into kv_seq_blocks(s)
 *             kv_seq_commit(c, s, tokens, n_done + chunk)
 *   kv_seq_free(c, s);   // its full blocks stay cached for the next request
 *
 * Nothing here allocates after kv_cache_create / kv_seq_create.
 */

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef struct kv_cache kv_cache;
typedef struct kv_seq kv_seq;

/* Parent hash of a sequence's first block (salt 0: the shared cache). */
#define KV_HASH_ROOT UINT64_C(0x53657276616c4b56)

/* The parent hash of the first block of a sequence created with this salt: KV_HASH_ROOT for
 * 0, otherwise a hash of the salt under a root of its own (so no salted root equals the hash
 * of an unsalted block). Different salts give different roots barring a 64-bit collision. */
uint64_t kv_hash_root(uint64_t salt);

typedef struct kv_stats {
    int32_t blocks_total;
    int32_t blocks_free;         /* on the free list */
    int32_t blocks_used;         /* referenced by at least one sequence */
    int32_t blocks_cached;       /* unreferenced, kept for prefix reuse (evictable) */
    int32_t blocks_registered;   /* in the prefix-cache map (used or cached) */
    int32_t n_seqs;              /* live sequences */
    int64_t prefix_lookups;      /* kv_seq_match_prefix calls (with prefix caching on) */
    int64_t prefix_query_tokens; /* prompt tokens those calls were asked about */
    int64_t prefix_hit_blocks;   /* blocks reused */
    int64_t prefix_hit_tokens;   /* tokens reused (hit rate = hit_tokens / query_tokens) */
    int64_t evictions;           /* cached blocks dropped to make room */
} kv_stats;

/* Creates a cache of n_blocks blocks of block_size token positions each (block_size is
 * typically 16). n_blocks in [1, 2^28], block_size in [1, 4096]. With prefix_caching off,
 * full blocks are never hashed or kept after their last sequence frees them.
 * Allocates everything up front: O(n_blocks * block_size) memory (the tokens of each block
 * are kept to verify prefix hits). *out is owned by the caller; free it with kv_cache_free. */
eng_status kv_cache_create(int32_t n_blocks, int32_t block_size, bool prefix_caching,
                           kv_cache **out, eng_err *err);

/* Frees the cache and any sequences still live in it (their handles become invalid).
 * kv_cache_free(NULL) does nothing. */
void kv_cache_free(kv_cache *c);

int32_t kv_cache_block_size(const kv_cache *c);
int32_t kv_cache_n_blocks(const kv_cache *c);

/* Blocks a reservation can take right now: free plus cached (evictable). O(1). */
int32_t kv_cache_n_available(const kv_cache *c);

/* Fills *out. O(1). */
void kv_cache_stats(const kv_cache *c, kv_stats *out);

/* Verifies every invariant: each block in exactly one state, free list and LRU list well
 * formed, each refcount equal to the number of sequence tables holding the block, the hash
 * map consistent with the blocks' stored hashes and tokens, only full blocks shared or
 * registered, and the counters adding up. For tests and debugging: O(n_blocks * block_size
 * + total table lengths), and it allocates scratch (ENG_ERR_NOMEM if that fails). Returns
 * ENG_ERR_INVALID with the first violation in err. */
eng_status kv_cache_check(const kv_cache *c, eng_err *err);

/* Creates an empty sequence that can grow to max_tokens positions (>= 1). Its block table is
 * allocated here, sized min(ceil(max_tokens / block_size), n_blocks). Its prefix-cache chain
 * starts at kv_hash_root(salt): it shares cached blocks only with sequences of the same salt
 * (0: the shared cache). *out is owned by the caller and must be freed with kv_seq_free on the
 * same cache. */
eng_status kv_seq_create(kv_cache *c, int32_t max_tokens, uint64_t salt, kv_seq **out,
                         eng_err *err);

/* Drops the sequence's references (blocks of its table that reach refcount 0 go to the LRU
 * list when they are registered full blocks, else to the free list) and frees it. Blocks go
 * to the LRU deepest first, so a prefix's tail is evicted before its head (a block can only
 * be found again through its parent). kv_seq_free(c, NULL) does nothing. O(table length). */
void kv_seq_free(kv_cache *c, kv_seq *s);

/* On an empty sequence (nothing reserved or committed), finds the longest chain of the
 * prompt's full blocks that is in the prefix cache, puts those blocks in the sequence's table
 * (refcount + 1 each, leaving the LRU) and marks them computed. Returns the number of tokens
 * reused: a multiple of block_size, and always < n so that at least one prompt token is left
 * to compute (the model needs it to produce logits): with the whole prompt cached, the last
 * block is recomputed. Returns 0 with prefix caching off. tokens[n] is read, not kept.
 * O(reused blocks * block_size). */
int32_t kv_seq_match_prefix(kv_cache *c, kv_seq *s, const int32_t *tokens, int32_t n);

/* Makes the table hold blocks for n_tokens positions in all (positions already reserved are
 * kept; it never shrinks), taking blocks from the free list first and evicting the oldest
 * cached blocks after that. ENG_ERR_TOO_LONG if n_tokens > max_tokens, ENG_ERR_OVERLOAD if
 * there are not enough free and cached blocks; on either error nothing changes.
 * O(new blocks). */
eng_status kv_seq_reserve(kv_cache *c, kv_seq *s, int32_t n_tokens);

/* Additional blocks kv_seq_reserve(c, s, n_tokens) would take (0 when already reserved).
 * O(1). */
int32_t kv_seq_blocks_needed(const kv_cache *c, const kv_seq *s, int32_t n_tokens);

/* Records that the sequence now has n_total positions computed (n_total >= kv_seq_n_tokens,
 * within what was reserved); tokens[0 .. n_total) are all of the sequence's tokens, prompt
 * and generated (read, not kept; may be NULL only with prefix caching off). Each block that
 * became full is hashed and registered in the prefix cache, unless a block with the same
 * hash is already registered (another sequence computed the same prefix): then this copy
 * stays unregistered and returns to the free list when released. O(new tokens). */
void kv_seq_commit(kv_cache *c, kv_seq *s, const int32_t *tokens, int32_t n_total);

/* The block table: kv_seq_n_blocks(s) block ids, owned by s. The pointer is stable until
 * kv_seq_free(s); kv_seq_reserve appends entries and never changes existing ones. */
const int32_t *kv_seq_blocks(const kv_seq *s);
int32_t kv_seq_n_blocks(const kv_seq *s);
/* Positions computed (committed or reused from the prefix cache). */
int32_t kv_seq_n_tokens(const kv_seq *s);
int32_t kv_seq_max_tokens(const kv_seq *s);

/* The 64-bit hash naming a block of n tokens whose parent block's hash is parent (pass
 * KV_HASH_ROOT for a sequence's first block). xxhash64-style mixing; stable across runs and
 * machines, so it can also route requests to the replica that holds a prefix. O(n). */
uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int32_t n);

#endif
