/* gguf.c — GGUF v2/v3 reader over mmap: validates the whole header at open (every count,
 * length, type, offset and size), and looks keys and tensors up by name. The accessors, typed
 * getters and dtype table are in gguf_meta.c. */
#include "gguf.h"
#include "gguf_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian integers with memcpy: a big-endian host needs byte swaps"
#endif

#define GGUF_HEADER_BYTES 24u
#define GGUF_DEFAULT_ALIGNMENT 32u
/* Smallest possible encodings, used to bound counts by the bytes left before allocating:
 * a kv is a key length (8) + at least one key byte + a type (4) + at least a u8 value; a
 * tensor info is a name length (8) + a name byte + n_dims (4) + one ne (8) + type (4) +
 * offset (8). */
#define GGUF_KV_MIN_BYTES 14u
#define GGUF_TENSOR_MIN_BYTES 33u
/* Longest key or tensor name accepted (the GGUF spec caps keys at 65535 bytes). */
#define GGUF_MAX_NAME 65535u

/* ---- parsing ---------------------------------------------------------------------------- */

/* A cursor over the file with the context ("key 'x'", "tensor 3") used in error messages. */
typedef struct reader {
    const uint8_t *base;
    size_t len;
    size_t pos;
    eng_err *err;
    char what[160];
} reader;

/* Writes a printable, length-bounded rendering of a name from the file into buf. */
static const char *printable(char *buf, size_t cap, const char *s, uint64_t len)
{
    size_t lim = cap - 4, o = 0;
    for (uint64_t i = 0; i < len && o < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (len > lim) {
        memcpy(buf + lim, "...", 3);
        o = lim + 3;
    }
    buf[o] = '\0';
    return buf;
}

static eng_status truncated(reader *r, const char *field, size_t need)
{
    return eng_fail(r->err, ENG_ERR_FORMAT,
                    "gguf: %s: %s (%zu bytes) at byte %zu extends past end of file (%zu bytes)",
                    r->what, field, need, r->pos, r->len);
}

static eng_status rd_bytes(reader *r, size_t n, const char *field, const uint8_t **out)
{
    if (n > r->len - r->pos)
        return truncated(r, field, n);
    *out = r->base + r->pos;
    r->pos += n;
    return ENG_OK;
}

static eng_status rd_u32(reader *r, const char *field, uint32_t *v)
{
    const uint8_t *p = NULL;
    eng_status s = rd_bytes(r, 4, field, &p);
    if (s == ENG_OK)
        memcpy(v, p, 4);
    return s;
}

static eng_status rd_u64(reader *r, const char *field, uint64_t *v)
{
    const uint8_t *p = NULL;
    eng_status s = rd_bytes(r, 8, field, &p);
    if (s == ENG_OK)
        memcpy(v, p, 8);
    return s;
}

/* Reads a u64-length-prefixed string whose bytes must lie inside the file. */
static eng_status rd_str(reader *r, const char *field, gguf_str *out)
{
    size_t at = r->pos;
    uint64_t n;
    if (r->len - r->pos < 8) {
        char len_field[64]; /* formatted only on failure: open reads ~100k strings */
        snprintf(len_field, sizeof len_field, "%s length", field);
        return truncated(r, len_field, 8);
    }
    memcpy(&n, r->base + r->pos, 8);
    r->pos += 8;
    if (n > r->len - r->pos)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: %s length %" PRIu64 " at byte %zu exceeds the %zu bytes left "
                        "in the file",
                        r->what, field, n, at, r->len - r->pos);
    out->ptr = (const char *)(r->base + r->pos);
    out->len = n;
    r->pos += (size_t)n;
    return ENG_OK;
}

/* A key or tensor name: non-empty, bounded, no NUL (so C-string lookups can reach it). */
static eng_status rd_name(reader *r, const char *field, gguf_str *out)
{
    size_t at = r->pos;
    eng_status s = rd_str(r, field, out);
    if (s != ENG_OK)
        return s;
    if (out->len == 0)
        return eng_fail(r->err, ENG_ERR_FORMAT, "gguf: %s: empty %s at byte %zu", r->what,
                        field, at);
    if (out->len > GGUF_MAX_NAME)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: %s at byte %zu is %" PRIu64 " bytes long (limit %u)", r->what,
                        field, at, out->len, GGUF_MAX_NAME);
    if (memchr(out->ptr, '\0', (size_t)out->len))
        return eng_fail(r->err, ENG_ERR_FORMAT, "gguf: %s: %s at byte %zu contains a NUL byte",
                        r->what, field, at);
    return ENG_OK;
}

