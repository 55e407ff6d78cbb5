/* serval_embed.h — the embedding API: load a sentence-embedding model (GGUF architecture
 * `bert`, e.g. all-MiniLM-L6-v2 converted by `serval convert`), then turn texts into
 * L2-normalised vectors from any thread; concurrent callers are batched together. */
#ifndef SERVAL_EMBED_H
#define SERVAL_EMBED_H

/*
 * One embedder = one encoder model on one backend, driven by its own worker thread with its
 * own queue, separate from the decoder's step loop (serval_engine.h): an embedding batch never
 * waits for, or holds up, a completion step except by sharing the CPU cores (or the GPU).
 *
 * Usage:
 *   eng_embedder_config cfg = eng_embedder_config_defaults();
 *   eng_embedder *e;
 *   if (eng_embedder_create("models/all-MiniLM-L6-v2.f16.gguf", &cfg, &e, &err) != ENG_OK) ...;
 *   float *v = malloc(sizeof(float) * n * eng_embedder_dim(e));
 *   eng_embed(e, texts, lens, n, v, NULL, NULL, &err);        // row i = texts[i]'s vector
 *   eng_embedder_free(e);
 *
 * What a text becomes: the model's WordPiece tokenizer (lower-casing, accent stripping and CJK
 * spacing as the model's files say), [CLS] ... [SEP], cut to eng_embedder_max_tokens() tokens
 * (the [SEP] kept last) when longer; the encoder; mean or CLS pooling as the model says; L2
 * normalisation (a vector of zeros stays zeros). Embeddings of one text do not depend on which
 * other texts share its batch (no cross-talk through padding).
 *
 * Thread-safety: every function may be called from any thread at once, except that
 * eng_embedder_free must not race any other call on the same embedder.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serval_engine.h" /* eng_backend_kind */
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eng_embedder eng_embedder;

typedef struct eng_embedder_config {
    eng_backend_kind backend; /* ENG_BACKEND_CPU (default) or ENG_BACKEND_CUDA (CUDA
                               * builds: GPU 0, bf16 weights and activations) */
    int n_threads;            /* CPU threads; 0: the online CPUs */
    int32_t max_batch;        /* texts one encoder pass runs at most; 0: 32 */
    int32_t max_waiting;      /* texts queued and not yet running, at most; 0: 1024. A call
                               * that would exceed it fails with ENG_ERR_OVERLOAD */
    int nice;                 /* the encoder's threads run at this nice value above the
                               * process's (Linux, per thread), so on shared cores the
                               * completion engine's step loop runs first; 0: none. The
                               * defaults use 10 (embedding is background work beside
                               * keystroke-latency completions) */
} eng_embedder_config;

/* CPU, all online CPUs, max_batch 32, max_waiting 1024, nice 10. */
eng_embedder_config eng_embedder_config_defaults(void);

/* Loads a `bert` GGUF (weights F32 or F16, a WordPiece vocabulary) and starts the worker.
 * Errors: ENG_ERR_IO (cannot open), ENG_ERR_FORMAT (malformed, a missing or misshapen tensor
 * or key), ENG_ERR_UNSUPPORTED (another architecture, or a backend this build lacks),
 * ENG_ERR_INVALID (bad cfg values), ENG_ERR_NOMEM; err says which and where. cfg may be NULL
 * (the defaults). *out is owned by the caller: free it with eng_embedder_free. */
eng_status eng_embedder_create(const char *gguf_path, const eng_embedder_config *cfg,
                               eng_embedder **out, eng_err *err);

/* The vector length (n_embd: 384 for all-MiniLM-L6-v2). */
int32_t eng_embedder_dim(const eng_embedder *e);

/* Texts queued and not yet taken into a batch (for metrics and tests). */
int32_t eng_embedder_waiting(eng_embedder *e);

/* The most tokens one text is embedded with, [CLS] and [SEP] included (the model's position
 * count: 512 for all-MiniLM-L6-v2); longer texts are truncated to it. */
int32_t eng_embedder_max_tokens(const eng_embedder *e);

/* general.name of the model, or its file name. Owned by the embedder. */
const char *eng_embedder_model_name(const eng_embedder *e);

/* Embeds n >= 1 texts (texts[i] of lens[i] bytes, UTF-8; not NUL-terminated necessarily) into
 * out, a caller-owned array of n * dim floats, row i for text i, each row L2-normalised.
 * n_tokens_out (may be NULL; n entries) receives the tokens each text was embedded with
 * ([CLS] and [SEP] included); truncated_out (may be NULL; n entries) is set true for each
 * text that was cut to eng_embedder_max_tokens(). Blocks until done; the texts of concurrent
 * callers run in shared batches; a call of at most 8 texts goes ahead of queued larger calls
 * (a completion's query does not wait for a background indexing run's backlog). Errors (out is then undefined): ENG_ERR_INVALID (n < 1, NULL
 * text with a length, invalid UTF-8 names the text index; more than max_waiting texts in one
 * call, which could never be queued), ENG_ERR_OVERLOAD (the queue is
 * full: try later), ENG_ERR_CANCELLED (the embedder is shutting down), ENG_ERR_NOMEM, a
 * backend failure. */
eng_status eng_embed(eng_embedder *e, const char *const *texts, const size_t *lens, int32_t n,
                     float *out, int32_t *n_tokens_out, bool *truncated_out, eng_err *err);

/* As eng_embed, for texts already tokenized with the model's vocabulary (the OpenAI API's
 * token-array input): tokens[i] holds n_tok[i] ids, embedded as given — no [CLS]/[SEP] added
 * — and cut to eng_embedder_max_tokens() when longer. ENG_ERR_INVALID for an empty array or
 * an id outside the vocabulary (the message names both indices). */
eng_status eng_embed_tokens(eng_embedder *e, const int32_t *const *tokens, const int32_t *n_tok,
                            int32_t n, float *out, int32_t *n_tokens_out, bool *truncated_out,
                            eng_err *err);

/* Tokenizes text the way eng_embed does ([CLS] ... [SEP], truncated to max_tokens):
 * *ids is a new array owned by the caller (free()), *n its length. */
eng_status eng_embedder_tokenize(const eng_embedder *e, const char *text, size_t len,
                                 int32_t **ids, int32_t *n, eng_err *err);

/* Stops the worker (queued calls return ENG_ERR_CANCELLED) and frees everything. NULL does
 * nothing. */
void eng_embedder_free(eng_embedder *e);

/* Converts a Hugging Face BERT folder (model.safetensors, config.json, vocab.txt or
 * tokenizer.json; optional tokenizer_config.json and sentence-transformers'
 * 1_Pooling/config.json, which picks mean or CLS pooling) into a GGUF at out_path with
 * llama.cpp's `bert` names and metadata, so llama.cpp loads the same file: matrices F16 (F32
 * when f32), vectors F32. name: general.name (NULL: the folder's name). Every input is checked
 * (ENG_ERR_IO for a missing file, ENG_ERR_FORMAT for malformed or inconsistent ones,
 * ENG_ERR_UNSUPPORTED for another architecture, activation, tokenizer or pooling; the message
 * names the file and the field). The output is written to a temporary name and renamed: a
 * failure leaves no file at out_path. */
eng_status eng_embed_convert(const char *dir, const char *out_path, bool f32, const char *name,
                             eng_err *err);

#ifdef __cplusplus
}
#endif

#endif
