/* bench_http.c — HTTP overhead: the recorded tabby-agent completion requests replayed by C
 * concurrent clients through the engine API directly (prompt builder + eng_submit), then as
 * POST /v1/completions to an in-process HTTP server over loopback TCP (keep-alive); prints
 * req/s and p50/p95 latency for both and their ratio. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "http_server.h"
#include "prompt.h"
#include "serval_engine.h"

#define MAX_BODIES 64

typedef struct bench_cfg {
    int concurrency, per_worker, threads;
    const char *model, *fixture;
} bench_cfg;

typedef struct shared {
    const bench_cfg *cfg;
    json_t *bodies[MAX_BODIES]; /* Tabby completion bodies from the fixture */
    int n_bodies;
    eng_engine *e;
    prompt_builder *pb;
    int port;
} shared;

typedef struct worker {
    shared *sh;
    int index, phase;
    double *lat_ms;
    int failures;
} worker;

/* The i-th request of a worker: a fixture body whose prefix starts with a line unique to
 * (phase, worker, i), so neither phase reuses the other's prefix cache. */
static json_t *make_body(shared *sh, int phase, int w, int i)
{
    json_t *b = json_deep_copy(sh->bodies[(w + i) % sh->n_bodies]);
    json_t *seg = json_object_get(b, "segments");
    const char *lang = json_string_value(json_object_get(b, "language"));
    const char *c = lang && (!strcmp(lang, "python")) ? "#" : "//";
    char *pre;
    if (asprintf(&pre, "%s run %d.%d.%d\n%s", c, phase, w, i,
                 json_string_value(json_object_get(seg, "prefix"))) < 0)
        return b;
    json_object_set_new(seg, "prefix", json_string(pre));
    free(pre);
    return b;
}

