/* test_tp.c — tensor parallelism on the CPU backend (cfg.tp, cpu/backend_cpu_tp.c over
 * model/shard.c and comm/comm_threads.c): for every family's tiny synthetic model, two
 * sequences' prompts in one batch (two forward chunks) and eight batched greedy steps give the
 * same tokens split over 2 and 4 ranks as unsplit, with logits within a stated tolerance; the
 * split itself (heads, replicated KV heads, FFN blocks, vocabulary rows) and the degrees a
 * model refuses, with messages that name why; a rank that fails or never runs the batch fails
 * the others' forward with the reason instead of hanging. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "comm.h"
#include "cpu_forward.h"
#include "model.h"
#include "shard.h"
#include "testutil.h"

#define VOCAB "tests/fixtures/families/vocab-smollm-4096.gguf"

enum { N_SEQ = 2, N_GEN = 8, MAX_POS = 128, BLOCK = 16, PROMPT0 = 50, PROMPT1 = 30 };

/* serval-synth's tiny model of a preset (temp path: caller unlinks and frees). */
static char *synth(const char *preset, const char *dtype, const char *ffn)
{
    char *path = tu_temp_path(".gguf"), *bin = tu_bin_path("serval-synth");
    char *vocab = tu_source_path(VOCAB);
    char *argv[16] = {bin, "--preset", (char *)preset, "--seed", "5", "--dtype", (char *)dtype,
                      "--vocab-from", vocab, "--out", path};
    int a = 11;
    if (strcmp(preset, "smollm2-135m") == 0) { /* real shapes, one layer: enough to split */
        argv[a++] = "--layers";
        argv[a++] = "1";
    }
    if (ffn) {
        argv[a++] = "--ffn";
        argv[a++] = (char *)ffn;
    }
    argv[a] = NULL;
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 120);
    cr_assert_eq(rc, 0, "serval-synth --preset %s failed (%d): %s", preset, rc, err ? err : "");
    free(err);
    free(vocab);
    free(bin);
    return path;
}

static eng_backend_config config(int tp, int threads)
{
    return (eng_backend_config){.kv_bytes = 64 << 20, .block_size = BLOCK, .min_blocks = 1,
                                .max_pos = MAX_POS, .max_tokens = 256, .max_logits = 128,
                                .n_threads = threads, .tp = tp};
}

/* What one run produced: every logits row (prompts, then each greedy step's two rows) and
 * the greedy tokens. */
typedef struct run_out {
    float *logits; /* [n_rows, n_vocab] */
    int n_rows;
    int32_t tokens[N_GEN][N_SEQ];
} run_out;

static void run(const eng_model *m, int tp, int threads, run_out *o)
{
    const int32_t nv = m->hp.n_vocab, n_prompt = PROMPT0 + PROMPT1;
    eng_backend *be = NULL;
    eng_err err = {{0}};
    eng_backend_config cfg = config(tp, threads);
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_OK, "tp %d: %s", tp, err.msg);
    o->n_rows = n_prompt + N_GEN * N_SEQ;
    o->logits = malloc(sizeof(float) * (size_t)o->n_rows * (size_t)nv);
    /* Sequence s owns blocks [s * 8, s * 8 + 8). */
    int32_t t0[MAX_POS / BLOCK], t1[MAX_POS / BLOCK];
    for (int i = 0; i < MAX_POS / BLOCK; i++) {
        t0[i] = i;
        t1[i] = MAX_POS / BLOCK + i;
    }
    const int32_t *tables[N_SEQ] = {t0, t1};
    int32_t tok[PROMPT0 + PROMPT1], pos[PROMPT0 + PROMPT1], seq[PROMPT0 + PROMPT1],
        idx[PROMPT0 + PROMPT1];
    uint32_t lcg = 12345;
    for (int32_t i = 0; i < n_prompt; i++) {
        lcg = lcg * 1664525u + 1013904223u;
        tok[i] = (int32_t)((lcg >> 8) % (uint32_t)nv);
        seq[i] = i < PROMPT0 ? 0 : 1;
        pos[i] = i < PROMPT0 ? i : i - PROMPT0;
        idx[i] = i;
    }
    eng_batch b = {.n_tokens = n_prompt, .tokens = tok, .pos = pos, .seq = seq,
                   .block_tables = tables, .n_seqs = N_SEQ, .logits_idx = idx,
                   .n_logits = n_prompt};
    cr_assert_eq(be->ops->forward(be, &b, NULL, NULL, o->logits, &err), ENG_OK, "%s", err.msg);
    int32_t next[N_SEQ] = {tu_argmax(o->logits + (size_t)(PROMPT0 - 1) * nv, nv),
                           tu_argmax(o->logits + (size_t)(n_prompt - 1) * nv, nv)};
    for (int g = 0; g < N_GEN; g++) {
        int32_t dpos[N_SEQ] = {PROMPT0 + g, PROMPT1 + g}, dseq[N_SEQ] = {0, 1},
                didx[N_SEQ] = {0, 1};
        o->tokens[g][0] = next[0];
        o->tokens[g][1] = next[1];
        eng_batch d = {.n_tokens = N_SEQ, .tokens = next, .pos = dpos, .seq = dseq,
                       .block_tables = tables, .n_seqs = N_SEQ, .logits_idx = didx,
                       .n_logits = N_SEQ};
        float *rows = o->logits + (size_t)(n_prompt + g * N_SEQ) * nv;
        cr_assert_eq(be->ops->forward(be, &d, NULL, NULL, rows, &err), ENG_OK, "%s", err.msg);
        int32_t n0 = tu_argmax(rows, nv), n1 = tu_argmax(rows + nv, nv);
        next[0] = n0;
        next[1] = n1;
    }
    be->ops->free(be);
}

