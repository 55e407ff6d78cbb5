/* kt_main.c — a forking test runner for the kernel tests where Criterion is not installed
 * (the GPU machine): runs every registered Test() in its own child, prints one line each and
 * a Criterion-style synthesis, exits non-zero when any test fails or crashes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kt.h"

enum { KT_MAX = 256, KT_EXIT_SKIP = 77 };
static struct {
    const char *suite, *name;
    kt_fn fn;
} cases[KT_MAX];
static int n_cases;

void kt_register(const char *suite, const char *name, kt_fn fn)
{
    if (n_cases < KT_MAX) {
        cases[n_cases].suite = suite;
        cases[n_cases].name = name;
        cases[n_cases].fn = fn;
        n_cases++;
    }
}

void kt_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: assertion failed: %s\n  ", file, line, expr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void kt_skip(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  skipped: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(KT_EXIT_SKIP);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL; /* run only suite::name containing it */
    int pass = 0, fail = 0, crash = 0, skip = 0;
    for (int i = 0; i < n_cases; i++) {
        char full[256];
        snprintf(full, sizeof full, "%s::%s", cases[i].suite, cases[i].name);
        if (filter && !strstr(full, filter))
            continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            cases[i].fn();
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        const char *verdict;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            verdict = "PASS", pass++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == KT_EXIT_SKIP)
            verdict = "SKIP", skip++;
        else if (WIFEXITED(st))
            verdict = "FAIL", fail++;
        else
            verdict = "CRASH", crash++;
        printf("[%s] %s\n", verdict, full);
    }
    printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: %d | Skipped: %d\n",
           pass + fail + crash, pass, fail, crash, skip);
    return fail || crash ? 1 : 0;
}
