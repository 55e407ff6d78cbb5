/* test_reload.c — SIGHUP: a running `serval serve` given a new `repos` list in its config file
 * indexes an added repository without a restart (search finds its code, the status page lists
 * it), says how many were added and removed, and a server started without any repository names
 * `repo` among the settings only a restart applies; new limits (body size, per-token cap) apply
 * at once, and turning the per-token cap off is named as needing a restart while the other
 * limits changed with it still apply. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_test_util.h"
#include "testutil.h"

/* Polls the server's log until it holds `what` (the text from there on; NULL after 90 s). */
static char *log_wait(const server *s, const char *what)
{
    for (int i = 0; i < 900; i++) {
        char *log = tu_read_file(s->log_path, NULL);
        const char *p = log ? strstr(log, what) : NULL;
        if (p) {
            char *out = strdup(p);
            free(log);
            return out;
        }
        free(log);
        usleep(100 * 1000);
    }
    return NULL;
}

/* The n-th (from 1) "serval: SIGHUP: " line of the server's log, up to its end of line
 * (NULL after 90 s). */
static char *sighup_line(const server *s, int n)
{
    for (int i = 0; i < 900; i++) {
        char *log = tu_read_file(s->log_path, NULL);
        const char *p = log;
        for (int k = 0; k < n && p; k++)
            p = strstr(k ? p + 1 : p, "serval: SIGHUP: ");
        char *line = p ? strndup(p, strcspn(p, "\n")) : NULL;
        free(log);
        if (line) return line;
        usleep(100 * 1000);
    }
    return NULL;
}

/* A folder (not a git work tree: the indexer walks it) holding one file. */
static char *make_repo(const char *file, const char *code)
{
    char *dir = tu_temp_path(".repo");
    unlink(dir);
    cr_assert_eq(mkdir(dir, 0700), 0);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    cr_assert_eq(tu_write_file(path, code, strlen(code)), 0);
    return dir;
}

static void write_config(const char *path, const char *repo_a, const char *repo_b)
{
    char text[3000];
    snprintf(text, sizeof text, "repos = [%s%s%s%s%s%s%s]\n", repo_a ? "\"" : "",
             repo_a ? repo_a : "", repo_a ? "=https://example.com/a.git\"" : "",
             repo_a && repo_b ? ", " : "", repo_b ? "\"" : "", repo_b ? repo_b : "",
             repo_b ? "=https://example.com/b.git\"" : "");
    cr_assert_eq(tu_write_file(path, text, strlen(text)), 0);
}

/* The first hit's git_url for a BM25 search of `query` ("" when none). */
static void first_hit(int port, const char *query, char *url, size_t cap)
{
    char body[256];
    snprintf(body, sizeof body, "{\"query\":\"%s\",\"mode\":\"bm25\"}", query);
    tu_http_resp r = request(port, "POST", "/v1beta/search", TOKEN, body);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    const char *u = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "hits"), 0), "git_url"));
    snprintf(url, cap, "%s", u ? u : "");
    json_decref(j);
    tu_http_resp_free(&r);
}

