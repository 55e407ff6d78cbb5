/* test_prompt_fim.c — FIM prompts and stop tokens on each family's real vocabulary
 * (tests/fixtures/vocab/): the prompt builder's text is Tabby's template for the family and its
 * tokens are the ones the model was trained on, as llama.cpp's tokenizer gives them
 * (tests/fixtures/prompt/fim.jsonl, tools/gen_prompt_fixtures.py; CodeLlama's in Meta's
 * infilling layout); each family's stop tokens are in its stop list. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "prompt.h"
#include "testutil.h"

typedef struct fixture {
    gguf_file *f;
    tok_vocab *v;
    eng_model m;
    prompt_builder *b;
} fixture;

static void fx_open_vocab(fixture *x, const char *vocab)
{
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/vocab/%s", vocab);
    char *path = tu_source_path(rel);
    eng_err err = {{0}};
    memset(x, 0, sizeof *x);
    cr_assert_eq(gguf_open(path, &x->f, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(tok_vocab_from_gguf(x->f, &x->v, &err), ENG_OK, "%s: %s", vocab, err.msg);
    x->m.gguf = x->f;
    x->m.vocab = x->v;
    cr_assert_eq(prompt_builder_create(&x->m, &x->b, &err), ENG_OK, "%s", err.msg);
    free(path);
}

static void fx_close(fixture *x)
{
    prompt_builder_free(x->b);
    tok_vocab_free(x->v);
    gguf_free(x->f);
}

static const char *jstr(const tu_json *o, const char *k)
{
    const tu_json *v = tu_json_get(o, k);
    return v && v->type == TU_JSON_STR ? v->str : NULL;
}

static bool has_stop(const prompt_result *r, const char *s)
{
    for (size_t i = 0; i < r->n_stops; i++)
        if (strcmp(r->stops[i], s) == 0)
            return true;
    return false;
}

static prompt_fim_kind kind_of(const char *s)
{
    return !strcmp(s, "starcoder") ? PROMPT_FIM_STARCODER : !strcmp(s, "qwen") ? PROMPT_FIM_QWEN
         : !strcmp(s, "codellama") ? PROMPT_FIM_CODELLAMA : !strcmp(s, "deepseek")
                                                              ? PROMPT_FIM_DEEPSEEK
                                                              : PROMPT_FIM_NONE;
}

Test(prompt_fim, each_family_renders_its_template_with_the_trained_tokens)
{
    size_t n;
    tu_json **rows = tu_read_jsonl("tests/fixtures/prompt/fim.jsonl", &n);
    cr_assert(rows && n >= 24, "tools/gen_prompt_fixtures.py");
    size_t per_family[5] = {0};
    for (size_t i = 0; i < n; i++) {
        const tu_json *c = rows[i], *ids = tu_json_get(c, "ids");
        const char *vocab = jstr(c, "vocab"), *prefix = jstr(c, "prefix"),
                   *suffix = jstr(c, "suffix");
        fixture x;
        fx_open_vocab(&x, vocab);
        cr_assert_eq(prompt_builder_fim(x.b), kind_of(jstr(c, "family")), "%s: %s", vocab,
                     prompt_fim_name(prompt_builder_fim(x.b)));
        prompt_completion_input in = {.language = "python", .prefix = prefix,
                                      .prefix_len = strlen(prefix), .suffix = suffix,
                                      .suffix_len = strlen(suffix)};
        prompt_result r;
        eng_err err = {{0}};
        cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
        cr_assert_str_eq(r.text, jstr(c, "text"), "%s", vocab);
        cr_assert_eq(r.n_tokens, ids->n, "%s case %zu: %zu tokens, expected %zu", vocab, i,
                     r.n_tokens, ids->n);
        for (size_t t = 0; t < ids->n; t++)
            cr_assert_eq(r.tokens[t], (int32_t)ids->items[t]->num,
                         "%s case %zu token %zu: %d, expected %d", vocab, i, t, r.tokens[t],
                         (int32_t)ids->items[t]->num);
        per_family[kind_of(jstr(c, "family"))]++;
        prompt_result_clear(&r);
        fx_close(&x);
        tu_json_free(rows[i]);
    }
    free(rows);
    for (int k = PROMPT_FIM_STARCODER; k <= PROMPT_FIM_DEEPSEEK; k++)
        cr_assert_geq(per_family[k], 4, "%s cases", prompt_fim_name((prompt_fim_kind)k));
}

/* CodeLlama's suffix has no SentencePiece space in front (Meta's encode_infilling), unlike
 * llama.cpp's /infill: the fixture's two forms differ exactly there. */
