/* test_index_serve.c — a real `serval serve --repo` with the real embedding model: it indexes
 * in the background while serving, /v1beta/search and gRPC Search find code by meaning and by
 * name, a Tabby completion on the indexed repository carries a snippet of another file in its
 * prompt (debug_data.snippets), and a file added later is found after the next re-index. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "grpc_client.h"
#include "grpc_test_util.h"
#include "idx_test_util.h"
#include "serval.pb-c.h"
#include "tu_http.h"
#include "tu_server.h"

#define TOKEN "index-test-token"
#define URL "https://example.com/shop.git"

static const char *embed_model(void)
{
    const char *env = getenv("SERVAL_EMBED_MODEL");
    const char *p = env && *env ? env : SERVAL_DEFAULT_EMBED_MODEL;
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "no embedding model at %s (tools/setup.sh converts it; or set "
                                  "$SERVAL_EMBED_MODEL)", p);
    return p;
}

static void git(const char *dir, const char *a, const char *b, const char *c)
{
    char *argv[] = {"/usr/bin/git", "-C", (char *)dir, "-c", "user.name=t", "-c",
                    "user.email=t@t", (char *)a, (char *)b, (char *)c, NULL};
    cr_assert_eq(tu_run(argv, NULL, NULL, 30), 0, "git %s", a);
}

/* Polls the server's log for a line containing what (true) for up to timeout_s. */
static bool log_has(const tu_server *s, const char *what, int timeout_s)
{
    for (int i = 0; i < timeout_s * 10; i++) {
        char *log = tu_read_file(s->log_path, NULL);
        bool yes = log && strstr(log, what);
        free(log);
        if (yes)
            return true;
        usleep(100000);
    }
    return false;
}

static int grpc_port(const tu_server *s)
{
    char *log = tu_read_file(s->log_path, NULL);
    const char *p = log ? strstr(log, "grpc listening on 127.0.0.1:") : NULL;
    int port = p ? atoi(p + strlen("grpc listening on 127.0.0.1:")) : 0;
    free(log);
    cr_assert_gt(port, 0, "no grpc port in the log");
    return port;
}

static json_t *post(const tu_server *s, const char *path, const char *body, int *status)
{
    int fd = tu_http_connect(s->port, 60, 10);
    cr_assert_geq(fd, 0);
    cr_assert(tu_http_send(fd, "POST", path, TOKEN, NULL, body, strlen(body)));
    tu_http_resp r = tu_http_read(fd);
    close(fd);
    *status = r.status;
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    cr_assert(j, "%s: not JSON: %s", path, r.body ? r.body : "");
    tu_http_resp_free(&r);
    return j;
}

static const char *first_hit_path(json_t *j)
{
    json_t *h = json_array_get(json_object_get(j, "hits"), 0);
    return json_string_value(json_object_get(h, "filepath"));
}

static char *make_repo(void)
{
    char *repo = tu_idx_tempdir("-shop");
    tu_put(repo, "net.py",
           "import socket\n\n\n"
           "def open_connection(host, port, timeout):\n"
           "    \"\"\"Connect a TCP socket to host and port.\"\"\"\n"
           "    sock = socket.create_connection((host, port), timeout)\n"
           "    sock.settimeout(timeout)\n"
           "    return sock\n");
    tu_put(repo, "prices.py",
           "def apply_discount(price, percent):\n"
           "    \"\"\"Reduce a price by a percentage, never below zero.\"\"\"\n"
           "    reduced = price * (100 - percent) / 100\n"
           "    return max(reduced, 0)\n");
    tu_put(repo, "main.py", "from net import open_connection\n\n\ndef main():\n    pass\n");
    git(repo, "init", "-q", NULL);
    git(repo, "add", ".", NULL);
    git(repo, "commit", "-qm", "shop");
    return repo;
}

/* The running server's pid: fini kills it when a failed assertion skipped tu_server_stop. */
static pid_t live_pid;

static void fini(void)
{
    if (live_pid > 0)
        kill(live_pid, SIGKILL);
}

static int stop(tu_server *s)
{
    int rc = tu_server_stop(s);
    live_pid = 0;
    return rc;
}

static tu_server start(const char *repo, const char *more)
{
    char arg[4096];
    snprintf(arg, sizeof arg, "%s=%s", repo, URL);
    const char *extra[] = {"--embedding-model", embed_model(), "--repo", arg,
                           "--reindex-interval", "5", more, NULL};
    tu_server s = tu_server_start("http", TOKEN, false, extra);
    live_pid = s.pid;
    cr_assert(log_has(&s, " files deleted), skipped ", 60), "the first index run never finished");
    return s;
}

