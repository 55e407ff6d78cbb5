/* test_model.c — the default model on the CPU backend against llama.cpp's outputs (greedy
 * tokens and logits from tests/fixtures/llamacpp/), chunked-equals-sequential evaluation, and
 * clear errors for bad tokens, overflowing contexts and unsupported or broken models. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_forward.h"
#include "gguf_write.h"
#include "model.h"
#include "testutil.h"
#include "tu_json.h"

static eng_model *load_default(void)
{
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

static eng_cpu_ctx *make_ctx(const eng_model *m, int n_ctx, int threads)
{
    eng_cpu_ctx *c = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_cpu_ctx_create(m, n_ctx, threads, &c, &err), ENG_OK, "%s", err.msg);
    return c;
}

static int32_t *int_array(const tu_json *a, size_t *n)
{
    cr_assert(a && a->type == TU_JSON_ARR);
    int32_t *v = malloc(sizeof(int32_t) * (a->n + 1));
    for (size_t i = 0; i < a->n; i++)
        v[i] = (int32_t)a->items[i]->num;
    *n = a->n;
    return v;
}

Test(model, default_model_hparams)
{
    eng_model *m = load_default();
    const eng_hparams *hp = &m->hp;
    cr_assert_eq(hp->arch, ENG_ARCH_LLAMA);
    cr_assert_eq(hp->n_layer, 30);
    cr_assert_eq(hp->n_embd, 576);
    cr_assert_eq(hp->n_head, 9);
    cr_assert_eq(hp->n_head_kv, 3);
    cr_assert_eq(hp->head_dim, 64);
    cr_assert_eq(hp->n_ff, 1536);
    cr_assert_eq(hp->n_vocab, 49152);
    cr_assert(hp->tied_output);
    cr_assert_float_eq(hp->rope_base, 100000.0f, 1e-3f);
    cr_assert_eq(m->layers[3].wq.dtype, GGUF_DTYPE_Q4_1);
    cr_assert_eq(m->tok_embd.dtype, GGUF_DTYPE_Q8_0);
    eng_model_free(m);
}

/* Every greedy continuation llama.cpp produced (up to 48 tokens, or to its end-of-generation
 * token) is reproduced token for token. */
Test(model, greedy_matches_llamacpp, .timeout = 600)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl("tests/fixtures/llamacpp/greedy.jsonl", &n_lines);
    cr_assert_geq(n_lines, 8);
    eng_model *m = load_default();
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    for (size_t li = 0; li < n_lines; li++) {
        const char *name = tu_json_get(lines[li], "name")->str;
        size_t n_prompt, n_ref;
        int32_t *prompt = int_array(tu_json_get(lines[li], "prompt_ids"), &n_prompt);
        int32_t *ref = int_array(tu_json_get(lines[li], "tokens"), &n_ref);
        eng_cpu_ctx *c = make_ctx(m, (int)(n_prompt + n_ref + 1), 2);
        cr_assert_eq(eng_cpu_ctx_eval(c, prompt, (int32_t)n_prompt, logits, false, NULL), ENG_OK);
        size_t same = 0;
        for (size_t i = 0; i < n_ref; i++) {
            int32_t t = tu_argmax(logits, m->hp.n_vocab);
            if (t != ref[i])
                break;
            same++;
            if (i + 1 < n_ref)
                cr_assert_eq(eng_cpu_ctx_eval(c, &t, 1, logits, false, NULL), ENG_OK);
        }
        cr_log_info("greedy '%s': %zu of %zu tokens identical to llama.cpp", name, same, n_ref);
        /* The fixture's walk takes each step's logits from llama.cpp's batch path, which Serval
         * reproduces bit for bit: every token must match, not just the first 32. */
        cr_expect_eq(same, n_ref, "prompt '%s': diverged from llama.cpp at token %zu of %zu",
                     name, same, n_ref);
        eng_cpu_ctx_free(c);
        free(prompt);
        free(ref);
        tu_json_free(lines[li]);
    }
    free(lines);
    free(logits);
    eng_model_free(m);
}

