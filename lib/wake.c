/*
 * wake.c - parking a caller that waits in line, and waking it.
 *
 * A waiter sleeps on a word in its own pool_waiter_t (a futex), not on a
 * condition variable, so that the thread handing it a connection can wake
 * it after releasing the pool's lock: a waiter woken while its waker still
 * holds the lock would run straight into that lock and sleep again.  Waking
 * late is safe even if the waiter has already left (it timed out and found
 * the connection under the lock): a private futex wake touches no memory and
 * at worst wakes a later waiter at the same stack address, which re-checks
 * its word and sleeps again.  Linux only, like the rest of the project.
 */
#include "pool_internal.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_PENDING 8

/* Waiters this thread has woken under the lock and must still kick once it
   is released; owned by the thread. */
static _Thread_local _Atomic uint32_t *pending[MAX_PENDING];
static _Thread_local int npending;

void wake_wait(_Atomic uint32_t *word, int64_t deadline_us)
{
    struct timespec ts = clock_abs_timespec(deadline_us);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.  Returns
       on a wake, the deadline, a signal or a word already nonzero; the caller
       re-checks in every case. */
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0,
            deadline_us == INT64_MAX ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

static void kick(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

void wake_now(_Atomic uint32_t *word)
{
    atomic_store_explicit(word, 1, memory_order_release);
    kick(word);
}

void wake_after_unlock(_Atomic uint32_t *word)
{
    atomic_store_explicit(word, 1, memory_order_release);
    if (npending < MAX_PENDING)
        pending[npending++] = word;
    else
        kick(word); /* correct, only slower */
}

void wake_pending(void)
{
    for (int i = 0; i < npending; i++)
        kick(pending[i]);
    npending = 0;
}
