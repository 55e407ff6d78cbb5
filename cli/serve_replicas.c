/* serve_replicas.c — `serval serve --replicas N`: the engines and their router
 * (serve_replicas.h). */
#include "serve_replicas.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

eng_status cli_replicas_start(const eng_model *m, eng_engine_config ec, int n, cli_replicas *out,
                              eng_err *err)
{
    memset(out, 0, sizeof *out);
    if (n < 1 || n > ENG_ROUTER_MAX_REPLICAS)
        return eng_fail(err, ENG_ERR_INVALID, "--replicas must be in [1, %d], got %d",
                        ENG_ROUTER_MAX_REPLICAS, n);
    if (n > 1 && ec.backend == ENG_BACKEND_CUDA && ec.kv_bytes == 0)
        return eng_fail(err, ENG_ERR_INVALID,
                        "--replicas %d on cuda needs --kv-mb: each replica's KV pool would take "
                        "90%% of the GPU memory left by the replicas before it", n);
    if (n > 1 && ec.backend == ENG_BACKEND_CPU && ec.n_threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        ec.n_threads = cpus > n ? (int)(cpus / n) : 1; /* the replicas share the cores */
        if (ec.n_threads < ec.tp) /* a split replica needs a thread per rank */
            ec.n_threads = ec.tp;
    }
    eng_status st = ENG_OK;
    for (int i = 0; i < n; i++) {
        eng_err e2 = {{0}};
        st = eng_engine_create(m, &ec, &out->engines[i], &e2);
        if (st != ENG_OK) {
            if (n > 1)
                eng_fail(err, st, "replica %d: %s", i, e2.msg);
            else
                eng_fail(err, st, "%s", e2.msg);
            goto fail;
        }
        out->n = i + 1;
    }
    if ((st = eng_router_create(out->engines, n, &out->router, err)) != ENG_OK)
        goto fail;
    return ENG_OK;
fail:
    cli_replicas_stop(out);
    return st;
}

void cli_replicas_stop(cli_replicas *r)
{
    eng_router_free(r->router);
    for (int i = 0; i < r->n; i++)
        eng_engine_free(r->engines[i]);
    memset(r, 0, sizeof *r);
}
