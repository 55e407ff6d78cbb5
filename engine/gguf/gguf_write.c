/* gguf_write.c — GGUF v3 writer: metadata held in memory, tensor data streamed to the file. */
#include "gguf_write.h"
#include "gguf_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_ALIGNMENT 32u
#define MAX_ALIGNMENT 4096u /* a page: padding is written from a static block of zeros */

/* One metadata entry, its value serialised exactly as it goes into the file. */
typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val;
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    gguf_dtype dtype;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    size_t nbytes;
    const void *data; /* caller-owned, or NULL when gen produces the rows */
    gguf_row_gen gen;
    void *user;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

gguf_writer *gguf_writer_create(void) { return calloc(1, sizeof(gguf_writer)); }

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static bool grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}

/* Takes ownership of val (malloc'd) on success and on failure. */
static eng_status set_raw(gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
                          size_t val_len)
{
    if (!w || !key || !*key || strlen(key) > 65535) {
        free(val);
        return ENG_ERR_INVALID;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = val_len;
            return ENG_OK;
        }
    }
    char *k = strdup(key);
    if (!k || !grow((void **)&w->kv, &w->cap_kv, w->n_kv, sizeof *w->kv)) {
        free(k);
        free(val);
        return ENG_ERR_NOMEM;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, val_len};
    return ENG_OK;
}

static eng_status set_copy(gguf_writer *w, const char *key, uint32_t type, const void *v,
                           size_t n)
{
    uint8_t *val = malloc(n ? n : 1);
    if (!val)
        return ENG_ERR_NOMEM;
    if (n)
        memcpy(val, v, n);
    return set_raw(w, key, type, val, n);
}

eng_status gguf_writer_set_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v)
{
    size_t sz = gguf_type_size(type);
    if (sz == 0 || !v)
        return ENG_ERR_INVALID;
    if (type == GGUF_TYPE_BOOL && *(const uint8_t *)v > 1)
        return ENG_ERR_INVALID;
    return set_copy(w, key, type, v, sz);
}

eng_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    return set_copy(w, key, GGUF_TYPE_UINT32, &v, 4);
}

eng_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    return set_copy(w, key, GGUF_TYPE_INT32, &v, 4);
}

eng_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v)
{
    return set_copy(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

eng_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_copy(w, key, GGUF_TYPE_BOOL, &b, 1);
}

eng_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (!s && len)
        return ENG_ERR_INVALID;
    if (len > SIZE_MAX - 8)
        return ENG_ERR_NOMEM;
    uint8_t *val = malloc(8 + len);
    if (!val)
        return ENG_ERR_NOMEM;
    uint64_t n = len;
    memcpy(val, &n, 8);
    if (len)
        memcpy(val + 8, s, len);
    return set_raw(w, key, GGUF_TYPE_STRING, val, 8 + len);
}

eng_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                               const void *data, uint64_t n)
{
    size_t esz = gguf_type_size(elem_type), bytes, total;
    if (esz == 0 || (!data && n))
        return ENG_ERR_INVALID;
    if (__builtin_mul_overflow(n, (uint64_t)esz, &bytes) ||
        __builtin_add_overflow(bytes, (size_t)12, &total))
        return ENG_ERR_NOMEM;
    if (elem_type == GGUF_TYPE_BOOL)
        for (size_t i = 0; i < bytes; i++)
            if (((const uint8_t *)data)[i] > 1)
                return ENG_ERR_INVALID;
    uint8_t *val = malloc(total);
    if (!val)
        return ENG_ERR_NOMEM;
    uint32_t et = elem_type;
    memcpy(val, &et, 4);
    memcpy(val + 4, &n, 8);
    if (bytes)
        memcpy(val + 12, data, bytes);
    return set_raw(w, key, GGUF_TYPE_ARRAY, val, total);
}

eng_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const gguf_str *strs,
                                   uint64_t n)
{
    if (!strs && n)
        return ENG_ERR_INVALID;
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i].ptr && strs[i].len)
            return ENG_ERR_INVALID;
        if (strs[i].len > SIZE_MAX ||
            __builtin_add_overflow(total, (size_t)strs[i].len, &total) ||
            __builtin_add_overflow(total, (size_t)8, &total))
            return ENG_ERR_NOMEM;
    }
    uint8_t *val = malloc(total), *p = val;
    if (!val)
        return ENG_ERR_NOMEM;
    uint32_t et = GGUF_TYPE_STRING;
    memcpy(p, &et, 4);
    memcpy(p + 4, &n, 8);
    p += 12;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(p, &strs[i].len, 8);
        if (strs[i].len)
            memcpy(p + 8, strs[i].ptr, (size_t)strs[i].len);
        p += 8 + strs[i].len;
    }
    return set_raw(w, key, GGUF_TYPE_ARRAY, val, total);
}

