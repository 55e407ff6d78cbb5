/* test_tokenizer.c — the byte-level BPE tokenizer: token ids identical to llama.cpp's on the
 * committed fixture for every pre-tokenizer, byte-exact round trips of random bytes, special
 * tokens, BPE mechanics on tiny vocabularies, and clear errors for malformed metadata. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "testutil.h"
#include "tokenizer.h"
#include "tokenizer_test_util.h"
#include "tu_json.h"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct loaded {
    gguf_file *f;
    tok_vocab *v;
} loaded;

static loaded load_path(const char *path)
{
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(path, &l.f, &err), ENG_OK, "%s: %s", path, err.msg);
    cr_assert_eq(tok_vocab_from_gguf(l.f, &l.v, &err), ENG_OK, "%s: %s", path, err.msg);
    return l;
}

static void unload(loaded l)
{
    tok_vocab_free(l.v);
    gguf_free(l.f);
}

/* The default model's tokenizer metadata with tokenizer.ggml.pre replaced (no tensors): how
 * the fixture generator made its non-smollm variants. */
static loaded load_with_pre(const char *pre)
{
    if (strcmp(pre, "smollm") == 0)
        return load_path(tu_default_model());
    gguf_file *src = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(tu_default_model(), &src, &err), ENG_OK, "%s", err.msg);
    gguf_writer *w = gguf_writer_create();
    cr_assert_not_null(w);
    cr_assert_eq(gguf_writer_copy_kv(w, src, ""), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre)), ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    gguf_free(src);
    loaded l = load_path(path);
    unlink(path);
    free(path);
    return l;
}

/* Encodes text; the ids are malloc'd. */
static int32_t *encode(const tok_vocab *v, const void *text, size_t len, bool special, size_t *n)
{
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    eng_status st = tok_encode(v, text, len, special, ids, cap, n);
    cr_assert_eq(st, ENG_OK, "tok_encode: %s", eng_status_str(st));
    return ids;
}

static char *decode(const tok_vocab *v, const int32_t *ids, size_t n, size_t *len)
{
    size_t need;
    cr_assert_eq(tok_decode(v, ids, n, NULL, 0, &need) == ENG_OK, need == 0);
    char *buf = malloc(need + 1);
    cr_assert_eq(tok_decode(v, ids, n, buf, need, len), ENG_OK);
    cr_assert_eq(*len, need);
    return buf;
}

