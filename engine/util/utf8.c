/* utf8.c — UTF-8 validation and repair (utf8.h). */
#include "utf8.h"

#include <string.h>

bool eng_utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t k;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, min = 0x10000, c &= 0x07;
        } else {
            goto bad;
        }
        if (i + k >= n)
            goto bad;
        for (size_t j = 1; j <= k; j++) {
            if ((u[i + j] & 0xC0) != 0x80)
                goto bad;
            c = (c << 6) | (u[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            goto bad;
        i += k + 1;
    }
    return true;
bad:
    if (bad_at)
        *bad_at = i;
    return false;
}

size_t eng_utf8_sanitize(const char *s, size_t n, char *dst)
{
    size_t i = 0, o = 0, bad = 0;
    while (i < n) {
        if (eng_utf8_valid(s + i, n - i, &bad))
            bad = n - i;
        memcpy(dst + o, s + i, bad);
        o += bad;
        i += bad;
        if (i < n) { /* one invalid byte */
            memcpy(dst + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    return o;
}
