/* prompt_chat.c — chat prompts: recognises the model's chat template (ChatML, Llama-2 [INST],
 * Llama-3, DeepSeek-Coder) by the markers of the real templates, with a template's default
 * system message, and renders messages as that template renders them. A template that is none
 * of these is refused with a message that names what was found, never rendered wrongly.
 *
 * Tokens follow the rendered text the way llama.cpp tokenizes it with special tokens parsed:
 * the template's special tokens become their ids, and each run of text between two of them is
 * tokenized as one piece (user text is never parsed for special tokens). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt_impl.h"
#include "utf8.h"

/* ---- detection -------------------------------------------------------------------------- */

/* Undoes a Jinja string literal's escapes (\n, \t, \\, \', \") in s[0 .. n). Returns a
 * malloc'd NUL-terminated string owned by the caller, or NULL on OOM. */
static char *unescape_literal(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            o[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
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
            if (literal)
                return unescape_literal(p, (size_t)(e - p));
        }
    }
    return NULL;
}

/* DeepSeek-Coder's template prints its default system message when no message is a system
 * one: `{%- if not ns.found -%}{{'You are an AI programming assistant, ...\n'}}`. */
static char *deepseek_default_system(const char *t, size_t n)
{
    const char *end = t + n, *p = memmem(t, n, "not ns.found", 12);
    if (!p)
        return NULL;
    const char *open = memmem(p, (size_t)(end - p), "{{", 2);
    const char *close = open ? memmem(open, (size_t)(end - open), "}}", 2) : NULL;
    if (!close)
        return NULL;
    const char *q = open + 2;
    while (q < close && (*q == ' ' || *q == '-'))
        q++;
    if (q == close || (*q != '\'' && *q != '"'))
        return NULL;
    char quote = *q++;
    const char *s = q;
    while (q < close && *q != quote)
        q += *q == '\\' ? 2 : 1;
    if (q >= close)
        return NULL;
    return unescape_literal(s, (size_t)(q - s));
}

static bool has(const gguf_str *t, const char *marker)
{
    return memmem(t->ptr, (size_t)t->len, marker, strlen(marker)) != NULL;
}

static const char *const KNOWN =
    "Serval renders ChatML ('<|im_start|>'), Llama-2 ('[INST]' with '<<SYS>>'), Llama-3 "
    "('<|start_header_id|>') and DeepSeek-Coder ('### Instruction:' with '<|EOT|>') templates";

/* What an unrenderable template looks like, by the markers llama.cpp's template detection
 * (llm_chat_detect_template) uses for other families; NULL when nothing is recognised. */
static const char *other_family(const gguf_str *t)
{
    static const struct { const char *marker, *family; } fams[] = {
        {"<|im_sep|>", "Phi-4 ('<|im_sep|>')"},
        {"[SYSTEM_PROMPT]", "Mistral v7 ('[SYSTEM_PROMPT]')"},
        {"[AVAILABLE_TOOLS]", "Mistral v3 ('[AVAILABLE_TOOLS]')"},
        {"[INST]", "Mistral ('[INST]' without Llama-2's '<<SYS>>' block)"},
        {"<start_of_turn>", "Gemma ('<start_of_turn>')"},
        {"<|START_OF_TURN_TOKEN|>", "Command-R ('<|START_OF_TURN_TOKEN|>')"},
        {"<\xEF\xBD\x9C" "User\xEF\xBD\x9C>", "DeepSeek-V3 ('<\xEF\xBD\x9C" "User\xEF\xBD\x9C>')"},
        {"'Assistant: ' + message['content'] + eos_token", "DeepSeek-V2 ('Assistant: ')"},
        {"<|assistant|>", "Phi-3 / Zephyr / GLM ('<|assistant|>')"},
        {"GPT4 Correct ", "OpenChat ('GPT4 Correct ')"},
        {"USER: ", "Vicuna ('USER: ')"},
        {"[gMASK]", "ChatGLM ('[gMASK]')"},
        {"<|start_of_role|>", "Granite ('<|start_of_role|>')"},
    };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++)
        if (has(t, fams[i].marker))
            return fams[i].family;
    return NULL;
}

