/* kn_status.h — status codes and element types shared by every kernel launcher (C interface). */
#ifndef SERVAL_KN_STATUS_H
#define SERVAL_KN_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kn_status {
    KN_OK = 0,
    KN_ERR_INVALID,     /* a bad argument: null pointer, shape, stride or alignment */
    KN_ERR_UNSUPPORTED, /* valid, but no kernel is built for it (head size, dtype pair) */
    KN_ERR_CUDA,        /* a CUDA or cuBLAS call failed (kn_last_error says which) */
    KN_ERR_NOMEM        /* a device or host allocation failed */
} kn_status;

/* Element types of activations, weights and KV blocks. */
typedef enum kn_dtype {
    KN_DTYPE_F32 = 0,
    KN_DTYPE_F16 = 1,
    KN_DTYPE_BF16 = 2
} kn_dtype;

/* Constant name of a status ("KN_ERR_INVALID"). */
const char *kn_status_str(kn_status s);
/* Bytes per element; 0 for an unknown dtype. */
size_t kn_dtype_size(kn_dtype t);
/* What the last failing launcher on this thread saw: expression, file:line, device and the
 * CUDA/cuBLAS error text, or the argument check that failed. Thread-local, like errno; the
 * string stays valid until this thread's next failure. "" when nothing failed yet. */
const char *kn_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
