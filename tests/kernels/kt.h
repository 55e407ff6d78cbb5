/* kt.h — shared helpers for the kernel tests: skip without a GPU, guarded NaN-poisoned device
 * buffers, random fills that are never zero, and relative-error checks per dtype. Tests use
 * Criterion's names (Test, cr_assert, cr_skip_test); built with KT_STANDALONE (the GPU
 * machine has no Criterion) they run under kt_main.c's forking runner instead. */
#ifndef SERVAL_KT_H
#define SERVAL_KT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kn_status.h"
#include "kt_data.h"

#ifdef KT_STANDALONE
typedef void (*kt_fn)(void);
void kt_register(const char *suite, const char *name, kt_fn fn);
void kt_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
void kt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define Test(suite, name)                                                                     \
    static void suite##_##name(void);                                                         \
    __attribute__((constructor)) static void suite##_##name##_reg(void)                       \
    {                                                                                         \
        kt_register(#suite, #name, suite##_##name);                                           \
    }                                                                                         \
    static void suite##_##name(void)
#define cr_assert(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond))                                                                          \
            kt_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                  \
    } while (0)
#define cr_skip_test(...) kt_skip(__VA_ARGS__)
#else
#include <criterion/criterion.h>
#endif

/* Skips the test (in the forked worker, never the runner's parent) when there is no GPU. */
#define KT_REQUIRE_GPU()                                                                      \
    do {                                                                                      \
        if (kt_gpu_count() <= 0)                                                              \
            cr_skip_test("no CUDA device");                                                   \
    } while (0)
/* Fails with the launcher's status and kn_last_error() unless it returned KN_OK. */
#define KT_OK(call)                                                                           \
    do {                                                                                      \
        kn_status kt_s_ = (call);                                                             \
        cr_assert(kt_s_ == KN_OK, "%s -> %s: %s", #call, kn_status_str(kt_s_), kn_last_error()); \
    } while (0)

int kt_gpu_count(void);

/* A device buffer with 256 guard bytes on both sides, all poisoned with 0xff (NaN in fp32,
 * fp16 and bf16) so unwritten outputs and stray writes show. */
typedef struct kt_buf {
    uint8_t *base;
    void *p; /* 256-byte aligned */
    size_t bytes;
} kt_buf;
kt_buf kt_buf_alloc(size_t bytes);
kt_buf kt_buf_upload(const void *host, size_t bytes); /* alloc + copy */
void kt_buf_download(void *host, const kt_buf *b);
void kt_buf_check_guards(const kt_buf *b, const char *what); /* asserts guards untouched */
void kt_buf_free(kt_buf *b);
void kt_sync(void); /* cudaDeviceSynchronize, asserting success */

/* Asserts kt_compare finds no NaN in got and no error over rtol; names the first bad element.
 * Returns the largest error. */
double kt_check_close(kn_dtype dt, const void *got, const void *want, size_t n, double rtol,
                      const char *what);

#endif
