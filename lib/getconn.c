/* SPDX-License-Identifier: MIT */
/*
 * getconn.c - borrowing: pool_getconn and pool_getconn_timeout.
 *
 * A borrow is a short sequence: this thread's parked connection without the
 * lock when it needs nothing more (fast.c); else, under the lock, claim a
 * connection (an idle one, or one handed over after waiting in line), judge
 * it (retired or old ones are closed unvalidated; the zero-round-trip check,
 * a due round trip and on_checkout run with the lock released), and either
 * hand it out or close it for its reason and claim the next, all within the
 * caller's deadline.
 */
#include "pool_internal.h"

#include <stdio.h>

/* One pool_getconn call, on the caller's stack. */
typedef struct borrow {
    int64_t start_us, deadline_us;
    int64_t now_us;      /* the clock as last read */
    bool clock_stale;    /* something took time since now_us was read */
    int timeout_ms;
    bool at_front;       /* stood in line already: back to the front, not the back */
    pool_waiter_t w;     /* this caller's place in line */
} borrow_t;

static void set_timeout_error_locked(const pool_t *pool, int timeout_ms)
{
    bool failing = pool->connect_failing;
    pool__set_error(POOL_ETIMEDOUT,
                    "timed out after %d ms waiting for a connection (%d open, %d in use, %d waiting%s)%s%.380s",
                    timeout_ms, pool->nopen, pool->nopen - pool->nidle, pool->waiters.len,
                    pool->paused ? ", pool paused" : "",
                    failing ? "; last connection error: " : "", failing ? pool->last_error : "");
}

/* The idle connection to hand out: the one this thread borrowed last when it
   is idle (the thread keeps talking to the same backend, as with a dedicated
   connection, which the server's caches reward, and returns it through the
   fast path), else the most recently returned, else a parked one. */
static pool_conn_t *pick_idle_locked(pool_t *pool)
{
    if (!pool->idle_head)
        pool__unpark_all_locked(pool);
    pool_conn_t *mine = pool__fast_mine(pool);
    return mine && mine->state == CONN_IDLE ? mine : pool->idle_head;
}

/* Whether the caller may wait in line: POOL_OK, or ETIMEDOUT (its deadline
   passed) or EBUSY (max_waiting reached) with this thread's error set.  Even
   while connects fail a caller waits: the next attempt (at most a backoff
   away) either serves it or fails it at once with libpq's reason when
   nothing checked out could come back. */
static pool_err_t may_wait_locked(pool_t *pool, borrow_t *b)
{
    if (pool__clock_now_us() >= b->deadline_us) {
        int room = pool_max_total(pool) - pool->nopen - pool->nconnecting - pool->nclosing;
        if (!b->at_front && pool->grow_wanted < room) {
            /* A caller that may not wait still asks for one more connection
               (where there is room), so that the next such caller finds one. */
            pool->grow_wanted++;
            pool__wake_workers_locked(pool);
        }
        set_timeout_error_locked(pool, b->timeout_ms);
        return POOL_ETIMEDOUT;
    }
    if (pool->cfg.max_waiting > 0 && pool->waiters.len >= pool->cfg.max_waiting) {
        pool__set_error(POOL_EBUSY, "too many callers waiting for a connection (max_waiting %d)",
                        pool->cfg.max_waiting);
        return POOL_EBUSY;
    }
    return POOL_OK;
}

/* Queues the caller (at the back, or back at the front) and sleeps until it
   is handed a connection, failed, the pool closes or the deadline passes.
   Releases the lock while it sleeps; returns with it held and the caller
   out of the line: the connection handed over, or NULL with *rc the failure
   (POOL_OK: look again). */