static void assert_ids(const tok_vocab *v, const char *text, bool special, const int32_t *want,
                       size_t n_want)
{
    size_t n;
    int32_t *ids = encode(v, text, strlen(text), special, &n);
    cr_assert_eq(n, n_want, "'%s': %zu ids, want %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(ids[i], want[i], "'%s' id %zu: %d, want %d", text, i, ids[i], want[i]);
    free(ids);
}

/* ---- the default model -------------------------------------------------------------------- */

Test(tokenizer, smollm2_known_encodings)
{
    loaded l = load_path(tu_default_model());
    const tok_vocab *v = l.v;
    cr_assert_eq(tok_n_vocab(v), 49152);
    assert_ids(v, "Hello world", false, (int32_t[]){19556, 905}, 2);
    /* smollm splits every digit off before the GPT-2 regex */
    assert_ids(v, " 12345", false, (int32_t[]){216, 33, 34, 35, 36, 37}, 6);
    /* "\s+(?!\S)" leaves the last space of a run to the next word */
    assert_ids(v, "a   b", false, (int32_t[]){81, 256, 278}, 3);
    assert_ids(v, "", false, NULL, 0);
    size_t len;
    const char *p = tok_piece(v, 905, &len);
    cr_assert(len == 6 && memcmp(p, " world", 6) == 0);
    p = tok_text(v, 905, &len);
    cr_assert(len == 7 && memcmp(p, "\xC4\xA0world", 7) == 0, "raw text keeps the mapped form");
    cr_assert_null(tok_piece(v, 49152, &len));
    cr_assert_eq(len, 0);
    cr_assert_null(tok_piece(v, -1, &len));
    unload(l);
}

Test(tokenizer, smollm2_special_tokens)
{
    loaded l = load_path(tu_default_model());
    const tok_vocab *v = l.v;
    cr_assert_eq(tok_bos(v), 1);
    cr_assert_eq(tok_eos(v), 2);
    cr_assert_eq(tok_unk(v), 0);
    cr_assert_eq(tok_pad(v), 2);
    cr_assert_not(tok_add_bos(v));
    cr_assert_eq(tok_find(v, "<|im_start|>"), 1);
    cr_assert_eq(tok_find(v, "<|im_end|>"), 2);
    cr_assert_eq(tok_find(v, "no such token"), -1);
    /* end of generation: EOS <|im_end|>, <|endoftext|>, and (as llama.cpp) the FIM-repo token */
    cr_assert(tok_is_eog(v, 2));
    cr_assert(tok_is_eog(v, 0));
    cr_assert(tok_is_eog(v, 4), "<reponame> is llama.cpp's FIM repo token, an EOG");
    cr_assert_not(tok_is_eog(v, 1));
    cr_assert_not(tok_is_eog(v, 19556));
    cr_assert_not(tok_is_eog(v, -1));
    cr_assert_not(tok_is_eog(v, 1 << 20));
    cr_assert(tok_is_special(v, 1));
    cr_assert_not(tok_is_special(v, 19556));

    assert_ids(v, "<|im_start|>user", true, (int32_t[]){1, 4093}, 2);
    const char *chat = "<|im_start|>user\nhi<|im_end|>";
    assert_ids(v, chat, true, (int32_t[]){1, 4093, 198, 6004, 2}, 5);

    /* Without parse_special the markup is plain text: no control ids, and it round-trips. */
    size_t n, len;
    int32_t *ids = encode(v, chat, strlen(chat), false, &n);
    cr_assert_gt(n, 5);
    for (size_t i = 0; i < n; i++)
        cr_assert(ids[i] != 1 && ids[i] != 2, "id %d at %zu without parse_special", ids[i], i);
    char *back = decode(v, ids, n, &len);
    cr_assert(len == strlen(chat) && memcmp(back, chat, len) == 0);
    free(back);
    free(ids);

    /* Special tokens decode to their text. */
    const char *p = tok_piece(v, 1, &len);
    cr_assert(len == 12 && memcmp(p, "<|im_start|>", 12) == 0);
    unload(l);
}

Test(tokenizer, encode_reports_needed_room)
{
    loaded l = load_path(tu_default_model());
    int32_t ids[2] = {-7, -7};
    size_t n = 0;
    cr_assert_eq(tok_encode(l.v, "Hello world again", 17, false, ids, 1, &n), ENG_ERR_INVALID);
    cr_assert_eq(n, 3);
    cr_assert_eq(ids[0], 19556, "the ids that fit are written");
    cr_assert_eq(ids[1], -7, "nothing past cap");
    cr_assert_eq(tok_encode(l.v, "x", 1, false, NULL, 0, &n), ENG_ERR_INVALID);
    cr_assert_eq(n, 1);
    cr_assert_eq(tok_encode(l.v, NULL, 0, false, NULL, 0, &n), ENG_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(tok_encode(l.v, NULL, 3, false, ids, 2, &n), ENG_ERR_INVALID);
    unload(l);
}

/* ---- the llama.cpp fixture ---------------------------------------------------------------- */

typedef struct fixture_stats {
    size_t lines, normalized;
    char mismatch[512]; /* the first difference, or "" */
} fixture_stats;

/* Compares every line of a tokenize.jsonl text whose "pre" is `pre` with `v`'s encoding and
 * describes the first mismatch (line name, position, ours vs llama.cpp's) in st.mismatch. */
static fixture_stats check_jsonl(const tok_vocab *v, const char *pre, const char *text,
                                 const char *what)
{
    fixture_stats st = {0};
    size_t line_no = 0;
    for (const char *p = text; *p && !st.mismatch[0];) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        const char *line = p;
        p += l + (e ? 1 : 0);
        line_no++;
        if (l == 0)
            continue;
        tu_json *j = tu_json_parse(line, l);
        cr_assert_not_null(j, "%s:%zu: not valid JSON", what, line_no);
        const tu_json *jp = tu_json_get(j, "pre"), *jn = tu_json_get(j, "name"),
                      *jt = tu_json_get(j, "text_b64"), *js = tu_json_get(j, "parse_special"),
                      *ji = tu_json_get(j, "ids");
        cr_assert(jp && jp->type == TU_JSON_STR && jn && jn->type == TU_JSON_STR && jt &&
                      jt->type == TU_JSON_STR && js && js->type == TU_JSON_BOOL && ji &&
                      ji->type == TU_JSON_ARR,
                  "%s:%zu: missing or mistyped fields", what, line_no);
        if (strcmp(jp->str, pre) != 0) {
            tu_json_free(j);
            continue;
        }
        size_t n_text;
        unsigned char *raw = tu_base64_decode(jt->str, jt->str_len, &n_text);
        cr_assert_not_null(raw, "%s:%zu: bad base64", what, line_no);
        uint8_t *norm = malloc(3 * n_text + 1);
        size_t n_norm;
        cr_assert(llama_normalize(raw, n_text, norm, &n_norm),
                  "%s:%zu (%s): code point past U+10FFFF", what, line_no, jn->str);
        bool changed = n_norm != n_text || memcmp(norm, raw, n_text) != 0;
        st.normalized += changed;
        st.lines++;

        size_t n;
        int32_t *ids = encode(v, norm, n_norm, js->b, &n);
        size_t n_want = ji->n, i = 0;
        while (i < n && i < n_want && ids[i] == (int32_t)ji->items[i]->num)
            i++;
        if (i < n || i < n_want) {
            char ours[32] = "end", theirs[32] = "end";
            if (i < n)
                snprintf(ours, sizeof ours, "%d", ids[i]);
            if (i < n_want)
                snprintf(theirs, sizeof theirs, "%d", (int)ji->items[i]->num);
            snprintf(st.mismatch, sizeof st.mismatch,
                     "%s: pre %s line %zu '%s' (parse_special %d%s): first difference at id %zu: "
                     "ours %s, llama.cpp %s (%zu vs %zu ids)",
                     what, pre, line_no, jn->str, js->b,
                     changed ? ", invalid UTF-8 normalized" : "", i, ours, theirs, n, n_want);
        }
        free(ids);
        free(norm);
        free(raw);
        tu_json_free(j);
    }
    return st;
}

static void check_fixture(const char *pre)
{
    char *path = tu_source_path("tests/fixtures/llamacpp/tokenize.jsonl");
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text, "fixture %s is missing (tools/gen_llamacpp_fixtures.py writes it)",
                       path);
    loaded l = load_with_pre(pre);
    fixture_stats st = check_jsonl(l.v, pre, text, path);
    cr_assert_str_empty(st.mismatch, "%s", st.mismatch);
    cr_assert_gt(st.lines, 100, "only %zu fixture lines for pre %s", st.lines, pre);
    fprintf(stderr, "tokenizer fixture: pre %-9s %zu lines identical to llama.cpp (%zu with "
                    "invalid UTF-8 compared after llama.cpp's U+FFFD normalization)\n",
            pre, st.lines, st.normalized);
    unload(l);
    free(text);
    free(path);
}

