/* tokenizer.c — vocabularies built from a GGUF's tokenizer.ggml.* metadata (byte-level BPE and
 * SentencePiece): loading and validation, llama.cpp's special-token rules, lookups and
 * decoding. Encoding is in tokenizer_encode.c and tokenizer_spm.c, the pre-tokenizers in
 * tokenizer_pre.c. */
#include "tokenizer.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"
#include "utf8.h"

/* ---- hashing ------------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    return cap;
}

const char *tok_vocab_str(const tok_vocab *v, int32_t id, size_t *len)
{
    *len = v->text_off[id + 1] - v->text_off[id];
    return v->text + v->text_off[id];
}

/* Slot where `s` lives or would go. */
static size_t tok_slot(const tok_vocab *v, const char *s, size_t n)
{
    size_t i = hash_bytes(s, n) & v->tok_mask;
    for (;; i = (i + 1) & v->tok_mask) {
        int32_t id = v->tok_slots[i];
        if (id < 0)
            return i;
        size_t len;
        const char *t = tok_vocab_str(v, id, &len);
        if (len == n && memcmp(t, s, n) == 0)
            return i;
    }
}

int32_t tok_vocab_lookup(const tok_vocab *v, const char *s, size_t n)
{
    return v->tok_slots[tok_slot(v, s, n)];
}

const merge_slot *tok_merge_find(const tok_vocab *v, int32_t left, int32_t right)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    for (size_t i = hash_u64(key) & v->merge_mask;; i = (i + 1) & v->merge_mask) {
        const merge_slot *m = &v->merge_slots[i];
        if (m->rank < 0)
            return NULL;
        if (m->key == key)
            return m;
    }
}

/* ---- the GPT-2 byte <-> unicode mapping -------------------------------------------------- */

static void byte_map_init(tok_vocab *v)
{
    int n = 0;
    for (int i = 0; i < 0x144; i++)
        v->unmap[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cpt = self ? b : 256 + n++;
        v->unmap[cpt] = (int16_t)b;
        if (cpt < 0x80) {
            v->byte_map[b][0] = (char)cpt;
            v->byte_map_len[b] = 1;
        } else {
            v->byte_map[b][0] = (char)(0xC0 | (cpt >> 6));
            v->byte_map[b][1] = (char)(0x80 | (cpt & 0x3F));
            v->byte_map_len[b] = 2;
        }
    }
    ENG_ASSERT(n == 68);
}

/* Appends the decoded bytes of a byte-level token text: each mapped character back to its
 * byte. A character outside the mapping (not produced by byte-level BPE) is kept as is, and so
 * is a byte that is not valid UTF-8. Returns the number of bytes written (<= n). */
static size_t unmap_text(const tok_vocab *v, const char *s, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint8_t b0 = (uint8_t)s[i];
        if (b0 >= 0xC0 && b0 < 0xE0 && i + 1 < n && ((uint8_t)s[i + 1] & 0xC0) == 0x80) {
            uint32_t cpt = ((uint32_t)(b0 & 0x1F) << 6) | ((uint8_t)s[i + 1] & 0x3Fu);
            if (cpt >= 0x80 && cpt < 0x144 && v->unmap[cpt] >= 0) {
                dst[o++] = (char)v->unmap[cpt];
                i += 2;
                continue;
            }
        } else if (b0 < 0x80 && v->unmap[b0] >= 0) {
            dst[o++] = (char)v->unmap[b0];
            i++;
            continue;
        }
        dst[o++] = s[i++];
    }
    return o;
}

/* ---- loading ------------------------------------------------------------------------------ */

