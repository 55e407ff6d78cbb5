/* backend_cuda_tp.c — the CUDA backend with tensor parallelism (cfg->tp ranks, backend.h): one
 * shard of the model per GPU (model/shard.h), each rank a CUDA backend of its own
 * (backend_cuda.c: its stream, KV pool holding its heads, and decode graphs) driven by a host
 * thread of its own (a crew, comm/comm_crew.h), which makes its GPU current once, builds and
 * frees the rank's backend there and captures its graphs in thread-local
 * mode (NCCL's guidance for several GPUs per process). The ranks meet in the NCCL
 * communicator (comm/comm_nccl.h). The engine's step thread publishes each batch to every
 * rank's thread and waits for all; every rank samples the same tokens from the gathered
 * logits, and rank 0's are returned. The CPU backend's counterpart is cpu/backend_cpu_tp.c. */
#include "backend_cuda_tp.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "comm_crew.h"
#include "comm_nccl.h"

typedef struct ctp_rank {
    int dev;
    eng_shard_model *sm; /* owned */
    eng_backend *be;     /* owned; created and freed on the rank's thread */
    int32_t *tokens;     /* [max_logits] this rank's draws */
} ctp_rank;

typedef struct ctp_backend {
    eng_backend base; /* first: the engine holds a pointer to it */
    int n;
    int32_t n_vocab; /* the whole model's */
    eng_comm *comm;
    eng_comm_crew *crew;        /* every rank's host thread */
    ctp_rank *ranks;            /* [n] */
    eng_backend_config rank_cfg; /* every rank's: the KV budget its share */
} ctp_backend;

/* The crew's start, on rank's thread: its GPU current from here on, its backend built. */
static eng_status rank_start(void *arg, int rank, eng_err *err)
{
    ctp_backend *tp = arg;
    ctp_rank *rk = &tp->ranks[rank];
    cudaError_t e = cudaSetDevice(rk->dev); /* this thread's device from here on */
    if (e != cudaSuccess)
        return eng_fail(err, ENG_ERR_CUDA, "rank %d: selecting GPU %d: %s", rank, rk->dev,
                        cudaGetErrorString(e));
    return eng_backend_cuda_rank_create(rk->sm, tp->comm, rk->dev, &tp->rank_cfg, &rk->be, err);
}

/* The crew's stop: the rank's backend freed on the thread that made it. */
static void rank_stop(void *arg, int rank)
{
    ctp_rank *rk = &((ctp_backend *)arg)->ranks[rank];
    if (rk->be)
        rk->be->ops->free(rk->be);
    rk->be = NULL;
}

/* One batch on every rank; rank 0's host logits, when asked. */
typedef struct ctp_job {
    ctp_backend *tp;
    const eng_batch *b;
    const eng_sample_row *rows; /* NULL: logits only */
    float *logits;              /* rank 0's host logits, or NULL */
} ctp_job;

static eng_status rank_forward(void *arg, int rank, eng_err *err)
{
    const ctp_job *j = arg;
    ctp_rank *rk = &j->tp->ranks[rank];
    eng_status st = rk->be->ops->forward(rk->be, j->b, j->rows, j->rows ? rk->tokens : NULL,
                                         rank == 0 ? j->logits : NULL, err);
    /* the step's work has finished on the GPU: a p2p barrier that gave up fails it */
    return st == ENG_OK ? eng_comm_nccl_rank_check(j->tp->comm, rank, err) : st;
}

static eng_status ctp_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                              int32_t *tokens, float *logits, eng_err *err)
{
    ctp_backend *tp = (ctp_backend *)be;
    /* Refused here, before any rank sees it: a rank that fails on its own fails the group for
     * good (the others may be inside a collective), so what every rank would refuse alike is
     * checked once, and the group runs the next batch. */
    if (b->n_tokens <= 0 || b->n_tokens > tp->rank_cfg.max_tokens ||
        b->n_logits > tp->rank_cfg.max_logits || b->n_seqs > tp->rank_cfg.max_tokens)
        return eng_fail(err, ENG_ERR_INVALID, "batch of %d tokens / %d logits exceeds the "
                        "backend's step buffers (%d / %d)", b->n_tokens, b->n_logits,
                        tp->rank_cfg.max_tokens, tp->rank_cfg.max_logits);
    for (int32_t i = 0; i < b->n_tokens; i++)
        if (b->tokens[i] < 0 || b->tokens[i] >= tp->n_vocab)
            return eng_fail(err, ENG_ERR_INVALID, "token id %d at index %d is outside [0, %d)",
                            b->tokens[i], i, tp->n_vocab);
    ctp_job j = {.tp = tp, .b = b, .rows = rows && tokens ? rows : NULL, .logits = logits};
    eng_status st = eng_comm_crew_run(tp->crew, rank_forward, &j, NULL, err);
    if (st != ENG_OK)
        return st;
    if (!rows || !tokens)
        return ENG_OK;
    /* every rank drew from the same gathered logits: a difference is a broken group */
    for (int q = 1; q < tp->n; q++)
        if (memcmp(tp->ranks[q].tokens, tp->ranks[0].tokens,
                   sizeof(int32_t) * (size_t)b->n_logits) != 0)
            return eng_fail(err, ENG_ERR_CUDA, "tensor-parallel rank %d sampled other tokens "
                            "than rank 0 from the same logits", q);
    memcpy(tokens, tp->ranks[0].tokens, sizeof(int32_t) * (size_t)b->n_logits);
    return ENG_OK;
}

