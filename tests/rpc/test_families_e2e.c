/* test_families_e2e.c — end to end per model family: `serval serve` on a synthetic model of the
 * family's architecture carrying the family's real vocabulary (tests/fixtures/vocab/, written
 * with serval-synth --vocab-from), then: /v1/health and gRPC ListModels report the
 * architecture, FIM and chat template; a Tabby /v1/completions request renders exactly the
 * family's FIM prompt (debug_options.return_prompt, compared with
 * tests/fixtures/prompt/fim.jsonl, whose token ids test_prompt_fim checks); generation stops on each of the family's stop tokens (the model's head
 * is rewritten so that its first token is forced); and models of an unsupported architecture
 * or tensor type are refused with an error that names it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_write.h"
#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"
#include "tokenizer.h"

typedef struct family {
    const char *preset;    /* serval-synth preset */
    const char *vocab;     /* tests/fixtures/vocab/<vocab> */
    const char *arch;      /* general.architecture */
    const char *fim;       /* prompt_fim_name */
    const char *chat;      /* prompt_chat_name */
    const char *stops[4];  /* token texts that must end a completion, NULL-terminated */
} family;

static const family QWEN = {"qwen2-tiny", "qwen2.5-coder.gguf", "qwen2", "qwen", "chatml",
                            {"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", NULL}};
static const family STARCODER = {"starcoder-tiny", "starcoder.gguf", "starcoder", "starcoder",
                                 "none", {"<|endoftext|>", "<file_sep>", "<fim_pad>", NULL}};
static const family CODELLAMA = {"tiny", "codellama-spm.gguf", "llama", "codellama", "llama2",
                                 {"\xE2\x96\x81<EOT>", "</s>", NULL}};
static const family DEEPSEEK = {"tiny", "deepseek-coder.gguf", "llama", "deepseek", "deepseek",
                                {"<|EOT|>", "<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81"
                                            "sentence\xEF\xBD\x9C>", NULL}};

/* ---- models ----------------------------------------------------------------------------- */

static char *vocab_path(const family *f)
{
    char rel[128];
    snprintf(rel, sizeof rel, "tests/fixtures/vocab/%s", f->vocab);
    return tu_source_path(rel);
}

/* serval-synth --preset <f> --vocab-from <f's vocabulary> --dtype f32: a fresh temp path. */
static char *synth(const family *f)
{
    char *bin = tu_bin_path("serval-synth"), *vocab = vocab_path(f), *out = tu_temp_path(".gguf");
    char *argv[] = {bin, "--preset", (char *)f->preset, "--vocab-from", vocab, "--out", out,
                    "--dtype", "f32", NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 60);
    cr_assert_eq(rc, 0, "serval-synth %s: %s", f->preset, err ? err : "");
    free(err);
    free(bin);
    free(vocab);
    return out;
}

/* A copy of model `src` whose output head is zero but for row `id`, which is sign * 1e4 at
 * column 0: its logit is 1e4 * x0 (x the final normalised hidden state) and every other
 * logit 0. The hidden state does not depend on the head, so the first token's x0 has the same
 * sign in every copy of one model and prompt; with the right sign the first token is `id`.
 * A second row (id2, the opposite sign; -1 for none) lets a probe read that sign. */
static char *forced_copy(const char *src, int32_t id, int32_t id2, float sign)
{
    gguf_file *f = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(src, &f, &err), ENG_OK, "%s", err.msg);
    const gguf_tensor *emb = gguf_tensor_find(f, "token_embd.weight");
    cr_assert(emb && emb->dtype == GGUF_DTYPE_F32);
    int64_t n_embd = emb->ne[0], n_vocab = emb->ne[1];
    float *head = calloc((size_t)(n_embd * n_vocab), sizeof *head);
    head[(size_t)id * (size_t)n_embd] = sign * 1e4f;
    if (id2 >= 0)
        head[(size_t)id2 * (size_t)n_embd] = -sign * 1e4f;
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, f, ""), ENG_OK);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (gguf_str_eq(t->name, "output.weight"))
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        cr_assert_eq(gguf_writer_add_tensor(w, name, t->dtype, t->n_dims, t->ne, t->data,
                                            t->nbytes), ENG_OK);
    }
    int64_t ne[2] = {n_embd, n_vocab};
    cr_assert_eq(gguf_writer_add_tensor(w, "output.weight", GGUF_DTYPE_F32, 2, ne, head,
                                        (size_t)(n_embd * n_vocab) * sizeof *head), ENG_OK);
    char *out = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, out, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    free(head);
    gguf_free(f);
    return out;
}

