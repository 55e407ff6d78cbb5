/* tokenizer_pre.c — the pre-tokenizers: hand-written matchers for the regex chains llama.cpp
 * applies (llama-vocab.cpp's regex_exprs, unicode.cpp's unicode_regex_split) before BPE. */
#include "tokenizer_impl.h"

#include <string.h>

#include "status.h"
#include "unicode_tables.h"

/* A class outside the segment being matched: llama.cpp's "flags {}" / OUT_OF_RANGE. */
#define CLS_NONE 0xFFu
#define CPT_NONE 0xFFFFFFFFu

static const struct {
    const char *name;
    tok_pre_kind kind;
    bool ignore_merges;
    bool add_bos;
} pre_names[] = {
    /* llama-vocab.cpp: names that map to one of the regex chains below, with the flags it sets
     * for them that change encoding (ignore_merges) or its add_bos default. */
    {"default", TOK_PRE_DEFAULT, false, false},
    {"gpt-2", TOK_PRE_GPT2, false, false},
    {"phi-2", TOK_PRE_GPT2, false, false},
    {"mpt", TOK_PRE_GPT2, false, false},
    {"olmo", TOK_PRE_GPT2, false, false},
    {"jais", TOK_PRE_GPT2, false, false},
    {"trillion", TOK_PRE_GPT2, false, false},
    {"granite-docling", TOK_PRE_GPT2, false, false},
    {"exaone4", TOK_PRE_GPT2, false, false},
    {"starcoder", TOK_PRE_STARCODER, false, false},
    {"smollm", TOK_PRE_STARCODER, false, false},
    {"refact", TOK_PRE_STARCODER, false, false},
    {"command-r", TOK_PRE_STARCODER, false, false},
    {"codeshell", TOK_PRE_STARCODER, false, false},
    {"exaone", TOK_PRE_STARCODER, false, false},
    {"minerva-7b", TOK_PRE_STARCODER, false, false},
    {"mellum2", TOK_PRE_STARCODER, false, false},
    {"llama3", TOK_PRE_LLAMA3, true, true},
    {"llama-v3", TOK_PRE_LLAMA3, true, true},
    {"llama-bpe", TOK_PRE_LLAMA3, true, true},
    {"falcon3", TOK_PRE_LLAMA3, true, true},
    {"falcon-h1", TOK_PRE_LLAMA3, true, true},
    {"pixtral", TOK_PRE_LLAMA3, true, true},
    {"midm-2.0", TOK_PRE_LLAMA3, true, true},
    {"lfm2", TOK_PRE_LLAMA3, true, true},
    {"dbrx", TOK_PRE_LLAMA3, false, false},
    {"smaug-bpe", TOK_PRE_LLAMA3, false, false},
    {"qwen2", TOK_PRE_QWEN2, false, false},
    {"deepseek-r1-qwen", TOK_PRE_QWEN2, false, false},
    {"megrez", TOK_PRE_QWEN2, false, false},
    {"stablelm2", TOK_PRE_QWEN2, false, false},
    {"hunyuan", TOK_PRE_QWEN2, false, false},
    {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, false, false},
};

bool tok_pre_lookup(const char *name, size_t len, tok_pre_info *out)
{
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++) {
        if (strlen(pre_names[i].name) == len && memcmp(pre_names[i].name, name, len) == 0) {
            out->kind = pre_names[i].kind;
            out->ignore_merges = pre_names[i].ignore_merges;
            out->add_bos = pre_names[i].add_bos;
            return true;
        }
    }
    return false;
}

/* ---- units: code points as llama.cpp's unicode_cpts_from_utf8 reads them ------------------- */

static uint8_t ascii_class(uint32_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return UNI_LETTER;
    if (c >= '0' && c <= '9')
        return UNI_NUMBER;
    if ((c >= 0x09 && c <= 0x0D) || c == ' ')
        return UNI_WHITESPACE;
    if ((c >= 0x21 && c <= 0x2F && c != '$' && c != '+') || c == ':' || c == ';' || c == '?' ||
        c == '@' || (c >= '[' && c <= ']') || c == '_' || c == '{' || c == '}')
        return UNI_PUNCT;
    return UNI_OTHER;
}

