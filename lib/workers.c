/* SPDX-License-Identifier: MIT */
/*
 * workers.c - the threads that open connections in the background.
 *
 * A caller that finds no idle connection never connects itself: it queues
 * and a worker opens one, which goes to the longest waiter (or to whoever is
 * first when a borrowed one comes back sooner).  So a caller's deadline never
 * depends on a connect, a connect that outlives its caller still serves the
 * next one, and attempts in flight are bounded by the number of workers.
 * After a failure the workers back off exponentially (10 ms doubling to 1 s),
 * so a crowd of callers cannot storm a database that is recovering.
 */
#include "pool_internal.h"

#include <stdio.h>

/* Records a failed attempt.  When nothing is open that could come back and no
   other attempt is under way, every waiter fails now with libpq's reason
   instead of waiting out its timeout (woken once the lock is released). */
static void workers_connect_failed_locked(pool_t *pool, pool_err_t rc, const char *msg,
                                          int64_t now_us)
{
    pool->stats.connect_errors++;
    snprintf(pool->last_error, sizeof pool->last_error, "%s", msg);
    pool->connect_failing = true;
    pool->grow_wanted = 0; /* those callers are long gone */
    pool->backoff_us = backoff_next(pool->backoff_us, POOL_BACKOFF_MIN_US, POOL_BACKOFF_MAX_US);
    pool->backoff_until_us = now_us + pool->backoff_us;
    if (pool->nopen > 0 || pool->nconnecting > 0)
        return;
    for (pool_waiter_t *w; (w = pool__waitq_pop_front(&pool->waiters));)
        pool__waiter_fail_locked(pool, w, rc, NULL); /* POOL_ECONNECT, or POOL_ENOMEM */
}

/* One attempt.  Called with the lock held; releases it around the connect
   and the logging, and returns with it held again. */
static void connect_once_locked(pool_t *pool)
{
    char err[POOL_MSG_LEN];
    unsigned epoch = pool->epoch; /* an evict from now on makes this one stale */
    pool->nconnecting++;
    pool_unlock(pool);

    pool_opening_t o;
    pool_err_t rc = pool__open_connect(pool, &o, err, sizeof err);
    bool ok = rc == POOL_OK;

    pthread_mutex_lock(&pool->lock);
    pool->nconnecting--;
    if (ok && pool->grow_wanted > 0)
        pool->grow_wanted--;
    /* Read now, not before the attempt: of two workers failing at once only
       the first logs, and a success after failures says so once. */
    bool was_failing = pool->connect_failing;
    pool_closing_t excess;
    pool__closing_init(&excess);
    if (ok)
        pool__open_adopt_locked(pool, &o, epoch, &excess);
    else
        workers_connect_failed_locked(pool, rc, err, pool__clock_now_us());
    bool stopping = pool->closed;
    pool_unlock(pool);

    pool__open_done(&o);
    pool__close_finish(pool, &excess);
    if (!ok && !was_failing && !stopping)
        pool__log(pool, POOL_LOG_WARN, "%s; retrying with backoff", err);
    else if (ok && was_failing)
        pool__log(pool, POOL_LOG_INFO, "connections succeed again");
    pthread_mutex_lock(&pool->lock);
}

/* A connect worker: holds the lock while it looks for demand, sleeps on
   work_cond while there is none (or a backoff runs), and releases it around
   each attempt (connect_once_locked). */
void *pool__connect_worker_main(void *arg)
{
    pool_t *pool = arg;
    pthread_mutex_lock(&pool->lock);
    while (!pool->closed) {
        if (pool__connect_demand_locked(pool) <= 0) {
            pthread_cond_wait(&pool->work_cond, &pool->lock);
            continue;
        }
        int64_t now = pool__clock_now_us();
        if (pool->connect_failing && now < pool->backoff_until_us) {
            struct timespec ts = pool__clock_abs_timespec(pool->backoff_until_us);
            pthread_cond_timedwait(&pool->work_cond, &pool->lock, &ts);
            continue;
        }
        connect_once_locked(pool);
    }
    pool_unlock(pool);
    return NULL;
}
