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
    /* --gpus: groups of tp GPUs, one replica each (n 1 is --replicas left at its default) */
    const int tp = ec.tp > 1 ? ec.tp : 1, all_gpus = ec.n_gpus;
    int gpus[64];
    memcpy(gpus, ec.gpus, sizeof gpus);
    if (all_gpus > 0) {
        if (all_gpus % tp != 0)
            return eng_fail(err, ENG_ERR_INVALID, "--gpus lists %d GPUs, which --tp %d does not "
                            "divide", all_gpus, tp);
        if (n == 1)
            n = all_gpus / tp;
        else if (n != all_gpus / tp)
            return eng_fail(err, ENG_ERR_INVALID, "--replicas %d, but --gpus lists %d GPUs: %d "
                            "groups of --tp %d (leave --replicas out, or make them agree)", n,
                            all_gpus, all_gpus / tp, tp);
        ec.n_gpus = tp;
    }
    if (n < 1 || n > ENG_ROUTER_MAX_REPLICAS)
        return eng_fail(err, ENG_ERR_INVALID, "--replicas must be in [1, %d], got %d",
                        ENG_ROUTER_MAX_REPLICAS, n);
    if (n > 1 && ec.backend == ENG_BACKEND_CUDA && ec.kv_bytes == 0 && all_gpus == 0)
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
        if (all_gpus > 0) /* replica i: the i-th group of tp GPUs */
            memcpy(ec.gpus, gpus + i * tp, sizeof(int) * (size_t)tp);
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
