/* bench_sampler.c — time of one CPU draw (eng_sample) over a real-sized vocabulary for each
 * sampling setting; the CPU backend pays it once per sequence per step. */
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "sampler.h"

int main(int argc, char **argv)
{
    const int n_vocab = argc > 1 ? atoi(argv[1]) : 49152, draws = argc > 2 ? atoi(argv[2]) : 400;
    if (n_vocab < 2 || draws < 1) {
        fprintf(stderr, "usage: bench_sampler [N_VOCAB (49152)] [DRAWS (400)]\n");
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
    return sink == -1;
}