Test(tokenizer, llamacpp_fixture_smollm, .timeout = 120) { check_fixture("smollm"); }
Test(tokenizer, llamacpp_fixture_starcoder, .timeout = 120) { check_fixture("starcoder"); }
Test(tokenizer, llamacpp_fixture_qwen2, .timeout = 120) { check_fixture("qwen2"); }
Test(tokenizer, llamacpp_fixture_llama_bpe, .timeout = 120) { check_fixture("llama-bpe"); }

/* The fixture reader itself, on hand-made lines: it must accept matches and catch a wrong id. */
static const char mini_fixture[] =
    "{\"pre\":\"smollm\",\"name\":\"hello\",\"text_b64\":\"SGVsbG8gd29ybGQ=\","
    "\"parse_special\":false,\"ids\":[19556,905]}\n"
    "{\"pre\":\"qwen2\",\"name\":\"other pre is skipped\",\"text_b64\":\"\","
    "\"parse_special\":false,\"ids\":[1,2,3]}\n"
    "\n"
    "{\"pre\":\"smollm\",\"name\":\"chat\",\"text_b64\":\"PHxpbV9zdGFydHw+dXNlcg==\","
    "\"parse_special\":true,\"ids\":[1,4093]}\n"
    "{\"pre\":\"smollm\",\"name\":\"ff\",\"text_b64\":\"/w==\",\"parse_special\":false,"
    "\"ids\":[24211]}\n";