Test(prompt_fim, codellama_suffix_is_encoded_without_the_dummy_space)
{
    size_t n;
    tu_json **rows = tu_read_jsonl("tests/fixtures/prompt/fim.jsonl", &n);
    size_t n_cl = 0;
    for (size_t i = 0; i < n; i++) {
        const tu_json *ids = tu_json_get(rows[i], "ids"),
                      *inf = tu_json_get(rows[i], "llama_cpp_infill");
        bool same = ids->n == inf->n;
        for (size_t t = 0; same && t < ids->n; t++)
            same = ids->items[t]->num == inf->items[t]->num;
        if (!strcmp(jstr(rows[i], "family"), "codellama")) {
            n_cl++;
            cr_assert(!same, "case %zu: the suffix would get llama.cpp's extra space", i);
        } else {
            cr_assert(same, "case %zu: the other families match llama.cpp's /infill", i);
        }
        tu_json_free(rows[i]);
    }
    free(rows);
    cr_assert_geq(n_cl, 4);

    fixture x;
    fx_open_vocab(&x, "codellama-spm.gguf");
    prompt_completion_input in = {.language = "python", .prefix = "a", .prefix_len = 1,
                                  .suffix = "b", .suffix_len = 1};
    prompt_result r;
    eng_err err = {{0}};
    cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_str_eq(r.text, "<s><PRE> a <SUF>b <MID>");
    /* BOS ▁<PRE> ▁a ▁<SUF> b ▁<MID> */
    cr_assert_eq(r.n_tokens, 6);
    size_t len;
    const char *pa = tok_piece(x.v, r.tokens[2], &len);
    cr_assert(len == 2 && !memcmp(pa, " a", 2), "the prefix's space: '%.*s'", (int)len, pa);
    const char *pb = tok_piece(x.v, r.tokens[4], &len);
    cr_assert(len == 1 && *pb == 'b', "no space before the suffix: '%.*s'", (int)len, pb);
    prompt_result_clear(&r);
    fx_close(&x);
}

Test(prompt_fim, each_family_stops_on_its_end_tokens)
{
    static const struct {
        const char *vocab;
        const char *stops[8];
        const char *not_stops[4];
    } fams[] = {
        {"qwen2.5-coder.gguf",
         {"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>",
          "<|fim_prefix|>", NULL},
         {NULL}},
        {"starcoder.gguf",
         {"<|endoftext|>", "<fim_pad>", "<file_sep>", "<reponame>", "<fim_middle>", NULL},
         {"<gh_stars>", NULL}},
        {"codellama-spm.gguf", {"\xE2\x96\x81<EOT>", NULL}, {"</s>", "<s>", NULL}},
        {"deepseek-coder.gguf",
         {"<|EOT|>", "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>",
          "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", NULL},
         {NULL}},
    };
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        fixture x;
        fx_open_vocab(&x, fams[f].vocab);
        prompt_completion_input in = {.language = "python", .prefix = "x = ", .prefix_len = 4};
        prompt_result r;
        eng_err err = {{0}};
        cr_assert_eq(prompt_build_completion(x.b, &in, &r, &err), ENG_OK, "%s", err.msg);
        for (size_t i = 0; fams[f].stops[i]; i++) {
            int32_t id = tok_find(x.v, fams[f].stops[i]);
            cr_assert_geq(id, 0, "%s has %s", fams[f].vocab, fams[f].stops[i]);
            size_t len;
            const char *piece = tok_piece(x.v, id, &len);
            char want[64];
            snprintf(want, sizeof want, "%.*s", (int)len, piece);
            cr_assert(has_stop(&r, want), "%s: %s stops a completion", fams[f].vocab, want);
        }
        /* EOS, EOT and EOG ids end generation in the engine whatever their text. */
        cr_assert(tok_is_eog(x.v, tok_eos(x.v)), "%s: EOS", fams[f].vocab);
        for (size_t i = 0; fams[f].not_stops[i]; i++)
            cr_assert(!has_stop(&r, fams[f].not_stops[i]), "%s: '%s' is ordinary text",
                      fams[f].vocab, fams[f].not_stops[i]);
        prompt_result_clear(&r);
        fx_close(&x);
    }
}
