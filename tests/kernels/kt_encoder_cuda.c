/* kt_encoder_cuda.c — kt-encoder-cuda: the `bert` encoder on the GPU (engine/cuda/
 * encoder_cuda.c) against the CPU encoder (engine/cpu/cpu_encoder.c) on a real embedding GGUF
 * (all-MiniLM-L6-v2 by default): a batch of texts of different lengths (code, prose, one of a
 * single word), each text's vector's cosine with the CPU's >= 0.999 in bf16 and in fp16, the
 * same vectors when a text runs alone, and bad input refused before the GPU sees it; then the
 * embedder (serval_embed.h) with backend ENG_BACKEND_CUDA against the CPU one, end to end.
 *   kt-encoder-cuda --model PATH
 * Exit 0 pass, 1 fail, 77 no GPU. On the emulator: ~7 s. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cpu_encoder.h"
#include "embed_impl.h"
#include "encoder_cuda.h"
#include "serval_embed.h"
#include "tokenizer.h"

static const double COS_LIMIT = 0.999;

static const char *const TEXTS[] = {
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a",
    "Returns the number of bytes read, or -1 when the stream is closed.",
    "parser",
    "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1 ORDER BY 2 DESC;",
    "The quick brown fox jumps over the lazy dog while the compiler reports an unused variable "
    "in the loop body of the main function, which nobody reads.",
};
enum { N_TEXTS = sizeof TEXTS / sizeof TEXTS[0], MAX_IDS = 128 };

static int failures;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            printf("FAIL: ");                                                                \
            printf(__VA_ARGS__);                                                             \
            printf("\n");                                                                    \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static double cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb + 1e-30);
}

/* [CLS] ids [SEP] of each text into tokens; returns the total. */
static int32_t tokenize(const emb_model *m, int32_t *tokens, int32_t *lens)
{
    int32_t T = 0;
    for (int s = 0; s < N_TEXTS; s++) {
        size_t n = 0;
        eng_err err;
        tokens[T] = tok_wpm_cls(m->vocab);
        if (tok_wpm_encode(m->vocab, TEXTS[s], strlen(TEXTS[s]), tokens + T + 1, MAX_IDS - 2,
                           &n, NULL, &err) != ENG_OK) {
            printf("tokenizing: %s\n", err.msg);
            exit(1);
        }
        tokens[T + 1 + (int32_t)n] = tok_wpm_sep(m->vocab);
        lens[s] = (int32_t)n + 2;
        T += lens[s];
    }
    return T;
}

static void check_dtype(const emb_model *m, bool fp16, const int32_t *tokens,
                        const int32_t *lens, const float *want)
{
    const char *name = fp16 ? "fp16" : "bf16";
    const int d = m->n_embd;
    cuda_encoder *g = NULL;
    eng_err err;
    if (cuda_encoder_create(m, 0, fp16, &g, &err) != ENG_OK) {
        CHECK(false, "%s: cuda_encoder_create: %s", name, err.msg);
        return;
    }
    float *got = malloc(sizeof(float) * N_TEXTS * (size_t)d);
    float *alone = malloc(sizeof(float) * (size_t)d);
    eng_status st = cuda_encoder_run(g, tokens, lens, N_TEXTS, got, &err);
    CHECK(st == ENG_OK, "%s: cuda_encoder_run: %s", name, err.msg);
    for (int s = 0; st == ENG_OK && s < N_TEXTS; s++) {
        const double c = cosine(got + (size_t)s * d, want + (size_t)s * d, d);
        printf("%s text %d (%d tokens): cosine with the CPU %.6f\n", name, s, lens[s], c);
        CHECK(c >= COS_LIMIT, "%s text %d: cosine %.6f < %.3f", name, s, c, COS_LIMIT);
    }
    /* the last text alone: its vector does not depend on the batch it ran in */
    int32_t off = 0;
    for (int s = 0; s < N_TEXTS - 1; s++)
        off += lens[s];
    st = cuda_encoder_run(g, tokens + off, &lens[N_TEXTS - 1], 1, alone, &err);
    CHECK(st == ENG_OK, "%s: alone: %s", name, err.msg);
    if (st == ENG_OK) {
        const double c = cosine(alone, got + (size_t)(N_TEXTS - 1) * d, d);
        printf("%s: last text alone vs in the batch: cosine %.7f\n", name, c);
        CHECK(c >= 0.99999, "%s: the last text alone differs from the batch (cosine %.7f)",
              name, c);
    }
    /* bad input: refused with a message, and the encoder still works after */
    const int32_t bad_tok[2] = {tok_wpm_cls(m->vocab), m->n_vocab};
    const int32_t two = 2, zero = 0, too_long = m->n_ctx + 1;
    CHECK(cuda_encoder_run(g, bad_tok, &two, 1, alone, &err) == ENG_ERR_INVALID &&
              strstr(err.msg, "vocabulary"),
          "%s: a token id past the vocabulary was not refused", name);
    CHECK(cuda_encoder_run(g, tokens, &zero, 1, alone, &err) == ENG_ERR_INVALID,
          "%s: an empty sequence was not refused", name);
    CHECK(cuda_encoder_run(g, tokens, &too_long, 1, alone, &err) == ENG_ERR_INVALID,
          "%s: a sequence past n_ctx was not refused", name);
    st = cuda_encoder_run(g, tokens, lens, 1, alone, &err);
    CHECK(st == ENG_OK && cosine(alone, got, d) >= 0.99999,
          "%s: the encoder does not work after refusing bad input", name);
    free(got);
    free(alone);
    cuda_encoder_free(g);
}

