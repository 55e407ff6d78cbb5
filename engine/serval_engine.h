/* serval_engine.h — the continuous-batching engine's public API: create an engine over a
 * loaded model, submit requests from any thread, read their output through a channel or be
 * notified by a callback, cancel them, and read the engine's stats. */
#ifndef SERVAL_ENGINE_H
#define SERVAL_ENGINE_H

/*
 * One engine = one model replica on one backend, driven by one step-loop thread. Each step the
 * scheduler (engine/batch/sched.c) picks the decodes of running sequences and chunks of waiting
 * prompts under a token budget, the backend runs them as one batch over the paged KV cache
 * (engine/kv_cache.h, prefix caching included), and the sampler picks each sequence's next
 * token. Requests are tokenized on the submitting thread; eng_submit never blocks on the step
 * loop and fails fast (ENG_ERR_OVERLOAD) when the waiting queue is full, before tokenizing.
 *
 * Lifetime of a request:
 *   eng_request *r;
 *   eng_submit(e, &params, &r, &err);                 // returns at once
 *   while (eng_request_read(r, buf, cap, -1, &out) == ENG_OK && !out.done) emit(buf, out.text_len);
 *   eng_request_release(r);                           // cancels it if still running
 *
 * Output is text, already cut at stop strings and held back while it could still turn into a
 * stop string or ends inside a UTF-8 sequence, so every byte read can be sent to a client.
 * Token ids are available too (eng_request_tokens).
 *
 * Thread-safety: every function here may be called from any thread, except that one request
 * must not be read by two threads at once. Callbacks run on the step-loop thread: they must be
 * quick and must not block; they may call eng_request_read with timeout 0 and
 * eng_request_cancel, nothing else of this API.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct eng_model eng_model;
typedef struct eng_engine eng_engine;
typedef struct eng_request eng_request;

typedef enum eng_backend_kind {
    ENG_BACKEND_CPU = 0,
    ENG_BACKEND_CUDA
} eng_backend_kind;

/* How the step loop picks its batch. THROUGHPUT: service order (priority, then oldest), each
 * step up to step_tokens tokens. LATENCY: earliest deadline first, and a step token budget
 * sized from the measured step time so running requests finish within their deadlines;
 * requests past their deadline go behind those that can still meet theirs, never shed
 * (engine/batch/scheduler.h). */
typedef enum eng_schedule {
    ENG_SCHEDULE_LATENCY = 0,
    ENG_SCHEDULE_THROUGHPUT
} eng_schedule;

/* Speculative decoding (engine/batch/spec.h). DEFAULT: on with the CPU backend (it pays at
 * batch 1 there: bench/RESULTS.md), off with CUDA until measured on a GPU (a step with a
 * draft cannot replay the decode CUDA graphs; tools/gpu_check.sh SPEC=1 measures it). */
typedef enum eng_speculate {
    ENG_SPECULATE_DEFAULT = 0,
    ENG_SPECULATE_ON,
    ENG_SPECULATE_OFF
} eng_speculate;

