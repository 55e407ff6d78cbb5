/* bench_embed.c — the embedder on the CPU: embeddings/s at batch 1, 8 and 32 on code chunks of
 * Tabby's size (~512 characters), and what a stream of embedding batches costs a concurrent
 * completion (time to first token and total) when both share the cores. --gemm: the encoder's
 * products alone on one thread (engine/cpu/gemm_f16.c on every path this CPU has, beside
 * quant_matmul's F16 kernel that the encoder used before), in GFLOP/s next to the core's FMA
 * ceiling measured by a register-only loop; checked against the reference before timing.
 *
 *   bench_embed EMBED.gguf [DECODER.gguf] [--threads N] [--seconds S]
 *   bench_embed --gemm [--seconds S]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "clock.h"
#include "cpuinfo.h"
#include "gemm_f16.h"
#include "quant.h"
#include "serval_embed.h"
#include "serval_engine.h"

/* ~512-character chunks of C-like code, each a little different. */
static void make_chunk(char *buf, size_t cap, int i)
{
    snprintf(buf, cap,
             "static int parse_header_%d(const uint8_t *p, size_t n, struct header *out)\n"
             "{\n    if (n < %d) return -EINVAL; /* too short for the fixed part */\n"
             "    out->magic = read_u32(p);\n    out->version = read_u16(p + 4);\n"
             "    out->flags = read_u16(p + 6) & 0x%x;\n"
             "    for (size_t i = 0; i < out->n_fields && i < MAX_FIELDS; i++) {\n"
             "        out->fields[i].offset = read_u32(p + 8 + 8 * i);\n"
             "        out->fields[i].length = read_u32(p + 12 + 8 * i);\n    }\n"
             "    return out->magic == MAGIC_%d ? 0 : -EPROTO; // checked by the caller\n}\n",
             i, 8 + i % 7, 0xff00 | (i & 0xff), i % 5);
}

/* CPU time of the whole process, seconds: the machine is shared, so wall-clock rates depend on
 * the load; embeddings per CPU-second do much less. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double run_batches(eng_embedder *e, int batch, double seconds, int *n_tok_avg,
                          double *cpu_per_emb)
{
    char (*chunks)[1024] = malloc(sizeof(*chunks) * (size_t)batch);
    const char **texts = malloc(sizeof(*texts) * (size_t)batch);
    size_t *lens = malloc(sizeof(*lens) * (size_t)batch);
    int32_t *ntok = malloc(sizeof(*ntok) * (size_t)batch);
    float *out = malloc(sizeof(float) * (size_t)batch * (size_t)eng_embedder_dim(e));
    for (int i = 0; i < batch; i++) {
        make_chunk(chunks[i], sizeof chunks[i], i);
        texts[i] = chunks[i];
        lens[i] = strlen(chunks[i]);
    }
    eng_err err;
    eng_embed(e, texts, lens, batch, out, ntok, NULL, &err); /* warm-up */
    long done = 0;
    double t0 = eng_clock_ms(), t, c0 = cpu_s();
    do {
        if (eng_embed(e, texts, lens, batch, out, ntok, NULL, &err) != ENG_OK) {
            fprintf(stderr, "bench_embed: %s\n", err.msg);
            exit(1);
        }
        done += batch;
        t = eng_clock_ms();
    } while (t - t0 < seconds * 1000.0);
    long sum = 0;
    for (int i = 0; i < batch; i++)
        sum += ntok[i];
    *n_tok_avg = (int)(sum / batch);
    if (cpu_per_emb)
        *cpu_per_emb = (cpu_s() - c0) / (double)done;
    free(chunks), free(texts), free(lens), free(ntok), free(out);
    return done / ((t - t0) / 1000.0);
}

typedef struct load_arg {
    eng_embedder *e;
    atomic_bool stop;
    long embedded;
} load_arg;