/* texts -> vectors through a whole embedder on `backend` (its worker thread, its batching) */
static bool embed_all(const char *path, eng_backend_kind backend, float *out)
{
    eng_embedder_config cfg = eng_embedder_config_defaults();
    cfg.backend = backend;
    cfg.n_threads = 2;
    eng_embedder *e = NULL;
    eng_err err;
    if (eng_embedder_create(path, &cfg, &e, &err) != ENG_OK) {
        CHECK(false, "eng_embedder_create (backend %d): %s", (int)backend, err.msg);
        return false;
    }
    size_t lens[N_TEXTS];
    for (int s = 0; s < N_TEXTS; s++)
        lens[s] = strlen(TEXTS[s]);
    const eng_status st = eng_embed(e, TEXTS, lens, N_TEXTS, out, NULL, NULL, &err);
    CHECK(st == ENG_OK, "eng_embed (backend %d): %s", (int)backend, err.msg);
    eng_embedder_free(e);
    return st == ENG_OK;
}

static void check_embedder(const char *path, int d)
{
    float *cpu = malloc(sizeof(float) * N_TEXTS * (size_t)d);
    float *gpu = malloc(sizeof(float) * N_TEXTS * (size_t)d);
    if (embed_all(path, ENG_BACKEND_CPU, cpu) && embed_all(path, ENG_BACKEND_CUDA, gpu))
        for (int s = 0; s < N_TEXTS; s++) {
            const double c = cosine(gpu + (size_t)s * d, cpu + (size_t)s * d, d);
            printf("embedder on CUDA, text %d: cosine with the CPU embedder %.6f\n", s, c);
            CHECK(c >= COS_LIMIT, "embedder on CUDA, text %d: cosine %.6f", s, c);
        }
    free(cpu);
    free(gpu);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            path = argv[++i];
    if (!path) {
        fprintf(stderr, "usage: kt-encoder-cuda --model EMBEDDING.gguf\n");
        return 2;
    }
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) {
        printf("kt-encoder-cuda: no GPU, skipped\n");
        return 77;
    }
    emb_model *m = NULL;
    eng_err err;
    if (emb_model_load(path, &m, &err) != ENG_OK) {
        printf("kt-encoder-cuda: %s: %s\n", path, err.msg);
        return 1;
    }
    int32_t tokens[N_TEXTS * MAX_IDS], lens[N_TEXTS];
    tokenize(m, tokens, lens);
    const int d = m->n_embd;
    float *want = malloc(sizeof(float) * N_TEXTS * (size_t)d);
    cpu_encoder *c = NULL;
    if (cpu_encoder_create(m, 2, &c, &err) != ENG_OK ||
        cpu_encoder_run(c, tokens, lens, N_TEXTS, want, &err) != ENG_OK) {
        printf("kt-encoder-cuda: CPU encoder: %s\n", err.msg);
        return 1;
    }
    cpu_encoder_free(c);
    check_dtype(m, false, tokens, lens, want);
    check_dtype(m, true, tokens, lens, want);
    check_embedder(path, d);
    free(want);
    emb_model_free(m);
    printf("kt-encoder-cuda: %s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
}
