/* route_policy.c — the router's rules as pure functions (route_policy.h): rendezvous
 * affinity, the imbalance override, least-loaded with turns, affinity keys, session pins. */
#include "route_policy.h"

#include <stddef.h>
#include <string.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* FNV-1a over bytes, then mixed: equal leading prompts give equal keys in every process. */
static uint64_t hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *b = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return mix64(h);
}

int router_preferred(const router_view *v, int n, uint64_t key)
{
    int best = -1;
    uint64_t best_h = 0;
    for (int i = 0; i < n; i++) {
        if (!v[i].in_rotation)
            continue;
        uint64_t h = mix64(key ^ mix64((uint64_t)i + 0x9E3779B97F4A7C15ull));
        if (best < 0 || h > best_h) {
            best = i;
            best_h = h;
        }
    }
    return best;
}

int router_least_loaded(const router_view *v, int n, unsigned *turn)
{
    int best = -1;
    unsigned start = n > 0 ? *turn % (unsigned)n : 0;
    for (int k = 0; k < n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)n);
        if (v[i].in_rotation && (best < 0 || v[i].load < v[best].load))
            best = i;
    }
    if (best >= 0)
        *turn = (unsigned)best + 1;
    return best;
}

bool router_imbalanced(int32_t pref_load, int32_t idlest_load)
{
    return pref_load - idlest_load >= ROUTER_IMBALANCE_REQUESTS &&
           (double)pref_load >= ROUTER_IMBALANCE_RATIO * (double)idlest_load;
}

int router_pick(const router_view *v, int n, bool has_key, uint64_t key, unsigned *turn,
                eng_route_reason *why)
{
    if (has_key) {
        int pref = router_preferred(v, n, key);
        if (pref < 0)
            return -1;
        unsigned probe = *turn; /* finding the idlest must not use up a turn */
        int idlest = router_least_loaded(v, n, &probe);
        if (!router_imbalanced(v[pref].load, v[idlest].load)) {
            *why = ENG_ROUTE_AFFINITY;
            return pref;
        }
        *why = ENG_ROUTE_REBALANCED;
        return router_least_loaded(v, n, turn);
    }
    *why = ENG_ROUTE_LEAST_LOADED;
    return router_least_loaded(v, n, turn);
}

bool router_affinity_key(const eng_request_params *p, int32_t block_size, uint64_t *key,
                         bool *is_session)
{
    uint64_t salt = mix64(p->cache_salt + 0x632BE59BD9B4E019ull);
    *is_session = p->session_key != 0;
    if (*is_session) {
        *key = mix64(p->session_key ^ salt);
        return true;
    }
    if (p->n_tokens > 0) {
        if (block_size < 1 || p->n_tokens < block_size)
            return false;
        int64_t n = (int64_t)block_size * ROUTER_AFFINITY_BLOCKS;
        if (n > p->n_tokens)
            n = p->n_tokens;
        *key = hash_bytes(p->tokens, sizeof(int32_t) * (size_t)n, salt);
        return true;
    }
    if (!p->text || p->text_len < ROUTER_AFFINITY_MIN_TEXT_BYTES)
        return false;
    size_t n = p->text_len < ROUTER_AFFINITY_TEXT_BYTES ? p->text_len : ROUTER_AFFINITY_TEXT_BYTES;
    *key = hash_bytes(p->text, n, salt);
    return true;
}

static router_pin *pin_slot(router_pin *pins, uint64_t key)
{
    return &pins[mix64(key) % ROUTER_PIN_SLOTS];
}

int router_pin_get(router_pin *pins, uint64_t key, double now_ms, const router_view *v, int n)
{
    router_pin *s = pin_slot(pins, key);
    if (s->key != key || key == 0 || now_ms - s->last_ms > ROUTER_PIN_IDLE_MS ||
        s->replica < 0 || s->replica >= n || !v[s->replica].in_rotation)
        return -1;
    s->last_ms = now_ms;
    return s->replica;
}

void router_pin_set(router_pin *pins, uint64_t key, int replica, double now_ms)
{
    router_pin *s = pin_slot(pins, key);
    s->key = key;
    s->replica = replica;
    s->last_ms = now_ms;
}
