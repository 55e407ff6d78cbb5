/* chunk.c — splits a source file into chunks on line boundaries (about Tabby's 512 characters),
 * preferring to cut before a top-level definition, as the languages table (engine/prompt)
 * names them, or at a blank line. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idx_impl.h"
#include "prompt.h"

/* File extensions whose language id differs from the extension; every other extension is
 * looked up in the languages table as it is (py, rs, go, js, ts, java, c, cpp, cs, ...). */
static const struct {
    const char *ext, *lang;
} ext_alias[] = {
    {"h", "c"},       {"hpp", "cpp"},  {"hh", "cpp"},  {"hxx", "cpp"},  {"cu", "cuda"},
    {"cuh", "cuda"},  {"pyi", "py"},   {"mjs", "js"},  {"cjs", "js"},   {"mts", "ts"},
    {"cts", "ts"},    {"m", "objc"},   {"mm", "objc"}, {"bash", "sh"},  {"zsh", "sh"},
    {"psm1", "ps1"},  {"scala", "scala"},
};

const char *idx_language_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcasecmp(base, "Dockerfile") == 0)
        return "dockerfile";
    if (strcasecmp(base, "Makefile") == 0)
        return "makefile";
    const char *dot = strrchr(base, '.');
    if (!dot || !dot[1])
        return NULL;
    const char *ext = dot + 1;
    for (size_t i = 0; i < sizeof ext_alias / sizeof ext_alias[0]; i++)
        if (strcasecmp(ext, ext_alias[i].ext) == 0)
            return ext_alias[i].lang;
    return prompt_language_known(ext) ? ext : NULL;
}

static bool is_ident(int c)
{
    return isalnum(c) || c == '_' || c >= 0x80;
}

/* Whether a line (at column 0) begins a top-level item of the language. */
static bool starts_definition(const char *const *kw, const char *line, size_t len)
{
    if (!kw || len == 0 || isspace((unsigned char)line[0]))
        return false;
    for (size_t i = 0; kw[i]; i++) {
        size_t k = strlen(kw[i]);
        if (k > len || memcmp(line, kw[i], k) != 0)
            continue;
        /* "def" starts "def f", not "default"; keywords that end in punctuation ("#[", "@")
         * start whatever follows. */
        if (!is_ident((unsigned char)kw[i][k - 1]) || k == len ||
            !is_ident((unsigned char)line[k]))
            return true;
    }
    return false;
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

typedef struct line_span {
    size_t off, len; /* len includes the '\n' */
    bool blank, def;
} line_span;

typedef struct chunk_list {
    idx_chunk *v;
    int64_t n, cap;
} chunk_list;

/* Emits lines [a, b) as a chunk, without its leading and trailing blank lines. */
static int emit(chunk_list *cl, const line_span *ln, size_t a, size_t b)
{
    while (a < b && ln[a].blank)
        a++;
    while (b > a && ln[b - 1].blank)
        b--;
    if (a == b)
        return 0;
    if (cl->n == cl->cap) {
        int64_t cap = cl->cap ? cl->cap * 2 : 16;
        idx_chunk *v = realloc(cl->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        cl->v = v;
        cl->cap = cap;
    }
    size_t end = ln[b - 1].off + ln[b - 1].len;
    cl->v[cl->n++] = (idx_chunk){ln[a].off, end - ln[a].off, (int32_t)a + 1, (int32_t)b};
    return 0;
}

int64_t idx_chunk_text(const char *path, const char *text, size_t len, idx_chunk **out)
{
    *out = NULL;
    const char *lang = idx_language_of(path);
    const char *const *kw = lang ? prompt_language_keywords(lang) : NULL;
    size_t n_lines = 0, cap = 0;
    line_span *ln = NULL;
    for (size_t off = 0; off < len;) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t l = nl ? (size_t)(nl - (text + off)) + 1 : len - off;
        if (n_lines == cap) {
            cap = cap ? cap * 2 : 256;
            line_span *v = realloc(ln, cap * sizeof *v);
            if (!v) {
                free(ln);
                return -1;
            }
            ln = v;
        }
        ln[n_lines++] = (line_span){off, l, blank(text + off, l),
                                    starts_definition(kw, text + off, l)};
        off += l;
    }
    chunk_list cl = {0};
    size_t start = 0, size = 0;
    size_t cut = 0; /* best cut point seen in the current chunk (0: none) */
    bool cut_def = false;
    for (size_t i = 0; i < n_lines; i++) {
        if (size >= IDX_CHUNK_MIN_CHARS && ln[i].def) {
            if (emit(&cl, ln, start, i) < 0)
                goto oom;
            start = i, size = 0, cut = 0, cut_def = false;
        } else if (size > 0 && size + ln[i].len > IDX_CHUNK_CHARS) {
            /* Over the size: cut at the best point past the first quarter, else here. */
            size_t at = cut && ln[cut].off - ln[start].off >= IDX_CHUNK_CHARS / 4 ? cut : i;
            if (emit(&cl, ln, start, at) < 0)
                goto oom;
            start = at, cut = 0, cut_def = false;
            size = ln[i].off - ln[start].off;
        }
        if (i > start && (ln[i].def || (!cut_def && ln[i].blank))) {
            cut = ln[i].blank ? i + 1 < n_lines ? i + 1 : i : i;
            cut_def = ln[i].def;
        }
        size += ln[i].len;
    }
    if (emit(&cl, ln, start, n_lines) < 0)
        goto oom;
    free(ln);
    *out = cl.v;
    return cl.n;
oom:
    free(ln);
    free(cl.v);
    return -1;
}
