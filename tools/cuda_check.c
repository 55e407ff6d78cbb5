/* cuda_check.c — serval-cuda-check: end-to-end check of the CUDA backend against the CPU
 * backend on any model (the GPU machine cannot receive the real default model, so synthetic
 * ones work too): logits of full prefills, chunked prefill and decode against full prefill,
 * and batched-equals-alone through the engine. Exit 0 pass, 1 fail, 77 no GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "device.h"
#include "model.h"
#include "serval_engine.h"

enum { BS = 16 };

static int failures;

static void check(int ok, const char *fmt, double v, double limit)
{
    printf("%s  ", ok ? "PASS" : "FAIL");
    printf(fmt, v, limit);
    printf("\n");
    failures += !ok;
}

/* Runs one sequence through be in chunks, logits of every position into out [n, n_vocab].
 * The sequence's blocks are taken from the end of the pool, so the table is not the identity. */
static int run_seq(eng_backend *be, const int32_t *tokens, int32_t n, int32_t chunk, float *out,
                   int32_t n_vocab)
{
    int32_t nb = (n + BS - 1) / BS;
    int32_t *table = malloc(sizeof(int32_t) * (size_t)nb), *pos = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *seq = calloc((size_t)n, sizeof(int32_t)), *idx = malloc(sizeof(int32_t) * (size_t)n);
    for (int32_t i = 0; i < nb; i++)
        table[i] = be->n_blocks - 1 - 2 * i; /* holes between the blocks */
    const int32_t *tables[1] = {table};
    int rc = 0;
    for (int32_t c0 = 0; c0 < n && rc == 0; c0 += chunk) {
        int32_t cn = n - c0 < chunk ? n - c0 : chunk;
        for (int32_t i = 0; i < cn; i++) {
            pos[i] = c0 + i;
            idx[i] = i;
        }
        eng_batch b = {.n_tokens = cn, .tokens = tokens + c0, .pos = pos, .seq = seq,
                       .block_tables = tables, .n_seqs = 1, .logits_idx = idx, .n_logits = cn};
        eng_err err;
        if (be->ops->forward(be, &b, out + (size_t)c0 * (size_t)n_vocab, &err) != ENG_OK) {
            printf("FAIL  %s forward: %s\n", be->ops->name, err.msg);
            rc = 1;
        }
    }
    free(table);
    free(pos);
    free(seq);
    free(idx);
    return rc;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static double row_rel_err(const float *a, const float *b, int32_t n)
{
    double md = 0, mb = 0;
    for (int32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md || isnan(d) ? d : md;
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / (mb > 0 ? mb : 1);
}

static void gen_tokens(int32_t *t, int32_t n, uint64_t seed, int32_t n_vocab)
{
    for (int32_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        t[i] = 300 + (int32_t)(seed % (uint64_t)(n_vocab - 400));
    }
}

static void check_backend(const eng_model *m, int n_seqs, int32_t len)
{
    const int32_t nv = m->hp.n_vocab, maxpos = len + BS;
    int32_t nblocks = 2 * ((len + BS - 1) / BS) + 2;
    eng_backend *cpu = NULL, *gpu = NULL;
    eng_err err;
    size_t kvb = eng_cpu_kv_block_bytes(m, BS) * (size_t)nblocks;
    if (eng_backend_cpu_create(m, (int64_t)kvb, BS, nblocks, maxpos, 4, &cpu, &err) != ENG_OK ||
        eng_backend_cuda_create(m, (int64_t)kvb, BS, nblocks, maxpos, len, len, &gpu, &err) !=
            ENG_OK) {
        printf("FAIL  creating the backends: %s\n", err.msg);
        failures++;
        if (cpu)
            cpu->ops->free(cpu);
        return;
    }
    float *lc = malloc(sizeof(float) * (size_t)len * (size_t)nv);
    float *lg = malloc(sizeof(float) * (size_t)len * (size_t)nv);
    float *lk = malloc(sizeof(float) * (size_t)len * (size_t)nv);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)len);
    int agree = 0, total = 0;
    double worst = 0, worst_chunk = 0, worst_dec = 0;
    for (int q = 0; q < n_seqs; q++) {
        gen_tokens(tok, len, 0x1234567ULL + (uint64_t)q * 7919, nv);
        if (run_seq(cpu, tok, len, len, lc, nv) || run_seq(gpu, tok, len, len, lg, nv)) {
            failures++;
            break;
        }
        for (int32_t t = 0; t < len; t++) {
            const float *c = lc + (size_t)t * nv, *g = lg + (size_t)t * nv;
            agree += argmax(c, nv) == argmax(g, nv);
            total++;
            worst = fmax(worst, row_rel_err(g, c, nv));
        }
        if (run_seq(gpu, tok, len, 7, lk, nv) == 0)
            for (int32_t t = 0; t < len; t++)
                worst_chunk = fmax(worst_chunk, row_rel_err(lk + (size_t)t * nv, lg + (size_t)t * nv, nv));
        if (run_seq(gpu, tok, len, 1, lk, nv) == 0)
            for (int32_t t = 0; t < len; t++)
                worst_dec = fmax(worst_dec, row_rel_err(lk + (size_t)t * nv, lg + (size_t)t * nv, nv));
    }
    printf("info  %d sequences x %d tokens: top-1 agreement GPU vs CPU %d/%d (%.2f%%)\n", n_seqs,
           len, agree, total, total ? 100.0 * agree / total : 0);
    check(worst < 0.05, "GPU vs CPU logits: worst row relative error %.4f (limit %.2f)", worst, 0.05);
    check(worst_chunk < 0.02, "chunked prefill (7) vs full prefill: worst %.4f (limit %.2f)",
          worst_chunk, 0.02);
    check(worst_dec < 0.02, "decode (1 token per step) vs full prefill: worst %.4f (limit %.2f)",
          worst_dec, 0.02);
    free(lc);
    free(lg);
    free(lk);
    free(tok);
    gpu->ops->free(gpu);
    cpu->ops->free(cpu);
}

