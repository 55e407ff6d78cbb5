/* test_prompt.c — the prompt builder on the default model and on variants of its vocabulary
 * (FIM families, chat templates): templates, snippets, budgets, stop words, CRLF, chat. */
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

static void fx_open(fixture *x, const char *path)
{
    eng_err err = {{0}};
    memset(x, 0, sizeof *x);
    cr_assert_eq(gguf_open(path, &x->f, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(tok_vocab_from_gguf(x->f, &x->v, &err), ENG_OK, "%s", err.msg);
    x->m.gguf = x->f;
    x->m.vocab = x->v;
    cr_assert_eq(prompt_builder_create(&x->m, &x->b, &err), ENG_OK, "%s", err.msg);
}

static void fx_close(fixture *x)
{
    prompt_builder_free(x->b);
    tok_vocab_free(x->v);
    gguf_free(x->f);
}

/* The default model's tokenizer with some token texts renamed (pairs old, new; NULL ends)
 * and, when template is non-NULL, another chat template. */
static void fx_variant(fixture *x, const char *const *renames, const char *template)
{
    gguf_file *src = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(tu_default_model(), &src, &err), ENG_OK, "%s", err.msg);
    gguf_arr toks;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", &toks, &err), ENG_OK);
    gguf_str *strs = calloc(toks.n, sizeof *strs);
    for (uint64_t i = 0; i < toks.n; i++) {
        strs[i] = gguf_arr_str(src, &toks, i);
        for (size_t r = 0; renames && renames[r]; r += 2)
            if (gguf_str_eq(strs[i], renames[r]))
                strs[i] = (gguf_str){renames[r + 1], strlen(renames[r + 1])};
    }
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, "tokenizer."), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, toks.n), ENG_OK);
    if (template)
        cr_assert_eq(gguf_writer_set_str(w, "tokenizer.chat_template", template, strlen(template)),
                     ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(strs);
    gguf_free(src);
    fx_open(x, path);
    unlink(path);
    free(path);
}

/* SmolLM2-Instruct has no FIM tokens (its StarCoder FIM ids became <|im_start|>...): the
 * variant renames three unused tokens to StarCoder's FIM texts. */
static const char *const star[] = {"<filename>", "<fim_prefix>", "<gh_stars>", "<fim_suffix>",
                                   "<issue_start>", "<fim_middle>", NULL};

static void fx_star(fixture *x)
{
    fx_variant(x, star, NULL);
}

static bool has_stop(const prompt_result *r, const char *s)
{
    for (size_t i = 0; i < r->n_stops; i++)
        if (strcmp(r->stops[i], s) == 0)
            return true;
    return false;
}

static prompt_result build(fixture *x, const char *lang, const char *prefix, const char *suffix)
{
    prompt_completion_input in = {.language = lang, .prefix = prefix, .prefix_len = strlen(prefix),
                                  .suffix = suffix, .suffix_len = suffix ? strlen(suffix) : 0};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x->b, &in, &r, &err), ENG_OK, "%s", err.msg);
    return r;
}

Test(prompt, smollm_instruct_has_no_fim_and_chatml)
{
    fixture x;
    fx_open(&x, tu_default_model());
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_NONE);
    cr_assert_eq(prompt_builder_chat(x.b), PROMPT_CHAT_CHATML);
    prompt_result r0 = build(&x, "python", "def fib(n):\n    ", "\n\nprint(fib(3))\n");
    cr_assert_str_eq(r0.text, "def fib(n):\n    ", "no FIM tokens: the prefix alone");
    prompt_result_clear(&r0);
    fx_close(&x);
}

Test(prompt, starcoder_fim_template)
{
    fixture x;
    fx_star(&x);
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_STARCODER);
    prompt_result r = build(&x, "python", "def fib(n):\n    ", "\n\nprint(fib(3))\n");
    cr_assert_str_eq(r.text, "<fim_prefix>def fib(n):\n    <fim_suffix>\n\nprint(fib(3))\n<fim_middle>");
    cr_assert_eq(r.tokens[0], tok_find(x.v, "<fim_prefix>"));
    cr_assert_eq(r.tokens[r.n_tokens - 1], tok_find(x.v, "<fim_middle>"));
    /* Text that spells a special token is user text, never the token itself. */
    prompt_result r2 = build(&x, "python", "x = '<fim_middle>'\n", NULL);
    size_t n_mid = 0;
    for (size_t i = 0; i < r2.n_tokens; i++)
        n_mid += r2.tokens[i] == tok_find(x.v, "<fim_middle>");
    cr_assert_eq(n_mid, 1);
    prompt_result_clear(&r);
    prompt_result_clear(&r2);
    fx_close(&x);
}

