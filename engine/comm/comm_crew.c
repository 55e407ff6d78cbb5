/* comm_crew.c — a tensor-parallel group's host threads (comm_crew.h): one per rank, a job
 * published to all of them as a generation number under one mutex, each counting itself done,
 * the caller waiting for the count. */
#include "comm_crew.h"

#include <pthread.h>
#include <stdlib.h>

enum { CREW_MAX_RANKS = 64 };

typedef struct crew_rank {
    eng_comm_crew *c;
    int rank;
    pthread_t thread;
    bool started;
    eng_status st; /* of its start, then of its last job */
    eng_err err;
} crew_rank;

struct eng_comm_crew {
    eng_comm_crew_config cfg;
    int first;        /* the first rank with a thread: 1 with rank0_on_caller, else 0 */
    crew_rank *ranks; /* [n_ranks] */
    /* the job handed to the threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned gen;     /* jobs published */
    int done;         /* threads finished with the current job (or with their start) */
    bool stop;
    eng_comm_crew_fn job;
    void *job_arg;
};

static void rank_done(eng_comm_crew *c)
{
    pthread_mutex_lock(&c->mu);
    c->done++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* fn on rank rk; a job's failure of its own fails the group, so the others stop waiting. */
static eng_status run_one(eng_comm_crew *c, crew_rank *rk, eng_comm_crew_fn fn, void *arg,
                          bool is_job)
{
    eng_status st = fn ? fn(arg, rk->rank, &rk->err) : ENG_OK;
    if (is_job && st != ENG_OK && st != ENG_ERR_CANCELLED && c->cfg.comm)
        c->cfg.comm->ops->abort(c->cfg.comm, rk->err.msg);
    return st;
}

static void *crew_main(void *v)
{
    crew_rank *rk = v;
    eng_comm_crew *c = rk->c;
    rk->st = run_one(c, rk, c->cfg.start, c->cfg.arg, false);
    unsigned seen = 0; /* create publishes nothing before every start is done */
    rank_done(c);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (c->gen == seen && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        seen = c->gen;
        eng_comm_crew_fn job = c->job;
        void *arg = c->job_arg;
        pthread_mutex_unlock(&c->mu);
        rk->st = run_one(c, rk, job, arg, true);
        rank_done(c);
    }
    if (c->cfg.stop)
        c->cfg.stop(c->cfg.arg, rk->rank);
    return NULL;
}

/* Waits (mu not held) until n threads have counted themselves done. */
static void wait_done(eng_comm_crew *c, int n)
{
    pthread_mutex_lock(&c->mu);
    while (c->done < n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

/* The first rank with an error of its own (not the group's echo of another's), or NULL. */
static const crew_rank *first_failed(const eng_comm_crew *c)
{
    const crew_rank *bad = NULL;
    for (int q = 0; q < c->cfg.n_ranks; q++) {
        const crew_rank *rk = &c->ranks[q];
        if (rk->st != ENG_OK &&
            (!bad || (bad->st == ENG_ERR_CANCELLED && rk->st != ENG_ERR_CANCELLED)))
            bad = rk;
    }
    return bad;
}

static eng_status report(const eng_comm_crew *c, int *bad_rank, eng_err *err)
{
    const crew_rank *bad = first_failed(c);
    if (!bad)
        return ENG_OK;
    if (bad_rank)
        *bad_rank = bad->rank;
    return eng_fail(err, bad->st, "%s", bad->err.msg);
}

void eng_comm_crew_free(eng_comm_crew *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    for (int q = c->first; q < c->cfg.n_ranks; q++)
        if (c->ranks[q].started)
            pthread_join(c->ranks[q].thread, NULL);
    if (c->first == 1 && c->cfg.stop)
        c->cfg.stop(c->cfg.arg, 0);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->ranks);
    free(c);
}

eng_status eng_comm_crew_create(const eng_comm_crew_config *cfg, eng_comm_crew **out,
                                int *bad_rank, eng_err *err)
{
    *out = NULL;
    if (bad_rank)
        *bad_rank = -1;
    if (cfg->n_ranks < 1 || cfg->n_ranks > CREW_MAX_RANKS)
        return eng_fail(err, ENG_ERR_INVALID, "a crew of %d ranks is outside [1, %d]",
                        cfg->n_ranks, CREW_MAX_RANKS);
    eng_comm_crew *c = calloc(1, sizeof *c);
    crew_rank *ranks = calloc((size_t)cfg->n_ranks, sizeof *ranks);
    if (!c || !ranks) {
        free(c);
        free(ranks);
        return eng_fail(err, ENG_ERR_NOMEM, "out of memory");
    }
    c->cfg = *cfg;
    c->ranks = ranks;
    c->first = cfg->rank0_on_caller ? 1 : 0;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    for (int q = 0; q < cfg->n_ranks; q++)
        c->ranks[q] = (crew_rank){.c = c, .rank = q};
    if (c->first == 1)
        c->ranks[0].st = run_one(c, &c->ranks[0], cfg->start, cfg->arg, false);
    for (int q = c->first; q < cfg->n_ranks; q++) {
        if (pthread_create(&c->ranks[q].thread, NULL, crew_main, &c->ranks[q]) != 0) {
            eng_status st = eng_fail(err, ENG_ERR_NOMEM, "cannot start the thread of rank %d", q);
            wait_done(c, q - c->first); /* the started ones finish their start first */
            eng_comm_crew_free(c);
            return st;
        }
        c->ranks[q].started = true;
    }
    wait_done(c, cfg->n_ranks - c->first);
    eng_status st = report(c, bad_rank, err);
    if (st != ENG_OK) {
        eng_comm_crew_free(c);
        return st;
    }
    *out = c;
    return ENG_OK;
}

eng_status eng_comm_crew_run(eng_comm_crew *c, eng_comm_crew_fn job, void *arg, int *bad_rank,
                             eng_err *err)
{
    pthread_mutex_lock(&c->mu);
    c->job = job;
    c->job_arg = arg;
    c->done = 0;
    c->gen++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->first == 1)
        c->ranks[0].st = run_one(c, &c->ranks[0], job, arg, true);
    wait_done(c, c->cfg.n_ranks - c->first);
    return report(c, bad_rank, err);
}
