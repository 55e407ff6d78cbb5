/* cuda_check.c — serval-cuda-check: end-to-end check of the CUDA backend against the CPU
 * backend on any model (the GPU machine cannot receive the real default model, so synthetic
 * ones work too): logits of full prefills, chunked prefill and decode against full prefill;
 * batched decode with GPU sampling, replayed from CUDA graphs, against eager launches, the CPU
 * backend and the CPU sampling rule; batched-equals-alone through the engine; and greedy
 * output unchanged by speculative decoding (verification chunks over the paged KV).
 * Exit 0 pass, 1 fail, 77 no GPU. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_forward.h" /* eng_cpu_kv_block_bytes: sizing pools like the CPU backend */
#include "device.h"
#include "model.h"
#include "serval_engine.h"

enum { BS = 16 };

static int failures;
static bool fixture_fp16; /* --fp16: the fixture check runs the GPU in fp16 instead of bf16 */
/* --fp16-limit: the batched fp16 decode's worst row against the CPU backend. With fp16
 * weights both backends multiply fp16 by fp16 (the CPU's products take fp16 activations), so
 * what is left is summation order and where each rounds: a tight limit catches an op that
 * differs (a GELU variant, a window one position off) that bf16's noise would hide. */
static double fp16_limit = 0.05;
/* --spec-limit: greedy outputs (of 2 x n_req) that may differ with speculation on. Verification
 * rows take the same attention kernel as one-token decode steps (backend_cuda.c, stage_batch),
 * so on the emulator the two are equal; on a GPU the GEMMs of a verification chunk (more rows)
 * may pick another cuBLAS algorithm and round differently, which this limit allows for while a
 * GPU is measured. A bug in the verification (wrong positions, no rollback) changes most
 * outputs, not one. Default 0. */
