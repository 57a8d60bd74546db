/* SPDX-License-Identifier: MIT */
/*
 * control.c - changing a live pool: resize, evict, pause and resume.
 *
 * Each takes effect under the pool's lock at once and never interrupts a
 * borrower: connections in use are dealt with when they come back (see
 * pool__make_available_locked), idle ones are closed here, outside the lock.
 */
#include "pool_internal.h"

#include <stdio.h>

/* Closes idle connections, oldest first, while more than keep are open (keep
   read under the lock each round, so a concurrent resize is honoured).
   Takes the lock per batch and closes with it released. */
static void close_idle_above(pool_t *pool, int (*keep)(const pool_t *))
{
    for (;;) {
        pool_closing_t batch;
        pool__closing_init(&batch);
        pthread_mutex_lock(&pool->lock);
        int n = pool__detach_idle_locked(pool, keep(pool), &batch);
        pool__wake_workers_locked(pool);
        pool_unlock(pool);
        pool__close_finish(pool, &batch);
        if (n < POOL_CLOSE_BATCH)
            return;
    }
}

static int keep_max_size(const pool_t *pool)
{
    return pool->cfg.max_size;
}

static int keep_none(const pool_t *pool)
{
    return 0;
}

static int check_live(const pool_t *pool, const char *what)
{
    if (pool_is_live(pool))
        return POOL_OK;
    pool__set_error(POOL_EINVAL, "%s: pool is NULL or not a live pool", what);
    return POOL_EINVAL;
}

static int resize(pool_t *pool, int min_size, int max_size, int max_overflow)
{
    if (check_live(pool, "pool_resize") != POOL_OK)
        return POOL_EINVAL;
    char msg[POOL_MSG_LEN];
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool_config_t want = pool->cfg;
    want.min_size = min_size;
    want.max_size = max_size;
    want.max_overflow = max_overflow;
    int rc = pool__config_validate(&want, msg, sizeof msg);
    if (rc == POOL_OK && max_size + max_overflow > pool->map_total) {
        /* Room in the lookup table for the new most (and as many inherited
           across a fork); allocating here is off the borrowing path. */
        rc = pool__conn_map_resize(&pool->map, 2 * (size_t)(max_size + max_overflow));
        if (rc == POOL_OK)
            pool->map_total = max_size + max_overflow;
        else
            snprintf(msg, sizeof msg, "out of memory");
    }
    if (rc != POOL_OK) {
        pool_unlock(pool);
        pool__set_error_msg((pool_err_t)rc, msg);
        return rc;
    }
    pool->cfg.min_size = min_size;
    pool->cfg.max_size = max_size;
    pool->cfg.max_overflow = max_overflow;
    pool__wake_workers_locked(pool); /* more room for waiters, or a higher min_size */
    pool_unlock(pool);
    close_idle_above(pool, keep_max_size);
    pool__log(pool, POOL_LOG_INFO, "resized: min_size %d, max_size %d, max_overflow %d", min_size,
             max_size, max_overflow);
    return POOL_OK;
}

int pool_resize(pool_t *pool, int min_size, int max_size, int max_overflow)
{
    int cancel = pool__cancel_off(); /* closing reaches cancellation points */
    int rc = resize(pool, min_size, max_size, max_overflow);
    pool__cancel_restore(cancel);
    return rc;
}

int pool_evict(pool_t *pool)
{
    if (check_live(pool, "pool_evict") != POOL_OK)
        return POOL_EINVAL;
    int cancel = pool__cancel_off(); /* closing reaches cancellation points */
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    /* Every connection opened, or begun, before now is stale: closed when
       next seen (returned, validated, finished opening). */
    pool->epoch++;
    pool_unlock(pool);
    close_idle_above(pool, keep_none);
    pool__log(pool, POOL_LOG_INFO, "evicted every connection: new ones replace them");
    pool__cancel_restore(cancel);
    return POOL_OK;
}

int pool_pause(pool_t *pool)
{
    if (check_live(pool, "pool_pause") != POOL_OK)
        return POOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->paused = true;
    pool_unlock(pool);
    return POOL_OK;
}

int pool_resume(pool_t *pool)
{
    if (check_live(pool, "pool_resume") != POOL_OK)
        return POOL_EINVAL;
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->paused = false;
    pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool); /* for those still waiting */
    pool_unlock(pool);
    return POOL_OK;
}