static const char *const eog_texts[] = {
    /* llama-vocab.cpp: tokens that end generation, whatever their type (and are made CONTROL) */
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>", "[e~[", NULL};

/* Texts llama.cpp uses to find a special id the file does not name. */
static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
    "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
    "<PRE>", "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const fim_suf_texts[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
    "<SUF>", "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const fim_mid_texts[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>",
    "<MID>", "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
                                            "[PAD]", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};

static int32_t find_text(const tok_vocab *v, const char *s)
{
    return tok_vocab_lookup(v, s, strlen(s));
}

/* Reads an optional special-token id; -1 when absent. */
static eng_status read_id(const gguf_file *f, const tok_vocab *v, const char *key, int32_t *out,
                          eng_err *err)
{
    *out = -1;
    if (gguf_kv_find(f, key) < 0)
        return ENG_OK;
    uint32_t id;
    eng_status st = gguf_get_u32(f, key, &id, err);
    if (st != ENG_OK)
        return st;
    if (id >= (uint32_t)v->n_tokens)
        return eng_fail(err, ENG_ERR_FORMAT, "%s = %u is out of range (vocabulary has %d tokens)",
                        key, id, v->n_tokens);
    *out = (int32_t)id;
    return ENG_OK;
}

/* The id a `key` names or, when the file has no such key, the lowest id whose text is in
 * `texts`, which (like llama.cpp) is then treated as a control token. */
static eng_status special_id(const gguf_file *f, tok_vocab *v, const char *key,
                             const char *const *texts, int32_t *out, eng_err *err)
{
    eng_status st = read_id(f, v, key, out, err);
    if (st != ENG_OK || *out >= 0 || !texts)
        return st;
    for (size_t i = 0; texts[i]; i++) {
        int32_t id = find_text(v, texts[i]);
        if (id >= 0 && (*out < 0 || id < *out))
            *out = id;
    }
    if (*out >= 0)
        v->attr[*out] |= TOK_ATTR_CONTROL;
    return ENG_OK;
}

static eng_status load_tokens(const gguf_file *f, tok_vocab *v, eng_err *err)
{
    gguf_arr toks;
    if (gguf_kv_find(f, "tokenizer.ggml.tokens") < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.tokens is missing");
    eng_status st = gguf_get_arr(f, "tokenizer.ggml.tokens", &toks, err);
    if (st != ENG_OK)
        return st;
    if (toks.elem_type != GGUF_TYPE_STRING)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.tokens is not a string array");
    if (toks.n == 0 || toks.n > INT32_MAX / 2)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries",
                        (unsigned long long)toks.n);
    v->n_tokens = (int32_t)toks.n;
    const size_t n = (size_t)toks.n;

    /* Sizes first: an empty token becomes "[EMPTY_<id>]" as in llama.cpp. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t len = gguf_arr_str(f, &toks, i).len;
        total += len ? (size_t)len : 32;
    }
    v->text = malloc(total + 1);
    v->text_off = malloc((n + 1) * sizeof *v->text_off);
    v->attr = calloc(n, 1);
    v->tok_mask = table_size(n) - 1;
    v->tok_slots = malloc((v->tok_mask + 1) * sizeof *v->tok_slots);
    if (!v->text || !v->text_off || !v->attr || !v->tok_slots)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory for %zu tokens", n);
    memset(v->tok_slots, 0xFF, (v->tok_mask + 1) * sizeof *v->tok_slots);

    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(f, &toks, i);
        /* GGUF strings are UTF-8, and byte-level BPE writes every byte as a printable
         * character, so a real vocabulary is valid UTF-8. A raw-byte token text ("\xC4") is
         * not, and the byte fallback would emit two such one-byte pieces for one input byte. */
        size_t bad;
        if (!eng_utf8_valid(s.ptr, (size_t)s.len, &bad))
            return eng_fail(err, ENG_ERR_FORMAT,
                            "tokenizer.ggml.tokens: token %zu is not valid UTF-8 (byte %zu of %llu "
                            "is 0x%02X)", i, bad, (unsigned long long)s.len,
                            (unsigned)(unsigned char)s.ptr[bad]);
        v->text_off[i] = o;
        if (s.len) {
            memcpy(v->text + o, s.ptr, (size_t)s.len);
            o += (size_t)s.len;
        } else {
            o += (size_t)snprintf(v->text + o, 32, "[EMPTY_%zu]", i);
        }
        v->text_off[i + 1] = o;
        size_t len;
        const char *t = tok_vocab_str(v, (int32_t)i, &len);
        size_t slot = tok_slot(v, t, len);
        if (v->tok_slots[slot] >= 0)
            return eng_fail(err, ENG_ERR_FORMAT,
                            "tokenizer.ggml.tokens: token %zu '%.*s' duplicates token %d", i,
                            (int)(len > 64 ? 64 : len), t, v->tok_slots[slot]);
        v->tok_slots[slot] = (int32_t)i;
    }

    /* Types: absent means all normal. */
    if (gguf_kv_find(f, "tokenizer.ggml.token_type") < 0) {
        memset(v->attr, TOK_ATTR_NORMAL, n);
        return ENG_OK;
    }
    gguf_arr types;
    st = gguf_get_arr(f, "tokenizer.ggml.token_type", &types, err);
    if (st != ENG_OK)
        return st;
    if (types.elem_type != GGUF_TYPE_INT32)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.token_type is not an int32 array");
    if (types.n != toks.n)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                        (unsigned long long)types.n, (unsigned long long)toks.n);
    static const uint8_t type_attr[7] = {TOK_ATTR_UNDEFINED, TOK_ATTR_NORMAL,  TOK_ATTR_UNKNOWN, TOK_ATTR_CONTROL,
                                         TOK_ATTR_USER_DEFINED, TOK_ATTR_UNUSED, TOK_ATTR_BYTE};
    for (size_t i = 0; i < n; i++) {
        int32_t t;
        memcpy(&t, (const char *)types.data + 4 * i, 4);
        v->attr[i] = t >= 0 && t < 7 ? type_attr[t] : TOK_ATTR_UNDEFINED;
    }
    return ENG_OK;
}

