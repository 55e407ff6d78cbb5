/* engine_impl.h — the engine's and requests' private state, shared by engine.c (API, request
 * lifecycle, output) and sched.c (the step loop's batch planning, scheduler.h). */
#ifndef SERVAL_ENGINE_IMPL_H
#define SERVAL_ENGINE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "backend.h"
#include "kv_cache.h"
#include "scheduler.h"
#include "serval_engine.h"
#include "spec.h"

enum { STAT_WINDOW = 32 }; /* steps averaged for gen_tokens_per_s */

struct eng_request {
    /* Set at submit, read-only afterwards. */
    uint64_t id;             /* submission order: older requests have smaller ids */
    int32_t priority;
    uint64_t cache_salt;     /* the prefix cache it may share (kv_seq_create) */
    uint64_t session_key;    /* 0: none; mixed with cache_salt (supersede) */
    double deadline;         /* ms, monotonic: t_submit + its deadline_ms (latency schedule) */
    int32_t n_prompt;
    int32_t max_tokens;      /* after clipping to max_seq_len */
    bool ignore_eos;
    double t_submit;         /* ms, monotonic */
    eng_notify_fn notify;    /* cleared by eng_request_release, under notify_mu */
    void *notify_user;
    pthread_mutex_t notify_mu; /* held while notify runs, so release can wait it out */

    /* Step-loop only. tokens = prompt then generated, [n_prompt + max_tokens]. */
    int32_t *tokens;
    int32_t n_tokens;
    int32_t n_computed;      /* positions whose K/V are in the cache (0 while waiting) */
    kv_seq *seq;             /* NULL while waiting */
    eng_sampler_params sampling;
    eng_stop *stop;
    size_t published;        /* output bytes already handed to the reader side */
    bool admitted_once;
    int32_t n_draft;         /* tokens drafted for the next step, at tokens[n_tokens, n_tokens +
                              * n_draft) (spec.h); planned with the decode (scheduler.h) */
    spec_req spec;           /* draft length and acceptance (spec.h) */

    /* Shared with readers, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text;              /* published output text [text_len] */
    size_t text_len, text_cap, read_pos;
    int32_t n_gen, n_gen_read;
    int32_t n_cached;
    int32_t n_preempt;
    bool done;
    eng_finish finish;
    eng_status status;
    char error[256];
    double t_sched, t_first, t_done; /* ms since submit; 0 until it happens */

    atomic_bool cancel;
    _Atomic int64_t t_cancel_us; /* eng_clock_ms() * 1000 of the first cancel; 0: none */
    int32_t n_prompt_computed;   /* step-loop only: prompt positions run (recomputes too) */
    atomic_int refs;         /* the caller's handle + the engine's while it is queued */
};

struct eng_engine {
    const eng_model *m;
    eng_engine_config cfg;
    eng_backend *be;
    kv_cache *kv;
    pthread_t thread;
    bool thread_started;

    /* Under mu: the inbox of submitted requests, shutdown flag, published stats. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    eng_request **inbox;     /* [max_waiting] */
    int32_t n_inbox;
    int32_t n_waiting_new;   /* submitted, never admitted yet (inbox + waiting): the bound */
    uint64_t next_id;
    bool stopping;
    /* eng_engine_supersede's requests not yet applied: the mixed session key, and the first id
     * they spare ([n_remote]; the step loop takes the arrays over with the inbox). */
    uint64_t *remote_key, *remote_before;
    int32_t n_remote, cap_remote;
    eng_engine_stats stats;

    /* Step-loop only. */
    sched_state *sched;      /* the waiting and running lists and the step's plan */
    int32_t *b_tokens, *b_pos, *b_seq, *b_logits_idx; /* [step_tokens] */
    const int32_t **b_tables; /* [max_running] */
    int32_t *b_prompt_len;    /* [max_running] each planned sequence's prompt length */
    eng_sample_row *b_rows;  /* [max_logits] sampling of each logits row */
    int32_t *b_next;         /* [max_logits] the tokens the backend drew */
    spec_config spec;        /* speculative decoding settings (spec.h) */
    int64_t spec_drafted, spec_accepted, spec_passes, spec_emitted; /* published in stats */
    double win_ms[STAT_WINDOW];
    int32_t win_tok[STAT_WINDOW];
    int64_t n_stat_steps;
    double sum_step_ms, sum_batch_seqs;
};

#endif
