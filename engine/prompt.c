/* prompt.c — builds code-completion prompts (FIM template, snippets as comments, token
 * budgets, stop words, CRLF) and chat prompts (ChatML, Llama-3) as token ids plus text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"

#define DEFAULT_SNIPPET_BUDGET 768
#define DEFAULT_MAX_PREFIX 1024
#define DEFAULT_MAX_SUFFIX 512
#define MAX_STOPS 64

struct prompt_builder {
    const eng_model *model;
    const tok_vocab *vocab;
    prompt_fim_kind fim;
    int32_t fim_pre, fim_suf, fim_mid;
    prompt_chat_kind chat;
    char chat_error[256];       /* why chat is PROMPT_CHAT_NONE */
    char *default_system;       /* ChatML default system prompt from the template, or NULL */
    char *stops[24];            /* special-token texts that end any completion */
    size_t n_stops;
};

/* ---- detection -------------------------------------------------------------------------- */

static int32_t meta_id(const eng_model *m, const char *key)
{
    uint32_t id;
    if (gguf_kv_find(m->gguf, key) < 0 || gguf_get_u32(m->gguf, key, &id, NULL) != ENG_OK ||
        id >= (uint32_t)tok_n_vocab(m->vocab))
        return -1;
    return (int32_t)id;
}

static bool piece_is(const tok_vocab *v, int32_t id, const char *a, const char *b)
{
    size_t n;
    const char *p = tok_piece(v, id, &n);
    return p && ((n == strlen(a) && !memcmp(p, a, n)) || (b && n == strlen(b) && !memcmp(p, b, n)));
}

static void detect_fim(prompt_builder *b)
{
    static const struct {
        prompt_fim_kind kind;
        const char *pre, *suf, *mid, *alt_pre, *alt_suf, *alt_mid;
    } fams[] = {
        {PROMPT_FIM_STARCODER, "<fim_prefix>", "<fim_suffix>", "<fim_middle>", NULL, NULL, NULL},
        {PROMPT_FIM_QWEN, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", NULL, NULL, NULL},
        {PROMPT_FIM_DEEPSEEK, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
         "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
         "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", NULL, NULL, NULL},
        {PROMPT_FIM_CODELLAMA, "<PRE>", "<SUF>", "<MID>", "\xE2\x96\x81<PRE>",
         "\xE2\x96\x81<SUF>", "\xE2\x96\x81<MID>"},
    };
    const tok_vocab *v = b->vocab;
    /* Ids named in the metadata win; the family is then read off the prefix token's text. */
    int32_t mp = meta_id(b->model, "tokenizer.ggml.fim_pre_token_id");
    int32_t ms = meta_id(b->model, "tokenizer.ggml.fim_suf_token_id");
    int32_t mm = meta_id(b->model, "tokenizer.ggml.fim_mid_token_id");
    if (mp < 0) {
        mp = meta_id(b->model, "tokenizer.ggml.prefix_token_id");
        ms = meta_id(b->model, "tokenizer.ggml.suffix_token_id");
        mm = meta_id(b->model, "tokenizer.ggml.middle_token_id");
    }
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        int32_t p, s, m;
        if (mp >= 0 && ms >= 0 && mm >= 0) {
            if (!piece_is(v, mp, fams[i].pre, fams[i].alt_pre))
                continue;
            p = mp, s = ms, m = mm;
        } else {
            p = tok_find(v, fams[i].pre), s = tok_find(v, fams[i].suf), m = tok_find(v, fams[i].mid);
            if (fams[i].alt_pre && (p < 0 || s < 0 || m < 0)) {
                p = tok_find(v, fams[i].alt_pre), s = tok_find(v, fams[i].alt_suf);
                m = tok_find(v, fams[i].alt_mid);
            }
            if (p < 0 || s < 0 || m < 0)
                continue;
        }
        b->fim = fams[i].kind;
        b->fim_pre = p, b->fim_suf = s, b->fim_mid = m;
        return;
    }
    b->fim = PROMPT_FIM_NONE;
    b->fim_pre = b->fim_suf = b->fim_mid = -1;
}