static void *load_main(void *p)
{
    load_arg *a = p;
    int tok;
    while (!atomic_load(&a->stop)) {
        run_batches(a->e, 32, 0.0, &tok, NULL); /* one batch of 32 (plus its warm-up) */
        a->embedded += 64;
    }
    return NULL;
}

/* Median over `reps` completions of a 200-token prompt generating 32 tokens. */
static void completion_latency(eng_engine *eng, int reps, double *ttft, double *total)
{
    double *a = malloc(sizeof(double) * (size_t)reps), *b = malloc(sizeof(double) * (size_t)reps);
    char prompt[2048];
    for (int i = 0; i < reps; i++) {
        snprintf(prompt, sizeof prompt,
                 "// request %d\nint sum(const int *a, int n) {\n    int s = 0;\n"
                 "    for (int i = 0; i < n; i++) s += a[i];\n    return s;\n}\n"
                 "int max(const int *a, int n) {\n    int m = a[0];\n"
                 "    for (int i = 1; i < n; i++) if (a[i] > m) m = a[i];\n    return m;\n}\n"
                 "int mean(const int *a, int n) {\n", i);
        eng_request_params p = eng_request_params_defaults();
        p.text = prompt;
        p.text_len = strlen(prompt);
        p.max_tokens = 32;
        p.ignore_eos = true;
        eng_request *r;
        eng_err err;
        if (eng_submit(eng, &p, &r, &err) != ENG_OK) {
            fprintf(stderr, "bench_embed: submit: %s\n", err.msg);
            exit(1);
        }
        char buf[4096];
        eng_request_output o;
        do
            eng_request_read(r, buf, sizeof buf, -1, &o);
        while (!o.done);
        a[i] = o.first_token_ms;
        b[i] = o.total_ms;
        eng_request_release(r);
    }
    for (int i = 1; i < reps; i++) /* insertion sorts: reps is small */
        for (int j = i; j > 0 && a[j] < a[j - 1]; j--) {
            double t = a[j]; a[j] = a[j - 1]; a[j - 1] = t;
        }
    for (int i = 1; i < reps; i++)
        for (int j = i; j > 0 && b[j] < b[j - 1]; j--) {
            double t = b[j]; b[j] = b[j - 1]; b[j - 1] = t;
        }
    *ttft = a[reps / 2];
    *total = b[reps / 2];
    free(a), free(b);
}


/* ---- --gemm: the products alone ------------------------------------------------------------ */

#if defined(__x86_64__)
/* Independent FMA chains in registers only: what one core's FMA units give (GFLOP/s). */
__attribute__((target("avx512f"))) static double fma_peak_512(double seconds)
{
    __m512 a[24];
    for (int i = 0; i < 24; i++)
        a[i] = _mm512_set1_ps((float)i * 1e-3f);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    long iters = 0;
    double t0 = cpu_s(), t;
    do {
        for (int r = 0; r < 1000; r++)
#pragma GCC unroll 24
            for (int i = 0; i < 24; i++)
                a[i] = _mm512_fmadd_ps(a[i], m, c);
        iters += 1000;
        t = cpu_s();
    } while (t - t0 < seconds);
    float sink = 0;
    for (int i = 0; i < 24; i++)
        sink += _mm512_reduce_add_ps(a[i]);
    if (sink == 12345.0f)
        printf(" ");
    return (double)iters * 24 * 16 * 2 / (t - t0) * 1e-9;
}

__attribute__((target("avx2,fma"))) static double fma_peak_256(double seconds)
{
    __m256 a[12];
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i * 1e-3f);
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    long iters = 0;
    double t0 = cpu_s(), t;
    do {
        for (int r = 0; r < 1000; r++)
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++)
                a[i] = _mm256_fmadd_ps(a[i], m, c);
        iters += 1000;
        t = cpu_s();
    } while (t - t0 < seconds);
    float v[8], sink = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(v, a[i]);
        sink += v[0];
    }
    if (sink == 12345.0f)
        printf(" ");
    return (double)iters * 12 * 8 * 2 / (t - t0) * 1e-9;
}
#endif

