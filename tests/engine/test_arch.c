/* test_arch.c — model families other than plain Llama on the CPU backend, against the float64
 * reference (tools/ref_forward.py) of synthetic models that serval-synth regenerates from each
 * fixture's preset, seed and type: Qwen2 (Q/K/V biases, NeoX RoPE, tied head), StarCoder
 * (LayerNorm, fused Q|K|V, MQA, learned positions, GELU, biases), StarCoder2 (LayerNorm, GQA,
 * NeoX RoPE, GELU, biases, a 32-position sliding window) and Llama with linear RoPE scaling
 * (DeepSeek-Coder). Also: what the window and the scaling change and do not change, batch
 * independence, the LayerNorm and GELU rows, a Qwen2 file without its biases is refused naming
 * the tensor, the CUDA backend refuses what it cannot compute, and `serval complete` runs
 * these families. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_forward.h"
#include "cpu_ops.h"
#include "gguf_write.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"
#include "tu_json.h"

#define QWEN2_FIXTURE "tests/fixtures/arch/qwen2_tiny_ref.jsonl"
#define STARCODER_FIXTURE "tests/fixtures/arch/starcoder_tiny_ref.jsonl"
#define STARCODER2_FIXTURE "tests/fixtures/arch/starcoder2_tiny_ref.jsonl"
#define DEEPSEEK_FIXTURE "tests/fixtures/arch/deepseek_coder_tiny_ref.jsonl"

/* Runs serval-synth for a preset with the default model's vocabulary, plus extra arguments
 * (NULL-terminated, may be NULL); returns the temp path (caller unlinks and frees). */
static char *synth_preset(const char *preset, const char *seed, const char *dtype,
                          const char *const *extra)
{
    char *path = tu_temp_path(".gguf");
    char *bin = tu_bin_path("serval-synth");
    char *argv[24] = {bin, "--preset", (char *)preset, "--seed", (char *)seed, "--dtype",
                      (char *)dtype, "--vocab-from", (char *)tu_default_model(), "--out", path};
    int argc = 11;
    for (int i = 0; extra && extra[i]; i++)
        argv[argc++] = (char *)extra[i];
    argv[argc] = NULL;
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 120);
    cr_assert_eq(rc, 0, "serval-synth --preset %s failed (%d): %s", preset, rc, err ? err : "");
    free(err);
    free(bin);
    return path;
}

/* Runs serval-synth for the fixture's preset, seed and dtype with the default model's
 * vocabulary (what the fixture was generated from); returns the temp path (caller unlinks
 * and frees). */
static char *synth_from_fixture(const tu_json *meta)
{
    char seed[32];
    snprintf(seed, sizeof seed, "%.0f", tu_json_get(meta, "seed")->num);
    return synth_preset(tu_json_get(meta, "preset")->str, seed, tu_json_get(meta, "dtype")->str,
                        NULL);
}

/* A fixture's tiny model, written by serval-synth from the fixture's first line; returns the
 * temp path (caller unlinks and frees). */
static char *fixture_model(const char *fixture)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl(fixture, &n_lines);
    char *path = synth_from_fixture(lines[0]);
    for (size_t i = 0; i < n_lines; i++)
        tu_json_free(lines[i]);
    free(lines);
    return path;
}

static char *qwen2_tiny_model(void) { return fixture_model(QWEN2_FIXTURE); }

