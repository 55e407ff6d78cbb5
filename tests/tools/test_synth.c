/* test_synth.c — runs the built serval-synth and checks what it wrote with the GGUF reader:
 * shapes, dtypes, copied vocabulary, seeded non-zero weights, and clear failures. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "testutil.h"

/* Runs serval-synth with the given extra arguments (NULL-terminated) into a fresh temp file;
 * returns the exit status and the path (caller frees and unlinks). */
static int synth(char **path, char **err_out, const char *preset, ...)
{
    char *bin = tu_bin_path("serval-synth");
    *path = tu_temp_path(".gguf");
    char *argv[32] = {bin, "--preset", (char *)preset, "--vocab-from",
                      (char *)tu_default_model(), "--out", *path};
    int argc = 7;
    va_list ap;
    va_start(ap, preset);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 31;)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 120);
    cr_assert_neq(rc, -1, "could not run %s", bin);
    if (err_out)
        *err_out = err;
    else
        free(err);
    free(out);
    free(bin);
    return rc;
}

static gguf_file *open_ok(const char *path)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(path, &f, &err), ENG_OK, "%s: %s", path, err.msg);
    return f;
}

static void expect_shape(const gguf_file *f, const char *name, gguf_dtype dt, int64_t ne0,
                         int64_t ne1)
{
    const gguf_tensor *t = gguf_tensor_find(f, name);
    cr_assert_not_null(t, "tensor %s missing", name);
    cr_assert_eq(t->dtype, dt, "%s: dtype %s, want %s", name, gguf_dtype_name(t->dtype),
                 gguf_dtype_name(dt));
    cr_assert_eq(t->n_dims, ne1 ? 2u : 1u, "%s: n_dims %u", name, t->n_dims);
    cr_assert_eq(t->ne[0], ne0, "%s: ne[0] = %lld, want %lld", name, (long long)t->ne[0],
                 (long long)ne0);
    cr_assert_eq(t->ne[1], ne1 ? ne1 : 1, "%s: ne[1] = %lld", name, (long long)t->ne[1]);
}

static uint32_t get_u32(const gguf_file *f, const char *key)
{
    uint32_t v = 0;
    eng_err err;
    cr_assert_eq(gguf_get_u32(f, key, &v, &err), ENG_OK, "%s", err.msg);
    return v;
}

/* Mean and standard deviation of a whole tensor, dequantised. */
static void stats(const gguf_tensor *t, double *mean, double *sd, double *zero_frac)
{
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t rb = gguf_dtype_row_bytes(t->dtype, t->ne[0]);
    float *row = malloc((size_t)t->ne[0] * sizeof *row);
    double s = 0, s2 = 0;
    int64_t zeros = 0, n = 0;
    for (int64_t r = 0; r < rows; r++) {
        quant_dequant_row(t->dtype, (const uint8_t *)t->data + (size_t)r * rb, row, t->ne[0]);
        for (int64_t i = 0; i < t->ne[0]; i++, n++) {
            s += row[i];
            s2 += (double)row[i] * row[i];
            zeros += row[i] == 0.0f;
        }
    }
    free(row);
    *mean = s / (double)n;
    *sd = sqrt(s2 / (double)n - *mean * *mean);
    *zero_frac = (double)zeros / (double)n;
}

