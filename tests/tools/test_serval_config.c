/* test_serval_config.c — `serval serve`'s settings from a TOML file, SERVAL_* variables and
 * flags (cli/config.h): the precedence, --print-config's values and sources, the exact message
 * of each error class, and `serval doctor` on a good and a bad deployment, all against the real
 * binary. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

typedef struct run_result {
    int rc;
    char *out, *err;
} run_result;

/* Runs `serval <args...>` (NULL-terminated) to its exit. */
static run_result serval(const char *first, ...)
{
    char *argv[32];
    int n = 0;
    argv[n++] = tu_bin_path("serval");
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    run_result r;
    r.rc = tu_run(argv, &r.out, &r.err, 60);
    free(argv[0]);
    return r;
}

static void rr_free(run_result r)
{
    free(r.out);
    free(r.err);
}

/* $SERVAL_MODEL as it was before setup cleared it ("" when unset: tu_default_model's then). */
static char default_model[4096];

/* A fresh environment for each test (Criterion forks one process per test), and a skip in
 * builds without `serve` (engine-only: no config files either). $SERVAL_MODEL is how the tests
 * find the model, and it would also override the files' `model`: it is read, then cleared. */
static void setup(void)
{
    const char *m = getenv("SERVAL_MODEL");
    snprintf(default_model, sizeof default_model, "%s", m ? m : "");
    static const char *const vars[] = {"SERVAL_MODEL", "SERVAL_CONFIG", "SERVAL_TOKEN", "SERVAL_GRPC_PORT",
                                       "SERVAL_HTTP_PORT", "SERVAL_THREADS", "SERVAL_DATA_DIR",
                                       "SERVAL_NO_AUTH", "SERVAL_DRAIN_MS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    run_result r = serval("serve", "--help", NULL);
    bool missing = strstr(r.err, "not built in") != NULL;
    rr_free(r);
    if (missing) cr_skip_test("engine-only build: no `serve`, no config files");
}

/* Writes text to a new temp .toml file; the path is malloc'd. */
static char *toml_file(const char *text)
{
    char *p = tu_temp_path(".toml");
    cr_assert_eq(tu_write_file(p, text, strlen(text)), 0);
    return p;
}

/* The line of out that starts with prefix (static buffer), or "" when none does. */
static const char *line_of(const char *out, const char *prefix)
{
    static char buf[512];
    buf[0] = '\0';
    for (const char *p = out; p && *p;) {
        size_t n = strcspn(p, "\n");
        if (!strncmp(p, prefix, strlen(prefix))) {
            snprintf(buf, sizeof buf, "%.*s", (int)n, p);
            break;
        }
        p += n + (p[n] == '\n');
    }
    return buf;
}

/* Asserts that print-config's line for key holds the value and names the source. */
static void expect_setting(const char *out, const char *value_part, const char *source)
{
    const char *l = line_of(out, value_part);
    cr_assert(l[0], "no line starting '%s' in:\n%s", value_part, out);
    cr_assert(strstr(l, source), "the line '%s' should name its source '%s'", l, source);
}

/* Runs `serval serve --config <file with text>` and expects exit 2 with exactly msg on stderr,
 * where %s in msg stands for the file's path. */
static void expect_config_error(const char *text, const char *msg)
{
    char *path = toml_file(text);
    run_result r = serval("serve", "--config", path, "--print-config", NULL);
    char want[1024];
    snprintf(want, sizeof want, msg, path);
    cr_assert_eq(r.rc, 2, "stderr: %s", r.err);
    cr_assert_str_eq(r.err, want);
    cr_assert_str_eq(r.out, "", "nothing is printed on an error");
    rr_free(r);
    unlink(path);
    free(path);
}

TestSuite(config, .init = setup, .timeout = 60);

Test(config, flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_defaults)
{
    char *path = toml_file("# deployment\ngrpc_port = 9000\nhttp_port = 9001\nthreads = 3\n");
    setenv("SERVAL_HTTP_PORT", "7001", 1);
    setenv("SERVAL_THREADS", "2", 1);
    run_result r = serval("serve", "--config", path, "--threads", "1", "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "stderr: %s", r.err);
    char src[512];
    snprintf(src, sizeof src, "# file %s:2", path);
    expect_setting(r.out, "grpc_port = 9000 ", src);
    expect_setting(r.out, "http_port = 7001 ", "# env SERVAL_HTTP_PORT");
    expect_setting(r.out, "threads = 1 ", "# flag --threads");
    expect_setting(r.out, "drain_ms = 10000 ", "# default");
    expect_setting(r.out, "# max_running ", "# default: not set");
    snprintf(src, sizeof src, "# config file: %s", path);
    cr_assert(strstr(r.out, src), "the file read is named: %s", r.out);
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, print_config_shows_every_serve_setting_and_never_a_token)
{
    char *path = toml_file("token = [\"s3cret-one\", \"s3cret-two\"]\nmetrics_token = \"m3trics\"\n"
                           "cors_origin = [\"https://a.example\", \"https://b.example\"]\n"
                           "quiet = true\nbackend = \"cpu\"\n");
    run_result r = serval("serve", "--config", path, "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "stderr: %s", r.err);
    cr_assert_null(strstr(r.out, "s3cret"), "a token was printed: %s", r.out);
    cr_assert_null(strstr(r.out, "m3trics"), "the metrics token was printed: %s", r.out);
    expect_setting(r.out, "token = [\"(secret)\", \"(secret)\"]", ":1");
    expect_setting(r.out, "cors_origin = [\"https://a.example\", \"https://b.example\"]", ":3");
    expect_setting(r.out, "quiet = true ", ":4");
    expect_setting(r.out, "backend = \"cpu\" ", ":5");
    /* every flag of --help but --config/--print-config/--help has a line */
    static const char *const keys[] = {"model", "bind", "token_file", "data_dir", "no_auth",
                                       "kv_mb", "cuda_fp16", "no_cuda_graphs", "max_waiting",
                                       "max_inflight", "tls_cert", "tls_key", "http_rate_limit",
                                       "http_rate_burst", "per_ip_connections",
                                       "generation_timeout_ms", "max_streams_per_connection",
                                       "prefix_cache_per_token", "allow_readable_token_file"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "\n%s ", keys[i]);
        snprintf(b, sizeof b, "\n# %s ", keys[i]);
        cr_assert(strstr(r.out, a) || strstr(r.out, b), "no line for %s in:\n%s", keys[i], r.out);
    }
    cr_assert_null(strstr(r.out, "print_config"), "--print-config is not a setting");
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, print_config_says_when_SERVAL_TOKEN_is_the_token_and_never_prints_it)
{
    setenv("SERVAL_TOKEN", "env-s3cret", 1);
    run_result r = serval("serve", "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "# and the token in $SERVAL_TOKEN"), "%s", r.out);
    cr_assert_null(strstr(r.out, "env-s3cret"), "the token was printed: %s", r.out);
    rr_free(r);
}

Test(config, an_unknown_key_names_the_file_line_and_key)
{
    expect_config_error("grpc_port = 1\n\ngrpc_prot = 2\n",
                        "serval serve: %s:3: unknown key 'grpc_prot' (a key is a flag of `serval "
                        "serve --help` without its '--', with '_' for '-')\n");
    expect_config_error("[http]\nport = 1\n", "serval serve: %s:1: unknown table 'http' (settings "
                        "are top-level keys, written before any [table])\n");
}

Test(config, a_value_of_the_wrong_type_names_the_file_line_and_key)
{
    expect_config_error("\ngrpc_port = \"9000\"\n",
                        "serval serve: %s:2: key 'grpc_port' expects an integer, got a string\n");
    expect_config_error("quiet = 1\n",
                        "serval serve: %s:1: key 'quiet' expects true or false, got an integer\n");
    expect_config_error("token = [1, 2]\n", "serval serve: %s:1: key 'token' expects a string or "
                        "an array of strings, got an array\n");
}

Test(config, a_value_out_of_range_names_the_file_line_and_key)
{
    expect_config_error("bind = \"0.0.0.0\"\nhttp_port = 70000\n",
                        "serval serve: %s:2: key 'http_port' expects an integer in [0, 65535], "
                        "got '70000'\n");
    expect_config_error("backend = \"tpu\"\n",
                        "serval serve: %s:1: key 'backend' expects one of cpu|cuda, got 'tpu'\n");
}

Test(config, a_value_a_flag_overrides_is_still_checked)
{
    char *path = toml_file("threads = 0\n");
    run_result r = serval("serve", "--config", path, "--threads", "2", "--print-config", NULL);
    cr_assert_eq(r.rc, 2, "a bad file is an error even where a flag wins: %s", r.out);
    cr_assert(strstr(r.err, "key 'threads' expects an integer in [1, 256], got '0'"), "%s", r.err);
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, a_file_that_is_not_toml_is_an_error_with_its_line_and_column)
{
    expect_config_error("grpc_port = 1\nhttp_port = = 2\n", "serval serve: %s:2:13: Error while "
                        "parsing value: could not determine value type\n");
}

Test(config, a_missing_config_file_is_an_error_whether_named_by_flag_or_environment)
{
    run_result r = serval("serve", "--config", "/nonexistent/serval.toml", "--print-config", NULL);
    cr_assert_eq(r.rc, 2);
    cr_assert_str_eq(r.err, "serval serve: --config /nonexistent/serval.toml: No such file or "
                            "directory\n");
    rr_free(r);
    setenv("SERVAL_CONFIG", "/nonexistent/env.toml", 1);
    r = serval("serve", "--print-config", NULL);
    cr_assert_eq(r.rc, 2);
    cr_assert_str_eq(r.err, "serval serve: $SERVAL_CONFIG /nonexistent/env.toml: No such file or "
                            "directory\n");
    rr_free(r);
}

Test(config, an_environment_variable_overrides_the_file_and_bad_ones_are_named)
{
    char *path = toml_file("no_auth = false\ndrain_ms = 5\n");
    setenv("SERVAL_CONFIG", path, 1);
    setenv("SERVAL_NO_AUTH", "yes", 1);
    run_result r = serval("serve", "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "stderr: %s", r.err);
    expect_setting(r.out, "no_auth = true ", "# env SERVAL_NO_AUTH");
    expect_setting(r.out, "drain_ms = 5 ", ":2");
    rr_free(r);
    setenv("SERVAL_DRAIN_MS", "soon", 1);
    r = serval("serve", "--print-config", NULL);
    cr_assert_eq(r.rc, 2);
    cr_assert_str_eq(r.err, "serval serve: $SERVAL_DRAIN_MS expects an integer in [0, 3600000], "
                            "got 'soon'\n");
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, serve_runs_with_the_settings_of_the_file)
{
    char *path = toml_file("model = \"/nonexistent/model.gguf\"\nno_auth = true\n"
                           "grpc_port = 0\nhttp_port = 0\n");
    run_result r = serval("serve", "--config", path, NULL);
    cr_assert_eq(r.rc, 1, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "cannot load model '/nonexistent/model.gguf'"), "%s", r.err);
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, help_names_the_config_file_and_the_environment)
{
    run_result r = serval("serve", "--help", NULL);
    cr_assert_eq(r.rc, 0);
    cr_assert(strstr(r.out, "--config PATH") && strstr(r.out, "--print-config") &&
              strstr(r.out, "/etc/serval/serval.toml") && strstr(r.out, "SERVAL_GRPC_PORT"),
              "%s", r.out);
    rr_free(r);
    r = serval("--help", NULL);
    cr_assert(strstr(r.out, "doctor"), "%s", r.out);
    rr_free(r);
}

/* ---- serval doctor --------------------------------------------------------------------- */

/* A deployment in a fresh directory: data dir (0700), a token file of the given mode, and a
 * config with the given ports. Returns the config's path (malloc'd). */
static char *deployment(mode_t token_mode, int grpc_port)
{
    char dir[] = "/tmp/serval-doctor-XXXXXX";
    cr_assert(mkdtemp(dir));
    char tokens[128], conf[128], text[8192];
    const char *model = default_model[0] ? default_model : tu_default_model();
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    cr_assert_eq(tu_write_file(tokens, "a-token\n", 8), 0);
    chmod(tokens, token_mode);
    chmod(dir, 0700);
    snprintf(conf, sizeof conf, "%s/serval.toml", dir);
    snprintf(text, sizeof text, "model = \"%s\"\ngrpc_port = %d\nhttp_port = 0\n"
             "token_file = \"%s\"\ndata_dir = \"%s\"\n", model, grpc_port, tokens, dir);
    cr_assert_eq(tu_write_file(conf, text, strlen(text)), 0);
    return strdup(conf);
}

Test(config, doctor_passes_a_good_deployment)
{
    char *conf = deployment(0600, 0);
    run_result r = serval("doctor", "--config", conf, NULL);
    cr_assert_eq(r.rc, 0, "stdout:\n%s\nstderr: %s", r.out, r.err);
    cr_assert_null(strstr(r.out, "FIX"), "%s", r.out);
    cr_assert(strstr(r.out, "doctor: ready to serve"), "%s", r.out);
    cr_assert(strstr(r.out, " loads: "), "the model was loaded: %s", r.out);
    cr_assert(strstr(r.out, "is readable by its owner only (mode 0600)"), "%s", r.out);
    cr_assert(strstr(r.out, "  cpu ") && strstr(r.out, "  memory ") && strstr(r.out, "  gpu "),
              "%s", r.out);
    rr_free(r);
    free(conf);
}

Test(config, doctor_says_how_to_fix_a_readable_token_file_and_a_taken_port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(s, 1), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    int port = ntohs(a.sin_port);
    char *conf = deployment(0644, port);
    run_result r = serval("doctor", "--config", conf, NULL);
    cr_assert_eq(r.rc, 1, "stdout:\n%s", r.out);
    char want[256];
    snprintf(want, sizeof want, "FIX   grpc port  port %d on 127.0.0.1 is taken", port);
    cr_assert(strstr(r.out, want), "no '%s' in:\n%s", want, r.out);
    cr_assert(strstr(r.out, "has mode 0644: group or others can read it: chmod 600 "), "%s", r.out);
    cr_assert(strstr(r.out, "doctor: 2 things to fix"), "%s", r.out);
    rr_free(r);
    close(s);
    free(conf);
}

Test(config, doctor_reports_a_missing_model_and_a_bad_config)
{
    run_result r = serval("doctor", "--model", "/nonexistent/m.gguf", NULL);
    cr_assert_eq(r.rc, 1, "%s", r.out);
    cr_assert(strstr(r.out, "FIX   model      /nonexistent/m.gguf: No such file or directory"),
              "%s", r.out);
    rr_free(r);
    char *path = toml_file("grpc_port = -1\n");
    r = serval("doctor", "--config", path, NULL);
    cr_assert_eq(r.rc, 1, "%s", r.out);
    cr_assert(strstr(r.err, "key 'grpc_port' expects an integer in [0, 65535], got '-1'"), "%s",
              r.err);
    cr_assert(strstr(r.out, "FIX   settings"), "%s", r.out);
    rr_free(r);
    unlink(path);
    free(path);
}

Test(config, doctor_names_a_missing_repository_and_the_embedding_model_repos_need)
{
    char *conf = deployment(0600, 0);
    FILE *f = fopen(conf, "a");
    cr_assert_not_null(f);
    fprintf(f, "repos = [\"/nonexistent/app=https://example.com/app.git\", \"%s\"]\n"
               "embedding_model = \"/nonexistent/embed.gguf\"\n", "/tmp");
    fclose(f);
    run_result r = serval("doctor", "--config", conf, NULL);
    cr_assert_eq(r.rc, 1, "stdout:\n%s", r.out);
    cr_assert(strstr(r.out, "FIX   repository /nonexistent/app: No such file or directory"), "%s",
              r.out);
    cr_assert(strstr(r.out, "ok    repository /tmp (its path): a folder"), "%s", r.out);
    cr_assert(strstr(r.out, "FIX   embedding  /nonexistent/embed.gguf: No such file or directory"),
              "%s", r.out);
    cr_assert(strstr(r.out, "doctor: 2 things to fix"), "%s", r.out);
    rr_free(r);
    free(conf);
}

/* ---- docs/serval.toml ---------------------------------------------------------------------- */

Test(config, the_example_config_is_valid_and_documents_every_setting)
{
    char *src = tu_source_path("docs/serval.toml");
    char *text = tu_read_file(src, NULL);
    cr_assert(text, "no docs/serval.toml");
    /* Uncomment every "# key = value" line but the TLS files (which must exist): what remains
     * is every setting, set from the file. */
    size_t cap = strlen(text) + 1, at = 0;
    char *all = malloc(cap);
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        const char *body = p;
        size_t key = 0;
        if (p[0] == '#' && p[1] == ' ')
            key = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789_");
        if (key && !strncmp(p + 2 + key, " = ", 3) && strncmp(p + 2, "tls_", 4))
            body = p + 2;
        memcpy(all + at, body, n - (size_t)(body - p));
        at += n - (size_t)(body - p);
        all[at++] = '\n';
        p += n + (p[n] == '\n');
    }
    all[at] = '\0';
    char *path = toml_file(all);
    run_result r = serval("serve", "--config", src, "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "docs/serval.toml as shipped: %s", r.err);
    rr_free(r);
    r = serval("serve", "--config", path, "--print-config", NULL);
    cr_assert_eq(r.rc, 0, "docs/serval.toml uncommented: %s", r.err);
    int line = 0;
    for (const char *p = r.out; *p; line++) {
        size_t n = strcspn(p, "\n");
        bool header = line < 2, tls = !strncmp(p, "# tls_", 6);
        cr_assert(header || tls || memmem(p, n, "# file ", 7),
                  "a setting docs/serval.toml does not show: %.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
    cr_assert_gt(line, 30, "print-config printed too little: %s", r.out);
    rr_free(r);
    unlink(path);
    free(path);
    free(all);
    free(text);
    free(src);
}
