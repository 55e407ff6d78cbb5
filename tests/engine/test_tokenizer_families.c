/* test_tokenizer_families.c — the code-model family vocabularies (tests/fixtures/vocab/):
 * SentencePiece (CodeLlama) and the DeepSeek-Coder pre-tokenizer, token ids and detokenized text
 * identical to llama.cpp's on the committed fixture for every family, their special and infill
 * tokens, SentencePiece mechanics on tiny vocabularies, and clear errors for hostile ones. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "testutil.h"
#include "tokenizer.h"
#include "tokenizer_impl.h"
#include "tokenizer_test_util.h"
#include "tu_json.h"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct loaded {
    gguf_file *f;
    tok_vocab *v;
} loaded;

static loaded load_vocab(const char *name)
{
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/vocab/%s.gguf", name);
    char *path = tu_source_path(rel);
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(path, &l.f, &err), ENG_OK, "%s: %s", path, err.msg);
    cr_assert_eq(tok_vocab_from_gguf(l.f, &l.v, &err), ENG_OK, "%s: %s", path, err.msg);
    free(path);
    return l;
}

static void unload(loaded l)
{
    tok_vocab_free(l.v);
    gguf_free(l.f);
}

/* Encodes with room for tok_encode_bound ids; the ids are malloc'd. */
static int32_t *encode(const tok_vocab *v, const void *text, size_t len, bool special, size_t *n)
{
    size_t cap = tok_encode_bound(v, len) + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    eng_status st = tok_encode(v, text, len, special, ids, cap, n);
    cr_assert_eq(st, ENG_OK, "tok_encode: %s", eng_status_str(st));
    cr_assert_leq(*n, tok_encode_bound(v, len), "more ids than tok_encode_bound promises");
    return ids;
}

/* tok_decode_text of ids, NUL-terminated, malloc'd. */
static char *decode_text(const tok_vocab *v, const int32_t *ids, size_t n, size_t *len)
{
    size_t need;
    eng_status st = tok_decode_text(v, ids, n, NULL, 0, &need);
    cr_assert(st == ENG_OK || need > 0);
    char *buf = malloc(need + 1);
    cr_assert_eq(tok_decode_text(v, ids, n, buf, need, len), ENG_OK);
    cr_assert_eq(*len, need);
    buf[need] = 0;
    return buf;
}

static void assert_pieces(const tok_vocab *v, const char *text, bool special, const char *want)
{
    size_t n;
    int32_t *ids = encode(v, text, strlen(text), special, &n);
    char got[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *t = tok_text(v, ids[i], &len);
        o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s", i ? "|" : "", (int)len, t);
    }
    cr_assert_str_eq(got, want, "'%s' (parse_special %d)", text, special);
    free(ids);
}

/* ---- the llama.cpp fixture ---------------------------------------------------------------- */

typedef struct family_stats {
    size_t lines, decoded;
    char mismatch[640]; /* the first difference, or "" */
} family_stats;

/* One fixture line for vocabulary `name`: ids, then the detokenized text. Byte-level BPE is
 * compared on llama.cpp's U+FFFD-normalized bytes (as test_tokenizer does); SentencePiece sees
 * the bytes as they are in llama.cpp too. */