static eng_model *load(const char *path)
{
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

Test(arch, qwen2_descriptor_and_hparams, .timeout = 120)
{
    char *path = qwen2_tiny_model();
    eng_model *m = load(path);
    const eng_hparams *hp = &m->hp;
    cr_assert_eq(hp->arch, ENG_ARCH_QWEN2);
    cr_assert_str_eq(eng_model_arch_name(m), "qwen2");
    cr_assert_eq(m->desc->pos, ENG_ARCH_POS_ROPE_NEOX);
    cr_assert(m->desc->attn_bias);
    cr_assert_eq(hp->n_layer, 2);
    cr_assert_eq(hp->n_embd, 64);
    cr_assert_eq(hp->n_head, 4);
    cr_assert_eq(hp->n_head_kv, 2);
    cr_assert_eq(hp->head_dim, 16);
    cr_assert_float_eq(hp->rope_base, 1e6f, 1.0f);
    cr_assert_float_eq(hp->norm_eps, 1e-6f, 1e-9f);
    cr_assert(hp->tied_output, "qwen2-tiny has no output.weight: the head is token_embd");
    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        cr_assert(L->bq.data && L->bk.data && L->bv.data, "layer %d: biases not bound", il);
        cr_assert_eq(L->bq.ne0, 64);
        cr_assert_eq(L->bk.ne0, 32);
        cr_assert_eq(L->bv.dtype, GGUF_DTYPE_F32);
    }
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* The Qwen2.5-Coder-0.5B preset (one layer of it) loads with the real model's shapes. */
Test(arch, qwen2_5_coder_0_5b_preset_has_the_real_shapes, .timeout = 120)
{
    char *path = tu_temp_path(".gguf");
    char *bin = tu_bin_path("serval-synth");
    char *argv[] = {bin, "--preset", "qwen2.5-coder-0.5b", "--layers", "1", "--vocab-from",
                    (char *)tu_default_model(), "--out", path, NULL};
    char *err = NULL;
    cr_assert_eq(tu_run(argv, NULL, &err, 120), 0, "serval-synth: %s", err ? err : "");
    eng_model *m = load(path);
    const eng_hparams *hp = &m->hp;
    cr_assert_eq(hp->arch, ENG_ARCH_QWEN2);
    cr_assert_eq(hp->n_embd, 896);
    cr_assert_eq(hp->n_head, 14);
    cr_assert_eq(hp->n_head_kv, 2);
    cr_assert_eq(hp->head_dim, 64);
    cr_assert_eq(hp->n_ff, 4864);
    cr_assert_eq(hp->n_ctx_train, 32768);
    cr_assert_float_eq(hp->rope_base, 1e6f, 1.0f);
    cr_assert(hp->tied_output);
    cr_assert_eq(m->layers[0].bq.ne0, 896);
    cr_assert_eq(m->layers[0].bk.ne0, 128);
    eng_model_free(m);
    free(err);
    free(bin);
    unlink(path);
    free(path);
}

/* How close the CPU backend must be to a float64 fixture, as fractions of each row's rms. */
typedef struct ref_bounds {
    double worst;    /* any of the reference's top-k logits */
    double mean;     /* over all of them */
    double tie;      /* a pick within this of the reference's best is a right pick */
    double decided;  /* where the reference's margin exceeds `tie`, the share of positions
                        whose pick must be the reference's top-1 */
} ref_bounds;

/* Runs every fixture sequence through the CPU backend (one call, two threads) and checks the
 * reference's top-k logits against `b` and the CPU's greedy pick: at every position it must be
 * a token the reference scores within `tie` of its best, and where the reference's own margin
 * exceeds `tie` it must be the reference's top-1 (at >= b->decided of those positions). Logs
 * the measured numbers under `name`. */
static void check_against_reference(const char *fixture, const char *name, const ref_bounds *b)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl(fixture, &n_lines);
    cr_assert_geq(n_lines, 2);
    char *path = synth_from_fixture(lines[0]);
    eng_model *m = load(path);
    const int32_t nv = m->hp.n_vocab;
    size_t positions = 0, top1_same = 0, decided = 0, decided_same = 0;
    double worst = 0.0, sum_err = 0.0;
    size_t n_err = 0;
    for (size_t li = 1; li < n_lines; li++) {
        const tu_json *ids = tu_json_get(lines[li], "ids");
        const tu_json *pos = tu_json_get(lines[li], "positions");
        int32_t n = (int32_t)ids->n;
        int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
        for (int32_t i = 0; i < n; i++)
            toks[i] = (int32_t)ids->items[i]->num;
        float *logits = malloc(sizeof(float) * (size_t)nv * (size_t)n);
        eng_cpu_ctx *c = NULL;
        cr_assert_eq(eng_cpu_ctx_create(m, n, 2, &c, NULL), ENG_OK);
        cr_assert_eq(eng_cpu_ctx_eval(c, toks, n, logits, true, NULL), ENG_OK);
        cr_assert_eq(pos->n, (size_t)n);
        for (size_t k = 0; k < pos->n; k++) {
            int p = (int)tu_json_get(pos->items[k], "pos")->num;
            double rms = tu_json_get(pos->items[k], "rms")->num;
            const tu_json *top = tu_json_get(pos->items[k], "top");
            cr_assert_geq(top->n, 2);
            const float *row = logits + (size_t)p * (size_t)nv;
            for (size_t t = 0; t < top->n; t++) {
                int32_t id = (int32_t)top->items[t]->items[0]->num;
                double want = top->items[t]->items[1]->num;
                double rel = fabs((double)row[id] - want) / rms;
                worst = fmax(worst, rel);
                sum_err += rel;
                n_err++;
                cr_expect_leq(rel, b->worst, "%s sequence %zu pos %d token %d: %f vs reference "
                              "%f (%.2f%% of the row's rms %f)", name, li, p, id,
                              (double)row[id], want, 100.0 * rel, rms);
            }
            const int32_t pick = tu_argmax(row, nv), ref1 = (int32_t)top->items[0]->items[0]->num;
            const double best = top->items[0]->items[1]->num;
            const bool is_decided = best - top->items[1]->items[1]->num > b->tie * rms;
            positions++;
            top1_same += pick == ref1;
            decided += is_decided;
            decided_same += is_decided && pick == ref1;
            double pick_gap = INFINITY; /* the reference's best minus its logit of the pick */
            for (size_t t = 0; t < top->n; t++)
                if ((int32_t)top->items[t]->items[0]->num == pick)
                    pick_gap = best - top->items[t]->items[1]->num;
            cr_expect_leq(pick_gap, b->tie * rms, "%s sequence %zu pos %d: the CPU picks %d, "
                          "which the reference scores %.1f%% of the rms below its best %d (or "
                          "not in its top %zu)", name, li, p, pick, 100.0 * pick_gap / rms, ref1,
                          top->n);
        }
        eng_cpu_ctx_free(c);
        free(logits);
        free(toks);
    }
    cr_log_info("%s vs float64: top-1 equal at %zu/%zu positions (%zu/%zu where the "
                "reference's margin exceeds %.0f%% of the rms), |error| / rms: mean %.5f, worst "
                "%.5f", name, top1_same, positions, decided_same, decided, 100.0 * b->tie,
                sum_err / (double)n_err, worst);
    cr_expect_leq(sum_err / (double)n_err, b->mean, "%s: mean |error| %.3f%% of the rms", name,
                  100.0 * sum_err / (double)n_err);
    cr_expect_geq(decided, positions / 2, "%s: too few decided positions (%zu of %zu)", name,
                  decided, positions);
    cr_expect_geq((double)decided_same, b->decided * (double)decided,
                  "%s: top-1 agrees with the reference at only %zu of %zu decided positions", name,
                  decided_same, decided);
    eng_model_free(m);
    unlink(path);
    free(path);
    for (size_t i = 0; i < n_lines; i++)
        tu_json_free(lines[i]);
    free(lines);
}

