/* bench_quant.c — times quant_matmul: matvec (n_tok=1, weights streamed from DRAM and from
 * cache) in GB/s of weight bytes next to this machine's measured copy bandwidth, and prompt
 * matmuls (n_tok=64, 512) in GFLOP/s, on SmolLM2-135M and 1B-class shapes, 1 and 2 threads.
 *
 * usage: bench_quant [--quick] [--best] [--fewtok] [--type Q4_1|Q8_0|Q4_0|Q5_0|Q4_K|F16|...]...
 * (--fewtok: instead, the decode shapes of several requests: 1-4 tokens, 1 thread, each call's
 * time over the 1-token call's, weights from DRAM and from cache; SERVAL_QUANT_NO_FEWTOK=1 in
 * the environment gives the same without the few-token kernels.)
 * (--type repeats; the types run in that order. The last columns are ns per weight row of the
 * single-token matvec, 1 thread.)
 * Each figure is the median of REPEATS timed runs after warm-up (--best: the fastest run, the
 * steadier figure when other processes share the machine); 2 threads split the rows with the
 * engine's pool. */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cpuinfo.h"
#include "pool.h"
#include "quant.h"

#define REPEATS 7

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct stats {
    double med, min, max; /* seconds per call */
} stats;

static stats summarize(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return (stats){t[n / 2], t[0], t[n - 1]};
}

/* ---- 1 or 2 threads: the engine's pool splits the rows ----------------------------------- */

typedef struct mm_job {
    gguf_dtype t;
    const void *W;
    int64_t n, rows;
    const void *act;
    int64_t n_tok;
    float *y;
} mm_job;

static void mm_part(void *arg, int ith, int nth)
{
    const mm_job *j = arg;
    long lo, hi;
    eng_pool_split((long)j->rows, ith, nth, &lo, &hi);
    quant_matmul(j->t, j->W, j->n, lo, hi, j->act, j->n_tok, j->y, j->rows);
}

static void matmul_all(eng_pool *pool, mm_job *j) { eng_pool_run(pool, mm_part, j); }

/* ---- memory bandwidth --------------------------------------------------------------------- */

typedef struct copy_arg {
    char *dst;
    const char *src;
    size_t len;
} copy_arg;

static void *copy_main(void *p)
{
    copy_arg *a = p;
    memcpy(a->dst, a->src, a->len);
    return NULL;
}

/* STREAM-style copy of 256 MB: bytes read + bytes written per second. */
static double copy_bandwidth(int threads, bool best)
{
    const size_t len = (size_t)256 << 20;
    char *a = malloc(len), *b = malloc(len);
    if (!a || !b) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(a, 1, len);
    memset(b, 2, len);
    double t[REPEATS];
    for (int rep = -1; rep < REPEATS; rep++) {
        double t0 = eng_clock_ms() / 1e3;
        pthread_t th;
        copy_arg half = {b + len / 2, a + len / 2, len / 2};
        if (threads == 2)
            pthread_create(&th, NULL, copy_main, &half);
        memcpy(b, a, threads == 2 ? len / 2 : len);
        if (threads == 2)
            pthread_join(th, NULL);
        if (rep >= 0)
            t[rep] = eng_clock_ms() / 1e3 - t0;
    }
    free(a);
    free(b);
    stats st = summarize(t, REPEATS);
    return 2.0 * (double)len / (best ? st.min : st.med) / 1e9;
}

/* ---- matmul timing ------------------------------------------------------------------------ */

typedef struct shape {
    const char *name;
    int64_t n, rows; /* in, out */
} shape;

static size_t weight_bytes(gguf_dtype t, int64_t n)
{
    switch (t) {
    case GGUF_DTYPE_F32: return (size_t)n * 4;
    case GGUF_DTYPE_F16:
    case GGUF_DTYPE_BF16: return (size_t)n * 2;
    case GGUF_DTYPE_Q4_0: return (size_t)n / 32 * 18;
    case GGUF_DTYPE_Q4_1: return (size_t)n / 32 * 20;
    case GGUF_DTYPE_Q8_0: return (size_t)n / 32 * 34;
    case GGUF_DTYPE_Q6_K: return (size_t)n / 256 * 210;
    case GGUF_DTYPE_Q5_0: return (size_t)n / 32 * 22;
    case GGUF_DTYPE_Q5_1: return (size_t)n / 32 * 24;
    case GGUF_DTYPE_Q4_K: return (size_t)n / 256 * 144;
    case GGUF_DTYPE_Q5_K: return (size_t)n / 256 * 176;
    }
    return 0;
}

