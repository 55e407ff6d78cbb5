/* kn_status.c — the plain-C parts of kernels/kn_status.h (status names, dtype sizes): in their
 * own library so that the kernels and the references (and builds without CUDA) share them
 * without the kernels linking the references. */
#include "kn_status.h"

const char *kn_status_str(kn_status s)
{
    switch (s) {
    case KN_OK: return "KN_OK";
    case KN_ERR_INVALID: return "KN_ERR_INVALID";
    case KN_ERR_UNSUPPORTED: return "KN_ERR_UNSUPPORTED";
    case KN_ERR_CUDA: return "KN_ERR_CUDA";
    case KN_ERR_NOMEM: return "KN_ERR_NOMEM";
    }
    return "KN_ERR_?";
}

size_t kn_dtype_size(kn_dtype t)
{
    switch (t) {
    case KN_DTYPE_F32: return 4;
    case KN_DTYPE_F16:
    case KN_DTYPE_BF16: return 2;
    }
    return 0;
}