/* The CPU backend's logits of the regenerated qwen2-tiny against the float64 reference's, at
 * every position of every fixture sequence (qwen2-tiny's matrices have sd 1/sqrt(n_embd), so
 * every layer shapes the logits: in the reference, zeroing the biases moves them by ~80% of
 * the row's rms on average, interleaved instead of NeoX RoPE by ~25%).
 *
 * The bound: the reference is exact arithmetic over the same (dequantised Q8_0) weights, so
 * what differs is only the CPU path's own rounding, dominated by quantising each activation
 * row to Q8_0 before every product (llama.cpp's scheme): 8 bits per block of 32 with the
 * block's max|x|/127 as step. For a bell-shaped block that step is ~1/60 of the block's rms,
 * so each product carries a relative error of about step/sqrt(12)/rms ~ 0.5%, independent per
 * output; two layers of seven products each, the head and fp16 K/V, Q and probabilities
 * (~0.05% each) add up to ~1% of the rms per logit (measured: mean 1.1%, worst 5.6% over
 * 124 x 16 logits). Bounds: 8% of the rms per logit and 2% on average.
 *
 * Top-1: 49152 random logits often have their two best within that noise of each other (in
 * 1 position in 3 within 10% of the rms), where either pick is right. So: at every position
 * the CPU's pick must be one the reference scores within 10% of the rms of its best, and
 * where the reference's own margin exceeds that (top-1 decided beyond the noise) the pick must
 * be the reference's at >= 99% of positions. Exact agreement overall is logged. */