/* Random weights quantised to t, `copies` times (to stream from DRAM by rotating). */
static uint8_t *make_weights(gguf_dtype t, int64_t n, int64_t rows, int copies)
{
    size_t wr = weight_bytes(t, n), one = wr * (size_t)rows;
    uint8_t *W = malloc(one * (size_t)copies);
    float *row = malloc((size_t)n * sizeof *row);
    if (!W || !row) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint32_t s = 12345;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            row[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f + 1e-4f;
        }
        quant_quantize_row(t, row, W + wr * (size_t)r, n);
    }
    for (int c = 1; c < copies; c++)
        memcpy(W + one * (size_t)c, W, one);
    free(row);
    return W;
}

static uint8_t *make_act(gguf_dtype t, int64_t n, int64_t n_tok)
{
    size_t ar = quant_act_row_bytes(t, n);
    uint8_t *a = malloc(ar * (size_t)n_tok);
    float *x = malloc((size_t)n * sizeof *x);
    uint32_t s = 777;
    for (int64_t k = 0; k < n_tok; k++) {
        for (int64_t i = 0; i < n; i++) {
            s = s * 1664525u + 1013904223u;
            x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 4.0f + 1e-3f;
        }
        quant_act_quantize(t, x, a + ar * (size_t)k, n);
    }
    free(x);
    return a;
}

/* --fewtok times with this thread's CPU time (one thread runs in the caller), steadier than the
 * wall clock when other processes share the cores. */
static bool g_cpu_clock;

static double now_s(void)
{
    if (g_cpu_clock) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    return eng_clock_ms() / 1e3;
}

/* Seconds per call of an [n → rows] matmul over n_tok tokens; weights rotate through `copies`
 * copies so each call reads them from DRAM when copies * size exceeds the caches. */
static stats time_matmul(eng_pool *pool, gguf_dtype t, const uint8_t *W, int copies, int64_t n, int64_t rows,
                         const uint8_t *act, int64_t n_tok, float *y, double budget_s)
{
    const size_t one = weight_bytes(t, n) * (size_t)rows;
    mm_job j = {t, W, n, rows, act, n_tok, y};
    /* warm-up, and size the inner loop to about budget_s / REPEATS */
    double t0 = now_s();
    int calls = 0;
    do {
        j.W = W + one * (size_t)(calls % copies);
        matmul_all(pool, &j);
        calls++;
    } while (now_s() - t0 < 0.05 && calls < 100000);
    double per = (now_s() - t0) / calls;
    int inner = (int)(budget_s / REPEATS / per);
    inner = inner < 1 ? 1 : inner;
    if (copies > 1 && inner % copies)
        inner += copies - inner % copies;
    double ts[REPEATS];
    for (int rep = 0; rep < REPEATS; rep++) {
        double s0 = now_s();
        for (int k = 0; k < inner; k++) {
            j.W = W + one * (size_t)(k % copies);
            matmul_all(pool, &j);
        }
        ts[rep] = (now_s() - s0) / inner;
    }
    return summarize(ts, REPEATS);
}

static gguf_dtype parse_type(const char *s)
{
    static const struct { const char *n; gguf_dtype t; } k[] = {
        {"F32", GGUF_DTYPE_F32},   {"F16", GGUF_DTYPE_F16},   {"BF16", GGUF_DTYPE_BF16}, {"Q4_0", GGUF_DTYPE_Q4_0},
        {"Q4_1", GGUF_DTYPE_Q4_1}, {"Q8_0", GGUF_DTYPE_Q8_0}, {"Q6_K", GGUF_DTYPE_Q6_K}, {"Q5_0", GGUF_DTYPE_Q5_0},
        {"Q5_1", GGUF_DTYPE_Q5_1}, {"Q4_K", GGUF_DTYPE_Q4_K}, {"Q5_K", GGUF_DTYPE_Q5_K}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(s, k[i].n) == 0)
            return k[i].t;
    fprintf(stderr, "unknown type %s\n", s);
    exit(2);
}

static const char *type_name(gguf_dtype t)
{
    switch (t) {
    case GGUF_DTYPE_F32: return "F32";
    case GGUF_DTYPE_F16: return "F16";
    case GGUF_DTYPE_BF16: return "BF16";
    case GGUF_DTYPE_Q4_0: return "Q4_0";
    case GGUF_DTYPE_Q4_1: return "Q4_1";
    case GGUF_DTYPE_Q8_0: return "Q8_0";
    case GGUF_DTYPE_Q6_K: return "Q6_K";
    case GGUF_DTYPE_Q5_0: return "Q5_0";
    case GGUF_DTYPE_Q5_1: return "Q5_1";
    case GGUF_DTYPE_Q4_K: return "Q4_K";
    case GGUF_DTYPE_Q5_K: return "Q5_K";
    }
    return "?";
}

