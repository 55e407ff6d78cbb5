/* test_serval_cli.c — `serval complete` end to end: real completions (llama.cpp's text for
 * greedy), reproducible sampling, the flag parser's forms and messages, and a clear message
 * with a non-zero exit (never a crash) for every kind of bad input. `serval serve`: where its
 * tokens come from and what it prints of them, its flag checks, and its shutdown (drain on the
 * first SIGTERM, prompt exit on the second) against a real process. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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
            "--quiet", "--backend", "--cuda-fp16", "--no-cuda-graphs", "--model",
            "--allow-readable-token-file", "--tls-cert", "--tls-key", "--cors-origin",
            "--metrics-token", "--per-ip-connections", "--max-inflight-per-token",
            "--generation-timeout-ms", "--max-streams-per-connection", "SERVAL_TOKEN",
            "--prefix-cache-per-token"};
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

/* ---- serval serve ------------------------------------------------------------------------ */

/* True when this build has no `serve` (engine-only): the serve tests then have nothing to run. */
static bool serve_missing(void)
{
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "serve", "--help", NULL};
    char *out, *err;
    tu_run(argv, &out, &err, 10);
    bool missing = strstr(err, "not built in") != NULL;
    free(out);
    free(err);
    free(bin);
    return missing;
}

/* Runs `serval serve <args...>` (NULL-terminated) to its exit with $SERVAL_TOKEN unset. */
static run_result serve_run(const char *first, ...)
{
    char *argv[32];
    int n = 0;
    argv[n++] = tu_bin_path("serval");
    argv[n++] = "serve";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    unsetenv("SERVAL_TOKEN");
    run_result r;
    r.rc = tu_run(argv, &r.out, &r.err, 60);
    free(argv[0]);
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The server's log so far, for failure messages (static buffer). */
static const char *log_text(const char *path)
{
    static char buf[8192];
    char *log = tu_read_file(path, NULL);
    snprintf(buf, sizeof buf, "%s", log ? log : "(no log)");
    free(log);
    return buf;
}

/* Waits up to timeout_s for `what` in the file at path; returns whether it appeared. */
static bool log_has(const char *path, const char *what, double timeout_s)
{
    for (double t0 = now_s();;) {
        char *log = tu_read_file(path, NULL);
        bool found = log && strstr(log, what);
        free(log);
        if (found || now_s() - t0 > timeout_s)
            return found;
        usleep(20 * 1000);
    }
}

typedef struct served {
    pid_t pid;
    int http_port;
    char *log;
} served;

/* Starts `serval serve` on the default model and free ports with the extra args (NULL-ended)
 * and $SERVAL_TOKEN = env_token (unset when NULL); waits for the HTTP listener. */
static served serve_start(const char *env_token, const char *const *extra)
{
    served s = {0};
    s.log = tu_temp_path(".log");
    char *bin = tu_bin_path("serval");
    const char *argv[32] = {bin, "serve", "--model", tu_default_model(), "--grpc-port", "0",
                            "--http-port", "0", "--threads", "2"};
    int n = 10;
    for (; extra && *extra && n < 31; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    s.pid = fork();
    cr_assert(s.pid >= 0);
    if (s.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion ends the test, and the server */
        int fd = open(s.log, O_WRONLY | O_TRUNC);
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0);
        dup2(dn, 1);
        dup2(fd, 2);
        if (env_token)
            setenv("SERVAL_TOKEN", env_token, 1);
        else
            unsetenv("SERVAL_TOKEN");
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    free(bin);
    const char *line = "serval: http listening on 127.0.0.1:";
    for (double t0 = now_s(); s.http_port <= 0 && now_s() - t0 < 30;) {
        char *log = tu_read_file(s.log, NULL);
        const char *p = log ? strstr(log, line) : NULL;
        if (p)
            s.http_port = atoi(p + strlen(line));
        free(log);
        int st;
        cr_assert_eq(waitpid(s.pid, &st, WNOHANG), 0, "serval serve exited early");
        usleep(50 * 1000);
    }
    cr_assert_gt(s.http_port, 0, "no '%sPORT' line", line);
    return s;
}

/* Waits up to timeout_s for the server to exit: its exit status, 128+signal, or -1 (then it
 * is killed). */
static int serve_wait(served *s, double timeout_s)
{
    int st = 0;
    for (double t0 = now_s(); now_s() - t0 < timeout_s; usleep(10 * 1000))
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return -1;
}

static void served_free(served *s)
{
    unlink(s->log);
    free(s->log);
}

/* Connects to 127.0.0.1:port and sends a POST with a JSON body ("Connection: close"). */
static int http_post(int port, const char *path, const char *token, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect to %d", port);
    struct timeval tv = {.tv_sec = 60};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n",
                     path, strlen(body), token ? "Authorization: Bearer " : "",
                     token ? token : "", token ? "\r\n" : "");
    cr_assert_eq(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    cr_assert_eq(send(fd, body, strlen(body), MSG_NOSIGNAL), (ssize_t)strlen(body));
    return fd;
}

/* Reads what is left on fd until the server closes it (malloc'd, NUL-terminated). */
static char *read_to_close(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (ssize_t k; (k = recv(fd, buf + len, cap - len - 1, 0)) > 0;) {
        len += (size_t)k;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = 0;
    close(fd);
    return buf;
}

/* Reads a streaming response until its second SSE event: the generation is running, and
 * the engine's stats (updated after each step) count it. */
static void wait_generating(int fd)
{
    char buf[8192];
    size_t len = 0;
    while (len + 1 < sizeof buf) {
        ssize_t k = recv(fd, buf + len, sizeof buf - len - 1, 0);
        cr_assert_gt(k, 0, "the stream ended early: %.*s", (int)len, buf);
        len += (size_t)k;
        buf[len] = 0;
        const char *first = strstr(buf, "data: ");
        if (first && strstr(first + 1, "data: "))
            return;
    }
    cr_assert_fail("no events in: %s", buf);
}

/* The status code of a whole request/response. */
static int http_status(int port, const char *path, const char *token, const char *body)
{
    char *r = read_to_close(http_post(port, path, token, body));
    int status = strncmp(r, "HTTP/1.1 ", 9) ? 0 : atoi(r + 9);
    free(r);
    return status;
}

Test(serve, a_generated_token_is_printed_once_then_only_its_path, .timeout = 60)
{
    if (serve_missing())
        return;
    char *dir = tu_temp_path(".d");
    unlink(dir);
    run_result r = serve_run("--model", "/nonexistent/m.gguf", "--data-dir", dir, NULL);
    cr_assert_eq(r.rc, 1, "stderr: %s", r.err);
    char path[512];
    snprintf(path, sizeof path, "%s/token", dir);
    char *tok = tu_read_file(path, NULL);
    cr_assert_not_null(tok, "the token is kept in %s", path);
    tok[strcspn(tok, "\n")] = 0;
    cr_assert_geq(strlen(tok), 32);
    cr_assert(strstr(r.err, tok) && strstr(r.err, path),
              "the first start prints the new token and where it is kept: %s", r.err);
    rr_free(r);
    for (int i = 0; i < 2; i++) {
        r = serve_run("--model", "/nonexistent/m.gguf", "--data-dir", dir, NULL);
        cr_assert_eq(r.rc, 1, "stderr: %s", r.err);
        cr_assert_null(strstr(r.err, tok), "restart %d printed the secret again: %s", i, r.err);
        cr_assert(strstr(r.err, path), "restart %d names the token file: %s", i, r.err);
        rr_free(r);
    }
    /* A data-dir token others can read is refused with the fix. */
    cr_assert_eq(chmod(path, 0644), 0);
    r = serve_run("--model", "/nonexistent/m.gguf", "--data-dir", dir, NULL);
    char fix[600];
    snprintf(fix, sizeof fix, "chmod 600 %s", path);
    cr_assert(strstr(r.err, fix), "stderr: %s", r.err);
    cr_assert_null(strstr(r.err, tok), "%s", r.err);
    expect_clean_failure(r, "other users");
    unlink(path);
    rmdir(dir);
    free(tok);
    free(dir);
}

Test(serve, a_token_file_others_can_read_is_refused_with_the_chmod_to_run, .timeout = 60)
{
    if (serve_missing())
        return;
    char *path = tu_temp_path(".tokens");
    cr_assert_eq(tu_write_file(path, "tok-1\n", 6), 0);
    cr_assert_eq(chmod(path, 0644), 0);
    char fix[600];
    snprintf(fix, sizeof fix, "chmod 600 %s", path);
    run_result r = serve_run("--model", "/nonexistent/m.gguf", "--token-file", path, NULL);
    cr_assert(strstr(r.err, fix) && strstr(r.err, "--allow-readable-token-file"), "stderr: %s",
              r.err);
    expect_clean_failure(r, path);
    /* The opt-out gets past auth (to the missing model). */
    r = serve_run("--model", "/nonexistent/m.gguf", "--token-file", path,
                  "--allow-readable-token-file", NULL);
    expect_clean_failure(r, "cannot load model");
    cr_assert_eq(chmod(path, 0600), 0);
    r = serve_run("--model", "/nonexistent/m.gguf", "--token-file", path, NULL);
    expect_clean_failure(r, "cannot load model");
    unlink(path);
    free(path);
}

Test(serve, no_auth_on_a_network_address_warns_loudly, .timeout = 60)
{
    if (serve_missing())
        return;
    run_result r = serve_run("--model", "/nonexistent/m.gguf", "--no-auth", "--bind", "0.0.0.0",
                             NULL);
    cr_assert(strstr(r.err, "WARNING") && strstr(r.err, "--no-auth") &&
                  strstr(r.err, "0.0.0.0"),
              "stderr: %s", r.err);
    expect_clean_failure(r, "cannot load model");
    const char *loopback[] = {"127.0.0.1", "::1", "127.0.0.2"};
    for (size_t i = 0; i < 3; i++) {
        r = serve_run("--model", "/nonexistent/m.gguf", "--no-auth", "--bind", loopback[i], NULL);
        cr_assert_null(strstr(r.err, "WARNING"), "--bind %s: %s", loopback[i], r.err);
        expect_clean_failure(r, "cannot load model");
    }
}

Test(serve, tls_needs_both_files_and_cors_origins_are_checked)
{
    if (serve_missing())
        return;
    char *cert = tu_temp_path(".pem");
    run_result r = serve_run("--tls-cert", cert, NULL);
    cr_assert_eq(r.rc, 2, "stderr: %s", r.err);
    expect_clean_failure(r, "--tls-cert needs --tls-key");
    r = serve_run("--tls-key", cert, NULL);
    cr_assert_eq(r.rc, 2, "stderr: %s", r.err);
    expect_clean_failure(r, "--tls-key needs --tls-cert");
    r = serve_run("--tls-cert", cert, "--tls-key", "/nonexistent/key.pem", NULL);
    cr_assert_eq(r.rc, 2, "stderr: %s", r.err);
    expect_clean_failure(r, "--tls-key /nonexistent/key.pem");
    r = serve_run("--cors-origin", "https://a.example,,https://b.example", NULL);
    cr_assert_eq(r.rc, 2, "stderr: %s", r.err);
    expect_clean_failure(r, "--cors-origin");
    r = serve_run("--max-inflight-per-token", "-1", NULL);
    expect_clean_failure(r, "--max-inflight-per-token");
    unlink(cert);
    free(cert);
}

Test(serve, the_token_in_SERVAL_TOKEN_is_accepted_and_not_printed, .timeout = 90)
{
    if (serve_missing())
        return;
    const char *const extra[] = {"--quiet", NULL};
    served s = serve_start("env-token-123", extra);
    const char *body = "{\"prompt\":\"def f(x):\",\"max_tokens\":2,\"temperature\":0}";
    cr_assert_eq(http_status(s.http_port, "/v1/completions", "env-token-123", body), 200);
    cr_assert_eq(http_status(s.http_port, "/v1/completions", "other", body), 401);
    cr_assert_eq(http_status(s.http_port, "/v1/completions", NULL, body), 401);
    kill(s.pid, SIGTERM);
    cr_assert_eq(serve_wait(&s, 15), 0);
    char *log = tu_read_file(s.log, NULL);
    cr_assert(strstr(log, "$SERVAL_TOKEN"), "the log says where the token came from: %s", log);
    cr_assert_null(strstr(log, "env-token-123"), "the secret is not logged: %s", log);
    free(log);
    served_free(&s);

    /* --token wins over the environment. */
    const char *const flag[] = {"--quiet", "--token", "flag-token", NULL};
    s = serve_start("env-token-123", flag);
    cr_assert_eq(http_status(s.http_port, "/v1/completions", "flag-token", body), 200);
    cr_assert_eq(http_status(s.http_port, "/v1/completions", "env-token-123", body), 401);
    kill(s.pid, SIGINT); /* Ctrl-C stops it the same way */
    cr_assert_eq(serve_wait(&s, 15), 0);
    cr_assert(log_has(s.log, "serval: SIGINT: stopped accepting", 0), "%s", log_text(s.log));
    served_free(&s);
}

/* A counting prompt keeps greedy decoding going to max_tokens. */
#define STREAM_BODY(n)                                                                     \
    "{\"prompt\":\"1, 2, 3, 4,\",\"max_tokens\":" n ",\"temperature\":0,\"stream\":true}"

Test(serve, sigterm_lets_a_stream_finish_refuses_new_requests_then_exits_0, .timeout = 120)
{
    if (serve_missing())
        return;
    const char *const extra[] = {"--token", "t", "--drain-ms", "60000", NULL};
    served s = serve_start(NULL, extra);
    int fd = http_post(s.http_port, "/v1/completions", "t", STREAM_BODY("120"));
    wait_generating(fd);
    kill(s.pid, SIGTERM);
    cr_assert(log_has(s.log, "draining 1 in flight, up to 60000 ms", 10), "no drain line: %s",
              log_text(s.log));
    cr_assert_eq(http_status(s.http_port, "/v1/completions", "t",
                             "{\"prompt\":\"x\",\"max_tokens\":2}"),
                 503, "a new request during the drain is refused");
    char *rest = read_to_close(fd);
    cr_assert(strstr(rest, "\"finish_reason\":\"length\"") && strstr(rest, "[DONE]"),
              "the stream in flight ran to its end: ...%s",
              rest + (strlen(rest) > 400 ? strlen(rest) - 400 : 0));
    free(rest);
    cr_assert_eq(serve_wait(&s, 20), 0);
    cr_assert(log_has(s.log, "serval: drained", 0), "no 'drained' line");
    cr_assert(log_has(s.log, "serval: stopped", 0));
    served_free(&s);
}

Test(serve, a_drain_that_runs_out_of_time_cancels_what_is_left_and_exits_0, .timeout = 120)
{
    if (serve_missing())
        return;
    const char *const extra[] = {"--token", "t", "--drain-ms", "500", NULL};
    served s = serve_start(NULL, extra);
    int fd = http_post(s.http_port, "/v1/completions", "t", STREAM_BODY("4000"));
    wait_generating(fd);
    double t0 = now_s();
    kill(s.pid, SIGTERM);
    int rc = serve_wait(&s, 10);
    double took = now_s() - t0;
    cr_assert_eq(rc, 0, "exit status %d: %s", rc, log_text(s.log));
    cr_assert(took > 0.45 && took < 3.0, "a 500 ms drain took %.2f s", took);
    cr_assert(log_has(s.log, "serval: drain timed out after 500 ms, cancelling 1", 0), "%s",
              log_text(s.log));
    char *rest = read_to_close(fd);
    cr_assert_null(strstr(rest, "\"finish_reason\":\"length\""), "4000 tokens in 0.5 s?");
    free(rest);
    served_free(&s);
}

#define MAX_TASKS 256

/* The thread ids of process pid; returns how many (at most MAX_TASKS). */
static int list_tasks(pid_t pid, int *tids)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "the server is gone");
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < MAX_TASKS;)
        if (e->d_name[0] != '.')
            tids[n++] = atoi(e->d_name);
    closedir(d);
    return n;
}

