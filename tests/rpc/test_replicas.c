/* test_replicas.c — `serval serve --replicas 2 --threads 1` end to end: greedy completions equal
 * those of one engine with 2 threads, both replicas serve, one Tabby file's requests stay on
 * one replica, /metrics, /v1/health and gRPC Health report each replica. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc_test_util.h"
#include "http_test_util.h"
#include "testutil.h"

/* Prompts of code that start differently (the router's prefix affinity hashes the start). */
static void prompt(int i, char *buf, size_t cap)
{
    static const char *const heads[] = {"def fibonacci(n):", "class Stack:", "import os\nimport sys",
                                        "#include <stdio.h>", "function debounce(fn, ms) {",
                                        "fn main() {", "SELECT name FROM users", "package main"};
    snprintf(buf, cap, "%s\n    # %d: a helper that the rest of this module calls, written "
             "plainly and documented, then tested below\n", heads[i % 8], i);
}

/* The OpenAI completion of prompt i, greedy: its text (malloc'd). */
static char *complete(int port, int i)
{
    char text[256], quoted[512], body[1024];
    prompt(i, text, sizeof text);
    size_t at = 0;
    for (const char *c = text; *c; c++) { /* the prompts hold no quote or backslash */
        if (*c == '\n')
            quoted[at++] = '\\', quoted[at++] = 'n';
        else
            quoted[at++] = *c;
    }
    quoted[at] = '\0';
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":12,\"temperature\":0}",
             quoted);
    tu_http_resp r = request(port, "POST", "/v1/completions", TOKEN, body);
    cr_assert_eq(r.status, 200, "prompt %d: %d %s", i, r.status, r.body);
    tu_json *j = json_of(&r);
    const tu_json *ch = tu_json_get(j, "choices");
    cr_assert(ch && ch->type == TU_JSON_ARR && ch->n == 1, "%s", r.body);
    const char *t = jstr(ch->items[0], "text");
    cr_assert(t, "%s", r.body);
    char *out = strdup(t);
    tu_json_free(j);
    tu_http_resp_free(&r);
    return out;
}

static double routed(int port, int replica)
{
    double sum = 0;
    static const char *const why[] = {"affinity", "rebalanced", "least_loaded", "spilled"};
    for (int w = 0; w < 4; w++) {
        char name[128];
        snprintf(name, sizeof name, "serval_replica_requests_routed_total{replica=\"%d\",reason=\"%s\"}",
                 replica, why[w]);
        double v = metric(port, name);
        cr_assert_geq(v, 0, "/metrics has no %s", name);
        sum += v;
    }
    return sum;
}

Test(replicas, two_replicas_of_one_thread_answer_as_one_engine_does_and_both_serve,
     .timeout = 300)
{
    server one = server_start(NULL); /* one engine, 2 threads */
    const char *const two_args[] = {"--replicas", "2", "--threads", "1", NULL};
    server two = server_start(two_args);
    enum { N = 8 };
    for (int i = 0; i < N; i++) {
        char *a = complete(one.port, i), *b = complete(two.port, i);
        cr_assert_str_eq(a, b, "prompt %d: one engine '%s', two replicas '%s'", i, a, b);
        free(a);
        free(b);
    }
    double r0 = routed(two.port, 0), r1 = routed(two.port, 1);
    cr_assert_eq(r0 + r1, N, "routed %g + %g", r0, r1);
    cr_assert(r0 > 0 && r1 > 0, "one replica served everything: %g and %g", r0, r1);
    cr_assert_geq(metric(two.port, "serval_replica_in_rotation{replica=\"1\"}"), 1);
    /* Every request answered: the load drains to 0 (the engine counts a request finished
     * just after its reader saw the end, so poll). */
    double t_end = now_s() + 30;
    while (metric(two.port, "serval_replica_load{replica=\"0\"}") != 0 && now_s() < t_end)
        usleep(20 * 1000);
    cr_assert_eq(metric(two.port, "serval_replica_load{replica=\"0\"}"), 0);
    cr_assert_lt(metric(one.port, "serval_replica_load{replica=\"1\"}"), 0,
                 "one engine has no replica 1");

    /* One developer's file: every request lands on the same replica (where its prefix and any
     * request it supersedes are). */
    double before[2] = {routed(two.port, 0), routed(two.port, 1)};
    for (int k = 0; k < 3; k++) {
        char body[512];
        snprintf(body, sizeof body, "{\"language\":\"python\",\"segments\":{\"prefix\":\"def "
                 "area(r):\\n    return %d * r\",\"filepath\":\"src/geo.py\",\"git_url\":"
                 "\"https://example.com/app.git\"}}", k);
        expect(two.port, "POST", "/v1/completions", TOKEN, body, 200, "choices");
    }
    double after[2] = {routed(two.port, 0), routed(two.port, 1)};
    cr_assert((after[0] - before[0] == 3 && after[1] == before[1]) ||
                  (after[1] - before[1] == 3 && after[0] == before[0]),
              "one file's requests split: replica 0 +%g, replica 1 +%g", after[0] - before[0],
              after[1] - before[1]);

    /* Health: each replica, over HTTP and gRPC (once both finished counting). */
    t_end = now_s() + 30;
    while ((metric(two.port, "serval_replica_load{replica=\"0\"}") != 0 ||
            metric(two.port, "serval_replica_load{replica=\"1\"}") != 0) && now_s() < t_end)
        usleep(20 * 1000);
    tu_http_resp h = request(two.port, "GET", "/v1/health", TOKEN, NULL);
    cr_assert_eq(h.status, 200);
    tu_json *hj = json_of(&h);
    const tu_json *reps = tu_json_get(hj, "replicas");
    cr_assert(reps && reps->type == TU_JSON_ARR && reps->n == 2, "%s", h.body);
    for (size_t i = 0; i < 2; i++) {
        const tu_json *r = reps->items[i], *id = tu_json_get(r, "replica"),
                      *in = tu_json_get(r, "in_rotation"), *fin = tu_json_get(r, "requests_finished");
        cr_assert(id && in && fin, "%s", h.body);
        cr_assert_eq(id->num, (double)i);
        cr_assert(in->b, "%s", h.body);
        cr_assert_gt(fin->num, 0, "%s", h.body);
    }
    tu_json_free(hj);
    tu_http_resp_free(&h);

    tu_server grpc = tu_server_start("grpc", TOKEN, true, two_args);
    rpc_client *cl = rpc_client_create(grpc.target, TOKEN);
    Serval__V1__HealthResponse *hr = gt_health(cl);
    cr_assert_eq(hr->n_replicas, 2);
    cr_assert(hr->replicas[0]->in_rotation && hr->replicas[1]->in_rotation);
    cr_assert_eq(hr->replicas[1]->replica, 1);
    serval__v1__health_response__free_unpacked(hr, NULL);
    rpc_client_free(cl);
    cr_assert_eq(tu_server_stop(&grpc), 0);
    cr_assert_eq(server_stop(&two), 0);
    cr_assert_eq(server_stop(&one), 0);
}