Test(synth, tiny_has_llama_shapes_and_the_real_vocab)
{
    char *path;
    cr_assert_eq(synth(&path, NULL, "tiny", "--seed", "7", NULL), 0);
    gguf_file *f = open_ok(path), *src = open_ok(tu_default_model());
    eng_err err;
    gguf_str arch;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &arch, &err), ENG_OK);
    cr_assert(gguf_str_eq(arch, "llama"));
    cr_assert_eq(get_u32(f, "llama.block_count"), 2);
    cr_assert_eq(get_u32(f, "llama.embedding_length"), 64);
    cr_assert_eq(get_u32(f, "llama.feed_forward_length"), 128);
    cr_assert_eq(get_u32(f, "llama.attention.head_count"), 4);
    cr_assert_eq(get_u32(f, "llama.attention.head_count_kv"), 2);
    cr_assert_eq(get_u32(f, "llama.rope.dimension_count"), 16);
    cr_assert_eq(get_u32(f, "general.file_type"), 7, "llama.cpp's MOSTLY_Q8_0");
    float eps;
    cr_assert_eq(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &eps, &err), ENG_OK);
    cr_assert_float_eq(eps, 1e-5f, 1e-9);

    cr_assert_eq(gguf_tensor_count(f), 1 + 2 * 9 + 1);
    expect_shape(f, "token_embd.weight", GGUF_DTYPE_Q8_0, 64, 49152);
    for (int l = 0; l < 2; l++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_q.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 64);
        snprintf(n, sizeof n, "blk.%d.attn_k.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 32);
        snprintf(n, sizeof n, "blk.%d.attn_v.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 32);
        snprintf(n, sizeof n, "blk.%d.attn_output.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 64);
        snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 128);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 64, 128);
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", l);
        expect_shape(f, n, GGUF_DTYPE_Q8_0, 128, 64);
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", l);
        expect_shape(f, n, GGUF_DTYPE_F32, 64, 0);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", l);
        expect_shape(f, n, GGUF_DTYPE_F32, 64, 0);
    }
    expect_shape(f, "output_norm.weight", GGUF_DTYPE_F32, 64, 0);
    cr_assert_null(gguf_tensor_find(f, "output.weight"), "tiny ties its embeddings");

    /* Every tokenizer.* key is copied with its type; the token strings are identical. */
    for (int64_t i = 0; i < gguf_kv_count(src); i++) {
        gguf_str k = gguf_kv_key(src, i);
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0)
            continue;
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        int64_t j = gguf_kv_find(f, key);
        cr_assert(j >= 0, "%s not copied", key);
        cr_assert_eq(gguf_kv_type(f, j), gguf_kv_type(src, i), "%s changed type", key);
    }
    gguf_arr a, b;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.tokens", &a, &err), ENG_OK);
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", &b, &err), ENG_OK);
    cr_assert_eq(a.n, b.n);
    for (uint64_t i = 0; i < a.n; i++) {
        gguf_str x = gguf_arr_str(src, &a, i), y = gguf_arr_str(f, &b, i);
        cr_assert(x.len == y.len && memcmp(x.ptr, y.ptr, (size_t)x.len) == 0, "token %llu",
                  (unsigned long long)i);
    }
    cr_assert_eq(get_u32(f, "tokenizer.ggml.eos_token_id"), 2);

    /* Weights: bell-shaped around 0 with sd about 0.02, no zeros to speak of; norms near 1. */
    double mean, sd, zf;
    stats(gguf_tensor_find(f, "blk.1.ffn_down.weight"), &mean, &sd, &zf);
    cr_assert(fabs(mean) < 0.002 && sd > 0.015 && sd < 0.025 && zf < 0.05,
              "ffn_down: mean %g sd %g zeros %g", mean, sd, zf);
    stats(gguf_tensor_find(f, "token_embd.weight"), &mean, &sd, &zf);
    cr_assert(sd > 0.015 && sd < 0.025 && zf < 0.05, "token_embd: sd %g zeros %g", sd, zf);
    stats(gguf_tensor_find(f, "blk.0.attn_norm.weight"), &mean, &sd, &zf);
    cr_assert(fabs(mean - 1.0) < 0.05 && sd > 0.0 && sd < 0.2, "attn_norm: mean %g sd %g", mean,
              sd);
    /* Different tensors get different numbers. */
    const gguf_tensor *q0 = gguf_tensor_find(f, "blk.0.attn_q.weight");
    const gguf_tensor *q1 = gguf_tensor_find(f, "blk.1.attn_q.weight");
    cr_assert_neq(memcmp(q0->data, q1->data, q0->nbytes), 0);
    gguf_free(f);
    gguf_free(src);
    unlink(path);
    free(path);
}

Test(synth, same_seed_same_file_other_seed_other_weights)
{
    char *p1, *p2, *p3;
    cr_assert_eq(synth(&p1, NULL, "tiny", "--seed", "42", NULL), 0);
    cr_assert_eq(synth(&p2, NULL, "tiny", "--seed", "42", NULL), 0);
    cr_assert_eq(synth(&p3, NULL, "tiny", "--seed", "43", NULL), 0);
    size_t n1, n2, n3;
    char *b1 = tu_read_file(p1, &n1), *b2 = tu_read_file(p2, &n2), *b3 = tu_read_file(p3, &n3);
    cr_assert(b1 && b2 && b3);
    cr_assert_eq(n1, n2);
    cr_assert_eq(memcmp(b1, b2, n1), 0, "the same seed must give the same bytes");
    cr_assert_eq(n1, n3, "the seed changes values, not shapes");
    gguf_file *f1 = open_ok(p1), *f3 = open_ok(p3);
    for (int64_t i = 0; i < gguf_tensor_count(f1); i++) {
        const gguf_tensor *a = gguf_tensor_at(f1, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)a->name.len, a->name.ptr);
        const gguf_tensor *b = gguf_tensor_find(f3, name);
        cr_assert_not_null(b);
        cr_assert_neq(memcmp(a->data, b->data, a->nbytes), 0, "%s is the same for seeds 42, 43",
                      name);
    }
    gguf_free(f1);
    gguf_free(f3);
    free(b1);
    free(b2);
    free(b3);
    unlink(p1);
    unlink(p2);
    unlink(p3);
    free(p1);
    free(p2);
    free(p3);
}