static void check_line(const tok_vocab *v, const tu_json *j, size_t line_no, family_stats *st)
{
    const tu_json *jn = tu_json_get(j, "name"), *jt = tu_json_get(j, "text_b64"),
                  *js = tu_json_get(j, "parse_special"), *ji = tu_json_get(j, "ids"),
                  *jd = tu_json_get(j, "detok_b64");
    cr_assert(jn && jn->type == TU_JSON_STR && jt && jt->type == TU_JSON_STR && js &&
                  js->type == TU_JSON_BOOL && ji && ji->type == TU_JSON_ARR &&
                  (!jd || jd->type == TU_JSON_STR),
              "line %zu: missing or mistyped fields", line_no);
    size_t n_text;
    unsigned char *raw = tu_base64_decode(jt->str, jt->str_len, &n_text);
    cr_assert_not_null(raw, "line %zu: bad base64", line_no);
    uint8_t *text = raw;
    size_t n_in = n_text;
    uint8_t *norm = NULL;
    if (!tok_add_space_prefix(v)) { /* byte-level BPE */
        norm = malloc(3 * n_text + 1);
        cr_assert(llama_normalize(raw, n_text, norm, &n_in), "line %zu: bad code point", line_no);
        text = norm;
    }
    size_t n;
    int32_t *ids = encode(v, text, n_in, js->b, &n);
    size_t n_want = ji->n, i = 0;
    while (i < n && i < n_want && ids[i] == (int32_t)ji->items[i]->num)
        i++;
    if (i < n || i < n_want) {
        snprintf(st->mismatch, sizeof st->mismatch,
                 "line %zu '%s' (parse_special %d): first difference at id %zu: ours %d, "
                 "llama.cpp %d (%zu vs %zu ids)", line_no, jn->str, js->b, i,
                 i < n ? ids[i] : -1, i < n_want ? (int)ji->items[i]->num : -1, n, n_want);
    } else {
        size_t n_back, n_detok = n_text;
        char *back = decode_text(v, ids, n, &n_back);
        unsigned char *detok = jd ? tu_base64_decode(jd->str, jd->str_len, &n_detok) : raw;
        if (n_back != n_detok || memcmp(back, detok, n_back) != 0)
            snprintf(st->mismatch, sizeof st->mismatch,
                     "line %zu '%s' (parse_special %d): decoded to %zu bytes, llama.cpp to %zu",
                     line_no, jn->str, js->b, n_back, n_detok);
        st->decoded += jd != NULL;
        if (jd)
            free(detok);
        free(back);
    }
    st->lines++;
    free(ids);
    free(norm);
    free(raw);
}

static void check_family(const char *name, size_t min_lines)
{
    char *path = tu_source_path("tests/fixtures/llamacpp/tokenize_families.jsonl");
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "fixture %s is missing (tools/gen_tokenizer_fixtures.py writes it)",
                       path);
    loaded l = load_vocab(name);
    family_stats st = {0};
    size_t line_no = 0;
    for (const char *p = text; *p && !st.mismatch[0];) {
        const char *e = strchr(p, '\n');
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        const char *line = p;
        p += ll + (e ? 1 : 0);
        line_no++;
        if (ll == 0)
            continue;
        tu_json *j = tu_json_parse(line, ll);
        cr_assert_not_null(j, "%s:%zu: not valid JSON", path, line_no);
        const tu_json *jv = tu_json_get(j, "vocab");
        cr_assert(jv && jv->type == TU_JSON_STR, "%s:%zu: no vocab", path, line_no);
        if (strcmp(jv->str, name) == 0)
            check_line(l.v, j, line_no, &st);
        tu_json_free(j);
    }
    cr_assert_str_empty(st.mismatch, "%s: %s: %s", path, name, st.mismatch);
    cr_assert_geq(st.lines, min_lines, "only %zu fixture lines for %s", st.lines, name);
    fprintf(stderr, "tokenizer fixture: %-14s %zu lines identical to llama.cpp, ids and text "
                    "(%zu where the text comes back different)\n", name, st.lines, st.decoded);
    unload(l);
    free(text);
    free(path);
}

Test(tokenizer_families, codellama_spm_matches_llamacpp, .timeout = 120)
{
    check_family("codellama-spm", 400);
}
Test(tokenizer_families, deepseek_coder_matches_llamacpp, .timeout = 120)
{
    check_family("deepseek-coder", 400);
}
/* Merges across every boundary: any split unlike llama.cpp's shows in the ids. */
Test(tokenizer_families, deepseek_coder_split_matches_llamacpp_under_crossing_merges,
     .timeout = 120)
{
    check_family("deepseek-coder-probe", 400);
}
Test(tokenizer_families, qwen25_coder_matches_llamacpp, .timeout = 120)
{
    check_family("qwen2.5-coder", 200);
}
Test(tokenizer_families, starcoder_matches_llamacpp, .timeout = 120)
{
    check_family("starcoder", 200);
}

/* ---- the families' special tokens ------------------------------------------------------------ */