/* The 1-minute load average: other processes on these 2-core machines skew timings. */
static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static void bench_one(gguf_dtype t, const shape *sh, bool quick, bool best)
{
    const int64_t n = sh->n, rows = sh->rows;
    const size_t one = weight_bytes(t, n) * (size_t)rows;
    /* enough copies to stream about 256 MB per pass: far past the caches */
    int copies = (int)(((size_t)256 << 20) / one);
    copies = copies < 2 ? 2 : copies > 512 ? 512 : copies;
    uint8_t *W = make_weights(t, n, rows, copies);
    const int64_t max_tok = quick ? 64 : 512;
    uint8_t *act = make_act(t, n, max_tok);
    float *y = malloc((size_t)(rows * max_tok) * sizeof *y);
    const double budget = quick ? 0.2 : 0.7;
    printf("%-5s %-14s %7.2f MB |", type_name(t), sh->name, (double)one / 1e6);
    double ns_row[2] = {0, 0}; /* 1 thread: dram, hot */
    for (int threads = 1; threads <= 2; threads++) {
        eng_pool *pool = eng_pool_create(threads);
        if (!pool) {
            fprintf(stderr, "eng_pool_create failed\n");
            exit(1);
        }
        stats cold = time_matmul(pool, t, W, copies, n, rows, act, 1, y, budget);
        stats hot = time_matmul(pool, t, W, 1, n, rows, act, 1, y, budget);
        printf(" %5.1f %5.1f", (double)one / (best ? cold.min : cold.med) / 1e9,
               (double)one / (best ? hot.min : hot.med) / 1e9);
        if (threads == 1) {
            ns_row[0] = (best ? cold.min : cold.med) * 1e9 / (double)rows;
            ns_row[1] = (best ? hot.min : hot.med) * 1e9 / (double)rows;
        }
        for (int64_t nt = 64; nt <= max_tok; nt *= 8) {
            stats mm = time_matmul(pool, t, W, 1, n, rows, act, nt, y, budget);
            printf(" %6.1f", 2.0 * (double)n * (double)rows * (double)nt / (best ? mm.min : mm.med) / 1e9);
        }
        eng_pool_free(pool);
        if (threads == 1)
            printf(" |");
        else
            printf(" | %6.1f %6.1f\n", ns_row[0], ns_row[1]);
        fflush(stdout);
    }
    free(W);
    free(act);
    free(y);
}

/* --fewtok: 1 thread, n_tok = 1..4 (a decode step with that many requests): GB/s of weight
 * bytes for one token, then each n_tok's time per call over one token's (n_tok = a pass per
 * token; 1.0 = the weights' unpacking fully shared). */
static void bench_few(gguf_dtype t, const shape *sh, bool quick, bool best)
{
    const int64_t n = sh->n, rows = sh->rows;
    const size_t one = weight_bytes(t, n) * (size_t)rows;
    int copies = (int)(((size_t)256 << 20) / one);
    copies = copies < 2 ? 2 : copies > 512 ? 512 : copies;
    uint8_t *W = make_weights(t, n, rows, copies);
    uint8_t *act = make_act(t, n, 4);
    float *y = malloc((size_t)(rows * 4) * sizeof *y);
    const double budget = quick ? 0.2 : 0.5;
    eng_pool *pool = eng_pool_create(1);
    g_cpu_clock = true;
    if (!pool || !y) {
        fprintf(stderr, "eng_pool_create failed\n");
        exit(1);
    }
    printf("%-5s %-14s %7.2f MB |", type_name(t), sh->name, (double)one / 1e6);
    for (int hot = 0; hot <= 1; hot++) {
        double t1 = 0;
        for (int64_t nt = 1; nt <= 4; nt++) {
            stats st = time_matmul(pool, t, W, hot ? 1 : copies, n, rows, act, nt, y, budget);
            const double s = best ? st.min : st.med;
            if (nt == 1) {
                t1 = s;
                printf(" %5.1f", (double)one / s / 1e9);
            } else {
                printf(" %5.2f", s / t1);
            }
        }
        printf(" |");
    }
    printf("\n");
    fflush(stdout);
    g_cpu_clock = false;
    eng_pool_free(pool);
    free(W);
    free(act);
    free(y);
}