Test(arch, qwen2_tiny_matches_float64_reference, .timeout = 300)
{
    const ref_bounds b = {.worst = 0.08, .mean = 0.02, .tie = 0.10, .decided = 0.99};
    check_against_reference(QWEN2_FIXTURE, "qwen2-tiny", &b);
}

/* The StarCoder, StarCoder2 and rope-scaled Llama fixtures are of F32 models: the products
 * then take F32 activations (no activation quantisation), so the CPU path's only rounding
 * against exact arithmetic is float accumulation and the fp16 Q, K/V cache and attention
 * probabilities (~0.05% each), and the bounds can be 10x tighter than qwen2-tiny's Q8_0 ones:
 * measured over 204 or 124 positions x 16 logits, mean ~0.04% and worst ~0.4% of the row's
 * rms. Bounds: 1.5% per logit, 0.2% on average; a pick within 1% of the rms of the best is
 * right, and beyond that margin it must be the reference's everywhere. Every op shows: in the
 * reference (80 tokens), zeroing StarCoder's position rows moves the logits by 71% of the rms
 * on average, its LayerNorm biases 6.8%, attn_output.bias 4.4%, the Q|K|V bias 6.5%, the FFN
 * biases 2.0%; StarCoder2 without its window 24%, with interleaved RoPE 38%. */
static const ref_bounds f32_bounds = {.worst = 0.015, .mean = 0.002, .tie = 0.01,
                                      .decided = 1.0};

/* StarCoder: LayerNorm with bias, one fused Q|K|V with bias split into views, one K/V head
 * (MQA), learned positions, GELU FFN, biases on every product, untied head. */
Test(arch, starcoder_tiny_matches_float64_reference, .timeout = 300)
{
    check_against_reference(STARCODER_FIXTURE, "starcoder-tiny", &f32_bounds);
}

/* StarCoder2: LayerNorm with bias, Q/K/V with biases, 2 K/V heads (GQA), NeoX RoPE, GELU FFN,
 * a 32-position sliding window (the fixture's 40- and 80-token sequences run past it, the
 * 80-token one past the CPU pass's 64-token chunks too), tied head. */
Test(arch, starcoder2_tiny_matches_float64_reference, .timeout = 300)
{
    check_against_reference(STARCODER2_FIXTURE, "starcoder2-tiny", &f32_bounds);
}

/* Llama with linear RoPE scaling x4 (DeepSeek-Coder's rope.scaling): the reference rotates
 * position p by the angles of p / 4. Before the fix the factor was read and ignored. */
Test(arch, rope_scaled_llama_matches_float64_reference, .timeout = 300)
{
    check_against_reference(DEEPSEEK_FIXTURE, "deepseek-coder-tiny", &f32_bounds);
}

/* Logits of tokens [0, n) evaluated in one call with 2 threads; caller frees. */
static float *eval_all(const eng_model *m, const int32_t *toks, int32_t n)
{
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab * (size_t)n);
    eng_cpu_ctx *c = NULL;
    cr_assert_eq(eng_cpu_ctx_create(m, n, 2, &c, NULL), ENG_OK);
    cr_assert_eq(eng_cpu_ctx_eval(c, toks, n, logits, true, NULL), ENG_OK);
    eng_cpu_ctx_free(c);
    return logits;
}

/* The largest |a - b| of a row, as a fraction of a's rms. */
static double row_change(const float *a, const float *b, int32_t n)
{
    double ss = 0.0, mx = 0.0;
    for (int32_t i = 0; i < n; i++) {
        ss += (double)a[i] * a[i];
        mx = fmax(mx, fabs((double)a[i] - b[i]));
    }
    return mx / sqrt(ss / n);
}

/* The sliding window is exactly a mask: the same StarCoder2 model written with the window
 * (32) and without it gives bit-identical logits at positions 0-31, where the window holds
 * the whole past, and different ones from position 32 on, where the first key drops out. */