Test(tokenizer, fixture_reader_accepts_matching_lines)
{
    loaded l = load_path(tu_default_model());
    fixture_stats st = check_jsonl(l.v, "smollm", mini_fixture, "mini");
    cr_assert_str_empty(st.mismatch, "%s", st.mismatch);
    cr_assert_eq(st.lines, 3);
    cr_assert_eq(st.normalized, 1, "\\xff is compared as U+FFFD");
    unload(l);
}

Test(tokenizer, fixture_reader_reports_the_first_difference)
{
    loaded l = load_path(tu_default_model());
    fixture_stats st = check_jsonl(l.v, "smollm",
                                   "{\"pre\":\"smollm\",\"name\":\"wrong\",\"text_b64\":"
                                   "\"SGVsbG8gd29ybGQ=\",\"parse_special\":false,\"ids\":[19556,906]}\n",
                                   "mini");
    cr_assert(strstr(st.mismatch, "'wrong'") && strstr(st.mismatch, "at id 1: ours 905, llama.cpp 906"),
              "%s", st.mismatch);
    st = check_jsonl(l.v, "smollm",
                     "{\"pre\":\"smollm\",\"name\":\"short\",\"text_b64\":\"SGVsbG8gd29ybGQ=\","
                     "\"parse_special\":false,\"ids\":[19556]}\n",
                     "mini");
    cr_assert(strstr(st.mismatch, "ours 905, llama.cpp end"), "%s", st.mismatch);
    unload(l);
}

/* ---- round trips -------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Random text mixing raw bytes (invalid UTF-8 included), ASCII, multi-byte characters of
 * every class, contractions and special-token strings. */
static size_t random_text(uint64_t *rng, uint8_t *out, size_t max)
{
    static const char *const parts[] = {
        " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "'re", "123", "4", "\xC2\xA0", "\xE3\x80\x80",
        "\xE2\x80\xA8", "\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\xD9\xA3", "\xE2\x85\xA7",
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start", "\xC0\xAF", "\xED\xA0\x80",
        "\xF4\x90\x80\x80", "hello", "World", "x_1", "()", "{};", "==", "..."};
    const size_t n_parts = sizeof parts / sizeof parts[0];
    size_t n = 0, target = (size_t)(rng_next(rng) % max);
    while (n < target) {
        uint64_t r = rng_next(rng);
        if (r % 3 == 0) {
            out[n++] = (uint8_t)(r >> 8);
        } else if (r % 3 == 1) {
            out[n++] = (uint8_t)(0x20 + (r >> 8) % 95);
        } else {
            const char *s = parts[(r >> 8) % n_parts];
            size_t l = strlen(s);
            if (n + l > max)
                break;
            memcpy(out + n, s, l);
            n += l;
        }
    }
    return n;
}

/* x without the bytes the vocabulary cannot encode (what decode(encode(x)) must give). */
static size_t encodable_part(const tok_vocab *v, const uint8_t *x, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (tok_byte_encodable(v, x[i]))
            out[o++] = x[i];
    return o;
}

static void check_round_trip(const tok_vocab *v, const char *pre, const uint8_t *x, size_t len,
                             bool special, const char *what)
{
    uint8_t want[1024];
    size_t n_want = encodable_part(v, x, len, want), n, back_len;
    int32_t *ids = encode(v, x, len, special, &n);
    char *back = decode(v, ids, n, &back_len);
    cr_assert(back_len == n_want && memcmp(back, want, n_want) == 0,
              "pre %s, %s (%zu bytes, parse_special %d): decode(encode(x)) != x", pre, what, len,
              special);
    free(back);
    free(ids);
}