/* max over rows of max |a - b| / std(a's row). */
static double max_rel_diff(const run_out *a, const run_out *b, int32_t nv, int *identical_rows)
{
    double worst = 0;
    *identical_rows = 0;
    for (int r = 0; r < a->n_rows; r++) {
        const float *x = a->logits + (size_t)r * nv, *y = b->logits + (size_t)r * nv;
        double s = 0, s2 = 0, d = 0;
        for (int32_t i = 0; i < nv; i++) {
            s += x[i];
            s2 += (double)x[i] * x[i];
            double e = fabs((double)x[i] - y[i]);
            if (e > d)
                d = e;
        }
        double sd = sqrt(s2 / nv - (s / nv) * (s / nv));
        *identical_rows += memcmp(x, y, sizeof(float) * (size_t)nv) == 0;
        if (d / sd > worst)
            worst = d / sd;
    }
    return worst;
}

/* The preset's tiny model split over each degree of `degrees` (0-terminated) against the
 * whole: the same greedy tokens, logits within tol x the row's std. */
static void check_family(const char *preset, const char *dtype, const char *ffn,
                         const int *degrees, double tol)
{
    char *path = synth(preset, dtype, ffn);
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_OK, "%s", err.msg);
    const int32_t nv = m->hp.n_vocab;
    run_out whole;
    run(m, 1, 2, &whole);
    for (int k = 0; degrees[k]; k++) {
        run_out split;
        run(m, degrees[k], degrees[k], &split);
        for (int g = 0; g < N_GEN; g++)
            for (int s = 0; s < N_SEQ; s++)
                cr_assert_eq(split.tokens[g][s], whole.tokens[g][s],
                             "%s %s over %d ranks: greedy token %d of sequence %d is %d, %d "
                             "unsplit", preset, dtype, degrees[k], g, s, split.tokens[g][s],
                             whole.tokens[g][s]);
        int same;
        double rel = max_rel_diff(&whole, &split, nv, &same);
        cr_log_info("%s %s over %d ranks: greedy %d/%d tokens equal, %d/%d logit rows "
                    "bit-identical, max |diff| %.3g x row std", preset, dtype, degrees[k],
                    N_GEN * N_SEQ, N_GEN * N_SEQ, same, whole.n_rows, rel);
        cr_assert_leq(rel, tol, "%s %s over %d ranks: logits differ by %.3g x row std > %.3g",
                      preset, dtype, degrees[k], rel, tol);
        free(split.logits);
    }
    free(whole.logits);
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* F32 weights: the split changes only the order of the float sums of the row-parallel
 * products (each rank's part, then the parts in rank order): ~1e-6..2e-4 of a row's std for
 * SwiGLU families; GELU goes through a table indexed by the input rounded to fp16, where a
 * one-ulp difference can pick the neighbouring entry (starcoder, starcoder2: up to ~7e-4 seen). */
#define TOL_F32 5e-3
/* Q8_0: the activations are quantised in the same blocks either way, but a one-ulp difference
 * upstream can move an activation across a rounding boundary of its block. */
#define TOL_Q8 2e-2

static const int TP_2_4[] = {2, 4, 0};

Test(tp, llama_split_over_2_and_4_ranks_equals_unsplit, .timeout = 120)
{
    check_family("tiny", "f32", NULL, TP_2_4, TOL_F32); /* 4 heads, 2 KV heads: 4 replicates */
}

Test(tp, deepseek_coder_split_equals_unsplit, .timeout = 120)
{
    check_family("deepseek-coder-tiny", "f32", NULL, TP_2_4, TOL_F32);
}

Test(tp, qwen2_split_with_qkv_biases_equals_unsplit, .timeout = 120)
{
    check_family("qwen2-tiny", "f32", NULL, TP_2_4, TOL_F32);
}

Test(tp, starcoder_mqa_learned_positions_split_equals_unsplit, .timeout = 120)
{
    check_family("starcoder-tiny", "f32", NULL, TP_2_4, TOL_F32);
}

Test(tp, starcoder2_split_with_biases_and_window_equals_unsplit, .timeout = 120)
{
    check_family("starcoder2-tiny", "f32", NULL, TP_2_4, TOL_F32);
}

Test(tp, quantised_llama_with_uneven_ffn_blocks_split_over_2_equals_unsplit, .timeout = 120)
{
    /* ffn 160 = 5 Q8_0 blocks: ranks hold 2 and 3 blocks of ffn_down's input */
    static const int tp2[] = {2, 0};
    check_family("tiny", "q8_0", "160", tp2, TOL_Q8);
}

Test(tp, nine_ranks_with_uneven_vocabulary_and_ffn_shares_equal_unsplit, .timeout = 180)
{
    /* SmolLM2-135M's shapes, one layer: 9 heads over 9 ranks, 3 KV heads each on 3 ranks, a
     * vocabulary of 4096 in rows of 456 (the last rank 448: its gathered rows carry
     * padding), ffn 1536 split evenly (f32 has no blocks). */
    static const int tp9[] = {9, 0};
    check_family("smollm2-135m", "f32", NULL, tp9, TOL_F32);
}

/* ---- the split and its refusals ----------------------------------------------------------- */

static eng_model *load_tiny(const char *preset, const char *dtype, char **path)
{
    *path = synth(preset, dtype, NULL);
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(*path, &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

static void drop(eng_model *m, char *path)
{
    eng_model_free(m);
    unlink(path);
    free(path);
}

Test(tp, the_plan_covers_every_head_column_and_row_once_and_replicates_kv_heads, .timeout = 60)
{
    char *path;
    eng_model *m = load_tiny("tiny", "q8_0", &path); /* 4 heads, 2 KV heads, ffn 128, vocab 4096 */
    eng_err err = {{0}};
    eng_shard s[4];
    for (int r = 0; r < 2; r++)
        cr_assert_eq(eng_shard_plan(m, r, 2, &s[r], &err), ENG_OK, "%s", err.msg);
    cr_assert(s[0].head0 == 0 && s[0].n_head == 2 && s[1].head0 == 2 && s[1].n_head == 2);
    cr_assert(s[0].head_kv0 == 0 && s[0].n_head_kv == 1 && s[1].head_kv0 == 1);
    cr_assert(s[0].ff0 == 0 && s[0].n_ff == 64 && s[1].ff0 == 64 && s[1].n_ff == 64);
    cr_assert(s[0].vocab0 == 0 && s[0].n_vocab == 2048 && s[1].vocab0 == 2048 &&
              s[1].n_vocab == 2048 && s[1].n_vocab_stride == 2048);
    /* f32: 4 ranks; rank r's Q head r reads KV head r / 2, held by two ranks each */
    char *p32;
    eng_model *m32 = load_tiny("tiny", "f32", &p32);
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(eng_shard_plan(m32, r, 4, &s[r], &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(s[r].head0, r);
        cr_assert_eq(s[r].n_head, 1);
        cr_assert_eq(s[r].head_kv0, r / 2, "rank %d reads KV head %d", r, s[r].head_kv0);
        cr_assert_eq(s[r].n_head_kv, 1);
        cr_assert_eq(s[r].ff0, 32 * r);
    }
    /* The rank's model: its counts, views into the file, copies of its input columns. */
    eng_shard_model *sm = NULL;
    cr_assert_eq(eng_shard_model_create(m32, 3, 4, &sm, &err), ENG_OK, "%s", err.msg);
    const eng_layer *L = &m32->layers[1], *R = &sm->model.layers[1];
    cr_assert_eq(sm->model.hp.n_head, 1);
    cr_assert_eq(sm->model.hp.n_vocab, 1024);
    cr_assert_eq(R->wq.ne1, 16);
    cr_assert_eq(R->wq.data, (const char *)L->wq.data + 3 * 16 * L->wq.row_bytes);
    cr_assert_eq(R->wk.data, (const char *)L->wk.data + 1 * 16 * L->wk.row_bytes);
    cr_assert_eq(R->wo.ne0, 16);
    cr_assert_eq(R->wo.ne1, 64);
    for (int row = 0; row < 64; row++) /* wo columns [48, 64) of every row */
        cr_assert(memcmp((const char *)R->wo.data + (size_t)row * R->wo.row_bytes,
                         (const float *)((const char *)L->wo.data + (size_t)row * L->wo.row_bytes) + 48,
                         16 * sizeof(float)) == 0, "wo row %d", row);
    cr_assert_eq(R->w_down.ne0, 32);
    cr_assert_eq(sm->model.tok_embd.data,
                 (const char *)m32->tok_embd.data + 3 * 1024 * m32->tok_embd.row_bytes);
    eng_shard_model_free(sm);
    drop(m32, p32);
    drop(m, path);
}

Test(tp, a_degree_the_heads_do_not_allow_is_refused_naming_the_degrees_that_work, .timeout = 60)
{
    char *path;
    eng_model *m = load_tiny("tiny", "f32", &path);
    eng_backend *be = NULL;
    eng_err err = {{0}};
    eng_backend_config cfg = config(3, 3);
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_ERR_INVALID);
    cr_assert_null(be);
    cr_assert(strstr(err.msg, "4 attention heads do not split evenly") &&
                  strstr(err.msg, "degrees this model allows: 1, 2, 4"), "%s", err.msg);
    cfg = config(8, 8);
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_ERR_INVALID);
    cfg = config(2, 1);
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "one thread per rank"), "%s", err.msg);
    drop(m, path);
}