/* ChatML templates that add a default system message when the conversation has none carry
 * it as a literal: '<|im_start|>system\n...<|im_end|>' (newline real or escaped). */
static char *chatml_default_system(const char *t, size_t n)
{
    static const char *const marks[] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    if (!memmem(t, n, "'system'", 8) && !memmem(t, n, "\"system\"", 8))
        return NULL;
    for (size_t k = 0; k < 2; k++) {
        const char *p = t, *end = t + n;
        size_t ml = strlen(marks[k]);
        while ((p = memmem(p, (size_t)(end - p), marks[k], ml)) != NULL) {
            p += ml;
            const char *e = memmem(p, (size_t)(end - p), "<|im_end|>", 10);
            if (!e)
                break;
            bool literal = e > p;
            for (const char *q = p; q < e && literal; q++)
                if (*q == '\'' || *q == '"' || *q == '{' || *q == '}')
                    literal = false;
            if (!literal)
                continue;
            char *s = malloc((size_t)(e - p) + 1);
            if (!s)
                return NULL;
            size_t o = 0;
            for (const char *q = p; q < e; q++) {
                if (q[0] == '\\' && q + 1 < e && q[1] == 'n') {
                    s[o++] = '\n';
                    q++;
                } else {
                    s[o++] = *q;
                }
            }
            s[o] = 0;
            return s;
        }
    }
    return NULL;
}

static void detect_chat(prompt_builder *b)
{
    gguf_str t;
    b->chat = PROMPT_CHAT_NONE;
    if (gguf_kv_find(b->model->gguf, "tokenizer.chat_template") < 0 ||
        gguf_get_str(b->model->gguf, "tokenizer.chat_template", &t, NULL) != ENG_OK) {
        snprintf(b->chat_error, sizeof b->chat_error,
                 "the model has no chat template (tokenizer.chat_template): it is not a chat model");
        return;
    }
    size_t n = (size_t)t.len;
    if (memmem(t.ptr, n, "<|im_start|>", 12) && tok_find(b->vocab, "<|im_start|>") >= 0 &&
        tok_find(b->vocab, "<|im_end|>") >= 0) {
        b->chat = PROMPT_CHAT_CHATML;
        b->default_system = chatml_default_system(t.ptr, n);
    } else if (memmem(t.ptr, n, "<|start_header_id|>", 19) &&
               tok_find(b->vocab, "<|start_header_id|>") >= 0 &&
               tok_find(b->vocab, "<|end_header_id|>") >= 0 && tok_find(b->vocab, "<|eot_id|>") >= 0) {
        b->chat = PROMPT_CHAT_LLAMA3;
    } else {
        snprintf(b->chat_error, sizeof b->chat_error,
                 "the model's chat template is not one Serval can render (it knows ChatML "
                 "'<|im_start|>' and Llama-3 '<|start_header_id|>' templates)");
    }
}

static void add_stop_if_token(prompt_builder *b, const char *text)
{
    if (b->n_stops < sizeof b->stops / sizeof b->stops[0] && tok_find(b->vocab, text) >= 0) {
        char *s = strdup(text);
        if (s)
            b->stops[b->n_stops++] = s;
    }
}

eng_status prompt_builder_create(const eng_model *m, prompt_builder **out, eng_err *err)
{
    *out = NULL;
    if (!m || !m->vocab || !m->gguf)
        return eng_fail(err, ENG_ERR_INVALID, "prompt builder: no model");
    prompt_builder *b = calloc(1, sizeof *b);
    if (!b)
        return eng_fail(err, ENG_ERR_NOMEM, "prompt builder: out of memory");
    b->model = m;
    b->vocab = m->vocab;
    detect_fim(b);
    detect_chat(b);
    static const char *const stop_texts[] = {
        "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|fim_prefix|>", "<|fim_suffix|>",
        "<|fim_middle|>", "<|fim_pad|>", "<file_sep>", "<|file_sep|>", "<|endoftext|>",
        "<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|repo_name|>", "<reponame>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
        "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<EOT>", NULL};
    for (size_t i = 0; stop_texts[i]; i++)
        add_stop_if_token(b, stop_texts[i]);
    *out = b;
    return ENG_OK;
}