static int name_cmp(const void *a, const void *b)
{
    const gguf_name_ix *x = a, *y = b;
    size_t n = (size_t)(x->len < y->len ? x->len : y->len);
    int c = memcmp(x->ptr, y->ptr, n);
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Sorts names (ties by index) and returns the index of the later of the first duplicate pair
 * found, or -1. Sorting keeps open O(n log n) whatever names a hostile file picks. */
static int64_t sort_find_dup(gguf_name_ix *ix, int64_t n, int64_t *first)
{
    if (n > 1)
        qsort(ix, (size_t)n, sizeof *ix, name_cmp);
    for (int64_t i = 1; i < n; i++) {
        if (ix[i].len == ix[i - 1].len && memcmp(ix[i].ptr, ix[i - 1].ptr, (size_t)ix[i].len) == 0) {
            *first = ix[i - 1].idx;
            return ix[i].idx;
        }
    }
    return -1;
}

static int64_t name_find(const gguf_name_ix *ix, int64_t n, const char *name)
{
    size_t len = strlen(name);
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        size_t m = (size_t)(ix[mid].len < len ? ix[mid].len : len);
        int c = memcmp(ix[mid].ptr, name, m);
        if (c == 0)
            c = ix[mid].len < len ? -1 : (ix[mid].len > len);
        if (c == 0)
            return ix[mid].idx;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Reads an array value (after the kv's type): element type, count, then the elements. */
static eng_status parse_array(reader *r, gguf_kv *kv)
{
    size_t at = r->pos;
    uint32_t et;
    uint64_t n;
    eng_status s = rd_u32(r, "array element type", &et);
    if (s == ENG_OK)
        s = rd_u64(r, "array count", &n);
    if (s != ENG_OK)
        return s;
    if (et == GGUF_TYPE_ARRAY)
        return eng_fail(r->err, ENG_ERR_UNSUPPORTED,
                        "gguf: %s: nested arrays (at byte %zu) are not supported", r->what, at);
    if (et >= GGUF_TYPE_COUNT)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: unknown array element type %" PRIu32 " at byte %zu", r->what,
                        et, at);
    kv->elem_type = (gguf_type)et;
    kv->n = n;
    kv->val = r->base + r->pos;
    size_t left = r->len - r->pos;
    if (et == GGUF_TYPE_STRING) {
        /* Each string takes at least its 8-byte length, which bounds the allocation. */
        if (n > left / 8)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: %s: array of %" PRIu64 " strings at byte %zu cannot fit in "
                            "the %zu bytes left in the file",
                            r->what, n, at, left);
        kv->str_offs = malloc((size_t)(n ? n : 1) * sizeof *kv->str_offs);
        if (!kv->str_offs)
            return eng_fail(r->err, ENG_ERR_NOMEM, "gguf: %s: out of memory for %" PRIu64
                            " string offsets", r->what, n);
        for (uint64_t i = 0; i < n; i++) {
            kv->str_offs[i] = r->pos;
            gguf_str tmp;
            s = rd_str(r, "array string", &tmp);
            if (s != ENG_OK)
                return s;
        }
        return ENG_OK;
    }
    size_t esz = gguf_type_size((gguf_type)et), bytes;
    if (__builtin_mul_overflow(n, (uint64_t)esz, &bytes))
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: array count %" PRIu64 " × %zu-byte %s at byte %zu overflows",
                        r->what, n, esz, gguf_type_name(et), at);
    if (bytes > left)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: array of %" PRIu64 " %s (%zu bytes) at byte %zu extends past "
                        "end of file (%zu bytes)",
                        r->what, n, gguf_type_name(et), bytes, at, r->len);
    if (et == GGUF_TYPE_BOOL) {
        for (size_t i = 0; i < bytes; i++)
            if (kv->val[i] > 1)
                return eng_fail(r->err, ENG_ERR_FORMAT,
                                "gguf: %s: bool array element %zu at byte %zu is %u (must be 0 "
                                "or 1)",
                                r->what, i, r->pos + i, kv->val[i]);
    }
    r->pos += bytes;
    return ENG_OK;
}