/* Logits at chosen positions: same top-1, and the top logits within a tolerance. */
Test(model, logits_match_llamacpp, .timeout = 600)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl("tests/fixtures/llamacpp/logits.jsonl", &n_lines);
    cr_assert_geq(n_lines, 1);
    eng_model *m = load_default();
    const int32_t nv = m->hp.n_vocab;
    double worst = 0.0;
    for (size_t li = 0; li < n_lines; li++) {
        size_t n_prompt;
        int32_t *prompt = int_array(tu_json_get(lines[li], "prompt_ids"), &n_prompt);
        float *logits = malloc(sizeof(float) * (size_t)nv * n_prompt);
        eng_cpu_ctx *c = make_ctx(m, (int)n_prompt, 2);
        cr_assert_eq(eng_cpu_ctx_eval(c, prompt, (int32_t)n_prompt, logits, true, NULL), ENG_OK);
        const tu_json *pos = tu_json_get(lines[li], "positions");
        for (size_t k = 0; k < pos->n; k++) {
            int p = (int)tu_json_get(pos->items[k], "pos")->num;
            const tu_json *top = tu_json_get(pos->items[k], "top");
            const float *row = logits + (size_t)p * (size_t)nv;
            cr_expect_eq(tu_argmax(row, nv), (int32_t)top->items[0]->items[0]->num,
                         "line %zu pos %d: top-1 differs from llama.cpp", li, p);
            for (size_t t = 0; t < top->n; t++) {
                int32_t id = (int32_t)top->items[t]->items[0]->num;
                double want = top->items[t]->items[1]->num;
                double d = fabs((double)row[id] - want);
                if (d > worst)
                    worst = d;
                /* Serval follows llama.cpp's CPU arithmetic step by step (same activation
                 * quantisation, summation orders and exp), so the logits agree to the fixture's
                 * 6 significant digits; 1e-3 absolute (logits span about ±20) allows only that
                 * rounding. */
                cr_expect_leq(d, 1e-3, "line %zu pos %d token %d: %f vs llama.cpp %f", li, p, id,
                              (double)row[id], want);
            }
        }
        eng_cpu_ctx_free(c);
        free(logits);
        free(prompt);
        tu_json_free(lines[li]);
    }
    cr_log_info("largest |logit - llama.cpp| over the fixture: %.4f", worst);
    free(lines);
    eng_model_free(m);
}

/* A prompt evaluated in one call, in odd chunks, or token by token gives the same logits bit
 * for bit, with 1 or 2 threads. */
Test(model, chunked_equals_sequential, .timeout = 300)
{
    eng_model *m = load_default();
    const int32_t nv = m->hp.n_vocab;
    int32_t toks[150];
    for (int i = 0; i < 150; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % 40000) + 100;
    float *a = malloc(sizeof(float) * (size_t)nv), *b = malloc(sizeof(float) * (size_t)nv);
    eng_cpu_ctx *c1 = make_ctx(m, 200, 2);
    cr_assert_eq(eng_cpu_ctx_eval(c1, toks, 150, a, false, NULL), ENG_OK);
    eng_cpu_ctx *c2 = make_ctx(m, 200, 1);
    int32_t sizes[] = {1, 63, 1, 64, 21};
    int32_t at = 0;
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(eng_cpu_ctx_eval(c2, toks + at, sizes[i], b, false, NULL), ENG_OK);
        at += sizes[i];
    }
    cr_assert_eq(at, 150);
    cr_assert_eq(memcmp(a, b, sizeof(float) * (size_t)nv), 0, "chunked logits differ");
    cr_assert_eq(eng_cpu_ctx_pos(c2), 150);
    eng_cpu_ctx_free(c1);
    eng_cpu_ctx_free(c2);
    free(a);
    free(b);
    eng_model_free(m);
}

Test(model, rejects_bad_tokens_and_overflow)
{
    eng_model *m = load_default();
    eng_cpu_ctx *c = make_ctx(m, 8, 1);
    eng_err err = {{0}};
    int32_t bad[] = {5, 49152};
    cr_assert_eq(eng_cpu_ctx_eval(c, bad, 2, NULL, false, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "49152"), "message: %s", err.msg);
    int32_t neg = -1;
    cr_assert_eq(eng_cpu_ctx_eval(c, &neg, 1, NULL, false, &err), ENG_ERR_INVALID);
    int32_t nine[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cr_assert_eq(eng_cpu_ctx_eval(c, nine, 9, NULL, false, &err), ENG_ERR_TOO_LONG);
    cr_assert(strstr(err.msg, "context"), "message: %s", err.msg);
    cr_assert_eq(eng_cpu_ctx_pos(c), 0, "a rejected call must not advance the context");
    cr_assert_eq(eng_cpu_ctx_eval(c, nine, 8, NULL, false, &err), ENG_OK);
    cr_assert_eq(eng_cpu_ctx_eval(c, nine, 1, NULL, false, &err), ENG_ERR_TOO_LONG);
    eng_cpu_ctx_free(c);
    cr_assert_eq(eng_cpu_ctx_create(m, 0, 1, &c, &err), ENG_ERR_INVALID);
    cr_assert_eq(eng_cpu_ctx_create(m, 9000, 1, &c, &err), ENG_ERR_INVALID);
    eng_model_free(m);
}

/* Writes a copy of the default model's metadata with one key changed and no tensors. */
static char *metadata_copy(const char *key, const char *str_value)
{
    gguf_file *src = NULL;
    cr_assert_eq(gguf_open(tu_default_model(), &src, NULL), ENG_OK);
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, ""), ENG_OK);
    if (key)
        cr_assert_eq(gguf_writer_set_str(w, key, str_value, strlen(str_value)), ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, NULL), ENG_OK);
    gguf_writer_free(w);
    gguf_free(src);
    return path;
}

