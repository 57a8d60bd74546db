/* SPDX-License-Identifier: MIT */
/*
 * async.c - the event-loop calls: pool_getconn_async, pool_cancel, pool_fd
 * and pool_dispatch.
 *
 * None of them waits on the network: a request takes its place in the one
 * line (requests.c), the service thread does the validating and the
 * timing out (service.c), and the loop only ever takes the lock briefly.
 * A request's state changes only under the pool's lock, so a cancel racing
 * a hand-over has exactly one winner: the cancel finds the request still
 * waiting, being validated or ready (and gives any connection back), or
 * finds it taken by pool_dispatch (and fails).
 */
#include "pool_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The pool whose callbacks this thread runs now, if any. */
static _Thread_local const pool_t *dispatching;

/* Room in the deadline heap for one more request for its whole life: the
   array is grown with the lock released (no allocation under it).  False
   when it cannot be. */
static bool reserve_deadline_locked(pool_t *pool)
{
    pool_reqheap_t *h = &pool->deadlines;
    while (h->reserved == h->cap) {
        size_t want = h->cap ? 2 * h->cap : 64;
        pool_unlock(pool);
        pool_request_t **a = malloc(want * sizeof *a);
        pthread_mutex_lock(&pool->lock);
        if (!a)
            return false;
        if (h->cap < want) {
            if (h->n)
                memcpy(a, h->a, h->n * sizeof *a);
            pool_request_t **old = h->a;
            h->a = a;
            h->cap = want;
            a = old;
        }
        free(a); /* the old array, or ours when another caller grew it first */
    }
    h->reserved++;
    return true;
}

/* Hands c, claimed for r, to r: at once when judging it cannot do I/O and
   it passes (no pre_ping, no on_checkout), else through the service thread. */
static void hand_locked(pool_t *pool, pool_request_t *r, pool_conn_t *c)
{
    r->w.conn = c;
    if (!pool->cfg.pre_ping && !pool->cfg.on_checkout) {
        pool_checkout_t k = {.now_us = r->start_us, .deadline_us = r->deadline_us};
        const char *what;
        char said[POOL_MSG_LEN];
        if (pool__checkout_verdict_locked(pool, c, &k, &what, said) == CLOSE_NONE) {
            pool__request_ready_locked(pool, r, POOL_OK, NULL);
            return;
        }
    }
    pool__request_handed_locked(pool, r);
}

/* Where a new request goes: an idle connection, the line, or done at once
   (timeout 0 and nothing idle).  POOL_EBUSY: refused, r untouched. */
static pool_err_t start_locked(pool_t *pool, pool_request_t *r)
{
    if (!pool->paused) {
        pool__unpark_all_locked(pool);
        pool_conn_t *c = pool->waiters.head ? NULL : pool->idle_head;
        if (c) {
            pool__idle_remove_locked(pool, c);
            c->state = CONN_CHECKING;
            hand_locked(pool, r, c);
            return POOL_OK;
        }
    }
    if (r->start_us >= r->deadline_us) {
        int room = pool_limit(pool) - pool->nopen - pool->nconnecting - pool->nclosing;
        if (pool->grow_wanted < room) { /* as pool_getconn_timeout(pool, 0) does */
            pool->grow_wanted++;
            pool__wake_workers_locked(pool);
        }
        char msg[POOL_MSG_LEN];
        pool__timeout_message_locked(pool, r->timeout_ms, msg, sizeof msg);
        pool__request_ready_locked(pool, r, POOL_ETIMEDOUT, msg);
        return POOL_OK;
    }
    if (pool->cfg.max_waiting > 0 && pool->waiters.len >= pool->cfg.max_waiting) {
        pool__set_error(POOL_EBUSY, "too many callers waiting for a connection (max_waiting %d)",
                        pool->cfg.max_waiting);
        return POOL_EBUSY;
    }
    pool__request_wait_locked(pool, r);
    atomic_store(&pool->fast_ok, false); /* the handshake with the fast path (fast.c) */
    if (!pool->paused)
        pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool);
    return POOL_OK;
}

/* A request from the free list, else a new one (allocated with the lock
   released).  NULL when none can be had. */
static pool_request_t *request_new_locked(pool_t *pool)
{
    pool_request_t *r = pool->req_free;
    if (r) {
        pool->req_free = r->next;
        return r;
    }
    pool_unlock(pool);
    r = malloc(sizeof *r);
    pthread_mutex_lock(&pool->lock);
    if (r) {
        r->pool = pool;
        r->all_next = pool->req_all;
        pool->req_all = r;
    }
    return r;
}