Test(prompt, empty_suffix_becomes_newline)
{
    fixture x;
    fx_star(&x);
    prompt_result r = build(&x, "go", "func main() {\n\t", NULL);
    cr_assert_str_eq(r.text, "<fim_prefix>func main() {\n\t<fim_suffix>\n<fim_middle>");
    prompt_result r2 = build(&x, "go", "func main() {\n\t", "");
    cr_assert_str_eq(r2.text, r.text);
    prompt_result_clear(&r);
    prompt_result_clear(&r2);
    fx_close(&x);
}

Test(prompt, stop_words_follow_the_language)
{
    fixture x;
    fx_star(&x);
    prompt_result py = build(&x, "python", "import os\n", NULL);
    cr_assert(has_stop(&py, "\n\n"));
    cr_assert(has_stop(&py, "\n#"));
    cr_assert(has_stop(&py, "\ndef"));
    cr_assert(has_stop(&py, "\nclass"));
    cr_assert(has_stop(&py, "<fim_prefix>"));
    cr_assert(!has_stop(&py, "\n"), "python completions may span lines");
    prompt_result rs = build(&x, "rust", "fn main() {\n", NULL);
    cr_assert(has_stop(&rs, "\n//"));
    cr_assert(has_stop(&rs, "\nimpl"));
    cr_assert(!has_stop(&rs, "\ndef"));
    prompt_result unk = build(&x, "brainfudge", "+++", NULL);
    cr_assert(has_stop(&unk, "\n"), "an unknown language gets single-line completions");
    prompt_result_clear(&py);
    prompt_result_clear(&rs);
    prompt_result_clear(&unk);
    static const char *const langs[] = {"python", "javascript", "typescript", "java", "c", "cpp",
        "csharp", "go", "rust", "ruby", "php", "kotlin", "swift", "scala", "shellscript", "lua",
        "perl", "r", "dart", "haskell", "sql", "elixir", "typescriptreact", "objective-c"};
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++) {
        cr_assert(prompt_language_known(langs[i]), "%s", langs[i]);
        cr_assert_not_null(prompt_language_comment(langs[i]), "%s", langs[i]);
    }
    cr_assert_str_eq(prompt_language_comment("Lua"), "--");
    cr_assert_null(prompt_language_comment("html"));
    fx_close(&x);
}

Test(prompt, snippets_become_comments_within_budget)
{
    fixture x;
    fx_star(&x);
    prompt_snippet decls[] = {{"src/memo.py", "def memoize(fn):\n    cache = {}\n    ..."}};
    char big[800];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    prompt_snippet changed[] = {{"a.py", big}, {"b.py", "b = 1"}};
    prompt_snippet recent[] = {{"c.py", "c = 2"}};
    prompt_completion_input in = {.language = "python", .prefix = "x = ", .prefix_len = 4,
                                  .declarations = decls, .n_declarations = 1,
                                  .changed = changed, .n_changed = 2,
                                  .recent = recent, .n_recent = 1};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
    /* The 800-byte snippet does not fit 768: its list stops there, the next list goes on. */
    cr_assert_str_eq(r.text, "<fim_prefix># Path: src/memo.py\n# def memoize(fn):\n#     cache = {}\n"
                             "#     ...\n#\n# Path: c.py\n# c = 2\nx = <fim_suffix>\n<fim_middle>");
    cr_assert_eq(r.n_snippets, 2);
    prompt_result_clear(&r);
    /* No line comment, no snippets. */
    in.language = "html";
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<fim_prefix>x = <fim_suffix>\n<fim_middle>");
    cr_assert_eq(r.n_snippets, 0);
    prompt_result_clear(&r);
    fx_close(&x);
}

