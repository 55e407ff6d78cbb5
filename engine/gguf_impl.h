/* gguf_impl.h — GGUF internals shared by the reader (gguf.c) and the writer (gguf_write.c). */
#ifndef SERVAL_GGUF_IMPL_H
#define SERVAL_GGUF_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* The bytes of metadata entry i's value exactly as stored in the file (little-endian; an
 * array's span starts at its u32 element type), so the writer can copy values verbatim.
 * *data points into the mapping, owned by f. */
void gguf_kv_raw(const gguf_file *f, int64_t i, const void **data, size_t *len);

/* Bytes one scalar value of type t takes in the file; 0 for STRING, ARRAY and unknown types. */
size_t gguf_type_size(gguf_type t);

/* A printable name for a metadata value type ("u32", "string", ...). */
const char *gguf_type_name(uint32_t t);

#endif