Test(synth, dtype_and_layers_options)
{
    char *path;
    cr_assert_eq(synth(&path, NULL, "tiny", "--dtype", "f16", "--layers", "3", NULL), 0);
    gguf_file *f = open_ok(path);
    cr_assert_eq(get_u32(f, "llama.block_count"), 3);
    cr_assert_eq(get_u32(f, "general.file_type"), 1);
    expect_shape(f, "blk.2.ffn_up.weight", GGUF_DTYPE_F16, 64, 128);
    expect_shape(f, "token_embd.weight", GGUF_DTYPE_F16, 64, 49152);
    expect_shape(f, "blk.2.ffn_norm.weight", GGUF_DTYPE_F32, 64, 0);
    cr_assert_null(gguf_tensor_find(f, "blk.3.ffn_up.weight"));
    gguf_free(f);
    unlink(path);
    free(path);
}

Test(synth, starcoder_layout)
{
    char *path;
    cr_assert_eq(synth(&path, NULL, "starcoder-1b", "--layers", "1", "--dtype", "q4_0", NULL), 0);
    gguf_file *f = open_ok(path);
    eng_err err;
    gguf_str arch;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &arch, &err), ENG_OK);
    cr_assert(gguf_str_eq(arch, "starcoder"), "llama.cpp's name for gpt_bigcode");
    cr_assert_eq(get_u32(f, "starcoder.attention.head_count"), 16);
    cr_assert_eq(get_u32(f, "starcoder.attention.head_count_kv"), 1);
    cr_assert_eq(get_u32(f, "starcoder.context_length"), 8192);
    float eps;
    cr_assert_eq(gguf_get_f32(f, "starcoder.attention.layer_norm_epsilon", &eps, &err), ENG_OK);
    expect_shape(f, "token_embd.weight", GGUF_DTYPE_Q4_0, 2048, 49152);
    expect_shape(f, "position_embd.weight", GGUF_DTYPE_Q4_0, 2048, 8192);
    expect_shape(f, "blk.0.attn_qkv.weight", GGUF_DTYPE_Q4_0, 2048, 2048 + 2 * 128);
    expect_shape(f, "blk.0.attn_qkv.bias", GGUF_DTYPE_F32, 2048 + 2 * 128, 0);
    expect_shape(f, "blk.0.attn_output.weight", GGUF_DTYPE_Q4_0, 2048, 2048);
    expect_shape(f, "blk.0.attn_output.bias", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "blk.0.attn_norm.weight", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "blk.0.attn_norm.bias", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "blk.0.ffn_norm.bias", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "blk.0.ffn_up.weight", GGUF_DTYPE_Q4_0, 2048, 8192);
    expect_shape(f, "blk.0.ffn_up.bias", GGUF_DTYPE_F32, 8192, 0);
    expect_shape(f, "blk.0.ffn_down.weight", GGUF_DTYPE_Q4_0, 8192, 2048);
    expect_shape(f, "blk.0.ffn_down.bias", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "output_norm.weight", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "output_norm.bias", GGUF_DTYPE_F32, 2048, 0);
    expect_shape(f, "output.weight", GGUF_DTYPE_Q4_0, 2048, 49152);
    cr_assert_eq(gguf_tensor_count(f), 2 + 12 + 3);
    double mean, sd, zf;
    stats(gguf_tensor_find(f, "blk.0.attn_qkv.bias"), &mean, &sd, &zf);
    cr_assert(sd > 0.015 && sd < 0.025 && zf < 0.01, "bias: sd %g zeros %g", sd, zf);
    gguf_free(f);
    unlink(path);
    free(path);
}

/* The parity presets' small vocabulary (4096 tokens) keeps these runs fast. */
#define PARITY_VOCAB "tests/fixtures/families/vocab-smollm-4096.gguf"

static bool same_bytes(const gguf_tensor *a, const gguf_tensor *b)
{
    return a->nbytes == b->nbytes && memcmp(a->data, b->data, a->nbytes) == 0;
}

/* Every new --dtype writes llama.cpp's file_type and stores every matrix in the type, norms
 * and biases in f32. */