static void check_round_trips(const char *pre)
{
    loaded l = load_with_pre(pre);
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t text[512];
    char what[64];
    for (int iter = 0; iter < 400; iter++) {
        size_t len = random_text(&rng, text, sizeof text);
        snprintf(what, sizeof what, "random text %d", iter);
        check_round_trip(l.v, pre, text, len, false, what);
        check_round_trip(l.v, pre, text, len, true, what);
    }
    /* every byte alone and before a few others, every byte pair for some */
    for (int a = 0; a < 256; a++) {
        for (int b = -1; b < 256; b += (a % 17 == 0) ? 1 : 64) {
            uint8_t t[2] = {(uint8_t)a, (uint8_t)b};
            snprintf(what, sizeof what, "bytes %02x %02x", a, b & 0xFF);
            check_round_trip(l.v, pre, t, b < 0 ? 1 : 2, false, what);
        }
    }
    unload(l);
}

Test(tokenizer, smollm2_drops_bytes_without_a_token)
{
    loaded l = load_path(tu_default_model());
    /* SmolLM2's vocabulary has no token for these (llama.cpp drops them too) */
    static const uint8_t missing[] = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1,
                                      0xF2, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC,
                                      0xFD, 0xFE, 0xFF};
    int n_missing = 0;
    for (int b = 0; b < 256; b++)
        n_missing += !tok_byte_encodable(l.v, (uint8_t)b);
    cr_assert_eq(n_missing, (int)sizeof missing);
    for (size_t i = 0; i < sizeof missing; i++)
        cr_assert_not(tok_byte_encodable(l.v, missing[i]), "byte %02x", missing[i]);
    assert_ids(l.v, "\xff", false, NULL, 0);
    assert_ids(l.v, "a\xff" "b", false, (int32_t[]){81, 82}, 2);
    unload(l);
}

Test(tokenizer, round_trip_smollm) { check_round_trips("smollm"); }
Test(tokenizer, round_trip_starcoder) { check_round_trips("starcoder"); }
Test(tokenizer, round_trip_qwen2) { check_round_trips("qwen2"); }
Test(tokenizer, round_trip_llama_bpe) { check_round_trips("llama-bpe"); }
Test(tokenizer, round_trip_gpt2) { check_round_trips("gpt-2"); }
Test(tokenizer, round_trip_default) { check_round_trips("default"); }

/* ---- pre-tokenizers on the default vocabulary --------------------------------------------- */

/* The pieces a text splits into, joined with '|' (the vocabulary has every piece below as one
 * token, so ids map 1:1 to the pre-tokenizer's words here). */
static void assert_pieces(const tok_vocab *v, const char *text, const char *want)
{
    size_t n, len;
    int32_t *ids = encode(v, text, strlen(text), false, &n);
    char got[512] = "";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = tok_piece(v, ids[i], &len);
        o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s", i ? "|" : "", (int)len, p);
    }
    cr_assert_str_eq(got, want, "'%s'", text);
    free(ids);
}

Test(tokenizer, pre_tokenizers_differ_where_llamacpp_says)
{
    loaded s = load_with_pre("smollm"), q = load_with_pre("qwen2"), l3 = load_with_pre("llama-bpe"),
           d = load_with_pre("default");
    assert_pieces(s.v, "x 42", "x| |4|2");
    /* GPT-2's \s+(?!\S) keeps newlines and spaces together; the llama3 family ends a
     * whitespace run at its last newline */
    assert_pieces(s.v, "a\n\n  b", "a|\n\n | b");
    assert_pieces(q.v, "a\n\n  b", "a|\n\n| | b");
    assert_pieces(l3.v, "a\n\n  b", "a|\n\n| | b");
    /* llama.cpp's "default" chain splits punctuation runs off first */
    assert_pieces(s.v, "it's", "it|'s");
    assert_pieces(d.v, "it's", "it|'|s");
    unload(s);
    unload(q);
    unload(l3);
    unload(d);
}