/* ---- requests --------------------------------------------------------------------------- */

/* s as a JSON string literal (malloc'd). */
static char *json_quote(const char *s)
{
    char *o = malloc(strlen(s) * 6 + 3), *p = o;
    *p++ = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            p += sprintf(p, "\\%c", *c);
        else if (*c < 0x20)
            p += sprintf(p, "\\u%04x", *c);
        else
            *p++ = (char)*c;
    }
    *p++ = '"';
    *p = 0;
    return o;
}

/* A Tabby completion (greedy, python) on a server started on `model`; returns the parsed
 * body (choices[0].text, debug_data.prompt), owned by the caller. */
static tu_json *tabby_complete(const char *model, const char *prefix, const char *suffix)
{
    const char *extra[] = {"--model", model, NULL};
    server s = server_start(extra);
    char *p = json_quote(prefix), *q = json_quote(suffix);
    char body[4096];
    snprintf(body, sizeof body,
             "{\"language\":\"python\",\"temperature\":0,\"segments\":{\"prefix\":%s,"
             "\"suffix\":%s},\"debug_options\":{\"return_prompt\":true}}", p, q);
    free(p);
    free(q);
    tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    tu_json *j = json_of(&r);
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
    return j;
}

static const char *choice_text(const tu_json *j)
{
    const tu_json *c = tu_json_get(j, "choices");
    cr_assert(c && c->type == TU_JSON_ARR && c->n == 1, "one choice");
    const char *t = jstr(c->items[0], "text");
    cr_assert_not_null(t);
    return t;
}

static tok_vocab *open_vocab(const family *f)
{
    char *path = vocab_path(f);
    gguf_file *g = NULL;
    tok_vocab *v = NULL;
    eng_err err = {{0}};
    cr_assert_eq(gguf_open(path, &g, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(tok_vocab_from_gguf(g, &v, &err), ENG_OK, "%s: %s", f->vocab, err.msg);
    gguf_free(g);
    free(path);
    return v;
}

/* The first fim.jsonl case of the family's vocabulary. */
static tu_json *fim_case(const family *f)
{
    size_t n;
    tu_json **rows = tu_read_jsonl("tests/fixtures/prompt/fim.jsonl", &n);
    cr_assert(rows, "tests/fixtures/prompt/fim.jsonl (tools/gen_prompt_fixtures.py)");
    tu_json *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!found && !strcmp(jstr(rows[i], "vocab"), f->vocab))
            found = rows[i];
        else
            tu_json_free(rows[i]);
    }
    free(rows);
    cr_assert_not_null(found, "no FIM case for %s", f->vocab);
    return found;
}

/* ---- one family ------------------------------------------------------------------------- */