Test(prompt, crlf_round_trip)
{
    fixture x;
    fx_star(&x);
    prompt_result r = build(&x, "c", "int main(void)\r\n{\r\n    ", "\r\n}\r\n");
    cr_assert(r.crlf);
    cr_assert_null(strchr(r.text, '\r'), "the model sees LF only: %s", r.text);
    size_t n;
    char *back = prompt_lf_to_crlf("a\nb\r\nc\n", 7, &n);
    cr_assert_str_eq(back, "a\r\nb\r\nc\r\n");
    cr_assert_eq(n, 9);
    free(back);
    prompt_result lf = build(&x, "c", "int x;\n", NULL);
    cr_assert(!lf.crlf);
    prompt_result_clear(&r);
    prompt_result_clear(&lf);
    fx_close(&x);
}

Test(prompt, long_prefix_and_suffix_are_clipped_by_tokens_keeping_the_template)
{
    fixture x;
    fx_star(&x);
    size_t cap = 200000, n = 0;
    char *pre = malloc(cap), *suf = malloc(cap);
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(pre + n, cap - n, "value_%d = compute(%d)\n", i, i);
    size_t m = 0;
    for (int i = 0; i < 2000; i++)
        m += (size_t)snprintf(suf + m, cap - m, "after_%d = other(%d)\n", i, i);
    prompt_completion_input in = {.language = "python", .prefix = pre, .prefix_len = n,
                                  .suffix = suf, .suffix_len = m,
                                  .max_prefix_tokens = 200, .max_suffix_tokens = 100};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert(r.prefix_clipped && r.suffix_clipped);
    cr_assert_leq(r.n_tokens, 200 + 100 + 3);
    cr_assert_geq(r.n_tokens, 150);
    cr_assert_eq(r.tokens[0], tok_find(x.v, "<fim_prefix>"));
    cr_assert_eq(r.tokens[r.n_tokens - 1], tok_find(x.v, "<fim_middle>"));
    /* The prefix keeps its end and starts at a whole line; the suffix keeps its start. */
    cr_assert(strstr(r.text, "value_1999 = compute(1999)\n<fim_suffix>after_0 = other(0)\n"));
    cr_assert(!strncmp(r.text, "<fim_prefix>value_", 18), "%.40s", r.text);
    const char *mid = strstr(r.text, "<fim_middle>");
    cr_assert(mid && mid[-1] == '\n', "the suffix ends at a line");
    prompt_result_clear(&r);
    free(pre);
    free(suf);
    fx_close(&x);
}

/* The default model's tokenizer with StarCoder's FIM texts, where every token made only of
 * 'Ġ' (a space in GPT-2's byte map) twice or more is USER_DEFINED: BPE still reaches those
 * tokens through merges, and a user-defined token's piece is its raw text, so a run of n
 * spaces decodes to 2n bytes. */
static void fx_wide_spaces(fixture *x)
{
    gguf_file *src = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(tu_default_model(), &src, &err), ENG_OK, "%s", err.msg);
    gguf_arr toks, types;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", &toks, &err), ENG_OK);
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.token_type", &types, &err), ENG_OK);
    cr_assert_eq(types.elem_type, GGUF_TYPE_INT32);
    gguf_str *strs = calloc(toks.n, sizeof *strs);
    int32_t *ty = malloc(toks.n * sizeof *ty);
    memcpy(ty, types.data, toks.n * sizeof *ty);
    int n_wide = 0;
    for (uint64_t i = 0; i < toks.n; i++) {
        strs[i] = gguf_arr_str(src, &toks, i);
        for (size_t r = 0; star[r]; r += 2)
            if (gguf_str_eq(strs[i], star[r]))
                strs[i] = (gguf_str){star[r + 1], strlen(star[r + 1])};
        bool spaces = strs[i].len >= 4 && strs[i].len % 2 == 0;
        for (uint64_t j = 0; spaces && j < strs[i].len; j += 2)
            spaces = strs[i].ptr[j] == '\xC4' && strs[i].ptr[j + 1] == '\xA0';
        if (spaces) {
            ty[i] = 4;
            n_wide++;
        }
    }
    cr_assert_geq(n_wide, 3, "the vocabulary has runs of spaces");
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, "tokenizer."), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, toks.n), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, toks.n),
                 ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(strs);
    free(ty);
    gguf_free(src);
    fx_open(x, path);
    unlink(path);
    free(path);
}

/* Clipping estimates where to cut from the pieces' lengths; with pieces twice as long as their
 * text the estimate lands past the end of the text, and clipping once read past its buffer
 * there (caught by the asan preset). Now it stays inside and the budgets still hold. */