static eng_status parse_kv(reader *r, int64_t i, gguf_kv *kv)
{
    snprintf(r->what, sizeof r->what, "metadata entry %" PRId64, i);
    eng_status s = rd_name(r, "key", &kv->key);
    if (s != ENG_OK)
        return s;
    char kbuf[96];
    snprintf(r->what, sizeof r->what, "key '%s'",
             printable(kbuf, sizeof kbuf, kv->key.ptr, kv->key.len));
    size_t at = r->pos;
    uint32_t type;
    if ((s = rd_u32(r, "value type", &type)) != ENG_OK)
        return s;
    if (type >= GGUF_TYPE_COUNT)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: unknown value type %" PRIu32 " at byte %zu", r->what, type, at);
    kv->type = (gguf_type)type;
    kv->raw_off = r->pos;
    if (type == GGUF_TYPE_STRING) {
        gguf_str v;
        if ((s = rd_str(r, "string value", &v)) != ENG_OK)
            return s;
        kv->val = (const uint8_t *)v.ptr;
        kv->n = v.len;
    } else if (type == GGUF_TYPE_ARRAY) {
        if ((s = parse_array(r, kv)) != ENG_OK)
            return s;
    } else {
        size_t vat = r->pos;
        if ((s = rd_bytes(r, gguf_type_size(kv->type), gguf_type_name(type), &kv->val)) != ENG_OK)
            return s;
        if (type == GGUF_TYPE_BOOL && kv->val[0] > 1)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: %s: bool value at byte %zu is %u (must be 0 or 1)", r->what,
                            vat, kv->val[0]);
    }
    kv->raw_len = r->pos - kv->raw_off;
    return ENG_OK;
}

/* Reads one tensor info and validates its name, shape and dtype (the data range is checked
 * once the data section's start is known). */
static eng_status parse_tensor_info(reader *r, int64_t i, gguf_tensor *t, uint64_t *offset)
{
    snprintf(r->what, sizeof r->what, "tensor %" PRId64, i);
    eng_status s = rd_name(r, "name", &t->name);
    if (s != ENG_OK)
        return s;
    char nbuf[96];
    snprintf(r->what, sizeof r->what, "tensor '%s'",
             printable(nbuf, sizeof nbuf, t->name.ptr, t->name.len));
    size_t at = r->pos;
    uint32_t n_dims;
    if ((s = rd_u32(r, "n_dims", &n_dims)) != ENG_OK)
        return s;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: n_dims %" PRIu32 " at byte %zu (must be 1..%d)", r->what,
                        n_dims, at, GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    /* The product of the non-zero dims must fit int64, so that any partial product a
     * consumer forms (rows = ne[1] * ne[2] * ne[3]) does too, even for empty tensors. */
    int64_t n_elems = 1, nz_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        at = r->pos;
        uint64_t ne;
        if ((s = rd_u64(r, "dimension", &ne)) != ENG_OK)
            return s;
        if (ne > (uint64_t)INT64_MAX)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: %s: ne[%" PRIu32 "] = %" PRIu64 " at byte %zu is negative as "
                            "int64",
                            r->what, d, ne, at);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(nz_elems, t->ne[d] ? t->ne[d] : 1, &nz_elems))
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: %s: element count overflows int64 at ne[%" PRIu32 "] = %"
                            PRId64 " (byte %zu)",
                            r->what, d, t->ne[d], at);
        n_elems *= t->ne[d]; /* 0 <= n_elems <= nz_elems */
    }
    at = r->pos;
    uint32_t dtype;
    if ((s = rd_u32(r, "dtype", &dtype)) != ENG_OK)
        return s;
    if (!gguf_dtype_valid(dtype)) {
        const char *known = gguf_ggml_type_name(dtype);
        if (known)
            return eng_fail(r->err, ENG_ERR_UNSUPPORTED,
                            "gguf: %s: dtype %s (%" PRIu32 ") at byte %zu is not supported",
                            r->what, known, dtype, at);
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: unknown dtype %" PRIu32 " at byte %zu", r->what, dtype, at);
    }
    t->dtype = (gguf_dtype)dtype;
    const char *dname = gguf_dtype_name(t->dtype);
    int64_t blk = gguf_dtype_block_elems(t->dtype);
    if (t->ne[0] % blk != 0)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: %s: ne[0] = %" PRId64 " is not a multiple of the %s block size "
                        "(%" PRId64 ")",
                        r->what, t->ne[0], dname, blk);
    uint64_t rows = (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]); /* fits: see nz_elems */
    uint64_t row_bytes, total;
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / blk), (uint64_t)gguf_dtype_block_bytes(t->dtype),
                               &row_bytes) ||
        __builtin_mul_overflow(row_bytes, rows, &total) || total > SIZE_MAX)
        return eng_fail(r->err, ENG_ERR_FORMAT, "gguf: %s: data size overflows (%" PRId64
                        " elements of %s)", r->what, n_elems, dname);
    t->nbytes = (size_t)total;
    return rd_u64(r, "data offset", offset);
}

