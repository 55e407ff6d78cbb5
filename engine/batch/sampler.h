/* sampler.h — token sampling (greedy, temperature, top-k, top-p) as a pure function of the
 * logits, the parameters and a draw counter, and stop-string matching over generated text. */
#ifndef SERVAL_SAMPLER_H
#define SERVAL_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serval_engine.h" /* eng_sampler_params */
#include "status.h"

/* A stateful sampler counting its own draws (tests; the engine calls eng_sample with each
 * request's draw index). */
typedef struct eng_sampler eng_sampler;

eng_status eng_sampler_create(const eng_sampler_params *p, int32_t n_vocab, eng_sampler **out,
                              eng_err *err);
void eng_sampler_free(eng_sampler *s);

/* Picks a token from logits[n_vocab] (not modified) with eng_sample, counting draws from 0. */
int32_t eng_sampler_sample(eng_sampler *s, const float *logits);

/* The sampling rule every backend follows (kernels/sampling.cu is its GPU twin; both follow
 * kernels/ref/sampling.c). Greedy when temperature <= 0: the lowest index among equal maxima.
 * Otherwise z = logits / temperature; top-k keeps the values >= the k-th largest (ties kept);
 * top-p then raises the threshold to the value at which the softmax mass, largest first,
 * reaches top_p (ties kept); one uniform draw eng_sample_uniform(seed, step) is walked over the
 * kept tokens in vocabulary order. step is the draw's index within the request (0 for its
 * first generated token), so a preempted and recomputed request draws the same tokens, and
 * the CPU and the GPU pick the same token from the same logits. scratch: [n_vocab] floats. */
int32_t eng_sample(const float *logits, int32_t n_vocab, const eng_sampler_params *p,
                   uint64_t step, float *scratch);

/* Stop strings: fed the generated text piece by piece, finds the first stop string that
 * appears in the output (or straddles the end of a caller-given context, e.g. the prompt,
 * and the output), and says how much of the output is safe to emit now. */
typedef struct eng_stop eng_stop;

/* Copies the n stop strings (empty strings are ignored) and the context's last bytes. */
eng_status eng_stop_create(const char *const *stops, size_t n, const char *context,
                           size_t context_len, eng_stop **out, eng_err *err);
void eng_stop_free(eng_stop *s);

/* Appends output bytes. Returns true when a stop string has matched; then *keep is the
 * number of output bytes before it. Otherwise *keep is how many output bytes (from the
 * start of the output) can no longer become part of a stop string. */
bool eng_stop_feed(eng_stop *s, const char *piece, size_t len, size_t *keep);

/* Whether eng_stop_feed ran out of memory (it then reported a stop at the end of what it had). */
bool eng_stop_failed(const eng_stop *s);

/* The whole output fed so far (owned by s). */
const char *eng_stop_output(const eng_stop *s, size_t *len);

#endif
