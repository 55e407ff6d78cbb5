/* clock.c — the monotonic clock (clock.h). */
#include "clock.h"

double eng_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct timespec eng_clock_deadline(double ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0)
        ms = 0;
    long long add_ns = (long long)(ms * 1e6);
    ts.tv_sec += (time_t)(add_ns / 1000000000LL);
    ts.tv_nsec += (long)(add_ns % 1000000000LL);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}