/* Checks general.alignment (when present): a u32 power of two. */
static eng_status parse_alignment(gguf_file *f, eng_err *err)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = gguf_kv_find(f, "general.alignment");
    if (i < 0)
        return ENG_OK;
    const gguf_kv *kv = &f->kv[i];
    if (kv->type != GGUF_TYPE_UINT32)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "gguf: key 'general.alignment' at byte %zu has type %s (must be u32)",
                        kv->raw_off, gguf_type_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->val, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return eng_fail(err, ENG_ERR_FORMAT,
                        "gguf: key 'general.alignment' at byte %zu is %" PRIu32
                        " (must be a power of two)",
                        kv->raw_off, a);
    f->alignment = a;
    return ENG_OK;
}

static eng_status parse_header(reader *r, gguf_file *f, uint64_t *n_tensors, uint64_t *n_kv)
{
    if (r->len < 4 || memcmp(r->base, "GGUF", 4) != 0) {
        char got[16] = "";
        for (size_t i = 0; i < 4 && i < r->len; i++)
            snprintf(got + 3 * i, sizeof got - 3 * i, "%02x ", r->base[i]);
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: bad magic at byte 0: got %s(%zu bytes), expected \"GGUF\"",
                        r->len ? got : "nothing ", r->len);
    }
    if (r->len < GGUF_HEADER_BYTES)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: file is %zu bytes, too short for the %u-byte header (truncated)",
                        r->len, GGUF_HEADER_BYTES);
    memcpy(&f->version, r->base + 4, 4);
    memcpy(n_tensors, r->base + 8, 8);
    memcpy(n_kv, r->base + 16, 8);
    r->pos = GGUF_HEADER_BYTES;
    uint32_t v = f->version;
    if (v == 1)
        return eng_fail(r->err, ENG_ERR_UNSUPPORTED,
                        "gguf: version 1 files are not supported (only 2 and 3)");
    if (__builtin_bswap32(v) == 2 || __builtin_bswap32(v) == 3)
        return eng_fail(r->err, ENG_ERR_UNSUPPORTED,
                        "gguf: big-endian files (version field %08" PRIx32 ") are not supported",
                        v);
    if (v != 2 && v != 3)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: unknown version %" PRIu32 " at byte 4 (expected 2 or 3)", v);
    size_t left = r->len - r->pos;
    if (*n_kv > left / GGUF_KV_MIN_BYTES)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: header claims %" PRIu64 " metadata entries, but the %zu bytes "
                        "after the header hold at most %zu (truncated or corrupt file)",
                        *n_kv, left, left / GGUF_KV_MIN_BYTES);
    if (*n_tensors > left / GGUF_TENSOR_MIN_BYTES)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: header claims %" PRIu64 " tensors, but the %zu bytes after the "
                        "header hold at most %zu (truncated or corrupt file)",
                        *n_tensors, left, left / GGUF_TENSOR_MIN_BYTES);
    if (*n_kv * GGUF_KV_MIN_BYTES + *n_tensors * GGUF_TENSOR_MIN_BYTES > left)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: header claims %" PRIu64 " metadata entries and %" PRIu64
                        " tensors, more than the %zu bytes after the header can hold (truncated or "
                        "corrupt file)",
                        *n_kv, *n_tensors, left);
    return ENG_OK;
}