void prompt_builder_free(prompt_builder *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n_stops; i++)
        free(b->stops[i]);
    free(b->default_system);
    free(b);
}

prompt_fim_kind prompt_builder_fim(const prompt_builder *b) { return b->fim; }
prompt_chat_kind prompt_builder_chat(const prompt_builder *b) { return b->chat; }

const char *prompt_fim_name(prompt_fim_kind k)
{
    switch (k) {
    case PROMPT_FIM_STARCODER: return "starcoder";
    case PROMPT_FIM_QWEN: return "qwen";
    case PROMPT_FIM_CODELLAMA: return "codellama";
    case PROMPT_FIM_DEEPSEEK: return "deepseek";
    default: return "none";
    }
}

const char *prompt_chat_name(prompt_chat_kind k)
{
    switch (k) {
    case PROMPT_CHAT_CHATML: return "chatml";
    case PROMPT_CHAT_LLAMA3: return "llama3";
    default: return "none";
    }
}

/* ---- growable output -------------------------------------------------------------------- */

typedef struct pbuf {
    const tok_vocab *v;
    prompt_result *r;
    size_t tok_cap, text_cap;
    bool oom;
} pbuf;

static bool text_reserve(pbuf *p, size_t more)
{
    prompt_result *r = p->r;
    if (r->text_len + more + 1 <= p->text_cap)
        return true;
    size_t cap = p->text_cap ? p->text_cap : 256;
    while (cap < r->text_len + more + 1)
        cap *= 2;
    char *t = realloc(r->text, cap);
    if (!t)
        return !(p->oom = true);
    r->text = t;
    p->text_cap = cap;
    return true;
}

static bool tok_reserve(pbuf *p, size_t more)
{
    prompt_result *r = p->r;
    if (r->n_tokens + more <= p->tok_cap)
        return true;
    size_t cap = p->tok_cap ? p->tok_cap : 256;
    while (cap < r->n_tokens + more)
        cap *= 2;
    int32_t *t = realloc(r->tokens, cap * sizeof *t);
    if (!t)
        return !(p->oom = true);
    r->tokens = t;
    p->tok_cap = cap;
    return true;
}

static void put_text(pbuf *p, const char *s, size_t n)
{
    if (!text_reserve(p, n) || !n)
        return;
    memcpy(p->r->text + p->r->text_len, s, n);
    p->r->text_len += n;
    p->r->text[p->r->text_len] = 0;
}

static void put_special(pbuf *p, int32_t id)
{
    size_t n;
    const char *s = tok_piece(p->v, id, &n);
    if (!tok_reserve(p, 1))
        return;
    p->r->tokens[p->r->n_tokens++] = id;
    put_text(p, s ? s : "", s ? n : 0);
}

/* Encodes into a fresh array (user text: special tokens are never parsed). */
static eng_status encode(const tok_vocab *v, const char *s, size_t n, int32_t **ids,
                         size_t *n_ids, eng_err *err)
{
    size_t cap = n + 1;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids)
        return eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
    eng_status st = tok_encode(v, s, n, false, *ids, cap, n_ids);
    if (st != ENG_OK) {
        free(*ids);
        *ids = NULL;
        return eng_fail(err, st, "prompt: cannot tokenize %zu bytes", n);
    }
    return ENG_OK;
}

static eng_status put_plain(pbuf *p, const char *s, size_t n, eng_err *err)
{
    if (!n)
        return ENG_OK;
    int32_t *ids;
    size_t k;
    eng_status st = encode(p->v, s, n, &ids, &k, err);
    if (st != ENG_OK)
        return st;
    if (tok_reserve(p, k)) {
        memcpy(p->r->tokens + p->r->n_tokens, ids, k * sizeof *ids);
        p->r->n_tokens += k;
    }
    free(ids);
    put_text(p, s, n);
    return ENG_OK;
}

