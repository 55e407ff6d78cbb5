/* test_prompt_chat.c — chat templates against the real ones: every case of
 * tests/fixtures/prompt/chat_templates.jsonl (each family's real tokenizer.chat_template
 * rendered by Jinja through llama-cpp-python, tools/gen_prompt_fixtures.py) rendered by the
 * prompt builder byte for byte, with llama.cpp's token ids on the family vocabularies;
 * templates Serval does not render refused with a message that names them; the templates' own
 * rules (alternating roles, trimming, default system messages) kept. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "model.h"
#include "prompt.h"
#include "testutil.h"

typedef struct fixture {
    gguf_file *f;
    tok_vocab *v;
    eng_model m;
    prompt_builder *b;
} fixture;

/* Opens `path` as a model's vocabulary and builds its prompt builder; false (and the reason in
 * *err) when the tokenizer does not load it. */
static bool fx_try_open(fixture *x, const char *path, eng_err *err)
{
    memset(x, 0, sizeof *x);
    cr_assert_eq(gguf_open(path, &x->f, err), ENG_OK, "%s", err->msg);
    if (tok_vocab_from_gguf(x->f, &x->v, err) != ENG_OK) {
        gguf_free(x->f);
        return false;
    }
    x->m.gguf = x->f;
    x->m.vocab = x->v;
    cr_assert_eq(prompt_builder_create(&x->m, &x->b, err), ENG_OK, "%s", err->msg);
    return true;
}

static void fx_close(fixture *x)
{
    prompt_builder_free(x->b);
    tok_vocab_free(x->v);
    gguf_free(x->f);
}

typedef struct id_text {
    int64_t id;
    const char *text;
} id_text;

/* The default model's tokenizer (SmolLM2: bos 1, eos 2, add_bos false) with the tokens at the
 * given ids renamed (id -1 ends the list) and `template` as its chat template. */
static void fx_variant(fixture *x, const id_text *renames, const char *template, size_t tlen)
{
    gguf_file *src = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(tu_default_model(), &src, &err), ENG_OK, "%s", err.msg);
    gguf_arr toks;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", &toks, &err), ENG_OK);
    gguf_str *strs = calloc(toks.n, sizeof *strs);
    for (uint64_t i = 0; i < toks.n; i++)
        strs[i] = gguf_arr_str(src, &toks, i);
    for (size_t r = 0; renames && renames[r].id >= 0; r++)
        strs[renames[r].id] = (gguf_str){renames[r].text, strlen(renames[r].text)};
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, "tokenizer."), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, toks.n), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, "tokenizer.chat_template", template, tlen), ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(strs);
    gguf_free(src);
    cr_assert(fx_try_open(x, path, &err), "%s", err.msg);
    unlink(path);
    free(path);
}

static const char *jstr(const tu_json *o, const char *k)
{
    const tu_json *v = tu_json_get(o, k);
    return v && v->type == TU_JSON_STR ? v->str : NULL;
}

static prompt_chat_kind kind_of(const char *s)
{
    return !strcmp(s, "chatml") ? PROMPT_CHAT_CHATML : !strcmp(s, "llama2") ? PROMPT_CHAT_LLAMA2
         : !strcmp(s, "llama3") ? PROMPT_CHAT_LLAMA3 : !strcmp(s, "deepseek") ? PROMPT_CHAT_DEEPSEEK
                                                                             : PROMPT_CHAT_NONE;
}

/* The fixture's conversation as messages (pointers into c, which must outlive them). */
static size_t messages_of(const tu_json *c, prompt_chat_message *msgs, size_t cap)
{
    const tu_json *m = tu_json_get(c, "messages");
    cr_assert(m && m->type == TU_JSON_ARR && m->n <= cap);
    for (size_t i = 0; i < m->n; i++)
        msgs[i] = (prompt_chat_message){jstr(m->items[i], "role"), jstr(m->items[i], "content")};
    return m->n;
}

/* Renders case c with the builder of x: the kind detected, the text equal to Jinja's, and the
 * tokens decoding back to it (byte-level vocabularies decode exactly). */
static void check_case(fixture *x, const tu_json *c, bool decode_exact)
{
    const char *name = jstr(c, "name"), *kind = jstr(c, "kind");
    prompt_chat_message msgs[8];
    size_t n = messages_of(c, msgs, 8);
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_builder_chat(x->b), kind_of(kind), "%s: detected %s, expected %s", name,
                 prompt_chat_name(prompt_builder_chat(x->b)), kind);
    if (kind_of(kind) == PROMPT_CHAT_NONE) {
        cr_assert_eq(prompt_build_chat(x->b, msgs, n, &r, &err), ENG_ERR_UNSUPPORTED, "%s", name);
        cr_assert(strstr(err.msg, jstr(c, "refusal")), "%s: the refusal names the family: %s",
                  name, err.msg);
        cr_assert(strstr(err.msg, "chat template"), "%s", err.msg);
        return;
    }
    cr_assert_eq(prompt_build_chat(x->b, msgs, n, &r, &err), ENG_OK, "%s: %s", name, err.msg);
    cr_assert_str_eq(r.text, jstr(c, "jinja"), "%s (%zu messages)", name, n);
    if (decode_exact) {
        char buf[4096];
        size_t len;
        cr_assert_eq(tok_decode(x->v, r.tokens, r.n_tokens, buf, sizeof buf, &len), ENG_OK);
        cr_assert(len == r.text_len && !memcmp(buf, r.text, len), "%s: tokens decode to %.*s",
                  name, (int)len, buf);
    }
    prompt_result_clear(&r);
}

