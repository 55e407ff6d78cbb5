/* test_gguf.c — GGUF reader and writer: the real default model, write→read round trips of
 * every metadata type and dtype, and hostile files that must fail with a clear message. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_write.h"
#include "testutil.h"

/* ---- a little-endian byte builder for hand-made (and hostile) files ---------------------- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_bytes(bb *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb *b, uint8_t v) { bb_bytes(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) { bb_bytes(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_bytes(b, &v, 8); }
static void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_bytes(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t align)
{
    while (b->n % align)
        bb_u8(b, 0);
}
static void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, 0);
}

static bb header(uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb b = {0};
    bb_bytes(&b, "GGUF", 4);
    bb_u32(&b, version);
    bb_u64(&b, n_tensors);
    bb_u64(&b, n_kv);
    return b;
}

static void kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_UINT32);
    bb_u32(b, v);
}

static void kv_str(bb *b, const char *key, const char *v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_TYPE_STRING);
    bb_str(b, v);
}

static void tinfo(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t dtype,
                  uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        bb_u64(b, ne[i]);
    bb_u32(b, dtype);
    bb_u64(b, offset);
}

/* Opens b (copied into an exact-size allocation so ASan sees any over-read), expects status
 * `want` and a message containing `frag`. */
static void expect_fail(const bb *b, eng_status want, const char *frag)
{
    uint8_t *copy = malloc(b->n ? b->n : 1);
    if (b->n)
        memcpy(copy, b->p, b->n);
    gguf_file *f = (gguf_file *)1;
    eng_err err = {{0}};
    eng_status s = gguf_open_buffer(copy, b->n, &f, &err);
    cr_assert_eq(s, want, "status %s, want %s (message: %s)", eng_status_str(s),
                 eng_status_str(want), err.msg);
    cr_assert_null(f);
    cr_assert(strstr(err.msg, frag) != NULL, "message '%s' lacks '%s'", err.msg, frag);
    cr_assert(strncmp(err.msg, "gguf: ", 6) == 0, "message '%s' lacks the gguf: prefix", err.msg);
    free(copy);
}

static gguf_file *expect_open(const bb *b)
{
    gguf_file *f = NULL;
    eng_err err = {{0}};
    eng_status s = gguf_open_buffer(b->p, b->n, &f, &err);
    cr_assert_eq(s, ENG_OK, "open failed: %s", err.msg);
    return f;
}

/* A file with one u32 kv and one F32 [8] tensor at offset 0. */
static bb one_tensor_file(uint32_t n_dims, const uint64_t *ne, uint32_t dtype, uint64_t offset,
                          size_t data_bytes)
{
    bb b = header(3, 1, 1);
    kv_u32(&b, "general.quantization_version", 2);
    tinfo(&b, "blk.0.attn_q.weight", n_dims, ne, dtype, offset);
    bb_pad(&b, 32);
    bb_zeros(&b, data_bytes);
    return b;
}

/* ---- the real default model ----------------------------------------------------------- */

Test(gguf_real, default_model_metadata)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(tu_default_model(), &f, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(gguf_version(f), 3);
    cr_assert_eq(gguf_alignment(f), 32);
    cr_assert_eq(gguf_kv_count(f), 33);
    cr_assert_eq(gguf_tensor_count(f), 272);

    gguf_str s;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &s, &err), ENG_OK, "%s", err.msg);
    cr_assert(gguf_str_eq(s, "llama"));
    cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.model", &s, &err), ENG_OK);
    cr_assert(gguf_str_eq(s, "gpt2"));
    cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.pre", &s, &err), ENG_OK);
    cr_assert(gguf_str_eq(s, "smollm"));

    struct { const char *key; uint32_t want; } u32s[] = {
        {"llama.block_count", 30},          {"llama.context_length", 8192},
        {"llama.embedding_length", 576},    {"llama.feed_forward_length", 1536},
        {"llama.attention.head_count", 9},  {"llama.attention.head_count_kv", 3},
        {"llama.rope.dimension_count", 64}, {"llama.vocab_size", 49152},
        {"general.file_type", 3},           {"tokenizer.ggml.bos_token_id", 1},
        {"tokenizer.ggml.eos_token_id", 2},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        uint32_t v = 0;
        cr_assert_eq(gguf_get_u32(f, u32s[i].key, &v, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(v, u32s[i].want, "%s = %u, want %u", u32s[i].key, v, u32s[i].want);
    }
    int64_t i64;
    cr_assert_eq(gguf_get_i64(f, "llama.block_count", &i64, &err), ENG_OK);
    cr_assert_eq(i64, 30);
    float fv;
    cr_assert_eq(gguf_get_f32(f, "llama.rope.freq_base", &fv, &err), ENG_OK);
    cr_assert_float_eq(fv, 100000.0f, 1e-3);
    cr_assert_eq(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &fv, &err), ENG_OK);
    cr_assert_float_eq(fv, 1e-5f, 1e-9);
    bool bv = true;
    cr_assert_eq(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &bv, &err), ENG_OK);
    cr_assert_eq(bv, false);

    gguf_arr a;
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.tokens", &a, &err), ENG_OK);
    cr_assert_eq(a.elem_type, GGUF_TYPE_STRING);
    cr_assert_eq(a.n, 49152);
    cr_assert(gguf_str_eq(gguf_arr_str(f, &a, 0), "<|endoftext|>"));
    cr_assert(gguf_str_eq(gguf_arr_str(f, &a, 1), "<|im_start|>"));
    cr_assert(gguf_str_eq(gguf_arr_str(f, &a, 2), "<|im_end|>"));
    cr_assert(gguf_str_eq(gguf_arr_str(f, &a, 49151), "ectable"));
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.merges", &a, &err), ENG_OK);
    cr_assert_eq(a.n, 48900);
    cr_assert(gguf_str_eq(gguf_arr_str(f, &a, 0), "\xc4\xa0 t"));
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.token_type", &a, &err), ENG_OK);
    cr_assert_eq(a.elem_type, GGUF_TYPE_INT32);
    cr_assert_eq(a.n, 49152);
    int32_t tt;
    memcpy(&tt, (const uint8_t *)a.data + 4 * 0, 4);
    cr_assert_eq(tt, 3, "<|endoftext|> is a control token (type 3), got %d", tt);
    gguf_free(f);
}

