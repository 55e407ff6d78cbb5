/* backend_cpu_tp.c — the CPU backend with tensor parallelism (cfg->tp ranks, backend.h): one
 * shard of the model per rank (model/shard.h), each with its own runner (its share of the
 * threads) and its own KV pool holding its heads, joined by the in-process communicator
 * (comm/comm.h). Rank 0 runs on the engine's step thread and samples from the gathered
 * logits; ranks 1.. are the threads of a crew (comm/comm_crew.h) that run the same batch.
 * The same sharded arithmetic the CUDA backend runs over NCCL, testable without GPUs. */
#include <stdbool.h>
#include <stdlib.h>

#include "backend.h"
#include "comm.h"
#include "comm_crew.h"
#include "cpu_forward.h"
#include "shard.h"

/* A rank that waits this long in a collective for the others reports the group failed (a bug:
 * ranks run the same batch, so they arrive within one phase of each other). */
enum { TP_COMM_TIMEOUT_MS = 120000 };

typedef struct tp_rank {
    eng_shard_model *sm;
    eng_cpu_runner *runner;
    eng_cpu_kv *kv;
} tp_rank;

typedef struct tp_backend {
    eng_backend base; /* first: the engine holds a pointer to it */
    const eng_model *m;
    int n;
    eng_comm *comm;
    eng_comm_crew *crew; /* ranks 1.. on its threads, rank 0 on the step thread */
    tp_rank *ranks; /* [n] */
    int32_t n_vocab;
    float *logits;  /* [cap_rows, n_vocab] when the caller wants tokens only */
    int32_t cap_rows;
    float *scratch; /* [n_vocab] for eng_sample */
} tp_backend;

/* One batch on every rank: rank 0's logits into out, the other ranks gather for it. */
typedef struct tp_job {
    tp_backend *tp;
    const eng_batch *b;
    float *out;
} tp_job;

static eng_status rank_forward(void *arg, int rank, eng_err *err)
{
    const tp_job *j = arg;
    tp_rank *rk = &j->tp->ranks[rank];
    return eng_cpu_forward(rk->runner, rk->kv, j->b, rank == 0 ? j->out : NULL, err);
}

static eng_status tp_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                             int32_t *tokens, float *logits, eng_err *err)
{
    tp_backend *tp = (tp_backend *)be;
    if (!logits && b->n_logits > tp->cap_rows) { /* grows to the largest batch, once */
        float *l = realloc(tp->logits, sizeof(float) * (size_t)b->n_logits * (size_t)tp->n_vocab);
        if (!l)
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory for %d logits rows", b->n_logits);
        tp->logits = l;
        tp->cap_rows = b->n_logits;
    }
    float *out = logits ? logits : tp->logits;
    tp_job j = {.tp = tp, .b = b, .out = out};
    eng_status st = eng_comm_crew_run(tp->crew, rank_forward, &j, NULL, err);
    if (st != ENG_OK)
        return st;
    if (!rows || !tokens)
        return ENG_OK;
    for (int32_t i = 0; i < b->n_logits; i++)
        tokens[i] = eng_sample(out + (size_t)i * (size_t)tp->n_vocab, tp->n_vocab, &rows[i].p,
                               rows[i].step, tp->scratch);
    return ENG_OK;
}

static void tp_free(eng_backend *be)
{
    tp_backend *tp = (tp_backend *)be;
    if (!tp)
        return;
    eng_comm_crew_free(tp->crew);
    for (int q = 0; q < tp->n && tp->ranks; q++) {
        tp_rank *rk = &tp->ranks[q];
        eng_cpu_runner_free(rk->runner);
        eng_cpu_kv_free(rk->kv);
        eng_shard_model_free(rk->sm);
    }
    if (tp->comm)
        tp->comm->ops->free(tp->comm);
    free(tp->ranks);
    free(tp->logits);
    free(tp->scratch);
    free(tp);
}

static const eng_backend_ops tp_ops = {.name = "cpu", .forward = tp_forward, .free = tp_free};

eng_status eng_backend_cpu_tp_create(const eng_model *m, const eng_backend_config *cfg,
                                     eng_backend **out, eng_err *err)
{
    *out = NULL;
    const int n = cfg->tp;
    eng_shard probe;
    eng_status st = eng_shard_plan(m, 0, n, &probe, err); /* a degree the model refuses */
    if (st != ENG_OK)
        return st;
    if (cfg->n_threads < n)
        return eng_fail(err, ENG_ERR_INVALID, "tensor parallelism over %d ranks needs at least "
                        "one thread per rank (%d threads)", n, cfg->n_threads);
    tp_backend *tp = calloc(1, sizeof *tp);
    if (!tp)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    tp->base.ops = &tp_ops;
    tp->base.block_size = cfg->block_size;
    tp->m = m;
    tp->n = n;
    tp->n_vocab = m->hp.n_vocab;
    tp->ranks = calloc((size_t)n, sizeof *tp->ranks);
    tp->scratch = malloc(sizeof(float) * (size_t)tp->n_vocab);
    if (!tp->ranks || !tp->scratch) {
        tp_free(&tp->base);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    if ((st = eng_comm_threads_create(n, TP_COMM_TIMEOUT_MS, &tp->comm, err)) != ENG_OK)
        goto fail;
    size_t block_bytes = 0; /* one block of every rank's pool */
    for (int q = 0; q < n; q++) {
        if ((st = eng_shard_model_create(m, q, n, &tp->ranks[q].sm, err)) != ENG_OK)
            goto fail;
        block_bytes += eng_cpu_kv_block_bytes(&tp->ranks[q].sm->model, cfg->block_size);
    }
    int64_t n_blocks = cfg->kv_bytes / (int64_t)block_bytes;
    if (n_blocks < cfg->min_blocks) {
        st = eng_fail(err, ENG_ERR_INVALID,
                      "KV budget of %lld bytes holds %lld blocks of %zu bytes (over %d ranks); "
                      "one sequence of the maximum length needs %d (raise the budget or lower "
                      "max_seq_len)", (long long)cfg->kv_bytes, (long long)n_blocks, block_bytes,
                      n, cfg->min_blocks);
        goto fail;
    }
    if (n_blocks > (1 << 28))
        n_blocks = 1 << 28;
    tp->base.n_blocks = (int32_t)n_blocks;
    for (int q = 0; q < n; q++) {
        tp_rank *rk = &tp->ranks[q];
        /* The threads split across ranks; the first ranks take the remainder. */
        int threads = cfg->n_threads / n + (q < cfg->n_threads % n);
        if ((st = eng_cpu_runner_create(&rk->sm->model, cfg->max_pos, threads, &rk->runner,
                                        err)) != ENG_OK ||
            (st = eng_cpu_runner_set_group(rk->runner, &rk->sm->shard, tp->comm, err)) !=
                ENG_OK ||
            (st = eng_cpu_kv_create(&rk->sm->model, (int32_t)n_blocks, cfg->block_size, &rk->kv,
                                    err)) != ENG_OK)
            goto fail;
    }
    eng_comm_crew_config cc = {.n_ranks = n, .rank0_on_caller = true};
    if ((st = eng_comm_crew_create(&cc, &tp->crew, NULL, err)) != ENG_OK)
        goto fail;
    *out = &tp->base;
    return ENG_OK;
fail:
    tp_free(&tp->base);
    return st;
}