Test(tp, a_quantised_output_projection_cut_inside_a_block_is_refused_naming_it, .timeout = 60)
{
    char *path;
    eng_model *m = load_tiny("tiny", "q8_0", &path); /* head 16 wide, Q8_0 blocks of 32 */
    eng_backend *be = NULL;
    eng_err err = {{0}};
    eng_backend_config cfg = config(4, 4);
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "blk.0.attn_output.weight is Q8_0") &&
                  strstr(err.msg, "blocks of 32") && strstr(err.msg, "allows: 1, 2"),
              "%s", err.msg);
    drop(m, path);
}

Test(tp, each_rank_keeps_only_its_kv_heads_and_replicated_ones_cost_blocks, .timeout = 60)
{
    /* 2 KV heads over 2 ranks: one each, so a budget holds as many blocks as unsplit; MQA
     * (starcoder) over 2 ranks: the one KV head on both, half the blocks. */
    const char *presets[] = {"tiny", "starcoder-tiny"};
    const int32_t want_ratio[] = {1, 2};
    for (int i = 0; i < 2; i++) {
        char *path;
        eng_model *m = load_tiny(presets[i], "f32", &path);
        eng_backend *b1 = NULL, *b2 = NULL;
        eng_err err = {{0}};
        eng_backend_config c1 = config(1, 1), c2 = config(2, 2);
        cr_assert_eq(eng_backend_cpu_create(m, &c1, &b1, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(eng_backend_cpu_create(m, &c2, &b2, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(b1->n_blocks, want_ratio[i] * b2->n_blocks, "%s: %d blocks unsplit, %d "
                     "over 2 ranks", presets[i], b1->n_blocks, b2->n_blocks);
        b1->ops->free(b1);
        b2->ops->free(b2);
        drop(m, path);
    }
}

/* ---- through the engine ------------------------------------------------------------------- */

enum { ENGINE_REQS = 3, ENGINE_TOKENS = 16 };

/* Greedy outputs of ENGINE_REQS requests submitted together (batched by the engine) over
 * `tp` ranks: out[i][k] is request i's k-th token. */
static void engine_outputs(const eng_model *m, int tp, int threads,
                           int32_t out[ENGINE_REQS][ENGINE_TOKENS])
{
    eng_engine_config cfg = eng_engine_config_defaults();
    cfg.n_threads = threads;
    cfg.tp = tp;
    cfg.kv_bytes = 64 << 20;
    cfg.max_seq_len = 256;
    cfg.check_invariants = true;
    eng_engine *e = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_engine_create(m, &cfg, &e, &err), ENG_OK, "tp %d: %s", tp, err.msg);
    static const char *const prompts[ENGINE_REQS] = {
        "def fibonacci(n):\n", "#include <stdio.h>\nint main(void) {\n",
        "SELECT name, count(*) FROM users"};
    eng_request *r[ENGINE_REQS];
    for (int i = 0; i < ENGINE_REQS; i++) {
        eng_request_params p = eng_request_params_defaults();
        p.text = prompts[i];
        p.text_len = strlen(prompts[i]);
        p.max_tokens = ENGINE_TOKENS;
        p.ignore_eos = true;
        cr_assert_eq(eng_submit(e, &p, &r[i], &err), ENG_OK, "%s", err.msg);
    }
    for (int i = 0; i < ENGINE_REQS; i++) {
        char buf[4096];
        eng_request_output o;
        do
            cr_assert_eq(eng_request_read(r[i], buf, sizeof buf, 60000, &o), ENG_OK);
        while (!o.done);
        cr_assert_eq(o.finish, ENG_FINISH_LENGTH, "tp %d request %d: %s", tp, i, o.error);
        cr_assert_eq(eng_request_tokens(r[i], out[i], ENGINE_TOKENS), ENGINE_TOKENS);
        eng_request_release(r[i]);
    }
    eng_engine_free(e);
}

Test(tp, the_engine_over_3_ranks_completes_the_default_model_like_one_engine, .timeout = 300)
{
    /* SmolLM2-135M (Q4_1): 9 heads, 3 KV heads, so 3 ranks of 3 heads and 1 KV head each. */
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(tu_default_model(), &m, &err), ENG_OK, "%s", err.msg);
    char deg[64];
    eng_shard_degrees(m, deg, sizeof deg);
    cr_assert_str_eq(deg, "1, 3, 9");
    int32_t whole[ENGINE_REQS][ENGINE_TOKENS], split[ENGINE_REQS][ENGINE_TOKENS];
    engine_outputs(m, 1, 2, whole);
    engine_outputs(m, 3, 3, split);
    for (int i = 0; i < ENGINE_REQS; i++)
        for (int k = 0; k < ENGINE_TOKENS; k++)
            cr_assert_eq(split[i][k], whole[i][k], "request %d token %d: %d over 3 ranks, %d "
                         "unsplit", i, k, split[i][k], whole[i][k]);
    eng_model_free(m);
}

/* ---- a rank that fails ---------------------------------------------------------------------- */

/* Rank 0 of a 2-rank group runs a batch alone: rank 1 never arrives (timeout) or has aborted
 * the group; rank 0's forward returns the group's failure with its reason instead of hanging. */
static void lone_rank_forward(bool aborted, const char *want)
{
    char *path;
    eng_model *m = load_tiny("tiny", "f32", &path);
    eng_err err = {{0}};
    eng_shard_model *sm = NULL;
    cr_assert_eq(eng_shard_model_create(m, 0, 2, &sm, &err), ENG_OK, "%s", err.msg);
    eng_comm *c = NULL;
    cr_assert_eq(eng_comm_threads_create(2, 300, &c, &err), ENG_OK, "%s", err.msg);
    eng_cpu_runner *r = NULL;
    eng_cpu_kv *kv = NULL;
    cr_assert_eq(eng_cpu_runner_create(&sm->model, 64, 1, &r, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(eng_cpu_runner_set_group(r, &sm->shard, c, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(eng_cpu_kv_create(&sm->model, 4, 16, &kv, &err), ENG_OK, "%s", err.msg);
    if (aborted)
        c->ops->abort(c, "rank 1 ran out of memory");
    int32_t table[4] = {0, 1, 2, 3}, tok[3] = {5, 6, 7}, pos[3] = {0, 1, 2}, seq[3] = {0},
            idx[1] = {2};
    const int32_t *tables[1] = {table};
    eng_batch b = {.n_tokens = 3, .tokens = tok, .pos = pos, .seq = seq, .block_tables = tables,
                   .n_seqs = 1, .logits_idx = idx, .n_logits = 1};
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    cr_assert_eq(eng_cpu_forward(r, kv, &b, logits, &err), ENG_ERR_CANCELLED);
    cr_assert(strstr(err.msg, want), "the error does not say '%s': %s", want, err.msg);
    free(logits);
    eng_cpu_kv_free(kv);
    eng_cpu_runner_free(r);
    c->ops->free(c);
    eng_shard_model_free(sm);
    drop(m, path);
}

Test(tp, a_rank_that_never_runs_the_batch_fails_the_others_forward_naming_it, .timeout = 60)
{
    lone_rank_forward(false, "rank 1 did not arrive at all_reduce_sum within 300 ms");
}

Test(tp, a_rank_that_aborted_fails_the_others_forward_with_its_reason, .timeout = 60)
{
    lone_rank_forward(true, "rank 1 ran out of memory");
}
