/* test_backend_cuda.c — the CUDA backend end to end on the default model: logits against the
 * CPU backend (teacher-forced over llama.cpp's greedy continuations), chunked prefill and
 * decode against one full prefill, and batched-equals-alone through the engine. Skips
 * cleanly without a GPU or without a CUDA build. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "serval_engine.h"
#include "testutil.h"
#include "tu_json.h"

#ifdef SERVAL_HAVE_CUDA
#include "device.h"

enum { MAXT = 320, BS = 16 };

typedef struct seqs {
    int32_t ids[16][MAXT];
    int32_t n[16], n_prompt[16];
    int32_t count;
} seqs;

/* Prompt + llama.cpp's greedy continuation for the first `want` fixture lines. */
static void load_seqs(seqs *s, int want)
{
    char *path = tu_source_path("tests/fixtures/llamacpp/greedy.jsonl");
    size_t len;
    char *text = tu_read_file(path, &len);
    cr_assert_not_null(text);
    s->count = 0;
    for (char *p = text; *p && s->count < want;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        tu_json *j = l ? tu_json_parse(p, l) : NULL;
        if (j) {
            const tu_json *a = tu_json_get(j, "prompt_ids"), *b = tu_json_get(j, "tokens");
            int32_t k = 0;
            for (size_t i = 0; i < a->n && k < MAXT; i++)
                s->ids[s->count][k++] = (int32_t)a->items[i]->num;
            s->n_prompt[s->count] = k;
            for (size_t i = 0; i < b->n && k < MAXT; i++)
                s->ids[s->count][k++] = (int32_t)b->items[i]->num;
            s->n[s->count++] = k;
            tu_json_free(j);
        }
        p += l + (nl ? 1 : 0);
    }
    free(text);
    free(path);
}

/* Runs tokens[0, n) of one sequence through be in chunks of `chunk`, logits for every
 * position into out [n, n_vocab]. The sequence owns blocks 0.. of the pool, in reverse order
 * so that the block table is not the identity. */
static void run_seq(eng_backend *be, const int32_t *tokens, int32_t n, int32_t chunk, float *out,
                    int32_t n_vocab)
{
    int32_t table[MAXT / BS + 1], pos[MAXT], seq[MAXT], idx[MAXT];
    int32_t nb = (n + BS - 1) / BS;
    for (int32_t i = 0; i < nb; i++)
        table[i] = be->n_blocks - 1 - i;
    const int32_t *tables[1] = {table};
    for (int32_t c0 = 0; c0 < n; c0 += chunk) {
        int32_t cn = n - c0 < chunk ? n - c0 : chunk;
        for (int32_t i = 0; i < cn; i++) {
            pos[i] = c0 + i;
            seq[i] = 0;
            idx[i] = i;
        }
        eng_batch b = {.n_tokens = cn, .tokens = tokens + c0, .pos = pos, .seq = seq,
                       .block_tables = tables, .n_seqs = 1, .logits_idx = idx, .n_logits = cn};
        eng_err err = {{0}};
        cr_assert_eq(be->ops->forward(be, &b, out + (size_t)c0 * (size_t)n_vocab, &err), ENG_OK,
                     "%s", err.msg);
    }
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* Relative error of a against b over one row: max |a - b| / max |b|. */
static double row_rel_err(const float *a, const float *b, int32_t n)
{
    double md = 0, mb = 0;
    for (int32_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / (mb > 0 ? mb : 1);
}

Test(backend_cuda, logits_match_cpu_backend, .timeout = 600)
{
    if (kn_device_count() < 1)
        cr_skip_test("no CUDA device");
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &m, &err), ENG_OK, "%s", err.msg);
    const int32_t nv = m->hp.n_vocab;
    eng_backend *cpu = NULL, *gpu = NULL;
    cr_assert_eq(eng_backend_cpu_create(m, (int64_t)64 << 20, BS, MAXT / BS, MAXT, 2, &cpu, &err),
                 ENG_OK, "%s", err.msg);
    cr_assert_eq(eng_backend_cuda_create(m, (int64_t)64 << 20, BS, MAXT / BS, MAXT, MAXT, MAXT,
                                         &gpu, &err),
                 ENG_OK, "%s", err.msg);
    seqs *s = malloc(sizeof *s);
    load_seqs(s, 12);
    float *lc = malloc(sizeof(float) * MAXT * (size_t)nv);
    float *lg = malloc(sizeof(float) * MAXT * (size_t)nv);
    float *lk = malloc(sizeof(float) * MAXT * (size_t)nv);
    int agree = 0, total = 0;
    double worst = 0;
    for (int32_t q = 0; q < s->count; q++) {
        int32_t n = s->n[q];
        run_seq(cpu, s->ids[q], n, n, lc, nv);
        run_seq(gpu, s->ids[q], n, n, lg, nv);
        for (int32_t t = 0; t < n; t++) {
            const float *c = lc + (size_t)t * nv, *g = lg + (size_t)t * nv;
            cr_assert(isfinite(g[0]) && isfinite(g[nv - 1]), "non-finite GPU logits");
            agree += argmax(c, nv) == argmax(g, nv);
            total++;
            worst = fmax(worst, row_rel_err(g, c, nv));
        }
        /* chunked prefill (7 at a time, queries starting mid-sequence) and pure decode agree
         * with the one-shot prefill within bf16 noise */
        int32_t chunks[2] = {7, 1};
        for (int k = 0; k < 2; k++) {
            run_seq(gpu, s->ids[q], n, chunks[k], lk, nv);
            for (int32_t t = 0; t < n; t++)
                cr_assert_lt(row_rel_err(lk + (size_t)t * nv, lg + (size_t)t * nv, nv), 0.02,
                             "prompt %d position %d: chunk %d differs from full prefill", q, t,
                             chunks[k]);
        }
    }
    double rate = (double)agree / total;
    cr_log_info("GPU vs CPU: top-1 agreement %d/%d (%.2f%%), worst row relative error %.4f",
                agree, total, 100 * rate, worst);
    cr_assert_geq(rate, 0.99, "top-1 agreement %.2f%% < 99%%", 100 * rate);
    cr_assert_lt(worst, 0.05);
    free(lc);
    free(lg);
    free(lk);
    free(s);
    gpu->ops->free(gpu);
    cpu->ops->free(cpu);
    eng_model_free(m);
}

