/* bench_embed.c — the embedder on the CPU: embeddings/s at batch 1, 8 and 32 on code chunks of
 * Tabby's size (~512 characters), and what a stream of embedding batches costs a concurrent
 * completion (time to first token and total) when both share the cores.
 *
 *   bench_embed EMBED.gguf [DECODER.gguf] [--threads N] [--seconds S]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "cpuinfo.h"
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

int main(int argc, char **argv)
{
    const char *embed_path = NULL, *dec_path = NULL;
    int threads = 0;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!embed_path)
            embed_path = argv[i];
        else
            dec_path = argv[i];
    }
    if (!embed_path) {
        fprintf(stderr, "usage: bench_embed EMBED.gguf [DECODER.gguf] [--threads N] "
                        "[--seconds S]\n");
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