static void refuse(prompt_builder *b, const gguf_str *t, const char *what)
{
    if (what) {
        snprintf(b->chat_error, sizeof b->chat_error,
                 "the model's chat template looks like %s, which Serval does not render (%s)",
                 what, KNOWN);
        return;
    }
    /* Unrecognised: quote its beginning, newlines shown as \n, so the user can tell which. */
    char head[56];
    size_t k = 0;
    for (uint64_t i = 0; i < t->len && k + 3 < sizeof head; i++) {
        unsigned char c = (unsigned char)t->ptr[i];
        if (c == '\n')
            head[k++] = '\\', head[k++] = 'n';
        else if (c >= 0x20 && c < 0x7F)
            head[k++] = (char)c;
        else
            head[k++] = '?';
    }
    head[k] = 0;
    snprintf(b->chat_error, sizeof b->chat_error,
             "the model's chat template is not one Serval recognises (it begins \"%s\"%s); %s",
             head, t->len > k ? "..." : "", KNOWN);
}

/* Whether the vocabulary has every token the template writes; explains when not. */
static bool tokens_present(prompt_builder *b, const char *family, const char *const *texts)
{
    for (size_t i = 0; texts[i]; i++)
        if (tok_find(b->vocab, texts[i]) < 0) {
            snprintf(b->chat_error, sizeof b->chat_error,
                     "the model's chat template is %s, but its vocabulary has no '%s' token",
                     family, texts[i]);
            return false;
        }
    return true;
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
    const tok_vocab *v = b->vocab;
    if (has(&t, "<|im_start|>") && !has(&t, "<|im_sep|>")) {
        static const char *const need[] = {"<|im_start|>", "<|im_end|>", NULL};
        if (!tokens_present(b, "ChatML", need))
            return;
        b->chat = PROMPT_CHAT_CHATML;
        b->default_system = chatml_default_system(t.ptr, (size_t)t.len);
    } else if (has(&t, "[INST]") && has(&t, "[/INST]") && has(&t, "<<SYS>>") &&
               !has(&t, "[SYSTEM_PROMPT]") && !has(&t, "[AVAILABLE_TOOLS]")) {
        if (tok_bos(v) < 0 || tok_eos(v) < 0) {
            snprintf(b->chat_error, sizeof b->chat_error,
                     "the model's chat template is Llama-2 '[INST]', which writes BOS and EOS "
                     "tokens, but its vocabulary names no %s token",
                     tok_bos(v) < 0 ? "BOS" : "EOS");
            return;
        }
        b->chat = PROMPT_CHAT_LLAMA2;
    } else if (has(&t, "### Instruction:") && has(&t, "### Response:") && has(&t, "<|EOT|>")) {
        static const char *const need[] = {"<|EOT|>", NULL};
        if (!tokens_present(b, "DeepSeek-Coder's '### Instruction:'", need))
            return;
        b->chat = PROMPT_CHAT_DEEPSEEK;
        b->default_system = deepseek_default_system(t.ptr, (size_t)t.len);
    } else if (has(&t, "<|start_header_id|>") && has(&t, "<|end_header_id|>")) {
        if (has(&t, "Cutting Knowledge Date")) {
            refuse(b, &t, "Llama-3.1 or later (its system turn carries 'Cutting Knowledge Date' "
                          "and a date)");
            return;
        }
        static const char *const need[] = {"<|start_header_id|>", "<|end_header_id|>",
                                           "<|eot_id|>", NULL};
        if (!tokens_present(b, "Llama-3", need))
            return;
        b->chat = PROMPT_CHAT_LLAMA3;
    } else {
        refuse(b, &t, other_family(&t));
    }
}

/* ---- rendering -------------------------------------------------------------------------- */

/* The rendered prompt as a run of text between special tokens: text accumulates in frag and
 * is tokenized as one piece when a special token (or the end) closes it. The first error
 * sticks in st; later calls do nothing. */
typedef struct chat_w {
    prompt_out *p;
    prompt_str frag;
    eng_status st;
    eng_err *err;
} chat_w;

