/* test_serval_cli.c — `serval complete` end to end: real completions, reproducible sampling,
 * and a clear message with a non-zero exit (never a crash) for every kind of bad input. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

typedef struct {
    int rc;
    char *out, *err;
} run_result;

/* Runs `serval complete <args...> --model <model>` (args NULL-terminated). */
static run_result serval(const char *model, ...)
{
    char *argv[48];
    int n = 0;
    argv[n++] = tu_bin_path("serval");
    argv[n++] = "complete";
    if (model) {
        argv[n++] = "--model";
        argv[n++] = (char *)model;
    }
    va_list ap;
    va_start(ap, model);
    for (char *a; (a = va_arg(ap, char *)) && n < 46;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    run_result r;
    r.rc = tu_run(argv, &r.out, &r.err, 120);
    free(argv[0]);
    return r;
}

static void rr_free(run_result r)
{
    free(r.out);
    free(r.err);
}

static void expect_clean_failure(run_result r, const char *fragment)
{
    cr_assert(r.rc > 0 && r.rc < 128, "expected a clean non-zero exit, got %d; stderr: %s", r.rc,
              r.err);
    cr_assert(strstr(r.err, fragment), "stderr should mention '%s', got: %s", fragment, r.err);
    rr_free(r);
}

Test(cli, completes_and_reports_speed, .timeout = 120)
{
    run_result r = serval(tu_default_model(), "--prompt", "def fibonacci(n):", "--max-tokens", "24",
                          "--threads", "2", NULL);
    cr_assert_eq(r.rc, 0, "stderr: %s", r.err);
    cr_assert_gt(strlen(r.out), 5, "no completion printed");
    cr_assert(strstr(r.err, "prompt:") && strstr(r.err, "decode:") && strstr(r.err, "tok/s"),
              "no speed summary: %s", r.err);
    rr_free(r);
}

Test(cli, greedy_is_deterministic_and_seeded_sampling_reproduces, .timeout = 180)
{
    run_result a = serval(tu_default_model(), "--prompt", "The capital of France is",
                          "--max-tokens", "12", "--quiet", NULL);
    run_result b = serval(tu_default_model(), "--prompt", "The capital of France is",
                          "--max-tokens", "12", "--quiet", "--threads", "1", NULL);
    cr_assert_eq(a.rc, 0);
    cr_assert_str_eq(a.out, b.out, "greedy output depends on the thread count");
    run_result s1 = serval(tu_default_model(), "--prompt", "Once upon a time", "--max-tokens", "24",
                           "--temperature", "1.2", "--seed", "7", "--quiet", NULL);
    run_result s2 = serval(tu_default_model(), "--prompt", "Once upon a time", "--max-tokens", "24",
                           "--temperature", "1.2", "--seed", "7", "--quiet", NULL);
    run_result s3 = serval(tu_default_model(), "--prompt", "Once upon a time", "--max-tokens", "24",
                           "--temperature", "1.2", "--seed", "8", "--quiet", NULL);
    cr_assert_eq(s1.rc, 0);
    cr_assert_str_eq(s1.out, s2.out, "same seed gave different samples");
    cr_assert_str_neq(s1.out, s3.out, "different seeds gave the same 24 sampled tokens");
    rr_free(a);
    rr_free(b);
    rr_free(s1);
    rr_free(s2);
    rr_free(s3);
}

Test(cli, stop_string_cuts_the_output, .timeout = 120)
{
    run_result full = serval(tu_default_model(), "--prompt", "1, 2, 3, 4,", "--max-tokens", "16",
                             "--quiet", NULL);
    cr_assert_eq(full.rc, 0);
    cr_assert(strstr(full.out, "6"), "expected the count to reach 6: %s", full.out);
    run_result cut = serval(tu_default_model(), "--prompt", "1, 2, 3, 4,", "--max-tokens", "16",
                            "--stop", "6", "--quiet", NULL);
    cr_assert_eq(cut.rc, 0);
    cr_assert_null(strstr(cut.out, "6"), "stop string leaked: %s", cut.out);
    cr_assert_eq(strncmp(cut.out, full.out, strlen(cut.out) - 1), 0,
                 "the stopped output is not a prefix of the full one");
    rr_free(full);
    rr_free(cut);
}

Test(cli, missing_model_file)
{
    expect_clean_failure(serval("/nonexistent/model.gguf", "--prompt", "x", NULL),
                         "/nonexistent/model.gguf");
}

Test(cli, truncated_model_file)
{
    size_t len;
    char *data = tu_read_file(tu_default_model(), &len);
    cr_assert_not_null(data);
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(tu_write_file(path, data, len / 3), 0);
    free(data);
    expect_clean_failure(serval(path, "--prompt", "x", NULL), "cannot load model");
    unlink(path);
    free(path);
}

Test(cli, not_a_gguf_file)
{
    char *path = tu_temp_path(".gguf");
    cr_assert_eq(tu_write_file(path, "hello, I am not a model\n", 24), 0);
    expect_clean_failure(serval(path, "--prompt", "x", NULL), "cannot load model");
    unlink(path);
    free(path);
}

Test(cli, empty_prompt)
{
    expect_clean_failure(serval(tu_default_model(), "--prompt", "", NULL), "empty");
}

Test(cli, prompt_longer_than_the_context)
{
    expect_clean_failure(serval(tu_default_model(), "--prompt",
                                "a fairly long prompt that is certainly more than four tokens",
                                "--ctx", "4", NULL),
                         "no room");
}

Test(cli, nonsense_flags)
{
    const char *m = tu_default_model();
    expect_clean_failure(serval(m, "--prompt", "x", "--max-tokens", "abc", NULL), "--max-tokens");
    expect_clean_failure(serval(m, "--prompt", "x", "--max-tokens", "0", NULL), "--max-tokens");
    expect_clean_failure(serval(m, "--prompt", "x", "--temperature", "-1", NULL), "temperature");
    expect_clean_failure(serval(m, "--prompt", "x", "--top-p", "2", NULL), "top_p");
    expect_clean_failure(serval(m, "--prompt", "x", "--threads", "0", NULL), "--threads");
    expect_clean_failure(serval(m, "--prompt", "x", "--bogus", "1", NULL), "unknown option");
    expect_clean_failure(serval(m, "--prompt", NULL), "needs a value");
    expect_clean_failure(serval(m, NULL), "--prompt");
    expect_clean_failure(serval(m, "--prompt", "x", "--prompt-file", "/etc/hostname", NULL),
                         "exactly one");
    expect_clean_failure(serval(m, "--prompt-file", "/nonexistent/p.txt", NULL), "cannot open");
}

Test(cli, help_and_unknown_command)
{
    char *argv[] = {tu_bin_path("serval"), "complete", "--help", NULL};
    char *out, *err;
    cr_assert_eq(tu_run(argv, &out, &err, 10), 0);
    cr_assert(strstr(out, "--max-tokens") && strstr(out, "--model"), "help: %s", out);
    free(out);
    free(err);
    char *argv2[] = {argv[0], "frobnicate", NULL};
    int rc = tu_run(argv2, &out, &err, 10);
    cr_assert(rc > 0 && rc < 128);
    cr_assert(strstr(err, "unknown command"), "stderr: %s", err);
    free(out);
    free(err);
    free(argv[0]);
}