Test(tokenizer_families, codellama_has_infill_tokens_bos_and_the_space_prefix)
{
    loaded l = load_vocab("codellama-spm");
    const tok_vocab *v = l.v;
    cr_assert_eq(tok_n_vocab(v), 4004);
    cr_assert_eq(tok_bos(v), 1);
    cr_assert_eq(tok_eos(v), 2);
    cr_assert_eq(tok_unk(v), 0);
    cr_assert(tok_add_bos(v));
    cr_assert_eq(tok_prompt_bos(v), 1);
    cr_assert(tok_add_space_prefix(v));
    /* the converter's prefix/suffix/middle/eot_token_id keys */
    cr_assert_eq(tok_fim_pre(v), tok_find(v, "\xE2\x96\x81<PRE>"));
    cr_assert_eq(tok_fim_pre(v), 4000);
    cr_assert_eq(tok_fim_suf(v), 4001);
    cr_assert_eq(tok_fim_mid(v), 4002);
    cr_assert_eq(tok_eot(v), 4003);
    cr_assert(tok_is_eog(v, 4003), "\xE2\x96\x81<EOT> ends an infill");
    cr_assert(tok_is_eog(v, 2));
    cr_assert_not(tok_is_eog(v, 4000));
    cr_assert(tok_is_special(v, 4000) && tok_is_special(v, 1) && tok_is_special(v, 0));
    size_t len;
    const char *p = tok_piece(v, 4000, &len);
    cr_assert(len == 8 && memcmp(p, "\xE2\x96\x81<PRE>", 8) == 0, "control tokens keep their text");
    p = tok_piece(v, tok_find(v, "<0x0A>"), &len);
    cr_assert(len == 1 && p[0] == '\n', "byte tokens decode to their byte");
    /* the space prefix: at the start, and after every special token */
    assert_pieces(v, "int", false, "\xE2\x96\x81int");
    assert_pieces(v, "<s>int", true, "<s>|\xE2\x96\x81int");
    assert_pieces(v, "x</s>int", true, "\xE2\x96\x81x|</s>|\xE2\x96\x81int");
    assert_pieces(v, "<s>", false, "\xE2\x96\x81<|s|>");
    unload(l);
}

