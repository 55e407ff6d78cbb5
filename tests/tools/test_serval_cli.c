/* test_serval_cli.c — `serval complete` end to end: real completions (llama.cpp's text for
 * greedy), reproducible sampling, the flag parser's forms and messages, and a clear message
 * with a non-zero exit (never a crash) for every kind of bad input. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tu_json.h"

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

/* Greedy output through the engine is llama.cpp's text, byte for byte: every prompt of the
 * fixture, each token's piece as llama.cpp detokenizes it, end-of-generation not printed. */
Test(cli, greedy_prints_llamacpps_text, .timeout = 600)
{
    size_t n_lines;
    tu_json **lines = tu_read_jsonl("tests/fixtures/llamacpp/greedy.jsonl", &n_lines);
    cr_assert_geq(n_lines, 8);
    char *prompt_path = tu_temp_path(".txt");
    for (size_t li = 0; li < n_lines; li++) {
        const tu_json *j = lines[li];
        const char *name = tu_json_get(j, "name")->str;
        const tu_json *pj = tu_json_get(j, "prompt_b64"), *tj = tu_json_get(j, "text_b64");
        size_t plen, tlen;
        unsigned char *prompt = tu_base64_decode(pj->str, pj->str_len, &plen);
        unsigned char *text = tu_base64_decode(tj->str, tj->str_len, &tlen);
        cr_assert(prompt && text);
        cr_assert_eq(tu_write_file(prompt_path, prompt, plen), 0);
        char n_tok[16];
        snprintf(n_tok, sizeof n_tok, "%zu", tu_json_get(j, "tokens")->n);
        run_result r = serval(tu_default_model(), "--prompt-file", prompt_path, "--max-tokens",
                              n_tok, "--threads", "2", "--quiet", NULL);
        cr_assert_eq(r.rc, 0, "'%s': stderr: %s", name, r.err);
        size_t olen = strlen(r.out);
        cr_assert(olen > 0 && r.out[olen - 1] == '\n', "'%s': no final newline", name);
        olen--;
        cr_assert(olen <= tlen && memcmp(r.out, text, olen) == 0,
                  "'%s': serval printed\n%.*s\nllama.cpp's text is\n%.*s", name, (int)olen,
                  r.out, (int)tlen, (const char *)text);
        /* What is left is llama.cpp's end-of-generation piece, if it stopped. */
        const char *rest = (const char *)text + olen;
        size_t rlen = tlen - olen;
        if (tu_json_get(j, "stopped")->b)
            cr_assert(rlen > 4 && !strncmp(rest, "<|", 2) && !strncmp(rest + rlen - 2, "|>", 2),
                      "'%s': after serval's text llama.cpp has '%.*s', not just its "
                      "end-of-generation piece", name, (int)rlen, rest);
        else
            cr_assert_eq(rlen, 0, "'%s': output cut short, missing '%.*s'", name, (int)rlen,
                         rest);
        rr_free(r);
        free(prompt);
        free(text);
        tu_json_free(lines[li]);
    }
    unlink(prompt_path);
    free(prompt_path);
    free(lines);
}

Test(cli, flags_take_their_value_after_an_equals_sign_too, .timeout = 120)
{
    run_result a = serval(tu_default_model(), "--prompt", "def add(a, b):", "--max-tokens", "8",
                          "--quiet", NULL);
    run_result b = serval(tu_default_model(), "--prompt=def add(a, b):", "--max-tokens=8",
                          "--quiet", NULL);
    cr_assert_eq(a.rc, 0, "stderr: %s", a.err);
    cr_assert_eq(b.rc, 0, "stderr: %s", b.err);
    cr_assert_str_eq(a.out, b.out);
    rr_free(a);
    rr_free(b);
}

