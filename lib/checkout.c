/* SPDX-License-Identifier: MIT */
/*
 * checkout.c - judging a claimed connection before it is handed out.
 *
 * pool_getconn's caller (getconn.c) and the service thread for async
 * requests (service.c) judge the same way: a retired or old connection is
 * closed unvalidated; the zero-round-trip check, a round trip when one is
 * due (with the server's role after it) and on_checkout run with the lock
 * released, bounded by the caller's deadline (never less than
 * POOL_PING_GRACE_US).
 */
#include "pool_internal.h"

/* The bound on a round-trip check: the caller's deadline, but never less than
   POOL_PING_GRACE_US (a timeout-0 caller's deadline has passed already) and
   never more than connect_timeout_ms. */
static int64_t ping_deadline(const pool_t *pool, int64_t now, int64_t caller_deadline)
{
    int64_t longest = now + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    int64_t shortest = now + POOL_PING_GRACE_US;
    int64_t d = caller_deadline > shortest ? caller_deadline : shortest;
    return d < longest ? d : longest;
}


/* The checks that may do I/O on a claimed connection: the zero-round-trip
   check, a due round trip with the server's role after it, and
   on_checkout.  Runs without the lock when pre_ping or on_checkout is set;
   else under it, reading libpq's state only. */
static close_reason_t validate_io(pool_t *pool, pool_conn_t *c, pool_checkout_t *k, bool *pinged,
                                  const char **what, char *said)
{
    conn_health_t health = pool__conn_check_nowait(c->pg, pool->cfg.pre_ping);
    *pinged = health == CONN_SUSPECT || (health == CONN_ALIVE && pool__ping_due(pool, c, k->now_us));
    if (health == CONN_DEAD) {
        *what = "found broken or busy at checkout:";
        return CLOSE_DEAD;
    }
    if (*pinged) {
        if (!pool__conn_exec_bounded(c->pg, "", ping_deadline(pool, k->now_us, k->deadline_us),
                                     said, POOL_MSG_LEN)) {
            *what = "it failed its ping:";
            return CLOSE_DEAD;
        }
        /* The round trip brought what the server reports since: a server
           demoted or fenced shows it here. */
        if (!pool__hosts_role_ok(&pool->hosts, c->pg)) {
            *what = "its server changed role, found by a ping";
            return CLOSE_ROLE;
        }
    }
    if (pool->cfg.on_checkout && pool->cfg.on_checkout(c->pg, pool->cfg.arg) != 0)
        return CLOSE_REJECTED;
    return CLOSE_NONE;
}

/* Whether the claimed connection c can be handed out (CLOSE_NONE), else why
   it is closed instead (and *what, with said, for the log).  A retired (a sibling's eviction found more than it
   closes at once) or old one is closed unvalidated.  Releases the lock around
   validate_io's I/O. */
close_reason_t pool__checkout_verdict_locked(pool_t *pool, pool_conn_t *c, pool_checkout_t *k,
                                             const char **what, char *said)
{
    if (k->clock_stale) {
        k->now_us = pool__clock_now_us();
        k->clock_stale = false;
    }
    if (conn_stale(pool, c))
        return retired_why(c);
    if (pool__past_lifetime(pool, c, k->now_us))
        return CLOSE_LIFETIME;
    bool io = pool->cfg.pre_ping || pool->cfg.on_checkout, pinged;
    if (io)
        pool_unlock(pool);
    close_reason_t why = validate_io(pool, c, k, &pinged, what, said);
    if (io) {
        pthread_mutex_lock(&pool->lock);
        k->clock_stale = pinged || pool->cfg.on_checkout;
    }
    pool->stats.pings += pinged;
    /* Evicted while it was being validated: not handed out after all. */
    return why == CLOSE_NONE && conn_stale(pool, c) ? CLOSE_EVICTED : why;
}
