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
    int64_t start_us;
    pool_checkout_t k;   /* its clock and deadline */
    int timeout_ms;
    bool at_front;       /* stood in line already: back to the front, not the back */
    pool_waiter_t w;     /* this caller's place in line */
} borrow_t;

static void set_timeout_error_locked(const pool_t *pool, int timeout_ms)
{
    char msg[POOL_MSG_LEN];
    pool__timeout_message_locked(pool, timeout_ms, msg, sizeof msg);
    pool__set_error_msg(POOL_ETIMEDOUT, msg);
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
    if (pool__clock_now_us() >= b->k.deadline_us) {
        int room = pool_limit(pool) - pool->nopen - pool->nconnecting - pool->nclosing;
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
    b->at_front = b->k.clock_stale = true; /* once in line, the caller keeps its place */
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
               pool__clock_now_us() < b->k.deadline_us)
            pool__wake_wait(&w->woken, b->k.deadline_us);
        pthread_mutex_lock(&pool->lock);
        if (atomic_load_explicit(&w->woken, memory_order_relaxed) != WAKE_WOKEN &&
            pool__clock_now_us() >= b->k.deadline_us)
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
        close_reason_t why = pool__checkout_verdict_locked(pool, c, &b->k, &what, said);
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
        b->k.clock_stale = true;
    }
}

/* Finishes a getconn call under the lock: statistics and the drain count. */
static void getconn_done_locked(pool_t *pool, pool_err_t rc, int64_t start_us, int64_t end_us)
{
    pool__count_acquire_locked(pool, rc, end_us - start_us);
    if (--pool->ncalls == 0 && pool->closed)
        pthread_cond_broadcast(&pool->drain_cond);
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
    if (c && pool__checkout_ready_as_is(pool, c, start)) {
        pool__fast_checked_out(c, start);
        return c->pg;
    }
    borrow_t b = {.start_us = start, .timeout_ms = timeout_ms,
                  .k = {.now_us = start, .deadline_us = pool__deadline_of(start, timeout_ms)}};
    int cancel = pool__cancel_off();
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool->ncalls++;
    pool_err_t rc = borrow_locked(pool, &b, c, &c);
    int64_t end = b.k.clock_stale ? pool__clock_now_us() : b.k.now_us;
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