static bool is_cont(uint8_t b) { return (b & 0xC0) == 0x80; }

/* Same acceptance as llama.cpp (no overlong or range checks: "\xC0\xA0" is a space there too),
 * but a byte it rejects stays a one-byte unit instead of becoming U+FFFD's three bytes. */
static size_t decode_units(const uint8_t *t, size_t len, tok_split_buf *b)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint8_t b0 = t[i];
        uint32_t cpt = 0xFFFD;
        size_t w = 1;
        if (b0 < 0x80) {
            cpt = b0;
        } else if (!(b0 & 0x40)) {
            /* stray continuation byte */
        } else if (!(b0 & 0x20)) {
            if (i + 1 < len && is_cont(t[i + 1])) {
                cpt = ((uint32_t)(b0 & 0x1F) << 6) | (t[i + 1] & 0x3Fu);
                w = 2;
            }
        } else if (!(b0 & 0x10)) {
            if (i + 2 < len && is_cont(t[i + 1]) && is_cont(t[i + 2])) {
                cpt = ((uint32_t)(b0 & 0x0F) << 12) | ((uint32_t)(t[i + 1] & 0x3F) << 6) |
                      (t[i + 2] & 0x3Fu);
                w = 3;
            }
        } else if (!(b0 & 0x08)) {
            if (i + 3 < len && is_cont(t[i + 1]) && is_cont(t[i + 2]) && is_cont(t[i + 3])) {
                cpt = ((uint32_t)(b0 & 0x07) << 18) | ((uint32_t)(t[i + 1] & 0x3F) << 12) |
                      ((uint32_t)(t[i + 2] & 0x3F) << 6) | (t[i + 3] & 0x3Fu);
                w = 4;
            }
        }
        b->unit_off[n] = (uint32_t)i;
        b->unit_cpt[n] = cpt;
        b->unit_cls[n] = cpt < 0x80 ? ascii_class(cpt) : (uint8_t)uni_class_of(cpt);
        n++;
        i += w;
    }
    b->unit_off[n] = (uint32_t)len;
    return n;
}

/* ---- one regex pass over every segment of the previous pass --------------------------------
 * A segment is [ini, end) in units. Lookups outside it see CLS_NONE / CPT_NONE, as llama.cpp's
 * _get_flags / _get_cpt do, and the matchers below are line-for-line ports of its custom
 * splitters, so their quirks carry over. */

typedef struct seg_ctx {
    const uint32_t *cpt;
    const uint8_t *cls;
    size_t ini, end;
    size_t prev_end;
    uint32_t *out;
    size_t n_out;
} seg_ctx;

static uint8_t get_cls(const seg_ctx *s, size_t pos)
{
    return pos >= s->ini && pos < s->end ? s->cls[pos] : CLS_NONE;
}

static uint32_t get_cpt(const seg_ctx *s, size_t pos)
{
    return pos >= s->ini && pos < s->end ? s->cpt[pos] : CPT_NONE;
}

/* Ends the current word at `end`; returns its length (0 adds nothing). */
static size_t add_word(seg_ctx *s, size_t end)
{
    ENG_ASSERT(s->prev_end <= end && end <= s->end);
    size_t n = end - s->prev_end;
    if (n > 0)
        s->out[s->n_out++] = (uint32_t)n;
    s->prev_end = end;
    return n;
}

static bool is_lnw(uint8_t c) { return c == UNI_LETTER || c == UNI_NUMBER || c == UNI_WHITESPACE; }

static uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive: length matched at pos, or 0. */
static size_t match_contraction(const seg_ctx *s, size_t pos, bool icase)
{
    if (get_cpt(s, pos) != '\'' || pos + 1 >= s->end)
        return 0;
    uint32_t a = get_cpt(s, pos + 1);
    if (icase)
        a = ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 < s->end) {
        uint32_t b = get_cpt(s, pos + 2);
        if (icase)
            b = ascii_lower(b);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
            return 3;
    }
    return 0;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) (unicode.cpp
 * unicode_regex_split_custom_gpt2). */