static void check_health(const char *model, const family *f)
{
    const char *extra[] = {"--model", model, NULL};
    server s = server_start(extra);
    tu_http_resp r = request(s.port, "GET", "/v1/health", TOKEN, NULL);
    cr_assert_eq(r.status, 200);
    tu_json *j = json_of(&r);
    cr_assert_str_eq(jstr(j, "model_architecture"), f->arch, "%s", r.body);
    cr_assert_str_eq(jstr(j, "fim"), f->fim, "%s", r.body);
    cr_assert_str_eq(jstr(j, "chat_format"), f->chat, "%s", r.body);
    const tu_json *sf = tu_json_get(j, "supports_fim");
    cr_assert(sf && sf->type == TU_JSON_BOOL && sf->b, "%s", r.body);
    /* Tabby's own fields stay as tabby-agent needs them. */
    cr_assert(jstr(j, "model") && *jstr(j, "model"));
    cr_assert_eq(tu_json_get(j, "version")->type, TU_JSON_OBJ);
    cr_assert_str_eq(jstr(j, "arch"), "x86_64", "Tabby's arch is the CPU's");
    tu_json_free(j);
    tu_http_resp_free(&r);

    /* gRPC ListModels says the same. The server logs its gRPC port too. */
    static const char listening[] = "serval: grpc listening on 127.0.0.1:";
    char *log = tu_read_file(s.log_path, NULL);
    const char *g = log ? strstr(log, listening) : NULL;
    cr_assert_not_null(g, "%s", log);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", atoi(g + strlen(listening)));
    free(log);
    rpc_client *cl = rpc_client_create(target, TOKEN);
    Serval__V1__ListModelsRequest lm = SERVAL__V1__LIST_MODELS_REQUEST__INIT;
    size_t len;
    uint8_t *b = gt_pack(&lm.base, &len);
    rpc_client_result res = {0};
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/ListModels", b, len, 5000, NULL, NULL,
                                 &res), GRPC_STATUS_OK);
    free(b);
    Serval__V1__ListModelsResponse *ml =
        serval__v1__list_models_response__unpack(NULL, res.last_len, res.last);
    cr_assert(ml && ml->n_models == 1);
    cr_assert_str_eq(ml->models[0]->architecture, f->arch);
    cr_assert(ml->models[0]->supports_fim);
    cr_assert_str_eq(ml->models[0]->fim_template, f->fim);
    cr_assert_str_eq(ml->models[0]->chat_template, f->chat);
    cr_assert_eq(ml->models[0]->supports_chat, strcmp(f->chat, "none") != 0);
    serval__v1__list_models_response__free_unpacked(ml, NULL);
    rpc_client_result_clear(&res);
    rpc_client_free(cl);
    cr_assert_eq(server_stop(&s), 0);
}

static void run_family(const family *f)
{
    char *model = synth(f);
    check_health(model, f);

    /* The rendered prompt is the family's FIM form, byte for byte. */
    tu_json *c = fim_case(f);
    tu_json *j = tabby_complete(model, jstr(c, "prefix"), jstr(c, "suffix"));
    const char *prompt = jstr(tu_json_get(j, "debug_data"), "prompt");
    cr_assert_not_null(prompt, "debug_data.prompt");
    cr_assert_str_eq(prompt, jstr(c, "text"), "%s: the rendered prompt", f->vocab);
    tu_json_free(j);

    /* Probe: rows 'a' (+) and 'b' (-) tell the sign of x0 at the first token; neither stops,
     * so this completion runs on (the control for the stop tests below). */
    tok_vocab *v = open_vocab(f);
    int32_t a = tok_find(v, "a") >= 0 ? tok_find(v, "a") : tok_find(v, "\xE2\x96\x81" "a");
    int32_t b = tok_find(v, "b") >= 0 ? tok_find(v, "b") : tok_find(v, "\xE2\x96\x81" "b");
    cr_assert(a >= 0 && b >= 0);
    char *probe = forced_copy(model, a, b, 1.0f);
    j = tabby_complete(probe, jstr(c, "prefix"), jstr(c, "suffix"));
    const char *t = choice_text(j);
    while (*t == ' ')
        t++;
    cr_assert(*t == 'a' || *t == 'b', "%s: the probe wrote '%s'", f->vocab, choice_text(j));
    float sign = *t == 'a' ? 1.0f : -1.0f;
    cr_assert_gt(strlen(choice_text(j)), 8, "the control generation runs on: '%s'",
                 choice_text(j));
    tu_json_free(j);
    unlink(probe);
    free(probe);

    /* Each stop token, forced as the first token, ends the completion with nothing. */
    for (size_t i = 0; f->stops[i]; i++) {
        int32_t id = tok_find(v, f->stops[i]);
        cr_assert_geq(id, 0, "%s has %s", f->vocab, f->stops[i]);
        char *forced = forced_copy(model, id, -1, sign);
        j = tabby_complete(forced, jstr(c, "prefix"), jstr(c, "suffix"));
        cr_assert_str_eq(choice_text(j), "", "%s: forced %s, the completion went on",
                         f->vocab, f->stops[i]);
        tu_json_free(j);
        unlink(forced);
        free(forced);
    }
    tok_vocab_free(v);
    tu_json_free(c);
    unlink(model);
    free(model);
}

Test(families, qwen2_5_coder_renders_its_fim_prompt_stops_and_reports_itself, .timeout = 120)
{
    run_family(&QWEN);
}

