/* status.h — the engine's one status type, error messages and always-on invariant checks. */
#ifndef SERVAL_STATUS_H
#define SERVAL_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum eng_status {
    ENG_OK = 0,
    ENG_ERR_NOMEM,       /* an allocation failed */
    ENG_ERR_IO,          /* open/read/mmap failed */
    ENG_ERR_FORMAT,      /* a file is malformed (truncated, corrupt, hostile) */
    ENG_ERR_INVALID,     /* a caller or request passed a bad value */
    ENG_ERR_UNSUPPORTED, /* valid, but Serval does not implement it */
    ENG_ERR_CUDA,        /* a CUDA/cuBLAS/NCCL call failed */
    ENG_ERR_OVERLOAD,    /* a queue is full: try again later */
    ENG_ERR_TOO_LONG,    /* a prompt or sequence exceeds the context */
    ENG_ERR_CANCELLED    /* the request was cancelled */
} eng_status;

/* A human-readable error: what was wrong and where. Functions that can fail on outside input
 * take an `eng_err *` (may be NULL) and fill it when they return anything but ENG_OK. */
typedef struct eng_err {
    char msg[512];
} eng_err;

/* A constant, lower-case description of a status for messages ("bad format" for
 * ENG_ERR_FORMAT, "ok" for ENG_OK). */
const char *eng_status_str(eng_status s);

/* Formats `fmt` into `err` (when non-NULL) and returns `s`, so failures read
 * `return eng_fail(err, ENG_ERR_FORMAT, "tensor '%s': offset past end", name);` */
eng_status eng_fail(eng_err *err, eng_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Clears an error message (err may be NULL). */
void eng_err_clear(eng_err *err);

/* Broken internal invariants only (never outside input): prints the expression and
 * file:line, then aborts. Always on, also in release builds. */
void eng_assert_fail(const char *expr, const char *file, int line);
#define ENG_ASSERT(cond) ((cond) ? (void)0 : eng_assert_fail(#cond, __FILE__, __LINE__))

#endif
