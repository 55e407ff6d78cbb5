/* embed.c — the embedder behind serval_embed.h: callers tokenize on their own thread and queue
 * their texts; one worker thread, separate from the decoder's step loop, takes up to max_batch
 * queued texts at a time (from any callers, oldest first, small calls ahead of bulk ones),
 * runs them through the encoder as one packed batch and wakes each caller when all of its texts
 * are done. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_encoder.h"
#include "embed_impl.h"
#ifdef SERVAL_HAVE_CUDA
#include "encoder_cuda.h"
#endif
#include "serval_embed.h"
#include "utf8.h"

/* One caller's call: its texts as token arrays, where their vectors go, how many remain. */
typedef struct emb_job {
    int32_t n;
    int32_t **tok;    /* [n] owned token arrays */
    int32_t *n_tok;   /* [n] */
    float *out;       /* [n, dim], the caller's */
    int32_t next;     /* first text not yet taken by the worker */
    int32_t done;     /* texts finished */
    eng_status st;    /* the first failure */
    eng_err err;
    pthread_cond_t cv;
    struct emb_job *link; /* the queue */
} emb_job;

struct eng_embedder {
    emb_model *m;
    cpu_encoder *enc;   /* created by the worker, so its pool's threads inherit its nice */
#ifdef SERVAL_HAVE_CUDA
    cuda_encoder *genc; /* ENG_BACKEND_CUDA instead: GPU 0, bf16 (created by the worker) */
#endif
    eng_backend_kind backend;
    int n_threads, nice;
    eng_status start_st; /* the worker's start-up result, under mu */
    eng_err start_err;
    bool started;
    int32_t max_batch, max_waiting;
    pthread_t worker;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    emb_job *head, *tail; /* jobs with texts not yet taken */
    int32_t waiting;      /* texts queued, not taken */
    bool stop;
};

eng_embedder_config eng_embedder_config_defaults(void)
{
    return (eng_embedder_config){ENG_BACKEND_CPU, 0, 32, 1024, 10};
}

int32_t eng_embedder_dim(const eng_embedder *e) { return e->m->n_embd; }

int32_t eng_embedder_waiting(eng_embedder *e)
{
    pthread_mutex_lock(&e->mu);
    int32_t n = e->waiting;
    pthread_mutex_unlock(&e->mu);
    return n;
}
int32_t eng_embedder_max_tokens(const eng_embedder *e) { return e->m->n_ctx; }
const char *eng_embedder_model_name(const eng_embedder *e) { return e->m->name; }

/* A call of at most EMB_SMALL_CALL texts (a search query, a completion's retrieval, an API
 * request for a few texts) is served before queued bulk calls (an indexing run's slices of
 * hundreds), so a completion's query waits for the batch in progress, not for the repository
 * being indexed in the background; small calls keep their order among themselves, and may use
 * EMB_SMALL_RESERVE places beyond max_waiting, so a queue that indexing filled does not refuse
 * them. A batch that starts with small calls holds only small calls: the query waits for the
 * bulk batch in progress, not for a full batch of bulk texts behind it too. */
#define EMB_SMALL_CALL 8
#define EMB_SMALL_RESERVE 64

