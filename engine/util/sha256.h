/* sha256.h — SHA-256 (FIPS 180-4): the one implementation, for the token store's HMAC
 * (rpc/auth_hash.c) and the tests' digests of tensors and logit rows. Not constant-time
 * with respect to anything but the data's length; checked against the standard's vectors. */
#ifndef SERVAL_SHA256_H
#define SERVAL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define ENG_SHA256_BYTES 32

typedef struct eng_sha256_ctx {
    uint32_t h[8];
    uint8_t buf[64];
    size_t fill;
    uint64_t total;
} eng_sha256_ctx;

/* Streaming: init, update any number of times, final once (the context is spent then). */
void eng_sha256_init(eng_sha256_ctx *c);
void eng_sha256_update(eng_sha256_ctx *c, const void *data, size_t len);
void eng_sha256_final(eng_sha256_ctx *c, uint8_t out[ENG_SHA256_BYTES]);

/* out = SHA-256(data[0 .. len)). */
void eng_sha256(const void *data, size_t len, uint8_t out[ENG_SHA256_BYTES]);

#endif
