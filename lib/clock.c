/* SPDX-License-Identifier: MIT */
/*
 * clock.c - time for deadlines and statistics.
 *
 * Everything runs on CLOCK_MONOTONIC in microseconds, so a wall-clock jump
 * never stretches or cuts a timeout.
 */
#include "pool_internal.h"

#include <time.h>

int64_t pool__clock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* For pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. */
struct timespec pool__clock_abs_timespec(int64_t deadline_us)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_us / 1000000);
    ts.tv_nsec = (long)(deadline_us % 1000000) * 1000;
    return ts;
}

/* A poll() timeout that ends at the deadline, rounded up so a poll never
   returns just short of it and spins, capped at slice_ms so the caller can
   look at a stop flag now and then. */
int pool__clock_poll_timeout_ms(int64_t deadline_us, int64_t now_us, int slice_ms)
{
    int64_t left = deadline_us - now_us;
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999) / 1000;
    return ms > slice_ms ? slice_ms : (int)ms;
}
