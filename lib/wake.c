/* SPDX-License-Identifier: MIT */
/*
 * wake.c - parking a caller that waits in line, and waking it.
 *
 * A waiter sleeps on a word in its own pool_waiter_t (a futex), not on a
 * condition variable, so that the thread handing it a connection can wake
 * it after releasing the pool's lock: a waiter woken while its waker still
 * holds the lock would run straight into that lock and sleep again.
 *
 * The word says WAKE_WAITING, WAKE_ASLEEP (the waiter is in, or entering,
 * FUTEX_WAIT) or WAKE_WOKEN.  The waker swaps in WOKEN and makes the wake
 * syscall only if the waiter was asleep: a waiter handed a connection before
 * it got to sleep just sees WOKEN and goes on.  A late wake to a waiter that
 * has left meanwhile (it timed out just as it was served, and found the
 * connection under the lock) is harmless: a private FUTEX_WAKE reads no
 * memory, and whoever sleeps at that address re-checks its word.  Linux only,
 * like the rest of the project.  The service thread (service.c) sleeps the
 * same way, and a pool's eventfd (requests.c) is written the same way: after
 * the unlock.
 */
#include "pool_internal.h"

#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_PENDING 64 /* wakes deferred per lock hold; beyond, kicked at once */

/* Waiters this thread has woken under the lock and must still kick once it
   is released; owned by the thread. */
static _Thread_local _Atomic uint32_t *pending[MAX_PENDING];
static _Thread_local int npending;

void pool__wake_wait(_Atomic uint32_t *word, int64_t deadline_us)
{
    uint32_t waiting = WAKE_WAITING;
    if (!atomic_compare_exchange_strong(word, &waiting, WAKE_ASLEEP))
        return; /* woken already */
    struct timespec ts = pool__clock_abs_timespec(deadline_us);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.  Returns
       on a wake, the deadline, a signal or a word no longer ASLEEP; the
       caller re-checks in every case. */
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, WAKE_ASLEEP,
            deadline_us == INT64_MAX ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    uint32_t asleep = WAKE_ASLEEP;
    atomic_compare_exchange_strong(word, &asleep, WAKE_WAITING); /* unless woken */
}

static void kick(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

void pool__wake_after_unlock(_Atomic uint32_t *word)
{
    if (atomic_exchange(word, WAKE_WOKEN) != WAKE_ASLEEP)
        return; /* it will see WOKEN before it sleeps */
    if (npending < MAX_PENDING)
        pending[npending++] = word;
    else
        kick(word); /* correct, only slower */
}

/* An eventfd (requests.c) this thread made readable under the lock, written
   once it is released; -1: none. */
static _Thread_local int pending_fd = -1;

static void write_fd(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* EAGAIN only, at a counter near 2^64: readable all the same. */
    }
}

void pool__signal_fd_after_unlock(int fd)
{
    if (pending_fd >= 0 && pending_fd != fd)
        write_fd(pending_fd); /* another pool's, from a nested lock hold: at once */
    pending_fd = fd;
}

void pool__wake_pending(void)
{
    for (int i = 0; i < npending; i++)
        kick(pending[i]);
    npending = 0;
    if (pending_fd >= 0) {
        write_fd(pending_fd);
        pending_fd = -1;
    }
}