Test(synth, parity_presets_take_every_quant_type, .timeout = 120)
{
    static const struct { const char *name; gguf_dtype t; uint32_t ftype; } types[] = {
        {"q5_0", GGUF_DTYPE_Q5_0, 8}, {"q5_1", GGUF_DTYPE_Q5_1, 9},
        {"q4_k", GGUF_DTYPE_Q4_K, 15}, {"q5_k", GGUF_DTYPE_Q5_K, 17},
        {"Q6_K", GGUF_DTYPE_Q6_K, 18}, {"bf16", GGUF_DTYPE_BF16, 32}};
    char *vocab = tu_source_path(PARITY_VOCAB);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char *path;
        cr_assert_eq(synth(&path, NULL, "qwen2-parity", "--vocab-from", vocab, "--dtype",
                           types[i].name, NULL), 0, "%s", types[i].name);
        gguf_file *f = open_ok(path);
        cr_assert_eq(get_u32(f, "general.file_type"), types[i].ftype, "%s", types[i].name);
        expect_shape(f, "token_embd.weight", types[i].t, 256, 4096);
        expect_shape(f, "blk.1.ffn_down.weight", types[i].t, 768, 256);
        expect_shape(f, "blk.1.attn_k.weight", types[i].t, 256, 128);
        expect_shape(f, "blk.1.attn_k.bias", GGUF_DTYPE_F32, 128, 0);
        expect_shape(f, "output_norm.weight", GGUF_DTYPE_F32, 256, 0);
        double mean, sd, zf;
        stats(gguf_tensor_find(f, "blk.0.attn_q.weight"), &mean, &sd, &zf);
        cr_assert(sd > 0.055 && sd < 0.07 && fabs(mean) < 0.005, "%s: sd %g mean %g",
                  types[i].name, sd, mean);
        gguf_free(f);
        unlink(path);
        free(path);
    }
    free(vocab);
}

/* --from-f16 is the f16 file requantised: with --dtype f16 it is the f16 file itself, its
 * matrices differ from a direct quantisation only through the fp16 rounding, and the learned
 * positions stay f16 as llama.cpp's quantize leaves them. */
Test(synth, from_f16_rounds_matrices_through_fp16_and_keeps_positions, .timeout = 120)
{
    char *vocab = tu_source_path(PARITY_VOCAB);
    char *plain, *f16, *direct, *via;
    cr_assert_eq(synth(&plain, NULL, "starcoder-parity", "--vocab-from", vocab, "--dtype", "f16",
                       NULL), 0);
    cr_assert_eq(synth(&f16, NULL, "starcoder-parity", "--vocab-from", vocab, "--dtype", "f16",
                       "--from-f16", NULL), 0);
    cr_assert_eq(synth(&direct, NULL, "starcoder-parity", "--vocab-from", vocab, "--dtype",
                       "q8_0", NULL), 0);
    cr_assert_eq(synth(&via, NULL, "starcoder-parity", "--vocab-from", vocab, "--dtype", "q8_0",
                       "--from-f16", NULL), 0);
    gguf_file *a = open_ok(plain), *b = open_ok(f16), *d = open_ok(direct), *v = open_ok(via);
    int n_diff = 0;
    for (int64_t i = 0; i < gguf_tensor_count(a); i++) {
        const gguf_tensor *ta = gguf_tensor_at(a, i);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)ta->name.len, ta->name.ptr);
        cr_assert(same_bytes(ta, gguf_tensor_find(b, name)), "%s: f16 --from-f16 differs", name);
        const gguf_tensor *td = gguf_tensor_find(d, name), *tv = gguf_tensor_find(v, name);
        if (ta->n_dims == 1)
            cr_assert(same_bytes(td, tv), "%s: f32 vectors are not rounded", name);
        else if (!same_bytes(td, tv))
            n_diff++;
    }
    cr_assert_geq(n_diff, 10, "the fp16 rounding changes some Q8_0 blocks of most matrices");
    expect_shape(v, "position_embd.weight", GGUF_DTYPE_F16, 256, 512);
    expect_shape(d, "position_embd.weight", GGUF_DTYPE_Q8_0, 256, 512);
    cr_assert(same_bytes(gguf_tensor_find(v, "position_embd.weight"),
                         gguf_tensor_find(a, "position_embd.weight")));
    expect_shape(v, "blk.0.attn_qkv.weight", GGUF_DTYPE_Q8_0, 256, 256 + 2 * 64);
    gguf_free(a);
    gguf_free(b);
    gguf_free(d);
    gguf_free(v);
    char *paths[] = {plain, f16, direct, via};
    for (int i = 0; i < 4; i++) {
        unlink(paths[i]);
        free(paths[i]);
    }
    free(vocab);
}