static void put_stop(prompt_result *r, const char *a, const char *b, bool *oom)
{
    if (r->n_stops >= MAX_STOPS)
        return;
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (!s) {
        *oom = true;
        return;
    }
    memcpy(s, a, la);
    memcpy(s + la, b ? b : "", lb);
    s[la + lb] = 0;
    r->stops[r->n_stops++] = s;
}

void prompt_result_clear(prompt_result *r)
{
    if (!r)
        return;
    free(r->tokens);
    free(r->text);
    for (size_t i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    memset(r, 0, sizeof *r);
}

/* ---- text helpers ----------------------------------------------------------------------- */

static bool utf8_valid(const char *s, size_t n)
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

/* Copies s with every "\r\n" turned into "\n"; sets *had_crlf when there was one. */
static char *crlf_to_lf(const char *s, size_t n, size_t *out_len, bool *had_crlf)
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

/* Bytes the first n_tok tokens of ids decode to. */
static size_t pieces_len(const tok_vocab *v, const int32_t *ids, size_t n_tok)
{
    size_t total = 0, len;
    for (size_t i = 0; i < n_tok; i++)
        if (tok_piece(v, ids[i], &len))
            total += len;
    return total;
}

/* Keeps at most max tokens of s: the last ones (keep_end) cut to start at a line, or the
 * first ones cut to end at a line. Returns the kept byte range [*from, *to). */
static eng_status clip_tokens(const tok_vocab *v, const char *s, size_t n, int32_t max,
                              bool keep_end, size_t *from, size_t *to, bool *clipped,
                              eng_err *err)
{
    *from = 0, *to = n, *clipped = false;
    for (int round = 0; round < 6; round++) {
        int32_t *ids;
        size_t k;
        eng_status st = encode(v, s + *from, *to - *from, &ids, &k, err);
        if (st != ENG_OK)
            return st;
        if (k <= (size_t)max) {
            free(ids);
            return ENG_OK;
        }
        *clipped = true;
        if (keep_end) {
            size_t cut = *from + pieces_len(v, ids, k - (size_t)max);
            if (cut <= *from)
                cut = *from + 1;
            const char *nl = memchr(s + cut, '\n', *to - cut);
            /* Start at a whole line unless that loses more than half of what is left. */
            if (nl && (size_t)(nl + 1 - s) - cut < (*to - cut) / 2)
                cut = (size_t)(nl + 1 - s);
            while (cut < *to && ((unsigned char)s[cut] & 0xC0) == 0x80)
                cut++;
            *from = cut;
        } else {
            size_t cut = *from + pieces_len(v, ids, (size_t)max);
            if (cut >= *to)
                cut = *to - 1;
            size_t c = cut;
            while (c > *from && s[c - 1] != '\n')
                c--;
            if (c > *from + (cut - *from) / 2)
                cut = c;
            while (cut > *from && ((unsigned char)s[cut] & 0xC0) == 0x80)
                cut--;
            *to = cut;
        }
        free(ids);
    }
    return ENG_OK;
}

/* ---- completion ------------------------------------------------------------------------- */

typedef struct snip_text {
    char *buf;
    size_t len, cap;
    bool oom;
} snip_text;

static void st_put(snip_text *t, const char *s, size_t n)
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

/* One commented line: "<comment> <line>\n", or "<comment>\n" for an empty line. */
static void st_line(snip_text *t, const char *comment, const char *s, size_t n)
{
    if (n && s[n - 1] == '\r')
        n--;
    st_put(t, comment, strlen(comment));
    if (n) {
        st_put(t, " ", 1);
        st_put(t, s, n);
    }
    st_put(t, "\n", 1);
}

static void st_snippet(snip_text *t, const char *comment, const prompt_snippet *sn, bool first)
{
    if (!first)
        st_line(t, comment, "", 0);
    if (sn->filepath) {
        st_put(t, comment, strlen(comment));
        st_put(t, " Path: ", 7);
        st_put(t, sn->filepath, strlen(sn->filepath));
        st_put(t, "\n", 1);
    }
    const char *p = sn->body, *end = sn->body + strlen(sn->body);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        st_line(t, comment, p, n);
        p += n + (nl ? 1 : 0);
    }
}

