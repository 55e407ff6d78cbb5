/* gguf_meta.c — GGUF accessors over an opened (already validated) file: typed metadata
 * getters, string arrays, tensors by index, and the dtype and value-type tables. */
#include "gguf.h"
#include "gguf_impl.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

/* ---- dtype and value-type tables ------------------------------------------------------ */

typedef struct dtype_info {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} dtype_info;

static const dtype_info *dtype_lookup(uint32_t t)
{
    static const dtype_info f32 = {"F32", 1, 4}, f16 = {"F16", 1, 2}, bf16 = {"BF16", 1, 2},
                            q4_0 = {"Q4_0", 32, 18}, q4_1 = {"Q4_1", 32, 20},
                            q8_0 = {"Q8_0", 32, 34}, q6_k = {"Q6_K", 256, 210},
                            q5_0 = {"Q5_0", 32, 22}, q5_1 = {"Q5_1", 32, 24},
                            q4_k = {"Q4_K", 256, 144}, q5_k = {"Q5_K", 256, 176};
    switch (t) {
    case GGUF_DTYPE_F32: return &f32;
    case GGUF_DTYPE_F16: return &f16;
    case GGUF_DTYPE_BF16: return &bf16;
    case GGUF_DTYPE_Q4_0: return &q4_0;
    case GGUF_DTYPE_Q4_1: return &q4_1;
    case GGUF_DTYPE_Q8_0: return &q8_0;
    case GGUF_DTYPE_Q6_K: return &q6_k;
    case GGUF_DTYPE_Q5_0: return &q5_0;
    case GGUF_DTYPE_Q5_1: return &q5_1;
    case GGUF_DTYPE_Q4_K: return &q4_k;
    case GGUF_DTYPE_Q5_K: return &q5_k;
    default: return NULL;
    }
}

/* GGML type names Serval knows of but does not implement, so errors can name them. */
const char *gguf_ggml_type_name(uint32_t t)
{
    static const char *const names[] = {
        [6] = "Q5_0",     [7] = "Q5_1",    [9] = "Q8_1",     [10] = "Q2_K",  [11] = "Q3_K",
        [12] = "Q4_K",    [13] = "Q5_K",   [15] = "Q8_K",    [16] = "IQ2_XXS",
        [17] = "IQ2_XS",  [18] = "IQ3_XXS", [19] = "IQ1_S",  [20] = "IQ4_NL", [21] = "IQ3_S",
        [22] = "IQ2_S",   [23] = "IQ4_XS", [24] = "I8",      [25] = "I16",   [26] = "I32",
        [27] = "I64",     [28] = "F64",    [29] = "IQ1_M",   [34] = "TQ1_0", [35] = "TQ2_0",
        [39] = "MXFP4",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

bool gguf_dtype_valid(uint32_t dtype) { return dtype_lookup(dtype) != NULL; }

const char *gguf_dtype_name(gguf_dtype t)
{
    const dtype_info *d = dtype_lookup((uint32_t)t);
    return d ? d->name : "?";
}

int64_t gguf_dtype_block_elems(gguf_dtype t)
{
    const dtype_info *d = dtype_lookup((uint32_t)t);
    ENG_ASSERT(d != NULL);
    return d->block_elems;
}

size_t gguf_dtype_block_bytes(gguf_dtype t)
{
    const dtype_info *d = dtype_lookup((uint32_t)t);
    ENG_ASSERT(d != NULL);
    return d->block_bytes;
}

size_t gguf_dtype_row_bytes(gguf_dtype t, int64_t ne0)
{
    const dtype_info *d = dtype_lookup((uint32_t)t);
    ENG_ASSERT(d != NULL);
    ENG_ASSERT(ne0 >= 0 && ne0 % d->block_elems == 0);
    size_t bytes;
    ENG_ASSERT(!__builtin_mul_overflow((uint64_t)(ne0 / d->block_elems), d->block_bytes, &bytes));
    return bytes;
}

size_t gguf_type_size(gguf_type t)
{
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(uint32_t t)
{
    static const char *const names[GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64",
        "f64"};
    return t < GGUF_TYPE_COUNT ? names[t] : "unknown";
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

/* ---- accessors -------------------------------------------------------------------------- */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }
int64_t gguf_kv_count(const gguf_file *f) { return f->n_kv; }


gguf_str gguf_kv_key(const gguf_file *f, int64_t i)
{
    ENG_ASSERT(i >= 0 && i < f->n_kv);
    return f->kv[i].key;
}

gguf_type gguf_kv_type(const gguf_file *f, int64_t i)
{
    ENG_ASSERT(i >= 0 && i < f->n_kv);
    return f->kv[i].type;
}

void gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *len)
{
    ENG_ASSERT(i >= 0 && i < f->n_kv);
    *data = f->base + f->kv[i].raw_off;
    *len = f->kv[i].raw_len;
}

static eng_status find_typed(const gguf_file *f, const char *key, const gguf_kv **out,
                             eng_err *err)
{
    int64_t i = gguf_kv_find(f, key);
    if (i < 0)
        return eng_fail(err, ENG_ERR_INVALID, "gguf: key '%s' not found", key);
    *out = &f->kv[i];
    return ENG_OK;
}

static eng_status wrong_type(eng_err *err, const char *key, const gguf_kv *kv, const char *want)
{
    return eng_fail(err, ENG_ERR_FORMAT, "gguf: key '%s' has type %s (expected %s)", key,
                    gguf_type_name(kv->type), want);
}

/* Reads an integer-typed kv as a sign flag and magnitude-free pair (u64 or i64). */
static bool kv_int(const gguf_kv *kv, bool *neg, uint64_t *u, int64_t *s)
{
    const uint8_t *p = kv->val;
    *neg = false;
    switch (kv->type) {
    case GGUF_TYPE_UINT8: *u = p[0]; break;
    case GGUF_TYPE_UINT16: { uint16_t v; memcpy(&v, p, 2); *u = v; break; }
    case GGUF_TYPE_UINT32: { uint32_t v; memcpy(&v, p, 4); *u = v; break; }
    case GGUF_TYPE_UINT64: memcpy(u, p, 8); break;
    case GGUF_TYPE_INT8: { int8_t v; memcpy(&v, p, 1); *s = v; goto sgn; }
    case GGUF_TYPE_INT16: { int16_t v; memcpy(&v, p, 2); *s = v; goto sgn; }
    case GGUF_TYPE_INT32: { int32_t v; memcpy(&v, p, 4); *s = v; goto sgn; }
    case GGUF_TYPE_INT64: memcpy(s, p, 8); goto sgn;
    default: return false;
    }
    *s = *u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*u;
    return true;
sgn:
    *neg = *s < 0;
    *u = *neg ? 0 : (uint64_t)*s;
    return true;
}

eng_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    bool neg;
    uint64_t u;
    int64_t s;
    if (!kv_int(kv, &neg, &u, &s))
        return wrong_type(err, key, kv, "an integer");
    if (neg)
        return eng_fail(err, ENG_ERR_FORMAT, "gguf: key '%s' value %" PRId64 " does not fit u32",
                        key, s);
    if (u > UINT32_MAX)
        return eng_fail(err, ENG_ERR_FORMAT, "gguf: key '%s' value %" PRIu64 " does not fit u32",
                        key, u);
    *out = (uint32_t)u;
    return ENG_OK;
}

eng_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    bool neg;
    uint64_t u;
    int64_t s;
    if (!kv_int(kv, &neg, &u, &s))
        return wrong_type(err, key, kv, "an integer");
    if (!neg && u > (uint64_t)INT64_MAX)
        return eng_fail(err, ENG_ERR_FORMAT, "gguf: key '%s' value %" PRIu64 " does not fit i64",
                        key, u);
    *out = s;
    return ENG_OK;
}

