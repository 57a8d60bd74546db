/* SPDX-License-Identifier: MIT */
/*
 * checkin.c - judging a returned connection before it is reused.
 *
 * pool_putconn (putconn.c) and, for a pool with return_in_background, the
 * service thread (service.c) judge the same way: its retirement, on_checkin,
 * the server's errors, its state, a rollback or reset_query, its session's
 * identity and role, its age.  The hook and the round trips run with the
 * lock released, the connection RETURNING meanwhile.
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
   trip.  Releases the lock around on_checkin (when hook), the rollback and
   reset_query. */
close_reason_t pool__checkin_verdict_locked(pool_t *pool, pool_conn_t *c, bool hook, int64_t *now_us,
                                            const char **what, char *said)
{
    PGconn *pg = c->pg;
    /* Retired while borrowed: closed as it is (no rollback, reset or hook),
       without waiting on a server its host's eviction suspects. */
    if (conn_stale(pool, c))
        return retired_why(c);
    if (hook && !pool__checkin_hook_accepts_locked(pool, c))
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

/* on_checkin's verdict (true: reuse), run with the lock released. */
bool pool__checkin_hook_accepts_locked(pool_t *pool, pool_conn_t *c)
{
    return !pool->cfg.on_checkin || unlocked_on_returning(pool, c, checkin_hook_accepts, NULL);
}

/* Whether judging c needs the network (a rollback, reset_query, or a close),
   past the hook: a return_in_background pool leaves those returns to the
   service thread. */
bool pool__checkin_needs_io(const pool_t *pool, const pool_conn_t *c)
{
    return conn_stale(pool, c) || c->doom != DOOM_NONE || !pool__conn_returnable(c->pg) ||
           PQtransactionStatus(c->pg) != PQTRANS_IDLE || pool->reset_query;
}
