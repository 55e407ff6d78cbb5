/* prompt_chat.c — chat prompts: recognises the model's chat template (ChatML or Llama-3, and
 * a ChatML template's default system message) and renders messages with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"
#include "utf8.h"

/* ---- detection -------------------------------------------------------------------------- */

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

void prompt_chat_detect(prompt_builder *b)
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

/* ---- rendering -------------------------------------------------------------------------- */

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

/* <|im_start|>role\ncontent<|im_end|>\n per message (after the template's default system
 * message when the conversation has none), then <|im_start|>assistant\n. */
static eng_status render_chatml(const prompt_builder *b, prompt_out *p,
                                const prompt_chat_message *msgs, size_t n, eng_err *err)
{
    eng_status st;
    int32_t start = tok_find(b->vocab, "<|im_start|>"), end = tok_find(b->vocab, "<|im_end|>");
    prompt_out_bos(p);
    if (b->default_system && strcmp(msgs[0].role, "system") != 0) {
        prompt_out_special(p, start);
        if ((st = prompt_out_plain(p, "system\n", 7, err)) != ENG_OK ||
            (st = prompt_out_plain(p, b->default_system, strlen(b->default_system), err)) != ENG_OK)
            return st;
        prompt_out_special(p, end);
        if ((st = prompt_out_plain(p, "\n", 1, err)) != ENG_OK)
            return st;
    }
    for (size_t i = 0; i <= n; i++) {
        const char *role = i < n ? msgs[i].role : "assistant";
        prompt_out_special(p, start);
        prompt_str t = {0};
        prompt_str_put(&t, role, strlen(role));
        prompt_str_put(&t, "\n", 1);
        if (i < n)
            prompt_str_put(&t, msgs[i].content, strlen(msgs[i].content));
        if ((st = prompt_out_str(p, &t, err)) != ENG_OK)
            return st;
        if (i < n) {
            prompt_out_special(p, end);
            if ((st = prompt_out_plain(p, "\n", 1, err)) != ENG_OK)
                return st;
        }
    }
    return ENG_OK;
}

/* <|begin_of_text|>, then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> per
 * message (content trimmed of spaces, tabs and newlines), then the assistant's header. */
static eng_status render_llama3(const prompt_builder *b, prompt_out *p,
                                const prompt_chat_message *msgs, size_t n, eng_err *err)
{
    eng_status st;
    int32_t hs = tok_find(b->vocab, "<|start_header_id|>");
    int32_t he = tok_find(b->vocab, "<|end_header_id|>"), eot = tok_find(b->vocab, "<|eot_id|>");
    int32_t bot = tok_find(b->vocab, "<|begin_of_text|>");
    if (bot >= 0)
        prompt_out_special(p, bot);
    else
        prompt_out_bos(p);
    for (size_t i = 0; i <= n; i++) {
        const char *role = i < n ? msgs[i].role : "assistant";
        prompt_out_special(p, hs);
        if ((st = prompt_out_plain(p, role, strlen(role), err)) != ENG_OK)
            return st;
        prompt_out_special(p, he);
        prompt_str t = {0};
        prompt_str_put(&t, "\n\n", 2);
        if (i < n) {
            const char *c = msgs[i].content;
            size_t cl = strlen(c);
            while (cl && (*c == ' ' || *c == '\n' || *c == '\t'))
                c++, cl--;
            while (cl && (c[cl - 1] == ' ' || c[cl - 1] == '\n' || c[cl - 1] == '\t'))
                cl--;
            prompt_str_put(&t, c, cl);
        }
        if ((st = prompt_out_str(p, &t, err)) != ENG_OK)
            return st;
        if (i < n)
            prompt_out_special(p, eot);
    }
    return ENG_OK;
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
        if (!eng_utf8_valid(msgs[i].content, strlen(msgs[i].content), NULL))
            return eng_fail(err, ENG_ERR_INVALID, "messages[%zu].content is not valid UTF-8", i);
    }
    prompt_out p = {.v = b->vocab, .r = out};
    bool oom = false;
    eng_status st = b->chat == PROMPT_CHAT_CHATML ? render_chatml(b, &p, msgs, n, err)
                                                  : render_llama3(b, &p, msgs, n, err);
    if (st != ENG_OK)
        goto fail;
    out->stops = calloc(PROMPT_MAX_STOPS, sizeof *out->stops);
    if (!out->stops)
        oom = true;
    else
        for (size_t i = 0; i < b->n_stops; i++)
            prompt_stop_add(out, b->stops[i], NULL, &oom);
    if (p.oom || oom) {
        st = eng_fail(err, ENG_ERR_NOMEM, "prompt: out of memory");
        goto fail;
    }
    return ENG_OK;
fail:
    prompt_result_clear(out);
    return st;
}
