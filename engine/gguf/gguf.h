/* gguf.h — read-only GGUF v2/v3 reader over mmap, and the GGML tensor type table.
 *
 * Byte layout (little-endian), as llama.cpp's ggml/docs/gguf.md specifies:
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv × { string key | u32 value_type | value }
 *   n_tensors × { string name | u32 n_dims | n_dims × u64 ne | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
 *   string = u64 len | len bytes (not NUL-terminated); array = u32 elem_type | u64 n | elems
 *
 * Every count, length, offset, type and size is validated at open: a file that opens
 * successfully can be read through this API without further bounds checks. */
#ifndef SERVAL_GGUF_H
#define SERVAL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Metadata value types. */
typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* Tensor element types (GGML numbering). Only these are accepted by the reader. */
typedef enum gguf_dtype {
    GGUF_DTYPE_F32 = 0,
    GGUF_DTYPE_F16 = 1,
    GGUF_DTYPE_Q4_0 = 2,
    GGUF_DTYPE_Q4_1 = 3,
    GGUF_DTYPE_Q5_0 = 6,
    GGUF_DTYPE_Q5_1 = 7,
    GGUF_DTYPE_Q8_0 = 8,
    GGUF_DTYPE_Q4_K = 12,
    GGUF_DTYPE_Q5_K = 13,
    GGUF_DTYPE_Q6_K = 14,
    GGUF_DTYPE_BF16 = 30
} gguf_dtype;

#define GGUF_MAX_DIMS 4

/* A string inside the mapped file: not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_tensor {
    gguf_str name;
    gguf_dtype dtype;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    const void *data;          /* into the mapping; owned by the gguf_file */
    size_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Opens and validates `path`. On success *out owns the mapping (free with gguf_free). */
eng_status gguf_open(const char *path, gguf_file **out, eng_err *err);

/* Same, over a caller-owned buffer that must outlive the gguf_file (tests, fuzzing). */
eng_status gguf_open_buffer(const void *buf, size_t len, gguf_file **out, eng_err *err);

void gguf_free(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);

/* Metadata. Keys are looked up by exact name; index is in [0, gguf_kv_count). */
int64_t gguf_kv_count(const gguf_file *f);
int64_t gguf_kv_find(const gguf_file *f, const char *key); /* -1 when absent */
gguf_str gguf_kv_key(const gguf_file *f, int64_t i);
gguf_type gguf_kv_type(const gguf_file *f, int64_t i);

/* Typed getters. They return ENG_ERR_INVALID (with a message naming the key) when the key is
 * absent, and ENG_ERR_FORMAT when it has the wrong type; integer getters accept any integer
 * type whose value fits. */
eng_status gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, eng_err *err);
eng_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, eng_err *err);
eng_status gguf_get_f32(const gguf_file *f, const char *key, float *out, eng_err *err);
eng_status gguf_get_bool(const gguf_file *f, const char *key, bool *out, eng_err *err);
eng_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, eng_err *err);

/* Arrays. For numeric element types `data` points at n packed little-endian elements in the
 * mapping (possibly unaligned: read with memcpy). For string arrays use gguf_arr_str. */
typedef struct gguf_arr {
    gguf_type elem_type;
    uint64_t n;
    const void *data;
    int64_t kv_index; /* which kv this array came from */
} gguf_arr;
eng_status gguf_get_arr(const gguf_file *f, const char *key, gguf_arr *out, eng_err *err);
/* The i-th string of a string array (i < a->n; checked by ENG_ASSERT). O(1). */
gguf_str gguf_arr_str(const gguf_file *f, const gguf_arr *a, uint64_t i);

/* Tensors. */
int64_t gguf_tensor_count(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_tensor_find(const gguf_file *f, const char *name); /* NULL if absent */

/* dtype table. Block size in elements and bytes per block (F32: 1 and 4). */
bool gguf_dtype_valid(uint32_t dtype);
const char *gguf_dtype_name(gguf_dtype t);
int64_t gguf_dtype_block_elems(gguf_dtype t);
size_t gguf_dtype_block_bytes(gguf_dtype t);
/* Bytes of a row of `ne0` elements; ne0 must be a multiple of the block size. */
size_t gguf_dtype_row_bytes(gguf_dtype t, int64_t ne0);

/* true when a gguf_str equals a C string. */
bool gguf_str_eq(gguf_str s, const char *c);

#endif