Test(tokenizer_families, deepseek_coder_special_tokens)
{
    loaded l = load_vocab("deepseek-coder");
    const tok_vocab *v = l.v;
    const int32_t bos = tok_find(v, "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
    cr_assert_eq(bos, 4000);
    cr_assert_eq(tok_bos(v), bos);
    cr_assert_eq(tok_prompt_bos(v), bos, "DeepSeek-Coder prompts start with BOS");
    cr_assert_eq(tok_eos(v), tok_find(v, "<|EOT|>"));
    cr_assert_not(tok_add_space_prefix(v));
    /* FIM by text, as llama.cpp: fim_begin is the prefix, fim_hole the suffix, fim_end middle */
    cr_assert_eq(tok_fim_pre(v), tok_find(v, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>"));
    cr_assert_eq(tok_fim_suf(v), tok_find(v, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>"));
    cr_assert_eq(tok_fim_mid(v), tok_find(v, "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>"));
    cr_assert(tok_fim_pre(v) >= 0 && tok_fim_suf(v) >= 0 && tok_fim_mid(v) >= 0);
    cr_assert(tok_is_eog(v, tok_find(v, "<|EOT|>")));
    cr_assert(tok_is_eog(v, tok_find(v, "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>")));
    /* user-defined tokens are split out even without parse_special; control ones are not */
    assert_pieces(v, "<|User|>", false, "<|User|>");
    size_t n;
    int32_t *ids = encode(v, "<|EOT|>", 7, false, &n);
    cr_assert_gt(n, 1, "<|EOT|> is text without parse_special");
    free(ids);
    unload(l);
}

Test(tokenizer_families, qwen25_coder_and_starcoder_special_tokens)
{
    loaded q = load_vocab("qwen2.5-coder");
    cr_assert_not(tok_add_bos(q.v));
    cr_assert_eq(tok_prompt_bos(q.v), -1);
    cr_assert_eq(tok_eos(q.v), tok_find(q.v, "<|im_end|>"));
    cr_assert_eq(tok_fim_pre(q.v), tok_find(q.v, "<|fim_prefix|>"));
    cr_assert_eq(tok_fim_suf(q.v), tok_find(q.v, "<|fim_suffix|>"));
    cr_assert_eq(tok_fim_mid(q.v), tok_find(q.v, "<|fim_middle|>"));
    cr_assert_eq(tok_fim_pad(q.v), tok_find(q.v, "<|fim_pad|>"));
    cr_assert_eq(tok_fim_rep(q.v), tok_find(q.v, "<|repo_name|>"));
    cr_assert_eq(tok_fim_sep(q.v), tok_find(q.v, "<|file_sep|>"));
    cr_assert(tok_is_eog(q.v, tok_find(q.v, "<|endoftext|>")));
    cr_assert(tok_is_eog(q.v, tok_find(q.v, "<|file_sep|>")));
    cr_assert_not(tok_is_eog(q.v, tok_find(q.v, "<|fim_middle|>")));
    assert_pieces(q.v, "<tool_call>", false, "<tool_call>");
    unload(q);

    loaded s = load_vocab("starcoder");
    cr_assert_not(tok_add_bos(s.v), "no add_bos_token key: llama.cpp's default, false");
    cr_assert_eq(tok_eos(s.v), 0);
    cr_assert_eq(tok_fim_pre(s.v), 1);
    cr_assert_eq(tok_fim_mid(s.v), 2);
    cr_assert_eq(tok_fim_suf(s.v), 3);
    cr_assert_eq(tok_fim_pad(s.v), 4);
    cr_assert_eq(tok_fim_rep(s.v), tok_find(s.v, "<reponame>"));
    cr_assert(tok_is_eog(s.v, 0));
    assert_pieces(s.v, "<fim_prefix>x<fim_suffix>", true, "<fim_prefix>|x|<fim_suffix>");
    unload(s);
}

/* ---- round trips ---------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Valid UTF-8 from a palette of code text, spaces, newlines and multi-byte characters. */
static size_t random_utf8(uint64_t *rng, char *out, size_t max)
{
    static const char *const bits[] = {
        " ", "  ", "    ", "\n", "\t", "\r\n", "def", "int", "return", "x", "_", "(", ")",
        "{", "}", ";", "0", "42", "3.14", "//", "#", "\"", "'", "\xC3\xA9", "\xE4\xB8\xAD",
        "\xED\x95\x9C", "\xF0\x9F\x98\x80", "\xE0\xA4\x95", "\xD0\x96", "\xCE\xA9", "<", ">",
        "\xE2\x80\x83", "\xC2\xA0", "\xEF\xBB\xBF"};
    size_t o = 0, n = 1 + rng_next(rng) % 40;
    for (size_t i = 0; i < n; i++) {
        const char *b = bits[rng_next(rng) % (sizeof bits / sizeof bits[0])];
        size_t l = strlen(b);
        if (o + l > max)
            break;
        memcpy(out + o, b, l);
        o += l;
    }
    return o;
}

/* decode_text(encode(x)) == x: valid UTF-8 for SentencePiece (a broken sequence swallows the
 * U+2581 after it into byte tokens), any bytes for byte-level BPE (whose trained vocabularies
 * here have a token for every byte). */
static void check_round_trips(const char *name)
{
    loaded l = load_vocab(name);
    const bool spm = tok_add_space_prefix(l.v);
    uint64_t rng = 0x243F6A8885A308D3ull;
    char x[512];
    for (int iter = 0; iter < 600; iter++) {
        size_t len = 0;
        if (spm || iter % 2 == 0) {
            len = random_utf8(&rng, x, sizeof x);
        } else {
            len = rng_next(&rng) % 64;
            for (size_t i = 0; i < len; i++)
                x[i] = (char)rng_next(&rng);
        }
        size_t n, back_len;
        int32_t *ids = encode(l.v, x, len, false, &n);
        char *back = decode_text(l.v, ids, n, &back_len);
        cr_assert(back_len == len && memcmp(back, x, len) == 0,
                  "%s: text %d (%zu bytes) does not come back (%zu bytes)", name, iter, len,
                  back_len);
        free(back);
        free(ids);
    }
    unload(l);
}

Test(tokenizer_families, round_trip_codellama_spm) { check_round_trips("codellama-spm"); }
Test(tokenizer_families, round_trip_deepseek_coder) { check_round_trips("deepseek-coder"); }
Test(tokenizer_families, round_trip_qwen25_coder) { check_round_trips("qwen2.5-coder"); }
Test(tokenizer_families, round_trip_starcoder) { check_round_trips("starcoder"); }

/* ---- the DeepSeek-Coder pre-tokenizer -------------------------------------------------------- */

/* The words tok_pre_split makes of text, joined by '|'. */
static void assert_words(const char *text, const char *want)
{
    size_t len = strlen(text), m = len + 1;
    tok_split_buf b = {malloc(m * 4), malloc(m * 4), malloc(m), malloc(m * 4), malloc(m * 4)};
    uint32_t *word_len = malloc(m * 4);
    size_t n = tok_pre_split(TOK_PRE_DEEPSEEK_CODER, (const uint8_t *)text, len, &b, word_len);
    char got[256] = "";
    size_t o = 0, off = 0;
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s", i ? "|" : "", (int)word_len[i],
                              text + off);
        off += word_len[i];
    }
    cr_assert_eq(off, len);
    cr_assert_str_eq(got, want, "split of '%s'", text);
    free(b.unit_off), free(b.unit_cpt), free(b.unit_cls), free(b.seg_a), free(b.seg_b);
    free(word_len);
}

/* llama-vocab.cpp's DEEPSEEK_CODER chain: [\r\n], \s?\p{L}+, \s?\p{P}+, [一-龥ࠀ-一가-퟿]+, \p{N},
 * each pass splitting the words of the one before. The CJK and whitespace cases were checked
 * against llama.cpp with a throwaway vocabulary whose merges join across exactly these
 * boundaries ("\u2003b" and "\u3000c" stay one word, " 中" and " क" do not); the fixture's
 * probe vocabulary has too few such merges to show them. */
Test(tokenizer_families, deepseek_coder_splits_as_its_regexes)
{
    /* every CR and LF alone; one space joins the letters or punctuation after it */
    assert_words("a\r\nb\n\nc", "a|\r|\n|b|\n|\n|c");
    assert_words("  ab  (x)", " | ab| | (|x|)");
    /* symbols are neither letters nor punctuation: they stay in the gaps, with spaces */
    assert_words("a += b", "a| +=| b");
    assert_words("x$y", "x|$|y");
    /* digits one by one, spaces before them stay apart */
    assert_words("v12 34", "v|1|2| |3|4");
    /* the CJK ranges run inside the " 中文" word the letter regex made: the space is cut off */
    assert_words(" \xE4\xB8\xAD\xE6\x96\x87", " |\xE4\xB8\xAD\xE6\x96\x87");
    /* U+0800..U+9FA5 includes Devanagari: its combining sign (not a letter) splits the word,
     * and the range regex then splits " क" */
    assert_words(" \xE0\xA4\x95\xE0\xA5\x8D\xE0\xA4\xB7",
                 " |\xE0\xA4\x95|\xE0\xA5\x8D|\xE0\xA4\xB7");
    /* a non-ASCII space joins letters as \s does; it is never in the CJK range */
    assert_words("a\xE3\x80\x80" "b", "a|\xE3\x80\x80" "b");
}

/* ---- tiny SentencePiece vocabularies: mechanics and validation ----------------------------- */

typedef struct spm_tiny {
    char text[300][16];
    gguf_str tokens[300];
    float scores[300];
    int32_t types[300];
    int n;
} spm_tiny;

/* <unk> <s> </s>, the 256 byte tokens, then `pieces` ("text=score"; "▁" written as '_'). */
static void spm_init(spm_tiny *t, const char *const *pieces)
{
    memset(t, 0, sizeof *t);
    static const char *const head[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        snprintf(t->text[i], sizeof t->text[0], "%s", head[i]);
        t->types[i] = i == 0 ? 2 : 3;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(t->text[3 + b], sizeof t->text[0], "<0x%02X>", b);
        t->types[3 + b] = 6;
    }
    t->n = 259;
    for (int i = 0; pieces && pieces[i]; i++) {
        const char *eq = strrchr(pieces[i], '=');
        cr_assert_not_null(eq);
        size_t o = 0;
        for (const char *c = pieces[i]; c < eq; c++) {
            if (*c == '_') {
                memcpy(t->text[t->n] + o, "\xE2\x96\x81", 3);
                o += 3;
            } else {
                t->text[t->n][o++] = *c;
            }
        }
        t->scores[t->n] = strtof(eq + 1, NULL);
        t->types[t->n] = 1;
        t->n++;
    }
    for (int i = 0; i < t->n; i++)
        t->tokens[i] = (gguf_str){t->text[i], strlen(t->text[i])};
}

typedef void (*spm_tweak)(gguf_writer *w, spm_tiny *t);

static eng_status spm_load(spm_tiny *t, spm_tweak tweak, bool with_scores, loaded *l,
                           eng_err *err)
{
    gguf_writer *w = gguf_writer_create();
    cr_assert_not_null(w);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", 5);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", t->tokens, (uint64_t)t->n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t->types, (uint64_t)t->n);
    if (with_scores)
        gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t->scores,
                            (uint64_t)t->n);
    if (tweak)
        tweak(w, t); /* adds keys or replaces what was just written */
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, err), ENG_OK, "%s", err->msg);
    gguf_writer_free(w);
    cr_assert_eq(gguf_open(path, &l->f, err), ENG_OK, "%s", err->msg);
    unlink(path);
    free(path);
    eng_status st = tok_vocab_from_gguf(l->f, &l->v, err);
    if (st != ENG_OK) {
        cr_assert_null(l->v);
        gguf_free(l->f);
        l->f = NULL;
    }
    return st;
}

