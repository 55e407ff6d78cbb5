/* serve_replicas.h — `serval serve --replicas N`: N engines over the one loaded model, behind
 * one router (engine/serval_router.h) that both front ends submit through. */
#ifndef SERVAL_CLI_SERVE_REPLICAS_H
#define SERVAL_CLI_SERVE_REPLICAS_H

#include "serval_engine.h"
#include "serval_router.h"

typedef struct cli_replicas {
    int n;
    eng_engine *engines[ENG_ROUTER_MAX_REPLICAS]; /* owned */
    eng_router *router;                           /* owned; over engines[0..n) */
} cli_replicas;

/* Creates n engines of config ec over m (borrowed; loaded once, its weights shared) and the
 * router over them. ec.n_threads 0 on the CPU gives each replica the online CPUs / n (at least
 * one); several CUDA replicas need an explicit kv_bytes (the default, 90% of the free GPU
 * memory, would leave nothing to the next) unless ec names GPUs: then ec.gpus is cut into
 * groups of ec.tp, one replica each (n 1 means "as many as the groups"; another n must equal
 * their count). On failure everything made is freed, err names
 * the replica, and *out is zeroed. */
eng_status cli_replicas_start(const eng_model *m, eng_engine_config ec, int n, cli_replicas *out,
                              eng_err *err);

/* Frees the router, then every engine (requests still running finish as cancelled). */
void cli_replicas_stop(cli_replicas *r);

#endif
