/* auth_hash.h — SHA-256 and HMAC-SHA-256 (FIPS 180-4, RFC 2104) for the token store: named
 * tokens are kept only as HMAC-SHA-256(store salt, token), never in clear. */
#ifndef SERVAL_RPC_AUTH_HASH_H
#define SERVAL_RPC_AUTH_HASH_H

#include <stddef.h>
#include <stdint.h>

#define RPC_SHA256_BYTES 32

/* out = SHA-256(data[0..len)). */
void rpc_sha256(const void *data, size_t len, uint8_t out[RPC_SHA256_BYTES]);

/* out = HMAC-SHA-256(key, msg). */
void rpc_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                     uint8_t out[RPC_SHA256_BYTES]);

/* Lower-case hex of n bytes into out (2n + 1 bytes with the NUL). */
void rpc_hex(const uint8_t *b, size_t n, char *out);

/* Parses exactly 2n hex digits into b; 0 on success, -1 otherwise. */
int rpc_unhex(const char *s, size_t slen, uint8_t *b, size_t n);

#endif
