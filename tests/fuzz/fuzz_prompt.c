/* fuzz_prompt.c — libFuzzer target: the Tabby prompt builder and chat rendering on arbitrary
 * request fields (prefix, suffix, language, snippets, message contents are what IDE clients
 * send). Must never crash or leak, must return ENG_OK or ENG_ERR_INVALID, and every token id
 * of a built prompt must be in the vocabulary. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "prompt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static eng_model *model;
static prompt_builder *builder;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *env = getenv("SERVAL_MODEL");
    const char *path = env && *env ? env : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    eng_err err = {{0}};
    if (eng_model_load(path, &model, &err) != ENG_OK ||
        prompt_builder_create(model, &builder, &err) != ENG_OK) {
        fprintf(stderr, "fuzz_prompt: %s: %s\n", path, err.msg);
        exit(1);
    }
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

static void check_result(const prompt_result *r, eng_status st)
{
    if (st != ENG_OK && st != ENG_ERR_INVALID && st != ENG_ERR_UNSUPPORTED)
        abort();
    if (st != ENG_OK)
        return;
    for (size_t i = 0; i < r->n_tokens; i++)
        if (r->tokens[i] < 0 || r->tokens[i] >= model->hp.n_vocab)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    char *f[8] = {0};
    size_t len[8] = {0};
    size_t n = split(data + 1, size - 1, f, len, 8);
    eng_err err;
    prompt_result r;
    memset(&r, 0, sizeof r);
    if (mode & 1) { /* chat: fields are alternating role, content */
        prompt_chat_message msgs[4];
        size_t m = 0;
        for (size_t i = 0; i + 1 < n && m < 4; i += 2)
            msgs[m++] = (prompt_chat_message){.role = f[i], .content = f[i + 1]};
        check_result(&r, prompt_build_chat(builder, msgs, m, &r, &err));
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
        check_result(&r, prompt_build_completion(builder, &in, &r, &err));
        prompt_result_clear(&r);
        check_result(&r, prompt_build_raw(builder, in.prefix, in.prefix_len, mode & 2,
                                          in.language, &r, &err));
    }
    prompt_result_clear(&r);
    for (size_t i = 0; i < n; i++)
        free(f[i]);
    return 0;
}