/* ---- tiny vocabularies: BPE mechanics and validation -------------------------------------- */

/* GPT-2's mapped form of byte b, UTF-8 encoded into out (returns length). */
static size_t mapped_char(int b, char *out)
{
    int n = 0, cpt = -1;
    for (int c = 0; c < 256; c++) {
        bool self = (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
        int m = self ? c : 256 + n++;
        if (c == b)
            cpt = m;
    }
    if (cpt < 0x80) {
        out[0] = (char)cpt;
        return 1;
    }
    out[0] = (char)(0xC0 | (cpt >> 6));
    out[1] = (char)(0x80 | (cpt & 0x3F));
    return 2;
}

typedef struct tiny_vocab {
    char text[300][24];
    gguf_str tokens[300];
    int32_t types[300];
    int n;
    gguf_str merges[16];
    int n_merges;
} tiny_vocab;

/* 256 byte tokens plus `extra` (NULL-terminated; type 3 when prefixed by '!'), and merges. */
static void tiny_init(tiny_vocab *t, const char *const *extra, const char *const *merges)
{
    memset(t, 0, sizeof *t);
    for (int b = 0; b < 256; b++) {
        size_t len = mapped_char(b, t->text[b]);
        t->tokens[b] = (gguf_str){t->text[b], len};
        t->types[b] = 1;
    }
    t->n = 256;
    for (int i = 0; extra && extra[i]; i++) {
        bool control = extra[i][0] == '!';
        snprintf(t->text[t->n], sizeof t->text[0], "%s", extra[i] + control);
        t->tokens[t->n] = (gguf_str){t->text[t->n], strlen(t->text[t->n])};
        t->types[t->n] = control ? 3 : 1;
        t->n++;
    }
    for (int i = 0; merges && merges[i]; i++)
        t->merges[t->n_merges++] = (gguf_str){merges[i], strlen(merges[i])};
}

/* Writes the vocabulary (with the given pre) to a temp file and loads it: returns the status
 * and fills *l only on success. `tweak` may add or replace keys. */
static eng_status tiny_load(const tiny_vocab *t, const char *pre, void (*tweak)(gguf_writer *),
                            loaded *l, eng_err *err)
{
    gguf_writer *w = gguf_writer_create();
    cr_assert_not_null(w);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4);
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", t->tokens, (uint64_t)t->n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, t->types, (uint64_t)t->n);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", t->merges, (uint64_t)t->n_merges);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 0);
    if (tweak)
        tweak(w);
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

static loaded tiny_ok(const char *const *extra, const char *const *merges)
{
    tiny_vocab t;
    tiny_init(&t, extra, merges);
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(tiny_load(&t, "gpt-2", NULL, &l, &err), ENG_OK, "%s", err.msg);
    return l;
}

Test(tokenizer, bpe_applies_merges_by_rank)
{
    /* "abc": with a-b ranked first the result is ab|c, with b-c first a|bc */
    loaded l = tiny_ok((const char *[]){"ab", "bc", NULL}, (const char *[]){"a b", "b c", NULL});
    assert_ids(l.v, "abc", false, (int32_t[]){256, 'c'}, 2);
    unload(l);
    l = tiny_ok((const char *[]){"ab", "bc", NULL}, (const char *[]){"b c", "a b", NULL});
    assert_ids(l.v, "abc", false, (int32_t[]){'a', 257}, 2);
    unload(l);
    /* equal pairs merge leftmost first: aaaaa -> aa|aa|a */
    l = tiny_ok((const char *[]){"aa", NULL}, (const char *[]){"a a", NULL});
    assert_ids(l.v, "aaaaa", false, (int32_t[]){256, 256, 'a'}, 3);
    unload(l);
    /* merges build on merges */
    l = tiny_ok((const char *[]){"ab", "abab", NULL}, (const char *[]){"a b", "ab ab", NULL});
    assert_ids(l.v, "ababab", false, (int32_t[]){257, 256}, 2);
    unload(l);
}

