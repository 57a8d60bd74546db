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
 * so a crowd of callers cannot storm a database that is recovering.  A
 * server with no slot to spare (SQLSTATE 53300) also lowers the pool's
 * ceiling (pool_limit): halved at once, raised by one every ~100 ms while
 * connects succeed and callers want more, back to max_size + max_overflow.
 */
#include "pool_internal.h"

#include <stdio.h>

/* A delay of `us`, give or take half of it, so that pools refused together
   do not come back together. */
static int64_t jittered_locked(pool_t *pool, int64_t us)
{
    return us / 2 + pool__random_upto_locked(pool, us);
}

/* The server refused a connection for lack of slots (53300): the ceiling
   halves at once (never below 1) from what this pool holds, idle
   connections above it are let go (into *out) for others to have, and the
   next attempt waits a jittered backoff.  Callers waiting are not failed:
   returns serve them, and the next attempts, while their deadlines allow. */
static void refused_locked(pool_t *pool, int64_t now_us, pool_closing_t *out)
{
    pool->stats.server_refusals++;
    int held = pool->nopen < pool_limit(pool) ? pool->nopen : pool_limit(pool);
    pool->ceiling = held / 2 > 1 ? held / 2 : 1;
    pool->backoff_until_us = now_us + jittered_locked(pool, pool->backoff_us);
    pool->probe_at_us = pool->backoff_until_us;
    pool__detach_idle_locked(pool, pool->ceiling, out);
}

/* Records a failed attempt.  When nothing is open that could come back and no
   other attempt is under way, every waiter fails now with libpq's reason
   instead of waiting out its timeout (woken once the lock is released);
   not when the server only lacked a free slot (refused_locked). */
static void workers_connect_failed_locked(pool_t *pool, const pool_opening_t *o, pool_err_t rc,
                                          const char *msg, int64_t now_us, pool_closing_t *out)
{
    pool->stats.connect_errors++;
    snprintf(pool->last_error, sizeof pool->last_error, "%s", msg);
    pool->connect_failing = true;
    pool->grow_wanted = 0; /* those callers are long gone */
    pool->backoff_us = backoff_next(pool->backoff_us, POOL_BACKOFF_MIN_US, POOL_BACKOFF_MAX_US);
    pool->backoff_until_us = now_us + pool->backoff_us;
    if (o->refused) {
        refused_locked(pool, now_us, out);
        return;
    }
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
        workers_connect_failed_locked(pool, &o, rc, err, pool__clock_now_us(), &excess);
    bool stopping = pool->closed;
    int ceiling = pool_limit(pool);
    /* Refusals come in storms: said at most once a second. */
    int64_t now = pool__clock_now_us();
    bool say_refused = !ok && o.refused && now - pool->refusal_said_us >= 1000000;
    if (say_refused)
        pool->refusal_said_us = now;
    pool_unlock(pool);

    pool__open_done(&o);
    pool__close_finish(pool, &excess);
    if (say_refused && !stopping)
        pool__log(pool, POOL_LOG_WARN,
                  "%s; the server has no slot to spare (SQLSTATE 53300): this pool's ceiling is "
                  "now %d, retrying with backoff",
                  err, ceiling);
    else if (!ok && !o.refused && !was_failing && !stopping)
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
            if (!pool__ceiling_holds_back_locked(pool)) {
                pthread_cond_wait(&pool->work_cond, &pool->lock);
                continue;
            }
            /* Wanted above the learnt ceiling: one more, once its time has
               come, and one more after each step while they succeed. */
            int64_t now = pool__clock_now_us();
            if (now < pool->probe_at_us) {
                struct timespec ts = pool__clock_abs_timespec(pool->probe_at_us);
                pthread_cond_timedwait(&pool->work_cond, &pool->lock, &ts);
                continue;
            }
            if (++pool->ceiling >= pool_max_total(pool))
                pool->ceiling = 0; /* back to the configured maximum */
            pool->probe_at_us = now + jittered_locked(pool, POOL_CEILING_STEP_US);
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