Test(prompt, pieces_longer_than_their_text_clip_inside_the_buffer)
{
    fixture x;
    fx_wide_spaces(&x);
    size_t n_sp = 5000;
    char *pre = malloc(n_sp + 3), *suf = malloc(n_sp + 3);
    memcpy(pre, "a\n", 2);
    memset(pre + 2, ' ', n_sp);
    pre[n_sp + 2] = '\0';
    memset(suf, ' ', n_sp);
    memcpy(suf + n_sp, "\nb", 3);
    { /* the premise: a run of spaces encodes to tokens whose pieces are longer than it */
        size_t len;
        const char *piece = tok_piece(x.v, tok_find(x.v, "\xC4\xA0\xC4\xA0"), &len);
        cr_assert(piece && len == 4, "a user-defined token's piece is its raw text");
    }
    for (int32_t max = 1; max <= 64; max = max * 2 + 1) {
        prompt_completion_input in = {.language = "python", .prefix = pre, .prefix_len = n_sp + 2,
                                      .suffix = suf, .suffix_len = n_sp + 2,
                                      .max_prefix_tokens = max, .max_suffix_tokens = max};
        prompt_result r;
        eng_err err = {{0}};
        cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
        cr_assert(r.prefix_clipped && r.suffix_clipped);
        cr_assert_leq(r.n_tokens, (size_t)(2 * max + 4), "max %d: %zu tokens: %s", max, r.n_tokens, r.text);
        for (size_t i = 0; i < r.n_tokens; i++)
            cr_assert(r.tokens[i] >= 0 && r.tokens[i] < tok_n_vocab(x.v));
        prompt_result_clear(&r);
    }
    free(pre);
    free(suf);
    fx_close(&x);
}

Test(prompt, invalid_input_is_rejected_with_a_reason)
{
    fixture x;
    fx_star(&x);
    prompt_completion_input in = {.language = "python", .prefix = "a\xff\xfe", .prefix_len = 3};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "UTF-8"), "%s", err.msg);
    in.prefix = NULL;
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "prefix"), "%s", err.msg);
    fx_close(&x);
}

Test(prompt, fim_families_by_vocabulary)
{
    static const char *const qwen[] = {"<filename>", "<|fim_prefix|>", "<gh_stars>",
        "<|fim_suffix|>", "<issue_start>", "<|fim_middle|>", NULL};
    static const char *const llama[] = {"<filename>", "<PRE>", "<gh_stars>", "<SUF>",
        "<issue_start>", "<MID>", NULL};
    static const char *const ds[] = {"<filename>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
        "<gh_stars>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>",
        "<issue_start>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", NULL};
    static const char *const none[] = {"<filename>", "<fim_prefix>", NULL};
    fixture x;
    fx_variant(&x, qwen, NULL);
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_QWEN);
    prompt_result r = build(&x, "python", "a = ", "b");
    cr_assert_str_eq(r.text, "<|fim_prefix|>a = <|fim_suffix|>b<|fim_middle|>");
    prompt_result_clear(&r);
    fx_close(&x);

    fx_variant(&x, llama, NULL);
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_CODELLAMA);
    r = build(&x, "python", "a = ", "b");
    cr_assert_str_eq(r.text, "<PRE> a =  <SUF>b <MID>");
    prompt_result_clear(&r);
    fx_close(&x);

    fx_variant(&x, ds, NULL);
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_DEEPSEEK);
    fx_close(&x);

    fx_variant(&x, none, NULL);
    cr_assert_eq(prompt_builder_fim(x.b), PROMPT_FIM_NONE);
    r = build(&x, "python", "a = ", "b");
    cr_assert_str_eq(r.text, "a = ", "no FIM: the prefix alone");
    prompt_result_clear(&r);
    fx_close(&x);
}