/* CPU time (user + system, clock ticks) of pid's threads that are not among old[0, n_old). */
static long new_threads_ticks(pid_t pid, const int *old, int n_old)
{
    int tids[MAX_TASKS];
    int n = list_tasks(pid, tids);
    long sum = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int k = 0; k < n_old; k++)
            seen = seen || old[k] == tids[i];
        char path[96];
        snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, tids[i]);
        char *st = seen ? NULL : tu_read_file(path, NULL);
        const char *p = st ? strrchr(st, ')') : NULL; /* the name may hold spaces */
        for (int field = 2; p && field < 14; field++)
            p = strchr(p + 1, ' ');
        if (p)
            sum += atol(p + 1) + atol(strchr(p + 1, ' ') + 1); /* utime, stime */
        free(st);
    }
    return sum;
}

Test(serve, a_second_sigterm_ends_a_long_drain_at_once, .timeout = 120)
{
    if (serve_missing())
        return;
    const char *const extra[] = {"--token", "t", "--drain-ms", "600000", NULL};
    served s = serve_start(NULL, extra);
    int fd = http_post(s.http_port, "/v1/completions", "t", STREAM_BODY("4000"));
    wait_generating(fd);
    int before[MAX_TASKS];
    int n_before = list_tasks(s.pid, before);
    kill(s.pid, SIGTERM);
    cr_assert(log_has(s.log, "draining 1 in flight", 10), "no drain line: %s", log_text(s.log));
    /* Waiting costs nothing: the threads the drain starts do not spin (a watchdog once did,
     * on a condition variable with the wrong clock, and slowed the generations in flight
     * 4-fold). */
    long cpu0 = new_threads_ticks(s.pid, before, n_before);
    usleep(1000 * 1000);
    long cpu1 = new_threads_ticks(s.pid, before, n_before), hz = sysconf(_SC_CLK_TCK);
    cr_assert_lt(cpu1 - cpu0, hz / 20, "the drain's threads used %ld ticks of CPU in 1 s",
                 cpu1 - cpu0);
    double t0 = now_s();
    kill(s.pid, SIGTERM);
    int rc = serve_wait(&s, 10);
    double took = now_s() - t0;
    cr_assert_eq(rc, 0, "exit status %d", rc);
    cr_assert_lt(took, 3.0, "the second signal took %.2f s to end the process", took);
    cr_assert(log_has(s.log, "second signal (SIGTERM): ending drain now", 0));
    free(read_to_close(fd)); /* the stream ended with the process */
    served_free(&s);
}