static void split_gpt2(seg_ctx *s)
{
    for (size_t pos = s->ini; pos < s->end;) {
        const uint32_t cpt = get_cpt(s, pos);
        const uint8_t cls = get_cls(s, pos);
        size_t n = match_contraction(s, pos, false);
        if (n) {
            pos += add_word(s, pos + n);
            continue;
        }
        uint8_t c2 = cpt == ' ' ? get_cls(s, pos + 1) : cls;
        if (c2 == UNI_LETTER || c2 == UNI_NUMBER) {
            const uint8_t want = c2;
            pos += cpt == ' ';
            while (c2 == want)
                c2 = get_cls(s, ++pos);
            add_word(s, pos);
            continue;
        }
        if (!is_lnw(c2) && c2 != CLS_NONE) {
            pos += cpt == ' ';
            while (!is_lnw(c2) && c2 != CLS_NONE)
                c2 = get_cls(s, ++pos);
            add_word(s, pos);
            continue;
        }
        size_t n_ws = 0;
        while (get_cls(s, pos + n_ws) == UNI_WHITESPACE)
            n_ws++;
        if (n_ws > 1 && get_cpt(s, pos + n_ws) != CPT_NONE) {
            pos += n_ws - 1; /* \s+(?!\S): leave one space for the next word */
            add_word(s, pos);
            continue;
        }
        if (n_ws > 0) {
            pos += n_ws;
            add_word(s, pos);
            continue;
        }
        add_word(s, ++pos);
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * max_digits 3 is unicode_regex_split_custom_llama3. With 1 it is qwen2's regex, which
 * llama.cpp runs through std::regex; the alternatives resolve the same way (checked case by
 * case: ECMAScript tries them in order, and every code point starts some alternative). */
static void split_llama3(seg_ctx *s, size_t max_digits)
{
    for (size_t pos = s->ini; pos < s->end;) {
        const uint32_t cpt = get_cpt(s, pos);
        const uint8_t cls = get_cls(s, pos);
        size_t n = match_contraction(s, pos, true);
        if (n) {
            pos += add_word(s, pos + n);
            continue;
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(cpt == '\r' || cpt == '\n' || cls == UNI_NUMBER)) {
            if (cls == UNI_LETTER || get_cls(s, pos + 1) == UNI_LETTER) {
                pos++;
                while (get_cls(s, pos) == UNI_LETTER)
                    pos++;
                add_word(s, pos);
                continue;
            }
        }
        /* \p{N}{1,max_digits} */
        if (cls == UNI_NUMBER) {
            size_t ini = pos;
            while (get_cls(s, pos) == UNI_NUMBER) {
                if (++pos - ini >= max_digits) {
                    add_word(s, pos);
                    ini = pos;
                }
            }
            add_word(s, pos);
            continue;
        }
        /*  ?[^\s\p{L}\p{N}]+[\r\n]* — llama.cpp tests the current code point's flags (always
         * set inside the segment), so a trailing lone space also lands here. */
        uint8_t c2 = cpt == ' ' ? get_cls(s, pos + 1) : cls;
        if (!is_lnw(c2)) {
            pos += cpt == ' ';
            while (!is_lnw(c2) && c2 != CLS_NONE)
                c2 = get_cls(s, ++pos);
            uint32_t cpt2 = get_cpt(s, pos);
            while (cpt2 == '\r' || cpt2 == '\n')
                cpt2 = get_cpt(s, ++pos);
            add_word(s, pos);
            continue;
        }
        size_t n_ws = 0;
        size_t last_rn = 0; /* one past the last \r or \n in the whitespace run; 0 if none */
        while (get_cls(s, pos + n_ws) == UNI_WHITESPACE) {
            uint32_t cpt2 = get_cpt(s, pos + n_ws);
            if (cpt2 == '\r' || cpt2 == '\n')
                last_rn = pos + n_ws + 1;
            n_ws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            pos = last_rn;
            add_word(s, pos);
            continue;
        }
        if (n_ws > 1 && get_cpt(s, pos + n_ws) != CPT_NONE) { /* \s+(?!\S) */
            pos += n_ws - 1;
            add_word(s, pos);
            continue;
        }
        if (n_ws > 0) {
            pos += n_ws;
            add_word(s, pos);
            continue;
        }
        add_word(s, ++pos);
    }
}

/* A single-class std::regex pass as llama.cpp's unicode_regex_split_stl runs it: each match is
 * a word, and so is each stretch of text between matches. `run` joins consecutive matching
 * units into one match (a `+` pattern); otherwise each matching unit is a match of its own. */
typedef bool (*unit_pred)(uint32_t cpt, uint8_t cls);

static void split_class(seg_ctx *s, unit_pred pred, bool run)
{
    for (size_t pos = s->ini; pos < s->end;) {
        if (!pred(s->cpt[pos], s->cls[pos])) {
            pos++;
            continue;
        }
        add_word(s, pos); /* the gap before the match */
        pos++;
        while (run && pos < s->end && pred(s->cpt[pos], s->cls[pos]))
            pos++;
        add_word(s, pos);
    }
    add_word(s, s->end);
}

static bool pred_number(uint32_t cpt, uint8_t cls)
{
    (void)cpt;
    return cls == UNI_NUMBER;
}

/* [\p{P}\$\+<=>\^~\|]: non-ASCII punctuation, and the ASCII characters llama.cpp's collapsed
 * regex lists for \p{P} plus the explicit ones (every printable non-alphanumeric but '`'). */
static bool pred_default_punct(uint32_t cpt, uint8_t cls)
{
    if (cpt < 0x80)
        return (cpt >= 0x21 && cpt <= 0x2F) || (cpt >= 0x3A && cpt <= 0x40) ||
               (cpt >= 0x5B && cpt <= 0x5F) || (cpt >= 0x7B && cpt <= 0x7E);
    return cls == UNI_PUNCT;
}

static bool is_ascii_digit(uint32_t c) { return c >= '0' && c <= '9'; }

static bool pred_cr_lf(uint32_t cpt, uint8_t cls)
{
    (void)cls;
    return cpt == '\r' || cpt == '\n';
}

/* [一-龥ࠀ-一가-퟿]: U+0800..U+9FA5 and U+AC00..U+D7FF, matched by llama.cpp's std::wregex on
 * code points with every non-ASCII whitespace replaced by U+000B, so those never match. */
static bool pred_deepseek_cjk(uint32_t cpt, uint8_t cls)
{
    return ((cpt >= 0x0800 && cpt <= 0x9FA5) || (cpt >= 0xAC00 && cpt <= 0xD7FF)) &&
           cls != UNI_WHITESPACE;
}

/* \s?<class>+ as std::regex runs it on llama.cpp's collapsed text (one byte per code point:
 * ASCII as is, every non-ASCII whitespace 0x0B, letters 0xD2, punctuation 0xD3, ...): a match
 * starts at the first unit of the class, or at a whitespace unit right before one; the
 * stretches between matches are words too. */
static void split_space_run(seg_ctx *s, uint8_t want)
{
    for (size_t pos = s->ini; pos < s->end;) {
        bool lead_ws = s->cls[pos] == UNI_WHITESPACE && get_cls(s, pos + 1) == want;
        if (s->cls[pos] != want && !lead_ws) {
            pos++;
            continue;
        }
        add_word(s, pos);
        pos += 1 + lead_ws;
        while (pos < s->end && s->cls[pos] == want)
            pos++;
        add_word(s, pos);
    }
    add_word(s, s->end);
}

/* [0-9][0-9][0-9], leftmost matches. */
static void split_digit3(seg_ctx *s)
{
    for (size_t pos = s->ini; pos < s->end;) {
        if (pos + 3 <= s->end && is_ascii_digit(s->cpt[pos]) && is_ascii_digit(s->cpt[pos + 1]) &&
            is_ascii_digit(s->cpt[pos + 2])) {
            add_word(s, pos);
            add_word(s, pos + 3);
            pos += 3;
        } else {
            pos++;
        }
    }
    add_word(s, s->end);
}

typedef enum pass_kind {
    PASS_GPT2,
    PASS_LLAMA3,
    PASS_QWEN2,
    PASS_EACH_NUMBER,
    PASS_NUMBER_RUNS,
    PASS_DEFAULT_PUNCT,
    PASS_DIGIT3,
    PASS_CR_LF,
    PASS_SPACE_LETTERS,
    PASS_SPACE_PUNCT,
    PASS_DEEPSEEK_CJK
} pass_kind;

static size_t run_pass(pass_kind p, const tok_split_buf *b, const uint32_t *in, size_t n_in,
                       uint32_t *out)
{
    seg_ctx s = {.cpt = b->unit_cpt, .cls = b->unit_cls, .out = out, .n_out = 0};
    size_t start = 0;
    for (size_t i = 0; i < n_in; i++) {
        s.ini = start;
        s.end = start + in[i];
        s.prev_end = start;
        start = s.end;
        switch (p) {
        case PASS_GPT2: split_gpt2(&s); break;
        case PASS_LLAMA3: split_llama3(&s, 3); break;
        case PASS_QWEN2: split_llama3(&s, 1); break;
        case PASS_EACH_NUMBER: split_class(&s, pred_number, false); break;
        case PASS_NUMBER_RUNS: split_class(&s, pred_number, true); break;
        case PASS_DEFAULT_PUNCT: split_class(&s, pred_default_punct, true); break;
        case PASS_DIGIT3: split_digit3(&s); break;
        case PASS_CR_LF: split_class(&s, pred_cr_lf, false); break;
        case PASS_SPACE_LETTERS: split_space_run(&s, UNI_LETTER); break;
        case PASS_SPACE_PUNCT: split_space_run(&s, UNI_PUNCT); break;
        case PASS_DEEPSEEK_CJK: split_class(&s, pred_deepseek_cjk, true); break;
        }
        ENG_ASSERT(s.prev_end == s.end);
    }
    return s.n_out;
}

size_t tok_pre_split(tok_pre_kind kind, const uint8_t *text, size_t len, tok_split_buf *buf,
                     uint32_t *word_len)
{
    if (len == 0)
        return 0;
    const size_t n_units = decode_units(text, len, buf);

    static const pass_kind chain_default[] = {PASS_DEFAULT_PUNCT, PASS_GPT2, PASS_NUMBER_RUNS,
                                              PASS_DIGIT3};
    static const pass_kind chain_gpt2[] = {PASS_GPT2};
    static const pass_kind chain_starcoder[] = {PASS_EACH_NUMBER, PASS_GPT2};
    static const pass_kind chain_llama3[] = {PASS_LLAMA3};
    static const pass_kind chain_qwen2[] = {PASS_QWEN2};
    /* llama-vocab.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_CODER: [\r\n], \s?\p{L}+, \s?\p{P}+,
     * [一-龥ࠀ-一가-퟿]+, \p{N} */
    static const pass_kind chain_deepseek_coder[] = {PASS_CR_LF, PASS_SPACE_LETTERS,
                                                     PASS_SPACE_PUNCT, PASS_DEEPSEEK_CJK,
                                                     PASS_EACH_NUMBER};
    const pass_kind *chain = chain_gpt2;
    size_t n_chain = 1;
    switch (kind) {
    case TOK_PRE_DEFAULT: chain = chain_default; n_chain = 4; break;
    case TOK_PRE_GPT2: chain = chain_gpt2; n_chain = 1; break;
    case TOK_PRE_STARCODER: chain = chain_starcoder; n_chain = 2; break;
    case TOK_PRE_LLAMA3: chain = chain_llama3; n_chain = 1; break;
    case TOK_PRE_QWEN2: chain = chain_qwen2; n_chain = 1; break;
    case TOK_PRE_DEEPSEEK_CODER: chain = chain_deepseek_coder; n_chain = 5; break;
    }

    uint32_t *in = buf->seg_a, *out = buf->seg_b;
    in[0] = (uint32_t)n_units;
    size_t n = 1;
    for (size_t i = 0; i < n_chain; i++) {
        n = run_pass(chain[i], buf, in, n, out);
        uint32_t *t = in;
        in = out;
        out = t;
    }

    /* unit counts -> byte lengths */
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        size_t u_end = u + in[i];
        word_len[i] = buf->unit_off[u_end] - buf->unit_off[u];
        u = u_end;
    }
    ENG_ASSERT(u == n_units);
    return n;
}
