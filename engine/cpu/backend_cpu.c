/* backend_cpu.c — the CPU backend behind engine/backend.h: a runner (threads + scratch) and a
 * paged fp16 KV pool sized from a memory budget, running eng_cpu_forward, then eng_sample. */
#include "backend.h"
#include "cpu_forward.h"

#include <stdlib.h>

typedef struct cpu_backend {
    eng_backend base; /* first: the engine holds a pointer to it */
    eng_cpu_runner *runner;
    eng_cpu_kv *kv;
    int32_t n_vocab;
    float *logits;     /* [cap_rows, n_vocab] when the caller wants tokens only */
    int32_t cap_rows;
    float *scratch;    /* [n_vocab] for eng_sample */
} cpu_backend;

static eng_status cpu_forward(eng_backend *be, const eng_batch *b, const eng_sample_row *rows,
                              int32_t *tokens, float *logits, eng_err *err)
{
    cpu_backend *c = (cpu_backend *)be;
    if (!logits && b->n_logits > c->cap_rows) { /* grows to the largest batch, once */
        float *l = realloc(c->logits, sizeof(float) * (size_t)b->n_logits * (size_t)c->n_vocab);
        if (!l)
            return eng_fail(err, ENG_ERR_NOMEM, "out of memory for %d logits rows", b->n_logits);
        c->logits = l;
        c->cap_rows = b->n_logits;
    }
    float *out = logits ? logits : c->logits;
    eng_status st = eng_cpu_forward(c->runner, c->kv, b, out, err);
    if (st != ENG_OK || !rows || !tokens)
        return st;
    for (int32_t i = 0; i < b->n_logits; i++)
        tokens[i] = eng_sample(out + (size_t)i * (size_t)c->n_vocab, c->n_vocab, &rows[i].p,
                               rows[i].step, c->scratch);
    return ENG_OK;
}

static void cpu_free(eng_backend *be)
{
    cpu_backend *c = (cpu_backend *)be;
    if (!c)
        return;
    eng_cpu_runner_free(c->runner);
    eng_cpu_kv_free(c->kv);
    free(c->logits);
    free(c->scratch);
    free(c);
}

static const eng_backend_ops cpu_ops = {.name = "cpu", .forward = cpu_forward, .free = cpu_free};

eng_status eng_backend_cpu_create(const eng_model *m, const eng_backend_config *cfg,
                                  eng_backend **out, eng_err *err)
{
    *out = NULL;
    if (cfg->tp > 1)
        return eng_backend_cpu_tp_create(m, cfg, out, err);
    const int64_t kv_bytes = cfg->kv_bytes;
    const int32_t block_size = cfg->block_size, min_blocks = cfg->min_blocks;
    size_t bb = eng_cpu_kv_block_bytes(m, block_size);
    int64_t n_blocks = kv_bytes / (int64_t)bb;
    if (n_blocks < min_blocks)
        return eng_fail(err, ENG_ERR_INVALID,
                        "KV budget of %lld bytes holds %lld blocks of %zu bytes; one sequence of "
                        "the maximum length needs %d (raise the budget or lower max_seq_len)",
                        (long long)kv_bytes, (long long)n_blocks, bb, min_blocks);
    if (n_blocks > (1 << 28))
        n_blocks = 1 << 28;
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    c->base.ops = &cpu_ops;
    c->base.n_blocks = (int32_t)n_blocks;
    c->base.block_size = block_size;
    c->n_vocab = m->hp.n_vocab;
    if (!(c->scratch = malloc(sizeof(float) * (size_t)c->n_vocab))) {
        free(c);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    eng_status st = eng_cpu_runner_create(m, cfg->max_pos, cfg->n_threads, &c->runner, err);
    if (st == ENG_OK)
        st = eng_cpu_kv_create(m, (int32_t)n_blocks, block_size, &c->kv, err);
    if (st != ENG_OK) {
        cpu_free(&c->base);
        return st;
    }
    *out = &c->base;
    return ENG_OK;
}
