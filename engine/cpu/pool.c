/* pool.c — worker threads that spin briefly then sleep between runs, and a spinning
 * sense-reversing barrier for the short phases inside a forward pass. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "status.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

struct eng_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* A run is published by bumping `gen`; workers wait for a new generation. */
    atomic_uint gen;
    atomic_int done;
    atomic_bool stop;
    eng_pool_fn fn;
    void *arg;
    /* barrier */
    atomic_int bar_count;
    atomic_uint bar_sense;
};

typedef struct {
    eng_pool *p;
    int ith;
} worker_arg;

static void spin_wait_gen(eng_pool *p, unsigned seen)
{
    for (int i = 0; i < 20000; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen ||
            atomic_load(&p->stop))
            return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *v)
{
    worker_arg *wa = v;
    eng_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    /* Runs are counted from 0 at creation; reading `gen` here instead would miss a run
     * published before this thread got scheduled. */
    unsigned seen = 0;
    for (;;) {
        spin_wait_gen(p, seen);
        if (atomic_load(&p->stop))
            break;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        p->fn(p->arg, ith, p->n);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    }
    return NULL;
}

eng_pool *eng_pool_create(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    eng_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || (wa->p = p, wa->ith = i, pthread_create(&p->threads[i], NULL, worker_main, wa)) != 0) {
            free(wa);
            p->n = i; /* only threads [1, i) exist */
            eng_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void eng_pool_free(eng_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int eng_pool_size(const eng_pool *p) { return p->n; }

void eng_pool_run(eng_pool *p, eng_pool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->done, 0);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) != p->n - 1) {
        if (++spins > 1000)
            sched_yield();
        else
            CPU_RELAX();
    }
}

void eng_pool_barrier(eng_pool *p)
{
    if (p->n == 1)
        return;
    unsigned sense = atomic_load_explicit(&p->bar_sense, memory_order_acquire);
    if (atomic_fetch_add_explicit(&p->bar_count, 1, memory_order_acq_rel) == p->n - 1) {
        atomic_store_explicit(&p->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->bar_sense, 1, memory_order_release);
        return;
    }
    int spins = 0;
    while (atomic_load_explicit(&p->bar_sense, memory_order_acquire) == sense) {
        if (++spins > 2000)
            sched_yield(); /* more threads than cores: let the others reach the barrier */
        else
            CPU_RELAX();
    }
}

void eng_pool_split(long n, int ith, int nth, long *lo, long *hi)
{
    ENG_ASSERT(nth > 0 && ith >= 0 && ith < nth);
    long per = n / nth, rem = n % nth;
    *lo = ith * per + (ith < rem ? ith : rem);
    *hi = *lo + per + (ith < rem ? 1 : 0);
}
