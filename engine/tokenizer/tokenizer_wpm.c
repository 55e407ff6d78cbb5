/* tokenizer_wpm.c — the WordPiece tokenizer of BERT models (GGUF tokenizer.ggml.model "bert"):
 * HF tokenizers' BertNormalizer (clean text, CJK spacing, accent stripping, lowercase), its
 * BertPreTokenizer (whitespace and punctuation split) and greedy longest-match-first WordPiece
 * with [UNK] for words it cannot cover, over llama.cpp's "phantom space" vocabulary (a
 * word-initial piece is stored as U+2581 + piece, a "##piece" continuation as the bare piece,
 * control tokens such as [CLS] as they are). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "unicode_tables.h"
#include "unicode_wpm_tables.h"
#include "utf8.h"

/* HF's WordPiece: a word of more characters than this is one [UNK]. */
enum { WPM_MAX_WORD_CHARS = 100 };

struct tok_wpm {
    int32_t n_tokens;
    char *text;        /* token strings back to back */
    size_t *text_off;  /* [n_tokens + 1] */
    int32_t *slots;    /* open addressing: text -> id; -1 empty */
    size_t mask;
    size_t max_len;    /* longest token text, bytes */
    bool lowercase;
    bool strip_accents;
    int32_t *specials; /* control tokens matched literally in text, longest first (HF's added
                          special tokens are split out before normalisation) */
    int32_t n_specials;
    int32_t cls, sep, unk, pad;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t wpm_lookup(const tok_wpm *w, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & w->mask;; i = (i + 1) & w->mask) {
        int32_t id = w->slots[i];
        if (id < 0)
            return -1;
        size_t len = w->text_off[id + 1] - w->text_off[id];
        if (len == n && memcmp(w->text + w->text_off[id], s, n) == 0)
            return id;
    }
}

static eng_status get_id(const gguf_file *f, const char *key, int32_t dflt, int32_t n,
                         int32_t *out, eng_err *err)
{
    *out = dflt;
    if (gguf_kv_find(f, key) < 0)
        return ENG_OK;
    uint32_t v;
    eng_status st = gguf_get_u32(f, key, &v, err);
    if (st != ENG_OK)
        return st;
    if (v >= (uint32_t)n)
        return eng_fail(err, ENG_ERR_FORMAT, "%s = %u is outside the vocabulary (%d tokens)", key,
                        v, n);
    *out = (int32_t)v;
    return ENG_OK;
}

static size_t tok_len(const tok_wpm *w, int32_t id)
{
    return w->text_off[id + 1] - w->text_off[id];
}

/* Control tokens (tokenizer.ggml.token_type 3; without the key, the [CLS], [SEP], [UNK], [PAD]
 * and [MASK] texts), longest first. */
static eng_status load_specials(const gguf_file *f, tok_wpm *w, eng_err *err)
{
    w->specials = malloc(sizeof(int32_t) * (size_t)w->n_tokens);
    if (!w->specials)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
    gguf_arr types;
    if (gguf_kv_find(f, "tokenizer.ggml.token_type") >= 0) {
        eng_status st = gguf_get_arr(f, "tokenizer.ggml.token_type", &types, err);
        if (st != ENG_OK)
            return st;
        if (types.elem_type != GGUF_TYPE_INT32 || types.n != (uint64_t)w->n_tokens)
            return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.token_type must be %d int32s",
                            w->n_tokens);
        for (int32_t i = 0; i < w->n_tokens; i++) {
            int32_t t;
            memcpy(&t, (const char *)types.data + 4 * (size_t)i, 4);
            if (t == 3 && tok_len(w, i) > 0)
                w->specials[w->n_specials++] = i;
        }
    } else {
        static const char *const names[] = {"[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"};
        for (size_t k = 0; k < 5; k++) {
            int32_t id = tok_wpm_find(w, names[k]);
            if (id >= 0)
                w->specials[w->n_specials++] = id;
        }
    }
    for (int32_t i = 1; i < w->n_specials; i++) /* insertion sort, longest first */
        for (int32_t j = i; j > 0 && tok_len(w, w->specials[j]) > tok_len(w, w->specials[j - 1]);
             j--) {
            int32_t t = w->specials[j];
            w->specials[j] = w->specials[j - 1];
            w->specials[j - 1] = t;
        }
    return ENG_OK;
}