Test(arch, starcoder2_window_changes_logits_past_32_positions_only, .timeout = 120)
{
    const char *const no_window[] = {"--sliding-window", "0", NULL};
    char *pw = synth_preset("starcoder2-tiny", "7", "f32", NULL);
    char *pf = synth_preset("starcoder2-tiny", "7", "f32", no_window);
    eng_model *mw = load(pw), *mf = load(pf);
    cr_assert_eq(mw->hp.n_swa, 32);
    cr_assert_eq(mf->hp.n_swa, 0);
    enum { N = 80 };
    int32_t toks[N];
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)((i * 15485863 + 101) % 48000) + 60;
    const int32_t nv = mw->hp.n_vocab;
    float *lw = eval_all(mw, toks, N), *lf = eval_all(mf, toks, N);
    for (int p = 0; p < 32; p++)
        cr_expect_eq(memcmp(lw + (size_t)p * nv, lf + (size_t)p * nv, sizeof(float) * nv), 0,
                     "position %d sees its whole past either way, yet the logits differ", p);
    double least = INFINITY;
    for (int p = 32; p < N; p++)
        least = fmin(least, row_change(lw + (size_t)p * nv, lf + (size_t)p * nv, nv));
    /* In the reference the window moves every position from 33 on by >= ~20% of the rms;
     * position 32 (one key dropped) moves least. */
    cr_log_info("window 32 vs none, positions 32-79: least change %.1f%% of the rms",
                100.0 * least);
    cr_expect_gt(least, 0.0, "some position >= 32 is unchanged by the window");
    free(lw);
    free(lf);
    eng_model_free(mw);
    eng_model_free(mf);
    unlink(pw);
    unlink(pf);
    free(pw);
    free(pf);
}

/* Copies src's metadata (with `key` set to the string `val`) and every tensor into a new
 * GGUF; returns its temp path (caller unlinks and frees). */
static char *copy_with_str(const char *src_path, const char *key, const char *val)
{
    gguf_file *src = NULL;
    cr_assert_eq(gguf_open(src_path, &src, NULL), ENG_OK);
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, ""), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, key, val, strlen(val)), ENG_OK);
    for (int64_t i = 0; i < gguf_tensor_count(src); i++) {
        const gguf_tensor *t = gguf_tensor_at(src, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        cr_assert_eq(gguf_writer_add_tensor(w, name, t->dtype, t->n_dims, t->ne, t->data,
                                            t->nbytes), ENG_OK, "%s", name);
    }
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, NULL), ENG_OK);
    gguf_writer_free(w);
    gguf_free(src);
    return path;
}

/* Linear RoPE scaling is used, not just read: the rope-scaled Llama and its twin with the
 * scaling turned off (llama.rope.scaling.type = "none") agree bit for bit at position 0
 * (angle 0 either way) and nowhere after it (the reference's change is 90% of the rms or more
 * from position 1 on). */
Test(arch, linear_rope_scaling_changes_llama_logits_from_position_1, .timeout = 120)
{
    char *ps = fixture_model(DEEPSEEK_FIXTURE);
    char *p1 = copy_with_str(ps, "llama.rope.scaling.type", "none");
    eng_model *ms = load(ps), *m1 = load(p1);
    cr_assert_float_eq(ms->hp.rope_freq_scale, 0.25f, 0.0f);
    cr_assert_float_eq(m1->hp.rope_freq_scale, 1.0f, 0.0f);
    enum { N = 40 };
    int32_t toks[N];
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % 40000) + 100;
    const int32_t nv = ms->hp.n_vocab;
    float *ls = eval_all(ms, toks, N), *l1 = eval_all(m1, toks, N);
    cr_expect_eq(memcmp(ls, l1, sizeof(float) * nv), 0, "position 0 differs");
    double least = INFINITY;
    for (int p = 1; p < N; p++)
        least = fmin(least, row_change(ls + (size_t)p * nv, l1 + (size_t)p * nv, nv));
    cr_log_info("scaling x4 vs none, positions 1-39: least change %.1f%% of the rms",
                100.0 * least);
    cr_expect_gt(least, 0.10, "a position >= 1 moved only %.2f%% of the rms", 100.0 * least);
    free(ls);
    free(l1);
    eng_model_free(ms);
    eng_model_free(m1);
    unlink(ps);
    unlink(p1);
    free(ps);
    free(p1);
}

/* A 70-token sequence of the model at `path` run in one call (2 threads) and in chunks of
 * 1, 5 and 64 (1 thread) gives the same last logits bit for bit. */