typedef struct eng_engine_config {
    eng_backend_kind backend;
    int n_threads;           /* CPU backend threads; 0: the number of online CPUs */
    int tp;                  /* tensor parallelism: ranks the model is split across (Megatron:
                              * heads, FFN columns, vocabulary); 0 or 1: none. CPU: rank thread
                              * groups sharing n_threads (0 threads: at least one per rank) */
    int n_gpus;              /* CUDA: the devices of this engine, gpus[0 .. n_gpus): one per tp
                              * rank (one with tp 1); 0: device 0 .. tp-1 */
    int gpus[64];
    int64_t kv_bytes;        /* KV cache memory budget; 0: 1 GiB on the CPU, 90% of free GPU memory */
    int32_t block_size;      /* tokens per KV block; 0: 16 */
    bool prefix_caching;     /* reuse cached prompt blocks (default true) */
    int32_t max_seq_len;     /* prompt + output limit; 0: min(model's training context, 8192) */
    int32_t max_running;     /* sequences in one batch at most; 0: 64 */
    int32_t max_waiting;     /* submitted but not yet running, at most; 0: 256 */
    int32_t step_tokens;     /* token budget of one step (decodes + prefill chunks); 0: 512 */
    bool check_invariants;   /* verify the KV pool's accounting after every step (tests) */
    bool no_cuda_graphs;     /* CUDA: launch decode steps kernel by kernel instead of replaying
                              * captured graphs (debugging, comparison) */
    bool cuda_fp16;          /* CUDA: fp16 weights and activations instead of bf16 */
    /* Completion traffic (engine/README.md, "Scheduling for keystrokes"): */
    bool supersede;          /* a request with a session key ends the older requests with the
                              * same key, queued or running, at the next step (default true) */
    eng_schedule schedule;   /* ENG_SCHEDULE_LATENCY (the default) or ENG_SCHEDULE_THROUGHPUT */
    int32_t deadline_ms;     /* latency target of requests that name none, submit -> done;
                              * 0: 1000; latency scheduling orders and budgets by it */
    /* Speculative decoding drafted from the prompt (engine/batch/spec.h): exact, greedy and
     * seeded output are the same with it on or off. */
    eng_speculate speculate; /* ENG_SPECULATE_DEFAULT: the backend's default (see eng_speculate) */
    int32_t draft_max;       /* most drafted tokens per request and step, [1, 16]; 0: 8 */
    int32_t spec_step_tokens; /* drafts are added only while a step stays within this many
                              * tokens (above it the step is compute-bound); 0: the backend's
                              * default (CPU 8, CUDA 64) */
} eng_engine_config;

/* ---- models ----------------------------------------------------------------------------- */

/* Loads and validates a GGUF model (any supported architecture). On failure *out is NULL and
 * err says what was wrong (missing tensor, wrong shape or type, unsupported architecture, ...).
 * *out is owned by the caller: free it with eng_model_free (NULL does nothing). */
eng_status eng_model_load(const char *path, eng_model **out, eng_err *err);
void eng_model_free(eng_model *m);

/* What front ends may know of a model. Strings are owned by the model. */
const char *eng_model_name(const eng_model *m);       /* general.name, or the file name */
const char *eng_model_arch_name(const eng_model *m);  /* GGUF architecture ("llama", ...) */
int32_t eng_model_n_vocab(const eng_model *m);
int32_t eng_model_n_layer(const eng_model *m);
int32_t eng_model_n_ctx_train(const eng_model *m);    /* the context it was trained for */
uint64_t eng_model_weight_bytes(const eng_model *m);  /* bytes one decode step reads */
/* FIM and chat capabilities come from the prompt builder (prompt/prompt.h), which detects the
 * model's templates. */

/* Tokenizes a prompt the way the model expects, the one place that decides it: BOS first when
 * add_special and the model asks for one (tokenizer.ggml.add_bos_token), special tokens
 * written in the text (<fim_prefix>, <|im_start|>) recognised when parse_special. *ids is a
 * new array owned by the caller (free()), *n its length (0 for empty text without BOS).
 * ENG_ERR_INVALID when the text cannot be tokenized, ENG_ERR_NOMEM. */
eng_status eng_model_tokenize(const eng_model *m, const char *text, size_t len, bool add_special,
                              bool parse_special, int32_t **ids, int32_t *n, eng_err *err);

/* ---- sampling parameters ---------------------------------------------------------------- */

typedef struct eng_sampler_params {
    float temperature; /* <= 0: greedy (argmax) */
    int32_t top_k;     /* 0: off; >= the vocabulary: off too (every token kept) */
    float top_p;       /* 1: off; in (0, 1] */
    uint64_t seed;
} eng_sampler_params;

/* Greedy, top-k off, top-p off, seed 0. */
eng_sampler_params eng_sampler_defaults(void);

/* The one policy for sampling parameters, applied by eng_submit for every front end:
 * temperature in [0, 100], top_k >= 0, top_p in (0, 1]; anything else is ENG_ERR_INVALID with
 * a message naming the parameter. A top_k above n_vocab (the model's vocabulary) is clipped to
 * n_vocab, which keeps every token (as llama.cpp and vLLM do): that is the only change made to
 * *p, and only on ENG_OK. */
