/* status.c — status names, error formatting and the always-on assert. */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>

const char *eng_status_str(eng_status s)
{
    switch (s) {
    case ENG_OK: return "ok";
    case ENG_ERR_NOMEM: return "out of memory";
    case ENG_ERR_IO: return "i/o error";
    case ENG_ERR_FORMAT: return "bad format";
    case ENG_ERR_INVALID: return "invalid argument";
    case ENG_ERR_UNSUPPORTED: return "unsupported";
    case ENG_ERR_CUDA: return "cuda error";
    case ENG_ERR_OVERLOAD: return "overloaded";
    case ENG_ERR_TOO_LONG: return "too long";
    case ENG_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

eng_status eng_fail(eng_err *err, eng_status s, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

void eng_err_clear(eng_err *err)
{
    if (err)
        err->msg[0] = '\0';
}

void eng_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "serval: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    fflush(stderr);
    abort();
}