static void check_chunked_equals_sequential(const char *path)
{
    eng_model *m = load(path);
    const int32_t nv = m->hp.n_vocab;
    int32_t toks[70];
    for (int i = 0; i < 70; i++)
        toks[i] = (int32_t)((i * 7919 + 13) % 40000) + 100;
    float *a = malloc(sizeof(float) * (size_t)nv), *b = malloc(sizeof(float) * (size_t)nv);
    eng_cpu_ctx *c1 = NULL, *c2 = NULL;
    cr_assert_eq(eng_cpu_ctx_create(m, 80, 2, &c1, NULL), ENG_OK);
    cr_assert_eq(eng_cpu_ctx_eval(c1, toks, 70, a, false, NULL), ENG_OK);
    cr_assert_eq(eng_cpu_ctx_create(m, 80, 1, &c2, NULL), ENG_OK);
    int32_t sizes[] = {1, 5, 64}, at = 0;
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(eng_cpu_ctx_eval(c2, toks + at, sizes[i], b, false, NULL), ENG_OK);
        at += sizes[i];
    }
    cr_assert_eq(memcmp(a, b, sizeof(float) * (size_t)nv), 0, "%s: chunked logits differ",
                 m->hp.arch_name);
    eng_cpu_ctx_free(c1);
    eng_cpu_ctx_free(c2);
    free(a);
    free(b);
    eng_model_free(m);
}

/* The bias and NeoX paths keep the CPU backend's batch independence. */
Test(arch, qwen2_chunked_equals_sequential, .timeout = 120)
{
    char *path = qwen2_tiny_model();
    check_chunked_equals_sequential(path);
    unlink(path);
    free(path);
}

/* So do learned positions (each token's row from its own position, not its index in the
 * call) and the sliding window (70 tokens: past the window of 32 and across chunks). */
Test(arch, starcoder_families_chunked_equal_sequential, .timeout = 120)
{
    const char *presets[] = {"starcoder-tiny", "starcoder2-tiny"};
    for (size_t i = 0; i < 2; i++) {
        char *path = synth_preset(presets[i], "7", "q8_0", NULL);
        check_chunked_equals_sequential(path);
        unlink(path);
        free(path);
    }
}

/* What the loader gives the StarCoder pass: learned positions [n_ctx_train, n_embd], the fused
 * Q|K|V split into Q (4 heads), K and V (one head each) row views with their biases, LayerNorm
 * biases, no gate. A context longer than the position table is refused, not read past it. */
Test(arch, starcoder_descriptor_views_and_context_limit, .timeout = 120)
{
    char *path = fixture_model(STARCODER_FIXTURE);
    eng_model *m = load(path);
    const eng_hparams *hp = &m->hp;
    cr_assert_eq(hp->arch, ENG_ARCH_STARCODER);
    cr_assert_eq(m->desc->pos, ENG_ARCH_POS_LEARNED);
    cr_assert_eq(m->desc->norm, ENG_ARCH_NORM_LAYER);
    cr_assert_eq(m->desc->ffn, ENG_ARCH_FFN_GELU);
    cr_assert_eq(hp->n_head_kv, 1);
    cr_assert_eq(hp->n_ctx_train, 2048);
    cr_assert_float_eq(hp->norm_eps, 1e-5f, 1e-10f);
    cr_assert(!hp->tied_output);
    cr_assert(m->pos_embd.data && m->out_norm_b.data);
    cr_assert_eq(m->pos_embd.ne1, 2048);
    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &m->layers[il];
        cr_assert_eq(L->wq.ne1, 64);
        cr_assert_eq(L->wk.ne1, 16);
        cr_assert_eq(L->wv.ne1, 16);
        cr_assert_eq((const char *)L->wk.data, (const char *)L->wqkv.data + 64 * L->wqkv.row_bytes);
        cr_assert_eq((const float *)L->bv.data, (const float *)L->bqkv.data + 80);
        cr_assert(L->attn_norm_b.data && L->ffn_norm_b.data && L->bo.data && L->b_up.data &&
                  L->b_down.data, "layer %d: a bias is not bound", il);
        cr_assert_null(L->w_gate.data);
    }
    eng_cpu_ctx *c = NULL;
    eng_err err = {{0}};
    cr_expect_eq(eng_cpu_ctx_create(m, 2049, 1, &c, &err), ENG_ERR_INVALID);
    cr_expect_null(c);
    cr_expect(strstr(err.msg, "2049") && strstr(err.msg, "2048"), "message: %s", err.msg);
    cr_assert_eq(eng_cpu_ctx_create(m, 2048, 1, &c, NULL), ENG_OK);
    eng_cpu_ctx_free(c);
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* LayerNorm against its float64 formula on rows of varied length (8-lane groups and tails)
 * and scale (an offset of 100 tests that the mean is taken out before squaring). */