static eng_status load_merges(const gguf_file *f, tok_vocab *v, eng_err *err)
{
    gguf_arr merges;
    if (gguf_kv_find(f, "tokenizer.ggml.merges") < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.merges is missing");
    eng_status st = gguf_get_arr(f, "tokenizer.ggml.merges", &merges, err);
    if (st != ENG_OK)
        return st;
    if (merges.elem_type != GGUF_TYPE_STRING)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.merges is not a string array");
    if (merges.n > INT32_MAX / 2)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.merges has %llu entries",
                        (unsigned long long)merges.n);
    const size_t n = (size_t)merges.n;
    v->merge_mask = table_size(n) - 1;
    v->merge_slots = malloc((v->merge_mask + 1) * sizeof *v->merge_slots);
    size_t cat_cap = 256;
    char *cat = malloc(cat_cap);
    if (!v->merge_slots || !cat) {
        free(cat);
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory for %zu merges", n);
    }
    for (size_t i = 0; i <= v->merge_mask; i++)
        v->merge_slots[i].rank = -1;

    for (size_t r = 0; r < n; r++) {
        gguf_str s = gguf_arr_str(f, &merges, r);
        const char *sp = s.len > 2 ? memchr(s.ptr + 1, ' ', (size_t)s.len - 2) : NULL;
        const char *bad = NULL;
        int32_t left = -1, right = -1;
        if (!sp || memchr(sp + 1, ' ', (size_t)(s.ptr + s.len - sp - 1)) || s.ptr[0] == ' ')
            bad = "is not two tokens separated by one space";
        else if ((left = tok_vocab_lookup(v, s.ptr, (size_t)(sp - s.ptr))) < 0)
            bad = "left half is not a token";
        else if ((right = tok_vocab_lookup(v, sp + 1, (size_t)(s.ptr + s.len - sp - 1))) < 0)
            bad = "right half is not a token";
        if (bad) {
            free(cat);
            return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.merges[%zu] '%.*s': %s", r,
                            (int)(s.len > 64 ? 64 : s.len), s.ptr, bad);
        }
        uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
        size_t i = hash_u64(key) & v->merge_mask;
        while (v->merge_slots[i].rank >= 0 && v->merge_slots[i].key != key)
            i = (i + 1) & v->merge_mask;
        if (v->merge_slots[i].rank >= 0)
            continue; /* a repeated pair keeps its first (best) rank, as llama.cpp's emplace */
        size_t ll, rl;
        const char *lt = tok_vocab_str(v, left, &ll), *rt = tok_vocab_str(v, right, &rl);
        if (ll + rl > cat_cap) {
            cat_cap = 2 * (ll + rl);
            char *grown = realloc(cat, cat_cap);
            if (!grown) {
                free(cat);
                return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
            }
            cat = grown;
        }
        memcpy(cat, lt, ll);
        memcpy(cat + ll, rt, rl);
        v->merge_slots[i].key = key;
        v->merge_slots[i].rank = (int32_t)r;
        v->merge_slots[i].merged = tok_vocab_lookup(v, cat, ll + rl);
    }
    free(cat);
    return ENG_OK;
}

/* A FIM id: the fim_* key, overridden by the older key CodeLlama's converter writes (llama.cpp
 * reads both, the older one last), else found by text. */