eng_status eng_sampler_params_check(eng_sampler_params *p, int32_t n_vocab, eng_err *err);

/* ---- engines ---------------------------------------------------------------------------- */

/* The defaults above (prefix caching on). */
eng_engine_config eng_engine_config_defaults(void);

/* Creates an engine for `model` (borrowed: it must outlive the engine) and starts its
 * step-loop thread. Sizes the KV pool from cfg->kv_bytes; ENG_ERR_INVALID for out-of-range
 * settings or a budget below one full-length sequence, ENG_ERR_UNSUPPORTED for a backend
 * this build lacks. *out is owned by the caller: free it with eng_engine_free. */
eng_status eng_engine_create(const eng_model *model, const eng_engine_config *cfg,
                             eng_engine **out, eng_err *err);

/* Stops the step loop, finishes every outstanding request as cancelled (readers wake up with
 * done = true, finish ENG_FINISH_CANCELLED) and frees the engine. Request handles stay valid
 * until released. eng_engine_free(NULL) does nothing. */
void eng_engine_free(eng_engine *e);

/* The model the engine serves. */
const eng_model *eng_engine_model(const eng_engine *e);

/* The prompt + output limit in effect (max_seq_len after defaults were applied). */
int32_t eng_engine_max_seq_len(const eng_engine *e);

/* The longest text prompt eng_submit will tokenize, in bytes: 64 bytes per position the engine
 * can hold (real text averages 3-5 bytes per token). Longer text is ENG_ERR_TOO_LONG without
 * tokenizing; front ends refuse request text over it before building a prompt. */
size_t eng_engine_max_text_bytes(const eng_engine *e);

/* Whether eng_submit would queue a request now: ENG_ERR_OVERLOAD (counted as rejected) when
 * max_waiting requests already wait, ENG_ERR_CANCELLED while shutting down. Front ends call it
 * before building and tokenizing a prompt, so an overloaded server refuses for the cost of a
 * lock; eng_submit checks again. */
eng_status eng_engine_admission_check(eng_engine *e, eng_err *err);

/* ---- requests --------------------------------------------------------------------------- */

/* Called on the step-loop thread whenever new output is readable or the request finished. */
typedef void (*eng_notify_fn)(void *user, eng_request *r);

typedef struct eng_request_params {
    /* The prompt: token ids (n_tokens > 0), or else text (tokenized with special tokens such
     * as <fim_prefix> recognised; BOS added when the model asks for it). Both are copied. */
    const int32_t *tokens;
    int32_t n_tokens;
    const char *text;
    size_t text_len;

    eng_sampler_params sampling; /* eng_sampler_defaults(): greedy */
    int32_t max_tokens;          /* most tokens to generate; clipped to max_seq_len - prompt */
    const char *const *stop;     /* stop strings (copied); the output ends before the first */
    size_t n_stop;
    bool ignore_eos;             /* keep going past end-of-generation tokens */
    int32_t priority;            /* higher runs first and is preempted last; default 0 */

    /* Which prefix cache the prompt may reuse and fill: requests share cached prompt blocks
     * only with requests of the same salt; 0 (the default) is the cache every unsalted request
     * shares. With one shared cache, a client can tell from n_cached_tokens or from the time to
     * its first token whether someone else recently sent a prompt that starts like its own,
     * i.e. learn about other users' prompts. A deployment where that matters gives each API
     * token (or tenant) its own salt, e.g. a keyed hash of its identity: then only that
     * token's own earlier requests speed it up. The cost: no reuse across salts (a system
     * prompt or file shared by many users is computed and cached once per salt), and the same
     * KV pool holds every salt's cached blocks, so more salts mean fewer hits for each.
     * Unguessable salts are not needed for isolation, only distinct ones. */
    uint64_t cache_salt;

    /* Supersede (eng_engine_config.supersede): a request with a session key (0: none) ends
     * every older request with the same key and cache_salt, waiting or running, at the next
     * step; they finish with ENG_FINISH_SUPERSEDED, and the prompt blocks they computed stay
     * in the prefix cache for the newer one. Front ends derive it from who sent the request
     * (its API token) and what it is about (one editor's file), so one user never ends
     * another's requests. */
    uint64_t session_key;
    int32_t deadline_ms;         /* latency target from submit; 0: the engine's deadline_ms */

    eng_notify_fn notify;        /* optional */
    void *notify_user;
} eng_request_params;