static bool run_engine(shared *sh, json_t *b)
{
    json_t *seg = json_object_get(b, "segments");
    json_t *pj = json_object_get(seg, "prefix"), *sj = json_object_get(seg, "suffix");
    prompt_completion_input in = {
        .language = json_string_value(json_object_get(b, "language")),
        .prefix = json_string_value(pj), .prefix_len = json_string_length(pj),
        .suffix = json_string_value(sj), .suffix_len = sj ? json_string_length(sj) : 0};
    prompt_snippet decl[8];
    json_t *d = json_object_get(seg, "declarations"), *x;
    size_t i;
    json_array_foreach(d, i, x) {
        if (in.n_declarations < 8)
            decl[in.n_declarations++] = (prompt_snippet){
                json_string_value(json_object_get(x, "filepath")),
                json_string_value(json_object_get(x, "body"))};
    }
    in.declarations = decl;
    prompt_result pr;
    eng_err err = {{0}};
    if (prompt_build_completion(sh->pb, &in, &pr, &err) != ENG_OK)
        return false;
    eng_request_params p = eng_request_params_defaults();
    p.tokens = pr.tokens;
    p.n_tokens = (int32_t)pr.n_tokens;
    p.stop = (const char *const *)pr.stops;
    p.n_stop = pr.n_stops;
    p.sampling.temperature = 0.1f; /* what the HTTP route uses for Tabby bodies */
    p.max_tokens = 64;
    eng_request *r;
    eng_status st = eng_submit(sh->e, &p, &r, &err);
    prompt_result_clear(&pr);
    if (st != ENG_OK)
        return false;
    char buf[4096];
    eng_request_output o;
    while (eng_request_read(r, buf, sizeof buf, -1, &o) == ENG_OK && !o.done) {
    }
    eng_request_release(r);
    return o.done && o.finish != ENG_FINISH_ERROR;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* One request on a keep-alive connection; true on a 200 with a JSON body holding choices. */
static bool run_http(int fd, json_t *b)
{
    char *body = json_dumps(b, JSON_COMPACT);
    char *req;
    int n = asprintf(&req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     "bench\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    free(body);
    if (n < 0)
        return false;
    bool ok = send(fd, req, (size_t)n, MSG_NOSIGNAL) == n;
    free(req);
    char buf[65536];
    size_t len = 0;
    long want = -1;
    size_t hlen = 0;
    while (ok) {
        ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (k <= 0)
            return false;
        len += (size_t)k;
        buf[len] = 0;
        char *h = strstr(buf, "\r\n\r\n");
        if (h && want < 0) {
            hlen = (size_t)(h - buf) + 4;
            char *cl = strcasestr(buf, "content-length:");
            want = cl ? atol(cl + 15) : 0;
        }
        if (want >= 0 && len >= hlen + (size_t)want)
            break;
    }
    return ok && !strncmp(buf, "HTTP/1.1 200", 12) && strstr(buf + hlen, "\"choices\"");
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    int fd = w->phase == 1 ? connect_to(sh->port) : -1;
    for (int i = 0; i < sh->cfg->per_worker; i++) {
        json_t *b = make_body(sh, w->phase, w->index, i);
        double t0 = eng_clock_ms();
        bool ok = w->phase == 0 ? run_engine(sh, b) : (fd >= 0 && run_http(fd, b));
        w->lat_ms[i] = eng_clock_ms() - t0;
        w->failures += !ok;
        json_decref(b);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double run_phase(shared *sh, int phase, double *p50, double *p95, int *failures)
{
    int c = sh->cfg->concurrency, k = sh->cfg->per_worker, n = c * k;
    worker *ws = calloc((size_t)c, sizeof *ws);
    pthread_t *th = calloc((size_t)c, sizeof *th);
    double *lat = calloc((size_t)n, sizeof *lat);
    double t0 = eng_clock_ms();
    for (int i = 0; i < c; i++) {
        ws[i] = (worker){.sh = sh, .index = i, .phase = phase, .lat_ms = lat + (size_t)i * k};
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    *failures = 0;
    for (int i = 0; i < c; i++) {
        pthread_join(th[i], NULL);
        *failures += ws[i].failures;
    }
    double secs = (eng_clock_ms() - t0) / 1e3;
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    *p50 = lat[n / 2];
    *p95 = lat[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1];
    free(ws);
    free(th);
    free(lat);
    return n / secs;
}

static int load_fixture(shared *sh, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0 && sh->n_bodies < MAX_BODIES) {
        json_t *rec = json_loads(line, 0, NULL);
        const char *p = json_string_value(json_object_get(rec, "path"));
        const char *body = json_string_value(json_object_get(rec, "body"));
        json_t *b = p && body && !strcmp(p, "/v1/completions") ? json_loads(body, 0, NULL) : NULL;
        if (b && json_object_get(b, "segments"))
            sh->bodies[sh->n_bodies++] = b;
        else
            json_decref(b);
        json_decref(rec);
    }
    free(line);
    fclose(f);
    return sh->n_bodies;
}

int main(int argc, char **argv)
{
    bench_cfg c = {.concurrency = 16, .per_worker = 4, .threads = 0, .model = SERVAL_DEFAULT_MODEL,
                   .fixture = SERVAL_SOURCE_DIR "/tests/fixtures/tabby-agent/requests.jsonl"};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--concurrency")) c.concurrency = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--per-worker")) c.per_worker = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) c.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) c.model = argv[i + 1];
        else if (!strcmp(argv[i], "--fixture")) c.fixture = argv[i + 1];
        else {
            fprintf(stderr, "usage: bench_http [--concurrency N] [--per-worker K] [--threads T] "
                            "[--model PATH] [--fixture requests.jsonl]\n");
            return 2;
        }
    }
    if (c.concurrency < 1 || c.per_worker < 1) {
        fprintf(stderr, "bench_http: --concurrency and --per-worker must be >= 1\n");
        return 2;
    }
    shared sh = {.cfg = &c};
    if (load_fixture(&sh, c.fixture) <= 0) {
        fprintf(stderr, "bench_http: no completion requests in %s\n", c.fixture);
        return 1;
    }
    eng_err err = {{0}};
    eng_model *m = NULL;
    eng_engine *e = NULL;
    rpc_auth *auth = NULL;
    http_server *hs = NULL;
    if (eng_model_load(c.model, &m, &err) != ENG_OK) {
        fprintf(stderr, "bench_http: %s\n", err.msg);
        return 1;
    }
    eng_engine_config ec = eng_engine_config_defaults();
    if (c.threads)
        ec.n_threads = c.threads;
    const char *tokens[] = {"bench"};
    rpc_auth_config ac = {.tokens = tokens, .n_tokens = 1};
    http_server_config hc = {.port = 0, .data_dir = "/tmp"};
    if (eng_engine_create(m, &ec, &e, &err) != ENG_OK || prompt_builder_create(m, &sh.pb, &err) ||
        rpc_auth_create(&ac, &auth, NULL, &err) != ENG_OK ||
        http_server_start(&hc, e, auth, &hs, &sh.port, &err) != ENG_OK) {
        fprintf(stderr, "bench_http: %s\n", err.msg);
        return 1;
    }
    sh.e = e;
    printf("bench_http: %d fixture completion requests, %d clients x %d requests, Tabby "
           "defaults (max 64 tokens, temperature 0.1, language stop words), unique prefixes\n",
           sh.n_bodies, c.concurrency, c.per_worker);
    const char *names[2] = {"engine API", "HTTP /v1/completions"};
    double p50[2], p95[2], rps[2];
    int fail[2];
    for (int ph = 0; ph < 2; ph++) {
        rps[ph] = run_phase(&sh, ph, &p50[ph], &p95[ph], &fail[ph]);
        printf("%-22s %7.2f req/s  p50 %8.1f ms  p95 %8.1f ms  failures %d\n", names[ph], rps[ph],
               p50[ph], p95[ph], fail[ph]);
    }
    printf("HTTP / engine: req/s %.3f, p50 %.3f, p95 %.3f\n", rps[1] / rps[0], p50[1] / p50[0],
           p95[1] / p95[0]);
    http_server_stop(hs, 1000);
    prompt_builder_free(sh.pb);
    eng_engine_free(e);
    rpc_auth_free(auth);
    eng_model_free(m);
    for (int i = 0; i < sh.n_bodies; i++)
        json_decref(sh.bodies[i]);
    return fail[0] || fail[1] ? 1 : 0;
}
