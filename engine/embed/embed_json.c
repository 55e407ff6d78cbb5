/* embed_json.c — a small validating JSON reader for the model files `serval convert` reads
 * (HF config.json, tokenizer.json, 1_Pooling/config.json, the safetensors header): parses a
 * whole document into a tree, with a depth limit and byte positions in its errors. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "embed_impl.h"
#include "utf8.h"

enum { EJ_MAX_DEPTH = 64 };

typedef struct ej_parser {
    const char *s;
    size_t n, i;
    const char *what; /* the file, for messages */
    eng_err *err;
} ej_parser;

static eng_status perr(ej_parser *p, const char *msg)
{
    return eng_fail(p->err, ENG_ERR_FORMAT, "%s: invalid JSON at byte %zu: %s", p->what, p->i,
                    msg);
}

static void skip_ws(ej_parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static bool hex4(ej_parser *p, uint32_t *v)
{
    if (p->n - p->i < 4)
        return false;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            *v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            *v |= (uint32_t)(c - 'A' + 10);
        else
            return false;
    }
    return true;
}

/* p->i is at the opening quote. *out is a new NUL-terminated string (escapes decoded). */
static eng_status parse_str(ej_parser *p, char **out, size_t *len)
{
    p->i++;
    size_t start = p->i;
    while (p->i < p->n && p->s[p->i] != '"') {
        if (p->s[p->i] == '\\')
            p->i++;
        p->i++;
    }
    if (p->i >= p->n)
        return perr(p, "unterminated string");
    /* Decoded text is never longer than the escaped text. */
    char *o = malloc(p->i - start + 1);
    if (!o)
        return eng_fail(p->err, ENG_ERR_NOMEM, "%s: out of memory", p->what);
    size_t end = p->i, k = 0;
    p->i = start;
    while (p->i < end) {
        char c = p->s[p->i++];
        if ((unsigned char)c < 0x20) {
            free(o);
            return perr(p, "control character in a string");
        }
        if (c != '\\') {
            o[k++] = c;
            continue;
        }
        char e = p->s[p->i++];
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            uint32_t v, lo;
            if (!hex4(p, &v)) {
                free(o);
                return perr(p, "bad \\u escape");
            }
            if (v >= 0xD800 && v < 0xDC00 && p->i + 6 <= end && p->s[p->i] == '\\' &&
                p->s[p->i + 1] == 'u') {
                p->i += 2;
                if (!hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                    free(o);
                    return perr(p, "bad surrogate pair");
                }
                v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
            } else if (v >= 0xD800 && v <= 0xDFFF) {
                v = 0xFFFD;
            }
            k += eng_utf8_put(v, o + k);
            break;
        }
        default:
            free(o);
            return perr(p, "bad escape");
        }
    }
    o[k] = 0;
    p->i = end + 1;
    *out = o;
    *len = k;
    return ENG_OK;
}

static eng_status parse_val(ej_parser *p, ej_val *v, int depth);

static eng_status push(ej_parser *p, ej_val *v, size_t *cap)
{
    if (v->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        ej_val *nv = realloc(v->items, nc * sizeof *nv);
        char **nk = v->type == EJ_OBJ ? realloc(v->keys, nc * sizeof *nk) : NULL;
        if (nv)
            v->items = nv;
        if (nk)
            v->keys = nk;
        if (!nv || (v->type == EJ_OBJ && !nk))
            return eng_fail(p->err, ENG_ERR_NOMEM, "%s: out of memory", p->what);
        *cap = nc;
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    if (v->type == EJ_OBJ)
        v->keys[v->n] = NULL;
    v->n++;
    return ENG_OK;
}

static eng_status parse_container(ej_parser *p, ej_val *v, int depth)
{
    bool obj = p->s[p->i] == '{';
    char close = obj ? '}' : ']';
    v->type = obj ? EJ_OBJ : EJ_ARR;
    p->i++;
    size_t cap = 0;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return ENG_OK;
    }
    for (;;) {
        eng_status st = push(p, v, &cap);
        if (st != ENG_OK)
            return st;
        skip_ws(p);
        if (obj) {
            size_t klen;
            if (p->i >= p->n || p->s[p->i] != '"')
                return perr(p, "expected a key");
            if ((st = parse_str(p, &v->keys[v->n - 1], &klen)) != ENG_OK)
                return st;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':')
                return perr(p, "expected ':'");
            p->i++;
        }
        if ((st = parse_val(p, &v->items[v->n - 1], depth + 1)) != ENG_OK)
            return st;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            return ENG_OK;
        }
        return perr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static eng_status parse_val(ej_parser *p, ej_val *v, int depth)
{
    if (depth > EJ_MAX_DEPTH)
        return perr(p, "nested too deeply");
    skip_ws(p);
    if (p->i >= p->n)
        return perr(p, "unexpected end");
    char c = p->s[p->i];
    if (c == '{' || c == '[')
        return parse_container(p, v, depth);
    if (c == '"') {
        v->type = EJ_STR;
        return parse_str(p, &v->str, &v->len);
    }
    static const struct { const char *w; ej_type t; bool b; } words[] = {
        {"true", EJ_BOOL, true}, {"false", EJ_BOOL, false}, {"null", EJ_NULL, false}};
    for (size_t k = 0; k < 3; k++) {
        size_t wl = strlen(words[k].w);
        if (p->n - p->i >= wl && memcmp(p->s + p->i, words[k].w, wl) == 0) {
            v->type = words[k].t;
            v->b = words[k].b;
            p->i += wl;
            return ENG_OK;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char buf[64];
        size_t k = 0;
        while (p->i < p->n && k < sizeof buf - 1 &&
               strchr("+-0123456789.eE", p->s[p->i]) != NULL)
            buf[k++] = p->s[p->i++];
        buf[k] = 0;
        char *end;
        errno = 0;
        v->num = strtod(buf, &end);
        if (*end != 0 || errno == ERANGE)
            return perr(p, "bad number");
        v->type = EJ_NUM;
        return ENG_OK;
    }
    return perr(p, "unexpected character");
}

eng_status ej_parse(const char *text, size_t len, const char *what, ej_val *out, eng_err *err)
{
    memset(out, 0, sizeof *out);
    ej_parser p = {text, len, 0, what, err};
    eng_status st = parse_val(&p, out, 0);
    if (st == ENG_OK) {
        skip_ws(&p);
        if (p.i != p.n)
            st = perr(&p, "text after the value");
    }
    if (st != ENG_OK)
        ej_free(out);
    return st;
}

void ej_free(ej_val *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        ej_free(&v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const ej_val *ej_get(const ej_val *obj, const char *key)
{
    if (!obj || obj->type != EJ_OBJ)
        return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (obj->keys[i] && strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}
