/* gguf_write.h — builds GGUF v3 files: synthetic models (tools/serval-synth) and test fixtures. */
#ifndef SERVAL_GGUF_WRITE_H
#define SERVAL_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct gguf_writer gguf_writer;

/* Returns NULL on allocation failure. */
gguf_writer *gguf_writer_create(void);
void gguf_writer_free(gguf_writer *w);

/* Metadata. Keys and strings are copied. Adding a key twice replaces the old value. */
eng_status gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
eng_status gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
eng_status gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
eng_status gguf_writer_set_bool(gguf_writer *w, const char *key, bool v);
eng_status gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, size_t len);
/* Any scalar type (u8 ... f64, bool): `v` points at one value of that type (copied). */
eng_status gguf_writer_set_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v);
/* Numeric array of n packed elements of elem_type (copied). */
eng_status gguf_writer_set_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                               const void *data, uint64_t n);
eng_status gguf_writer_set_arr_str(gguf_writer *w, const char *key, const gguf_str *strs,
                                   uint64_t n);
/* Copies every key/value of `src` whose key starts with `prefix` ("" copies all). */
eng_status gguf_writer_copy_kv(gguf_writer *w, const gguf_file *src, const char *prefix);

/* Tensors. `data` is NOT copied: it must stay valid until gguf_writer_write returns.
 * nbytes must equal the size implied by dtype and ne. */
eng_status gguf_writer_add_tensor(gguf_writer *w, const char *name, gguf_dtype dtype,
                                  uint32_t n_dims, const int64_t *ne, const void *data,
                                  size_t nbytes);

/* A tensor whose data is produced while the file is written, one row at a time, so a
 * multi-GB model never sits in memory: gen fills row `row` (gguf_dtype_row_bytes(dtype, ne[0])
 * bytes at dst, a writer-owned buffer) for row = 0 .. ne[1]*ne[2]*ne[3]-1, in order, during
 * gguf_writer_write. `user` is passed through and must stay valid until then. A status other
 * than ENG_OK aborts the write and is returned with gen's message. */
typedef eng_status (*gguf_row_gen)(void *user, int64_t row, void *dst, eng_err *err);
eng_status gguf_writer_add_tensor_gen(gguf_writer *w, const char *name, gguf_dtype dtype,
                                      uint32_t n_dims, const int64_t *ne, gguf_row_gen gen,
                                      void *user);

/* Writes the file to a temporary name beside `path`, then renames it, so a failed or
 * interrupted write never leaves a truncated file at `path`. Tensor data is aligned to 32
 * bytes, or to general.alignment when that key was set or copied (a u32 power of two up to
 * 4096; anything else fails with ENG_ERR_INVALID). */
eng_status gguf_writer_write(const gguf_writer *w, const char *path, eng_err *err);

#endif
