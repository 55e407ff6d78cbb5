/* bench_sampler.c — time of one CPU draw (eng_sample) over a real-sized vocabulary for each
 * sampling setting; the CPU backend pays it once per sequence per step. Then the stop-string
 * matcher's worst case the engine allows (64 stops of 1024 bytes that almost match), fed one
 * byte at a time as the step loop feeds it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "sampler.h"

/* Feeds out_bytes of 'a' runs broken by 'x' against 64 stops 'a'x1023 + one other byte. */
static int bench_stops(size_t out_bytes)
{
    enum { N_STOPS = 64, STOP_LEN = 1024 };
    static char mem[N_STOPS][STOP_LEN + 1];
    const char *stops[N_STOPS];
    for (int i = 0; i < N_STOPS; i++) {
        memset(mem[i], 'a', STOP_LEN - 1);
        mem[i][STOP_LEN - 1] = (char)(0x80 + i);
        mem[i][STOP_LEN] = '\0';
        stops[i] = mem[i];
    }
    eng_stop *s = NULL;
    if (eng_stop_create(stops, N_STOPS, NULL, 0, &s, NULL) != ENG_OK)
        return 1;
    size_t keep = 0, sink = 0;
    const double t0 = eng_clock_ms();
    for (size_t i = 0; i < out_bytes; i++) {
        const char c = (i * 2654435761u >> 7) % 1500 == 0 ? 'x' : 'a';
        if (eng_stop_feed(s, &c, 1, &keep))
            return 1;
        sink += keep;
    }
    const double ms = eng_clock_ms() - t0;
    printf("eng_stop_feed, 64 stops x 1024 B, %zu B fed one byte at a time\n", out_bytes);
    printf("  %-24s %8.3f ms in all, %8.3f us per byte\n", "stop strings", ms,
           ms * 1000.0 / (double)out_bytes);
    eng_stop_free(s);
    return sink == 1;
}

int main(int argc, char **argv)
{
    const int n_vocab = argc > 1 ? atoi(argv[1]) : 49152, draws = argc > 2 ? atoi(argv[2]) : 400;
    const long stop_bytes = argc > 3 ? atol(argv[3]) : 1 << 20;
    if (n_vocab < 2 || draws < 1 || stop_bytes < 1) {
        fprintf(stderr, "usage: bench_sampler [N_VOCAB (49152)] [DRAWS (400)] [STOP_BYTES (1 MiB)]\n");
        return 2;
    }
    float *logits = malloc(sizeof(float) * (size_t)n_vocab);
    float *scratch = malloc(sizeof(float) * (size_t)n_vocab);
    if (!logits || !scratch)
        return 1;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < n_vocab; i++) { /* logits shaped like a model's: a few large, most low */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const double u = (double)(x >> 11) * 0x1.0p-53;
        logits[i] = (float)(u * u * u * 20.0 - 5.0);
    }
    const struct { const char *name; eng_sampler_params p; } cases[] = {
        {"greedy", {0.0f, 0, 1.0f, 1}},
        {"temperature 0.8", {0.8f, 0, 1.0f, 1}},
        {"top-k 40", {0.8f, 40, 1.0f, 1}},
        {"top-p 0.95", {0.8f, 0, 0.95f, 1}},
        {"top-k 40 + top-p 0.95", {0.8f, 40, 0.95f, 1}},
    };
    printf("eng_sample over %d logits, %d draws each\n", n_vocab, draws);
    long sink = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const double t0 = eng_clock_ms();
        for (int d = 0; d < draws; d++)
            sink += eng_sample(logits, n_vocab, &cases[c].p, (uint64_t)d, scratch);
        printf("  %-24s %8.3f ms per draw\n", cases[c].name, (eng_clock_ms() - t0) / draws);
    }
    free(logits);
    free(scratch);
    return sink == -1 || bench_stops((size_t)stop_bytes);
}
