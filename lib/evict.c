/* SPDX-License-Identifier: MIT */
/*
 * evict.c - retiring every connection to a host that failed.
 *
 * When one connection to a host breaks, fails its ping, finds the server in
 * the wrong role, or is marked by the server's error (class 08, 57P01-57P03,
 * 25006 where writes are expected: see conn_events in pool.c), its siblings
 * on that host are most likely no better: the server restarted, was demoted
 * or fenced, or the network to it is gone.  Handing them out one by one would
 * fail one caller each (or cost each a ping that may hang until
 * connect_timeout_ms on a black hole).  So the whole host is retired at once,
 * as SQLAlchemy does for its whole pool on a disconnect: idle connections are
 * closed now, checked-out ones when they come back, and the connect workers
 * open replacements, on whichever host answers (hosts.c puts a host that
 * failed last).  The price, when only one backend was killed, is reopening the
 * host's idle connections.  A connection already retired does not evict again:
 * the connections opened since are not retired by news older than they are.
 */
#include "pool_internal.h"

/* Detaches up to max idle connections retired by an eviction, for
   pool__finish_closes; returns how many. */
int pool__evict_detach_idle_locked(pool_t *pool, PGconn **out, int max)
{
    int n = 0;
    for (pool_conn_t *c = pool->idle_tail, *prev; c && n < max; c = prev) {
        prev = c->prev;
        if (atomic_load_explicit(&c->evicted, memory_order_relaxed)) {
            out[n++] = pool__detach_locked(pool, c);
            pool->stats.closed_evicted++;
        }
    }
    return n;
}

/* Retires every connection open to host (the one that failed is already
   detached by the caller) and detaches up to max idle ones into out. */
int pool__evict_host_locked(pool_t *pool, int host, PGconn **out, int max)
{
    pool->stats.evictions++;
    pool->host_state[host].evictions++;
    /* Marked before parked ones are moved to the idle list: a thread parking
       its connection meanwhile sees the mark (pool__fast_return) or is unparked. */
    for (pool_conn_t *c = pool->all_slots; c; c = c->all_next)
        if (c->host == host && atomic_load_explicit(&c->state, memory_order_relaxed) != CONN_FREE &&
            !conn_inherited(pool, c))
            atomic_store(&c->evicted, true);
    pool__unpark_all_locked(pool);
    return pool__evict_detach_idle_locked(pool, out, max);
}

/* Closes what pool__evict_host_locked detached, then the rest of the host's idle
   connections batch by batch.  They are dropped, not closed gracefully: the
   server may be gone or unreachable. */
void pool__evict_finish(pool_t *pool, PGconn **batch, int n)
{
    while (n > 0) {
        pool__finish_closes(pool, batch, n, false);
        if (n < POOL_EVICT_BATCH)
            return;
        pthread_mutex_lock(&pool->lock);
        n = pool__evict_detach_idle_locked(pool, batch, POOL_EVICT_BATCH);
        pool_unlock(pool);
    }
}