/* The special token written at text[0, n), longest first, or -1. */
static int32_t special_at(const tok_wpm *w, const char *text, size_t n, size_t *len)
{
    for (int32_t k = 0; k < w->n_specials; k++) {
        size_t l = tok_len(w, w->specials[k]);
        if (l <= n && memcmp(text, w->text + w->text_off[w->specials[k]], l) == 0) {
            *len = l;
            return w->specials[k];
        }
    }
    return -1;
}

eng_status tok_wpm_from_gguf(const gguf_file *f, tok_wpm **out, eng_err *err)
{
    *out = NULL;
    gguf_str model;
    eng_status st;
    if (gguf_kv_find(f, "tokenizer.ggml.model") < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.model is missing");
    if ((st = gguf_get_str(f, "tokenizer.ggml.model", &model, err)) != ENG_OK)
        return st;
    if (!gguf_str_eq(model, "bert"))
        return eng_fail(err, ENG_ERR_UNSUPPORTED,
                        "tokenizer.ggml.model '%.*s' is not WordPiece ('bert')",
                        (int)(model.len > 64 ? 64 : model.len), model.ptr);
    gguf_arr toks;
    if (gguf_kv_find(f, "tokenizer.ggml.tokens") < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.tokens is missing");
    if ((st = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, err)) != ENG_OK)
        return st;
    if (toks.elem_type != GGUF_TYPE_STRING || toks.n < 4 || toks.n > (1u << 24))
        return eng_fail(err, ENG_ERR_FORMAT,
                        "tokenizer.ggml.tokens must be 4 to 16M strings (has %llu)",
                        (unsigned long long)toks.n);
    tok_wpm *w = calloc(1, sizeof *w);
    if (!w)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
    w->n_tokens = (int32_t)toks.n;
    size_t total = 0;
    for (uint64_t i = 0; i < toks.n; i++)
        total += gguf_arr_str(f, &toks, i).len;
    size_t cap = 16;
    while (cap < 2 * toks.n)
        cap <<= 1;
    w->mask = cap - 1;
    w->text = malloc(total + 1);
    w->text_off = malloc(sizeof(size_t) * (toks.n + 1));
    w->slots = malloc(sizeof(int32_t) * cap);
    if (!w->text || !w->text_off || !w->slots) {
        st = eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
        goto fail;
    }
    memset(w->slots, 0xff, sizeof(int32_t) * cap);
    size_t o = 0;
    for (uint64_t i = 0; i < toks.n; i++) {
        gguf_str s = gguf_arr_str(f, &toks, i);
        w->text_off[i] = o;
        memcpy(w->text + o, s.ptr, s.len);
        o += s.len;
        if (s.len > w->max_len)
            w->max_len = s.len;
        if (wpm_lookup(w, s.ptr, s.len) >= 0)
            continue; /* a duplicate text: the first id wins */
        w->text_off[i + 1] = o; /* wpm_lookup reads it for this id below */
        size_t slot = hash_bytes(s.ptr, s.len) & w->mask;
        while (w->slots[slot] >= 0)
            slot = (slot + 1) & w->mask;
        w->slots[slot] = (int32_t)i;
    }
    w->text_off[toks.n] = o;
    if ((st = get_id(f, "tokenizer.ggml.cls_token_id", tok_wpm_find(w, "[CLS]"), w->n_tokens,
                     &w->cls, err)) != ENG_OK ||
        (st = get_id(f, "tokenizer.ggml.seperator_token_id", tok_wpm_find(w, "[SEP]"),
                     w->n_tokens, &w->sep, err)) != ENG_OK ||
        (st = get_id(f, "tokenizer.ggml.unknown_token_id", tok_wpm_find(w, "[UNK]"), w->n_tokens,
                     &w->unk, err)) != ENG_OK ||
        (st = get_id(f, "tokenizer.ggml.padding_token_id", 0, w->n_tokens, &w->pad, err)) !=
            ENG_OK)
        goto fail;
    if (w->cls < 0 || w->sep < 0 || w->unk < 0) {
        st = eng_fail(err, ENG_ERR_FORMAT,
                      "WordPiece vocabulary lacks [CLS], [SEP] or [UNK] (and the "
                      "tokenizer.ggml.*_token_id keys naming them)");
        goto fail;
    }
    if ((st = load_specials(f, w, err)) != ENG_OK)
        goto fail;
    /* llama.cpp's defaults: lowercase off unless the key says so; accents stripped when
     * lowercasing unless the key says otherwise. */
    if (gguf_kv_find(f, "tokenizer.ggml.normalizer.lowercase") >= 0 &&
        (st = gguf_get_bool(f, "tokenizer.ggml.normalizer.lowercase", &w->lowercase, err)) !=
            ENG_OK)
        goto fail;
    w->strip_accents = w->lowercase;
    if (gguf_kv_find(f, "tokenizer.ggml.normalizer.strip_accents") >= 0 &&
        (st = gguf_get_bool(f, "tokenizer.ggml.normalizer.strip_accents", &w->strip_accents,
                            err)) != ENG_OK)
        goto fail;
    if (w->strip_accents && !w->lowercase) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED,
                      "WordPiece: accent stripping without lowercasing is not supported");
        goto fail;
    }
    *out = w;
    return ENG_OK;