Test(cli, flag_errors_name_the_flag)
{
    const char *m = tu_default_model();
    expect_clean_failure(serval(m, "--prompt", "x", "--max-tokens=0", NULL),
                         "--max-tokens expects an integer in [1, ");
    expect_clean_failure(serval(m, "--prompt", "x", "--top-k", "-1", NULL), "--top-k");
    expect_clean_failure(serval(m, "--prompt", "x", "--seed", "-3", NULL), "--seed");
    expect_clean_failure(serval(m, "--prompt", "x", "--ignore-eos=yes", NULL),
                         "--ignore-eos takes no value");
    expect_clean_failure(serval(m, "--prompt", "x", "--backend", "tpu", NULL),
                         "--backend expects one of cpu|cuda, got 'tpu'");
    expect_clean_failure(serval(m, "--prompt", "x", "--bogus=1", NULL), "unknown option '--bogus'");
    expect_clean_failure(serval(m, "--prompt", "x", "stray", NULL), "unexpected argument 'stray'");
    run_result r = serval(m, "--prompt", "x", "--stop", "a", "--stop", "b", "--stop", "c",
                          "--stop", "d", "--stop", "e", "--stop", "f", "--stop", "g", "--stop",
                          "h", "--stop", "i", "--stop", "j", "--stop", "k", "--stop", "l",
                          "--stop", "m", "--stop", "n", "--stop", "o", "--stop", "p", "--stop",
                          "q", NULL);
    expect_clean_failure(r, "--stop may be given at most 16 times");
}

/* Without a GPU (or a CUDA build) --backend cuda is a clear error, never a crash; with one it
 * completes. */
Test(cli, cuda_backend_completes_or_says_why_not, .timeout = 120)
{
    run_result r = serval(tu_default_model(), "--prompt", "def f(x):", "--max-tokens", "4",
                          "--backend", "cuda", "--quiet", NULL);
    if (r.rc == 0) {
        cr_assert_gt(strlen(r.out), 1);
        rr_free(r);
        return;
    }
    expect_clean_failure(r, "cuda");
}

/* --help is generated from each command's flag table: every flag is there once. */
Test(cli, help_lists_every_flag)
{
    static const char *const complete_flags[] = {
        "--model", "--prompt ", "--prompt-file", "--max-tokens", "--temperature", "--top-k",
        "--top-p", "--seed", "--stop", "--ctx", "--ignore-eos", "--quiet", "--backend",
        "--threads", "--kv-mb", "--cuda-fp16", "--no-cuda-graphs"};
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "help", "complete", NULL};
    char *out, *err;
    cr_assert_eq(tu_run(argv, &out, &err, 10), 0);
    for (size_t i = 0; i < sizeof complete_flags / sizeof complete_flags[0]; i++)
        cr_assert(strstr(out, complete_flags[i]), "no %s in: %s", complete_flags[i], out);
    cr_assert(strstr(out, "(default 64)"), "the default of --max-tokens is not shown: %s", out);
    free(out);
    free(err);
    char *argv2[] = {bin, "serve", "--help", NULL};
    int rc = tu_run(argv2, &out, &err, 10);
    if (strstr(err, "not built in")) { /* engine-only build */
        cr_assert_eq(rc, 2);
    } else {
        static const char *const serve_flags[] = {
            "--bind", "--grpc-port", "--http-port", "--token ", "--token-file", "--data-dir",
            "--no-auth", "--kv-mb", "--max-running", "--max-waiting", "--max-inflight",
            "--max-message-mb", "--threads", "--drain-ms", "--http-max-body-kb",
            "--http-rate-limit", "--http-rate-burst", "--http-timeout", "--http-client-timeout",
            "--quiet", "--backend", "--cuda-fp16", "--no-cuda-graphs", "--model"};
        cr_assert_eq(rc, 0, "stderr: %s", err);
        for (size_t i = 0; i < sizeof serve_flags / sizeof serve_flags[0]; i++)
            cr_assert(strstr(out, serve_flags[i]), "no %s in: %s", serve_flags[i], out);
    }
    free(out);
    free(err);
    free(bin);
}

Test(cli, serve_flag_errors_name_the_flag)
{
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "serve", "--grpc-port=70000", NULL};
    char *out, *err;
    int rc = tu_run(argv, &out, &err, 10);
    cr_assert_eq(rc, 2, "stderr: %s", err);
    cr_assert(strstr(err, "not built in") ||
                  strstr(err, "--grpc-port expects an integer in [0, 65535], got '70000'"),
              "stderr: %s", err);
    free(out);
    free(err);
    char *argv2[] = {bin, "serve", "--tokn", "x", NULL};
    rc = tu_run(argv2, &out, &err, 10);
    cr_assert_eq(rc, 2, "stderr: %s", err);
    cr_assert(strstr(err, "not built in") || strstr(err, "unknown option '--tokn'"), "stderr: %s",
              err);
    free(out);
    free(err);
    free(bin);
}