Test(prompt_chat, each_real_template_renders_as_jinja_does)
{
    size_t n_cases;
    tu_json **cases = tu_read_jsonl("tests/fixtures/prompt/chat_templates.jsonl", &n_cases);
    cr_assert(cases && n_cases >= 18, "fixture missing (tools/gen_prompt_fixtures.py)");
    for (size_t i = 0; i < n_cases; i++) {
        const tu_json *c = cases[i];
        const char *kind = jstr(c, "kind"), *tmpl = jstr(c, "template");
        const char *bos = jstr(c, "bos_token"), *eos = jstr(c, "eos_token");
        /* SmolLM2's bos (1) and eos (2) become the template's, plus what the template needs. */
        id_text ren[6] = {{-1, NULL}};
        size_t k = 0;
        if (kind_of(kind) != PROMPT_CHAT_CHATML) {
            ren[k++] = (id_text){1, *bos ? bos : "<bos-unused>"};
            ren[k++] = (id_text){2, eos};
        }
        if (kind_of(kind) == PROMPT_CHAT_LLAMA3) {
            ren[k++] = (id_text){3, "<|start_header_id|>"};
            ren[k++] = (id_text){4, "<|end_header_id|>"};
        }
        ren[k] = (id_text){-1, NULL};
        fixture x;
        fx_variant(&x, ren, tmpl, tu_json_get(c, "template")->str_len);
        check_case(&x, c, true);
        fx_close(&x);
        tu_json_free(cases[i]);
    }
    free(cases);
}