/* The cached_tokens of the n-th logged HTTP generation (0-based), waiting for its line. */
static int logged_cached_tokens(const char *log_path, int n)
{
    for (double t0 = now_s(); now_s() - t0 < 10; usleep(20 * 1000)) {
        char *log = tu_read_file(log_path, NULL);
        const char *p = log;
        for (int i = 0; p && (p = strstr(p, "cached_tokens=")) && i < n; i++)
            p++;
        int v = p ? atoi(p + strlen("cached_tokens=")) : -1;
        free(log);
        if (p)
            return v;
    }
    cr_assert_fail("no request line %d in: %s", n, log_text(log_path));
    return -1;
}

/* Two tokens send the same long prompt: with --prefix-cache-per-token the second token reuses
 * nothing of the first one's cache (it cannot learn from timing what the first sent), while
 * each token still reuses its own; without the flag the second token reuses the first's. */
Test(serve, prefix_cache_per_token_keeps_tokens_apart, .timeout = 120)
{
    if (serve_missing())
        return;
    const char *body = "{\"prompt\":\"def quicksort(items):\\n    if len(items) <= 1:\\n        "
                       "return items\\n    pivot = items[len(items) // 2]\\n    left = [x for x "
                       "in items if x < pivot]\\n    middle = [x for x in items if x == pivot]"
                       "\\n\",\"max_tokens\":1,\"temperature\":0}";
    for (int per_token = 0; per_token < 2; per_token++) {
        const char *const extra[] = {"--token", "alice", "--token", "bob",
                                     per_token ? "--prefix-cache-per-token" : NULL, NULL};
        served s = serve_start(NULL, extra);
        cr_assert_eq(http_status(s.http_port, "/v1/completions", "alice", body), 200);
        cr_assert_eq(logged_cached_tokens(s.log, 0), 0, "a cold cache");
        cr_assert_eq(http_status(s.http_port, "/v1/completions", "bob", body), 200);
        int bob = logged_cached_tokens(s.log, 1);
        cr_assert_eq(http_status(s.http_port, "/v1/completions", "alice", body), 200);
        int alice_again = logged_cached_tokens(s.log, 2);
        cr_assert_geq(alice_again, 32, "a token reuses its own prompt's blocks: %s",
                      log_text(s.log));
        if (per_token)
            cr_assert_eq(bob, 0, "bob reused alice's cache: %s", log_text(s.log));
        else
            cr_assert_geq(bob, 32, "by default tokens share the cache: %s", log_text(s.log));
        kill(s.pid, SIGTERM);
        cr_assert_eq(serve_wait(&s, 15), 0);
        served_free(&s);
    }
}