int main(int argc, char **argv)
{
    bool quick = false, best = false, few = false;
    gguf_dtype only[16];
    size_t n_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--best") == 0) {
            best = true;
        } else if (strcmp(argv[i], "--fewtok") == 0) {
            few = true;
        } else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc && n_only < 16) {
            only[n_only++] = parse_type(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: %s [--quick] [--best] [--fewtok] [--type T]...\n"
                    "  T: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K F16 BF16 F32 (repeatable)\n",
                    argv[0]);
            return 2;
        }
    }
    static const shape shapes[] = {
        {"576->576", 576, 576},     {"576->1536", 576, 1536},   {"1536->576", 1536, 576},
        {"576->49152", 576, 49152}, {"2048->8192", 2048, 8192}, {"8192->2048", 8192, 2048},
    };
    static const gguf_dtype types[] = {GGUF_DTYPE_Q4_1, GGUF_DTYPE_Q8_0, GGUF_DTYPE_Q4_0, GGUF_DTYPE_F16};

    char cpu[128];
    if (!eng_cpuinfo_model_name(cpu, sizeof cpu))
        snprintf(cpu, sizeof cpu, "unknown CPU");
    printf("bench_quant: %s; kernels: %s; load average %.2f\n", cpu,
           quant_cpu_has_avx2() ? "AVX2+FMA+F16C" : "scalar reference", loadavg());
    double bw1 = copy_bandwidth(1, best), bw2 = copy_bandwidth(2, best);
    printf("memcpy 256 MB (read+write bytes): 1 thread %.1f GB/s, 2 threads %.1f GB/s  <- matvec ceiling\n\n", bw1,
           bw2);
    if (few) {
        const char *off = getenv("SERVAL_QUANT_NO_FEWTOK");
        printf("few-token decode, 1 thread (few-token kernels %s): GB/s of weight bytes for 1 token, then the\n"
               "time of 2, 3, 4 tokens over 1 token's (thread CPU time); %s of %d repeats after warm-up\n",
               off && *off && strcmp(off, "0") != 0 ? "off" : "on", best ? "best" : "median", REPEATS);
        printf("%-5s %-14s %10s | %23s | %23s\n", "type", "[in->out]", "weights", "dram: GB/s x2 x3 x4",
               "hot: GB/s x2 x3 x4");
        const gguf_dtype *run = n_only ? only : types;
        const size_t n_run = n_only ? n_only : sizeof types / sizeof types[0];
        for (size_t ti = 0; ti < n_run; ti++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
                if (shapes[si].n % gguf_dtype_block_elems(run[ti]) == 0)
                    bench_few(run[ti], &shapes[si], quick, best);
        printf("load average at the end: %.2f\n", loadavg());
        return 0;
    }
    printf("matvec GB/s of weight bytes (dram = weights streamed past the caches, hot = cache-resident);\n"
           "matmul GFLOP/s for 64 and 512 tokens; %s of %d repeats after warm-up\n", best ? "best" : "median",
           REPEATS);
    printf("%-5s %-14s %10s | %23s | %23s | %13s\n", "type", "[in->out]", "weights", "1 thread", "2 threads",
           "ns/row 1 thr");
    printf("%-5s %-14s %10s | %5s %5s %6s %6s | %5s %5s %6s %6s | %6s %6s\n", "", "", "", "dram", "hot", "mm64",
           "mm512", "dram", "hot", "mm64", "mm512", "dram", "hot");
    /* --type (repeatable) picks the types and their order; the default is the four below */
    const gguf_dtype *run = n_only ? only : types;
    const size_t n_run = n_only ? n_only : sizeof types / sizeof types[0];
    for (size_t ti = 0; ti < n_run; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            if (shapes[si].n % gguf_dtype_block_elems(run[ti]) == 0) /* K-quants: rows of 256s */
                bench_one(run[ti], &shapes[si], quick, best);

    /* the scalar reference, for scale */
    {
        const int64_t n = 576, rows = 1536, nt = 64;
        uint8_t *W = make_weights(GGUF_DTYPE_Q4_1, n, rows, 1);
        uint8_t *act = make_act(GGUF_DTYPE_Q4_1, n, nt);
        float *y = malloc((size_t)(rows * nt) * sizeof *y);
        double t0 = eng_clock_ms() / 1e3;
        int calls = 0;
        do {
            quant_ref_matmul(GGUF_DTYPE_Q4_1, W, n, 0, rows, act, nt, y, rows);
            calls++;
        } while (eng_clock_ms() / 1e3 - t0 < 0.5);
        double per = (eng_clock_ms() / 1e3 - t0) / calls;
        printf("\nscalar reference, Q4_1 576->1536, 64 tokens, 1 thread: %.2f GFLOP/s\n",
               2.0 * (double)n * (double)rows * (double)nt / per / 1e9);
        printf("load average at the end: %.2f\n", loadavg());
        free(W);
        free(act);
        free(y);
    }
    return 0;
}
