/* test_arch.c — model families other than Llama on the CPU backend, against the float64
 * reference (tools/ref_forward.py) of a synthetic model that serval-synth regenerates from
 * the fixture's preset and seed: Qwen2 (Q/K/V biases, NeoX RoPE, tied head). Also: a Qwen2
 * file without its biases is refused naming the tensor, the CUDA backend refuses what it
 * cannot compute, and `serval complete` runs a Qwen2 model. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_forward.h"
#include "gguf_write.h"
#include "model.h"
#include "testutil.h"
#include "tu_json.h"

#define QWEN2_FIXTURE "tests/fixtures/arch/qwen2_tiny_ref.jsonl"

/* Runs serval-synth for the fixture's preset, seed and dtype with the default model's
 * vocabulary (what the fixture was generated from); returns the temp path (caller unlinks
 * and frees). */
static char *synth_from_fixture(const tu_json *meta)
{
    const char *preset = tu_json_get(meta, "preset")->str;
    const char *dtype = tu_json_get(meta, "dtype")->str;
    char seed[32];
    snprintf(seed, sizeof seed, "%.0f", tu_json_get(meta, "seed")->num);
    char *path = tu_temp_path(".gguf");
    char *bin = tu_bin_path("serval-synth");
    char *argv[] = {bin, "--preset", (char *)preset, "--seed", seed, "--dtype", (char *)dtype,
                    "--vocab-from", (char *)tu_default_model(), "--out", path, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 120);
    cr_assert_eq(rc, 0, "serval-synth failed (%d): %s", rc, err ? err : "");
    free(err);
    free(bin);
    return path;
}

/* The fixture's tiny qwen2 model, written by serval-synth from the fixture's first line;
 * returns the temp path (caller unlinks and frees). */
static char *qwen2_tiny_model(void)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl(QWEN2_FIXTURE, &n_lines);
    char *path = synth_from_fixture(lines[0]);
    for (size_t i = 0; i < n_lines; i++)
        tu_json_free(lines[i]);
    free(lines);
    return path;
}

static eng_model *load(const char *path)
{
    eng_model *m = NULL;
    eng_err err = {{0}};
    cr_assert_eq(eng_model_load(path, &m, &err), ENG_OK, "%s", err.msg);
    return m;
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
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
    size_t n_lines;
    tu_json **lines = tu_read_jsonl(QWEN2_FIXTURE, &n_lines);
    cr_assert_geq(n_lines, 2);
    char *path = synth_from_fixture(lines[0]);
    eng_model *m = load(path);
    const int32_t nv = m->hp.n_vocab;
    const double tie = 0.10; /* of the row's rms */
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
                cr_expect_leq(rel, 0.08, "sequence %zu pos %d token %d: %f vs reference %f "
                              "(%.1f%% of the row's rms %f)", li, p, id, (double)row[id], want,
                              100.0 * rel, rms);
            }
            const int32_t pick = argmax(row, nv), ref1 = (int32_t)top->items[0]->items[0]->num;
            const double best = top->items[0]->items[1]->num;
            const bool is_decided = best - top->items[1]->items[1]->num > tie * rms;
            positions++;
            top1_same += pick == ref1;
            decided += is_decided;
            decided_same += is_decided && pick == ref1;
            double pick_gap = INFINITY; /* the reference's best minus its logit of the pick */
            for (size_t t = 0; t < top->n; t++)
                if ((int32_t)top->items[t]->items[0]->num == pick)
                    pick_gap = best - top->items[t]->items[1]->num;
            cr_expect_leq(pick_gap, tie * rms, "sequence %zu pos %d: the CPU picks %d, which the "
                          "reference scores %.1f%% of the rms below its best %d (or not in its "
                          "top %zu)", li, p, pick, 100.0 * pick_gap / rms, ref1, top->n);
        }
        eng_cpu_ctx_free(c);
        free(logits);
        free(toks);
    }
    cr_log_info("qwen2-tiny vs float64: top-1 equal at %zu/%zu positions (%zu/%zu where the "
                "reference's margin exceeds %.0f%% of the rms), |error| / rms: mean %.4f, worst "
                "%.4f", top1_same, positions, decided_same, decided, 100.0 * tie,
                sum_err / (double)n_err, worst);
    cr_expect_leq(sum_err / (double)n_err, 0.02, "mean |error| %.2f%% of the rms",
                  100.0 * sum_err / (double)n_err);
    cr_expect_geq(decided, positions / 2, "too few decided positions (%zu of %zu)", decided,
                  positions);
    cr_expect_geq((double)decided_same, 0.99 * (double)decided,
                  "top-1 agrees with the reference at only %zu of %zu decided positions",
                  decided_same, decided);
    eng_model_free(m);
    unlink(path);
    free(path);
    for (size_t i = 0; i < n_lines; i++)
        tu_json_free(lines[i]);
    free(lines);
}

/* A qwen2 sequence run in one call, in odd chunks, or token by token gives the same logits
 * bit for bit (the bias and NeoX paths keep the CPU backend's batch independence). */
Test(arch, qwen2_chunked_equals_sequential, .timeout = 120)
{
    char *path = qwen2_tiny_model();
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
    cr_assert_eq(memcmp(a, b, sizeof(float) * (size_t)nv), 0, "chunked logits differ");
    eng_cpu_ctx_free(c1);
    eng_cpu_ctx_free(c2);
    free(a);
    free(b);
    eng_model_free(m);
    unlink(path);
    free(path);
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

/* The CPU backend runs qwen2. The CUDA backend runs qwen2 too (Q/K/V biases:
 * kernels/bias_add.cu; cuda_check_emu_qwen2 checks it against the CPU on the emulator) but has
 * no attention kernel for this tiny model's head size 16, so it must refuse with UNSUPPORTED and
 * say why rather than compute anything. Without a device it says that first. */
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
    cr_assert_eq(st, ENG_ERR_UNSUPPORTED, "the CUDA backend took a head-size-16 model (%s)",
                 eng_status_str(st));
    cr_assert_null(be);
    if (strstr(err.msg, "no CUDA device"))
        cr_log_info("no CUDA device: only the CPU backend was checked (%s)", err.msg);
    else
        cr_assert(strstr(err.msg, "head size 16"), "message: %s", err.msg);
#endif
    eng_model_free(m);
    unlink(path);
    free(path);
}

/* `serval complete` loads and runs a synthetic qwen2 model end to end (prompt, FIM markers
 * absent from this vocabulary are just text, greedy decode). */
Test(arch, serval_complete_runs_a_qwen2_model, .timeout = 120)
{
    char *path = qwen2_tiny_model();
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "complete", "--model", path, "--prompt", "def fib(n):",
                    "--max-tokens", "8", "--ignore-eos", "--threads", "1", NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 60);
    cr_assert_eq(rc, 0, "serval complete failed (%d): %s", rc, err ? err : "");
    cr_assert(strstr(err, "decode") || strstr(err, "tok"), "no speed summary: %s", err);
    free(out);
    free(err);
    free(bin);
    unlink(path);
    free(path);
}