/* The worker: one batch per loop, texts taken in queue order. */
static void *worker_main(void *arg)
{
    eng_embedder *e = arg;
    const int32_t d = e->m->n_embd;
    /* Linux nice is per thread and inherited by threads created later: the encoder's pool is
     * created here, after lowering this thread's priority. Failure to renice is harmless. */
    if (e->nice > 0) {
        errno = 0;
        if (nice(e->nice) == -1 && errno != 0)
            errno = 0;
    }
    eng_err serr;
    eng_status sst;
#ifdef SERVAL_HAVE_CUDA
    if (e->backend == ENG_BACKEND_CUDA)
        sst = cuda_encoder_create(e->m, 0, false, &e->genc, &serr);
    else
#endif
        sst = cpu_encoder_create(e->m, e->n_threads, &e->enc, &serr);
    pthread_mutex_lock(&e->mu);
    e->start_st = sst;
    e->start_err = serr;
    e->started = true;
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->mu);
    if (sst != ENG_OK)
        return NULL;
    int32_t *seq_len = malloc(sizeof(int32_t) * (size_t)e->max_batch);
    emb_job **owner = malloc(sizeof(emb_job *) * (size_t)e->max_batch);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)e->max_batch);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)e->max_batch * (size_t)e->m->n_ctx);
    float *out = malloc(sizeof(float) * (size_t)e->max_batch * (size_t)d);
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && !e->head)
            pthread_cond_wait(&e->wake, &e->mu);
        if (e->stop)
            break;
        int32_t n = 0, T = 0;
        const bool small_batch = e->head->n <= EMB_SMALL_CALL;
        while (e->head && n < e->max_batch) {
            emb_job *j = e->head;
            if (small_batch && j->n > EMB_SMALL_CALL)
                break;
            owner[n] = j;
            idx[n] = j->next;
            seq_len[n] = j->n_tok[j->next];
            n++;
            if (++j->next == j->n) {
                e->head = j->link;
                if (!e->head)
                    e->tail = NULL;
            }
        }
        e->waiting -= n;
        pthread_mutex_unlock(&e->mu);
        eng_status st = ENG_OK;
        eng_err err;
        eng_err_clear(&err);
        if (!seq_len || !owner || !idx || !tokens || !out) {
            st = eng_fail(&err, ENG_ERR_NOMEM, "embedder: out of memory");
        } else {
            for (int32_t i = 0; i < n; i++) {
                memcpy(tokens + T, owner[i]->tok[idx[i]], sizeof(int32_t) * (size_t)seq_len[i]);
                T += seq_len[i];
            }
#ifdef SERVAL_HAVE_CUDA
            if (e->genc)
                st = cuda_encoder_run(e->genc, tokens, seq_len, n, out, &err);
            else
#endif
                st = cpu_encoder_run(e->enc, tokens, seq_len, n, out, &err);
        }
        pthread_mutex_lock(&e->mu);
        for (int32_t i = 0; i < n; i++) {
            emb_job *j = owner[i];
            if (st == ENG_OK)
                memcpy(j->out + (size_t)idx[i] * (size_t)d, out + (size_t)i * (size_t)d,
                       sizeof(float) * (size_t)d);
            else if (j->st == ENG_OK)
                j->st = st, j->err = err;
            if (++j->done == j->n)
                pthread_cond_signal(&j->cv);
        }
    }
    /* Shutting down: whatever is still queued finishes as cancelled. */
    for (emb_job *j = e->head; j; j = j->link) {
        j->st = ENG_ERR_CANCELLED;
        eng_fail(&j->err, ENG_ERR_CANCELLED, "embedder: shutting down");
        j->done = j->n;
        pthread_cond_signal(&j->cv);
    }
    e->head = e->tail = NULL;
    pthread_mutex_unlock(&e->mu);
    free(seq_len), free(owner), free(idx), free(tokens), free(out);
    return NULL;
}

eng_status eng_embedder_create(const char *gguf_path, const eng_embedder_config *cfg,
                               eng_embedder **out, eng_err *err)
{
    *out = NULL;
    eng_embedder_config c = cfg ? *cfg : eng_embedder_config_defaults();
    if (c.max_batch == 0)
        c.max_batch = 32;
    if (c.max_waiting == 0)
        c.max_waiting = 1024;
    if (c.n_threads < 0 || c.max_batch < 1 || c.max_batch > 4096 || c.max_waiting < 1 ||
        c.nice < 0 || c.nice > 19)
        return eng_fail(err, ENG_ERR_INVALID,
                        "embedder: n_threads %d, max_batch %d (1..4096), max_waiting %d, nice "
                        "%d (0..19): out of range", c.n_threads, c.max_batch, c.max_waiting,
                        c.nice);
#ifdef SERVAL_HAVE_CUDA
    if (c.backend != ENG_BACKEND_CPU && c.backend != ENG_BACKEND_CUDA)
#else
    if (c.backend != ENG_BACKEND_CPU)
#endif
        return eng_fail(err, ENG_ERR_UNSUPPORTED,
                        "embedder: backend %d does not run the bert encoder in this build (CPU"
#ifdef SERVAL_HAVE_CUDA
                        ", CUDA"
#endif
                        ")", (int)c.backend);
    int nt = c.n_threads;
    if (nt == 0) {
        long on = sysconf(_SC_NPROCESSORS_ONLN);
        nt = on > 0 ? (int)on : 1;
    }
    eng_embedder *e = calloc(1, sizeof *e);
    if (!e)
        return eng_fail(err, ENG_ERR_NOMEM, "embedder: out of memory");
    e->max_batch = c.max_batch;
    e->max_waiting = c.max_waiting;
    e->n_threads = nt;
    e->nice = c.nice;
    e->backend = c.backend;
    eng_status st = emb_model_load(gguf_path, &e->m, err);
    if (st != ENG_OK) {
        free(e);
        return st;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    if (pthread_create(&e->worker, NULL, worker_main, e) != 0) {
        st = eng_fail(err, ENG_ERR_NOMEM, "embedder: cannot start its worker thread");
        goto fail;
    }
    pthread_mutex_lock(&e->mu);
    while (!e->started)
        pthread_cond_wait(&e->wake, &e->mu);
    st = e->start_st;
    pthread_mutex_unlock(&e->mu);
    if (st != ENG_OK) {
        pthread_join(e->worker, NULL);
        if (err)
            *err = e->start_err;
        goto fail;
    }
    *out = e;
    return ENG_OK;
fail:
    emb_model_free(e->m);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    free(e);
    return st;
}

void eng_embedder_free(eng_embedder *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->worker, NULL);
    cpu_encoder_free(e->enc);
#ifdef SERVAL_HAVE_CUDA
    cuda_encoder_free(e->genc);
#endif
    emb_model_free(e->m);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->wake);
    free(e);
}