Test(arch, layernorm_row_matches_float64, .timeout = 30)
{
    const int lens[] = {1, 7, 8, 9, 64, 67, 2048};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int n = lens[li];
        float *x = malloc(sizeof(float) * (size_t)n), *w = malloc(sizeof(float) * (size_t)n);
        float *bias = malloc(sizeof(float) * (size_t)n), *out = malloc(sizeof(float) * (size_t)n);
        for (int i = 0; i < n; i++) {
            x[i] = 100.0f + (float)((i * 37 + 11) % 101 - 50) / 25.0f;
            w[i] = 0.5f + (float)(i % 13) / 8.0f;
            bias[i] = (float)(i % 7) / 10.0f - 0.3f;
        }
        cpu_layernorm_row(out, x, w, bias, n, 1e-5f);
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < n; i++)
            mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++)
            var += (x[i] - mean) * (x[i] - mean);
        var /= n;
        for (int i = 0; i < n; i++) {
            double want = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + bias[i];
            /* x carries ~100 * 2^-24 of rounding, ~1e-4 of its spread (~1.2) */
            cr_expect(fabs(out[i] - want) <= 1e-3 * (fabs(want) + 1.0), "n %d i %d: %f vs %f", n,
                      i, (double)out[i], want);
        }
        free(x);
        free(w);
        free(bias);
        free(out);
    }
}

/* The GELU table: every fp16 input in [-10, 10] within one fp16 rounding of the float64
 * tanh-form GELU, and the row op's ends: <= -10 gives 0, >= 10 gives x itself. */
Test(arch, gelu_table_is_within_one_fp16_rounding_of_exact_gelu, .timeout = 30)
{
    float *tab = malloc(sizeof(float) * CPU_GELU_TABLE_SIZE);
    cpu_gelu_table_fill(tab);
    size_t checked = 0;
    for (int i = 0; i < CPU_GELU_TABLE_SIZE; i++) {
        const double x = quant_f16_to_f32((uint16_t)i);
        if (!isfinite(x) || fabs(x) > 10.0)
            continue;
        const double want = 0.5 * x * (1.0 + tanh(sqrt(2.0 / acos(-1.0)) * (x + 0.044715 * x * x * x)));
        /* fp16 keeps 11 significant bits (half an ulp is 2^-11 relative); float's 1 + tanh
         * cancels for x below ~-5 (ggml computes that form too), an absolute |x| 2^-24. */
        cr_expect(fabs(tab[i] - want) <= fabs(want) * 0x1p-10 + fabs(x) * 0x1p-23 + 0x1p-24,
                  "gelu(%g) = %g, want %g", x, (double)tab[i], want);
        checked++;
    }
    cr_expect_gt(checked, 37000); /* 2 x 18,689 fp16 values in [-10, 10] */
    float row[6] = {-12.0f, -10.0f, 0.0f, 1.0f, 10.0f, 12.5f};
    cpu_gelu_row(row, 6, tab);
    cr_expect(row[0] == 0.0f && row[1] == 0.0f && row[2] == 0.0f);
    cr_expect_float_eq(row[3], 0.8413f, 1e-3f);
    cr_expect(row[4] == 10.0f && row[5] == 12.5f);
    free(tab);
}

/* Copies src's metadata and every tensor but `drop` into a new GGUF; returns its temp path. */
static char *copy_without(const char *src_path, const char *drop)
{
    gguf_file *src = NULL;
    cr_assert_eq(gguf_open(src_path, &src, NULL), ENG_OK);
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_copy_kv(w, src, ""), ENG_OK);
    bool dropped = false;
    for (int64_t i = 0; i < gguf_tensor_count(src); i++) {
        const gguf_tensor *t = gguf_tensor_at(src, i);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (!strcmp(name, drop)) {
            dropped = true;
            continue;
        }
        cr_assert_eq(gguf_writer_add_tensor(w, name, t->dtype, t->n_dims, t->ne, t->data,
                                            t->nbytes), ENG_OK, "%s", name);
    }
    cr_assert(dropped, "the source has no tensor %s", drop);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, NULL), ENG_OK);
    gguf_writer_free(w);
    gguf_free(src);
    return path;
}