Test(replicas, bad_replica_counts_are_refused_naming_the_flag)
{
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "serve", "--replicas", "0", "--print-config", NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 30);
    cr_assert_eq(rc, 2, "%s", err);
    cr_assert(strstr(err, "--replicas"), "%s", err);
    free(err);
    free(bin);
}

/* --gpus (cli/engine_flags.c): what a user who lists GPUs wrongly is told, before any GPU is
 * touched (that the GPUs exist is the CUDA backend's check: tests/kernels/kt_tp_cuda.c). */
Test(replicas, gpu_lists_that_are_malformed_or_that_tp_does_not_divide_are_refused)
{
    static const char *const cases[][4] = {
        {"0,1,2", "2", "cuda", "--gpus lists 3 GPUs, which --tp 2 does not divide"},
        {"0,,1", "1", "cuda", "not a comma-separated list"},
        {"1,1", "1", "cuda", "GPU 1 is listed twice"},
        {"64", "1", "cuda", "GPU ids are 0..63"},
    };
    char *bin = tu_bin_path("serval");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[] = {bin, "serve", "--backend", (char *)cases[i][2], "--gpus",
                        (char *)cases[i][0], "--tp", (char *)cases[i][1], "--print-config", NULL};
        char *err = NULL;
        int rc = tu_run(argv, NULL, &err, 30);
        cr_assert_eq(rc, 2, "--gpus %s: %s", cases[i][0], err);
        /* a build without CUDA refuses --backend cuda first; the rest holds either way */
        cr_assert(strstr(err, cases[i][3]) || strstr(err, "built without CUDA"), "--gpus %s: %s",
                  cases[i][0], err);
        free(err);
    }
    free(bin);
}

/* --gpus 0,1,2,3 --tp 2 is two replicas (cli/serve_replicas.c): another --replicas is refused
 * when serve starts, before any GPU is touched (CUDA builds; others refuse --backend cuda). */
Test(replicas, a_replica_count_that_disagrees_with_the_gpu_groups_is_refused, .timeout = 120)
{
    char *bin = tu_bin_path("serval");
    char *argv[] = {bin, "serve", "--model", (char *)tu_default_model(), "--backend", "cuda",
                    "--gpus", "0,1,2,3", "--tp", "2", "--replicas", "3", "--grpc-port", "0",
                    "--http-port", "0", "--no-auth", NULL};
    char *err = NULL;
    int rc = tu_run(argv, NULL, &err, 90);
    cr_assert_neq(rc, 0, "%s", err);
    cr_assert(strstr(err, "--replicas 3, but --gpus lists 4 GPUs: 2 groups of --tp 2") ||
                  strstr(err, "built without CUDA"),
              "%s", err);
    free(err);
    free(bin);
}