Test(prompt, chatml_with_the_templates_default_system_prompt)
{
    fixture x;
    fx_open(&x, tu_default_model());
    prompt_chat_message msgs[] = {{"user", "Hi <|im_start|>"}};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_chat(x.b, msgs, 1, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                             "trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi <|im_start|>"
                             "<|im_end|>\n<|im_start|>assistant\n");
    size_t n_start = 0;
    for (size_t i = 0; i < r.n_tokens; i++)
        n_start += r.tokens[i] == tok_find(x.v, "<|im_start|>");
    cr_assert_eq(n_start, 3, "user text never becomes a control token");
    cr_assert(has_stop(&r, "<|im_end|>"));
    prompt_result_clear(&r);
    prompt_chat_message sys[] = {{"system", "Be brief."}, {"user", "Hi"}};
    cr_assert_eq(prompt_build_chat(x.b, sys, 2, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
                             "<|im_end|>\n<|im_start|>assistant\n");
    prompt_result_clear(&r);
    prompt_chat_message bad[] = {{"us er", "x"}};
    cr_assert_eq(prompt_build_chat(x.b, bad, 1, &r, &err), ENG_ERR_INVALID);
    cr_assert_eq(prompt_build_chat(x.b, msgs, 0, &r, &err), ENG_ERR_INVALID);
    fx_close(&x);
}

Test(prompt, llama3_and_unknown_templates)
{
    static const char *const l3[] = {"<|im_start|>", "<|start_header_id|>", "<|im_end|>",
        "<|end_header_id|>", "<repo_name>", "<|eot_id|>", NULL};
    fixture x;
    fx_variant(&x, l3, "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                       "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}");
    cr_assert_eq(prompt_builder_chat(x.b), PROMPT_CHAT_LLAMA3);
    prompt_chat_message msgs[] = {{"user", " Hi\n"}};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_chat(x.b, msgs, 1, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n");
    prompt_result_clear(&r);
    fx_close(&x);

    fx_variant(&x, NULL, "{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]");
    cr_assert_eq(prompt_builder_chat(x.b), PROMPT_CHAT_NONE);
    cr_assert_eq(prompt_build_chat(x.b, msgs, 1, &r, &err), ENG_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "chat template"), "%s", err.msg);
    fx_close(&x);
}

/* Snippets are chosen in the client's rank order but rendered in a canonical one (path, then
 * body) within each list, so the same snippets ranked differently from one keystroke (or one
 * developer) to the next give the same prompt head, which the prefix cache then reuses. */
Test(prompt, the_same_snippets_in_any_rank_order_give_the_same_prompt)
{
    fixture x;
    fx_star(&x);
    prompt_snippet a[] = {{"src/b.py", "def b():\n    return 2"}, {"src/a.py", "def a(): ..."},
                          {NULL, "x = 1"}};
    prompt_snippet b[] = {{"src/a.py", "def a(): ..."}, {NULL, "x = 1"},
                          {"src/b.py", "def b():\n    return 2"}};
    prompt_snippet big[] = {{"src/z.py", "def z(): ..."}, {"src/y.py", "def y(): ..."}};
    prompt_completion_input in = {.language = "python", .prefix = "y = ", .prefix_len = 4,
                                  .declarations = a, .n_declarations = 3};
    prompt_result ra, rb;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x.b, &in, &ra, &err), ENG_OK, "%s", err.msg);
    in.declarations = b;
    cr_assert_eq(prompt_build_completion(x.b, &in, &rb, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(ra.text, rb.text);
    cr_assert_str_eq(ra.text, "<fim_prefix># x = 1\n#\n# Path: src/a.py\n# def a(): ...\n#\n"
                              "# Path: src/b.py\n# def b():\n#     return 2\ny = <fim_suffix>\n"
                              "<fim_middle>");
    prompt_result_clear(&ra);
    prompt_result_clear(&rb);
    /* The choice still follows the rank: with room for one snippet, the first ranked is kept;
     * and lists keep their order (declarations before recent files). */
    in.declarations = big;
    in.n_declarations = 2;
    in.recent = a + 1;
    in.n_recent = 1;
    in.snippet_budget = 24;
    cr_assert_eq(prompt_build_completion(x.b, &in, &ra, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(ra.text, "<fim_prefix># Path: src/y.py\n# def y(): ...\n#\n# Path: src/z.py\n"
                              "# def z(): ...\ny = <fim_suffix>\n<fim_middle>");
    in.snippet_budget = 12;
    prompt_result_clear(&ra);
    cr_assert_eq(prompt_build_completion(x.b, &in, &ra, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(ra.text, "<fim_prefix># Path: src/z.py\n# def z(): ...\ny = <fim_suffix>\n"
                              "<fim_middle>");
    prompt_result_clear(&ra);
    fx_close(&x);
}
