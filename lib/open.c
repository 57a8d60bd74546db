/* SPDX-License-Identifier: MIT */
/*
 * open.c - opening a connection and adding it to the pool.
 *
 * pool_create opens min_size connections itself; after that the connect
 * workers (workers.c) open every one.  Both go through the same two steps:
 * pool__open_connect, with the lock released, makes the connection (one
 * attempt per host: hosts.c) and the slot it will live in; then
 * pool__open_adopt_locked tracks it and hands it to the longest waiter, or
 * to the idle list.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pool_err_t pool__open_connect(pool_t *pool, pool_opening_t *o, char *err, size_t errlen)
{
    o->spare = NULL;
    o->started_us = pool__clock_now_us();
    o->slot = pool__inflight_claim(pool);
    o->refused = false;
    o->pg = pool__hosts_connect(pool, o->slot, &o->host, err, errlen, &o->refused);
    if (!o->pg)
        pool__inflight_release(pool, o->slot);
    if (!o->pg && pool__says_out_of_memory(err)) { /* ours or libpq's */
        if (!strstr(err, "out of memory")) { /* say it in the same words every time */
            char why[POOL_MSG_LEN];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "out of memory: %s", why);
        }
        return POOL_ENOMEM;
    }
    if (!o->pg)
        return POOL_ECONNECT;
    /* Allocated here, off the lock; unused (a free slot was there) it is
       freed by pool__open_done. */
    o->spare = malloc(sizeof *o->spare);
    if (!o->spare) {
        pool__inflight_release(pool, o->slot);
        pool__conn_close(o->pg);
        o->pg = NULL;
        snprintf(err, errlen, "could not open connection: out of memory");
        return POOL_ENOMEM;
    }
    return POOL_OK;
}

/* Puts the new connection in a slot, with every field but the slot's own
   (all_next, shard) set afresh. */
static pool_conn_t *track_locked(pool_t *pool, pool_opening_t *o, unsigned epoch, int64_t now_us)
{
    pool_conn_t *c = pool__slot_get_locked(pool, &o->spare);
    c->prev = c->next = NULL;
    c->idle_since_us = now_us;
    c->checkout_us = 0;
    c->leak_reported = false;
    c->pg = o->pg;
    c->epoch = epoch;
    c->host = o->host;
    atomic_store_explicit(&c->evicted, false, memory_order_relaxed);
    pool__conn_watch(c, pool__hosts_expect_writes(&pool->hosts));
    c->created_us = now_us;
    c->lifetime_us = (int64_t)pool->cfg.max_lifetime_ms * 1000 -
                     pool__random_upto_locked(pool, (int64_t)pool->cfg.lifetime_jitter_ms * 1000);
    c->state = CONN_CHECKING;
    c->fork_gen = pool->fork_gen;
    pool__conn_map_insert(&pool->map, c);
    return c;
}

void pool__open_adopt_locked(pool_t *pool, pool_opening_t *o, unsigned epoch, pool_closing_t *out)
{
    int64_t now = pool__clock_now_us();
    pool_conn_t *c = track_locked(pool, o, epoch, now);
    pool__inflight_release(pool, o->slot); /* found in the map from now on */
    pool->nopen++;
    pool->stats.connects++;
    pool->host_state[o->host].connects++;
    pool__hist_record(&pool->stats.connect_hist, (uint64_t)(now - o->started_us));
    pool->connect_failing = false;
    pool->backoff_us = 0;
    pool__make_available_locked(pool, c, now, out);
}

void pool__open_done(pool_opening_t *o)
{
    free(o->spare);
    o->spare = NULL;
}