static eng_status fim_id(const gguf_file *f, tok_vocab *v, const char *key, const char *old_key,
                         const char *const *texts, int32_t *out, eng_err *err)
{
    int32_t old = -1;
    eng_status st = old_key ? read_id(f, v, old_key, &old, err) : ENG_OK;
    if (st != ENG_OK)
        return st;
    if (old >= 0) {
        *out = old;
        return read_id(f, v, key, &old, err); /* still validated */
    }
    return special_id(f, v, key, texts, out, err);
}

/* Special ids, end-of-generation set and the attribute fix-ups llama.cpp applies by text. */
static eng_status load_specials(const gguf_file *f, tok_vocab *v, eng_err *err)
{
    int32_t dummy;
    eng_status st;
    if ((st = read_id(f, v, "tokenizer.ggml.bos_token_id", &v->bos, err)) != ENG_OK ||
        (st = read_id(f, v, "tokenizer.ggml.eos_token_id", &v->eos, err)) != ENG_OK ||
        (st = special_id(f, v, "tokenizer.ggml.eot_token_id", eot_texts, &v->eot, err)) != ENG_OK ||
        (st = special_id(f, v, "tokenizer.ggml.eom_token_id", eom_texts, &v->eom, err)) != ENG_OK ||
        (st = read_id(f, v, "tokenizer.ggml.unknown_token_id", &v->unk, err)) != ENG_OK ||
        (st = read_id(f, v, "tokenizer.ggml.padding_token_id", &v->pad, err)) != ENG_OK ||
        (st = read_id(f, v, "tokenizer.ggml.seperator_token_id", &dummy, err)) != ENG_OK ||
        (st = fim_id(f, v, "tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id",
                     fim_pre_texts, &v->fim_pre, err)) != ENG_OK ||
        (st = fim_id(f, v, "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id",
                     fim_suf_texts, &v->fim_suf, err)) != ENG_OK ||
        (st = fim_id(f, v, "tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id",
                     fim_mid_texts, &v->fim_mid, err)) != ENG_OK ||
        (st = special_id(f, v, "tokenizer.ggml.fim_pad_token_id", fim_pad_texts, &v->fim_pad, err)) != ENG_OK ||
        (st = special_id(f, v, "tokenizer.ggml.fim_rep_token_id", fim_rep_texts, &v->fim_rep, err)) != ENG_OK ||
        (st = special_id(f, v, "tokenizer.ggml.fim_sep_token_id", fim_sep_texts, &v->fim_sep, err)) != ENG_OK)
        return st;
    (void)dummy;
    /* SentencePiece's defaults when the file names none (llama.cpp: <unk> 0, <s> 1, </s> 2). */
    if (v->type == TOK_TYPE_SPM) {
        if (gguf_kv_find(f, "tokenizer.ggml.bos_token_id") < 0 && v->n_tokens > 1)
            v->bos = 1;
        if (gguf_kv_find(f, "tokenizer.ggml.eos_token_id") < 0 && v->n_tokens > 2)
            v->eos = 2;
        if (gguf_kv_find(f, "tokenizer.ggml.unknown_token_id") < 0)
            v->unk = 0;
    }

    /* The pre-tokenizer's default (llama3: true) applies only when the file has a BOS. */
    v->add_bos = v->pre.add_bos && v->bos >= 0;
    if (gguf_kv_find(f, "tokenizer.ggml.add_bos_token") >= 0) {
        if ((st = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v->add_bos, err)) != ENG_OK)
            return st;
        if (v->add_bos && v->bos < 0)
            return eng_fail(err, ENG_ERR_FORMAT,
                            "tokenizer.ggml.add_bos_token is true, but there is no bos_token_id");
    }

    /* The FIM padding/repo/separator tokens end generation in llama.cpp; so do tokens with
     * these texts, which are also made control tokens. */
    const int32_t fim_eog[3] = {v->fim_pad, v->fim_rep, v->fim_sep};
    for (int i = 0; i < 3; i++)
        if (fim_eog[i] >= 0)
            v->attr[fim_eog[i]] |= TOK_ATTR_EOG;
    for (size_t i = 0; eog_texts[i]; i++) {
        int32_t id = find_text(v, eog_texts[i]);
        if (id >= 0)
            v->attr[id] |= TOK_ATTR_EOG | TOK_ATTR_CONTROL;
    }
    /* gpt-oss: always rendered, so user-defined. */
    static const char *const user_texts[] = {"<|channel|>", "<|message|>", "<|start|>",
                                              "<|constrain|>", NULL};
    for (size_t i = 0; user_texts[i]; i++) {
        int32_t id = find_text(v, user_texts[i]);
        if (id >= 0)
            v->attr[id] = (uint8_t)((v->attr[id] & TOK_ATTR_EOG) | TOK_ATTR_USER_DEFINED);
    }
    const int32_t named_eog[3] = {v->eos, v->eot, v->eom};
    for (int i = 0; i < 3; i++)
        if (named_eog[i] >= 0)
            v->attr[named_eog[i]] |= TOK_ATTR_EOG;

    /* o200k_harmony / solar-open: "<|end|>" does not end generation there. */
