/* clock.h — the one monotonic clock every part of Serval times and waits with (request
 * latencies, deadlines, drains, benchmarks), and absolute deadlines for condition waits. */
#ifndef SERVAL_CLOCK_H
#define SERVAL_CLOCK_H

#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC (not wall time: never jumps with NTP or the admin). */
double eng_clock_ms(void);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait on a condition
 * variable whose clock is CLOCK_MONOTONIC (pthread_condattr_setclock). ms < 0 counts as 0. */
struct timespec eng_clock_deadline(double ms);

#endif
