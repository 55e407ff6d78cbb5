/* utf8.h — the engine's one UTF-8 validity rule (token texts at load, prompt fields, the text
 * a request publishes). */
#ifndef SERVAL_UTF8_H
#define SERVAL_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether s[0 .. n) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequence). When it is not and bad_at is non-NULL, *bad_at is
 * the offset of the first sequence that is not. O(n). */
bool eng_utf8_valid(const char *s, size_t n, size_t *bad_at);

/* Decodes the character at s[0 .. n) (n >= 1) into *cpt and returns its length. A byte that
 * does not start a well-formed sequence (the rule above) decodes as U+FFFD with length 1, so
 * a caller skips one byte and goes on, as Rust's and Python's lossy decoders do. O(1). */
size_t eng_utf8_next(const char *s, size_t n, uint32_t *cpt);

/* Encodes cpt (<= U+10FFFF) into out[0 .. 4) and returns the bytes written, 1 to 4. */
size_t eng_utf8_put(uint32_t cpt, char out[4]);

/* Copies s[0 .. n) to dst, each byte that does not start a well-formed sequence (by the rule
 * above) replaced by U+FFFD (EF BF BD), as llama.cpp's server and Python's
 * decode(errors="replace") do for model output that is not UTF-8: a byte token sequence can
 * end mid-character or be invalid. dst (owned by the caller) has room for 3 * n bytes;
 * returns the bytes written. O(n). */
size_t eng_utf8_sanitize(const char *s, size_t n, char *dst);

#endif