Test(families, starcoder_renders_its_fim_prompt_stops_and_reports_itself, .timeout = 120)
{
    run_family(&STARCODER);
}

Test(families, codellama_renders_its_fim_prompt_stops_and_reports_itself, .timeout = 120)
{
    run_family(&CODELLAMA);
}

Test(families, deepseek_coder_renders_its_fim_prompt_stops_and_reports_itself, .timeout = 120)
{
    run_family(&DEEPSEEK);
}

/* SentencePiece: a completion's first token "▁def" reaches the client as " def", as
 * llama.cpp's /infill streams it (token_to_piece keeps the space; the prompt's prefix was
 * encoded with the dummy-prefix space, so the model's spaces are literal). */
Test(families, codellama_completion_keeps_the_leading_space_of_its_first_piece, .timeout = 60)
{
    char *model = synth(&CODELLAMA);
    tok_vocab *v = open_vocab(&CODELLAMA);
    const char *words[] = {"\xE2\x96\x81" "def", "\xE2\x96\x81" "return", "\xE2\x96\x81" "self",
                           "\xE2\x96\x81" "in", NULL};
    int32_t w = -1;
    const char *word = NULL;
    for (size_t i = 0; words[i] && w < 0; i++)
        if ((w = tok_find(v, words[i])) >= 0)
            word = words[i] + 3;
    cr_assert_geq(w, 0, "the vocabulary has a '▁word' piece");
    int32_t a = tok_find(v, "\xE2\x96\x81" "a"), b = tok_find(v, "\xE2\x96\x81" "b");
    cr_assert(a >= 0 && b >= 0);
    const char *prefix = "def f(x):\n    return x +", *suffix = "\n";
    char *probe = forced_copy(model, a, b, 1.0f);
    tu_json *j = tabby_complete(probe, prefix, suffix);
    float sign = choice_text(j)[1] == 'a' ? 1.0f : -1.0f;
    cr_assert_eq(choice_text(j)[0], ' ', "'%s'", choice_text(j));
    tu_json_free(j);
    char *forced = forced_copy(model, w, -1, sign);
    j = tabby_complete(forced, prefix, suffix);
    char want[16];
    snprintf(want, sizeof want, " %s", word);
    cr_assert(!strncmp(choice_text(j), want, strlen(want)), "the client sees '%s', want '%s...'",
              choice_text(j), want);
    tu_json_free(j);
    tok_vocab_free(v);
    unlink(probe);
    unlink(forced);
    unlink(model);
    free(probe);
    free(forced);
    free(model);
}

/* ---- unsupported models ----------------------------------------------------------------- */

/* Overwrites, in the file at path, the bytes after the first occurrence of `key` (+skip) with
 * n bytes of `with`. */
static void patch_after(const char *path, const char *key, size_t skip, const void *with, size_t n)
{
    size_t len;
    char *buf = tu_read_file(path, &len);
    cr_assert_not_null(buf);
    char *at = memmem(buf, len, key, strlen(key));
    cr_assert_not_null(at, "%s in %s", key, path);
    memcpy(at + strlen(key) + skip, with, n);
    cr_assert_eq(tu_write_file(path, buf, len), 0);
    free(buf);
}

/* `serval serve --model path`: must exit non-zero before listening, with `needle` in stderr. */
static void expect_refused(const char *path, const char *needle)
{
    char *bin = tu_bin_path("serval"), *dir = tu_temp_path(".d");
    unlink(dir);
    char *argv[] = {bin, "serve", "--model", (char *)path, "--http-port", "0", "--grpc-port", "0",
                    "--token", TOKEN, "--data-dir", dir, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 30);
    cr_assert(rc != 0 && rc < 128, "serval serve exited %d", rc);
    cr_assert(strstr(err, needle), "the error names it: %s", err);
    cr_assert(!strstr(err, "listening"), "%s", err);
    free(err);
    free(bin);
    free(dir);
}