fail:
    tok_wpm_free(w);
    return st;
}

void tok_wpm_free(tok_wpm *w)
{
    if (!w)
        return;
    free(w->text);
    free(w->text_off);
    free(w->slots);
    free(w->specials);
    free(w);
}

int32_t tok_wpm_n_vocab(const tok_wpm *w) { return w->n_tokens; }
int32_t tok_wpm_cls(const tok_wpm *w) { return w->cls; }
int32_t tok_wpm_sep(const tok_wpm *w) { return w->sep; }
int32_t tok_wpm_pad(const tok_wpm *w) { return w->pad; }
int32_t tok_wpm_unk(const tok_wpm *w) { return w->unk; }
bool tok_wpm_lowercase(const tok_wpm *w) { return w->lowercase; }

int32_t tok_wpm_find(const tok_wpm *w, const char *text)
{
    return wpm_lookup(w, text, strlen(text));
}

const char *tok_wpm_text(const tok_wpm *w, int32_t id, size_t *len)
{
    if (id < 0 || id >= w->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = w->text_off[id + 1] - w->text_off[id];
    return w->text + w->text_off[id];
}

/* ---- normalisation ------------------------------------------------------------------------ */

static bool is_other(uint32_t c) /* general category C* */
{
    size_t lo = 0, hi = wpm_other_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < wpm_other_ranges[mid][0])
            hi = mid;
        else if (c > wpm_other_ranges[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static bool is_chinese(uint32_t c) /* HF's ranges, 0x2B920 start as in its Rust code */
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static bool is_punct(uint32_t c) /* Rust's is_ascii_punctuation or Unicode P* */
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    return uni_class_of(c) == UNI_PUNCT;
}

static bool is_space(uint32_t c)
{
    return c == '\t' || c == '\n' || c == '\r' || uni_class_of(c) == UNI_WHITESPACE;
}

/* The code points c becomes (at most 8), per the normaliser's mapping tables. */
static int map_cpt(const tok_wpm *w, uint32_t c, uint32_t out[8])
{
    if (!w->lowercase) {
        out[0] = c;
        return 1;
    }
    if (w->strip_accents && c >= 0xAC00 && c <= 0xD7A3) { /* Hangul syllable: NFD into jamo */
        uint32_t s = c - 0xAC00;
        out[0] = 0x1100 + s / 588;
        out[1] = 0x1161 + (s % 588) / 28;
        if (s % 28 == 0)
            return 2;
        out[2] = 0x11A7 + s % 28;
        return 3;
    }
    const uint32_t *keys = w->strip_accents ? wpm_strip_keys : wpm_lower_keys;
    const uint32_t *offs = w->strip_accents ? wpm_strip_offs : wpm_lower_offs;
    const uint32_t *pool = w->strip_accents ? wpm_strip_pool : wpm_lower_pool;
    size_t lo = 0, hi = w->strip_accents ? wpm_strip_n : wpm_lower_n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (keys[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < (w->strip_accents ? wpm_strip_n : wpm_lower_n) && keys[lo] == c) {
        int n = (int)(offs[lo + 1] - offs[lo]);
        if (n > 8)
            n = 8;
        for (int i = 0; i < n; i++)
            out[i] = pool[offs[lo] + i];
        return n;
    }
    out[0] = c;
    return 1;
}

/* ---- WordPiece ----------------------------------------------------------------------------- */

typedef struct wpm_out {
    int32_t *ids;
    size_t cap, n;
    bool full; /* cap reached: the caller wanted no more */
} wpm_out;

/* Emits the pieces of one normalised word (UTF-8 in buf, n_chars characters). buf has room
 * for 3 bytes before it (the phantom space U+2581 is written there). */
static void wpm_push(wpm_out *o, int32_t id)
{
    if (o->n < o->cap)
        o->ids[o->n++] = id;
    else
        o->full = true;
}

static void wordpiece(const tok_wpm *w, char *buf, size_t len, size_t n_chars, wpm_out *o)
{
    if (n_chars > WPM_MAX_WORD_CHARS) {
        wpm_push(o, w->unk);
        return;
    }
    /* Pieces are never more than characters; the word's pieces are found first, so a word
     * that turns out to be [UNK] is one [UNK], then copied as far as they fit (HF truncates
     * the piece stream, also inside a word). */
    int32_t piece[WPM_MAX_WORD_CHARS];
    int n_piece = 0;
    size_t i = 0;
    while (i < len) {
        /* The first piece is looked up with the phantom space before it. */
        const char *p = i == 0 ? buf - 3 : buf + i;
        size_t extra = i == 0 ? 3 : 0;
        size_t j = len;
        size_t lim = w->max_len > extra ? w->max_len - extra : 0;
        if (j - i > lim)
            j = i + lim;
        int32_t id = -1;
        for (; j > i; j--) {
            if (j < len && ((uint8_t)buf[j] & 0xC0) == 0x80)
                continue; /* not a character boundary */
            id = wpm_lookup(w, p, j - i + extra);
            if (id >= 0)
                break;
        }
        if (id < 0) {
            wpm_push(o, w->unk);
            return;
        }
        piece[n_piece++] = id;
        i = j;
    }
    for (int k = 0; k < n_piece; k++)
        wpm_push(o, piece[k]);
}

eng_status tok_wpm_encode(const tok_wpm *w, const char *text, size_t len, int32_t *ids,
                          size_t cap, size_t *n_out, bool *more, eng_err *err)
{
    /* One word's normalised bytes: each input character gives at most 8 code points of 4
     * bytes; the word buffer grows as needed, with 3 bytes in front for the phantom space. */
    size_t wcap = 256;
    char *wbuf = malloc(wcap);
    if (!wbuf)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(wbuf, "\xE2\x96\x81", 3);
    size_t wlen = 0, wchars = 0;
    wpm_out o = {ids, cap, 0, false};
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    while (i < len && !o.full) {
        size_t sl;
        int32_t sid = w->n_specials > 0 ? special_at(w, text + i, len - i, &sl) : -1;
        if (sid >= 0) {
            if (wchars)
                wordpiece(w, wbuf + 3, wlen, wchars, &o);
            wlen = wchars = 0;
            wpm_push(&o, sid);
            i += sl;
            continue;
        }
        uint32_t c; /* an invalid byte is U+FFFD, dropped below as HF drops what Rust's
                     * lossy decoding makes of it */
        i += eng_utf8_next((const char *)s + i, len - i, &c);
        if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && is_other(c)))
            continue;
        bool cjk = is_chinese(c);
        uint32_t m[8];
        int nm = is_space(c) ? 0 : map_cpt(w, c, m);
        if (is_space(c) || cjk) {
            if (wchars)
                wordpiece(w, wbuf + 3, wlen, wchars, &o);
            wlen = wchars = 0;
            if (!cjk)
                continue;
        }
        for (int k = 0; k < nm; k++) {
            uint32_t mc = m[k];
            if (is_space(mc)) {
                if (wchars)
                    wordpiece(w, wbuf + 3, wlen, wchars, &o);
                wlen = wchars = 0;
                continue;
            }
            if (3 + wlen + 8 > wcap) {
                char *nb = realloc(wbuf, wcap * 2);
                if (!nb) {
                    free(wbuf);
                    return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
                }
                wbuf = nb;
                wcap *= 2;
            }
            bool punct = is_punct(mc) || cjk;
            if (punct && wchars) {
                wordpiece(w, wbuf + 3, wlen, wchars, &o);
                wlen = wchars = 0;
            }
            wlen += eng_utf8_put(mc, wbuf + 3 + wlen);
            wchars++;
            if (punct) {
                wordpiece(w, wbuf + 3, wlen, wchars, &o);
                wlen = wchars = 0;
            }
        }
    }
    if (wchars && !o.full)
        wordpiece(w, wbuf + 3, wlen, wchars, &o);
    free(wbuf);
    *n_out = o.n;
    if (more)
        *more = o.full;
    return ENG_OK;
}