/* Renders the snippets that fit the budget as comments; *n_used says how many. */
static void render_snippets(const prompt_completion_input *in, const char *comment,
                            snip_text *t, size_t *n_used)
{
    const prompt_snippet *lists[3] = {in->declarations, in->changed, in->recent};
    size_t counts[3] = {in->n_declarations, in->n_changed, in->n_recent};
    size_t budget = in->snippet_budget ? in->snippet_budget : DEFAULT_SNIPPET_BUDGET;
    size_t used = 0;
    *n_used = 0;
    if (!comment)
        return;
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const prompt_snippet *sn = &lists[l][i];
            if (!sn->body || !*sn->body || !utf8_valid(sn->body, strlen(sn->body)) ||
                (sn->filepath && !utf8_valid(sn->filepath, strlen(sn->filepath))))
                continue;
            size_t n = strlen(sn->body);
            if (used + n > budget)
                break;
            used += n;
            st_snippet(t, comment, sn, *n_used == 0);
            (*n_used)++;
        }
    }
}

static void add_completion_stops(const prompt_builder *b, const char *language,
                                 prompt_result *r, bool *oom)
{
    r->stops = calloc(MAX_STOPS, sizeof *r->stops);
    if (!r->stops) {
        *oom = true;
        return;
    }
    const char *const *kw = prompt_language_keywords(language);
    if (!kw) {
        /* Unknown language: single-line completion. */
        put_stop(r, "\n", NULL, oom);
    } else {
        put_stop(r, "\n\n", NULL, oom);
        const char *comment = prompt_language_comment(language);
        if (comment)
            put_stop(r, "\n", comment, oom);
        for (size_t i = 0; kw[i]; i++)
            put_stop(r, "\n", kw[i], oom);
    }
    for (size_t i = 0; i < b->n_stops; i++)
        put_stop(r, b->stops[i], NULL, oom);
}

static void put_bos(pbuf *p)
{
    if (tok_add_bos(p->v) && tok_bos(p->v) >= 0)
        put_special(p, tok_bos(p->v));
}