/* Greedy requests through the engine on the GPU: all at once equals each alone. */
Test(backend_cuda, engine_batched_equals_alone, .timeout = 600)
{
    if (kn_device_count() < 1)
        cr_skip_test("no CUDA device");
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &m, &err), ENG_OK, "%s", err.msg);
    eng_engine_config c = eng_engine_config_defaults();
    c.backend = ENG_BACKEND_CUDA;
    c.kv_bytes = (int64_t)256 << 20;
    c.check_invariants = true;
    eng_engine *e = NULL;
    cr_assert_eq(eng_engine_create(m, &c, &e, &err), ENG_OK, "%s", err.msg);
    seqs *s = malloc(sizeof *s);
    load_seqs(s, 8);
    int32_t alone[8][64], got[64];
    for (int32_t q = 0; q < s->count; q++) {
        eng_request_params p = eng_request_params_defaults();
        p.tokens = s->ids[q];
        p.n_tokens = s->n_prompt[q];
        p.max_tokens = 32;
        p.ignore_eos = true;
        eng_request *r = NULL;
        cr_assert_eq(eng_submit(e, &p, &r, &err), ENG_OK, "%s", err.msg);
        eng_request_output o;
        char buf[4096];
        do
            eng_request_read(r, buf, sizeof buf, -1, &o);
        while (!o.done);
        cr_assert_eq(eng_request_tokens(r, alone[q], 64), 32);
        eng_request_release(r);
    }
    eng_request *rs[8];
    for (int32_t q = 0; q < s->count; q++) {
        eng_request_params p = eng_request_params_defaults();
        p.tokens = s->ids[q];
        p.n_tokens = s->n_prompt[q];
        p.max_tokens = 32;
        p.ignore_eos = true;
        cr_assert_eq(eng_submit(e, &p, &rs[q], &err), ENG_OK, "%s", err.msg);
    }
    for (int32_t q = 0; q < s->count; q++) {
        eng_request_output o;
        char buf[4096];
        do
            eng_request_read(rs[q], buf, sizeof buf, -1, &o);
        while (!o.done);
        cr_assert_eq(eng_request_tokens(rs[q], got, 64), 32);
        for (int i = 0; i < 32; i++)
            cr_expect_eq(got[i], alone[q][i], "prompt %d token %d: batched %d, alone %d", q, i,
                         got[i], alone[q][i]);
        eng_request_release(rs[q]);
    }
    free(s);
    eng_engine_free(e);
    eng_model_free(m);
}

#else

Test(backend_cuda, not_built)
{
    cr_skip_test("built without CUDA (no nvcc at configure time)");
}

#endif