static loaded tiny_pre(const char *pre, void (*tweak)(gguf_writer *))
{
    tiny_vocab t;
    tiny_init(&t, (const char *[]){"12", "123", "1234", "xyz", NULL},
              (const char *[]){"1 2", "12 3", "123 4", NULL});
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(tiny_load(&t, pre, tweak, &l, &err), ENG_OK, "%s", err.msg);
    return l;
}

static void tweak_bos(gguf_writer *w) { gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1); }

/* What the SmolLM2 vocabulary cannot show (it has no multi-digit tokens): how each
 * pre-tokenizer groups digits, and llama3's ignore_merges. */
Test(tokenizer, pre_tokenizers_group_digits_as_llamacpp)
{
    loaded g = tiny_pre("gpt-2", NULL), s = tiny_pre("smollm", NULL), l3 = tiny_pre("llama-bpe", NULL),
           q = tiny_pre("qwen2", NULL), d = tiny_pre("default", NULL);
    assert_ids(g.v, "12345", false, (int32_t[]){258, '5'}, 2);
    assert_ids(s.v, "1234", false, (int32_t[]){'1', '2', '3', '4'}, 4);
    assert_ids(l3.v, "12345", false, (int32_t[]){257, '4', '5'}, 3);
    assert_ids(q.v, "1234", false, (int32_t[]){'1', '2', '3', '4'}, 4);
    assert_ids(d.v, "12345", false, (int32_t[]){257, '4', '5'}, 3);
    /* llama3 emits a word that is a token as is, merges or not */
    assert_ids(l3.v, "xyz", false, (int32_t[]){259}, 1);
    assert_ids(q.v, "xyz", false, (int32_t[]){'x', 'y', 'z'}, 3);
    assert_ids(g.v, "xyz", false, (int32_t[]){'x', 'y', 'z'}, 3);
    /* llama3 adds BOS by default, when there is one */
    cr_assert_not(tok_add_bos(l3.v));
    cr_assert_not(tok_add_bos(g.v));
    unload(g);
    unload(s);
    unload(l3);
    unload(q);
    unload(d);
    l3 = tiny_pre("llama-bpe", tweak_bos);
    cr_assert(tok_add_bos(l3.v));
    cr_assert_eq(tok_bos(l3.v), 1);
    unload(l3);
}

Test(tokenizer, bpe_merge_into_a_non_token_falls_back_to_bytes)
{
    /* llama.cpp keeps merging by text; a symbol that is not a token is emitted byte by byte */
    loaded l = tiny_ok(NULL, (const char *[]){"a b", NULL});
    assert_ids(l.v, "ab", false, (int32_t[]){'a', 'b'}, 2);
    unload(l);
}

Test(tokenizer, control_and_user_defined_tokens)
{
    tiny_vocab t;
    tiny_init(&t, (const char *[]){"!<ctl>", "<usr>", NULL}, NULL);
    t.types[257] = 4; /* user-defined */
    loaded l = {0};
    eng_err err = {{0}};
    cr_assert_eq(tiny_load(&t, "gpt-2", NULL, &l, &err), ENG_OK, "%s", err.msg);
    /* control tokens only with parse_special; user-defined ones always */
    assert_ids(l.v, "<ctl>", true, (int32_t[]){256}, 1);
    assert_ids(l.v, "<usr>", false, (int32_t[]){257}, 1);
    size_t n;
    int32_t *ids = encode(l.v, "<ctl>", 5, false, &n);
    cr_assert_eq(n, 5);
    free(ids);
    unload(l);
}

Test(tokenizer, longest_special_token_wins)
{
    loaded l = tiny_ok((const char *[]){"!<a>", "!<a><b>", NULL}, NULL);
    assert_ids(l.v, "<a><b><a>", true, (int32_t[]){257, 256}, 2);
    unload(l);
}

static void expect_error(const tiny_vocab *t, const char *pre, void (*tweak)(gguf_writer *),
                         eng_status want, const char *needle)
{
    loaded l = {0};
    eng_err err = {{0}};
    eng_status st = tiny_load(t, pre, tweak, &l, &err);
    cr_assert_eq(st, want, "status %s, want %s (%s)", eng_status_str(st), eng_status_str(want),
                 err.msg);
    cr_assert(strstr(err.msg, needle), "message '%s' does not mention '%s'", err.msg, needle);
}