static pool_conn_t *wait_in_line_locked(pool_t *pool, borrow_t *b, pool_err_t *rc)
{
    pool_waiter_t *w = &b->w;
    w->conn = NULL;
    w->err = POOL_OK;
    atomic_store_explicit(&w->woken, WAKE_WAITING, memory_order_relaxed);
    if (b->at_front)
        pool__waitq_push_front(&pool->waiters, w);
    else
        pool__waitq_push_back(&pool->waiters, w);
    b->at_front = b->clock_stale = true; /* once in line, the caller keeps its place */
    /* The handshake with the fast path (fast.c): close its gate, then take
       what it parked meanwhile. */
    atomic_store(&pool->fast_ok, false);
    if (!pool->paused)
        pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool);
    while (!w->conn && w->err == POOL_OK && !pool->closed) {
        pool_unlock(pool);
        /* Woken without the lock: whoever wakes us set w first, under it. */
        while (atomic_load_explicit(&w->woken, memory_order_acquire) != WAKE_WOKEN &&
               pool__clock_now_us() < b->deadline_us)
            pool__wake_wait(&w->woken, b->deadline_us);
        pthread_mutex_lock(&pool->lock);
        if (atomic_load_explicit(&w->woken, memory_order_relaxed) != WAKE_WOKEN &&
            pool__clock_now_us() >= b->deadline_us)
            break;
    }
    pool__waitq_remove(&pool->waiters, w);
    pool_conn_t *c = w->conn;
    if (c && pool->closed) { /* handed over just before the close: give it back */
        pool__idle_push_locked(pool, c, pool__clock_now_us());
        c = NULL;
    }
    if (!c && w->err != POOL_OK)
        pool__set_error_msg(w->err, pool->last_error);
    *rc = c ? POOL_OK : w->err;
    return c;
}

/* Claims a connection for the caller: an idle one, or one handed over after
   waiting in line (the lock is released while it waits).  On failure returns
   the code with this thread's error set. */
static pool_err_t claim_locked(pool_t *pool, borrow_t *b, pool_conn_t **out)
{
    for (;;) {
        if (pool->closed) {
            pool__set_error(POOL_ECLOSED, "pool is closed");
            return POOL_ECLOSED;
        }
        pool_conn_t *c = pool->paused ? NULL : pick_idle_locked(pool);
        if (c) {
            pool__idle_remove_locked(pool, c);
            c->state = CONN_CHECKING;
            *out = c;
            return POOL_OK;
        }
        pool_err_t rc = may_wait_locked(pool, b);
        if (rc != POOL_OK)
            return rc;
        if ((*out = wait_in_line_locked(pool, b, &rc)) || rc != POOL_OK)
            return rc;
    }
}

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

static bool ping_due(const pool_t *pool, const pool_conn_t *c, int64_t now)
{
    return pool->cfg.pre_ping && now - c->idle_since_us >= (int64_t)pool->cfg.ping_idle_ms * 1000;
}

/* The checks that may do I/O on a claimed connection: the zero-round-trip
   check, a due round trip with the server's role after it, and
   on_checkout.  Runs without the lock when pre_ping or on_checkout is set;
   else under it, reading libpq's state only. */
