/* SPDX-License-Identifier: MIT */
/*
 * putconn.c - returning: pool_putconn and pool_discard.
 *
 * A return is a short sequence: this thread's connection is parked without
 * the lock when nothing is due (fast.c); else, under the lock, the
 * connection is found, its hold time counted, and a verdict reached (its
 * retirement, on_checkin, the server's errors, its state, a rollback or
 * reset_query, its session's identity and role, its age), with the lock
 * released around the hook and the round trips.  Then it is made available
 * (the longest waiter, else the idle list) or closed for its reason.
 */
#include "pool_internal.h"

/* Runs fn(pool, c, arg) with the lock released, c RETURNING meanwhile (so
   that a second return of it is refused) and counted as a call inside the
   pool (pool_destroy waits for it).  Called with the lock held; returns with
   it held. */
static bool unlocked_on_returning(pool_t *pool, pool_conn_t *c,
                                  bool (*fn)(pool_t *, pool_conn_t *, void *), void *arg)
{
    c->state = CONN_RETURNING;
    pool->ncalls++;
    pool_unlock(pool);
    bool ok = fn(pool, c, arg);
    pthread_mutex_lock(&pool->lock);
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
    return ok;
}

static bool checkin_hook_accepts(pool_t *pool, pool_conn_t *c, void *unused)
{
    return pool->cfg.on_checkin(c->pg, pool->cfg.arg) == 0;
}

/* What one return's clean-up did. */
typedef struct cleanup {
    int64_t now_us;
    bool rollback, rolled_back;
    char *said;         /* POOL_MSG_LEN bytes: the server's words when one failed */
} cleanup_t;

/* ROLLBACK when left in a transaction, then reset_query; false when the
   connection must be closed. */
static bool clean_for_reuse(pool_t *pool, pool_conn_t *c, void *arg)
{
    cleanup_t *cu = arg;
    int64_t deadline = cu->now_us + (int64_t)pool->cfg.connect_timeout_ms * 1000;
    cu->rolled_back = cu->rollback &&
                      pool__conn_exec_bounded(c->pg, "ROLLBACK", deadline, cu->said, POOL_MSG_LEN);
    bool ok = cu->rollback ? cu->rolled_back : true;
    if (ok && pool->reset_query)
        ok = pool__conn_exec_bounded(c->pg, pool->reset_query, deadline, cu->said, POOL_MSG_LEN);
    return ok;
}

/* Broken (the server went away: its host is suspect), or not reusable on a
   live server. */
static close_reason_t unusable_why(PGconn *pg)
{
    return PQstatus(pg) == CONNECTION_BAD ? CLOSE_DEAD : CLOSE_UNUSABLE;
}

/* Why a returned connection cannot be reused as it is, for the log. */
static const char *not_returnable_what(PGconn *pg)
{
    if (PQstatus(pg) == CONNECTION_BAD)
        return "returned broken:";
    if (PQpipelineStatus(pg) != PQ_PIPELINE_OFF)
        return "returned in pipeline mode";
    return "returned with a query or COPY in progress";
}

/* What becomes of a returned connection: CLOSE_NONE to reuse it, else why it
   is closed (and *what, with said, for the log).  *now_us is read again after a round
   trip.  Releases the lock around on_checkin, the rollback and reset_query. */
static close_reason_t verdict_locked(pool_t *pool, pool_conn_t *c, int64_t *now_us,
                                     const char **what, char *said)
{
    PGconn *pg = c->pg;
    /* Retired while borrowed: closed as it is (no rollback, reset or hook),
       without waiting on a server its host's eviction suspects. */
    if (conn_stale(pool, c))
        return retired_why(c);
    if (pool->cfg.on_checkin && !unlocked_on_returning(pool, c, checkin_hook_accepts, NULL))
        return CLOSE_REJECTED;
    if (c->doom != DOOM_NONE) {
        *what = c->doom == DOOM_SERVER ? "the server ended its session:"
                                       : "a write was refused, the server is read-only:";
        return c->doom == DOOM_SERVER ? CLOSE_DEAD : CLOSE_ROLE;
    }
    if (!pool__conn_returnable(pg)) {
        *what = not_returnable_what(pg);
        return unusable_why(pg);
    }
    cleanup_t cu = {.now_us = *now_us, .rollback = PQtransactionStatus(pg) != PQTRANS_IDLE,
                    .said = said};
    if (cu.rollback || pool->reset_query) {
        bool ok = unlocked_on_returning(pool, c, clean_for_reuse, &cu);
        pool->stats.rollbacks += cu.rolled_back;
        if (!ok) {
            *what = cu.rollback && !cu.rolled_back ? "its ROLLBACK at return failed:"
                                                   : "reset_query failed:";
            return unusable_why(pg);
        }
        *now_us = pool__clock_now_us();
    }
    bool may_have_changed = !c->results_counted || c->results != c->results_verified;
    if (may_have_changed && pool__session_identity_changed(c)) {
        *what = "returned as another user (session_authorization or is_superuser changed)";
        return CLOSE_UNUSABLE;
    }
    if (may_have_changed && !pool__hosts_role_ok(&pool->hosts, pg)) {
        *what = "its server changed role, reported after a statement";
        return CLOSE_ROLE;
    }
    if (pool__past_lifetime(pool, c, *now_us))
        return CLOSE_LIFETIME;
    c->results_verified = c->results;
    return CLOSE_NONE;
}

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
    close_reason_t why = discard ? CLOSE_DISCARDED : verdict_locked(pool, c, &now, &what, said);
    if (why == CLOSE_NONE)
        pool__make_available_locked(pool, c, now, &closing);
    else
        pool__close_locked(pool, c, why, what, said, &closing);
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