static loaded spm_ok(const char *const *pieces, spm_tweak tweak)
{
    spm_tiny t;
    spm_init(&t, pieces);
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(spm_load(&t, tweak, true, &l, &err), ENG_OK, "%s", err.msg);
    return l;
}

Test(tokenizer_families, spm_merges_the_highest_score_first_and_the_leftmost_on_ties)
{
    /* "abc": ab and bc compete for b */
    loaded l = spm_ok((const char *[]){"_=-1", "a=-1", "b=-1", "c=-1", "ab=-5", "bc=-3", NULL}, NULL);
    assert_pieces(l.v, "abc", false, "\xE2\x96\x81|a|bc");
    unload(l);
    l = spm_ok((const char *[]){"_=-1", "a=-1", "b=-1", "c=-1", "ab=-3", "bc=-5", NULL}, NULL);
    assert_pieces(l.v, "abc", false, "\xE2\x96\x81|ab|c");
    unload(l);
    l = spm_ok((const char *[]){"_=-1", "a=-1", "b=-1", "c=-1", "ab=-4", "bc=-4", NULL}, NULL);
    assert_pieces(l.v, "abc", false, "\xE2\x96\x81|ab|c");
    unload(l);
    /* merging continues from merged pieces; "_a" needs the prefix space */
    l = spm_ok((const char *[]){"_=-1", "a=-1", "b=-1", "_a=-2", "_ab=-3", NULL}, NULL);
    assert_pieces(l.v, "ab", false, "\xE2\x96\x81" "ab");
    assert_pieces(l.v, "ab ab", false, "\xE2\x96\x81" "ab|\xE2\x96\x81" "ab");
    unload(l);
}

