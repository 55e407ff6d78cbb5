/* grpc_impl.h — private to the gRPC server files: the call and server structs shared by
 * grpc_server.c (call machinery: completion queue, sends, engine output, workers) and
 * grpc_lifecycle.c (start with its limits and TLS, the watchdog, drain, abort, stop).
 *
 * Locks: code holding a call's c->mu never takes s->mu, so s->mu -> c->mu is the only order
 * (scans ref calls under s->mu, then lock each c->mu after letting s->mu go). Refs: a call is freed when its refs reach 0 (batches, engine request, ready-list
 * entry, work-queue entry, a scan's temporary ref). */
#ifndef SERVAL_RPC_GRPC_IMPL_H
#define SERVAL_RPC_GRPC_IMPL_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "grpc_handlers.h"
#include "grpc_server.h"

#define GS_REQUEST_SLOTS 16 /* grpc_server_request_call kept outstanding */
#define GS_WORKERS 2        /* threads that parse, tokenize and submit (never the pollers) */

typedef enum gs_tag_kind { TAG_NEW, TAG_RECV, TAG_SEND, TAG_CLOSE, TAG_SHUTDOWN } gs_tag_kind;

/* A completion-queue tag. The thread that hands one to grpc has written the call it points at;
 * the poller that gets it back reads that call. grpc's queue orders the two, but libgrpc is not
 * built with ThreadSanitizer, so the order is also published on the tag itself: gs_tag_arm
 * (release) right before the tag goes to grpc, gs_tag_take (acquire) when a poller gets it. */
typedef struct gs_tag {
    gs_call *c; /* NULL for TAG_SHUTDOWN */
    gs_tag_kind kind;
    atomic_uint armed; /* times handed to grpc: the release/acquire pair above */
} gs_tag;

static inline void *gs_tag_arm(gs_tag *t)
{
    atomic_fetch_add_explicit(&t->armed, 1, memory_order_release);
    return t;
}

static inline gs_tag *gs_tag_take(void *tag)
{
    gs_tag *t = tag;
    (void)atomic_load_explicit(&t->armed, memory_order_acquire);
    return t;
}

/* Where a call is; moves forward only (the watchdog and on_recv race with compare-exchange). */
typedef enum gs_phase {
    GS_PHASE_SLOT = 0,   /* waiting in grpc_server_request_call */
    GS_PHASE_WAIT_MSG,   /* accepted, its request message not yet received */
    GS_PHASE_HANDLING,   /* message received: parsing, tokenizing, answering */
    GS_PHASE_GENERATING, /* an engine request runs for it */
    GS_PHASE_TIMED_OUT   /* the watchdog ended it (message or generation timeout) */
} gs_phase;

struct gs_call {
    rpc_grpc_server *s;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv_bb; /* request message, owned until parsed */
    grpc_byte_buffer *send_bb; /* message of the send in flight */
    grpc_slice status_details;
    bool has_status_details;
    /* x-request-id (initial and trailing) and x-serval-timings (trailing): slices owned here
     * until call_free (grpc reads them until the batch completes); n_md_out set. */
    grpc_metadata md_out[3];
    size_t n_md_out;
    int cancelled_flag; /* RECV_CLOSE_ON_SERVER output */
    gs_tag t_new, t_recv, t_send, t_close;
    atomic_int refs;
    atomic_bool in_ready;     /* queued for the pump */
    gs_call *ready_next;      /* ready list (s->mu) */
    gs_call *work_next;       /* work queue (s->mu) */
    gs_call *live_prev, *live_next; /* every call alive (s->mu) */
    atomic_int phase;         /* gs_phase */
    double t_start, t_gen;    /* eng_clock_ms at accept / submit, written before phase moves */
    int token;                /* rpc_auth_match's index, or RPC_AUTH_NONE / RPC_AUTH_ANONYMOUS */
    bool token_counted;       /* holds a slot in s->token_inflight[token] */
    pthread_mutex_t mu;       /* guards everything below and the engine request's reads */
    uint64_t id;
    gs_method method;
    bool counted;             /* holds an in-flight slot */
    bool md_sent, send_pending, final_sent, cancelled, logged;
    bool crlf;                /* send "\r\n" for the output's "\n" (the editor uses CRLF) */
    bool gen_timed_out;       /* the engine request was cancelled by generation_timeout_ms */
    eng_request *req;
    bool req_done;
    eng_request_output out;   /* last read: counts and timings */
    char *text;               /* unary: whole output; stream: the chunk being sent */
    size_t text_len, text_cap;
    grpc_status_code status;  /* final status, for the log */
};

struct rpc_grpc_server {
    rpc_grpc_config cfg;
    gs_context ctx;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *pollers;
    int n_pollers;
    pthread_t pump;
    bool pump_started;
    pthread_t workers[GS_WORKERS];
    int n_workers;
    gs_tag t_shutdown;
    atomic_bool draining;     /* stop_accepting called: new calls but Health get UNAVAILABLE */
    atomic_bool shut_down;    /* grpc_server_shutdown_and_notify called: no new request slots */
    atomic_bool aborted;      /* drain_abort or stop's cancel: no new engine work */
    atomic_int inflight;      /* counted calls */
    atomic_int *token_inflight; /* per configured token (rpc_auth_n_tokens entries) */
    /* the limits SIGHUP may change (rpc_grpc_server_set_limits), read by every call */
    atomic_int per_token_cap;   /* cfg.max_inflight_per_token as it is now; <= 0: off */
    atomic_int gen_timeout_ms;  /* cfg.generation_timeout_ms as it is now; <= 0: none */
    size_t n_tokens;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t mu;       /* guards the lists, live count, shutdown flag, stop flags */
    pthread_cond_t cv_ready;  /* pump wakes */
    pthread_cond_t cv_state;  /* live count / shutdown tag changes */
    pthread_cond_t cv_work;   /* workers wake */
    gs_call *ready_head, *ready_tail;
    gs_call *work_head, *work_tail;
    gs_call *live_head;
    bool pump_stop, work_stop;
    int live;                 /* gs_call objects alive */
    bool shutdown_done;
    char model_id[128];
    prompt_builder *prompts;
    eng_router *own_router;   /* the router over the engine alone, when the config gave none */
};

/* ---- grpc_server.c ---- */
void *gs_poller_main(void *arg);
void *gs_pump_main(void *arg);   /* engine output; runs gs_watchdog every 100 ms */
void *gs_worker_main(void *arg);
void gs_request_next(rpc_grpc_server *s);
/* Every live call past its request slot, each with a ref the caller drops with gs_call_unref;
 * the array is malloc'd (caller frees), *n set. NULL with *n = 0 when none or out of memory. */
gs_call **gs_live_calls(rpc_grpc_server *s, size_t *n);
void gs_call_unref(gs_call *c);
/* Cancels the call (UNAVAILABLE to the client) and its engine request; with release, also
 * releases the engine request (after which the engine never touches the call). */
void gs_call_abort(gs_call *c, bool release);
/* The watchdog's generation timeout: cancels the engine request, the call ends
 * DEADLINE_EXCEEDED. */
void gs_call_gen_timeout(gs_call *c);

/* ---- grpc_lifecycle.c ---- */
/* Ends calls whose request message or generation is overdue (config timeouts). Pump thread. */
void gs_watchdog(rpc_grpc_server *s);

#endif