/* Places the data section and checks each tensor's [offset, offset + nbytes) inside it. */
static eng_status place_tensors(reader *r, gguf_file *f, const uint64_t *offsets)
{
    size_t start;
    if (__builtin_add_overflow(r->pos, f->alignment - 1, &start))
        return eng_fail(r->err, ENG_ERR_FORMAT, "gguf: data section start overflows");
    start &= ~(f->alignment - 1);
    f->data_start = start;
    if (f->n_tensors == 0)
        return ENG_OK;
    if (start > r->len)
        return eng_fail(r->err, ENG_ERR_FORMAT,
                        "gguf: tensor data would start at byte %zu (tensor infos end at %zu, "
                        "alignment %zu), past end of file (%zu bytes)",
                        start, r->pos, f->alignment, r->len);
    for (int64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        char nbuf[96];
        const char *name = printable(nbuf, sizeof nbuf, t->name.ptr, t->name.len);
        uint64_t off = offsets[i], begin, end;
        if (off % f->alignment != 0)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: tensor '%s': data offset %" PRIu64
                            " is not a multiple of the alignment (%zu)",
                            name, off, f->alignment);
        if (__builtin_add_overflow(off, (uint64_t)start, &begin) || begin > r->len)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: tensor '%s': data offset %" PRIu64 " (+ data start %zu) is "
                            "past end of file (%zu bytes)",
                            name, off, start, r->len);
        if (__builtin_add_overflow(begin, (uint64_t)t->nbytes, &end) || end > r->len)
            return eng_fail(r->err, ENG_ERR_FORMAT,
                            "gguf: tensor '%s': data [%" PRIu64 ", %" PRIu64 ") extends past "
                            "end of file (%zu bytes)",
                            name, begin, begin + (uint64_t)t->nbytes, r->len);
        t->data = r->base + begin;
    }
    return ENG_OK;
}

static eng_status parse(gguf_file *f, eng_err *err)
{
    reader r = {.base = f->base, .len = f->len, .pos = 0, .err = err};
    uint64_t n_tensors = 0, n_kv = 0, *offsets = NULL;
    int64_t dup, first;
    eng_status s = parse_header(&r, f, &n_tensors, &n_kv);
    if (s != ENG_OK)
        return s;
    /* Both counts are now bounded by the file size, so these allocations are too. */
    f->n_kv = (int64_t)n_kv;
    f->n_tensors = (int64_t)n_tensors;
    f->kv = calloc((size_t)n_kv + 1, sizeof *f->kv);
    f->kv_sorted = calloc((size_t)n_kv + 1, sizeof *f->kv_sorted);
    f->tensors = calloc((size_t)n_tensors + 1, sizeof *f->tensors);
    f->tensor_sorted = calloc((size_t)n_tensors + 1, sizeof *f->tensor_sorted);
    offsets = calloc((size_t)n_tensors + 1, sizeof *offsets);
    if (!f->kv || !f->kv_sorted || !f->tensors || !f->tensor_sorted || !offsets) {
        s = eng_fail(err, ENG_ERR_NOMEM, "gguf: out of memory for %" PRIu64 " entries and %"
                     PRIu64 " tensors", n_kv, n_tensors);
        goto fail;
    }
    for (int64_t i = 0; i < f->n_kv; i++) {
        if ((s = parse_kv(&r, i, &f->kv[i])) != ENG_OK)
            goto fail;
        f->kv_sorted[i] = (gguf_name_ix){f->kv[i].key.ptr, f->kv[i].key.len, i};
    }
    if ((dup = sort_find_dup(f->kv_sorted, f->n_kv, &first)) >= 0) {
        char kbuf[96];
        const gguf_kv *kv = &f->kv[dup];
        s = eng_fail(err, ENG_ERR_FORMAT,
                     "gguf: duplicate key '%s' (entries %" PRId64 " and %" PRId64
                     ", the second at byte %zu)",
                     printable(kbuf, sizeof kbuf, kv->key.ptr, kv->key.len), first, dup,
                     (size_t)((const uint8_t *)kv->key.ptr - f->base) - 8);
        goto fail;
    }
    if ((s = parse_alignment(f, err)) != ENG_OK)
        goto fail;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        if ((s = parse_tensor_info(&r, i, &f->tensors[i], &offsets[i])) != ENG_OK)
            goto fail;
        f->tensor_sorted[i] = (gguf_name_ix){f->tensors[i].name.ptr, f->tensors[i].name.len, i};
    }
    if ((dup = sort_find_dup(f->tensor_sorted, f->n_tensors, &first)) >= 0) {
        char nbuf[96];
        const gguf_tensor *t = &f->tensors[dup];
        s = eng_fail(err, ENG_ERR_FORMAT,
                     "gguf: duplicate tensor name '%s' (tensors %" PRId64 " and %" PRId64
                     ", the second at byte %zu)",
                     printable(nbuf, sizeof nbuf, t->name.ptr, t->name.len), first, dup,
                     (size_t)((const uint8_t *)t->name.ptr - f->base) - 8);
        goto fail;
    }
    s = place_tensors(&r, f, offsets);