Test(gguf_real, default_model_tensors)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(tu_default_model(), &f, &err), ENG_OK, "%s", err.msg);
    const gguf_tensor *t = gguf_tensor_find(f, "token_embd.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, GGUF_DTYPE_Q8_0);
    cr_assert_eq(t->n_dims, 2);
    cr_assert_eq(t->ne[0], 576);
    cr_assert_eq(t->ne[1], 49152);
    cr_assert_eq(t->nbytes, (size_t)49152 * 576 / 32 * 34);
    cr_assert_eq(t->nbytes, gguf_dtype_row_bytes(t->dtype, 576) * 49152);

    t = gguf_tensor_find(f, "blk.0.attn_q.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, GGUF_DTYPE_Q4_1);
    cr_assert_eq(t->ne[0], 576);
    cr_assert_eq(t->ne[1], 576);
    t = gguf_tensor_find(f, "blk.29.ffn_down.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, GGUF_DTYPE_Q4_1);
    cr_assert_eq(t->ne[0], 1536);
    cr_assert_eq(t->ne[1], 576);
    cr_assert_eq(gguf_tensor_find(f, "blk.30.ffn_down.weight"), NULL);
    cr_assert_eq(gguf_tensor_find(f, "output.weight"), NULL, "SmolLM2 ties embeddings");

    t = gguf_tensor_find(f, "output_norm.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, GGUF_DTYPE_F32);
    cr_assert_eq(t->n_dims, 1);
    cr_assert_eq(t->ne[0], 576);
    cr_assert_eq(t->ne[1], 1);
    float sum = 0;
    for (int i = 0; i < 576; i++) {
        float v;
        memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
        cr_assert(isfinite(v));
        sum += v;
    }
    cr_assert(sum > 100.0f, "trained norm weights sum to %g", sum);

    /* Every tensor lies inside the file, 32-byte aligned, in one of the expected dtypes. */
    struct stat st;
    cr_assert_eq(stat(tu_default_model(), &st), 0);
    const uint8_t *lo = NULL;
    int n_q41 = 0, n_f32 = 0;
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        t = gguf_tensor_at(f, i);
        if (!lo || (const uint8_t *)t->data < lo)
            lo = t->data;
        n_q41 += t->dtype == GGUF_DTYPE_Q4_1;
        n_f32 += t->dtype == GGUF_DTYPE_F32;
        cr_assert_eq((uintptr_t)t->data % 32, 0);
        cr_assert_eq(gguf_tensor_find(f, "token_embd.weight")->dtype, GGUF_DTYPE_Q8_0);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        cr_assert_eq(gguf_tensor_find(f, name), t);
    }
    cr_assert_eq(n_q41, 30 * 7);
    cr_assert_eq(n_f32, 30 * 2 + 1);
    gguf_free(f);
}

Test(gguf_real, getters_report_missing_and_mistyped_keys)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(tu_default_model(), &f, &err), ENG_OK, "%s", err.msg);
    uint32_t u;
    cr_assert_eq(gguf_get_u32(f, "llama.no_such_key", &u, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "'llama.no_such_key' not found"), "%s", err.msg);
    cr_assert_eq(gguf_get_u32(f, "general.architecture", &u, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "'general.architecture' has type string"), "%s", err.msg);
    float fv;
    cr_assert_eq(gguf_get_f32(f, "llama.block_count", &fv, &err), ENG_ERR_FORMAT);
    gguf_arr a;
    cr_assert_eq(gguf_get_arr(f, "llama.block_count", &a, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "expected array"), "%s", err.msg);
    gguf_str s;
    cr_assert_eq(gguf_get_str(f, "tokenizer.ggml.tokens", &s, &err), ENG_ERR_FORMAT);
    /* Lookups are by exact name: prefixes and extensions of a key do not match. */
    cr_assert_eq(gguf_kv_find(f, "llama"), -1);
    cr_assert_eq(gguf_kv_find(f, "llama.block_count."), -1);
    cr_assert_eq(gguf_kv_find(f, ""), -1);
    cr_assert_eq(gguf_tensor_find(f, "token_embd"), NULL);
    int64_t i = gguf_kv_find(f, "llama.block_count");
    cr_assert(i >= 0);
    cr_assert(gguf_str_eq(gguf_kv_key(f, i), "llama.block_count"));
    cr_assert_eq(gguf_kv_type(f, i), GGUF_TYPE_UINT32);
    gguf_free(f);
}

/* ---- dtype table ------------------------------------------------------------------------- */

Test(gguf_dtype, table)
{
    struct { gguf_dtype t; const char *name; int64_t elems; size_t bytes; } want[] = {
        {GGUF_DTYPE_F32, "F32", 1, 4},      {GGUF_DTYPE_F16, "F16", 1, 2},
        {GGUF_DTYPE_BF16, "BF16", 1, 2},    {GGUF_DTYPE_Q4_0, "Q4_0", 32, 18},
        {GGUF_DTYPE_Q4_1, "Q4_1", 32, 20},  {GGUF_DTYPE_Q8_0, "Q8_0", 32, 34},
        {GGUF_DTYPE_Q6_K, "Q6_K", 256, 210}, {GGUF_DTYPE_Q5_0, "Q5_0", 32, 22},
        {GGUF_DTYPE_Q5_1, "Q5_1", 32, 24},  {GGUF_DTYPE_Q4_K, "Q4_K", 256, 144},
        {GGUF_DTYPE_Q5_K, "Q5_K", 256, 176},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(gguf_dtype_valid(want[i].t));
        cr_assert_str_eq(gguf_dtype_name(want[i].t), want[i].name);
        cr_assert_eq(gguf_dtype_block_elems(want[i].t), want[i].elems);
        cr_assert_eq(gguf_dtype_block_bytes(want[i].t), want[i].bytes);
        cr_assert_eq(gguf_dtype_row_bytes(want[i].t, 512), 512 / want[i].elems * want[i].bytes);
    }
    cr_assert_not(gguf_dtype_valid(4));
    cr_assert_not(gguf_dtype_valid(10)); /* Q2_K: real GGML type, not implemented */
    cr_assert_not(gguf_dtype_valid(1000));
}