Test(prompt_chat, family_vocabularies_give_llama_cpps_token_ids)
{
    size_t n_cases, n_checked = 0;
    tu_json **cases = tu_read_jsonl("tests/fixtures/prompt/chat_templates.jsonl", &n_cases);
    cr_assert(cases);
    for (size_t i = 0; i < n_cases; i++) {
        const tu_json *c = cases[i], *ids = tu_json_get(c, "ids");
        if (!ids) {
            tu_json_free(cases[i]);
            continue;
        }
        char rel[128];
        snprintf(rel, sizeof rel, "tests/fixtures/vocab/%s", jstr(c, "vocab"));
        char *path = tu_source_path(rel);
        fixture x;
        eng_err err = {{0}};
        cr_assert(fx_try_open(&x, path, &err), "%s: %s", rel, err.msg);
        check_case(&x, c, false);
        prompt_chat_message msgs[8];
        size_t n = messages_of(c, msgs, 8);
        prompt_result r;
        cr_assert_eq(prompt_build_chat(x.b, msgs, n, &r, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(r.n_tokens, ids->n, "%s: %zu tokens, llama.cpp %zu", jstr(c, "name"),
                     r.n_tokens, ids->n);
        for (size_t t = 0; t < ids->n; t++)
            cr_assert_eq(r.tokens[t], (int32_t)ids->items[t]->num,
                         "%s: token %zu: %d, llama.cpp %d", jstr(c, "name"), t, r.tokens[t],
                         (int32_t)ids->items[t]->num);
        prompt_result_clear(&r);
        fx_close(&x);
        free(path);
        n_checked++;
        tu_json_free(cases[i]);
    }
    free(cases);
    cr_assert_eq(n_checked, 6, "Qwen2.5-Coder, CodeLlama and DeepSeek-Coder, two each");
}

/* A one-template variant for the rule tests below. */
static void fx_llama2(fixture *x)
{
    static const id_text ren[] = {{1, "<s>"}, {2, "</s>"}, {-1, NULL}};
    static const char t[] =
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
        "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
        "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
        "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 "
        "== 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] "
        "%}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content | trim "
        "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content | trim + ' ' + "
        "eos_token }}{% endif %}{% endfor %}";
    fx_variant(x, ren, t, sizeof t - 1);
}

Test(prompt_chat, llama2_keeps_the_templates_rules)
{
    fixture x;
    fx_llama2(&x);
    prompt_result r;
    eng_err err = {{0}};
    /* Roles must alternate: the real template raises, Serval refuses. */
    prompt_chat_message twice[] = {{"user", "a"}, {"user", "b"}};
    cr_assert_eq(prompt_build_chat(x.b, twice, 2, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "alternate") && strstr(err.msg, "messages[1]"), "%s", err.msg);
    prompt_chat_message late_sys[] = {{"user", "a"}, {"assistant", "b"}, {"system", "c"}};
    cr_assert_eq(prompt_build_chat(x.b, late_sys, 3, &r, &err), ENG_ERR_INVALID, "%s", err.msg);
    /* A system message alone renders nothing: refused, not an empty prompt. */
    prompt_chat_message sys_only[] = {{"system", "be brief"}};
    cr_assert_eq(prompt_build_chat(x.b, sys_only, 1, &r, &err), ENG_ERR_INVALID);
    /* Trimming is Jinja's (Python's strip): Unicode spaces too, and an empty user turn
     * after the system block trims the block's own trailing newlines, as Jinja does. */
    prompt_chat_message ws[] = {{"user", "\xE3\x80\x80\t hi \xC2\xA0\r\n"}};
    cr_assert_eq(prompt_build_chat(x.b, ws, 1, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<s>[INST] hi [/INST]");
    cr_assert_eq(r.tokens[0], 1, "BOS as its id");
    prompt_result_clear(&r);
    prompt_chat_message empty[] = {{"system", "S"}, {"user", " "}};
    cr_assert_eq(prompt_build_chat(x.b, empty, 2, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<s>[INST] <<SYS>>\nS\n<</SYS>> [/INST]");
    prompt_result_clear(&r);
    /* EOS closes each answer as its id; text that spells it is text. */
    prompt_chat_message conv[] = {{"user", "</s>"}, {"assistant", "ok"}, {"user", "more"}};
    cr_assert_eq(prompt_build_chat(x.b, conv, 3, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<s>[INST] </s> [/INST] ok </s><s>[INST] more [/INST]");
    size_t n_bos = 0, n_eos = 0;
    for (size_t i = 0; i < r.n_tokens; i++)
        n_bos += r.tokens[i] == 1, n_eos += r.tokens[i] == 2;
    cr_assert_eq(n_bos, 2);
    cr_assert_eq(n_eos, 1, "the user's '</s>' stays text");
    prompt_result_clear(&r);
    fx_close(&x);
}

Test(prompt_chat, deepseek_default_system_and_eot)
{
    static const id_text ren[] = {{1, "<\xEF\xBD\x9C" "begin\xE2\x96\x81" "of\xE2\x96\x81"
                                      "sentence\xEF\xBD\x9C>"},
                                  {2, "<|EOT|>"}, {-1, NULL}};
    static const char t[] =
        "{{bos_token}}{%- if not ns.found -%}\n{{'Be \\'exact\\'.\\n'}}\n{%- endif %}"
        "{{'### Instruction:\\n' + message['content'] + '\\n'}}{{'### Response:\\n' + "
        "message['content'] + '\\n<|EOT|>\\n'}}";
    fixture x;
    fx_variant(&x, ren, t, sizeof t - 1);
    cr_assert_eq(prompt_builder_chat(x.b), PROMPT_CHAT_DEEPSEEK);
    prompt_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "Yo"}, {"user", "More"}};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_chat(x.b, msgs, 3, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<\xEF\xBD\x9C" "begin\xE2\x96\x81" "of\xE2\x96\x81" "sentence"
                             "\xEF\xBD\x9C>Be 'exact'.\n### Instruction:\nHi\n### Response:\nYo\n"
                             "<|EOT|>\n### Instruction:\nMore\n### Response:\n");
    cr_assert_eq(r.tokens[0], 1);
    size_t n_eot = 0;
    for (size_t i = 0; i < r.n_tokens; i++)
        n_eot += r.tokens[i] == 2;
    cr_assert_eq(n_eot, 1);
    bool stop = false;
    for (size_t i = 0; i < r.n_stops; i++)
        stop |= !strcmp(r.stops[i], "<|EOT|>");
    cr_assert(stop, "<|EOT|> ends an answer");
    prompt_result_clear(&r);
    fx_close(&x);
}

Test(prompt_chat, a_template_whose_tokens_are_missing_is_refused_naming_the_token)
{
    static const char t[] = "{{ '<|start_header_id|>' }}{{ '<|end_header_id|>' }}";
    fixture x;
    fx_variant(&x, NULL, t, sizeof t - 1);
    cr_assert_eq(prompt_builder_chat(x.b), PROMPT_CHAT_NONE);
    prompt_chat_message msgs[] = {{"user", "Hi"}};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_chat(x.b, msgs, 1, &r, &err), ENG_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "Llama-3") && strstr(err.msg, "<|start_header_id|>"), "%s", err.msg);
    fx_close(&x);

    static const char odd[] = "{% for m in messages %}>> {{ m.content }}\n{% endfor %}";
    fx_variant(&x, NULL, odd, sizeof odd - 1);
    cr_assert_eq(prompt_build_chat(x.b, msgs, 1, &r, &err), ENG_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "{% for m in messages %}>>"), "quotes the template: %s", err.msg);
    fx_close(&x);
}
