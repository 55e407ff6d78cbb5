/* utf8.c — the engine's UTF-8 codec: decoding, encoding, validation and repair (utf8.h). */
#include "utf8.h"

#include <string.h>

size_t eng_utf8_next(const char *s, size_t n, uint32_t *cpt)
{
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c = u[0], min;
    size_t len;
    if (c < 0x80) {
        *cpt = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, min = 0x80, c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        goto bad;
    }
    if (len > n)
        goto bad;
    for (size_t j = 1; j < len; j++) {
        if ((u[j] & 0xC0) != 0x80)
            goto bad;
        c = (c << 6) | (u[j] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        goto bad;
    *cpt = c;
    return len;
bad:
    *cpt = 0xFFFD;
    return 1;
}

size_t eng_utf8_put(uint32_t c, char o[4])
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* An invalid byte is the only thing that decodes as U+FFFD in one byte (the character itself
 * takes three). */
bool eng_utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c;
        size_t len = eng_utf8_next(s + i, n - i, &c);
        if (c == 0xFFFD && len == 1) {
            if (bad_at)
                *bad_at = i;
            return false;
        }
        i += len;
    }
    return true;
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
