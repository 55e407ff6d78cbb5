/* prompt_text.c — byte-level text helpers of the prompt builder: CRLF and LF conversion, and
 * a growable string (UTF-8 validation is util/utf8.h). */
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

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