#define IS_EOG_TEXT(s) (find_text(v, s) >= 0 && (v->attr[find_text(v, s)] & TOK_ATTR_EOG))
    int32_t end_id = find_text(v, "<|end|>");
    if (end_id >= 0 && (v->attr[end_id] & TOK_ATTR_EOG) &&
        ((IS_EOG_TEXT("<|return|>") && IS_EOG_TEXT("<|call|>")) ||
         (IS_EOG_TEXT("<|calls|>") && IS_EOG_TEXT("<|flush|>"))))
        v->attr[end_id] = TOK_ATTR_USER_DEFINED;
    /* gemma4 / paddleocr: "</s>" is an ordinary token when "<|tool_response>" ends turns. */
    int32_t s_id = find_text(v, "</s>");
    if (s_id >= 0 && (v->attr[s_id] & TOK_ATTR_EOG) && IS_EOG_TEXT("<|tool_response>"))
        v->attr[s_id] = TOK_ATTR_NORMAL;
#undef IS_EOG_TEXT
    return ENG_OK;
}

/* "<0xXX>" with two hex digits: the text of a byte token. */
static bool is_byte_text(const char *t, size_t len)
{
    return len == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>' && isxdigit((unsigned char)t[3]) &&
           isxdigit((unsigned char)t[4]);
}

/* SentencePiece's U+2581 back to a space; returns the bytes written (<= n). */
static size_t unescape_spaces(const char *s, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
            dst[o++] = ' ';
            i += 3;
        } else {
            dst[o++] = s[i++];
        }
    }
    return o;
}