/* Greedy requests through the engine on the GPU: all at once equals each alone. */
static void check_engine(const eng_model *m, int n_req, int32_t len, int32_t out_len)
{
    eng_engine_config c = eng_engine_config_defaults();
    c.backend = ENG_BACKEND_CUDA;
    c.kv_bytes = (int64_t)1 << 30;
    c.max_seq_len = len + out_len + 16;
    c.check_invariants = true;
    eng_engine *e = NULL;
    eng_err err;
    if (eng_engine_create(m, &c, &e, &err) != ENG_OK) {
        printf("FAIL  creating a CUDA engine: %s\n", err.msg);
        failures++;
        return;
    }
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)n_req * (size_t)len);
    int32_t *alone = malloc(sizeof(int32_t) * (size_t)n_req * (size_t)out_len);
    int32_t *got = malloc(sizeof(int32_t) * (size_t)out_len);
    eng_request **rs = malloc(sizeof *rs * (size_t)n_req);
    int mismatched = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int q = 0; q < n_req; q++) {
            int32_t *p = prompts + (size_t)q * (size_t)len;
            if (pass == 0)
                gen_tokens(p, len - 8 * q, 0xabcdefULL + (uint64_t)q, m->hp.n_vocab);
            eng_request_params rp = eng_request_params_defaults();
            rp.tokens = p;
            rp.n_tokens = len - 8 * q; /* different lengths */
            rp.max_tokens = out_len;
            rp.ignore_eos = true;
            if (eng_submit(e, &rp, &rs[q], &err) != ENG_OK) {
                printf("FAIL  submit: %s\n", err.msg);
                failures++;
                goto out;
            }
            if (pass == 0) { /* alone: wait for it before the next */
                eng_request_output o;
                char buf[1024];
                do
                    eng_request_read(rs[q], buf, sizeof buf, -1, &o);
                while (!o.done);
                eng_request_tokens(rs[q], alone + (size_t)q * (size_t)out_len, out_len);
                eng_request_release(rs[q]);
            }
        }
        if (pass == 1) {
            for (int q = 0; q < n_req; q++) {
                eng_request_output o;
                char buf[1024];
                do
                    eng_request_read(rs[q], buf, sizeof buf, -1, &o);
                while (!o.done);
                eng_request_tokens(rs[q], got, out_len);
                mismatched += memcmp(got, alone + (size_t)q * (size_t)out_len,
                                     sizeof(int32_t) * (size_t)out_len) != 0;
                eng_request_release(rs[q]);
            }
        }
    }
    check(mismatched == 0, "engine on CUDA: %.0f of %.0f batched requests differ from alone",
          mismatched, n_req);
out:
    free(prompts);
    free(alone);
    free(got);
    free(rs);
    eng_engine_free(e);
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
    if (!model) {
        fprintf(stderr, "usage: serval-cuda-check --model PATH\n"
                        "Compares the CUDA backend with the CPU backend on MODEL; exit 0 pass, "
                        "1 fail, 77 no GPU.\n");
        return 2;
    }
    if (kn_device_count() < 1) {
        printf("SKIP  no CUDA device\n");
        return 77;
    }
    char name[256] = "";
    kn_device_name(0, name, sizeof name);
    eng_model *m = NULL;
    eng_err err;
    if (eng_model_load(model, &m, &err) != ENG_OK) {
        fprintf(stderr, "serval-cuda-check: %s\n", err.msg);
        return 1;
    }
    printf("info  %s on %s\n", m->hp.name, name);
    check_backend(m, 4, 160);
    check_engine(m, 8, 96, 32);
    eng_model_free(m);
    printf("%s\n", failures ? "FAILED" : "ALL PASSED");
    return failures ? 1 : 0;
}