Test(families, unsupported_architecture_and_tensor_type_are_named, .timeout = 60)
{
    char *model = synth(&QWEN);
    char *arch = tu_temp_path(".gguf"), *type = tu_temp_path(".gguf");
    size_t len;
    char *buf = tu_read_file(model, &len);
    cr_assert_eq(tu_write_file(arch, buf, len), 0);
    cr_assert_eq(tu_write_file(type, buf, len), 0);
    free(buf);
    /* general.architecture "qwen2" (u32 type, u64 length, then the bytes) becomes "gemma". */
    patch_after(arch, "general.architecture", 12, "gemma", 5);
    expect_refused(arch, "architecture 'gemma'");
    /* blk.0.attn_q.weight: n_dims (2), two dims, then its dtype becomes IQ4_NL (20), a type
     * llama.cpp has and Serval does not load; its data is no larger than F32's. */
    uint32_t iq4_nl = 20;
    patch_after(type, "blk.0.attn_q.weight", 4 + 2 * 8, &iq4_nl, 4);
    expect_refused(type, "IQ4_NL");
    unlink(arch);
    unlink(type);
    unlink(model);
    free(arch);
    free(type);
    free(model);
}

/* ---- output that is not UTF-8 ----------------------------------------------------------- */

/* One OpenAI /v1/completions request for one token on `model`; returns the choice's text
 * (stream: the concatenated SSE pieces, which must end with [DONE]), owned by the caller. */
static char *one_token_text(const char *model, bool stream)
{
    const char *extra[] = {"--model", model, NULL};
    server s = server_start(extra);
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"def f(x):\",\"max_tokens\":1,\"temperature\":0,"
             "\"stream\":%s}", stream ? "true" : "false");
    tu_http_resp r = request(s.port, "POST", "/v1/completions", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *text = calloc(1, r.len + 1);
    if (!stream) {
        tu_json *j = json_of(&r);
        strcpy(text, choice_text(j));
        tu_json_free(j);
    } else {
        cr_assert(strstr(r.body, "data: [DONE]"), "the stream was cut: %s", r.body);
        for (const char *p = r.body; (p = strstr(p, "data: {")) != NULL; p += 6) {
            const char *end = strstr(p, "\n\n");
            cr_assert_not_null(end);
            size_t n = (size_t)(end - p - 6);
            char *ev = strndup(p + 6, n);
            tu_json *j = tu_json_parse(ev, n);
            cr_assert_not_null(j, "not JSON: %s", ev);
            strcat(text, choice_text(j));
            tu_json_free(j);
            free(ev);
        }
    }
    tu_http_resp_free(&r);
    cr_assert_eq(server_stop(&s), 0);
    return text;
}

/* A generation that ends inside a multi-byte character (here its first and only token is the
 * byte 0xE2, the lead of a 3-byte sequence) reaches the client as U+FFFD, streamed or not,
 * instead of bytes that are not UTF-8 (a stream used to be cut off mid-reply). */
Test(families, a_generation_cut_inside_a_character_ends_in_a_replacement_character,
     .timeout = 120)
{
    char *model = synth(&QWEN);
    tok_vocab *v = open_vocab(&QWEN);
    int32_t a = tok_find(v, "a"), b = tok_find(v, "b");
    int32_t lead = tok_find(v, "\xC3\xA2"); /* GPT-2's byte map: 0xE2 is the character U+00E2 */
    cr_assert(a >= 0 && b >= 0 && lead >= 0);
    size_t plen = 0;
    const char *piece = tok_piece(v, lead, &plen);
    cr_assert(plen == 1 && (unsigned char)piece[0] == 0xE2, "the token decodes to byte 0xE2");
    /* The sign of the first token's x0 on this prompt, as in run_family's probe. */
    char *probe = forced_copy(model, a, b, 1.0f);
    char *t = one_token_text(probe, false);
    cr_assert(!strcmp(t, "a") || !strcmp(t, "b"), "the probe wrote '%s'", t);
    float sign = !strcmp(t, "a") ? 1.0f : -1.0f;
    free(t);
    char *forced = forced_copy(model, lead, -1, sign);
    for (int stream = 0; stream < 2; stream++) {
        t = one_token_text(forced, stream);
        cr_assert_str_eq(t, "\xEF\xBF\xBD", "stream %d: got '%s'", stream, t);
        free(t);
    }
    tok_vocab_free(v);
    unlink(probe);
    unlink(forced);
    unlink(model);
    free(probe);
    free(forced);
    free(model);
}