fail:
    free(offsets);
    return s;
}

/* ---- open / free ------------------------------------------------------------------------ */

static eng_status open_mem(const uint8_t *base, size_t len, bool mapped, gguf_file **out,
                           eng_err *err)
{
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return eng_fail(err, ENG_ERR_NOMEM, "gguf: out of memory");
    f->base = base;
    f->len = len;
    f->mapped = mapped;
    eng_status s = parse(f, err);
    if (s != ENG_OK) {
        f->mapped = false; /* the caller unmaps on failure */
        gguf_free(f);
        return s;
    }
    eng_err_clear(err);
    *out = f;
    return ENG_OK;
}

eng_status gguf_open_buffer(const void *buf, size_t len, gguf_file **out, eng_err *err)
{
    ENG_ASSERT(out != NULL);
    *out = NULL;
    if (!buf && len)
        return eng_fail(err, ENG_ERR_INVALID, "gguf: NULL buffer of %zu bytes", len);
    static const uint8_t empty[1];
    return open_mem(buf ? buf : empty, len, false, out, err);
}

eng_status gguf_open(const char *path, gguf_file **out, eng_err *err)
{
    ENG_ASSERT(out != NULL && path != NULL);
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eng_fail(err, ENG_ERR_IO, "gguf: cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    eng_status s = ENG_OK;
    void *map = MAP_FAILED;
    size_t len = 0;
    if (fstat(fd, &st) != 0) {
        s = eng_fail(err, ENG_ERR_IO, "gguf: cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        s = eng_fail(err, ENG_ERR_IO, "gguf: '%s' is a directory, not a GGUF file", path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        s = eng_fail(err, ENG_ERR_IO, "gguf: '%s' is not a regular file", path);
        goto fail;
    }
    if (st.st_size == 0) {
        s = eng_fail(err, ENG_ERR_FORMAT, "gguf: '%s' is empty (0 bytes)", path);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        s = eng_fail(err, ENG_ERR_UNSUPPORTED, "gguf: '%s' is too large to map", path);
        goto fail;
    }
    len = (size_t)st.st_size;
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        s = eng_fail(err, ENG_ERR_IO, "gguf: cannot mmap '%s' (%zu bytes): %s", path, len,
                     strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    s = open_mem(map, len, true, out, err);
    if (s == ENG_OK)
        return ENG_OK;
fail:
    if (map != MAP_FAILED)
        munmap(map, len);
    if (fd >= 0)
        close(fd);
    return s;
}

void gguf_free(gguf_file *f)
{
    if (!f)
        return;
    if (f->kv)
        for (int64_t i = 0; i < f->n_kv; i++)
            free(f->kv[i].str_offs);
    free(f->kv);
    free(f->kv_sorted);
    free(f->tensors);
    free(f->tensor_sorted);
    if (f->mapped)
        munmap((void *)f->base, f->len);
    free(f);
}

/* ---- lookups by name ------------------------------------------------------------------- */

int64_t gguf_kv_find(const gguf_file *f, const char *key)
{
    return name_find(f->kv_sorted, f->n_kv, key);
}

const gguf_tensor *gguf_tensor_find(const gguf_file *f, const char *name)
{
    int64_t i = name_find(f->tensor_sorted, f->n_tensors, name);
    return i < 0 ? NULL : &f->tensors[i];
}
