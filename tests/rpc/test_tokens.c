/* test_tokens.c — named tokens end to end: `serval token create|list|revoke` (a private store
 * holding salted hashes only), a running `serval serve` picking tokens up and dropping them
 * without a restart, scopes per route and per RPC, per-token rate limits with Retry-After,
 * token names (never tokens) in the request log and its JSON form, SIGHUP reloads, and the
 * HTTP port answering "starting" (and gRPC Health "STARTING") while the model loads. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth_hash.h"
#include "grpc_client.h"
#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"

/* `serval token ARGS... --data-dir dir`: the exit status; *out the stdout (malloc'd). */
static int token_cmd(const char *dir, char **out, char **err, const char *a1, const char *a2,
                     const char *a3, const char *a4)
{
    char *bin = tu_bin_path("serval");
    char *argv[12] = {bin, "token", (char *)a1};
    int n = 3;
    const char *rest[] = {a2, a3, a4};
    for (int i = 0; i < 3; i++)
        if (rest[i]) argv[n++] = (char *)rest[i];
    argv[n++] = "--data-dir";
    argv[n++] = (char *)dir;
    argv[n] = NULL;
    int rc = tu_run(argv, out, err, 30);
    free(bin);
    return rc;
}

/* Creates a token and returns it (malloc'd, newline stripped). */
static char *create(const char *dir, const char *name, const char *scopes, const char *rate)
{
    char *out = NULL, *err = NULL;
    char sc[96], rt[64];
    snprintf(sc, sizeof sc, "--scopes=%s", scopes ? scopes : "completion,chat,embeddings");
    snprintf(rt, sizeof rt, "--rate=%s", rate ? rate : "0");
    int rc = token_cmd(dir, &out, &err, "create", name, sc, rt);
    cr_assert_eq(rc, 0, "token create %s: %s", name, err);
    out[strcspn(out, "\n")] = '\0';
    free(err);
    return out;
}

static int status_of(int port, const char *method, const char *path, const char *token,
                     const char *body)
{
    tu_http_resp r = request(port, method, path, token, body);
    int st = r.status;
    tu_http_resp_free(&r);
    return st;
}

/* Polls until path answers `want` (the server looks at the store at most once a second). */
static bool eventually(int port, const char *path, const char *token, const char *body, int want)
{
    for (int i = 0; i < 40; i++) {
        if (status_of(port, body ? "POST" : "GET", path, token, body) == want) return true;
        usleep(100 * 1000);
    }
    return false;
}

static const char *const COMPLETION = "{\"prompt\":\"def add(a, b):\",\"max_tokens\":2}";