/* SentencePiece piece scores: one float (or int, as llama.cpp accepts) per token. */
static eng_status load_scores(const gguf_file *f, tok_vocab *v, eng_err *err)
{
    gguf_arr sc;
    if (gguf_kv_find(f, "tokenizer.ggml.scores") < 0)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "tokenizer.ggml.scores is missing (a SentencePiece vocabulary merges by "
                        "piece score)");
    eng_status st = gguf_get_arr(f, "tokenizer.ggml.scores", &sc, err);
    if (st != ENG_OK)
        return st;
    if (sc.elem_type != GGUF_TYPE_FLOAT32 && sc.elem_type != GGUF_TYPE_INT32)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "tokenizer.ggml.scores is not a float32 (or int32) array");
    if (sc.n != (uint64_t)v->n_tokens)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.scores has %llu entries for %d tokens",
                        (unsigned long long)sc.n, v->n_tokens);
    v->score = malloc((size_t)v->n_tokens * sizeof *v->score);
    if (!v->score)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory for %d scores", v->n_tokens);
    for (int32_t i = 0; i < v->n_tokens; i++) {
        if (sc.elem_type == GGUF_TYPE_FLOAT32) {
            memcpy(&v->score[i], (const char *)sc.data + 4 * (size_t)i, 4);
        } else {
            int32_t x;
            memcpy(&x, (const char *)sc.data + 4 * (size_t)i, 4);
            v->score[i] = (float)x;
        }
        if (isnan(v->score[i]))
            return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.scores[%d] is NaN", i);
    }
    /* A byte token that is not "<0xXX>" would decode to a byte llama.cpp makes up. */
    for (int32_t i = 0; i < v->n_tokens; i++) {
        size_t len;
        const char *t = tok_vocab_str(v, i, &len);
        if ((v->attr[i] & TOK_ATTR_BYTE) && !is_byte_text(t, len))
            return eng_fail(err, ENG_ERR_FORMAT,
                            "tokenizer.ggml.token_type: token %d '%.*s' is a byte token, but its "
                            "text is not <0xXX>", i, (int)(len > 32 ? 32 : len), t);
    }
    return ENG_OK;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const tok_vocab *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = v->text_off[x + 1] - v->text_off[x], ly = v->text_off[y + 1] - v->text_off[y];
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static eng_status build_tables(tok_vocab *v, eng_err *err)
{
    const size_t n = (size_t)v->n_tokens;
    /* Special-token split order: longest text first (llama.cpp sorts by length only; ties
     * go by id here). */
    v->specials = malloc(n * sizeof *v->specials);
    v->piece = malloc(v->text_off[n] + 1);
    v->piece_off = malloc((n + 1) * sizeof *v->piece_off);
    if (!v->specials || !v->piece || !v->piece_off)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++)
        if (v->attr[i] & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN))
            v->specials[v->n_specials++] = (int32_t)i;
    qsort_r(v->specials, (size_t)v->n_specials, sizeof *v->specials, cmp_special, v);

    /* Pieces (never longer than the text): llama.cpp's token_to_piece(special = true). */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *t = tok_vocab_str(v, (int32_t)i, &len);
        v->piece_off[i] = o;
        uint8_t a = v->attr[i];
        if (a & (TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN)) {
            memcpy(v->piece + o, t, len);
            o += len;
        } else if (a & TOK_ATTR_NORMAL) {
            o += v->type == TOK_TYPE_SPM ? unescape_spaces(t, len, v->piece + o)
                                         : unmap_text(v, t, len, v->piece + o);
        } else if ((a & TOK_ATTR_BYTE) && is_byte_text(t, len)) {
            char hex[3] = {t[3], t[4], 0};
            v->piece[o++] = (char)strtol(hex, NULL, 16);
        } else if ((a & TOK_ATTR_BYTE) && v->type == TOK_TYPE_BPE) {
            o += unmap_text(v, t, len, v->piece + o);
        } /* unused and undefined tokens decode to nothing */
    }
    v->piece_off[n] = o;

    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        v->single_id[b] = tok_vocab_lookup(v, &c, 1);
        if (v->type == TOK_TYPE_BPE) {
            v->byte_id[b] = tok_vocab_lookup(v, v->byte_map[b], v->byte_map_len[b]);
            continue;
        }
        /* llama.cpp's byte_to_token: "<0xXX>", else the one-byte text; it throws when neither
         * exists, so such a vocabulary is refused here instead. */
        char hex[7];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        v->byte_id[b] = tok_vocab_lookup(v, hex, 6);
        if (v->byte_id[b] < 0)
            v->byte_id[b] = v->single_id[b];
        if (v->byte_id[b] < 0)
            return eng_fail(err, ENG_ERR_FORMAT,
                            "tokenizer.ggml.tokens: SentencePiece vocabulary has no token for "
                            "byte 0x%02X ('%s'), which its byte fallback needs", b, hex);
    }
    return ENG_OK;
}

