/* utf8.h — the engine's one UTF-8 validity rule (token texts at load, prompt fields). */
#ifndef SERVAL_UTF8_H
#define SERVAL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0 .. n) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequence). When it is not and bad_at is non-NULL, *bad_at is
 * the offset of the first sequence that is not. O(n). */
bool eng_utf8_valid(const char *s, size_t n, size_t *bad_at);

#endif