/* ---- write → read round trip ------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static eng_status gen_rows(void *user, int64_t row, void *dst, eng_err *err)
{
    (void)err;
    size_t row_bytes = *(const size_t *)user;
    for (size_t i = 0; i < row_bytes; i++)
        ((uint8_t *)dst)[i] = (uint8_t)(row * 31 + (int64_t)i);
    return ENG_OK;
}

static eng_status gen_fail(void *user, int64_t row, void *dst, eng_err *err)
{
    (void)user;
    (void)dst;
    if (row == 2)
        return eng_fail(err, ENG_ERR_INVALID, "generator gave up at row %lld", (long long)row);
    return ENG_OK;
}

Test(gguf_write, round_trip_every_type)
{
    gguf_writer *w = gguf_writer_create();
    cr_assert_not_null(w);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = 0xFEDCBA9876543210ull;
    int64_t i64 = INT64_MIN + 5;
    double f64 = -1.25e300;
    uint8_t bt = 1;
    cr_assert_eq(gguf_writer_set_scalar(w, "t.u8", GGUF_TYPE_UINT8, &u8), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.i8", GGUF_TYPE_INT8, &i8), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.u16", GGUF_TYPE_UINT16, &u16), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.i16", GGUF_TYPE_INT16, &i16), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.u64", GGUF_TYPE_UINT64, &u64), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.i64", GGUF_TYPE_INT64, &i64), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.f64", GGUF_TYPE_FLOAT64, &f64), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.bool_s", GGUF_TYPE_BOOL, &bt), ENG_OK);
    cr_assert_eq(gguf_writer_set_scalar(w, "t.str", GGUF_TYPE_STRING, "x"), ENG_ERR_INVALID);
    cr_assert_eq(gguf_writer_set_u32(w, "t.u32", 4000000000u), ENG_OK);
    cr_assert_eq(gguf_writer_set_i32(w, "t.i32", -123456), ENG_OK);
    cr_assert_eq(gguf_writer_set_f32(w, "t.f32", 0.1f), ENG_OK);
    cr_assert_eq(gguf_writer_set_bool(w, "t.bool", true), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, "t.str", "a\0b", 3), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, "t.empty", "", 0), ENG_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "t.replaced", 1), ENG_OK);
    cr_assert_eq(gguf_writer_set_str(w, "t.replaced", "now a string", 12), ENG_OK);

    /* A numeric array of every element type, filled with random bytes (bools 0/1). */
    static const gguf_type numeric[] = {
        GGUF_TYPE_UINT8,  GGUF_TYPE_INT8,  GGUF_TYPE_UINT16, GGUF_TYPE_INT16,
        GGUF_TYPE_UINT32, GGUF_TYPE_INT32, GGUF_TYPE_FLOAT32, GGUF_TYPE_BOOL,
        GGUF_TYPE_UINT64, GGUF_TYPE_INT64, GGUF_TYPE_FLOAT64};
    static const size_t esize[] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 8, 8};
    enum { N_NUM = sizeof numeric / sizeof numeric[0], ARR_N = 37 };
    uint8_t arrs[N_NUM][ARR_N * 8];
    for (size_t k = 0; k < N_NUM; k++) {
        for (size_t i = 0; i < sizeof arrs[k]; i++)
            arrs[k][i] = numeric[k] == GGUF_TYPE_BOOL ? (uint8_t)(rnd() & 1) : (uint8_t)rnd();
        char key[32];
        snprintf(key, sizeof key, "arr.%zu", k);
        cr_assert_eq(gguf_writer_set_arr(w, key, numeric[k], arrs[k], ARR_N), ENG_OK);
    }
    cr_assert_eq(gguf_writer_set_arr(w, "arr.empty", GGUF_TYPE_INT32, NULL, 0), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr(w, "arr.bad", GGUF_TYPE_STRING, arrs[0], 1), ENG_ERR_INVALID);
    uint8_t badbool = 2;
    cr_assert_eq(gguf_writer_set_arr(w, "arr.badbool", GGUF_TYPE_BOOL, &badbool, 1),
                 ENG_ERR_INVALID);
    gguf_str strs[5] = {{"alpha", 5}, {"", 0}, {"\xc4\xa0 t", 4}, {"nul\0in", 6}, {"z", 1}};
    cr_assert_eq(gguf_writer_set_arr_str(w, "arr.str", strs, 5), ENG_OK);
    cr_assert_eq(gguf_writer_set_arr_str(w, "arr.str_empty", NULL, 0), ENG_OK);

    /* A tensor of every dtype, 1 to 4 dims, random bytes; one more from a row generator. */
    static const gguf_dtype dtypes[] = {GGUF_DTYPE_F32,  GGUF_DTYPE_F16,  GGUF_DTYPE_BF16,
                                        GGUF_DTYPE_Q4_0, GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q8_0,
                                        GGUF_DTYPE_Q6_K};
    enum { N_DT = sizeof dtypes / sizeof dtypes[0] };
    uint8_t *tdata[N_DT];
    size_t tbytes[N_DT];
    int64_t tne[N_DT][4];
    for (size_t k = 0; k < N_DT; k++) {
        uint32_t n_dims = (uint32_t)(k % 4) + 1;
        int64_t ne[4] = {gguf_dtype_block_elems(dtypes[k]) * (int64_t)(k + 1), 3, 2, 2};
        memcpy(tne[k], ne, sizeof ne);
        for (uint32_t d = n_dims; d < 4; d++)
            tne[k][d] = 1;
        tbytes[k] = gguf_dtype_row_bytes(dtypes[k], ne[0]);
        for (uint32_t d = 1; d < n_dims; d++)
            tbytes[k] *= (size_t)ne[d];
        tdata[k] = malloc(tbytes[k]);
        for (size_t i = 0; i < tbytes[k]; i++)
            tdata[k][i] = (uint8_t)rnd();
        char name[32];
        snprintf(name, sizeof name, "t.%s", gguf_dtype_name(dtypes[k]));
        cr_assert_eq(gguf_writer_add_tensor(w, name, dtypes[k], n_dims, ne, tdata[k], tbytes[k]),
                     ENG_OK);
        cr_assert_eq(gguf_writer_add_tensor(w, "t.wrong_size", dtypes[k], n_dims, ne, tdata[k],
                                            tbytes[k] + 1),
                     ENG_ERR_INVALID);
    }
    int64_t ne_dup[1] = {32};
    cr_assert_eq(gguf_writer_add_tensor(w, "t.F32", GGUF_DTYPE_F32, 1, ne_dup, tdata[0], 128),
                 ENG_ERR_INVALID, "duplicate tensor names are refused");
    int64_t ne_odd[2] = {33, 1};
    cr_assert_eq(gguf_writer_add_tensor_gen(w, "t.odd", GGUF_DTYPE_Q8_0, 2, ne_odd, gen_rows, NULL),
                 ENG_ERR_INVALID);
    int64_t ne_gen[3] = {64, 5, 3};
    size_t gen_row = gguf_dtype_row_bytes(GGUF_DTYPE_Q8_0, 64);
    cr_assert_eq(gguf_writer_add_tensor_gen(w, "t.gen", GGUF_DTYPE_Q8_0, 3, ne_gen, gen_rows,
                                            &gen_row),
                 ENG_OK);

    char *path = tu_temp_path(".gguf");
    eng_err err;
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);

    gguf_file *f = NULL;
    cr_assert_eq(gguf_open(path, &f, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(gguf_version(f), 3);
    cr_assert_eq(gguf_kv_count(f), 15 + N_NUM + 3);
    uint32_t u32;
    int64_t v64;
    float f32;
    bool b;
    gguf_str s;
    cr_assert_eq(gguf_get_u32(f, "t.u8", &u32, &err), ENG_OK);
    cr_assert_eq(u32, 200);
    cr_assert_eq(gguf_get_i64(f, "t.i8", &v64, &err), ENG_OK);
    cr_assert_eq(v64, -100);
    cr_assert_eq(gguf_get_u32(f, "t.i8", &u32, &err), ENG_ERR_FORMAT, "-100 is no u32");
    cr_assert(strstr(err.msg, "-100 does not fit u32"), "%s", err.msg);
    cr_assert_eq(gguf_get_u32(f, "t.u16", &u32, &err), ENG_OK);
    cr_assert_eq(u32, 60000);
    cr_assert_eq(gguf_get_i64(f, "t.i16", &v64, &err), ENG_OK);
    cr_assert_eq(v64, -30000);
    cr_assert_eq(gguf_get_u32(f, "t.u32", &u32, &err), ENG_OK);
    cr_assert_eq(u32, 4000000000u);
    cr_assert_eq(gguf_get_i64(f, "t.i32", &v64, &err), ENG_OK);
    cr_assert_eq(v64, -123456);
    cr_assert_eq(gguf_get_i64(f, "t.u64", &v64, &err), ENG_ERR_FORMAT, "u64 above INT64_MAX");
    cr_assert_eq(gguf_get_u32(f, "t.u64", &u32, &err), ENG_ERR_FORMAT);
    cr_assert_eq(gguf_get_i64(f, "t.i64", &v64, &err), ENG_OK);
    cr_assert_eq(v64, INT64_MIN + 5);
    cr_assert_eq(gguf_get_f32(f, "t.f32", &f32, &err), ENG_OK);
    cr_assert_eq(f32, 0.1f);
    cr_assert_eq(gguf_kv_type(f, gguf_kv_find(f, "t.f64")), GGUF_TYPE_FLOAT64);
    cr_assert_eq(gguf_get_f32(f, "t.f64", &f32, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "does not fit f32"), "%s", err.msg);
    cr_assert_eq(gguf_get_bool(f, "t.bool", &b, &err), ENG_OK);
    cr_assert(b);
    cr_assert_eq(gguf_get_bool(f, "t.bool_s", &b, &err), ENG_OK);
    cr_assert(b);
    cr_assert_eq(gguf_get_str(f, "t.str", &s, &err), ENG_OK);
    cr_assert_eq(s.len, 3);
    cr_assert_eq(memcmp(s.ptr, "a\0b", 3), 0);
    cr_assert_eq(gguf_get_str(f, "t.empty", &s, &err), ENG_OK);
    cr_assert_eq(s.len, 0);
    cr_assert_eq(gguf_get_str(f, "t.replaced", &s, &err), ENG_OK);
    cr_assert(gguf_str_eq(s, "now a string"));

    gguf_arr a;
    for (size_t k = 0; k < N_NUM; k++) {
        char key[32];
        snprintf(key, sizeof key, "arr.%zu", k);
        cr_assert_eq(gguf_get_arr(f, key, &a, &err), ENG_OK, "%s", err.msg);
        cr_assert_eq(a.elem_type, numeric[k]);
        cr_assert_eq(a.n, ARR_N);
        cr_assert_eq(memcmp(a.data, arrs[k], ARR_N * esize[k]), 0, "%s differs", key);
    }
    cr_assert_eq(gguf_get_arr(f, "arr.empty", &a, &err), ENG_OK);
    cr_assert_eq(a.n, 0);
    cr_assert_eq(gguf_kv_find(f, "arr.bad"), -1);
    cr_assert_eq(gguf_get_arr(f, "arr.str", &a, &err), ENG_OK);
    cr_assert_eq(a.elem_type, GGUF_TYPE_STRING);
    cr_assert_eq(a.n, 5);
    for (uint64_t i = 0; i < 5; i++) {
        gguf_str x = gguf_arr_str(f, &a, i);
        cr_assert_eq(x.len, strs[i].len);
        cr_assert_eq(memcmp(x.ptr, strs[i].ptr, (size_t)x.len), 0);
    }
    cr_assert_eq(gguf_get_arr(f, "arr.str_empty", &a, &err), ENG_OK);
    cr_assert_eq(a.n, 0);

    cr_assert_eq(gguf_tensor_count(f), N_DT + 1);
    for (size_t k = 0; k < N_DT; k++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", gguf_dtype_name(dtypes[k]));
        const gguf_tensor *t = gguf_tensor_find(f, name);
        cr_assert_not_null(t, "%s missing", name);
        cr_assert_eq(t->dtype, dtypes[k]);
        cr_assert_eq(t->n_dims, (uint32_t)(k % 4) + 1);
        for (int d = 0; d < 4; d++)
            cr_assert_eq(t->ne[d], tne[k][d], "%s ne[%d]", name, d);
        cr_assert_eq(t->nbytes, tbytes[k]);
        cr_assert_eq((uintptr_t)t->data % 32, 0);
        cr_assert_eq(memcmp(t->data, tdata[k], tbytes[k]), 0, "%s data differs", name);
        free(tdata[k]);
    }
    const gguf_tensor *t = gguf_tensor_find(f, "t.gen");
    cr_assert_not_null(t);
    cr_assert_eq(t->nbytes, gen_row * 15);
    for (int64_t r = 0; r < 15; r++)
        for (size_t i = 0; i < gen_row; i++)
            cr_assert_eq(((const uint8_t *)t->data)[(size_t)r * gen_row + i],
                         (uint8_t)(r * 31 + (int64_t)i));
    gguf_free(f);
    unlink(path);
    free(path);
}

Test(gguf_write, copy_kv_from_real_model)
{
    gguf_file *src = NULL, *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(tu_default_model(), &src, &err), ENG_OK, "%s", err.msg);
    gguf_writer *w = gguf_writer_create();
    cr_assert_eq(gguf_writer_set_str(w, "general.architecture", "llama", 5), ENG_OK);
    cr_assert_eq(gguf_writer_copy_kv(w, src, "tokenizer."), ENG_OK);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_writer_free(w);
    cr_assert_eq(gguf_open(path, &f, &err), ENG_OK, "%s", err.msg);
    int n_tok_keys = 0;
    for (int64_t i = 0; i < gguf_kv_count(src); i++) {
        gguf_str k = gguf_kv_key(src, i);
        if (k.len < 10 || memcmp(k.ptr, "tokenizer.", 10) != 0)
            continue;
        n_tok_keys++;
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        int64_t j = gguf_kv_find(f, key);
        cr_assert(j >= 0, "%s not copied", key);
        cr_assert_eq(gguf_kv_type(f, j), gguf_kv_type(src, i));
    }
    cr_assert_eq(gguf_kv_count(f), n_tok_keys + 1);
    gguf_arr a, b;
    cr_assert_eq(gguf_get_arr(src, "tokenizer.ggml.merges", &a, &err), ENG_OK);
    cr_assert_eq(gguf_get_arr(f, "tokenizer.ggml.merges", &b, &err), ENG_OK);
    cr_assert_eq(a.n, b.n);
    for (uint64_t i = 0; i < a.n; i++) {
        gguf_str x = gguf_arr_str(src, &a, i), y = gguf_arr_str(f, &b, i);
        cr_assert(x.len == y.len && memcmp(x.ptr, y.ptr, (size_t)x.len) == 0, "merge %llu",
                  (unsigned long long)i);
    }
    cr_assert_eq(gguf_tensor_count(f), 0);
    gguf_free(f);
    gguf_free(src);
    unlink(path);
    free(path);
}