/* Zeroed params with greedy sampling and max_tokens 64. */
eng_request_params eng_request_params_defaults(void);

typedef enum eng_finish {
    ENG_FINISH_NONE = 0,   /* still running */
    ENG_FINISH_STOP,       /* end-of-generation token or a stop string */
    ENG_FINISH_LENGTH,     /* max_tokens or max_seq_len reached */
    ENG_FINISH_CANCELLED,  /* eng_request_cancel, release or engine shutdown */
    ENG_FINISH_ERROR,      /* the backend failed; see eng_request_output.error */
    ENG_FINISH_SUPERSEDED  /* a newer request with the same session key arrived */
} eng_finish;

/* "stop", "length", "cancelled", "error", "superseded" ("" for NONE). */
const char *eng_finish_str(eng_finish f);

/* Queues a request and returns its handle at once. Errors (nothing is queued then):
 * ENG_ERR_INVALID (empty prompt, bad token id, bad sampling or max_tokens < 1),
 * ENG_ERR_TOO_LONG (prompt >= max_seq_len, or more blocks than the whole KV pool; a text
 * prompt of 64 bytes or more per position that would fit is refused without tokenizing it),
 * ENG_ERR_OVERLOAD (the waiting queue is full: retry later), ENG_ERR_CANCELLED (the engine is
 * shutting down). Overload, shutdown and the text length are checked before the prompt is
 * tokenized, so refusing a flood of huge prompts costs O(1) each; the overload check is made
 * again when queueing. *out is owned by the caller: release it with eng_request_release. */
eng_status eng_submit(eng_engine *e, const eng_request_params *p, eng_request **out,
                      eng_err *err);

/* Supersede across engines: ends this engine's requests with this session key and cache_salt
 * that were submitted before the call, waiting or running, at its next step (finish
 * ENG_FINISH_SUPERSEDED), as a newer request of the session submitted here would. For a
 * router that sent the newer request to another engine (serval_router.h). Nothing happens
 * for key 0, with supersede off, or when the engine has nothing unfinished. O(1) here; the
 * step loop scans its lists once per call. */
void eng_engine_supersede(eng_engine *e, uint64_t session_key, uint64_t cache_salt);

/* Asks the engine to stop the request; its KV blocks are freed at the next step and readers
 * see done with ENG_FINISH_CANCELLED (unless it finished first). Idempotent. */
void eng_request_cancel(eng_request *r);

/* Cancels (if still running) and drops the caller's handle. Once it returns, the request's
 * notify callback is not running and is never called again, so its user data may be freed
 * (do not call it from inside that callback). NULL does nothing. */
void eng_request_release(eng_request *r);

typedef struct eng_request_output {
    size_t text_len;         /* bytes of new text written to buf */
    int32_t n_new_tokens;    /* tokens generated since the previous read */
    bool done;               /* finished and every byte of text has been read */
    eng_finish finish;       /* valid when done */
    eng_status status;       /* ENG_OK unless finish is ERROR */
    char error[256];         /* message when finish is ERROR */
    int32_t n_prompt_tokens;
    int32_t n_cached_tokens; /* prompt tokens reused from the prefix cache (first admission) */
    int32_t n_output_tokens; /* generated so far */
    int32_t n_preemptions;
    double queue_ms;         /* submit -> first scheduled */
    double first_token_ms;   /* submit -> first token (0 before it) */
    double total_ms;         /* submit -> finish (0 before it) */
} eng_request_output;