Test(index_serve, search_over_http_and_grpc_finds_code_by_meaning_and_bad_queries_get_422,
     .timeout = 120, .fini = fini)
{
    char *repo = make_repo();
    tu_server s = start(repo, NULL);
    int st;
    json_t *j = post(&s, "/v1beta/search", "{\"query\": \"lower the cost by some percent\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(first_hit_path(j), "prices.py", "by meaning: the discount function");
    json_t *h0 = json_array_get(json_object_get(j, "hits"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(h0, "git_url")), URL);
    cr_assert_eq(json_integer_value(json_object_get(h0, "start_line")), 1);
    cr_assert_eq(json_integer_value(json_object_get(h0, "end_line")), 4);
    json_decref(j);
    j = post(&s, "/v1beta/search", "{\"query\": \"create_connection\", \"mode\": \"bm25\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(first_hit_path(j), "net.py", "by name (BM25)");
    json_decref(j);
    j = post(&s, "/v1beta/search", "{\"query\": \"socket\", \"git_url\": \"https://other\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert_eq(json_array_size(json_object_get(j, "hits")), 0, "another repository: no hits");
    json_decref(j);
    const char *bad[] = {"{}", "{\"query\": 3}", "{\"query\": \"x\", \"top_k\": 0}",
                         "{\"query\": \"x\", \"mode\": \"fuzzy\"}", "{\"query\": \"\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = post(&s, "/v1beta/search", bad[i], &st);
        cr_assert_eq(st, 422, "%s answered %d", bad[i], st);
        json_decref(j);
    }

    /* gRPC Search: the same index. */
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", grpc_port(&s));
    rpc_client *cl = rpc_client_create(target, TOKEN);
    Serval__V1__SearchRequest rq = SERVAL__V1__SEARCH_REQUEST__INIT;
    rq.query = "connect a tcp socket to a server";
    rq.top_k = 2;
    rq.git_url = URL;
    size_t len;
    uint8_t *buf = gt_pack(&rq.base, &len);
    rpc_client_result res = {0};
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Search", buf, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_OK, "%s", res.details);
    Serval__V1__SearchResponse *sr = serval__v1__search_response__unpack(NULL, res.last_len, res.last);
    cr_assert(sr);
    cr_assert_eq(sr->n_hits, 2);
    cr_assert_str_eq(sr->hits[0]->filepath, "net.py");
    cr_assert_eq(sr->hits[0]->start_line, 1);
    cr_assert_gt(sr->hits[0]->score, sr->hits[1]->score);
    serval__v1__search_response__free_unpacked(sr, NULL);
    rpc_client_result_clear(&res);
    free(buf);
    rq.query = "";
    buf = gt_pack(&rq.base, &len);
    cr_assert_eq(rpc_client_call(cl, "/serval.v1.Serval/Search", buf, len, 30000, NULL, NULL, &res),
                 GRPC_STATUS_INVALID_ARGUMENT);
    rpc_client_result_clear(&res);
    free(buf);
    rpc_client_free(cl);
    cr_assert_eq(stop(&s), 0);
    tu_rmtree(repo);
    free(repo);
}

static json_t *complete(const tu_server *s, const char *extra)
{
    char body[2048];
    snprintf(body, sizeof body,
             "{\"language\": \"python\", \"segments\": {\"prefix\": \"from net import "
             "open_connection\\n\\n\\ndef main():\\n    sock = open_connection(\", \"suffix\": "
             "\"\\n\", \"filepath\": \"main.py\", \"git_url\": \"%s\"}, \"max_tokens\": 4, "
             "\"debug_options\": {\"return_snippets\": true, \"return_prompt\": true}%s}",
             URL, extra);
    int st;
    json_t *j = post(s, "/v1/completions", body, &st);
    cr_assert_eq(st, 200, "%s", json_dumps(j, 0));
    return j;
}

Test(index_serve, a_tabby_completion_on_an_indexed_repository_carries_a_snippet_of_another_file,
     .timeout = 120, .fini = fini)
{
    char *repo = make_repo();
    tu_server s = start(repo, NULL);
    json_t *j = complete(&s, "");
    json_t *dd = json_object_get(j, "debug_data");
    json_t *sn = json_object_get(dd, "snippets");
    cr_assert_geq(json_array_size(sn), 1, "no retrieved snippet: %s", json_dumps(j, 0));
    json_t *s0 = json_array_get(sn, 0);
    cr_assert_str_eq(json_string_value(json_object_get(s0, "filepath")), "net.py");
    const char *prompt = json_string_value(json_object_get(dd, "prompt"));
    cr_assert(strstr(prompt, "def open_connection(host, port, timeout):"),
              "the definition from net.py is in the prompt: %s", prompt);
    for (size_t i = 0; i < json_array_size(sn); i++)
        cr_assert_str_neq(json_string_value(json_object_get(json_array_get(sn, i), "filepath")),
                          "main.py", "the current file's own chunk is left out");
    json_decref(j);

    /* Off per request; a client snippet with the same text is not repeated. */
    j = complete(&s, ", \"retrieval\": false");
    cr_assert_eq(json_array_size(json_object_get(json_object_get(j, "debug_data"), "snippets")), 0);
    json_decref(j);

    /* Files added later are found after the next periodic re-index (every 5 s here); an
     * untracked one is not: a git repository indexes its tracked files. */
    tu_put(repo, "tax.py", "def vat_amount(net_price, rate):\n    return net_price * rate\n");
    tu_put(repo, "scratch.py", "def scratch_vat_amount_notes():\n    pass\n");
    git(repo, "add", "tax.py", NULL);
    bool found = false;
    for (int i = 0; i < 40 && !found; i++) {
        int st;
        j = post(&s, "/v1beta/search", "{\"query\": \"vat_amount\", \"mode\": \"bm25\"}", &st);
        const char *p = first_hit_path(j);
        found = p && strcmp(p, "tax.py") == 0;
        json_decref(j);
        if (!found)
            usleep(500000);
    }
    cr_assert(found, "tax.py never indexed");
    int st;
    j = post(&s, "/v1beta/search", "{\"query\": \"scratch_vat_amount_notes\", \"mode\": \"bm25\"}", &st);
    for (size_t i = 0; i < json_array_size(json_object_get(j, "hits")); i++)
        cr_assert_str_neq(json_string_value(json_object_get(json_array_get(json_object_get(j, "hits"), i), "filepath")),
                          "scratch.py", "an untracked file was indexed");
    json_decref(j);
    cr_assert_eq(stop(&s), 0);
    tu_rmtree(repo);
    free(repo);
}

Test(index_serve, no_retrieval_serves_search_but_adds_no_snippets, .timeout = 120, .fini = fini)
{
    char *repo = make_repo();
    tu_server s = start(repo, "--no-retrieval");
    json_t *j = complete(&s, "");
    cr_assert_eq(json_array_size(json_object_get(json_object_get(j, "debug_data"), "snippets")), 0);
    json_decref(j);
    int st;
    j = post(&s, "/v1beta/search", "{\"query\": \"socket\"}", &st);
    cr_assert_eq(st, 200);
    cr_assert_str_eq(first_hit_path(j), "net.py");
    json_decref(j);
    cr_assert_eq(stop(&s), 0);
    tu_rmtree(repo);
    free(repo);
}

Test(index_serve, serval_index_indexes_a_repository_and_reports_what_it_skipped,
     .timeout = 120)
{
    char *repo = make_repo();
    tu_put(repo, "logo.png", "\x89PNG");
    git(repo, "add", "logo.png", NULL);
    char *db = tu_idx_tempdir("-db");
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "index", "--quiet", "--embedding-model", (char *)embed_model(), "--db", db,
                    "--git-url", URL, repo, NULL};
    char *out = NULL, *err = NULL;
    int rc = tu_run(argv, &out, &err, 100);
    cr_assert_eq(rc, 0, "serval index: %s", err);
    cr_assert(strstr(out, "3 files indexed, 3 embedded, 0 deleted"), "%s", out);
    cr_assert(strstr(out, "1 binary"), "%s", out);
    cr_assert(strstr(out, " at "), "the commit is reported: %s", out);
    free(out), free(err);
    /* Again: nothing to embed. */
    rc = tu_run(argv, &out, &err, 100);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert(strstr(out, "3 files indexed, 0 embedded"), "%s", out);
    free(out), free(err);
    /* Usage errors: no PATH; --git-url with two PATHs. */
    char *bad1[] = {bin, "index", "--db", db, NULL};
    cr_assert_eq(tu_run(bad1, &out, &err, 30), 2);
    cr_assert(strstr(err, "PATH"), "%s", err);
    free(out), free(err);
    char *bad2[] = {bin, "index", "--git-url", URL, repo, repo, NULL};
    cr_assert_eq(tu_run(bad2, &out, &err, 30), 2);
    cr_assert(strstr(err, "--git-url"), "%s", err);
    free(out), free(err);
    free(bin);
    tu_rmtree(db), tu_rmtree(repo);
    free(db), free(repo);
}