eng_status prompt_build_completion(const prompt_builder *b, const prompt_completion_input *in,
                                   prompt_result *out, eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (!in->prefix)
        return eng_fail(err, ENG_ERR_INVALID, "segments.prefix is required");
    if (!utf8_valid(in->prefix, in->prefix_len))
        return eng_fail(err, ENG_ERR_INVALID, "segments.prefix is not valid UTF-8");
    if (in->suffix && !utf8_valid(in->suffix, in->suffix_len))
        return eng_fail(err, ENG_ERR_INVALID, "segments.suffix is not valid UTF-8");

    eng_status st = ENG_OK;
    bool crlf = false, oom = false;
    size_t plen = 0, slen = 0;
    char *prefix = crlf_to_lf(in->prefix, in->prefix_len, &plen, &crlf);
    char *suffix = in->suffix && in->suffix_len ? crlf_to_lf(in->suffix, in->suffix_len, &slen, &crlf)
                                                : strdup("\n");
    snip_text snips = {0};
    pbuf p = {.v = b->vocab, .r = out};
    if (!prefix || !suffix) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    if (!in->suffix || !in->suffix_len)
        slen = 1;

    size_t pf, pt, sf, stt;
    int32_t maxp = in->max_prefix_tokens > 0 ? in->max_prefix_tokens : DEFAULT_MAX_PREFIX;
    int32_t maxs = in->max_suffix_tokens > 0 ? in->max_suffix_tokens : DEFAULT_MAX_SUFFIX;
    if ((st = clip_tokens(b->vocab, prefix, plen, maxp, true, &pf, &pt, &out->prefix_clipped,
                          err)) != ENG_OK)
        goto fail;
    sf = 0, stt = slen;
    if (b->fim != PROMPT_FIM_NONE &&
        (st = clip_tokens(b->vocab, suffix, slen, maxs, false, &sf, &stt, &out->suffix_clipped,
                          err)) != ENG_OK)
        goto fail;
    if (stt == sf) /* a suffix clipped to nothing is still the template's "\n" */
        suffix[sf] = '\n', stt = sf + 1;

    render_snippets(in, prompt_language_comment(in->language), &snips, &out->n_snippets);
    if (snips.oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }

    put_bos(&p);
    const char *pre_sp = "", *suf_sp = "";
    if (b->fim == PROMPT_FIM_CODELLAMA)
        pre_sp = " ", suf_sp = " ";
    if (b->fim != PROMPT_FIM_NONE)
        put_special(&p, b->fim_pre);
    /* Snippets, prefix (and CodeLlama's spaces) form one text so BPE sees them joined. */
    snip_text head = {0};
    st_put(&head, pre_sp, strlen(pre_sp));
    if (snips.len)
        st_put(&head, snips.buf, snips.len);
    st_put(&head, prefix + pf, pt - pf);
    st_put(&head, suf_sp, strlen(suf_sp));
    if (head.oom) {
        free(head.buf);
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    st = put_plain(&p, head.buf, head.len, err);
    free(head.buf);
    if (st != ENG_OK)
        goto fail;
    if (b->fim != PROMPT_FIM_NONE) {
        put_special(&p, b->fim_suf);
        snip_text tail = {0};
        st_put(&tail, suffix + sf, stt - sf);
        st_put(&tail, suf_sp, strlen(suf_sp));
        st = tail.oom ? eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory")
                      : put_plain(&p, tail.buf, tail.len, err);
        free(tail.buf);
        if (st != ENG_OK)
            goto fail;
        put_special(&p, b->fim_mid);
    }
    add_completion_stops(b, in->language, out, &oom);
    if (p.oom || oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    out->crlf = crlf;
    free(prefix);
    free(suffix);
    free(snips.buf);
    return ENG_OK;
fail:
    free(prefix);
    free(suffix);
    free(snips.buf);
    prompt_result_clear(out);
    return st;
}

eng_status prompt_build_raw(const prompt_builder *b, const char *text, size_t len,
                            bool parse_special, const char *language, prompt_result *out,
                            eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (!text || !len)
        return eng_fail(err, ENG_ERR_INVALID, "the prompt is empty");
    if (!utf8_valid(text, len))
        return eng_fail(err, ENG_ERR_INVALID, "the prompt is not valid UTF-8");
    pbuf p = {.v = b->vocab, .r = out};
    put_bos(&p);
    size_t cap = len + 1, k;
    if (!tok_reserve(&p, cap))
        goto oom;
    eng_status st = tok_encode(b->vocab, text, len, parse_special, out->tokens + out->n_tokens,
                               cap, &k);
    if (st != ENG_OK) {
        prompt_result_clear(out);
        return eng_fail(err, st, "prompt: cannot tokenize %zu bytes", len);
    }
    out->n_tokens += k;
    put_text(&p, text, len);
    bool oom = false;
    if (language)
        add_completion_stops(b, language, out, &oom);
    else
        out->stops = calloc(1, sizeof *out->stops);
    if (p.oom || oom || !out->stops)
        goto oom;
    return ENG_OK;
oom:
    prompt_result_clear(out);
    return eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
}

/* ---- chat ------------------------------------------------------------------------------- */

static bool role_ok(const char *r)
{
    if (!*r || strlen(r) > 64)
        return false;
    for (const char *c = r; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return false;
    return true;
}

eng_status prompt_build_chat(const prompt_builder *b, const prompt_chat_message *msgs, size_t n,
                             prompt_result *out, eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (b->chat == PROMPT_CHAT_NONE)
        return eng_fail(err, ENG_ERR_UNSUPPORTED, "%s", b->chat_error);
    if (n == 0)
        return eng_fail(err, ENG_ERR_INVALID, "messages must not be empty");
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !role_ok(msgs[i].role))
            return eng_fail(err, ENG_ERR_INVALID,
                            "messages[%zu].role must be a word such as \"user\"", i);
        if (!msgs[i].content)
            return eng_fail(err, ENG_ERR_INVALID, "messages[%zu].content is missing", i);
        if (!utf8_valid(msgs[i].content, strlen(msgs[i].content)))
            return eng_fail(err, ENG_ERR_INVALID, "messages[%zu].content is not valid UTF-8", i);
    }
    pbuf p = {.v = b->vocab, .r = out};
    eng_status st = ENG_OK;
    bool oom = false;
    if (b->chat == PROMPT_CHAT_CHATML) {
        int32_t start = tok_find(b->vocab, "<|im_start|>"), end = tok_find(b->vocab, "<|im_end|>");
        put_bos(&p);
        if (b->default_system && strcmp(msgs[0].role, "system") != 0) {
            put_special(&p, start);
            if ((st = put_plain(&p, "system\n", 7, err)) != ENG_OK ||
                (st = put_plain(&p, b->default_system, strlen(b->default_system), err)) != ENG_OK)
                goto fail;
            put_special(&p, end);
            if ((st = put_plain(&p, "\n", 1, err)) != ENG_OK)
                goto fail;
        }
        for (size_t i = 0; i <= n; i++) {
            const char *role = i < n ? msgs[i].role : "assistant";
            put_special(&p, start);
            snip_text t = {0};
            st_put(&t, role, strlen(role));
            st_put(&t, "\n", 1);
            if (i < n)
                st_put(&t, msgs[i].content, strlen(msgs[i].content));
            st = t.oom ? eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory")
                       : put_plain(&p, t.buf, t.len, err);
            free(t.buf);
            if (st != ENG_OK)
                goto fail;
            if (i < n) {
                put_special(&p, end);
                if ((st = put_plain(&p, "\n", 1, err)) != ENG_OK)
                    goto fail;
            }
        }
    } else {
        int32_t hs = tok_find(b->vocab, "<|start_header_id|>");
        int32_t he = tok_find(b->vocab, "<|end_header_id|>"), eot = tok_find(b->vocab, "<|eot_id|>");
        int32_t bot = tok_find(b->vocab, "<|begin_of_text|>");
        if (bot >= 0)
            put_special(&p, bot);
        else
            put_bos(&p);
        for (size_t i = 0; i <= n; i++) {
            const char *role = i < n ? msgs[i].role : "assistant";
            put_special(&p, hs);
            if ((st = put_plain(&p, role, strlen(role), err)) != ENG_OK)
                goto fail;
            put_special(&p, he);
            snip_text t = {0};
            st_put(&t, "\n\n", 2);
            if (i < n) {
                const char *c = msgs[i].content;
                size_t cl = strlen(c);
                while (cl && (*c == ' ' || *c == '\n' || *c == '\t'))
                    c++, cl--;
                while (cl && (c[cl - 1] == ' ' || c[cl - 1] == '\n' || c[cl - 1] == '\t'))
                    cl--;
                st_put(&t, c, cl);
            }
            st = t.oom ? eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory")
                       : put_plain(&p, t.buf, t.len, err);
            free(t.buf);
            if (st != ENG_OK)
                goto fail;
            if (i < n)
                put_special(&p, eot);
        }
    }
    out->stops = calloc(MAX_STOPS, sizeof *out->stops);
    if (!out->stops)
        oom = true;
    else
        for (size_t i = 0; i < b->n_stops; i++)
            put_stop(out, b->stops[i], NULL, &oom);
    if (p.oom || oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    return ENG_OK;
fail:
    prompt_result_clear(out);
    return st;
}