Test(tokenizer_families, spm_falls_back_to_byte_tokens)
{
    loaded l = spm_ok((const char *[]){"_=-1", "a=-1", NULL}, NULL);
    /* "é" has no piece: its two bytes; a broken sequence swallows the U+2581 after it */
    assert_pieces(l.v, "a\xC3\xA9", false, "\xE2\x96\x81|a|<0xC3>|<0xA9>");
    assert_pieces(l.v, "\xC3 a", false, "\xE2\x96\x81|<0xC3>|<0xE2>|<0x96>|<0x81>|a");
    size_t n;
    int32_t *ids = encode(l.v, "\xC3 \xC3 \xC3 ", 6, false, &n);
    cr_assert_gt(n, 6 + 2, "more ids than bytes plus BOS: why tok_encode_bound exists");
    free(ids);
    char back[16];
    size_t len;
    ids = encode(l.v, "a\xF0\x9F\x98\x80", 5, false, &n);
    cr_assert_eq(tok_decode_text(l.v, ids, n, back, sizeof back, &len), ENG_OK);
    cr_assert(len == 5 && memcmp(back, "a\xF0\x9F\x98\x80", 5) == 0);
    free(ids);
    unload(l);
}

static void tweak_no_prefix(gguf_writer *w, spm_tiny *t)
{
    (void)t;
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
}

Test(tokenizer_families, spm_without_add_space_prefix_adds_no_space)
{
    loaded l = spm_ok((const char *[]){"_=-1", "a=-1", "_a=-2", NULL}, tweak_no_prefix);
    cr_assert_not(tok_add_space_prefix(l.v));
    assert_pieces(l.v, "a a", false, "a|\xE2\x96\x81" "a");
    assert_pieces(l.v, "<s>a", true, "<s>|a");
    unload(l);
}

/* Text that continues a sequence (CodeLlama's infill suffix): no space before its start, but
 * one after each special token inside it, as at the start of a sequence. */