Test(synth, tensor_type_overrides_one_matrix_and_names_mistakes, .timeout = 120)
{
    char *vocab = tu_source_path(PARITY_VOCAB);
    char *path, *err;
    cr_assert_eq(synth(&path, NULL, "llama-parity", "--vocab-from", vocab, "--dtype", "q4_k",
                       "--tensor-type", "output.weight=q6_k", "--tensor-type",
                       "blk.1.attn_v.weight=Q8_0", NULL), 0);
    gguf_file *f = open_ok(path);
    expect_shape(f, "output.weight", GGUF_DTYPE_Q6_K, 256, 4096);
    expect_shape(f, "blk.1.attn_v.weight", GGUF_DTYPE_Q8_0, 256, 128);
    expect_shape(f, "blk.0.attn_v.weight", GGUF_DTYPE_Q4_K, 256, 128);
    gguf_free(f);
    unlink(path);
    free(path);

    cr_assert_eq(synth(&path, &err, "llama-parity", "--vocab-from", vocab, "--tensor-type",
                       "blk.9.attn_v.weight=q6_k", NULL), 1);
    cr_assert(strstr(err, "no tensor named 'blk.9.attn_v.weight'"), "stderr: %s", err);
    free(err);
    unlink(path);
    free(path);
    cr_assert_eq(synth(&path, &err, "llama-parity", "--vocab-from", vocab, "--tensor-type",
                       "output_norm.weight=q8_0", NULL), 1);
    cr_assert(strstr(err, "output_norm.weight is not a matrix"), "stderr: %s", err);
    free(err);
    unlink(path);
    free(path);
    cr_assert_eq(synth(&path, &err, "llama-parity", "--tensor-type", "output.weight", NULL), 2);
    cr_assert(strstr(err, "is not NAME=TYPE"), "stderr: %s", err);
    free(err);
    unlink(path);
    free(path);
    free(vocab);
}

/* K-quant blocks are 256 wide: the tiny presets' 64-wide rows are refused, naming the tensor,
 * and nothing is written. */
Test(synth, k_quants_refuse_rows_that_are_not_whole_blocks)
{
    char *path, *err;
    cr_assert_eq(synth(&path, &err, "tiny", "--dtype", "q4_k", NULL), 1);
    cr_assert(strstr(err, "token_embd.weight has rows of 64 values") && strstr(err, "256"),
              "stderr: %s", err);
    struct stat st;
    cr_assert(stat(path, &st) != 0 || st.st_size == 0, "nothing may be written on failure");
    free(err);
    unlink(path);
    free(path);
}

Test(synth, unknown_preset_fails_clearly)
{
    char *path, *err;
    int rc = synth(&path, &err, "nope", NULL);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(err, "unknown preset 'nope'") && strstr(err, "smollm2-135m"), "stderr: %s",
              err);
    free(err);
    unlink(path);
    free(path);
}

Test(synth, missing_vocab_file_fails_clearly)
{
    char *bin = tu_bin_path("serval-synth");
    char *path = tu_temp_path(".gguf");
    unlink(path);
    char *argv[] = {bin, "--preset", "tiny", "--vocab-from", "/nonexistent/vocab.gguf", "--out",
                    path, NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 60);
    cr_assert_neq(rc, 0);
    cr_assert(strstr(err, "--vocab-from /nonexistent/vocab.gguf") &&
                  strstr(err, "No such file"),
              "stderr: %s", err);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "nothing may be written on failure");
    free(err);
    free(path);
    free(bin);
}

Test(synth, bad_options_and_help)
{
    char *path, *err;
    cr_assert_eq(synth(&path, &err, "tiny", "--dtype", "q3_k", NULL), 2);
    cr_assert(strstr(err, "unknown type 'q3_k'") && strstr(err, "q6_k"), "stderr: %s", err);
    free(err);
    unlink(path);
    free(path);
    cr_assert_eq(synth(&path, &err, "tiny", "--layers", "0", NULL), 2);
    cr_assert(strstr(err, "--layers"), "stderr: %s", err);
    free(err);
    unlink(path);
    free(path);

    char *bin = tu_bin_path("serval-synth");
    char *argv[] = {bin, "--help", NULL};
    char *out = NULL;
    cr_assert_eq(tu_run(argv, &out, NULL, 30), 0);
    cr_assert(strstr(out, "--vocab-from") && strstr(out, "starcoder-1b"), "stdout: %s", out);
    free(out);
    free(bin);
}
