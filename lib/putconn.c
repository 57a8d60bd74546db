/* SPDX-License-Identifier: MIT */
/*
 * putconn.c - returning: pool_putconn and pool_discard.
 *
 * A return is a short sequence: this thread's connection is parked without
 * the lock when nothing is due (fast.c); else, under the lock, the
 * connection is found, its hold time counted, and a verdict reached (its
 * retirement, on_checkin, the server's errors, its state, a rollback or
 * reset_query, its session's identity and role, its age), with the lock
 * released around the hook and the round trips (checkin.c).  Then it is
 * made available (the longest waiter, else the idle list) or closed for its
 * reason.  With return_in_background, whatever would wait on the network
 * (a rollback, reset_query, a close) is left to the service thread.
 */
#include "pool_internal.h"

/* The connection pg stands for, checked out from this pool; NULL with this
   thread's error set for one it did not hand out or that was returned. */
static pool_conn_t *returned_locked(pool_t *pool, PGconn *pg)
{
    pool_conn_t *c = pool__conn_map_find(&pool->map, pg);
    if (c && c->state == CONN_IN_USE)
        return c;
    pool__set_error(POOL_EINVAL, c ? "connection was already returned to this pool"
                                   : "connection was not handed out by this pool");
    return NULL;
}

/* The locked way back, for what the fast path does not take. */
static int return_locked_path(pool_t *pool, PGconn *pg, bool discard)
{
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool_conn_t *c = returned_locked(pool, pg);
    if (!c) {
        pool_unlock(pool);
        return POOL_EINVAL;
    }
    int64_t now = pool__clock_now_us();
    uint64_t held = (uint64_t)(now - c->checkout_us);
    pool->stats.hold_us_total += held;
    pool__hist_record(&pool->stats.hold_hist, held);
    if (conn_inherited(pool, c)) { /* borrowed before a fork(): the parent still uses it */
        pool__conn_map_remove(&pool->map, pg);
        pool__release_slot_locked(pool, c);
        pool_unlock(pool);
        pool__conn_drop_silently(pg);
        return POOL_OK;
    }
    pool_closing_t closing;
    pool__closing_init(&closing);
    const char *what = NULL;
    char said[POOL_MSG_LEN]; /* the server's words, when a rollback or reset failed */
    said[0] = '\0';
    bool background = pool->cfg.return_in_background && !pool->closed;
    close_reason_t why;
    if (discard)
        why = CLOSE_DISCARDED;
    else if (!background)
        why = pool__checkin_verdict_locked(pool, c, true, &now, &what, said);
    else if (!conn_stale(pool, c) && !pool__checkin_hook_accepts_locked(pool, c))
        why = CLOSE_REJECTED;
    else if (pool__checkin_needs_io(pool, c)) {
        pool__service_return_locked(pool, c); /* the rest on the service thread */
        pool_unlock(pool);
        return POOL_OK;
    } else
        why = pool__checkin_verdict_locked(pool, c, false, &now, &what, said); /* no I/O left */
    if (why == CLOSE_NONE)
        pool__make_available_locked(pool, c, now, &closing);
    else
        pool__close_locked(pool, c, why, what, said, &closing);
    if (background && pool__close_later_locked(pool, &closing))
        pool__closing_init(&closing); /* the service thread closes them */
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    pool__close_finish(pool, &closing);
    return POOL_OK;
}

static int return_conn(pool_t *pool, PGconn *pg, bool discard)
{
    if (!pool_is_live(pool) || !pg) {
        pool__set_error(POOL_EINVAL, !pool_is_live(pool) ? "pool is NULL or not a live pool"
                                                         : "connection is NULL");
        return POOL_EINVAL;
    }
    if (!discard && pool__fast_return(pool, pg))
        return POOL_OK;
    int cancel = pool__cancel_off();
    int rc = return_locked_path(pool, pg, discard);
    pool__cancel_restore(cancel);
    return rc;
}

int pool_putconn(pool_t *pool, PGconn *conn)
{
    return return_conn(pool, conn, false);
}

int pool_discard(pool_t *pool, PGconn *conn)
{
    return return_conn(pool, conn, true);
}