Test(tokenizer_families, spm_continued_text_gets_no_leading_space)
{
    loaded l = spm_ok((const char *[]){"_=-1", "a=-1", "_a=-2", NULL}, NULL);
    int32_t ids[8];
    size_t n;
    cr_assert_eq(tok_encode_continued(l.v, "a a", 3, false, ids, 8, &n), ENG_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[0], tok_find(l.v, "a"));
    cr_assert_eq(ids[1], tok_find(l.v, "\xE2\x96\x81" "a"));
    cr_assert_eq(tok_encode_continued(l.v, "a</s>a", 6, true, ids, 8, &n), ENG_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[1], 2);
    cr_assert_eq(ids[2], tok_find(l.v, "\xE2\x96\x81" "a"), "a space after the special token");
    unload(l);
}

static void expect_spm_error(const char *const *pieces, spm_tweak tweak, bool with_scores,
                             const char *needle)
{
    spm_tiny t;
    spm_init(&t, pieces);
    loaded l = {0};
    eng_err err = {{0}};
    eng_status st = spm_load(&t, tweak, with_scores, &l, &err);
    cr_assert_eq(st, ENG_ERR_FORMAT, "status %s (%s), want a format error about '%s'",
                 eng_status_str(st), err.msg, needle);
    cr_assert(strstr(err.msg, needle), "message '%s' does not mention '%s'", err.msg, needle);
}

static void tweak_scores_short(gguf_writer *w, spm_tiny *t)
{
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t->scores,
                        (uint64_t)t->n - 1);
}
static void tweak_scores_u8(gguf_writer *w, spm_tiny *t)
{
    static uint8_t s[300];
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_UINT8, s, (uint64_t)t->n);
}
static void tweak_scores_nan(gguf_writer *w, spm_tiny *t)
{
    t->scores[7] = NAN;
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, t->scores, (uint64_t)t->n);
}
static void tweak_no_byte_41(gguf_writer *w, spm_tiny *t)
{
    snprintf(t->text[3 + 0x41], sizeof t->text[0], "zz");
    t->tokens[3 + 0x41] = (gguf_str){t->text[3 + 0x41], 2};
    t->types[3 + 0x41] = 1;
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", t->tokens, (uint64_t)t->n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t->types, (uint64_t)t->n);
}
static void tweak_byte_type_on_text(gguf_writer *w, spm_tiny *t)
{
    t->types[t->n - 1] = 6;
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t->types, (uint64_t)t->n);
}
static void tweak_eos_range(gguf_writer *w, spm_tiny *t)
{
    (void)t;
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 5000);
}
static void tweak_prefix_range(gguf_writer *w, spm_tiny *t)
{
    (void)t;
    gguf_writer_set_u32(w, "tokenizer.ggml.prefix_token_id", 5000);
}
static void tweak_prefix_not_bool(gguf_writer *w, spm_tiny *t)
{
    (void)t;
    gguf_writer_set_u32(w, "tokenizer.ggml.add_space_prefix", 1);
}

Test(tokenizer_families, spm_rejects_hostile_vocabularies)
{
    const char *const pieces[] = {"_=-1", "a=-1", NULL};
    expect_spm_error(pieces, NULL, false, "tokenizer.ggml.scores is missing");
    expect_spm_error(pieces, tweak_scores_short, true, "scores has 260 entries for 261 tokens");
    expect_spm_error(pieces, tweak_scores_u8, true, "scores is not a float32");
    expect_spm_error(pieces, tweak_scores_nan, true, "scores[7] is NaN");
    expect_spm_error(pieces, tweak_no_byte_41, true, "no token for byte 0x41 ('<0x41>')");
    expect_spm_error(pieces, tweak_byte_type_on_text, true, "token 260 'a' is a byte token");
    expect_spm_error(pieces, tweak_eos_range, true, "eos_token_id = 5000 is out of range");
    expect_spm_error(pieces, tweak_prefix_range, true, "prefix_token_id = 5000");
    expect_spm_error(pieces, tweak_prefix_not_bool, true, "add_space_prefix");
    /* the same vocabulary is fine as it is, with SentencePiece's default ids */
    loaded l = spm_ok(pieces, NULL);
    cr_assert_eq(tok_bos(l.v), 1);
    cr_assert_eq(tok_eos(l.v), 2);
    cr_assert_eq(tok_unk(l.v), 0);
    cr_assert(tok_add_bos(l.v));
    unload(l);
}
