/* fuzz_prompt.c — libFuzzer target: the Tabby prompt builder and chat rendering on arbitrary
 * request fields (prefix, suffix, language, snippets, message contents are what IDE clients
 * send), over the default model's vocabulary and synthetic ones built at start-up: StarCoder
 * FIM texts, space runs whose pieces decode longer than their text (user-defined tokens reached
 * through merges), and tiny vocabularies where many bytes have no token at all. Must never
 * crash or leak, must return ENG_OK, ENG_ERR_INVALID or ENG_ERR_UNSUPPORTED, and every token id
 * of a built prompt must be in its vocabulary.
 *
 * Input: byte 0 picks the vocabulary (modulo their number), byte 1 the mode, then the fields
 * separated by 0x00. */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "model.h"
#include "prompt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { N_VOCABS = 5 };

typedef struct fz_vocab {
    eng_model fake;          /* gguf + vocab only, for synthetic vocabularies */
    const eng_model *m;      /* what the builder reads */
    prompt_builder *b;
    int32_t n_vocab;
} fz_vocab;

static eng_model *model;
static fz_vocab vocabs[N_VOCABS];

static void die(const char *what, const eng_err *err)
{
    fprintf(stderr, "fuzz_prompt: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

/* Writes w to a temporary file, loads its vocabulary into *fv and builds a prompt builder. */
static void fz_load(gguf_writer *w, fz_vocab *fv, const char *what)
{
    char path[] = "/tmp/fuzz_prompt_XXXXXX";
    int fd = mkstemp(path);
    eng_err err = {{0}};
    if (fd < 0)
        die(what, NULL);
    close(fd);
    if (gguf_writer_write(w, path, &err) != ENG_OK || gguf_open(path, &fv->fake.gguf, &err) != ENG_OK ||
        tok_vocab_from_gguf(fv->fake.gguf, &fv->fake.vocab, &err) != ENG_OK)
        die(what, &err);
    unlink(path);
    fv->m = &fv->fake;
    if (prompt_builder_create(fv->m, &fv->b, &err) != ENG_OK)
        die(what, &err);
    fv->n_vocab = tok_n_vocab(fv->fake.vocab);
    gguf_writer_free(w);
}

/* The default vocabulary with StarCoder's FIM texts on three unused tokens and, when wide,
 * every token made only of 'Ġ' (a space, mapped) at least twice USER_DEFINED: its piece is
 * then its raw text, twice as long as the spaces it was merged from. */
static void fz_variant(fz_vocab *fv, bool wide)
{
    static const char *const star[] = {"<filename>", "<fim_prefix>", "<gh_stars>", "<fim_suffix>",
                                       "<issue_start>", "<fim_middle>", NULL};
    const gguf_file *src = model->gguf;
    gguf_arr toks, types;
    eng_err err = {{0}};
    if (gguf_get_arr(src, "tokenizer.ggml.tokens", &toks, &err) != ENG_OK ||
        gguf_get_arr(src, "tokenizer.ggml.token_type", &types, &err) != ENG_OK ||
        types.elem_type != GGUF_TYPE_INT32 || types.n != toks.n)
        die("default vocabulary", &err);
    gguf_str *strs = calloc(toks.n, sizeof *strs);
    int32_t *ty = malloc(toks.n * sizeof *ty);
    if (!strs || !ty)
        die("out of memory", NULL);
    memcpy(ty, types.data, toks.n * sizeof *ty);
    for (uint64_t i = 0; i < toks.n; i++) {
        strs[i] = gguf_arr_str(src, &toks, i);
        for (size_t r = 0; star[r]; r += 2)
            if (gguf_str_eq(strs[i], star[r]))
                strs[i] = (gguf_str){star[r + 1], strlen(star[r + 1])};
        bool spaces = wide && strs[i].len >= 4 && strs[i].len % 2 == 0;
        for (uint64_t j = 0; spaces && j < strs[i].len; j += 2)
            spaces = strs[i].ptr[j] == '\xC4' && strs[i].ptr[j + 1] == '\xA0';
        if (spaces)
            ty[i] = 4;
    }
    gguf_writer *w = gguf_writer_create();
    if (!w || gguf_writer_copy_kv(w, src, "tokenizer.") != ENG_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, toks.n) != ENG_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, toks.n) != ENG_OK)
        die("variant vocabulary", NULL);
    fz_load(w, fv, wide ? "wide-space vocabulary" : "FIM vocabulary");
    free(strs);
    free(ty);
}

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

/* A tiny vocabulary: tokens for the printable ASCII bytes and space only (newlines, tabs and
 * every byte >= 0x80 have none), Qwen-style FIM and end tokens (control), and merges; odd: a
 * newline token too, and runs of mapped spaces and newlines are user-defined tokens reached
 * through merges. */