/* Qwen2's biases are required (optional = false in its table): a file without one is
 * refused at load, naming the tensor, rather than run as if the bias were zero. */
Test(arch, qwen2_without_a_bias_is_refused_naming_it, .timeout = 120)
{
    char *full = qwen2_tiny_model();
    const char *drops[] = {"blk.0.attn_q.bias", "blk.1.attn_k.bias", "blk.1.attn_v.bias"};
    for (size_t i = 0; i < sizeof drops / sizeof drops[0]; i++) {
        char *path = copy_without(full, drops[i]);
        eng_model *m = NULL;
        eng_err err = {{0}};
        cr_expect_eq(eng_model_load(path, &m, &err), ENG_ERR_FORMAT, "without %s", drops[i]);
        cr_expect_null(m);
        cr_expect(strstr(err.msg, drops[i]), "without %s, the message was: %s", drops[i],
                  err.msg);
        unlink(path);
        free(path);
    }
    unlink(full);
    free(full);
}

/* The CPU backend runs qwen2, and so does the CUDA backend (Q/K/V biases: kernels/bias_add.cu;
 * attention kernels for this tiny model's head size 16 too; cuda_check_emu_qwen2 and the
 * cuda_check_emu_* checks of the tiny presets compare it with the CPU on the emulator).
 * Without a device it refuses with UNSUPPORTED and says so. */
Test(arch, qwen2_backends_run_it_or_refuse_it, .timeout = 120)
{
    char *path = qwen2_tiny_model();
    eng_model *m = load(path);
    eng_backend_config cfg = {.kv_bytes = 16 << 20, .block_size = 16, .min_blocks = 8,
                              .max_pos = 128, .max_tokens = 128, .max_logits = 8,
                              .n_threads = 1, .cuda_graphs = true};
    eng_backend *be = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_backend_cpu_create(m, &cfg, &be, &err), ENG_OK, "%s", err.msg);
    be->ops->free(be);
    be = NULL;
#if defined(SERVAL_HAVE_CUDA)
    eng_status st = eng_backend_cuda_create(m, &cfg, &be, &err);
    if (st == ENG_ERR_UNSUPPORTED && strstr(err.msg, "no CUDA device")) {
        cr_assert_null(be);
        cr_log_info("no CUDA device: only the CPU backend was checked (%s)", err.msg);
    } else {
        cr_assert_eq(st, ENG_OK, "the CUDA backend refused qwen2-tiny: %s", err.msg);
        be->ops->free(be);
    }
#endif
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* Runs `serval complete` on the model at path with a prompt, 8 greedy tokens. */
static void check_serval_complete(const char *path, const char *prompt)
{
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "complete", "--model", (char *)path, "--prompt", (char *)prompt,
                    "--max-tokens", "8", "--ignore-eos", "--threads", "1", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 60);
    cr_assert_eq(rc, 0, "serval complete failed (%d): %s", rc, err ? err : "");
    cr_assert(strstr(err, "decode") || strstr(err, "tok"), "no speed summary: %s", err);
    free(out);
    free(err);
    free(bin);
}

/* `serval complete` loads and runs a synthetic qwen2 model end to end (prompt, FIM markers
 * absent from this vocabulary are just text, greedy decode). */
Test(arch, serval_complete_runs_a_qwen2_model, .timeout = 120)
{
    char *path = qwen2_tiny_model();
    check_serval_complete(path, "def fib(n):");
    unlink(path);
    free(path);
}

/* ... and StarCoder and StarCoder2 models through the engine (the StarCoder2 prompt is longer
 * than its 32-position window). */
Test(arch, serval_complete_runs_starcoder_and_starcoder2_models, .timeout = 120)
{
    const char *presets[] = {"starcoder-tiny", "starcoder2-tiny"};
    const char *prompt = "def fib(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
                         "    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n";
    for (size_t i = 0; i < 2; i++) {
        char *path = synth_preset(presets[i], "7", "q8_0", NULL);
        check_serval_complete(path, prompt);
        unlink(path);
        free(path);
    }
}