static close_reason_t validate_io(pool_t *pool, pool_conn_t *c, borrow_t *b, bool *pinged,
                                  const char **what, char *said)
{
    conn_health_t health = pool__conn_check_nowait(c->pg, pool->cfg.pre_ping);
    *pinged = health == CONN_SUSPECT || (health == CONN_ALIVE && ping_due(pool, c, b->now_us));
    if (health == CONN_DEAD) {
        *what = "found broken or busy at checkout:";
        return CLOSE_DEAD;
    }
    if (*pinged) {
        if (!pool__conn_exec_bounded(c->pg, "", ping_deadline(pool, b->now_us, b->deadline_us),
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
static close_reason_t verdict_locked(pool_t *pool, pool_conn_t *c, borrow_t *b, const char **what,
                                     char *said)
{
    if (b->clock_stale) {
        b->now_us = pool__clock_now_us();
        b->clock_stale = false;
    }
    if (conn_stale(pool, c))
        return retired_why(c);
    if (pool__past_lifetime(pool, c, b->now_us))
        return CLOSE_LIFETIME;
    bool io = pool->cfg.pre_ping || pool->cfg.on_checkout, pinged;
    if (io)
        pool_unlock(pool);
    close_reason_t why = validate_io(pool, c, b, &pinged, what, said);
    if (io) {
        pthread_mutex_lock(&pool->lock);
        b->clock_stale = pinged || pool->cfg.on_checkout;
    }
    pool->stats.pings += pinged;
    /* Evicted while it was being validated: not handed out after all. */
    return why == CLOSE_NONE && conn_stale(pool, c) ? CLOSE_EVICTED : why;
}

/* Claims and judges connections until one can be handed out or the caller
   fails.  first: the fast path's connection, already claimed, or NULL.
   Releases the lock while it waits, validates and closes. */
static pool_err_t borrow_locked(pool_t *pool, borrow_t *b, pool_conn_t *first, pool_conn_t **out)
{
    for (pool_conn_t *c = first;; c = NULL) {
        if (!c) {
            pool_err_t rc = claim_locked(pool, b, &c);
            if (rc != POOL_OK)
                return rc;
        }
        const char *what = NULL;
        char said[POOL_MSG_LEN]; /* the server's words, when a round trip failed */
        said[0] = '\0';
        close_reason_t why = verdict_locked(pool, c, b, &what, said);
        if (why == CLOSE_NONE) {
            *out = c;
            return POOL_OK;
        }
        pool_closing_t closing;
        pool__closing_init(&closing);
        pool__close_locked(pool, c, why, what, said, &closing);
        pool__wake_workers_locked(pool);
        pool_unlock(pool);
        pool__close_finish(pool, &closing);
        pthread_mutex_lock(&pool->lock);
        b->clock_stale = true;
    }
}

/* Finishes a getconn call under the lock: statistics and the drain count. */
static void getconn_done_locked(pool_t *pool, pool_err_t rc, int64_t start_us, int64_t end_us)
{
    uint64_t waited = (uint64_t)(end_us - start_us);
    pool->stats.wait_us_total += waited;
    pool__hist_record(&pool->stats.wait_hist, waited);
    if (waited > pool->stats.wait_us_max)
        pool->stats.wait_us_max = waited;
    if (rc == POOL_OK)
        pool->stats.acquired++;
    else if (rc == POOL_ETIMEDOUT)
        pool->stats.acquire_timeouts++;
    else
        pool->stats.acquire_errors++;
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
}

/* Whether c, taken back by the fast path, can be handed out with nothing
   more to do: not retired or old, no hook, no round trip due, and the
   zero-round-trip check passes without reading (unasked input, if any, is
   read on the locked path, where a cancellation cannot reach it). */
static bool ready_as_is(pool_t *pool, pool_conn_t *c, int64_t now)
{
    return !conn_stale(pool, c) && !pool__past_lifetime(pool, c, now) && !pool->cfg.on_checkout &&
           !ping_due(pool, c, now) && pool__conn_peek_nowait(c->pg, pool->cfg.pre_ping) == CONN_ALIVE;
}

PGconn *pool_getconn_timeout(pool_t *pool, int timeout_ms)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return NULL;
    }
    int64_t start = pool__clock_now_us();
    /* This thread's own parked connection, without the lock (fast.c); one
       that needs more than the zero-round-trip check goes the locked way. */
    pool_conn_t *c = pool__fast_take(pool);
    /* The clock is read again only after something took time (waiting in
       line, a round trip, a close): an idle connection handed out at once
       costs one clock read, and its wait counts as zero. */
    if (c && ready_as_is(pool, c, start)) {
        pool__fast_checked_out(c, start);
        return c->pg;
    }
    borrow_t b = {.start_us = start, .now_us = start, .timeout_ms = timeout_ms,
                  .deadline_us = timeout_ms < 0 ? INT64_MAX : start + (int64_t)timeout_ms * 1000};
    int cancel = pool__cancel_off();
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->ncalls++;
    pool_err_t rc = borrow_locked(pool, &b, c, &c);
    int64_t end = b.clock_stale ? pool__clock_now_us() : b.now_us;
    if (rc == POOL_OK) {
        c->state = CONN_IN_USE;
        c->checkout_us = end;
        c->leak_reported = false;
        pool__fast_remember(pool, c);
    }
    getconn_done_locked(pool, rc, start, end);
    pool_unlock(pool);
    pool__cancel_restore(cancel);
    return rc == POOL_OK ? c->pg : NULL;
}

PGconn *pool_getconn(pool_t *pool)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return NULL;
    }
    return pool_getconn_timeout(pool, pool->cfg.acquire_timeout_ms);
}