static void cw_text(chat_w *w, const char *s, size_t n) { prompt_str_put(&w->frag, s, n); }
static void cw_str(chat_w *w, const char *s) { prompt_str_put(&w->frag, s, strlen(s)); }

static void cw_flush(chat_w *w)
{
    if (w->st != ENG_OK) {
        free(w->frag.buf);
        w->frag = (prompt_str){0};
        return;
    }
    w->st = prompt_out_str(w->p, &w->frag, w->err);
}

static void cw_special(chat_w *w, int32_t id)
{
    cw_flush(w);
    if (w->st == ENG_OK)
        prompt_out_special(w->p, id);
}

/* Decodes the code point starting at s[i] (valid UTF-8 assumed); *len gets its bytes. */
static uint32_t cp_at(const unsigned char *s, size_t i, size_t *len)
{
    unsigned char c = s[i];
    if (c < 0x80)
        return *len = 1, c;
    if (c < 0xE0)
        return *len = 2, ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
    if (c < 0xF0)
        return *len = 3, ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) |
                             (s[i + 2] & 0x3F);
    return *len = 4, ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
                         ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
}

/* Python's str.isspace(), which Jinja's trim filter (str.strip) uses. */
static bool py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Jinja's `| trim` (Python's strip()) of valid UTF-8 s[0 .. *n): moves *s and shrinks *n. */
static void py_trim(const char **s, size_t *n)
{
    const unsigned char *u = (const unsigned char *)*s;
    size_t from = 0, to = *n, len;
    while (from < to && py_space(cp_at(u, from, &len)))
        from += len;
    while (to > from) {
        size_t start = to - 1;
        while (start > from && (u[start] & 0xC0) == 0x80)
            start--;
        if (!py_space(cp_at(u, start, &len)))
            break;
        to = start;
    }
    *s += from;
    *n = to - from;
}

/* <|im_start|>role\ncontent<|im_end|>\n per message (after the template's default system
 * message when the conversation has none), then <|im_start|>assistant\n. */
static void render_chatml(const prompt_builder *b, chat_w *w, const prompt_chat_message *msgs,
                          size_t n)
{
    int32_t start = tok_find(b->vocab, "<|im_start|>"), end = tok_find(b->vocab, "<|im_end|>");
    prompt_out_bos(w->p);
    if (b->default_system && strcmp(msgs[0].role, "system") != 0) {
        cw_special(w, start);
        cw_str(w, "system\n");
        cw_str(w, b->default_system);
        cw_special(w, end);
        cw_str(w, "\n");
    }
    for (size_t i = 0; i <= n; i++) {
        cw_special(w, start);
        cw_str(w, i < n ? msgs[i].role : "assistant");
        cw_str(w, "\n");
        if (i < n) {
            cw_str(w, msgs[i].content);
            cw_special(w, end);
            cw_str(w, "\n");
        }
    }
}

/* <|begin_of_text|>, then <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> per
 * message (content trimmed), then the assistant's header. */
static void render_llama3(const prompt_builder *b, chat_w *w, const prompt_chat_message *msgs,
                          size_t n)
{
    int32_t hs = tok_find(b->vocab, "<|start_header_id|>");
    int32_t he = tok_find(b->vocab, "<|end_header_id|>"), eot = tok_find(b->vocab, "<|eot_id|>");
    int32_t bot = tok_find(b->vocab, "<|begin_of_text|>");
    if (bot >= 0)
        cw_special(w, bot);
    else
        prompt_out_bos(w->p);
    for (size_t i = 0; i <= n; i++) {
        cw_special(w, hs);
        cw_str(w, i < n ? msgs[i].role : "assistant");
        cw_special(w, he);
        cw_str(w, "\n\n");
        if (i < n) {
            const char *c = msgs[i].content;
            size_t cl = strlen(c);
            py_trim(&c, &cl);
            cw_text(w, c, cl);
            cw_special(w, eot);
        }
    }
}

/* Llama-2-chat / CodeLlama-Instruct: an optional first system message goes into the first
 * user turn as <<SYS>>\n...\n<</SYS>>\n\n; then roles must alternate user, assistant, ...;
 * each user turn is BOS "[INST] " content " [/INST]", each answer " " content " " EOS
 * (content trimmed); other roles print nothing. No generation prompt: the model answers
 * after [/INST]. */