static void request_init(pool_request_t *r, int64_t start_us, int timeout_ms, pool_acquire_cb cb,
                         void *arg)
{
    r->w = (pool_waiter_t){.req = r};
    r->state = REQ_WAITING; /* not yet in line: nothing to undo but the reservation */
    r->prev = r->next = NULL;
    r->heap_at = SIZE_MAX;
    r->start_us = start_us;
    r->deadline_us = pool__deadline_of(start_us, timeout_ms);
    r->timeout_ms = timeout_ms;
    r->at_front = false;
    r->cb = cb;
    r->arg = arg;
    r->err = POOL_OK;
    r->msg[0] = '\0';
}

static pool_request_t *getconn_async_locked(pool_t *pool, int64_t start_us, int timeout_ms,
                                            pool_acquire_cb cb, void *arg)
{
    if (pool->closed) {
        pool__set_error(POOL_ECLOSED, "pool is closed");
        return NULL;
    }
    if (pool__request_fd_locked(pool) < 0) {
        pool__set_error(POOL_ENOMEM, "could not create the pool's descriptor: %s", strerror(errno));
        return NULL;
    }
    pool_request_t *r = request_new_locked(pool);
    if (!r) {
        pool__set_error(POOL_ENOMEM, "out of memory");
        return NULL;
    }
    request_init(r, start_us, timeout_ms, cb, arg);
    if (r->deadline_us != INT64_MAX && !reserve_deadline_locked(pool)) {
        r->deadline_us = INT64_MAX; /* reserved nothing */
        pool__request_free_locked(pool, r);
        pool__set_error(POOL_ENOMEM, "out of memory");
        return NULL;
    }
    if (pool->closed || start_locked(pool, r) != POOL_OK) { /* closed while allocating */
        if (pool->closed)
            pool__set_error(POOL_ECLOSED, "pool is closed");
        pool__request_free_locked(pool, r);
        return NULL;
    }
    return r;
}

pool_request_t *pool_getconn_async(pool_t *pool, int timeout_ms, pool_acquire_cb cb, void *arg)
{
    if (!pool_is_live(pool) || !cb) {
        pool__set_error(POOL_EINVAL, !cb ? "callback is NULL" : "pool is NULL or not a live pool");
        return NULL;
    }
    int64_t start = pool__clock_now_us();
    int cancel = pool__cancel_off();
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool_request_t *r = getconn_async_locked(pool, start, timeout_ms, cb, arg);
    pool_unlock(pool);
    pool__cancel_restore(cancel);
    return r;
}

/* A connection set aside for a cancelled request goes to the next in line;
   a close that needs (it was retired, or is above max_size) is left to the
   service thread. */
static void give_back_locked(pool_t *pool, pool_conn_t *c, pool_closing_t *closing)
{
    pool__make_available_locked(pool, c, pool__clock_now_us(), closing);
    if (pool__close_later_locked(pool, closing))
        pool__closing_init(closing);
}

int pool_cancel(pool_t *pool, pool_request_t *r)
{
    if (!pool_is_live(pool) || !r || r->pool != pool) {
        pool__set_error(POOL_EINVAL, !pool_is_live(pool) ? "pool is NULL or not a live pool"
                                     : !r                ? "request is NULL"
                                                         : "request is not one of this pool's");
        return -1;
    }
    int cancel = pool__cancel_off();
    pool_closing_t closing; /* only when the service thread cannot take it */
    pool__closing_init(&closing);
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    int rc = 0;
    switch (r->state) {
    case REQ_WAITING:
        pool__waitq_remove(&pool->waiters, &r->w);
        pool__reqheap_remove(&pool->deadlines, r);
        pool__request_free_locked(pool, r);
        break;
    case REQ_CHECKING:
        pool__reqlist_remove(&pool->checking, r);
        give_back_locked(pool, r->w.conn, &closing);
        pool__request_free_locked(pool, r);
        break;
    case REQ_VALIDATING: /* the service thread gives the connection back */
        r->state = REQ_CANCELLED;
        break;
    case REQ_READY:
        pool__reqlist_remove(&pool->ready, r);
        if (pool->ready.len == 0)
            pool__request_fd_drain_locked(pool);
        if (r->w.conn)
            give_back_locked(pool, r->w.conn, &closing);
        pool__request_free_locked(pool, r);
        break;
    case REQ_RUNNING:
    case REQ_CANCELLED:
    case REQ_FREE:
        pool__set_error(POOL_EINVAL, "request's callback has run or runs now, or it was cancelled");
        rc = -1;
        break;
    }
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    pool__close_finish(pool, &closing);
    pool__cancel_restore(cancel);
    return rc;
}

int pool_fd(pool_t *pool)
{
    if (!pool_is_live(pool)) {
        pool__set_error(POOL_EINVAL, "pool is NULL or not a live pool");
        return -1;
    }
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    int fd = pool__request_fd_locked(pool);
    if (fd < 0)
        pool__set_error(POOL_ENOMEM, "could not create the pool's descriptor: %s", strerror(errno));
    pool_unlock(pool);
    return fd;
}