/* One product shape of the encoder: rows x n weights, T tokens. Prints GFLOP/s of the old
 * path (quant_matmul, F16) and each gemm_f16 path; exits 1 if a path disagrees with the
 * reference. */
static void gemm_shape(int64_t rows, int64_t n, int64_t T, double seconds)
{
    uint64_t s = 0x1234 + (uint64_t)(rows * 7 + n);
    uint16_t *w = malloc(sizeof(uint16_t) * (size_t)(rows * n));
    uint16_t *packed = malloc(sizeof(uint16_t) * cpu_gemm_packed_elems(rows, n));
    float *x = malloc(sizeof(float) * (size_t)(T * n)), *bias = calloc((size_t)rows, 4);
    float *y = malloc(sizeof(float) * (size_t)(T * rows)), *ref = malloc(sizeof(float) * (size_t)(T * rows));
    float *scratch = malloc(sizeof(float) * cpu_gemm_scratch_floats(n));
    for (int64_t i = 0; i < rows * n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        w[i] = quant_f32_to_f16((float)((int64_t)(s >> 40) - (1 << 23)) * 0x1p-26f);
    }
    for (int64_t i = 0; i < T * n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (float)((int64_t)(s >> 40) - (1 << 23)) * 0x1p-23f;
    }
    cpu_gemm_pack_f16(w, rows, n, packed);
    const cpu_gemm_b b = cpu_gemm_packed(packed, true, rows, n);
    const int64_t np = (rows + CPU_GEMM_NR - 1) / CPU_GEMM_NR;
    cpu_gemm_ref(&b, 0, np, x, n, 1, T, bias, ref, rows);
    const double flop = 2.0 * (double)rows * (double)n * (double)T;
    printf("%5lld x %4lld weights, %3lld tokens:", (long long)rows, (long long)n, (long long)T);
    for (int path = -1; path <= CPU_GEMM_AVX512; path++) {
        if (path >= 0 && !cpu_gemm_isa_supported((cpu_gemm_isa)path))
            continue;
        long reps = 0;
        double t0 = cpu_s(), t;
        do {
            if (path < 0)
                quant_matmul(GGUF_DTYPE_F16, w, n, 0, rows, x, T, y, rows);
            else
                cpu_gemm_run((cpu_gemm_isa)path, &b, 0, np, x, n, 1, T, bias, y, rows, scratch);
            reps++;
            t = cpu_s();
        } while (t - t0 < seconds);
        if (path >= 0 && memcmp(y, ref, sizeof(float) * (size_t)(T * rows)) != 0) {
            fprintf(stderr, "bench_embed: gemm %s disagrees with the reference\n",
                    cpu_gemm_isa_name((cpu_gemm_isa)path));
            exit(1);
        }
        printf("  %s %.1f", path < 0 ? "quant_matmul" : cpu_gemm_isa_name((cpu_gemm_isa)path),
               flop * (double)reps / (t - t0) * 1e-9);
    }
    printf(" GFLOP/s\n");
    free(w), free(packed), free(x), free(bias), free(y), free(ref), free(scratch);
}

static int gemm_bench(double seconds)
{
    char cpu[128];
    if (!eng_cpuinfo_model_name(cpu, sizeof cpu))
        snprintf(cpu, sizeof cpu, "unknown CPU");
    printf("# encoder products, one thread, %s; best path %s\n", cpu,
           cpu_gemm_isa_name(cpu_gemm_best_isa()));
#if defined(__x86_64__)
    if (cpu_gemm_isa_supported(CPU_GEMM_AVX2))
        printf("FMA ceiling (registers only): avx2 %.1f GFLOP/s", fma_peak_256(seconds));
    if (cpu_gemm_isa_supported(CPU_GEMM_AVX512))
        printf(", avx512 %.1f GFLOP/s", fma_peak_512(seconds));
    printf("\n");
#endif
    /* all-MiniLM-L6-v2 on a 207-token chunk: Q, K, V, O; FFN up; FFN down */
    gemm_shape(384, 384, 207, seconds);
    gemm_shape(1536, 384, 207, seconds);
    gemm_shape(384, 1536, 207, seconds);
    gemm_shape(384, 384, 1, seconds); /* a one-token query */
    return 0;
}