Test(gguf_write, generator_failure_leaves_no_file)
{
    gguf_writer *w = gguf_writer_create();
    int64_t ne[2] = {32, 4};
    cr_assert_eq(gguf_writer_add_tensor_gen(w, "x", GGUF_DTYPE_F32, 2, ne, gen_fail, NULL), ENG_OK);
    char *path = tu_temp_path(".gguf");
    unlink(path);
    eng_err err;
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "gave up at row 2"), "%s", err.msg);
    struct stat st;
    cr_assert_neq(stat(path, &st), 0, "a failed write must not leave a file behind");
    cr_assert_eq(gguf_writer_write(w, "/nonexistent-dir/x.gguf", &err), ENG_ERR_IO);
    cr_assert(strstr(err.msg, "/nonexistent-dir/x.gguf"), "%s", err.msg);
    gguf_writer_free(w);
    gguf_writer_free(NULL);
    free(path);
}

Test(gguf_write, honours_general_alignment)
{
    gguf_writer *w = gguf_writer_create();
    static const float data[40];
    int64_t ne1[1] = {8}, ne2[1] = {40};
    cr_assert_eq(gguf_writer_add_tensor(w, "a", GGUF_DTYPE_F32, 1, ne1, data, 32), ENG_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "b", GGUF_DTYPE_F32, 1, ne2, data, 160), ENG_OK);
    cr_assert_eq(gguf_writer_set_u32(w, "general.alignment", 256), ENG_OK);
    char *path = tu_temp_path(".gguf");
    eng_err err;
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_OK, "%s", err.msg);
    gguf_file *f = NULL;
    cr_assert_eq(gguf_open(path, &f, &err), ENG_OK, "%s", err.msg);
    cr_assert_eq(gguf_alignment(f), 256);
    const gguf_tensor *a = gguf_tensor_find(f, "a"), *b = gguf_tensor_find(f, "b");
    cr_assert_eq((uintptr_t)a->data % 256, 0);
    cr_assert_eq((const uint8_t *)b->data - (const uint8_t *)a->data, 256);
    gguf_free(f);
    cr_assert_eq(gguf_writer_set_u32(w, "general.alignment", 48), ENG_OK);
    cr_assert_eq(gguf_writer_write(w, path, &err), ENG_ERR_INVALID);
    cr_assert(strstr(err.msg, "general.alignment must be a u32 power of two"), "%s", err.msg);
    gguf_writer_free(w);
    unlink(path);
    free(path);
}