eng_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *prefix)
{
    size_t plen = strlen(prefix);
    for (int64_t i = 0; i < gguf_kv_count(src); i++) {
        gguf_str k = gguf_kv_key(src, i);
        if (k.len < plen || memcmp(k.ptr, prefix, plen) != 0)
            continue;
        /* Keys from the reader are non-empty and NUL-free, so this is the same key. */
        char *key = strndup(k.ptr, (size_t)k.len);
        const void *raw;
        size_t raw_len;
        if (!key)
            return ENG_ERR_NOMEM;
        gguf_kv_raw(src, i, &raw, &raw_len);
        eng_status s = set_copy(w, key, gguf_kv_type(src, i), raw, raw_len);
        free(key);
        if (s != ENG_OK)
            return s;
    }
    return ENG_OK;
}

/* Checks a tensor's name, dtype and shape and returns its size in *nbytes. */
static eng_status tensor_check(const gguf_writer *w, const char *name, gguf_dtype dtype,
                               uint32_t n_dims, const int64_t *ne, size_t *nbytes)
{
    if (!w || !name || !*name || !ne || !gguf_dtype_valid((uint32_t)dtype) || n_dims < 1 ||
        n_dims > GGUF_MAX_DIMS)
        return ENG_ERR_INVALID;
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return ENG_ERR_INVALID;
    uint64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 0)
            return ENG_ERR_INVALID;
        if (d > 0 && __builtin_mul_overflow(rows, (uint64_t)ne[d], &rows))
            return ENG_ERR_INVALID;
    }
    if (ne[0] % gguf_dtype_block_elems(dtype) != 0)
        return ENG_ERR_INVALID;
    uint64_t row = (uint64_t)(ne[0] / gguf_dtype_block_elems(dtype)), total;
    if (__builtin_mul_overflow(row, (uint64_t)gguf_dtype_block_bytes(dtype), &row) ||
        __builtin_mul_overflow(row, rows, &total) || total > SIZE_MAX)
        return ENG_ERR_INVALID;
    *nbytes = (size_t)total;
    return ENG_OK;
}

static eng_status add_tensor(gguf_writer *w, const char *name, gguf_dtype dtype,
                             uint32_t n_dims, const int64_t *ne, size_t nbytes,
                             const void *data, gguf_row_gen gen, void *user)
{
    wtensor t = {.dtype = dtype, .n_dims = n_dims, .nbytes = nbytes, .data = data,
                 .gen = gen, .user = user};
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t.ne[d] = d < n_dims ? ne[d] : 1;
    t.name = strdup(name);
    if (!t.name || !grow((void **)&w->t, &w->cap_t, w->n_t, sizeof *w->t)) {
        free(t.name);
        return ENG_ERR_NOMEM;
    }
    w->t[w->n_t++] = t;
    return ENG_OK;
}

eng_status gguf_writer_add_tensor(gguf_writer *w, const char *name, gguf_dtype dtype,
                                  uint32_t n_dims, const int64_t *ne, const void *data,
                                  size_t nbytes)
{
    size_t want = 0;
    eng_status s = tensor_check(w, name, dtype, n_dims, ne, &want);
    if (s != ENG_OK)
        return s;
    if (want != nbytes || (!data && nbytes))
        return ENG_ERR_INVALID;
    return add_tensor(w, name, dtype, n_dims, ne, nbytes, data, NULL, NULL);
}