int main(int argc, char **argv)
{
    const char *embed_path = NULL, *dec_path = NULL;
    int threads = 0;
    double seconds = -1.0;
    bool gemm = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--gemm") == 0)
            gemm = true;
        else if (!embed_path)
            embed_path = argv[i];
        else
            dec_path = argv[i];
    }
    if (gemm)
        return gemm_bench(seconds > 0 ? seconds : 1.0);
    if (seconds <= 0)
        seconds = 3.0;
    if (!embed_path) {
        fprintf(stderr, "usage: bench_embed EMBED.gguf [DECODER.gguf] [--threads N] "
                        "[--seconds S]\n       bench_embed --gemm [--seconds S]\n");
        return 2;
    }
    char cpu[128];
    if (!eng_cpuinfo_model_name(cpu, sizeof cpu))
        snprintf(cpu, sizeof cpu, "unknown CPU");
    eng_embedder_config cfg = eng_embedder_config_defaults();
    cfg.n_threads = threads;
    eng_embedder *e;
    eng_err err;
    if (eng_embedder_create(embed_path, &cfg, &e, &err) != ENG_OK) {
        fprintf(stderr, "bench_embed: %s\n", err.msg);
        return 1;
    }
    printf("# %s, %s, threads %d\n", eng_embedder_model_name(e), cpu, threads);
    const int batches[] = {1, 8, 32};
    for (int k = 0; k < 3; k++) {
        int tok;
        double cpe;
        double rate = run_batches(e, batches[k], seconds, &tok, &cpe);
        printf("batch %2d: %7.1f embeddings/s wall (%d tokens each, %.0f tokens/s); %.1f ms CPU "
               "per embedding = %.1f embeddings/s per idle core\n", batches[k], rate, tok,
               rate * tok, cpe * 1e3, 1.0 / cpe);
    }
    if (dec_path) {
        eng_model *m;
        eng_engine *eng;
        if (eng_model_load(dec_path, &m, &err) != ENG_OK) {
            fprintf(stderr, "bench_embed: %s\n", err.msg);
            return 1;
        }
        eng_engine_config ec = eng_engine_config_defaults();
        ec.n_threads = threads;
        ec.prefix_caching = false;
        if (eng_engine_create(m, &ec, &eng, &err) != ENG_OK) {
            fprintf(stderr, "bench_embed: %s\n", err.msg);
            return 1;
        }
        double t_alone, tot_alone, t_load, tot_load;
        completion_latency(eng, 2, &t_alone, &tot_alone); /* warm-up */
        completion_latency(eng, 5, &t_alone, &tot_alone);
        load_arg la = {.e = e};
        atomic_init(&la.stop, false);
        pthread_t th;
        pthread_create(&th, NULL, load_main, &la);
        double t0 = eng_clock_ms();
        completion_latency(eng, 5, &t_load, &tot_load);
        double dt = (eng_clock_ms() - t0) / 1000.0;
        atomic_store(&la.stop, true);
        pthread_join(th, NULL);
        printf("completion (%s, 32 tokens), median of 5: alone ttft %.1f ms total %.1f ms; "
               "beside batches of 32 embeddings: ttft %.1f ms total %.1f ms (%.2fx); %.0f "
               "embeddings/s meanwhile\n", eng_model_name(m), t_alone, tot_alone, t_load,
               tot_load, tot_load / tot_alone, la.embedded / dt);
        eng_engine_free(eng);
        eng_model_free(m);
    }
    eng_embedder_free(e);
    return 0;
}