Test(reload, sighup_indexes_an_added_repository_and_says_what_was_removed, .timeout = 240)
{
    struct stat sb;
    if (stat(SERVAL_DEFAULT_EMBED_MODEL, &sb) != 0)
        cr_skip_test("no embedding model at %s (tools/setup.sh converts it)",
                     SERVAL_DEFAULT_EMBED_MODEL);
    char *a = make_repo("ledger.py", "def settle_ledger_balance(entries):\n"
                                     "    return sum(e.amount for e in entries)\n");
    char *b = make_repo("weather.py", "def forecast_rainfall_tomorrow(station):\n"
                                      "    return station.pressure < 1000\n");
    char *conf = tu_temp_path(".toml");
    write_config(conf, a, NULL);
    const char *extra[] = {"--config", conf, NULL};
    server s = server_start_log(extra, false);
    char *seen = log_wait(&s, "(https://example.com/a.git):");
    cr_assert_not_null(seen, "the first repository is indexed at start");
    free(seen);
    char url[256];
    first_hit(s.port, "forecast_rainfall_tomorrow", url, sizeof url);
    cr_assert_str_eq(url, "", "b is not indexed yet");

    write_config(conf, a, b);
    kill(s.pid, SIGHUP);
    char *line = log_wait(&s, "serval: SIGHUP: ");
    cr_assert_not_null(line);
    line[strcspn(line, "\n")] = '\0';
    cr_assert(strstr(line, "repos: 2 indexed every 300 s (1 added, 0 removed)"), "%s", line);
    cr_assert_null(strstr(line, "ignored"), "nothing needs a restart: %s", line);
    free(line);
    line = NULL;
    seen = log_wait(&s, "(https://example.com/b.git):");
    cr_assert_not_null(seen, "the added repository is indexed without a restart");
    free(seen);
    first_hit(s.port, "forecast_rainfall_tomorrow", url, sizeof url);
    cr_assert_str_eq(url, "https://example.com/b.git", "search finds the added repository's code");
    tu_http_resp r = request(s.port, "GET", "/v1/status", TOKEN, NULL);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *st = json_loads(r.body, 0, NULL);
    json_t *ix = json_object_get(st, "index");
    cr_assert_eq(json_integer_value(json_object_get(ix, "repositories")), 2, "%s", r.body);
    cr_assert_geq(json_integer_value(json_object_get(ix, "files")), 2, "%s", r.body);
    /* each repository with its freshness: both indexed, one file each, a time and an age */
    json_t *repos = json_object_get(st, "repositories");
    cr_assert_eq(json_array_size(repos), 2, "%s", r.body);
    for (size_t i = 0; i < 2; i++) {
        json_t *rp = json_array_get(repos, i);
        const char *name = json_string_value(json_object_get(rp, "name"));
        cr_assert_str_eq(name, i ? "https://example.com/b.git" : "https://example.com/a.git");
        cr_assert_eq(json_integer_value(json_object_get(rp, "files")), 1, "%s", r.body);
        const char *at = json_string_value(json_object_get(rp, "indexed_at"));
        cr_assert(at && strlen(at) == 20 && at[19] == 'Z', "an ISO time: %s", r.body);
        cr_assert_geq(json_integer_value(json_object_get(rp, "age_s")), 0, "%s", r.body);
    }
    json_decref(st);
    tu_http_resp_free(&r);

    write_config(conf, NULL, b);
    kill(s.pid, SIGHUP);
    line = sighup_line(&s, 2);
    cr_assert_not_null(line);
    cr_assert(strstr(line, "repos: 1 indexed every 300 s (0 added, 1 removed; a removed "
                           "repository's files stay searchable"), "%s", line);
    free(line);
    cr_assert_eq(tu_server_stop(&s), 0);
    free(a), free(b), free(conf);
}

Test(reload, a_server_started_without_repositories_says_repos_need_a_restart)
{
    char *conf = tu_temp_path(".toml");
    write_config(conf, NULL, NULL);
    const char *extra[] = {"--config", conf, NULL};
    server s = server_start_log(extra, false);
    char *dir = tu_temp_path(".repo");
    write_config(conf, dir, NULL);
    kill(s.pid, SIGHUP);
    char *line = log_wait(&s, "serval: SIGHUP: ");
    cr_assert_not_null(line);
    line[strcspn(line, "\n")] = '\0';
    cr_assert(strstr(line, "ignored (a restart applies them): repo"), "%s", line);
    free(line);
    cr_assert_eq(tu_server_stop(&s), 0);
    free(dir), free(conf);
}

/* A completion body of about `kb` KiB (a long prompt). */
static char *big_body(int kb)
{
    size_t n = (size_t)kb << 10;
    char *b = malloc(n + 64);
    cr_assert_not_null(b);
    int at = snprintf(b, 64, "{\"max_tokens\":1,\"prompt\":\"");
    memset(b + at, 'x', n);
    strcpy(b + at + n, "\"}");
    return b;
}

/* The limits both tests start from: a 100 KiB body is over them. */
static const char SMALL_LIMITS[] = "http_max_body_kb = 64\nmax_inflight_per_token = 16\n";

