/* tu_json.c — recursive-descent JSON parser and base64 decoder for test fixtures. */
#include "tu_json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t i, n;
    int depth;
} parser;

static void ws(parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\n' || p->s[p->i] == '\r' ||
                           p->s[p->i] == '\t'))
        p->i++;
}

static tu_json *value(parser *p);

static void put_utf8(char *out, size_t *o, unsigned cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(parser *p, unsigned *v)
{
    if (p->i + 4 > p->n)
        return -1;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        *v <<= 4;
        if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    return 0;
}

static char *string(parser *p, size_t *len)
{
    if (p->i >= p->n || p->s[p->i] != '"')
        return NULL;
    p->i++;
    char *out = malloc(p->n - p->i + 1);
    size_t o = 0;
    while (p->i < p->n && p->s[p->i] != '"') {
        char c = p->s[p->i++];
        if (c != '\\') {
            out[o++] = c;
            continue;
        }
        if (p->i >= p->n)
            goto bad;
        c = p->s[p->i++];
        switch (c) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp))
                goto bad;
            if (cp >= 0xD800 && cp < 0xDC00 && p->i + 6 <= p->n && p->s[p->i] == '\\' &&
                p->s[p->i + 1] == 'u') {
                unsigned lo;
                p->i += 2;
                if (hex4(p, &lo))
                    goto bad;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(out, &o, cp);
            break;
        }
        default: goto bad;
        }
    }
    if (p->i >= p->n)
        goto bad;
    p->i++;
    out[o] = '\0';
    *len = o;
    return out;
bad:
    free(out);
    return NULL;
}

static tu_json *node(tu_json_type t)
{
    tu_json *j = calloc(1, sizeof *j);
    j->type = t;
    return j;
}

static void push(tu_json *j, char *key, tu_json *v)
{
    j->items = realloc(j->items, sizeof *j->items * (j->n + 1));
    j->items[j->n] = v;
    if (j->type == TU_JSON_OBJ) {
        j->keys = realloc(j->keys, sizeof *j->keys * (j->n + 1));
        j->keys[j->n] = key;
    }
    j->n++;
}

static tu_json *container(parser *p, bool obj)
{
    tu_json *j = node(obj ? TU_JSON_OBJ : TU_JSON_ARR);
    p->i++;
    ws(p);
    if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
        p->i++;
        return j;
    }
    for (;;) {
        char *key = NULL;
        ws(p);
        if (obj) {
            size_t kl;
            if (!(key = string(p, &kl)))
                goto bad;
            ws(p);
            if (p->i >= p->n || p->s[p->i++] != ':') {
                free(key);
                goto bad;
            }
        }
        tu_json *v = value(p);
        if (!v) {
            free(key);
            goto bad;
        }
        push(j, key, v);
        ws(p);
        if (p->i >= p->n)
            goto bad;
        char c = p->s[p->i++];
        if (c == ',')
            continue;
        if (c == (obj ? '}' : ']'))
            return j;
        goto bad;
    }
bad:
    tu_json_free(j);
    return NULL;
}

static tu_json *value(parser *p)
{
    ws(p);
    if (p->i >= p->n || ++p->depth > 64)
        return NULL;
    tu_json *j = NULL;
    char c = p->s[p->i];
    if (c == '{' || c == '[') {
        j = container(p, c == '{');
    } else if (c == '"') {
        size_t len;
        char *s = string(p, &len);
        if (s) {
            j = node(TU_JSON_STR);
            j->str = s;
            j->str_len = len;
        }
    } else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "true", 4)) {
        p->i += 4;
        j = node(TU_JSON_BOOL);
        j->b = true;
    } else if (p->n - p->i >= 5 && !strncmp(p->s + p->i, "false", 5)) {
        p->i += 5;
        j = node(TU_JSON_BOOL);
    } else if (p->n - p->i >= 4 && !strncmp(p->s + p->i, "null", 4)) {
        p->i += 4;
        j = node(TU_JSON_NULL);
    } else {
        char buf[64];
        size_t k = 0;
        while (p->i < p->n && k < sizeof buf - 1 && strchr("+-0123456789.eE", p->s[p->i]))
            buf[k++] = p->s[p->i++];
        buf[k] = '\0';
        char *end;
        double v = strtod(buf, &end);
        if (k > 0 && *end == '\0') {
            j = node(TU_JSON_NUM);
            j->num = v;
        }
    }
    p->depth--;
    return j;
}

tu_json *tu_json_parse(const char *text, size_t len)
{
    parser p = {.s = text, .n = len};
    tu_json *j = value(&p);
    ws(&p);
    if (j && p.i != p.n) {
        tu_json_free(j);
        return NULL;
    }
    return j;
}

void tu_json_free(tu_json *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        tu_json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j->str);
    free(j);
}

const tu_json *tu_json_get(const tu_json *obj, const char *key)
{
    if (!obj || obj->type != TU_JSON_OBJ)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (!strcmp(obj->keys[i], key))
            return obj->items[i];
    return NULL;
}

unsigned char *tu_base64_decode(const char *s, size_t n, size_t *len)
{
    unsigned char *out = malloc(n / 4 * 3 + 4);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else if (c == '=') break;
        else { free(out); return NULL; }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}