/* Copies up to cap bytes of output text not read before into buf (not NUL-terminated) and
 * fills *out. The text is well-formed UTF-8 — bytes the model produced that are not (an
 * invalid byte token, a character cut off by the end of the generation) arrive as U+FFFD —
 * and with cap >= 4 every read ends on a character boundary. Waits for something new up to timeout_ms (0: don't wait, < 0: wait forever);
 * on timeout returns ENG_OK with text_len 0 and done false. */
eng_status eng_request_read(eng_request *r, char *buf, size_t cap, int timeout_ms,
                            eng_request_output *out);

/* Copies up to cap generated token ids into ids and returns how many were generated so far. */
int32_t eng_request_tokens(eng_request *r, int32_t *ids, int32_t cap);

/* ---- stats ------------------------------------------------------------------------------ */

/* A latency histogram the engine keeps, in ms: buckets[i] counts the observations <=
 * eng_hist_bounds_ms[i] (and above the bound before it), buckets[ENG_HIST_BUCKETS] those above
 * every bound. */
#define ENG_HIST_BUCKETS 16
extern const double eng_hist_bounds_ms[ENG_HIST_BUCKETS]; /* 1 ms .. 120 s, ascending */
typedef struct eng_hist {
    int64_t count;
    double sum_ms, max_ms;
    int64_t buckets[ENG_HIST_BUCKETS + 1];
} eng_hist;

typedef struct eng_engine_stats {
    int32_t running;            /* sequences holding KV blocks */
    int32_t waiting;            /* queued, incl. preempted ones */
    int32_t kv_blocks_total;
    int32_t kv_blocks_used;     /* referenced by running sequences */
    int32_t kv_blocks_free;
    int32_t kv_blocks_cached;   /* unreferenced, kept for prefix reuse */
    int32_t block_size;
    int64_t kv_slots_reserved;  /* token slots in running sequences' blocks */
    int64_t kv_slots_filled;    /* of those, positions holding computed K/V */
    double prefix_hit_rate;     /* reused prompt tokens / prompt tokens looked up */
    int64_t requests_submitted;
    int64_t requests_finished;  /* any finish reason */
    int64_t requests_cancelled;
    int64_t requests_rejected;  /* overload */
    int64_t requests_superseded; /* ended by a newer request with the same session key */
    int64_t requests_late;      /* first scheduled after their deadline had passed */
    int64_t preemptions;
    int64_t prompt_tokens_computed;
    int64_t prompt_tokens_cached;
    int64_t tokens_generated;
    int64_t steps;
    int32_t failed_steps_in_a_row; /* backend failures since its last step that succeeded
                                    * (the router takes a replica out after a few) */
    int32_t max_batch_seqs;     /* most sequences in one step so far */
    int32_t max_batch_tokens;   /* most tokens in one step so far */
    double mean_batch_seqs;     /* over steps */
    double last_step_ms;
    double mean_step_ms;
    double gen_tokens_per_s;    /* generated tokens / busy time over the last steps */
    /* Requests that ended cancelled (a client's abort, a front end's timeout, shutdown) or
     * superseded: the work spent on them (a superseded prompt's blocks stay cached). */
    int64_t wasted_prompt_tokens;    /* prompt positions computed for them (recomputes too) */
    int64_t wasted_generated_tokens; /* tokens generated for them */
    /* Requests that finished (stop or length), every front end: submit to first scheduled, to
     * first token, to done. */
    eng_hist queue_hist, first_token_hist, total_hist;
    /* Abort to free: from a caller's eng_request_cancel (or release) of an unfinished request
     * to the step loop freeing its KV blocks and its queue place. */
    eng_hist abort_free_hist;
    int64_t spec_drafted;       /* speculative decoding: tokens drafted from the context */
    int64_t spec_accepted;      /* of those, the model agreed with */
    int64_t spec_passes;        /* verification passes (a request's entry with a draft) */
    int64_t spec_tokens;        /* tokens those passes produced: accepted + the model's own */
} eng_engine_stats;

void eng_engine_stats_get(eng_engine *e, eng_engine_stats *out);

#endif