static int spec_limit = 0;

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
        if (be->ops->forward(be, &b, NULL, NULL, out + (size_t)c0 * (size_t)n_vocab, &err) !=
            ENG_OK) {
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

/* A backend config for these checks: 4 CPU threads, BS-position blocks. */
static eng_backend_config bcfg(int64_t kv_bytes, int32_t min_blocks, int32_t max_pos,
                               int32_t max_tokens, int32_t max_logits, bool graphs, bool fp16)
{
    return (eng_backend_config){.kv_bytes = kv_bytes, .block_size = BS, .min_blocks = min_blocks,
                                .max_pos = max_pos, .max_tokens = max_tokens,
                                .max_logits = max_logits, .n_threads = 4, .cuda_graphs = graphs,
                                .cuda_fp16 = fp16};
}

static void check_backend(const eng_model *m, int n_seqs, int32_t len)
{
    const int32_t nv = m->hp.n_vocab, maxpos = len + BS;
    int32_t nblocks = 2 * ((len + BS - 1) / BS) + 2;
    eng_backend *cpu = NULL, *gpu = NULL;
    eng_err err;
    size_t kvb = eng_cpu_kv_block_bytes(m, BS) * (size_t)nblocks;
    eng_backend_config cc = bcfg((int64_t)kvb, nblocks, maxpos, len, len, true, false),
                       gc = bcfg((int64_t)kvb + (int64_t)kvb / nblocks, nblocks, maxpos, len, len,
                                 true, false);
    if (eng_backend_cpu_create(m, &cc, &cpu, &err) != ENG_OK ||
        eng_backend_cuda_create(m, &gc, &gpu, &err) != ENG_OK) {
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

/* ---- batched decode with sampling ---------------------------------------------------------- */

enum { N_DEC = 5, N_STEPS = 24, N_ROWS = N_DEC * (N_STEPS + 1) };

/* Each sequence samples its own way: greedy, temperature, top-k, top-p, all three. */
static eng_sample_row dec_row(int q, int32_t step)
{
    eng_sampler_params p = eng_sampler_defaults();
    p.seed = 1000 + (uint64_t)q;
    switch (q % N_DEC) {
    case 1: p.temperature = 0.8f; break;
    case 2: p.temperature = 1.0f; p.top_k = 20; break;
    case 3: p.temperature = 0.7f; p.top_p = 0.9f; break;
    case 4: p.temperature = 1.2f; p.top_k = 50; p.top_p = 0.95f; break;
    }
    return (eng_sample_row){.p = p, .step = (uint64_t)step};
}

/* Prefills N_DEC prompts one by one, then decodes them together for N_STEPS steps (a decode
 * batch of N_DEC, which the CUDA backend pads to its bucket and replays from a graph). Row
 * r = step * N_DEC + q of logits/toks holds sequence q's draw number step. gen[q][k] is the
 * token fed at decode step k: the backend's own draws when own is set, else given (teacher
 * forcing, so every backend sees the same sequences). Sequence q's blocks interleave with
 * the others' (table entry i is block i * N_DEC + q). */
static int decode_run(eng_backend *be, const int32_t *prompts, const int32_t *plen,
                      int32_t gen[N_DEC][N_STEPS + 1], bool own, float *logits, int32_t *toks,
                      int32_t n_vocab)
{
    int32_t tables[N_DEC][64], *tp[N_DEC], tok[N_DEC], pos[N_DEC], seq[N_DEC], idx[N_DEC];
    eng_sample_row rows[N_DEC];
    eng_err err;
    for (int q = 0; q < N_DEC; q++) {
        for (int i = 0; i < 64; i++)
            tables[q][i] = i * N_DEC + q;
        tp[q] = tables[q];
    }
    for (int q = 0; q < N_DEC; q++) { /* prefill alone; its last row is draw 0 */
        int32_t *ppos = malloc(sizeof(int32_t) * (size_t)plen[q]);
        int32_t *pseq = calloc((size_t)plen[q], sizeof(int32_t)), last = plen[q] - 1, t0;
        for (int32_t i = 0; i < plen[q]; i++)
            ppos[i] = i;
        rows[0] = dec_row(q, 0);
        eng_batch b = {.n_tokens = plen[q], .tokens = prompts + q * 256, .pos = ppos,
                       .seq = pseq, .block_tables = (const int32_t *const *)&tp[q], .n_seqs = 1,
                       .logits_idx = &last, .n_logits = 1};
        eng_status st = be->ops->forward(be, &b, rows, &t0, logits + (size_t)q * n_vocab, &err);
        free(ppos);
        free(pseq);
        if (st != ENG_OK) {
            printf("FAIL  %s prefill: %s\n", be->ops->name, err.msg);
            return 1;
        }
        toks[q] = t0;
        if (own)
            gen[q][0] = t0;
    }
    for (int32_t k = 1; k <= N_STEPS; k++) {
        for (int q = 0; q < N_DEC; q++) {
            tok[q] = gen[q][k - 1];
            pos[q] = plen[q] + k - 1;
            seq[q] = q;
            idx[q] = q;
            rows[q] = dec_row(q, k);
        }
        eng_batch b = {.n_tokens = N_DEC, .tokens = tok, .pos = pos, .seq = seq,
                       .block_tables = (const int32_t *const *)tp, .n_seqs = N_DEC,
                       .logits_idx = idx, .n_logits = N_DEC};
        int32_t *out = toks + k * N_DEC;
        if (be->ops->forward(be, &b, rows, out, logits + (size_t)k * N_DEC * n_vocab, &err) !=
            ENG_OK) {
            printf("FAIL  %s decode step %d: %s\n", be->ops->name, k, err.msg);
            return 1;
        }
        if (own)
            for (int q = 0; q < N_DEC; q++)
                gen[q][k] = out[q];
    }
    return 0;
}

static void check_decode(const eng_model *m)
{
    const int32_t nv = m->hp.n_vocab, plen[N_DEC] = {37, 64, 100, 129, 150};
    const int32_t maxpos = 150 + N_STEPS + 1, nblocks = N_DEC * ((maxpos + BS - 1) / BS);
    int32_t *prompts = malloc(sizeof(int32_t) * N_DEC * 256), gen[N_DEC][N_STEPS + 1];
    for (int q = 0; q < N_DEC; q++)
        gen_tokens(prompts + q * 256, plen[q], 0x5eed0ULL + (uint64_t)q, nv);
    size_t kvb = eng_cpu_kv_block_bytes(m, BS) * (size_t)(nblocks + 1), rowsz = (size_t)N_ROWS * nv;
    float *lg = malloc(sizeof(float) * rowsz), *le = malloc(sizeof(float) * rowsz);
    float *lc = malloc(sizeof(float) * rowsz), *scratch = malloc(sizeof(float) * (size_t)nv);
    float *lh = malloc(sizeof(float) * rowsz);
    int32_t tg[N_ROWS], te[N_ROWS], tc[N_ROWS], th[N_ROWS];
    eng_backend *be[4] = {NULL, NULL, NULL, NULL};
    eng_err err;
    const eng_backend_config graphs = bcfg((int64_t)kvb, nblocks, maxpos, 256, 64, true, false),
                             eager = bcfg((int64_t)kvb, nblocks, maxpos, 256, 64, false, false),
                             fp16 = bcfg((int64_t)kvb, nblocks, maxpos, 256, 64, true, true);
    if (eng_backend_cuda_create(m, &graphs, &be[0], &err) != ENG_OK ||
        eng_backend_cuda_create(m, &eager, &be[1], &err) != ENG_OK ||
        eng_backend_cpu_create(m, &graphs, &be[2], &err) != ENG_OK ||
        eng_backend_cuda_create(m, &fp16, &be[3], &err) != ENG_OK) {
        printf("FAIL  creating the backends: %s\n", err.msg);
        failures++;
        goto out;
    }
    if (decode_run(be[0], prompts, plen, gen, true, lg, tg, nv) ||
        decode_run(be[1], prompts, plen, gen, false, le, te, nv) ||
        decode_run(be[2], prompts, plen, gen, false, lc, tc, nv) ||
        decode_run(be[3], prompts, plen, gen, false, lh, th, nv)) {
        failures++;
        goto out;
    }
    int rule = 0, eager_same = 0, cpu_same = 0, top1 = 0;
    double worst_eager = 0, worst_cpu = 0, worst_fp16 = 0;
    for (int r = 0; r < N_ROWS; r++) {
        const size_t o = (size_t)r * nv;
        eng_sample_row row = dec_row(r % N_DEC, r / N_DEC);
        rule += eng_sample(lg + o, nv, &row.p, row.step, scratch) == tg[r];
        eager_same += te[r] == tg[r];
        cpu_same += tc[r] == tg[r];
        top1 += argmax(lg + o, nv) == argmax(lc + o, nv);
        worst_eager = fmax(worst_eager, row_rel_err(le + o, lg + o, nv));
        worst_cpu = fmax(worst_cpu, row_rel_err(lg + o, lc + o, nv));
        worst_fp16 = fmax(worst_fp16, row_rel_err(lh + o, lc + o, nv));
    }
    printf("info  batched decode, %d sequences x %d steps, 5 sampling settings: GPU draws equal "
           "to the CPU rule on the GPU's logits %d/%d; graph vs eager tokens %d/%d; GPU vs CPU "
           "backend tokens %d/%d, top-1 %d/%d\n", N_DEC, N_STEPS, rule, N_ROWS, eager_same,
           N_ROWS, cpu_same, N_ROWS, top1, N_ROWS);
    /* a draw that lands within float rounding of a token boundary may pick the neighbour
     * (the GPU sums in fp32, eng_sample in double): a few such rows are expected, not more */
    check(rule >= N_ROWS - 3, "GPU sampling follows eng_sample's rule: %.0f rows differ (limit %.0f)",
          N_ROWS - rule, 3);
    check(worst_eager < 0.02, "decode from graphs vs eager launches: worst row %.4f (limit %.2f)",
          worst_eager, 0.02);
    check(worst_cpu < 0.05, "batched GPU decode vs CPU backend logits: worst row %.4f (limit %.2f)",
          worst_cpu, 0.05);
    check(worst_fp16 < fp16_limit,
          "batched GPU decode in fp16 vs CPU backend: worst row %.4f (limit %.3f)", worst_fp16,
          fp16_limit);
out:
    for (int i = 0; i < 4; i++)
        if (be[i])
            be[i]->ops->free(be[i]);
    free(prompts);
    free(lg);
    free(le);
    free(lc);
    free(lh);
    free(scratch);
}

/* ---- the llama.cpp greedy fixture ---------------------------------------------------------- */

/* Reads the int array that follows "key": [ in line into out (at most cap); returns the count
 * or -1 when the key is missing. The fixture is our own file (tools/gen_llamacpp_fixtures.py). */
static int json_ints(const char *line, const char *key, int32_t *out, int cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    p += strspn(p, " \t");
    if (*p++ != ':')
        return -1;
    p += strspn(p, " \t");
    if (*p++ != '[')
        return -1;
    int n = 0;
    for (;;) {
        p += strspn(p, " \t,");
        if (*p == ']' || !*p || n == cap)
            break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            return -1;
        out[n++] = (int32_t)v;
        p = end;
    }
    return n;
}

/* Teacher-forced over each fixture (prompt, then llama.cpp's greedy continuation): the GPU's
 * argmax must reproduce llama.cpp's tokens for the first 32 (then greedy decoding on the GPU
 * follows the same path), or agree at >= 99% of positions with the exact argmax (exact_path:
 * tools/ref_forward.py's float64 top-1 per position, one JSON line per fixture) or, without
 * that file, with the CPU backend's top-1. llama.cpp and the CPU backend quantise activations
 * to 8 bits; where the exact answer is a near tie they pick differently from exact arithmetic. */
static void check_fixture(const eng_model *m, const char *path, const char *exact_path, int limit)
{
    FILE *f = fopen(path, "r"), *fe = exact_path ? fopen(exact_path, "r") : NULL;
    if (!f || (exact_path && !fe)) {
        printf("FAIL  cannot open fixture %s\n", !f ? path : exact_path);
        failures++;
        if (f)
            fclose(f);
        return;
    }
    const int32_t nv = m->hp.n_vocab, maxpos = 512;
    const int32_t nblocks = 2 * (maxpos / BS) + 2;
    size_t kvb = eng_cpu_kv_block_bytes(m, BS) * (size_t)(nblocks + 1);
    eng_backend *cpu = NULL, *gpu = NULL;
    eng_err err;
    const eng_backend_config fc = bcfg((int64_t)kvb, nblocks, maxpos, maxpos, maxpos, true,
                                       fixture_fp16);
    if (eng_backend_cpu_create(m, &fc, &cpu, &err) != ENG_OK ||
        eng_backend_cuda_create(m, &fc, &gpu, &err) != ENG_OK) {
        printf("FAIL  creating the backends: %s\n", err.msg);
        failures++;
        if (cpu)
            cpu->ops->free(cpu);
        fclose(f);
        if (fe)
            fclose(fe);
        return;
    }
    float *lc = malloc(sizeof(float) * (size_t)maxpos * nv);
    float *lg = malloc(sizeof(float) * (size_t)maxpos * nv);
    static char line[1 << 16], eline[1 << 16];
    int32_t seq[512], exact[256];
    int n_fx = 0, short_runs = 0, agree = 0, total = 0, agree_x = 0, total_x = 0;
    double worst = 0;
    while (fgets(line, sizeof line, f) && (limit <= 0 || n_fx < limit)) {
        int np = json_ints(line, "prompt_ids", seq, 256);
        int nt = np > 0 ? json_ints(line, "tokens", seq + np, 256) : -1;
        if (np <= 0 || nt <= 0)
            continue;
        int ne = -1;
        if (fe && fgets(eline, sizeof eline, fe))
            ne = json_ints(eline, "top1", exact, 256);
        const int32_t n = np + nt - 1; /* the last token is never an input */
        if (run_seq(cpu, seq, n, n, lc, nv) || run_seq(gpu, seq, n, n, lg, nv)) {
            failures++;
            break;
        }
        int lead = 0;
        while (lead < nt && argmax(lg + (size_t)(np - 1 + lead) * nv, nv) == seq[np + lead])
            lead++;
        for (int32_t t = np - 1; t < n; t++) {
            agree += argmax(lg + (size_t)t * nv, nv) == argmax(lc + (size_t)t * nv, nv);
            total++;
            worst = fmax(worst, row_rel_err(lg + (size_t)t * nv, lc + (size_t)t * nv, nv));
            if (t - (np - 1) < ne) {
                agree_x += argmax(lg + (size_t)t * nv, nv) == exact[t - (np - 1)];
                total_x++;
            }
        }
        short_runs += lead < (nt < 32 ? nt : 32);
        printf("info  fixture %-3d %3d prompt tokens: GPU greedy follows llama.cpp for %d of %d "
               "tokens\n", n_fx, np, lead, nt);
        n_fx++;
    }
    fclose(f);
    if (fe)
        fclose(fe);
    printf("info  fixture: %d prompts, top-1 GPU vs CPU backend %d/%d, worst row rel err %.4f\n",
           n_fx, agree, total, worst);
    if (fe)
        printf("info  fixture: top-1 GPU vs exact float64 argmax %d/%d\n", agree_x, total_x);
    printf("info  fixture: %d of %d prompts leave llama.cpp's greedy path within 32 tokens\n",
           short_runs, n_fx);
    /* on llama.cpp's path for 32 tokens everywhere, or else top-1 agreement decides */
    const double pct = short_runs == 0 ? 100.0
                       : fe            ? (total_x ? 100.0 * agree_x / total_x : 0.0)
                                       : (total ? 100.0 * agree / total : 0.0);
    check(n_fx > 0 && pct >= 99.0,
          fe ? "fixture: GPU top-1 equals the exact argmax at %.1f%% of positions (limit %.0f%%)"
             : "fixture: GPU top-1 equals the CPU backend's at %.1f%% of positions (limit %.0f%%)",
          pct, 99.0);
    free(lc);
    free(lg);
    gpu->ops->free(gpu);
    cpu->ops->free(cpu);
}

/* A model with learned positions has a row for each position it was trained on: a backend
 * asked for more must refuse at creation rather than read past the table. */
static void check_position_limit(const eng_model *m)
{
    if (!m->pos_embd.data)
        return;
    const int32_t rows = (int32_t)m->pos_embd.ne1;
    eng_backend_config c = bcfg((int64_t)1 << 26, 1, rows + 1, 16, 4, false, false);
    eng_backend *be = NULL;
    eng_err err;
    eng_status st = eng_backend_cuda_create(m, &c, &be, &err);
    check(st == ENG_ERR_INVALID, "learned positions: a backend for %.0f positions is refused "
          "(the model has %.0f)", rows + 1, rows);
    if (be)
        be->ops->free(be);
}

/* Greedy requests through the engine on the GPU: together equals each alone. Together, each
 * request is submitted once the one before has output something, so every step after the first
 * mixes decode rows of the earlier requests with prompt rows of a later one: a decode row must
 * take the decode arithmetic whatever shares its step (backend_cuda.c, stage_batch). */
static void check_engine(const eng_model *m, int n_req, int32_t len, int32_t out_len)
{
    eng_engine_config c = eng_engine_config_defaults();
    c.backend = ENG_BACKEND_CUDA;
    c.kv_bytes = (int64_t)1 << 30;
    c.max_seq_len = len + out_len + 16;
    c.check_invariants = true;
    /* The latency schedule sizes prefill chunks from measured step times; this check is about
     * the kernels' batch invariance, so the planning is kept repeatable. */
    c.schedule = ENG_SCHEDULE_THROUGHPUT;
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
            eng_request_output o;
            char buf[1024];
            if (pass == 0) { /* alone: wait for it before the next */
                do
                    eng_request_read(rs[q], buf, sizeof buf, -1, &o);
                while (!o.done);
                eng_request_tokens(rs[q], alone + (size_t)q * (size_t)out_len, out_len);
                eng_request_release(rs[q]);
            } else { /* together: the next joins while this one decodes */
                eng_request_read(rs[q], buf, sizeof buf, -1, &o);
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

/* Greedy requests through the engine on the GPU with speculative decoding on and off: the same
 * tokens, alone and batched. Prompts repeat a segment, so drafts come from the prompt and a
 * verification pass is a multi-token chunk of a decoding sequence with logits at each of its
 * positions (the eager path: decode graphs hold one token per sequence). */
static void check_speculation(const eng_model *m, int n_req, int32_t seg, int32_t out_len)
{
    const int32_t len = 3 * seg;
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)n_req * (size_t)len);
    /* res[mode][batched][q][out_len] */
    int32_t *res = calloc(4 * (size_t)n_req * (size_t)out_len, sizeof(int32_t));
    eng_request **rs = malloc(sizeof *rs * (size_t)n_req);
    for (int q = 0; q < n_req; q++) {
        int32_t *p = prompts + (size_t)q * (size_t)len;
        gen_tokens(p, seg, 0x5eedULL + (uint64_t)q, m->hp.n_vocab);
        memcpy(p + seg, p, sizeof(int32_t) * (size_t)seg);
        memcpy(p + 2 * seg, p, sizeof(int32_t) * (size_t)seg);
    }
    eng_engine_stats st = {0};
    for (int mode = 0; mode < 2; mode++) {
        eng_engine_config c = eng_engine_config_defaults();
        c.backend = ENG_BACKEND_CUDA;
        c.kv_bytes = (int64_t)1 << 28;
        c.max_seq_len = len + out_len + 16;
        c.check_invariants = true;
        c.schedule = ENG_SCHEDULE_THROUGHPUT; /* repeatable chunking, as in check_engine */
        c.speculate = mode == 0 ? ENG_SPECULATE_OFF : ENG_SPECULATE_ON;
        eng_engine *e = NULL;
        eng_err err;
        if (eng_engine_create(m, &c, &e, &err) != ENG_OK) {
            printf("FAIL  creating a CUDA engine: %s\n", err.msg);
            failures++;
            goto out;
        }
        for (int batched = 0; batched < 2; batched++) {
            for (int q = 0; q < n_req; q++) {
                eng_request_params rp = eng_request_params_defaults();
                rp.tokens = prompts + (size_t)q * (size_t)len;
                rp.n_tokens = len - q; /* different lengths: drafts at different offsets */
                rp.max_tokens = out_len;
                rp.ignore_eos = true;
                if (eng_submit(e, &rp, &rs[q], &err) != ENG_OK) {
                    printf("FAIL  submit: %s\n", err.msg);
                    failures++;
                    eng_engine_free(e);
                    goto out;
                }
                if (batched && q < n_req - 1)
                    continue; /* batched: submit all, then read all */
                for (int w = batched ? 0 : q; w <= q; w++) {
                    eng_request_output o;
                    char buf[1024];
                    do
                        eng_request_read(rs[w], buf, sizeof buf, -1, &o);
                    while (!o.done);
                    size_t at = (((size_t)mode * 2 + (size_t)batched) * (size_t)n_req + (size_t)w) *
                                (size_t)out_len;
                    eng_request_tokens(rs[w], res + at, out_len);
                    eng_request_release(rs[w]);
                }
            }
        }
        if (mode == 1)
            eng_engine_stats_get(e, &st);
        eng_engine_free(e);
    }
    int differ = 0;
    size_t half = 2 * (size_t)n_req * (size_t)out_len;
    for (size_t r = 0; r < 2 * (size_t)n_req; r++)
        differ += memcmp(res + r * (size_t)out_len, res + half + r * (size_t)out_len,
                         sizeof(int32_t) * (size_t)out_len) != 0;
    printf("info  speculation on CUDA: %lld drafted, %lld accepted, %lld verification passes\n",
           (long long)st.spec_drafted, (long long)st.spec_accepted, (long long)st.spec_passes);
    check(st.spec_passes > 0, "speculation on CUDA: %.0f verification passes (want > %.0f)",
          (double)st.spec_passes, 0);
    check(differ <= spec_limit, "speculation on CUDA: %.0f of %.0f greedy outputs differ from it off",
          differ, 2 * n_req);
out:
    free(prompts);
    free(res);
    free(rs);
}

int main(int argc, char **argv)
{
    const char *model = NULL, *fixture = NULL, *exact = NULL;
    int limit = 0;
    bool quick = false, small = false, spec_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else if (!strcmp(argv[i], "--small")) {
            small = true;
        } else if (!strcmp(argv[i], "--spec-only")) {
            spec_only = true;
        } else if (!strcmp(argv[i], "--fp16")) {
            fixture_fp16 = true;
        } else if (i + 1 < argc && !strcmp(argv[i], "--spec-limit")) {
            spec_limit = atoi(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--fp16-limit")) {
            fp16_limit = atof(argv[++i]);
        } else if (i + 1 < argc && !strcmp(argv[i], "--model")) {
            model = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--fixture")) {
            fixture = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--exact")) {
            exact = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--fixture-limit")) {
            limit = atoi(argv[++i]);
        } else {
            model = NULL;
            break;
        }
    }
    if (!model) {
        fprintf(stderr,
                "usage: serval-cuda-check --model PATH [--fixture greedy.jsonl [--exact "
                "greedy_exact_top1.jsonl] [--fixture-limit N]] "
                "[--quick | --small | --spec-only] [--fp16] [--fp16-limit L] [--spec-limit N]\n"
                "Compares the CUDA backend with the CPU backend on MODEL: logits of prefills, "
                "chunked prefill and decode; batched decode with GPU sampling from CUDA graphs; "
                "batched == alone through the engine; speculation on == off. --fixture: also the llama.cpp greedy "
                "fixture (tests/fixtures/llamacpp/greedy.jsonl, for the default model), first N "
                "prompts (--fp16: with fp16 weights and activations; --exact: judge the GPU's top-1 "
                "against tools/ref_forward.py's float64 argmax). --quick: the fixture only. --small: "
                "fewer and shorter sequences in the prefill and engine checks (the emulator). "
                "--spec-only: only speculation on == off, small (the emulator). "
                "--fp16-limit: the batched fp16 decode's limit against the CPU backend (default "
                "0.05; about 0.01 for a model with f16 weights). --spec-limit: greedy outputs "
                "that may differ with speculation on (default 0; on a GPU, GEMMs over a "
                "verification chunk may round unlike one-token steps). "
                "Exit 0 pass, 1 fail, 77 no GPU.\n");
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
    if (spec_only) {
        check_speculation(m, 3, 16, 12);
    } else if (fixture) {
        check_fixture(m, fixture, exact, limit);
    }
    if (!quick && !spec_only) {
        check_position_limit(m);
        check_backend(m, small ? 2 : 4, small ? 64 : 160);
        check_decode(m);
        if (small) {
            check_engine(m, 4, 40, 12);
            check_speculation(m, 3, 16, 12);
        } else {
            check_engine(m, 8, 96, 32);
            check_speculation(m, 4, 16, 16);
        }
    }
    eng_model_free(m);
    printf("%s\n", failures ? "FAILED" : "ALL PASSED");
    return failures ? 1 : 0;
}