eng_status tok_vocab_from_gguf(const gguf_file *f, tok_vocab **out, eng_err *err)
{
    if (!f || !out)
        return eng_fail(err, ENG_ERR_INVALID, "tok_vocab_from_gguf: NULL argument");
    *out = NULL;
    gguf_str model, pre = {"default", 7};
    if (gguf_kv_find(f, "tokenizer.ggml.model") < 0)
        return eng_fail(err, ENG_ERR_FORMAT, "tokenizer.ggml.model is missing");
    eng_status st = gguf_get_str(f, "tokenizer.ggml.model", &model, err);
    if (st != ENG_OK)
        return st;
    tok_type type;
    if (gguf_str_eq(model, "gpt2"))
        type = TOK_TYPE_BPE;
    else if (gguf_str_eq(model, "llama"))
        type = TOK_TYPE_SPM;
    else
        return eng_fail(err, ENG_ERR_UNSUPPORTED,
                        "tokenizer.ggml.model '%.*s' is not supported (only 'gpt2', byte-level "
                        "BPE, and 'llama', SentencePiece)",
                        (int)(model.len > 64 ? 64 : model.len), model.ptr);
    if (type == TOK_TYPE_BPE && gguf_kv_find(f, "tokenizer.ggml.pre") >= 0 &&
        (st = gguf_get_str(f, "tokenizer.ggml.pre", &pre, err)) != ENG_OK)
        return st;

    tok_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return eng_fail(err, ENG_ERR_NOMEM, "tokenizer: out of memory");
    v->type = type;
    if (type == TOK_TYPE_SPM) {
        /* llama.cpp ignores tokenizer.ggml.pre for SentencePiece; BOS and the space prefix are
         * on unless the file says otherwise. */
        v->pre = (tok_pre_info){TOK_PRE_DEFAULT, false, true};
        v->add_space_prefix = true;
        if (gguf_kv_find(f, "tokenizer.ggml.add_space_prefix") >= 0 &&
            (st = gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix,
                                err)) != ENG_OK)
            goto fail;
    } else if (!tok_pre_lookup(pre.ptr, (size_t)pre.len, &v->pre)) {
        st = eng_fail(err, ENG_ERR_UNSUPPORTED, "tokenizer.ggml.pre '%.*s' is not supported",
                      (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
        goto fail;
    }
    byte_map_init(v);
    if ((st = load_tokens(f, v, err)) != ENG_OK ||
        (st = type == TOK_TYPE_SPM ? load_scores(f, v, err) : load_merges(f, v, err)) != ENG_OK ||
        (st = load_specials(f, v, err)) != ENG_OK || (st = build_tables(v, err)) != ENG_OK)
        goto fail;
    *out = v;
    return ENG_OK;
fail:
    tok_vocab_free(v);
    return st;
}

void tok_vocab_free(tok_vocab *v)
{
    if (!v)
        return;
    free(v->text);
    free(v->text_off);
    free(v->piece);
    free(v->piece_off);
    free(v->attr);
    free(v->score);
    free(v->tok_slots);
    free(v->merge_slots);
    free(v->specials);
    free(v);
}

/* ---- queries ------------------------------------------------------------------------------ */

int32_t tok_n_vocab(const tok_vocab *v) { return v->n_tokens; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
int32_t tok_eot(const tok_vocab *v) { return v->eot; }
int32_t tok_unk(const tok_vocab *v) { return v->unk; }
int32_t tok_pad(const tok_vocab *v) { return v->pad; }
bool tok_add_bos(const tok_vocab *v) { return v->add_bos; }
bool tok_add_space_prefix(const tok_vocab *v) { return v->add_space_prefix; }
int32_t tok_fim_pre(const tok_vocab *v) { return v->fim_pre; }
int32_t tok_fim_suf(const tok_vocab *v) { return v->fim_suf; }
int32_t tok_fim_mid(const tok_vocab *v) { return v->fim_mid; }
int32_t tok_fim_pad(const tok_vocab *v) { return v->fim_pad; }
int32_t tok_fim_rep(const tok_vocab *v) { return v->fim_rep; }
int32_t tok_fim_sep(const tok_vocab *v) { return v->fim_sep; }
int32_t tok_prompt_bos(const tok_vocab *v) { return v->add_bos && v->bos >= 0 ? v->bos : -1; }

bool tok_is_eog(const tok_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && (v->attr[id] & TOK_ATTR_EOG);
}

bool tok_is_special(const tok_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n_tokens && (v->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
}

bool tok_byte_encodable(const tok_vocab *v, uint8_t b) { return v->byte_id[b] >= 0; }

int32_t tok_find(const tok_vocab *v, const char *text)
{
    return text ? tok_vocab_lookup(v, text, strlen(text)) : -1;
}

const char *tok_piece(const tok_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || id >= v->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = v->piece_off[id + 1] - v->piece_off[id];
    return v->piece + v->piece_off[id];
}

const char *tok_text(const tok_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || id >= v->n_tokens) {
        *len = 0;
        return NULL;
    }
    return tok_vocab_str(v, id, len);
}

static eng_status decode_pieces(const tok_vocab *v, const int32_t *ids, size_t n, bool lstrip,
                                char *buf, size_t cap, size_t *len_out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *p = tok_piece(v, ids[i], &len);
        if (!p) {
            *len_out = o;
            return ENG_ERR_INVALID;
        }
        if (i == 0 && lstrip && len > 0 && p[0] == ' ') {
            p++;
            len--;
        }
        if (len > 0 && o + len <= cap)
            memcpy(buf + o, p, len);
        o += len;
    }
    *len_out = o;
    return o <= cap ? ENG_OK : ENG_ERR_INVALID;
}

eng_status tok_decode(const tok_vocab *v, const int32_t *ids, size_t n, char *buf, size_t cap,
                      size_t *len_out)
{
    return decode_pieces(v, ids, n, false, buf, cap, len_out);
}

eng_status tok_decode_text(const tok_vocab *v, const int32_t *ids, size_t n, char *buf,
                           size_t cap, size_t *len_out)
{
    return decode_pieces(v, ids, n, v->add_space_prefix, buf, cap, len_out);
}
