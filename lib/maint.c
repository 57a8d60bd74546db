/* SPDX-License-Identifier: MIT */
/*
 * maint.c - the background maintenance thread.
 *
 * Wakes a few times per shortest configured timeout (at least every second)
 * to close idle connections past idle_timeout_ms above min_size and any past
 * max_lifetime_ms, to report connections held past leak_timeout_ms, and to
 * nudge the connect workers to refill to min_size.  Scans are O(connections)
 * and run here, never on the borrowing path.
 */
#include "pool_internal.h"

#define MAINT_BATCH 64 /* leaks reported per round */

static int64_t tick_us(const pool_config_t *cfg)
{
    int64_t tick = 1000000;
    int timeouts[] = {cfg->idle_timeout_ms, cfg->max_lifetime_ms - cfg->lifetime_jitter_ms,
                      cfg->leak_timeout_ms};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++)
        if (timeouts[i] > 0 && (int64_t)timeouts[i] * 250 < tick)
            tick = (int64_t)timeouts[i] * 250;
    return tick < 5000 ? 5000 : tick;
}

/* The reason an idle connection is due to close now, or CLOSE_NONE. */
static close_reason_t due_locked(const pool_t *pool, const pool_conn_t *c, int64_t now)
{
    const pool_config_t *cfg = &pool->cfg;
    if (atomic_load_explicit(&c->evicted, memory_order_relaxed))
        return CLOSE_EVICTED; /* left over by an eviction that found more than it closes at once */
    if (pool__past_lifetime(pool, c, now))
        return CLOSE_LIFETIME;
    if (cfg->idle_timeout_ms > 0 && pool->nopen > cfg->min_size &&
        now - c->idle_since_us >= (int64_t)cfg->idle_timeout_ms * 1000)
        return CLOSE_IDLE;
    return CLOSE_NONE;
}

/* Detaches the idle connections due to close into *out (while it has room),
   oldest first. */
static void collect_idle_locked(pool_t *pool, int64_t now, pool_closing_t *out)
{
    /* Parked connections go back on the list to be looked at; their threads
       find them there (and park them again) on their next checkout. */
    pool__unpark_all_locked(pool);
    for (pool_conn_t *c = pool->idle_tail, *prev; c && out->n < POOL_CLOSE_BATCH; c = prev) {
        prev = c->prev;
        close_reason_t why = due_locked(pool, c, now);
        if (why != CLOSE_NONE)
            pool__close_locked(pool, c, why, NULL, NULL, out);
    }
}

static int collect_leaks_locked(pool_t *pool, int64_t now, int64_t *held_ms)
{
    int64_t limit = (int64_t)pool->cfg.leak_timeout_ms * 1000;
    int n = 0;
    if (limit <= 0)
        return 0;
    for (size_t i = 0; i <= pool->map.mask && n < MAINT_BATCH; i++) {
        pool_conn_t *c = pool->map.slots[i];
        if (!c)
            continue;
        /* The holder may return it meanwhile (fast.c): at worst this reports
           a checkout that ended just now, having lasted past the limit. */
        int64_t out = atomic_load_explicit(&c->checkout_us, memory_order_relaxed);
        if (c->state != CONN_IN_USE || conn_inherited(pool, c) ||
            atomic_load_explicit(&c->leak_reported, memory_order_relaxed) || now - out < limit)
            continue;
        atomic_store_explicit(&c->leak_reported, true, memory_order_relaxed);
        pool->stats.leaks++;
        held_ms[n++] = (now - out) / 1000;
    }
    return n;
}

/* The maintenance thread: holds the lock while it looks, releases it to close
   what it found and to log, and sleeps on maint_cond between rounds. */
void *pool__maint_main(void *arg)
{
    pool_t *pool = arg;
    int64_t held_ms[MAINT_BATCH];
    int64_t tick = tick_us(&pool->cfg);

    pthread_mutex_lock(&pool->lock);
    while (!pool->closed) {
        int64_t now = pool__clock_now_us();
        pool_closing_t closing;
        pool__closing_init(&closing);
        collect_idle_locked(pool, now, &closing);
        int nclose = closing.n;
        int nleak = collect_leaks_locked(pool, now, held_ms);
        pool__wake_workers_locked(pool);
        if (nclose > 0 || nleak > 0) {
            pool_unlock(pool);
            pool__close_finish(pool, &closing);
            for (int i = 0; i < nleak; i++)
                pool__log(pool, POOL_LOG_WARN,
                         "connection leak suspected: checked out for %lld ms (leak_timeout_ms %d)",
                         (long long)held_ms[i], pool->cfg.leak_timeout_ms);
            pthread_mutex_lock(&pool->lock);
            if (nclose == POOL_CLOSE_BATCH || nleak == MAINT_BATCH)
                continue;
        }
        struct timespec ts = pool__clock_abs_timespec(pool__clock_now_us() + tick);
        pthread_cond_timedwait(&pool->maint_cond, &pool->lock, &ts);
    }
    pool_unlock(pool);
    return NULL;
}