static void fz_tiny(fz_vocab *fv, bool odd)
{
    static char text[256][4];
    gguf_str toks[128];
    int32_t ty[128];
    int n = 0;
    for (int b = 0x20; b < 0x7F; b++) {
        size_t len = mapped_char(b, text[b]);
        toks[n] = (gguf_str){text[b], len};
        ty[n++] = 1;
    }
    static const char *const ctl[] = {"<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>",
                                      "<|fim_middle|>", "<|fim_pad|>", "<|file_sep|>", NULL};
    for (int i = 0; ctl[i]; i++) {
        toks[n] = (gguf_str){ctl[i], strlen(ctl[i])};
        ty[n++] = 3;
    }
    static const char *const plain[] = {"in", "int", "de", "def", "re", "return", NULL};
    for (int i = 0; plain[i]; i++) {
        toks[n] = (gguf_str){plain[i], strlen(plain[i])};
        ty[n++] = 1;
    }
    static const char *const wide[] = {"\xC4\xA0\xC4\xA0", "\xC4\xA0\xC4\xA0\xC4\xA0\xC4\xA0",
                                       "\xC4\x8A\xC4\x8A", NULL};
    if (odd) { /* a newline token ('Ċ'), then the user-defined runs */
        toks[n] = (gguf_str){"\xC4\x8A", 2};
        ty[n++] = 1;
    }
    for (int i = 0; odd && wide[i]; i++) {
        toks[n] = (gguf_str){wide[i], strlen(wide[i])};
        ty[n++] = 4;
    }
    static const char *const merges[] = {"i n", "in t", "d e", "de f", "r e", "re t", NULL};
    static const char *const odd_merges[] = {"\xC4\xA0 \xC4\xA0", "\xC4\xA0\xC4\xA0 \xC4\xA0\xC4\xA0",
                                             "\xC4\x8A \xC4\x8A", NULL};
    gguf_str ms[16];
    int n_m = 0;
    for (int i = 0; merges[i]; i++)
        if (strcmp(merges[i], "re t") != 0) /* "ret" is not a token: merging it falls back */
            ms[n_m++] = (gguf_str){merges[i], strlen(merges[i])};
    for (int i = 0; odd && odd_merges[i]; i++)
        ms[n_m++] = (gguf_str){odd_merges[i], strlen(odd_merges[i])};
    gguf_writer *w = gguf_writer_create();
    if (!w || gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4) != ENG_OK ||
        gguf_writer_set_str(w, "tokenizer.ggml.pre", "qwen2", 5) != ENG_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n) != ENG_OK ||
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, (uint64_t)n) != ENG_OK ||
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", ms, (uint64_t)n_m) != ENG_OK ||
        gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 0x7F - 0x20) != ENG_OK)
        die("tiny vocabulary", NULL);
    fz_load(w, fv, odd ? "odd tiny vocabulary" : "tiny vocabulary");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *env = getenv("SERVAL_MODEL");
    const char *path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    eng_err err = {{0}};
    if (eng_model_load(path, &model, &err) != ENG_OK ||
        prompt_builder_create(model, &vocabs[0].b, &err) != ENG_OK)
        die(path, &err);
    vocabs[0].m = model;
    vocabs[0].n_vocab = model->hp.n_vocab;
    fz_variant(&vocabs[1], false);
    fz_variant(&vocabs[2], true);
    fz_tiny(&vocabs[3], false);
    fz_tiny(&vocabs[4], true);
    return 0;
}

/* Splits the input at 0x00 bytes into up to n NUL-terminated fields (copies). */
static size_t split(const uint8_t *data, size_t size, char **f, size_t *len, size_t n)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= size && k < n; i++) {
        if (i == size || data[i] == 0) {
            len[k] = i - start;
            f[k] = malloc(len[k] + 1);
            memcpy(f[k], data + start, len[k]);
            f[k][len[k]] = 0;
            k++;
            start = i + 1;
        }
    }
    return k;
}

static void check_result(const fz_vocab *fv, const prompt_result *r, eng_status st)
{
    if (st != ENG_OK && st != ENG_ERR_INVALID && st != ENG_ERR_UNSUPPORTED)
        abort();
    if (st != ENG_OK)
        return;
    for (size_t i = 0; i < r->n_tokens; i++)
        if (r->tokens[i] < 0 || r->tokens[i] >= fv->n_vocab)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const fz_vocab *fv = &vocabs[data[0] % N_VOCABS];
    uint8_t mode = data[1];
    char *f[8] = {0};
    size_t len[8] = {0};
    size_t n = split(data + 2, size - 2, f, len, 8);
    eng_err err;
    prompt_result r;
    memset(&r, 0, sizeof r);
    if (mode & 1) { /* chat: fields are alternating role, content */
        prompt_chat_message msgs[4];
        size_t m = 0;
        for (size_t i = 0; i + 1 < n && m < 4; i += 2)
            msgs[m++] = (prompt_chat_message){.role = f[i], .content = f[i + 1]};
        check_result(fv, &r, prompt_build_chat(fv->b, msgs, m, &r, &err));
    } else {
        prompt_snippet sn[2] = {{.filepath = n > 4 ? f[4] : NULL, .body = n > 5 ? f[5] : ""},
                                {.filepath = NULL, .body = n > 6 ? f[6] : ""}};
        prompt_completion_input in = {
            .language = n > 0 && len[0] ? f[0] : NULL,
            .prefix = n > 1 ? f[1] : "",
            .prefix_len = n > 1 ? len[1] : 0,
            .suffix = n > 2 ? f[2] : NULL,
            .suffix_len = n > 2 ? len[2] : 0,
            .declarations = sn,
            .n_declarations = (mode >> 1) & 1,
            .recent = sn + 1,
            .n_recent = (mode >> 2) & 1,
            .snippet_budget = (size_t)(mode >> 3) * 16,
            .max_prefix_tokens = 1 + (mode >> 4) * 8,
            .max_suffix_tokens = 1 + (mode & 0x0f) * 4,
        };
        check_result(fv, &r, prompt_build_completion(fv->b, &in, &r, &err));
        prompt_result_clear(&r);
        check_result(fv, &r, prompt_build_raw(fv->b, in.prefix, in.prefix_len, mode & 2,
                                              in.language, &r, &err));
    }
    prompt_result_clear(&r);
    for (size_t i = 0; i < n; i++)
        free(f[i]);
    return 0;
}