/* ---- hand-made valid files ---------------------------------------------------------------- */

Test(gguf_valid, version_2_and_custom_alignment)
{
    bb b = header(2, 2, 2);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "general.alignment", 64);
    uint64_t ne[2] = {32, 2};
    tinfo(&b, "a", 2, ne, GGUF_DTYPE_F32, 0);
    tinfo(&b, "b", 1, ne, GGUF_DTYPE_Q8_0, 256);
    bb_pad(&b, 64);
    size_t data_start = b.n;
    bb_zeros(&b, 256 + 34);
    b.p[data_start + 256] = 0xAB;
    gguf_file *f = expect_open(&b);
    cr_assert_eq(gguf_version(f), 2);
    cr_assert_eq(gguf_alignment(f), 64);
    const gguf_tensor *t = gguf_tensor_find(f, "b");
    cr_assert_not_null(t);
    cr_assert_eq((const uint8_t *)t->data - b.p, (ptrdiff_t)(data_start + 256));
    cr_assert_eq(*(const uint8_t *)t->data, 0xAB);
    cr_assert_eq(t->nbytes, 34);
    gguf_free(f);
    free(b.p);
}

Test(gguf_valid, empty_tensor_and_no_tensors)
{
    uint64_t ne[2] = {0, 7};
    bb b = one_tensor_file(2, ne, GGUF_DTYPE_Q8_0, 0, 0);
    gguf_file *f = expect_open(&b);
    cr_assert_eq(gguf_tensor_at(f, 0)->nbytes, 0);
    gguf_free(f);
    free(b.p);

    b = header(3, 0, 0);
    f = expect_open(&b);
    cr_assert_eq(gguf_kv_count(f), 0);
    cr_assert_eq(gguf_tensor_count(f), 0);
    cr_assert_eq(gguf_tensor_find(f, "x"), NULL);
    gguf_free(f);
    free(b.p);
}