eng_status eng_embedder_tokenize(const eng_embedder *e, const char *text, size_t len,
                                 int32_t **ids, int32_t *n, eng_err *err)
{
    *ids = NULL;
    *n = 0;
    const int32_t cap = e->m->n_ctx;
    int32_t *v = malloc(sizeof(int32_t) * (size_t)cap);
    if (!v)
        return eng_fail(err, ENG_ERR_NOMEM, "embedder: out of memory");
    size_t got = 0;
    v[0] = tok_wpm_cls(e->m->vocab);
    eng_status st = tok_wpm_encode(e->m->vocab, text, len, v + 1, (size_t)cap - 2, &got, NULL,
                                   err);
    if (st != ENG_OK) {
        free(v);
        return st;
    }
    v[got + 1] = tok_wpm_sep(e->m->vocab);
    *ids = v;
    *n = (int32_t)got + 2;
    return ENG_OK;
}


/* Queues a job whose token arrays are ready and waits for it. Takes ownership of j's arrays. */
static eng_status run_job(eng_embedder *e, emb_job *j, eng_err *err)
{
    eng_status st = ENG_OK;
    bool small = j->n <= EMB_SMALL_CALL;
    pthread_cond_init(&j->cv, NULL);
    if (j->n > e->max_waiting) {
        pthread_cond_destroy(&j->cv);
        return eng_fail(err, ENG_ERR_INVALID, "embed: %d texts in one call; at most %d", j->n,
                        e->max_waiting);
    }
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        st = eng_fail(err, ENG_ERR_CANCELLED, "embedder: shutting down");
    } else if (e->waiting + j->n > e->max_waiting + (small ? EMB_SMALL_RESERVE : 0)) {
        st = eng_fail(err, ENG_ERR_OVERLOAD,
                      "embedder: %d texts already queued (at most %d): try again later",
                      e->waiting, e->max_waiting);
    } else {
        e->waiting += j->n;
        /* A small call goes after the small calls already queued, before the first bulk one. */
        emb_job **at = &e->head, *prev = NULL;
        while (small && *at && (*at)->n <= EMB_SMALL_CALL)
            prev = *at, at = &(*at)->link;
        if (!small || !*at) {
            if (e->tail)
                e->tail->link = j;
            else
                e->head = j;
            e->tail = j;
        } else {
            j->link = *at;
            if (prev)
                prev->link = j;
            else
                e->head = j;
        }
        pthread_cond_signal(&e->wake);
        while (j->done < j->n)
            pthread_cond_wait(&j->cv, &e->mu);
        st = j->st;
        if (st != ENG_OK && err)
            *err = j->err;
    }
    pthread_mutex_unlock(&e->mu);
    pthread_cond_destroy(&j->cv);
    return st;
}

static emb_job *job_new(int32_t n, float *out)
{
    emb_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->n = n;
    j->out = out;
    j->tok = calloc((size_t)n, sizeof *j->tok);
    j->n_tok = calloc((size_t)n, sizeof *j->n_tok);
    if (!j->tok || !j->n_tok) {
        free(j->tok), free(j->n_tok), free(j);
        return NULL;
    }
    return j;
}