/* Takes up to max ready requests (all when max <= 0) off the ready list, in
   order, into *out: counted in the statistics, their connections checked
   out.  Returns how many. */
static int take_ready_locked(pool_t *pool, int max, pool_reqlist_t *out)
{
    int n = 0;
    int64_t now = pool__clock_now_us();
    for (pool_request_t *r; (max <= 0 || n < max) && (r = pool__reqlist_pop(&pool->ready)); n++) {
        r->state = REQ_RUNNING;
        pool__count_acquire_locked(pool, r->err, r->done_us - r->start_us);
        pool_conn_t *c = r->w.conn;
        if (c) {
            c->state = CONN_IN_USE;
            c->checkout_us = now;
            c->leak_reported = false;
        }
        if (r->deadline_us != INT64_MAX)
            pool->deadlines.reserved--; /* its room is given up now (see request_free) */
        r->next = NULL;
        r->prev = out->tail;
        if (out->tail)
            out->tail->next = r;
        else
            out->head = r;
        out->tail = r;
    }
    if (pool->ready.len == 0)
        pool__request_fd_drain_locked(pool);
    return n;
}

/* Runs the callbacks of the requests in *list, in order, and frees them. */
static void run_callbacks(pool_t *pool, pool_reqlist_t *list)
{
    const pool_t *outer = dispatching;
    dispatching = pool;
    for (pool_request_t *r = list->head, *next; r; r = next) {
        next = r->next;
        PGconn *pg = r->w.conn ? r->w.conn->pg : NULL;
        if (r->err != POOL_OK)
            pool__set_error_msg(r->err, r->msg);
        r->cb(pool, pg, r->err, r->arg);
    }
    dispatching = outer;
}

/* The requests whose callbacks ran go back to the free list. */
static void free_list_locked(pool_t *pool, pool_reqlist_t *list)
{
    for (pool_request_t *r = list->head, *next; r; r = next) {
        next = r->next;
        pool__request_free_locked(pool, r);
    }
}

int pool_dispatch(pool_t *pool, int max)
{
    if (!pool_is_live(pool) || dispatching == pool) {
        pool__set_error(POOL_EINVAL, dispatching == pool && pool
                                         ? "pool_dispatch called from one of its callbacks"
                                         : "pool is NULL or not a live pool");
        return -1;
    }
    int cancel = pool__cancel_off();
    pthread_mutex_lock(&pool->dispatch_lock);
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    pool_reqlist_t list = {0};
    int n = take_ready_locked(pool, max, &list);
    pool->ncalls += n > 0; /* pool_destroy waits for the callbacks */
    pool_unlock(pool);
    if (n > 0) {
        run_callbacks(pool, &list);
        pthread_mutex_lock(&pool->lock);
        free_list_locked(pool, &list);
        if (--pool->ncalls == 0 && pool->closed)
            pthread_cond_broadcast(&pool->drain_cond);
        pool_unlock(pool);
    }
    pthread_mutex_unlock(&pool->dispatch_lock);
    pool__cancel_restore(cancel);
    return n;
}

/* pool_destroy, lock held, closing: every request in line fails with
   POOL_ECLOSED (its callback runs in pool__async_finish). */
void pool__async_close_locked(pool_t *pool)
{
    for (pool_waiter_t *w = pool->waiters.head, *next; w; w = next) {
        next = w->next;
        if (w->req) {
            pool__waitq_remove(&pool->waiters, w);
            pool__request_ready_locked(pool, w->req, POOL_ECLOSED, "pool is closed");
        }
    }
    pool__wake_after_unlock(&pool->service_wake);
}

/* pool_destroy, lock NOT held, the threads joined and no caller inside:
   the requests left (set aside a connection, or ready) complete with
   POOL_ECLOSED, their callbacks run here; their connections go idle, for
   pool_destroy to close. */
void pool__async_finish(pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    int64_t now = pool__clock_now_us();
    for (pool_request_t *r; (r = pool__reqlist_pop(&pool->checking));) {
        pool__idle_push_locked(pool, r->w.conn, now);
        r->w.conn = NULL;
        pool__request_ready_locked(pool, r, POOL_ECLOSED, "pool is closed");
    }
    for (pool_request_t *r = pool->ready.head; r; r = r->next) {
        if (r->w.conn) {
            pool__idle_push_locked(pool, r->w.conn, now);
            r->w.conn = NULL;
            r->err = POOL_ECLOSED;
            snprintf(r->msg, sizeof r->msg, "pool is closed");
        }
    }
    pool_reqlist_t list = {0};
    take_ready_locked(pool, 0, &list);
    pool_unlock(pool);
    run_callbacks(pool, &list);
}

/* pool_destroy, last: the requests' memory. */
void pool__async_free(pool_t *pool)
{
    for (pool_request_t *r = pool->req_all, *next; r; r = next) {
        next = r->all_next;
        free(r);
    }
    pool->req_all = pool->req_free = NULL;
}