Test(model, unsupported_architecture_is_named)
{
    char *path = metadata_copy("general.architecture", "mamba");
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_ERR_UNSUPPORTED);
    cr_assert_null(m);
    cr_assert(strstr(err.msg, "mamba"), "message: %s", err.msg);
    unlink(path);
    free(path);
}

Test(model, missing_tensor_is_named)
{
    char *path = metadata_copy(NULL, NULL); /* all metadata, no tensors */
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "token_embd.weight"), "message: %s", err.msg);
    unlink(path);
    free(path);
}

/* Three sequences in one batch — one prefilling a chunk, two decoding — with their blocks
 * scattered over a shared paged pool give bit for bit the logits each gets alone. */
Test(model, multi_sequence_batch_equals_alone, .timeout = 300)
{
    eng_model *m = load_default();
    const int32_t nv = m->hp.n_vocab, bs = 16;
    enum { NS = 3 };
    const int32_t len[NS] = {40, 23, 57}; /* prompt lengths */
    int32_t toks[NS][64];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < 64; i++)
            toks[s][i] = (int32_t)((i * 7919 + s * 104729 + 11) % 45000) + 50;
    /* reference: each sequence alone, last-token logits after len[s] tokens */
    float *ref = malloc(sizeof(float) * (size_t)nv * NS);
    for (int s = 0; s < NS; s++) {
        eng_cpu_ctx *c = make_ctx(m, 64, 1);
        cr_assert_eq(eng_cpu_ctx_eval(c, toks[s], len[s], ref + (size_t)s * nv, false, NULL), ENG_OK);
        eng_cpu_ctx_free(c);
    }
    /* shared pool: block ids interleaved and out of order, with unused holes */
    eng_cpu_kv *kv = NULL;
    eng_cpu_runner *r = NULL;
    cr_assert_eq(eng_cpu_kv_create(m, 20, bs, &kv, NULL), ENG_OK);
    cr_assert_eq(eng_cpu_runner_create(m, 64, 2, &r, NULL), ENG_OK);
    const int32_t t0[4] = {17, 3, 9, 1}, t1[4] = {12, 6, 19, 0}, t2[4] = {4, 15, 8, 11};
    const int32_t *tables[NS] = {t0, t1, t2};
    /* step 1: all of seq 0's prompt but its last token, and seq 1's and 2's first halves */
    int32_t tk[128], pos[128], seq[128], n = 0;
    int32_t done[NS] = {len[0] - 1, len[1] / 2, len[2] / 2};
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < done[s]; i++) {
            tk[n] = toks[s][i];
            pos[n] = i;
            seq[n++] = s;
        }
    eng_batch b = {.n_tokens = n, .tokens = tk, .pos = pos, .seq = seq,
                       .block_tables = tables, .n_seqs = NS};
    cr_assert_eq(eng_cpu_forward(r, kv, &b, NULL, NULL), ENG_OK);
    /* step 2: the rest of every prompt, logits for each sequence's last token */
    n = 0;
    int32_t idx[NS];
    for (int s = 0; s < NS; s++) {
        for (int i = done[s]; i < len[s]; i++) {
            tk[n] = toks[s][i];
            pos[n] = i;
            seq[n++] = s;
        }
        idx[s] = n - 1;
    }
    float *got = malloc(sizeof(float) * (size_t)nv * NS);
    b = (eng_batch){.n_tokens = n, .tokens = tk, .pos = pos, .seq = seq, .block_tables = tables,
                        .n_seqs = NS, .logits_idx = idx, .n_logits = NS};
    cr_assert_eq(eng_cpu_forward(r, kv, &b, got, NULL), ENG_OK);
    for (int s = 0; s < NS; s++) {
        float worst = 0.0f;
        for (int32_t i = 0; i < nv; i++)
            worst = fmaxf(worst, fabsf(got[(size_t)s * nv + i] - ref[(size_t)s * nv + i]));
        cr_expect_eq(memcmp(got + (size_t)s * nv, ref + (size_t)s * nv, sizeof(float) * (size_t)nv),
                     0, "sequence %d: batched logits differ from running it alone (by up to %g)",
                     s, (double)worst);
    }
    eng_cpu_runner_free(r);
    eng_cpu_kv_free(kv);
    free(ref);
    free(got);
    eng_model_free(m);
}