eng_status gguf_get_f32(const gguf_file *f, const char *key, float *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        memcpy(out, kv->val, 4);
    } else if (kv->type == GGUF_TYPE_FLOAT64) {
        double d;
        memcpy(&d, kv->val, 8);
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return eng_fail(err, ENG_ERR_FORMAT, "gguf: key '%s' value %g does not fit f32", key,
                            d);
        *out = (float)d;
    } else {
        return wrong_type(err, key, kv, "f32");
    }
    return ENG_OK;
}

eng_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    if (kv->type != GGUF_TYPE_BOOL)
        return wrong_type(err, key, kv, "bool");
    *out = kv->val[0] != 0;
    return ENG_OK;
}

eng_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    if (kv->type != GGUF_TYPE_STRING)
        return wrong_type(err, key, kv, "string");
    out->ptr = (const char *)kv->val;
    out->len = kv->n;
    return ENG_OK;
}

eng_status gguf_get_arr(const gguf_file *f, const char *key, gguf_arr *out, eng_err *err)
{
    const gguf_kv *kv = NULL;
    eng_status st = find_typed(f, key, &kv, err);
    if (st != ENG_OK)
        return st;
    if (kv->type != GGUF_TYPE_ARRAY)
        return wrong_type(err, key, kv, "array");
    out->elem_type = kv->elem_type;
    out->n = kv->n;
    out->data = kv->val;
    out->kv_index = kv - f->kv;
    return ENG_OK;
}

gguf_str gguf_arr_str(const gguf_file *f, const gguf_arr *a, uint64_t i)
{
    ENG_ASSERT(a->kv_index >= 0 && a->kv_index < f->n_kv);
    const gguf_kv *kv = &f->kv[a->kv_index];
    ENG_ASSERT(kv->type == GGUF_TYPE_ARRAY && kv->elem_type == GGUF_TYPE_STRING && i < kv->n);
    gguf_str s;
    memcpy(&s.len, f->base + kv->str_offs[i], 8);
    s.ptr = (const char *)(f->base + kv->str_offs[i] + 8);
    return s;
}

int64_t gguf_tensor_count(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i)
{
    ENG_ASSERT(i >= 0 && i < f->n_tensors);
    return &f->tensors[i];
}

