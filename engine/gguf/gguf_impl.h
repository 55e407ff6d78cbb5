/* gguf_impl.h — GGUF internals shared by the reader (gguf.c, gguf_meta.c) and the writer
 * (gguf_write.c): the opened file's layout and a few tables. */
#ifndef SERVAL_GGUF_IMPL_H
#define SERVAL_GGUF_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* One metadata entry. `val` points at the value in the mapping: the scalar, the string
 * payload, or an array's first element. */
typedef struct gguf_kv {
    gguf_str key;
    gguf_type type;
    gguf_type elem_type;  /* arrays */
    uint64_t n;           /* arrays: element count; strings: byte length */
    const uint8_t *val;
    size_t raw_off;       /* the value as stored (array header included), for copying */
    size_t raw_len;
    uint64_t *str_offs;   /* string arrays: file offset of each element's u64 length */
} gguf_kv;

/* Names sorted for binary search and duplicate detection. */
typedef struct gguf_name_ix {
    const char *ptr;
    uint64_t len;
    int64_t idx;
} gguf_name_ix;

struct gguf_file {
    const uint8_t *base;
    size_t len;
    bool mapped; /* base is our mmap (gguf_open) rather than the caller's buffer */
    uint32_t version;
    size_t alignment;
    size_t data_start;
    int64_t n_kv;
    gguf_kv *kv;
    gguf_name_ix *kv_sorted;
    int64_t n_tensors;
    gguf_tensor *tensors;
    gguf_name_ix *tensor_sorted;
};

/* The bytes of metadata entry i's value exactly as stored in the file (little-endian; an
 * array's span starts at its u32 element type), so the writer can copy values verbatim.
 * *data points into the mapping, owned by f. */
void gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *len);

/* Bytes one scalar value of type t takes in the file; 0 for STRING, ARRAY and unknown types. */
size_t gguf_type_size(gguf_type t);

/* A printable name for a metadata value type ("u32", "string", ...). */
const char *gguf_type_name(uint32_t t);

/* The name of a GGML tensor type Serval knows of but does not implement ("Q4_K"), or NULL. */
const char *gguf_ggml_type_name(uint32_t t);

#endif
