/* prompt_text.c — byte-level text helpers of the prompt builder: UTF-8 validation, CRLF and
 * LF conversion, and a growable string. */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

bool prompt_utf8_valid(const char *s, size_t n)
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
            return false;
        }
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((u[i + j] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (u[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

char *prompt_crlf_to_lf(const char *s, size_t n, size_t *out_len, bool *had_crlf)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            *had_crlf = true;
            continue;
        }
        o[k++] = s[i];
    }
    o[k] = 0;
    *out_len = k;
    return o;
}

char *prompt_lf_to_crlf(const char *text, size_t len, size_t *out_len)
{
    size_t extra = 0;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
            extra++;
    char *o = malloc(len + extra + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r'))
            o[k++] = '\r';
        o[k++] = text[i];
    }
    o[k] = 0;
    *out_len = k;
    return o;
}

void prompt_str_put(prompt_str *t, const char *s, size_t n)
{
    if (!n || t->oom || n > ((size_t)1 << 40))
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = true;
            return;
        }
        t->buf = b, t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}