/* The HTTP status of a completion request with `body`. */
static int completion_status(const server *s, const char *body)
{
    tu_http_resp r = request(s->port, "POST", "/v1/completions", TOKEN, body);
    int status = r.status;
    tu_http_resp_free(&r);
    return status;
}

/* A server reading its settings from conf, which holds SMALL_LIMITS; body (100 KiB) is refused. */
static server start_with_small_limits(const char *conf, const char *body)
{
    cr_assert_eq(tu_write_file(conf, SMALL_LIMITS, strlen(SMALL_LIMITS)), 0);
    const char *extra[] = {"--config", conf, NULL};
    server s = server_start_log(extra, false);
    cr_assert_eq(completion_status(&s, body), 413, "100 KiB over a 64 KiB limit");
    return s;
}

/* Writes `settings` to conf, sends SIGHUP and returns the server's n-th SIGHUP line. */
static char *reload_with(const server *s, const char *conf, const char *settings, int n)
{
    cr_assert_eq(tu_write_file(conf, settings, strlen(settings)), 0);
    kill(s->pid, SIGHUP);
    char *line = sighup_line(s, n);
    cr_assert_not_null(line);
    return line;
}

Test(reload, sighup_changes_the_body_limit_and_the_per_token_cap_without_a_restart,
     .timeout = 120)
{
    char *conf = tu_temp_path(".toml");
    char *body = big_body(100);
    server s = start_with_small_limits(conf, body);

    char *line = reload_with(&s, conf, "http_max_body_kb = 256\nmax_inflight_per_token = 4\n", 1);
    cr_assert(strstr(line, "max_inflight_per_token 16 -> 4") &&
                  strstr(line, "http_max_body_kb 64 -> 256"),
              "the line says what changed: %s", line);
    cr_assert_null(strstr(line, "ignored"), "nothing needs a restart: %s", line);
    free(line);
    cr_assert_neq(completion_status(&s, body), 413, "the new limit applies");

    /* turning the per-token cap off is for a restart: named, not applied */
    line = reload_with(&s, conf, "http_max_body_kb = 256\nmax_inflight_per_token = 0\n", 2);
    cr_assert(strstr(line, "ignored (a restart applies them): max_inflight_per_token"), "%s",
              line);
    free(line);
    free(body);
    cr_assert_eq(tu_server_stop(&s), 0);
    free(conf);
}

/* Turning the per-token cap off needs a restart, but the body limit and the generation timeout
 * changed in the same reload still apply (they used to wait for the restart with it), and the
 * cap keeps its value: setting it back to that value later is no change. */
Test(reload, turning_the_per_token_cap_off_still_applies_the_other_limits, .timeout = 120)
{
    char *conf = tu_temp_path(".toml");
    char *body = big_body(100);
    server s = start_with_small_limits(conf, body);

    char *line = reload_with(&s, conf, "http_max_body_kb = 256\nmax_inflight_per_token = 0\n"
                                       "generation_timeout_ms = 600000\n", 1);
    cr_assert(strstr(line, "http_max_body_kb 64 -> 256") &&
                  strstr(line, "generation_timeout_ms 0 -> 600000"),
              "the other limits apply: %s", line);
    cr_assert_null(strstr(line, "max_inflight_per_token 16 ->"), "the cap is not applied: %s",
                   line);
    cr_assert(strstr(line, "ignored (a restart applies them): max_inflight_per_token"),
              "the cap is named as needing a restart: %s", line);
    free(line);
    cr_assert_neq(completion_status(&s, body), 413, "the new body limit applies");

    /* the cap is still 16: asking for 16 again changes nothing; the body limit goes back */
    line = reload_with(&s, conf, SMALL_LIMITS, 2);
    cr_assert(strstr(line, "http_max_body_kb 256 -> 64"), "%s", line);
    cr_assert_null(strstr(line, "max_inflight_per_token"), "the cap never changed: %s", line);
    free(line);
    cr_assert_eq(completion_status(&s, body), 413, "64 KiB again");
    free(body);
    cr_assert_eq(tu_server_stop(&s), 0);
    free(conf);
}
