/* test_pool.c — the thread pool: every thread runs, barriers order phases, splits cover. */
#include <criterion/criterion.h>
#include <stdatomic.h>

#include "pool.h"

typedef struct {
    eng_pool *p;
    atomic_int phase1;
    int seen_after_barrier[8];
    long covered[1000];
} job;

static void fn(void *arg, int ith, int nth)
{
    job *j = arg;
    atomic_fetch_add(&j->phase1, 1);
    eng_pool_barrier(j->p);
    j->seen_after_barrier[ith] = atomic_load(&j->phase1);
    long lo, hi;
    eng_pool_split(1000, ith, nth, &lo, &hi);
    for (long i = lo; i < hi; i++)
        j->covered[i] += 1;
}

Test(pool, barrier_and_split)
{
    for (int n = 1; n <= 4; n++) {
        eng_pool *p = eng_pool_create(n);
        cr_assert_not_null(p);
        for (int rep = 0; rep < 200; rep++) {
            job j = {.p = p};
            eng_pool_run(p, fn, &j);
            for (int t = 0; t < n; t++)
                cr_assert_eq(j.seen_after_barrier[t], n, "thread %d passed the barrier early", t);
            for (int i = 0; i < 1000; i++)
                cr_assert_eq(j.covered[i], 1, "item %d covered %ld times", i, j.covered[i]);
        }
        eng_pool_free(p);
    }
}

static void count(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* A run published right after creation, before the workers are scheduled, must still reach
 * every worker (it used to be missed and the caller waited forever). */
Test(pool, first_run_right_after_create, .timeout = 20)
{
    for (int rep = 0; rep < 300; rep++) {
        eng_pool *p = eng_pool_create(3);
        atomic_int n = 0;
        eng_pool_run(p, count, &n);
        cr_assert_eq(atomic_load(&n), 3);
        eng_pool_free(p);
    }
}