/* ---- hostile files ------------------------------------------------------------------------ */

/* A small valid file touching every parser path: scalars, strings, numeric, bool and string
 * arrays, and two tensors. Returns its length up to the end of the last tensor's data. */
static bb rich_file(size_t *end)
{
    bb b = header(3, 2, 6);
    kv_str(&b, "general.architecture", "llama");
    kv_u32(&b, "llama.block_count", 2);
    bb_str(&b, "tokenizer.ggml.tokens");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 3);
    bb_str(&b, "a");
    bb_str(&b, "");
    bb_str(&b, "bc");
    bb_str(&b, "tokenizer.ggml.scores");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_FLOAT32);
    bb_u64(&b, 2);
    bb_u32(&b, 0x3f800000);
    bb_u32(&b, 0x40000000);
    bb_str(&b, "flags");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u64(&b, 2);
    bb_u8(&b, 1);
    bb_u8(&b, 0);
    bb_str(&b, "flag");
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u8(&b, 1);
    uint64_t ne[2] = {32, 2};
    tinfo(&b, "tok_embd", 2, ne, GGUF_DTYPE_Q4_0, 0);
    tinfo(&b, "norm", 1, ne, GGUF_DTYPE_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 64 + 128);
    *end = b.n;
    return b;
}

Test(gguf_hostile, every_truncation_fails_cleanly)
{
    size_t end;
    bb b = rich_file(&end);
    gguf_file *f = expect_open(&b);
    cr_assert_eq(gguf_kv_count(f), 6);
    gguf_free(f);
    for (size_t len = 0; len < end; len++) {
        bb p = {.p = b.p, .n = len};
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, b.p, len);
        eng_err err = {{0}};
        f = NULL;
        eng_status s = gguf_open_buffer(copy, len, &f, &err);
        cr_assert_eq(s, ENG_ERR_FORMAT, "prefix of %zu bytes: %s (%s)", len, eng_status_str(s),
                     err.msg);
        cr_assert_null(f);
        cr_assert(strncmp(err.msg, "gguf: ", 6) == 0 && strlen(err.msg) > 20,
                  "prefix of %zu bytes: message '%s'", len, err.msg);
        free(copy);
        (void)p;
    }
    free(b.p);
}

Test(gguf_hostile, truncation_messages_say_where)
{
    size_t end;
    bb b = rich_file(&end);
    b.n = 20;
    expect_fail(&b, ENG_ERR_FORMAT, "too short for the 24-byte header");
    b.n = 30;
    expect_fail(&b, ENG_ERR_FORMAT, "metadata entries");
    b.n = end - 1;
    expect_fail(&b, ENG_ERR_FORMAT, "tensor 'norm': data [");
    free(b.p);
}

Test(gguf_hostile, bad_magic)
{
    bb b = header(3, 0, 0);
    memcpy(b.p, "GGML", 4);
    expect_fail(&b, ENG_ERR_FORMAT, "bad magic");
    b.n = 0;
    expect_fail(&b, ENG_ERR_FORMAT, "bad magic");
    b.n = 2;
    expect_fail(&b, ENG_ERR_FORMAT, "bad magic");
    free(b.p);
}

Test(gguf_hostile, bad_version)
{
    bb b = header(7, 0, 0);
    expect_fail(&b, ENG_ERR_FORMAT, "unknown version 7");
    free(b.p);
    b = header(1, 0, 0);
    expect_fail(&b, ENG_ERR_UNSUPPORTED, "version 1");
    free(b.p);
    b = header(0x03000000, 0, 0);
    expect_fail(&b, ENG_ERR_UNSUPPORTED, "big-endian");
    free(b.p);
}

Test(gguf_hostile, huge_counts)
{
    bb b = header(3, 0, UINT64_MAX);
    bb_zeros(&b, 100);
    expect_fail(&b, ENG_ERR_FORMAT, "claims 18446744073709551615 metadata entries");
    free(b.p);
    b = header(3, (uint64_t)1 << 40, 0);
    bb_zeros(&b, 100);
    expect_fail(&b, ENG_ERR_FORMAT, "claims 1099511627776 tensors");
    free(b.p);
    /* Each count alone fits, together they do not. */
    b = header(3, 3, 7);
    bb_zeros(&b, 100 + 7);
    expect_fail(&b, ENG_ERR_FORMAT, "metadata entries and 3 tensors");
    free(b.p);
}

