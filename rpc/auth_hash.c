/* auth_hash.c — HMAC-SHA-256 (RFC 2104) over the engine's SHA-256 (engine/util/sha256.h) and
 * hex, for the token store; tests check them against the standards' vectors. */
#include "auth_hash.h"

#include <string.h>

#include "sha256.h"

_Static_assert(RPC_SHA256_BYTES == ENG_SHA256_BYTES, "one digest size");

void rpc_sha256(const void *data, size_t len, uint8_t out[RPC_SHA256_BYTES])
{
    eng_sha256(data, len, out);
}

void rpc_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                     uint8_t out[RPC_SHA256_BYTES])
{
    uint8_t k[64] = {0}, ipad[64], opad[64], inner[RPC_SHA256_BYTES];
    if (key_len > 64)
        rpc_sha256(key, key_len, k);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < 64; i++) ipad[i] = k[i] ^ 0x36, opad[i] = k[i] ^ 0x5c;
    eng_sha256_ctx c;
    eng_sha256_init(&c);
    eng_sha256_update(&c, ipad, 64);
    eng_sha256_update(&c, msg, msg_len);
    eng_sha256_final(&c, inner);
    eng_sha256_init(&c);
    eng_sha256_update(&c, opad, 64);
    eng_sha256_update(&c, inner, sizeof inner);
    eng_sha256_final(&c, out);
}

void rpc_hex(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) out[2 * i] = d[b[i] >> 4], out[2 * i + 1] = d[b[i] & 15];
    out[2 * n] = '\0';
}

static int nib(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int rpc_unhex(const char *s, size_t slen, uint8_t *b, size_t n)
{
    if (slen != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