static void job_free(emb_job *j)
{
    if (!j)
        return;
    for (int32_t i = 0; i < j->n; i++)
        free(j->tok[i]);
    free(j->tok), free(j->n_tok), free(j);
}

eng_status eng_embed(eng_embedder *e, const char *const *texts, const size_t *lens, int32_t n,
                     float *out, int32_t *n_tokens_out, bool *truncated_out, eng_err *err)
{
    if (n < 1 || !texts || !lens || !out)
        return eng_fail(err, ENG_ERR_INVALID, "embed: no texts");
    for (int32_t i = 0; i < n; i++) {
        if (!texts[i] && lens[i] > 0)
            return eng_fail(err, ENG_ERR_INVALID, "embed: text %d is NULL", i);
        size_t bad = 0;
        if (lens[i] > 0 && !eng_utf8_valid(texts[i], lens[i], &bad))
            return eng_fail(err, ENG_ERR_INVALID, "embed: text %d is not valid UTF-8 (byte %zu)", i, bad);
    }
    emb_job *j = job_new(n, out);
    if (!j)
        return eng_fail(err, ENG_ERR_NOMEM, "embed: out of memory");
    const int32_t cap = e->m->n_ctx;
    eng_status st = ENG_OK;
    for (int32_t i = 0; i < n && st == ENG_OK; i++) {
        j->tok[i] = malloc(sizeof(int32_t) * (size_t)cap);
        if (!j->tok[i]) {
            st = eng_fail(err, ENG_ERR_NOMEM, "embed: out of memory");
            break;
        }
        size_t got = 0;
        bool more = false;
        j->tok[i][0] = tok_wpm_cls(e->m->vocab);
        st = tok_wpm_encode(e->m->vocab, texts[i] ? texts[i] : "", lens[i], j->tok[i] + 1,
                            (size_t)cap - 2, &got, &more, err);
        j->tok[i][got + 1] = tok_wpm_sep(e->m->vocab);
        j->n_tok[i] = (int32_t)got + 2;
        if (n_tokens_out)
            n_tokens_out[i] = j->n_tok[i];
        if (truncated_out)
            truncated_out[i] = more;
    }
    if (st == ENG_OK)
        st = run_job(e, j, err);
    job_free(j);
    return st;
}

eng_status eng_embed_tokens(eng_embedder *e, const int32_t *const *tokens, const int32_t *n_tok,
                            int32_t n, float *out, int32_t *n_tokens_out, bool *truncated_out,
                            eng_err *err)
{
    if (n < 1 || !tokens || !n_tok || !out)
        return eng_fail(err, ENG_ERR_INVALID, "embed: no inputs");
    const int32_t cap = e->m->n_ctx;
    for (int32_t i = 0; i < n; i++) {
        if (n_tok[i] < 1 || !tokens[i])
            return eng_fail(err, ENG_ERR_INVALID, "embed: input %d is an empty token array", i);
        for (int32_t k = 0; k < n_tok[i]; k++)
            if (tokens[i][k] < 0 || tokens[i][k] >= e->m->n_vocab)
                return eng_fail(err, ENG_ERR_INVALID,
                                "embed: input %d, token %d: id %d is outside the vocabulary "
                                "(%d tokens)", i, k, tokens[i][k], e->m->n_vocab);
    }
    emb_job *j = job_new(n, out);
    if (!j)
        return eng_fail(err, ENG_ERR_NOMEM, "embed: out of memory");
    for (int32_t i = 0; i < n; i++) {
        int32_t k = n_tok[i] < cap ? n_tok[i] : cap;
        j->tok[i] = malloc(sizeof(int32_t) * (size_t)k);
        if (!j->tok[i]) {
            job_free(j);
            return eng_fail(err, ENG_ERR_NOMEM, "embed: out of memory");
        }
        memcpy(j->tok[i], tokens[i], sizeof(int32_t) * (size_t)k);
        j->n_tok[i] = k;
        if (n_tokens_out)
            n_tokens_out[i] = k;
        if (truncated_out)
            truncated_out[i] = n_tok[i] > cap;
    }
    eng_status st = run_job(e, j, err);
    job_free(j);
    return st;
}