Test(gguf_hostile, huge_string_length)
{
    bb b = header(3, 0, 1);
    bb_u64(&b, (uint64_t)1 << 62);
    bb_zeros(&b, 20);
    expect_fail(&b, ENG_ERR_FORMAT, "metadata entry 0: key length 4611686018427387904 at byte 24");
    free(b.p);
}

Test(gguf_hostile, string_value_past_end)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "general.name");
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, 100);
    bb_bytes(&b, "short", 5);
    expect_fail(&b, ENG_ERR_FORMAT, "key 'general.name': string value length 100");
    free(b.p);
}

Test(gguf_hostile, unknown_kv_type)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "general.name");
    bb_u32(&b, 13);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "key 'general.name': unknown value type 13 at byte 44");
    free(b.p);
}

Test(gguf_hostile, unknown_array_elem_type)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "tokenizer.ggml.scores");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, 77);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "'tokenizer.ggml.scores': unknown array element type 77");
    free(b.p);
}

Test(gguf_hostile, nested_array)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "nested");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_UNSUPPORTED, "key 'nested': nested arrays");
    free(b.p);
}

Test(gguf_hostile, array_count_overflow)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "big");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, (uint64_t)1 << 62);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "key 'big': array count 4611686018427387904");
    free(b.p);

    b = header(3, 0, 1);
    bb_str(&b, "big");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_UINT32);
    bb_u64(&b, 5);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "array of 5 u32 (20 bytes) at byte 39 extends past end");
    free(b.p);

    b = header(3, 0, 1);
    bb_str(&b, "strs");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_STRING);
    bb_u64(&b, UINT64_MAX / 2);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "strings at byte 40 cannot fit");
    free(b.p);
}

Test(gguf_hostile, bool_not_0_or_1)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "flag");
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u8(&b, 2);
    bb_zeros(&b, 16);
    expect_fail(&b, ENG_ERR_FORMAT, "key 'flag': bool value at byte 40 is 2");
    free(b.p);

    b = header(3, 0, 1);
    bb_str(&b, "flags");
    bb_u32(&b, GGUF_TYPE_ARRAY);
    bb_u32(&b, GGUF_TYPE_BOOL);
    bb_u64(&b, 3);
    bb_u8(&b, 0);
    bb_u8(&b, 1);
    bb_u8(&b, 255);
    expect_fail(&b, ENG_ERR_FORMAT, "bool array element 2 at byte 55 is 255");
    free(b.p);
}

Test(gguf_hostile, bad_keys)
{
    bb b = header(3, 0, 1);
    bb_u64(&b, 0);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 4);
    expect_fail(&b, ENG_ERR_FORMAT, "metadata entry 0: empty key at byte 24");
    free(b.p);

    b = header(3, 0, 1);
    bb_u64(&b, 3);
    bb_bytes(&b, "a\0b", 3);
    bb_u32(&b, GGUF_TYPE_UINT8);
    bb_zeros(&b, 4);
    expect_fail(&b, ENG_ERR_FORMAT, "key at byte 24 contains a NUL byte");
    free(b.p);
}

Test(gguf_hostile, unknown_tensor_dtype)
{
    uint64_t ne[1] = {32};
    bb b = one_tensor_file(1, ne, 1000, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "tensor 'blk.0.attn_q.weight': unknown dtype 1000 at byte");
    free(b.p);
    b = one_tensor_file(1, ne, 10, 0, 84);
    expect_fail(&b, ENG_ERR_UNSUPPORTED, "dtype Q2_K (10)");
    free(b.p);
}

Test(gguf_hostile, n_dims_0_and_5)
{
    uint64_t ne[5] = {32, 1, 1, 1, 1};
    bb b = one_tensor_file(0, ne, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "tensor 'blk.0.attn_q.weight': n_dims 0 at byte");
    free(b.p);
    b = one_tensor_file(5, ne, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "n_dims 5 at byte");
    free(b.p);
}

Test(gguf_hostile, ne_overflow)
{
    uint64_t ne[3] = {(uint64_t)1 << 32, (uint64_t)1 << 32, 1};
    bb b = one_tensor_file(2, ne, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "element count overflows int64 at ne[1] = 4294967296");
    free(b.p);
    /* Zero-sized tensors may not hide an overflowing shape behind the zero either. */
    uint64_t ne0[3] = {0, (uint64_t)1 << 40, (uint64_t)1 << 40};
    b = one_tensor_file(3, ne0, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "element count overflows int64 at ne[2]");
    free(b.p);
    uint64_t neg[1] = {UINT64_MAX};
    b = one_tensor_file(1, neg, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "ne[0] = 18446744073709551615 at byte 99 is negative");
    free(b.p);
    /* Fits int64 elements, but the byte size does not fit. */
    uint64_t big[2] = {(uint64_t)1 << 40, (uint64_t)1 << 22};
    b = one_tensor_file(2, big, GGUF_DTYPE_F32, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "data size overflows");
    free(b.p);
}

Test(gguf_hostile, ne0_not_multiple_of_block)
{
    uint64_t ne[2] = {33, 2};
    bb b = one_tensor_file(2, ne, GGUF_DTYPE_Q8_0, 0, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "ne[0] = 33 is not a multiple of the Q8_0 block size (32)");
    free(b.p);
    uint64_t ne6[1] = {512 + 32};
    b = one_tensor_file(1, ne6, GGUF_DTYPE_Q6_K, 0, 1024);
    expect_fail(&b, ENG_ERR_FORMAT, "Q6_K block size (256)");
    free(b.p);
}