static void render_llama2(const prompt_builder *b, chat_w *w, const prompt_chat_message *msgs,
                          size_t n)
{
    size_t first = 0;
    const char *sys = NULL;
    if (strcmp(msgs[0].role, "system") == 0)
        sys = msgs[0].content, first = 1;
    for (size_t i = first; i < n && w->st == ENG_OK; i++) {
        bool user = strcmp(msgs[i].role, "user") == 0;
        if (user != ((i - first) % 2 == 0)) {
            w->st = eng_fail(w->err, ENG_ERR_INVALID,
                             "messages[%zu]: the model's chat template (Llama-2 [INST]) needs "
                             "roles to alternate user/assistant/user/... after an optional "
                             "first system message", i);
            return;
        }
        prompt_str c = {0};
        if (i == first && sys) {
            prompt_str_put(&c, "<<SYS>>\n", 8);
            prompt_str_put(&c, sys, strlen(sys));
            prompt_str_put(&c, "\n<</SYS>>\n\n", 11);
        }
        prompt_str_put(&c, msgs[i].content, strlen(msgs[i].content));
        const char *s = c.buf ? c.buf : "";
        size_t sl = c.len;
        py_trim(&s, &sl);
        if (c.oom)
            w->frag.oom = true;
        if (user) {
            cw_special(w, tok_bos(b->vocab));
            cw_str(w, "[INST] ");
            cw_text(w, s, sl);
            cw_str(w, " [/INST]");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            cw_str(w, " ");
            cw_text(w, s, sl);
            cw_str(w, " ");
            cw_special(w, tok_eos(b->vocab));
        }
        free(c.buf);
    }
}

/* DeepSeek-Coder-Instruct: BOS, the template's default system text when no message is a
 * system one, then system content as is, "### Instruction:\n" user "\n", and for any other
 * role "### Response:\n" content "\n" <|EOT|> "\n"; then "### Response:\n". */
static void render_deepseek(const prompt_builder *b, chat_w *w, const prompt_chat_message *msgs,
                            size_t n)
{
    int32_t eot = tok_find(b->vocab, "<|EOT|>");
    bool any_system = false;
    for (size_t i = 0; i < n; i++)
        any_system |= strcmp(msgs[i].role, "system") == 0;
    if (tok_bos(b->vocab) >= 0)
        cw_special(w, tok_bos(b->vocab));
    if (!any_system && b->default_system)
        cw_str(w, b->default_system);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system") == 0) {
            cw_str(w, msgs[i].content);
        } else if (strcmp(msgs[i].role, "user") == 0) {
            cw_str(w, "### Instruction:\n");
            cw_str(w, msgs[i].content);
            cw_str(w, "\n");
        } else {
            cw_str(w, "### Response:\n");
            cw_str(w, msgs[i].content);
            cw_str(w, "\n");
            cw_special(w, eot);
            cw_str(w, "\n");
        }
    }
    cw_str(w, "### Response:\n");
}

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
        if (!eng_utf8_valid(msgs[i].content, strlen(msgs[i].content), NULL))
            return eng_fail(err, ENG_ERR_INVALID, "messages[%zu].content is not valid UTF-8", i);
    }
    prompt_out p = {.v = b->vocab, .r = out};
    chat_w w = {.p = &p, .st = ENG_OK, .err = err};
    switch (b->chat) {
    case PROMPT_CHAT_CHATML: render_chatml(b, &w, msgs, n); break;
    case PROMPT_CHAT_LLAMA3: render_llama3(b, &w, msgs, n); break;
    case PROMPT_CHAT_LLAMA2: render_llama2(b, &w, msgs, n); break;
    case PROMPT_CHAT_DEEPSEEK: render_deepseek(b, &w, msgs, n); break;
    default: break;
    }
    cw_flush(&w);
    eng_status st = w.st;
    bool oom = false;
    if (st != ENG_OK)
        goto fail;
    if (out->n_tokens == 0) {
        st = eng_fail(err, ENG_ERR_INVALID, "the conversation renders to nothing: it needs a "
                                            "user message");
        goto fail;
    }
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
