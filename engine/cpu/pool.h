/* pool.h — a fixed set of worker threads that run one function together, with a barrier,
 * so a forward pass is written as straight-line code split by thread index. */
#ifndef SERVAL_POOL_H
#define SERVAL_POOL_H

typedef struct eng_pool eng_pool;

/* fn is called on every thread of the pool with ith in [0, nth). */
typedef void (*eng_pool_fn)(void *arg, int ith, int nth);

/* Creates a pool of n_threads threads in all (the caller of eng_pool_run is thread 0, so
 * n_threads - 1 workers are started). Returns NULL on failure. */
eng_pool *eng_pool_create(int n_threads);
void eng_pool_free(eng_pool *p);
int eng_pool_size(const eng_pool *p);

/* Runs fn on all threads and returns when every thread has finished. Not reentrant: one
 * run at a time per pool. */
void eng_pool_run(eng_pool *p, eng_pool_fn fn, void *arg);

/* Waits until every thread of the current run has reached it. Only valid inside fn. */
void eng_pool_barrier(eng_pool *p);

/* The [lo, hi) slice of n items that thread ith of nth takes. */
void eng_pool_split(long n, int ith, int nth, long *lo, long *hi);

#endif