Test(gguf_hostile, tensor_offset_past_end)
{
    uint64_t ne[1] = {32};
    bb b = one_tensor_file(1, ne, GGUF_DTYPE_F32, (uint64_t)1 << 20, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "data offset 1048576 (+ data start 128) is past end of file");
    free(b.p);
    b = one_tensor_file(1, ne, GGUF_DTYPE_F32, UINT64_MAX - 31, 128);
    expect_fail(&b, ENG_ERR_FORMAT, "is past end of file");
    free(b.p);
}

Test(gguf_hostile, tensor_data_straddles_end)
{
    uint64_t ne[1] = {32};
    bb b = one_tensor_file(1, ne, GGUF_DTYPE_F32, 0, 100);
    expect_fail(&b, ENG_ERR_FORMAT,
                "tensor 'blk.0.attn_q.weight': data [128, 256) extends past end of file (228 "
                "bytes)");
    free(b.p);
}

Test(gguf_hostile, misaligned_offset)
{
    uint64_t ne[1] = {32};
    bb b = one_tensor_file(1, ne, GGUF_DTYPE_F32, 16, 256);
    expect_fail(&b, ENG_ERR_FORMAT, "data offset 16 is not a multiple of the alignment (32)");
    free(b.p);
}

Test(gguf_hostile, bad_alignment_value)
{
    static const uint32_t bad[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb b = header(3, 0, 1);
        kv_u32(&b, "general.alignment", bad[i]);
        char frag[96];
        snprintf(frag, sizeof frag, "'general.alignment' at byte 53 is %u (must be a power of two)",
                 bad[i]);
        expect_fail(&b, ENG_ERR_FORMAT, frag);
        free(b.p);
    }
    bb b = header(3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_TYPE_UINT64);
    bb_u64(&b, 32);
    expect_fail(&b, ENG_ERR_FORMAT, "has type u64 (must be u32)");
    free(b.p);
}

Test(gguf_hostile, duplicate_key)
{
    bb b = header(3, 0, 3);
    kv_str(&b, "general.name", "a");
    kv_u32(&b, "x", 1);
    kv_str(&b, "general.name", "b");
    expect_fail(&b, ENG_ERR_FORMAT, "duplicate key 'general.name' (entries 0 and 2");
    free(b.p);
}

Test(gguf_hostile, duplicate_tensor_name)
{
    bb b = header(3, 3, 0);
    uint64_t ne[1] = {32};
    tinfo(&b, "a", 1, ne, GGUF_DTYPE_F32, 0);
    tinfo(&b, "b", 1, ne, GGUF_DTYPE_F32, 128);
    tinfo(&b, "a", 1, ne, GGUF_DTYPE_F32, 256);
    bb_pad(&b, 32);
    bb_zeros(&b, 384);
    expect_fail(&b, ENG_ERR_FORMAT, "duplicate tensor name 'a' (tensors 0 and 2");
    free(b.p);
}

/* Duplicate detection and lookups sort names, so even many entries with long shared prefixes
 * open quickly; a late duplicate among them is still found and named. */
Test(gguf_hostile, many_entries_with_a_late_duplicate, .timeout = 20)
{
    enum { N = 100000 };
    bb b = header(3, 0, N);
    char key[96];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "tokenizer.ggml.a.very.long.shared.prefix.to.slow.compares.%07d",
                 i == N - 1 ? 4242 : i);
        bb_str(&b, key);
        bb_u32(&b, GGUF_TYPE_UINT8);
        bb_u8(&b, 1);
    }
    expect_fail(&b, ENG_ERR_FORMAT, "prefix.to.slow.compares.0004242' (entries 4242 and 99999");
    /* Without the duplicate it opens, and every key is found by name. */
    b.n = 0;
    bb h = header(3, 0, N);
    bb_bytes(&b, h.p, h.n);
    free(h.p);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "tokenizer.ggml.a.very.long.shared.prefix.to.slow.compares.%07d",
                 i);
        bb_str(&b, key);
        bb_u32(&b, GGUF_TYPE_UINT8);
        bb_u8(&b, 1);
    }
    gguf_file *f = expect_open(&b);
    for (int i = 0; i < N; i += 997) {
        snprintf(key, sizeof key, "tokenizer.ggml.a.very.long.shared.prefix.to.slow.compares.%07d",
                 i);
        cr_assert_eq(gguf_kv_find(f, key), i);
    }
    gguf_free(f);
    free(b.p);
}

Test(gguf_hostile, unprintable_names_are_escaped)
{
    bb b = header(3, 0, 1);
    bb_str(&b, "bad\x01\xff");
    bb_u32(&b, 99);
    expect_fail(&b, ENG_ERR_FORMAT, "key 'bad?" "?': unknown value type 99");
    free(b.p);
}

/* ---- files on disk ------------------------------------------------------------------------ */

Test(gguf_files, missing_file)
{
    gguf_file *f = (gguf_file *)1;
    eng_err err;
    cr_assert_eq(gguf_open("/nonexistent/model.gguf", &f, &err), ENG_ERR_IO);
    cr_assert_null(f);
    cr_assert(strstr(err.msg, "cannot open '/nonexistent/model.gguf'"), "%s", err.msg);
    cr_assert(strstr(err.msg, strerror(ENOENT)), "%s", err.msg);
}

Test(gguf_files, empty_file)
{
    char *path = tu_temp_path(".gguf");
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(path, &f, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "is empty (0 bytes)"), "%s", err.msg);
    unlink(path);
    free(path);
}

Test(gguf_files, directory)
{
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open("/tmp", &f, &err), ENG_ERR_IO);
    cr_assert(strstr(err.msg, "'/tmp' is a directory"), "%s", err.msg);
}

Test(gguf_files, hostile_file_on_disk)
{
    uint64_t ne[1] = {32};
    bb b = one_tensor_file(1, ne, GGUF_DTYPE_F32, 0, 100);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(tu_write_file(path, b.p, b.n), 0);
    gguf_file *f = NULL;
    eng_err err;
    cr_assert_eq(gguf_open(path, &f, &err), ENG_ERR_FORMAT);
    cr_assert(strstr(err.msg, "extends past end of file (228 bytes)"), "%s", err.msg);
    cr_assert_null(f);
    unlink(path);
    free(path);
    free(b.p);
}