static void ctp_free(eng_backend *be)
{
    ctp_backend *tp = (ctp_backend *)be;
    if (!tp)
        return;
    eng_comm_crew_free(tp->crew); /* frees each rank's backend on its own thread */
    for (int q = 0; q < tp->n && tp->ranks; q++) {
        eng_shard_model_free(tp->ranks[q].sm);
        free(tp->ranks[q].tokens);
    }
    if (tp->comm)
        tp->comm->ops->free(tp->comm);
    free(tp->ranks);
    free(tp);
}

static const eng_backend_ops ctp_ops = {.name = "cuda", .forward = ctp_forward,
                                        .free = ctp_free};

/* devs[0..n) from cfg: its GPU list (one per rank, each existing, none twice) or 0 .. n-1. */
static eng_status pick_gpus(const eng_backend_config *cfg, int n, int *devs, eng_err *err)
{
    if (cfg->n_gpus > 0 && cfg->n_gpus != n)
        return eng_fail(err, ENG_ERR_INVALID, "tensor parallelism over %d ranks takes %d GPUs, "
                        "one per rank; %d given", n, n, cfg->n_gpus);
    for (int q = 0; q < n; q++) {
        devs[q] = cfg->n_gpus > 0 ? cfg->gpus[q] : q;
        eng_status st = eng_backend_cuda_gpu_check(devs[q], err);
        if (st != ENG_OK)
            return st;
        for (int p = 0; p < q; p++)
            if (devs[p] == devs[q])
                return eng_fail(err, ENG_ERR_INVALID, "GPU %d named twice for one "
                                "tensor-parallel group (one rank per GPU)", devs[q]);
    }
    return ENG_OK;
}

eng_status eng_backend_cuda_tp_create(const eng_model *m, const eng_backend_config *cfg,
                                      eng_backend **out, eng_err *err)
{
    *out = NULL;
    const int n = cfg->tp;
    eng_shard probe;
    eng_status st = eng_shard_plan(m, 0, n, &probe, err); /* a degree the model refuses */
    if (st != ENG_OK)
        return st;
    int devs[64];
    if ((st = pick_gpus(cfg, n, devs, err)) != ENG_OK)
        return st;
    ctp_backend *tp = calloc(1, sizeof *tp);
    if (!tp)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    tp->base.ops = &ctp_ops;
    tp->base.block_size = cfg->block_size;
    tp->n = n;
    tp->n_vocab = m->hp.n_vocab;
    tp->rank_cfg = *cfg;
    tp->rank_cfg.kv_bytes = cfg->kv_bytes / n; /* 0 stays 0: each GPU's free memory */
    tp->rank_cfg.tp = 1;
    tp->rank_cfg.gpus = NULL;
    tp->rank_cfg.n_gpus = 0;
    if (!(tp->ranks = calloc((size_t)n, sizeof *tp->ranks))) {
        free(tp);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    if ((st = eng_comm_nccl_create(n, devs, ENG_COMM_P2P_DEFAULT_MAX_BYTES, &tp->comm, err)) !=
        ENG_OK)
        goto fail;
    for (int q = 0; q < n; q++) {
        ctp_rank *rk = &tp->ranks[q];
        *rk = (ctp_rank){.dev = devs[q]};
        if ((st = eng_shard_model_create(m, q, n, &rk->sm, err)) != ENG_OK)
            goto fail;
        if (!(rk->tokens = calloc((size_t)(cfg->max_logits > 0 ? cfg->max_logits : 1),
                                  sizeof(int32_t)))) {
            st = eng_fail(err, ENG_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    /* each rank loads its shard on its own thread; every one has answered when this returns */
    eng_comm_crew_config cc = {.n_ranks = n, .start = rank_start, .stop = rank_stop, .arg = tp,
                               .comm = tp->comm};
    int bad = -1;
    eng_err e2 = {{0}};
    if ((st = eng_comm_crew_create(&cc, &tp->crew, &bad, &e2)) != ENG_OK) {
        if (bad >= 0)
            eng_fail(err, st, "tensor-parallel rank %d on GPU %d: %s", bad, devs[bad], e2.msg);
        else
            eng_fail(err, st, "%s", e2.msg);
        goto fail;
    }
    /* the engine's block ids must be valid on every rank */
    tp->base.n_blocks = tp->ranks[0].be->n_blocks;
    for (int q = 1; q < n; q++)
        if (tp->ranks[q].be->n_blocks < tp->base.n_blocks)
            tp->base.n_blocks = tp->ranks[q].be->n_blocks;
    *out = &tp->base;
    return ENG_OK;
fail:
    ctp_free(&tp->base);
    return st;
}