Test(tokens, sha256_and_hmac_match_the_standard_vectors)
{
    uint8_t h[32];
    char hex[65];
    rpc_sha256("abc", 3, h);
    rpc_hex(h, 32, hex);
    cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    rpc_sha256("", 0, h);
    rpc_hex(h, 32, hex);
    cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* two blocks */
    rpc_sha256(m, strlen(m), h);
    rpc_hex(h, 32, hex);
    cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* RFC 4231 test case 2 */
    const char *msg = "what do ya want for nothing?";
    rpc_hmac_sha256((const uint8_t *)"Jefe", 4, msg, strlen(msg), h);
    rpc_hex(h, 32, hex);
    cr_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

Test(tokens, the_store_is_private_and_holds_salted_hashes_only)
{
    char *dir = tu_temp_path(".d");
    unlink(dir);
    char *alice = create(dir, "alice", "completion", "30/min");
    char *bob = create(dir, "bob", "all", NULL);
    cr_assert_eq(strncmp(alice, "svt_", 4), 0, "a token looks like svt_<64 hex>: %s", alice);
    cr_assert_eq(strlen(alice), 68);
    cr_assert_str_neq(alice, bob);
    char path[512];
    snprintf(path, sizeof path, "%s/tokens", dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
    char *text = tu_read_file(path, NULL);
    cr_assert(strstr(text, "token alice "), "%s", text);
    cr_assert_null(strstr(text, alice + 4), "the token itself is never stored");
    cr_assert_null(strstr(text, bob + 4));
    uint8_t plain[32];
    char hex[65];
    rpc_sha256(alice, strlen(alice), plain);
    rpc_hex(plain, 32, hex);
    cr_assert_null(strstr(text, hex), "nor its unsalted hash");
    free(text);

    char *out = NULL, *err = NULL;
    cr_assert_eq(token_cmd(dir, &out, &err, "list", NULL, NULL, NULL), 0);
    cr_assert(strstr(out, "alice") && strstr(out, "bob") && strstr(out, "completion"), "%s", out);
    cr_assert(strstr(out, " 30 "), "alice's rate is listed: %s", out);
    cr_assert_null(strstr(out, "svt_"), "list never shows a token");
    free(out), free(err);
    cr_assert_eq(token_cmd(dir, NULL, &err, "create", "alice", NULL, NULL), 1);
    cr_assert(strstr(err, "exists"), "%s", err);
    free(err);
    cr_assert_eq(token_cmd(dir, NULL, &err, "revoke", "carol", NULL, NULL), 1);
    cr_assert(strstr(err, "no token named 'carol'"), "%s", err);
    free(err);
    cr_assert_eq(token_cmd(dir, NULL, &err, "create", "bad name", NULL, NULL), 2);
    free(err);
    cr_assert_eq(token_cmd(dir, NULL, &err, "create", "x", "--scopes=sudo", NULL), 2);
    cr_assert(strstr(err, "unknown scope 'sudo'"), "%s", err);
    free(err);
    cr_assert_eq(token_cmd(dir, NULL, &err, "create", "x", "--rate=fast", NULL), 2);
    free(err);
    cr_assert_eq(token_cmd(dir, NULL, NULL, "revoke", "bob", NULL, NULL), 0);
    cr_assert_eq(token_cmd(dir, &out, NULL, "list", NULL, NULL, NULL), 0);
    cr_assert_null(strstr(out, "bob"), "revoked: %s", out);
    free(out);

    chmod(path, 0644);
    cr_assert_eq(token_cmd(dir, NULL, &err, "list", NULL, NULL, NULL), 1);
    cr_assert(strstr(err, "chmod 600"), "a readable store is refused: %s", err);
    free(err);
    free(alice), free(bob), free(dir);
}

Test(tokens, a_running_server_picks_up_created_and_revoked_tokens_and_enforces_scopes)
{
    server s = server_start_log(NULL, false);
    char *alice = create(s.data_dir, "alice", "completion", NULL);
    cr_assert(eventually(s.port, "/v1/completions", alice, COMPLETION, 200),
              "a token created while serving works within a second or so");
    cr_assert_eq(status_of(s.port, "POST", "/v1/chat/completions", alice,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":1}"),
                 403, "no chat scope");
    tu_http_resp r = request(s.port, "GET", "/metrics", alice, NULL);
    cr_assert_eq(r.status, 403);
    cr_assert(strstr(r.body, "'alice'") && strstr(r.body, "admin"), "names token and scope: %s",
              r.body);
    tu_http_resp_free(&r);
    cr_assert_eq(status_of(s.port, "GET", "/v1/models", alice, NULL), 200,
                 "routes any token may use");
    cr_assert_eq(status_of(s.port, "GET", "/metrics", TOKEN, NULL), 200,
                 "--token tokens keep every scope");

    /* gRPC: the same scopes per RPC. */
    char target[64];
    char *log = tu_read_file(s.log_path, NULL);
    const char *g = strstr(log, "grpc listening on 127.0.0.1:");
    cr_assert_not_null(g);
    snprintf(target, sizeof target, "127.0.0.1:%d", atoi(g + strlen("grpc listening on 127.0.0.1:")));
    free(log);
    rpc_client *c = rpc_client_create(target, alice);
    size_t len = 0;
    uint8_t *req = gt_pack_complete("def f(", 1, &len);
    rpc_client_result res = {0};
    cr_assert_eq(rpc_client_call(c, "/serval.v1.Serval/Complete", req, len, 30000, NULL, NULL,
                                 &res), GRPC_STATUS_OK, "%s", res.details);
    rpc_client_result_clear(&res);
    cr_assert_eq(rpc_client_call(c, "/serval.v1.Serval/Chat", req, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_PERMISSION_DENIED, "Chat needs the chat scope: %s", res.details);
    cr_assert(strstr(res.details, "'alice'"), "%s", res.details);
    rpc_client_result_clear(&res);
    free(req);
    rpc_client_free(c);

    /* Per-token metrics, by name. */
    r = request(s.port, "GET", "/metrics", TOKEN, NULL);
    cr_assert(strstr(r.body, "serval_token_refused_total{token=\"alice\",reason=\"forbidden\"} 3\n"),
              "chat, /metrics and gRPC Chat were refused: %s", r.body);
    const char *m = strstr(r.body, "serval_token_requests_total{token=\"alice\"} ");
    cr_assert(m && atoi(m + strlen("serval_token_requests_total{token=\"alice\"} ")) >= 3,
              "completions, models and gRPC Complete went through");
    cr_assert_null(strstr(r.body, alice), "never the token");
    tu_http_resp_free(&r);

    cr_assert_eq(token_cmd(s.data_dir, NULL, NULL, "revoke", "alice", NULL, NULL), 0);
    cr_assert(eventually(s.port, "/v1/completions", alice, COMPLETION, 401),
              "a revoked token stops working without a restart");
    cr_assert_eq(status_of(s.port, "POST", "/v1/completions", TOKEN, COMPLETION), 200);
    cr_assert_eq(tu_server_stop(&s), 0);
    log = tu_read_file(s.log_path, NULL);
    cr_assert(strstr(log, "token=alice"), "request lines name the token: %s", log);
    cr_assert(strstr(log, "token=token:1"), "unnamed tokens get a name too");
    cr_assert(strstr(log, "tokens: 1 added (alice)"), "the pick-up is logged: %s", log);
    cr_assert(strstr(log, "1 removed (alice)"), "so is the revoke");
    cr_assert_null(strstr(log, alice), "the token never reaches the log");
    cr_assert_null(strstr(log, TOKEN), "nor does the --token one");
    free(log);
    free(alice);
}

Test(tokens, a_token_over_its_own_rate_gets_429_with_retry_after)
{
    server s = server_start(NULL);
    char *slow = create(s.data_dir, "slow", "completion", "2/min");
    cr_assert(eventually(s.port, "/v1/models", slow, NULL, 200)); /* takes one of the two */
    cr_assert_eq(status_of(s.port, "POST", "/v1/completions", slow, COMPLETION), 200);
    tu_http_resp r = request(s.port, "POST", "/v1/completions", slow, COMPLETION);
    cr_assert_eq(r.status, 429, "%s", r.body);
    const char *ra = strcasestr(r.headers, "Retry-After: ");
    cr_assert_not_null(ra, "%s", r.headers);
    int secs = atoi(ra + 13);
    cr_assert(secs >= 20 && secs <= 31, "one request per 30 s: retry in %d s", secs);
    cr_assert(strstr(r.body, "'slow'"), "%s", r.body);
    tu_http_resp_free(&r);
    cr_assert_eq(status_of(s.port, "POST", "/v1/completions", TOKEN, COMPLETION), 200,
                 "other tokens are not limited by it");
    cr_assert_eq(tu_server_stop(&s), 0);
    free(slow);
}

/* A `serval serve` with stderr to log_path, for what tu_server cannot wait for. */
static pid_t launch(const char *log_path, const char *const *args)
{
    char *bin = tu_bin_path("serval");
    const char *argv[32] = {bin, "serve"};
    int n = 2;
    for (; *args && n < 31; args++) argv[n++] = *args;
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion ends the test: the server too */
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0), dup2(dn, 1), dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    free(bin);
    return pid;
}

/* Waits (up to 30 s) for needle in the log; returns the text after it (malloc'd copy of the
 * whole log in *log). */
static const char *wait_log(const char *path, const char *needle, pid_t pid, char **log)
{
    for (int i = 0; i < 600; i++) {
        free(*log);
        *log = tu_read_file(path, NULL);
        const char *p = *log ? strstr(*log, needle) : NULL;
        if (p) return p + strlen(needle);
        int st;
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "serve exited early: %s", *log);
        usleep(50 * 1000);
    }
    cr_assert_fail("no '%s' in %s", needle, *log);
    return NULL;
}

static int stop(pid_t pid)
{
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(tokens, json_logs_are_one_object_per_line_with_the_token_name)
{
    char *dir = tu_temp_path(".d"), *logp = tu_temp_path(".log"), *log = NULL;
    unlink(dir);
    const char *args[] = {"--model", tu_default_model(), "--grpc-port", "0", "--http-port", "0",
                          "--token", TOKEN, "--data-dir", dir, "--threads", "2",
                          "--log-format", "json", NULL};
    pid_t pid = launch(logp, args);
    const char *p = wait_log(logp, "\"http_port\":", pid, &log);
    int port = atoi(p);
    cr_assert_eq(status_of(port, "POST", "/v1/completions", TOKEN, COMPLETION), 200);
    cr_assert_eq(status_of(port, "POST", "/v1/completions", "wrong", COMPLETION), 401);
    cr_assert_eq(stop(pid), 0);
    free(log);
    log = tu_read_file(logp, NULL);
    int ready = 0, requests = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        cr_assert_not_null(j, "not JSON: %s (%s)", line, je.text);
        cr_assert(json_is_string(json_object_get(j, "time")) &&
                  json_is_string(json_object_get(j, "level")), "%s", line);
        const char *ev = json_string_value(json_object_get(j, "event"));
        if (ev && !strcmp(ev, "ready")) {
            ready++;
            cr_assert_gt(json_integer_value(json_object_get(j, "kv_blocks")), 0, "%s", line);
            cr_assert(json_is_string(json_object_get(j, "model")) &&
                      json_is_string(json_object_get(j, "backend")) &&
                      json_is_integer(json_object_get(j, "grpc_port")) &&
                      json_is_integer(json_object_get(j, "weight_bytes")), "%s", line);
        }
        if (ev && !strcmp(ev, "request")) {
            requests++;
            int st = (int)json_integer_value(json_object_get(j, "status"));
            const char *tok = json_string_value(json_object_get(j, "token"));
            cr_assert_str_eq(json_string_value(json_object_get(j, "route")), "/v1/completions");
            cr_assert_str_eq(json_string_value(json_object_get(j, "client")), "127.0.0.1");
            cr_assert(json_is_integer(json_object_get(j, "request_id")), "%s", line);
            cr_assert_str_eq(tok, st == 200 ? "token:1" : "-", "%s", line);
            if (st == 200)
                cr_assert(json_integer_value(json_object_get(j, "output_tokens")) > 0 &&
                          json_is_number(json_object_get(j, "total_ms")), "%s", line);
        }
        json_decref(j);
    }
    cr_assert_eq(ready, 1, "one start-up summary");
    cr_assert_eq(requests, 2);
    free(log), free(logp), free(dir);
}

Test(tokens, sighup_reloads_tokens_and_the_log_level_and_names_what_needs_a_restart)
{
    char *conf = tu_temp_path(".toml");
    const char *v1 = "log_level = \"info\"\nmax_running = 8\n";
    cr_assert_eq(tu_write_file(conf, v1, strlen(v1)), 0);
    const char *extra[] = {"--config", conf, NULL};
    server s = server_start_log(extra, false);
    char *dev = create(s.data_dir, "dev", NULL, NULL);
    const char *v2 = "log_level = \"warn\"\nmax_running = 16\nhttp_rate_limit = 1\n"
                     "http_rate_burst = 1\n";
    cr_assert_eq(tu_write_file(conf, v2, strlen(v2)), 0);
    kill(s.pid, SIGHUP);
    char *log = NULL;
    const char *p = wait_log(s.log_path, "serval: SIGHUP: ", s.pid, &log);
    cr_assert(strstr(p, "log_level info -> warn"), "%s", p);
    cr_assert(strstr(p, "ignored (a restart applies them): max_running"), "%s", p);
    cr_assert(strstr(p, "http_rate_limit 0 -> 1, http_rate_burst 0 -> 1"), "%s", p);
    cr_assert(strstr(log, "(dev)"), "the new token is named: %s", log);
    cr_assert_eq(status_of(s.port, "POST", "/v1/completions", dev, COMPLETION), 200);
    int limited = 0;
    for (int i = 0; i < 3; i++)
        limited += status_of(s.port, "GET", "/v1/models", dev, NULL) == 429;
    cr_assert_geq(limited, 1, "the new rate (1 request/s, burst 1) applies without a restart");
    cr_assert_eq(tu_server_stop(&s), 0);
    free(log);
    log = tu_read_file(s.log_path, NULL);
    cr_assert_null(strstr(log, "token=dev"), "at warn, request lines are not logged: %s", log);
    free(log), free(dev), free(conf);
}

Test(tokens, http_and_grpc_health_say_starting_while_the_model_loads)
{
    /* A FIFO as the model: loading blocks in open() until something writes to it. */
    char *fifo = tu_temp_path(".gguf"), *logp = tu_temp_path(".log"), *dir = tu_temp_path(".d"),
         *log = NULL;
    unlink(fifo), unlink(dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    const char *args[] = {"--model", fifo, "--grpc-port", "0", "--http-port", "0", "--token",
                          TOKEN, "--data-dir", dir, NULL};
    pid_t pid = launch(logp, args);
    int port = atoi(wait_log(logp, "serval: http on 127.0.0.1:", pid, &log));
    tu_http_resp r = request(port, "GET", "/v1/health", NULL, NULL);
    cr_assert_eq(r.status, 503);
    cr_assert(strstr(r.body, "\"starting\""), "%s", r.body);
    tu_http_resp_free(&r);
    r = request(port, "POST", "/v1/completions", TOKEN, COMPLETION);
    cr_assert_eq(r.status, 503, "not served before the model is there");
    cr_assert(strcasestr(r.headers, "Retry-After:"), "%s", r.headers);
    tu_http_resp_free(&r);
    cr_assert_eq(status_of(port, "GET", "/health", NULL, NULL), 503);
    /* gRPC: Health says STARTING, any other call UNAVAILABLE (what clients retry on). */
    const char *g = strstr(log, " and grpc on 127.0.0.1:");
    cr_assert_not_null(g, "%s", log);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", atoi(g + strlen(" and grpc on 127.0.0.1:")));
    rpc_client *cl = rpc_client_create(target, TOKEN);
    Serval__V1__HealthResponse *h = gt_health(cl);
    cr_assert_str_eq(h->status, "STARTING");
    serval__v1__health_response__free_unpacked(h, NULL);
    int serving = 0;
    cr_assert_eq(gt_grpc_health_check(cl, "", &serving), GRPC_STATUS_OK);
    cr_assert_eq(serving, 2, "grpc.health.v1 NOT_SERVING while the model loads");
    size_t len = 0;
    uint8_t *req = gt_pack_complete("def add(a, b):", 2, &len);
    rpc_client_result res;
    cr_assert_eq(rpc_client_call(cl, M_COMPLETE, req, len, 10000, NULL, NULL, &res),
                 GRPC_STATUS_UNAVAILABLE, "%s", res.details);
    cr_assert(strstr(res.details, "starting"), "%s", res.details);
    rpc_client_result_clear(&res);
    free(req);
    rpc_client_free(cl);
    int fd = open(fifo, O_WRONLY); /* lets the load go on: it fails, not a regular file */
    close(fd);
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    free(log);
    log = tu_read_file(logp, NULL);
    cr_assert(strstr(log, "cannot load model"), "%s", log);
    unlink(fifo);
    free(log), free(logp), free(fifo), free(dir);
}
