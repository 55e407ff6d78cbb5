/* fuzz_tokenizer.c — libFuzzer target: tok_encode on arbitrary bytes with every pre-tokenizer,
 * with and without special tokens; decoding must give the input back byte for byte (less the
 * bytes the vocabulary has no token for), and a short buffer must report the same count. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first input byte picks one of these (the default model with tokenizer.ggml.pre replaced). */
static const char *const pres[] = {"smollm", "qwen2", "llama-bpe", "gpt-2", "default"};
#define N_PRES (sizeof pres / sizeof pres[0])
static tok_vocab *vocabs[N_PRES];

static void die(const char *what, const eng_err *err)
{
    fprintf(stderr, "fuzz_tokenizer: %s: %s\n", what, err->msg);
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *env = getenv("SERVAL_MODEL");
    const char *path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    eng_err err = {{0}};
    gguf_file *src = NULL;
    if (gguf_open(path, &src, &err) != ENG_OK)
        die(path, &err);
    for (size_t i = 0; i < N_PRES; i++) {
        gguf_writer *w = gguf_writer_create();
        char tmp[] = "/tmp/fuzz-tokenizer-XXXXXX";
        int fd = mkstemp(tmp);
        if (!w || fd < 0)
            die("temp vocab", &err);
        close(fd);
        if (gguf_writer_copy_kv(w, src, "tokenizer.") != ENG_OK ||
            gguf_writer_set_str(w, "tokenizer.ggml.pre", pres[i], strlen(pres[i])) != ENG_OK ||
            gguf_writer_write(w, tmp, &err) != ENG_OK)
            die("writing a vocab copy", &err);
        gguf_writer_free(w);
        gguf_file *f = NULL;
        if (gguf_open(tmp, &f, &err) != ENG_OK || tok_vocab_from_gguf(f, &vocabs[i], &err) != ENG_OK)
            die(pres[i], &err);
        gguf_free(f);
        unlink(tmp);
    }
    gguf_free(src);
    return 0;
}

static void check(const tok_vocab *v, const uint8_t *text, size_t len, bool special)
{
    size_t cap = len + 1, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (tok_encode(v, (const char *)text, len, special, ids, cap, &n) != ENG_OK || n > len)
        abort(); /* never more ids than bytes */
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(v))
            abort();

    /* decode(encode(x)) == x without the bytes that have no token */
    char *back = malloc(len + 1);
    size_t back_len = 0, want_len = 0;
    uint8_t *want = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        if (tok_byte_encodable(v, text[i]))
            want[want_len++] = text[i];
    if (tok_decode(v, ids, n, back, len + 1, &back_len) != ENG_OK || back_len != want_len ||
        memcmp(back, want, want_len) != 0) {
        fprintf(stderr, "round trip failed (parse_special %d): %zu bytes in, %zu back\n", special,
                want_len, back_len);
        abort();
    }

    /* too little room: the same count, and the ids that fit are the same */
    if (n > 1) {
        size_t n2 = 0;
        int32_t *part = malloc((n / 2) * sizeof *part);
        if (tok_encode(v, (const char *)text, len, special, part, n / 2, &n2) != ENG_ERR_INVALID ||
            n2 != n || memcmp(part, ids, (n / 2) * sizeof *part) != 0)
            abort();
        free(part);
    }
    free(want);
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const tok_vocab *v = vocabs[data[0] % N_PRES];
    check(v, data + 1, size - 1, false);
    check(v, data + 1, size - 1, true);
    return 0;
}