static void tweak_model_bert(gguf_writer *w) { gguf_writer_set_str(w, "tokenizer.ggml.model", "bert", 4); }
static void tweak_eos_range(gguf_writer *w) { gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 999); }
static void tweak_types_short(gguf_writer *w)
{
    int32_t types[3] = {1, 1, 1};
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 3);
}
static void tweak_types_u8(gguf_writer *w)
{
    uint8_t types[256 + 1] = {0};
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_UINT8, types, 257);
}
static void tweak_bos_missing(gguf_writer *w) { gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true); }

Test(tokenizer, rejects_bad_metadata)
{
    tiny_vocab t;
    tiny_init(&t, (const char *[]){"ab", NULL}, (const char *[]){"a b", NULL});
    expect_error(&t, "gpt-2", tweak_model_bert, ENG_ERR_UNSUPPORTED, "'bert'");
    expect_error(&t, "no-such-pre", NULL, ENG_ERR_UNSUPPORTED, "'no-such-pre'");
    expect_error(&t, "gpt-2", tweak_eos_range, ENG_ERR_FORMAT, "eos_token_id");
    expect_error(&t, "gpt-2", tweak_types_short, ENG_ERR_FORMAT, "token_type");
    expect_error(&t, "gpt-2", tweak_types_u8, ENG_ERR_FORMAT, "token_type");
    expect_error(&t, "gpt-2", tweak_bos_missing, ENG_ERR_FORMAT, "add_bos_token");

    static const char *const bad_merges[][2] = {
        {"ab", "not two tokens"}, {"a  b", "not two tokens"}, {" ab", "not two tokens"},
        {"ab ", "not two tokens"}, {"a b c", "not two tokens"}, {"a zz", "right half"},
        {"zz b", "left half"}, {"", "not two tokens"}};
    for (size_t i = 0; i < sizeof bad_merges / sizeof bad_merges[0]; i++) {
        tiny_init(&t, (const char *[]){"ab", NULL}, (const char *[]){"a b", bad_merges[i][0], NULL});
        expect_error(&t, "gpt-2", NULL, ENG_ERR_FORMAT, bad_merges[i][1]);
        expect_error(&t, "gpt-2", NULL, ENG_ERR_FORMAT, "merges[1]");
    }

    tiny_init(&t, (const char *[]){"ab", "ab", NULL}, NULL);
    expect_error(&t, "gpt-2", NULL, ENG_ERR_FORMAT, "duplicates token 256");
}

/* Token texts must be valid UTF-8 (GGUF strings are; byte-level BPE writes every byte as a
 * printable character): a raw byte, a truncated sequence, an overlong form or a surrogate is
 * ENG_ERR_FORMAT naming the token. Such tokens once let a prompt's pieces decode to more bytes
 * than the text they came from. */
Test(tokenizer, rejects_token_texts_that_are_not_utf8)
{
    static const struct { const char *text; const char *needle; } bad[] = {
        {"\xC4", "token 256 is not valid UTF-8 (byte 0 of 1 is 0xC4)"},
        {"ab\xA0", "token 256 is not valid UTF-8 (byte 2 of 3 is 0xA0)"},
        {"\xE2\x82", "token 256"},
        {"\xC0\xA0", "token 256"},
        {"\xED\xA0\x80", "token 256"},
        {"\xF4\x90\x80\x80", "token 256"},
        {"\xFF", "token 256"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tiny_vocab t;
        tiny_init(&t, (const char *[]){bad[i].text, NULL}, NULL);
        expect_error(&t, "gpt-2", NULL, ENG_ERR_FORMAT, bad[i].needle);
    }
    /* valid multi-byte texts (and the default model's vocabulary) load */
    unload(tiny_ok((const char *[]){"\xE2\x82\xAC", "\xF0\x9F\x91\x8B", "\xC4\xA0\xC4\xA0", NULL},
                   NULL));
    unload(load_path(tu_default_model()));
}