eng_status gguf_writer_add_tensor_gen(gguf_writer *w, const char *name, gguf_dtype dtype,
                                      uint32_t n_dims, const int64_t *ne, gguf_row_gen gen,
                                      void *user)
{
    size_t nbytes = 0;
    eng_status s = tensor_check(w, name, dtype, n_dims, ne, &nbytes);
    if (s != ENG_OK)
        return s;
    if (!gen)
        return ENG_ERR_INVALID;
    return add_tensor(w, name, dtype, n_dims, ne, nbytes, NULL, gen, user);
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct wout {
    FILE *fp;
    const char *path;
    uint64_t pos;
    eng_err *err;
    eng_status st; /* first failure; later writes are skipped */
    uint64_t align;
} wout;

static void out_bytes(wout *o, const void *p, size_t n)
{
    if (o->st != ENG_OK || n == 0)
        return;
    if (fwrite(p, 1, n, o->fp) != n)
        o->st = eng_fail(o->err, ENG_ERR_IO, "gguf: writing '%s' at byte %" PRIu64 ": %s",
                         o->path, o->pos, strerror(errno));
    o->pos += n;
}

static void out_u32(wout *o, uint32_t v) { out_bytes(o, &v, 4); }
static void out_u64(wout *o, uint64_t v) { out_bytes(o, &v, 8); }

static void out_str(wout *o, const char *s)
{
    size_t n = strlen(s);
    out_u64(o, n);
    out_bytes(o, s, n);
}

static void out_pad(wout *o)
{
    static const uint8_t zeros[MAX_ALIGNMENT];
    out_bytes(o, zeros, (size_t)((o->align - o->pos % o->align) % o->align));
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* The alignment to write with: general.alignment when the caller set (or copied) it. */
static eng_status write_alignment(const gguf_writer *w, uint64_t *align, eng_err *err)
{
    *align = DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0)
            continue;
        uint32_t a = 0;
        if (w->kv[i].type == GGUF_TYPE_UINT32)
            memcpy(&a, w->kv[i].val, 4);
        if (a == 0 || (a & (a - 1)) != 0 || a > MAX_ALIGNMENT)
            return eng_fail(err, ENG_ERR_INVALID,
                            "gguf: general.alignment must be a u32 power of two up to %u",
                            MAX_ALIGNMENT);
        *align = a;
    }
    return ENG_OK;
}

static void out_tensor_data(wout *o, const wtensor *t)
{
    if (t->data || o->st != ENG_OK) {
        out_bytes(o, t->data, t->nbytes);
        return;
    }
    size_t row_bytes = gguf_dtype_row_bytes(t->dtype, t->ne[0]);
    int64_t rows = t->ne[0] == 0 ? 0 : t->ne[1] * t->ne[2] * t->ne[3];
    uint8_t *buf = malloc(row_bytes ? row_bytes : 1);
    if (!buf) {
        o->st = eng_fail(o->err, ENG_ERR_NOMEM, "gguf: out of memory for a %zu-byte row",
                         row_bytes);
        return;
    }
    for (int64_t r = 0; r < rows && o->st == ENG_OK; r++) {
        eng_status s = t->gen(t->user, r, buf, o->err);
        if (s != ENG_OK)
            o->st = s;
        else
            out_bytes(o, buf, row_bytes);
    }
    free(buf);
}

static void write_all(const gguf_writer *w, wout *o)
{
    out_bytes(o, "GGUF", 4);
    out_u32(o, 3);
    out_u64(o, w->n_t);
    out_u64(o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        out_str(o, w->kv[i].key);
        out_u32(o, w->kv[i].type);
        out_bytes(o, w->kv[i].val, w->kv[i].val_len);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        out_str(o, t->name);
        out_u32(o, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            out_u64(o, (uint64_t)t->ne[d]);
        out_u32(o, (uint32_t)t->dtype);
        out_u64(o, off);
        off = align_up(off + t->nbytes, o->align);
    }
    out_pad(o);
    for (size_t i = 0; i < w->n_t; i++) {
        out_tensor_data(o, &w->t[i]);
        out_pad(o);
    }
}

eng_status gguf_writer_write(const gguf_writer *w, const char *path, eng_err *err)
{
    ENG_ASSERT(w != NULL && path != NULL);
    uint64_t align;
    eng_status ast = write_alignment(w, &align, err);
    if (ast != ENG_OK)
        return ast;
    size_t n = strlen(path) + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return eng_fail(err, ENG_ERR_NOMEM, "gguf: out of memory");
    snprintf(tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        eng_status s = eng_fail(err, ENG_ERR_IO, "gguf: cannot create '%s': %s", tmp,
                                strerror(errno));
        free(tmp);
        return s;
    }
    fchmod(fd, 0644);
    wout o = {.fp = fdopen(fd, "wb"), .path = path, .err = err, .st = ENG_OK, .align = align};
    if (!o.fp) {
        o.st = eng_fail(err, ENG_ERR_IO, "gguf: fdopen '%s': %s", tmp, strerror(errno));
        close(fd);
    } else {
        setvbuf(o.fp, NULL, _IOFBF, 1 << 20);
        write_all(w, &o);
        if (fclose(o.fp) != 0 && o.st == ENG_OK)
            o.st = eng_fail(err, ENG_ERR_IO, "gguf: closing '%s': %s", tmp, strerror(errno));
    }
    if (o.st == ENG_OK && rename(tmp, path) != 0)
        o.st = eng_fail(err, ENG_ERR_IO, "gguf: renaming '%s' to '%s': %s", tmp, path,
                        strerror(errno));
    if (o.st != ENG_OK)
        unlink(tmp);
    else
        eng_err_clear(err);
    free(tmp);
    return o.st;
}
