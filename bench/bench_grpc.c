/* bench_grpc.c — gRPC overhead: concurrent unary completions through the engine API directly,
 * then the same workload as Complete calls to an in-process gRPC server over loopback TCP;
 * prints req/s and p50/p95 latency for both and their ratio, and the rate of bare Health calls. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "grpc_client.h"
#include "grpc_server.h"
#include "serval.pb-c.h"
#include "serval_engine.h"

typedef struct bench_cfg {
    int concurrency, per_worker, max_tokens, threads, rounds;
    const char *model;
} bench_cfg;

typedef struct bench_worker {
    const bench_cfg *cfg;
    int index;
    int phase; /* 0: engine API, 1: gRPC Complete, 2: gRPC Health (no engine work) */
    eng_engine *e;
    rpc_client *cl;
    double *lat_ms; /* [per_worker] */
    int failures;
} bench_worker;

/* Distinct prompts per phase and request, so neither phase reuses the other's prefix cache. */
static void make_prompt(char *buf, size_t cap, int phase, int worker, int i)
{
    snprintf(buf, cap, "# phase %d worker %d request %d\ndef compute_%d_%d(values):", phase,
             worker, i, worker, i);
}

static void *worker_main(void *arg)
{
    bench_worker *w = arg;
    const bench_cfg *c = w->cfg;
    char prompt[256], text[4096];
    for (int i = 0; i < c->per_worker; i++) {
        make_prompt(prompt, sizeof prompt, w->phase, w->index, i);
        double t0 = eng_clock_ms();
        bool ok = false;
        if (w->phase == 0) {
            eng_request_params p = eng_request_params_defaults();
            p.text = prompt;
            p.text_len = strlen(prompt);
            p.max_tokens = c->max_tokens;
            p.ignore_eos = true;
            eng_request *r;
            eng_err err = {{0}};
            if (eng_submit(w->e, &p, &r, &err) == ENG_OK) {
                eng_request_output o;
                while (eng_request_read(r, text, sizeof text, -1, &o) == ENG_OK && !o.done) {
                }
                ok = o.finish == ENG_FINISH_LENGTH;
                eng_request_release(r);
            }
        } else if (w->phase == 2) {
            rpc_client_result res;
            ok = rpc_client_call(w->cl, "/serval.v1.Serval/Health", "", 0, 0, NULL, NULL,
                                 &res) == GRPC_STATUS_OK;
            rpc_client_result_clear(&res);
        } else {
            Serval__V1__CompleteRequest rq = SERVAL__V1__COMPLETE_REQUEST__INIT;
            rq.input_case = SERVAL__V1__COMPLETE_REQUEST__INPUT_PROMPT;
            rq.prompt = prompt;
            rq.max_tokens = c->max_tokens;
            rq.ignore_eos = true;
            uint8_t buf[512];
            size_t len = protobuf_c_message_pack(&rq.base, buf);
            rpc_client_result res;
            ok = rpc_client_call(w->cl, "/serval.v1.Serval/Complete", buf, len, 0, NULL, NULL,
                                 &res) == GRPC_STATUS_OK;
            rpc_client_result_clear(&res);
        }
        w->lat_ms[i] = eng_clock_ms() - t0;
        if (!ok) w->failures++;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs one phase; returns req/s and fills p50/p95. */
static double run_phase(const bench_cfg *c, int phase, eng_engine *e, rpc_client *cl, double *p50,
                        double *p95, int *failures)
{
    int n = c->concurrency * c->per_worker;
    double *lat = calloc((size_t)n, sizeof *lat);
    bench_worker *w = calloc((size_t)c->concurrency, sizeof *w);
    pthread_t *th = calloc((size_t)c->concurrency, sizeof *th);
    double t0 = eng_clock_ms();
    for (int i = 0; i < c->concurrency; i++) {
        w[i] = (bench_worker){.cfg = c, .index = i, .phase = phase, .e = e, .cl = cl,
                              .lat_ms = lat + (size_t)i * c->per_worker};
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    *failures = 0;
    for (int i = 0; i < c->concurrency; i++) {
        pthread_join(th[i], NULL);
        *failures += w[i].failures;
    }
    double wall = eng_clock_ms() - t0;
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    *p50 = lat[n / 2];
    *p95 = lat[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1];
    free(lat);
    free(w);
    free(th);
    return n / (wall / 1e3);
}

int main(int argc, char **argv)
{
    bench_cfg c = {.concurrency = 64, .per_worker = 2, .max_tokens = 16, .threads = 2,
                   .rounds = 2,
                   .model = SERVAL_DEFAULT_MODEL};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--concurrency")) c.concurrency = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--per-worker")) c.per_worker = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-tokens")) c.max_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) c.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) c.rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) c.model = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_grpc [--concurrency 64] [--per-worker 2] "
                            "[--max-tokens 16] [--threads 2] [--rounds 2] [--model PATH]\n");
            return 2;
        }
    }
    if (c.concurrency < 1 || c.per_worker < 1 || c.max_tokens < 1 || c.rounds < 1) return 2;
    eng_err err = {{0}};
    eng_model *m;
    if (eng_model_load(c.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "bench_grpc: %s\n", err.msg);
        return 1;
    }
    eng_engine_config ec = eng_engine_config_defaults();
    ec.n_threads = c.threads;
    ec.max_running = c.concurrency;
    eng_engine *e;
    if (eng_engine_create(m, &ec, &e, &err) != ENG_OK) {
        fprintf(stderr, "bench_grpc: %s\n", err.msg);
        return 1;
    }
    rpc_grpc_config gc = {.port = 0};
    rpc_grpc_server *srv;
    int port;
    if (rpc_grpc_server_start(&gc, e, NULL, &srv, &port, &err) != ENG_OK) {
        fprintf(stderr, "bench_grpc: %s\n", err.msg);
        return 1;
    }
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_client *cl = rpc_client_create(target, NULL);

    printf("bench_grpc: %s, %d concurrent unary completions x %d each, %d tokens "
           "(ignore_eos), %d engine threads\n",
           eng_model_name(m), c.concurrency, c.per_worker, c.max_tokens, c.threads);
    /* Warm-up (page in the weights, start the pools and the connection), then the phases
     * alternate over `rounds` so load drift on a shared machine hits both alike. */
    bench_cfg warm = c;
    warm.concurrency = 4;
    warm.per_worker = 1;
    double p50[2], p95[2], rps[2], sum_rps[2] = {0}, sum_p50[2] = {0}, sum_p95[2] = {0};
    int fail[2], failures = 0;
    for (int ph = 0; ph < 2; ph++) run_phase(&warm, ph, e, cl, &p50[ph], &p95[ph], &fail[ph]);
    const char *names[2] = {"engine API", "gRPC Complete"};
    for (int round = 0; round < c.rounds; round++) {
        for (int ph = 0; ph < 2; ph++) {
            rps[ph] = run_phase(&c, ph, e, cl, &p50[ph], &p95[ph], &fail[ph]);
            printf("round %d %-14s %7.2f req/s  p50 %8.1f ms  p95 %8.1f ms  failures %d\n",
                   round, names[ph], rps[ph], p50[ph], p95[ph], fail[ph]);
            sum_rps[ph] += rps[ph];
            sum_p50[ph] += p50[ph];
            sum_p95[ph] += p95[ph];
            failures += fail[ph];
        }
    }
    printf("mean over %d rounds: engine %.2f req/s p50 %.1f p95 %.1f ms; gRPC %.2f req/s "
           "p50 %.1f p95 %.1f ms\n",
           c.rounds, sum_rps[0] / c.rounds, sum_p50[0] / c.rounds, sum_p95[0] / c.rounds,
           sum_rps[1] / c.rounds, sum_p50[1] / c.rounds, sum_p95[1] / c.rounds);
    /* The cost of a call alone: Health does no engine work. */
    bench_cfg hc = c;
    hc.per_worker = 50;
    double hr = run_phase(&hc, 2, e, cl, &p50[0], &p95[0], &fail[0]);
    failures += fail[0];
    printf("gRPC Health alone: %.0f calls/s, p50 %.2f ms, p95 %.2f ms (%d concurrent)\n", hr,
           p50[0], p95[0], c.concurrency);
    printf("gRPC / engine: throughput %.3fx, p50 %.3fx, p95 %.3fx\n", sum_rps[1] / sum_rps[0],
           sum_p50[1] / sum_p50[0], sum_p95[1] / sum_p95[0]);
    rpc_client_free(cl);
    rpc_grpc_server_stop(srv, 1000);
    eng_engine_free(e);
    eng_model_free(m);
    return failures ? 1 : 0;
}
