/* SPDX-License-Identifier: MIT */
/*
 * service.c - the thread that does the blocking part of event-loop requests.
 *
 * An event loop's thread must never wait on the network, so what
 * pool_getconn does on its caller's thread is done here for a
 * pool_getconn_async request: the connection handed to it is judged
 * (checkout.c: the zero-round-trip check, a due ping, on_checkout), closed
 * and replaced when it fails, and the request completed (requests.c); a
 * request whose deadline passes in line is completed with POOL_ETIMEDOUT
 * without the loop keeping a timer; with return_in_background, the
 * rollback, reset_query or close of a return is done here; and so are the
 * closes the loop's calls left behind (pool_cancel giving back a connection
 * above max_size, say); and fair_share's census (share.c).
 */
#include "pool_internal.h"

#include <stdlib.h>
#include <unistd.h>

/* Back on the free list (never to malloc before pool_destroy), so that a
   stale handle reads REQ_FREE; its deadline's room is given up. */
void pool__request_free_locked(pool_t *pool, pool_request_t *r)
{
    if (r->deadline_us != INT64_MAX && r->state != REQ_RUNNING)
        pool->deadlines.reserved--;
    r->state = REQ_FREE;
    r->next = pool->req_free;
    pool->req_free = r;
}

/* ---- closes left for this thread -------------------------------------------- */

typedef struct close_later {
    struct close_later *next;
    pool_closing_t batch;
} close_later_t;

/* Hands what *batch holds to the service thread, which closes it; false
   (nothing handed, the caller closes it) when that cannot be allocated. */
bool pool__close_later_locked(pool_t *pool, pool_closing_t *batch)
{
    if (batch->n == 0)
        return true;
    close_later_t *l = malloc(sizeof *l);
    if (!l)
        return false;
    l->batch = *batch;
    l->next = pool->close_later;
    pool->close_later = l;
    pool__closing_init(batch);
    pool__wake_after_unlock(&pool->service_wake);
    return true;
}

/* Closes what was left for this thread.  Releases the lock meanwhile. */
static void close_leftovers_locked(pool_t *pool)
{
    while (pool->close_later) {
        close_later_t *l = pool->close_later;
        pool->close_later = l->next;
        pool_unlock(pool);
        pool__close_finish(pool, &l->batch);
        free(l);
        pthread_mutex_lock(&pool->lock);
    }
}

/* ---- returns left for this thread (return_in_background) ------------------- */

/* c, RETURNING, needs a rollback, reset_query or close: done here, and only
   then is it reused. */
void pool__service_return_locked(pool_t *pool, pool_conn_t *c)
{
    c->state = CONN_RETURNING;
    c->next = NULL;
    if (pool->returns_tail)
        pool->returns_tail->next = c;
    else
        pool->returns_head = c;
    pool->returns_tail = c;
    pool__wake_after_unlock(&pool->service_wake);
}

static pool_conn_t *next_return_locked(pool_t *pool)
{
    pool_conn_t *c = pool->returns_head;
    if (c) {
        pool->returns_head = c->next;
        if (!pool->returns_head)
            pool->returns_tail = NULL;
        c->next = NULL;
    }
    return c;
}

/* The rest of pool_putconn for c (checkin.c, on_checkin done already); once
   the pool closes, c is closed as it is.  Releases the lock around the I/O. */
static void finish_return_locked(pool_t *pool, pool_conn_t *c)
{
    int64_t now = pool__clock_now_us();
    const char *what = NULL;
    char said[POOL_MSG_LEN];
    said[0] = '\0';
    close_reason_t why =
        pool->closed ? CLOSE_NONE : pool__checkin_verdict_locked(pool, c, false, &now, &what, said);
    pool_closing_t closing;
    pool__closing_init(&closing);
    if (why == CLOSE_NONE)
        pool__make_available_locked(pool, c, now, &closing); /* closed: detached */
    else
        pool__close_locked(pool, c, why, what, said, &closing);
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    pool__close_finish(pool, &closing);
    pthread_mutex_lock(&pool->lock);
}

/* ---- serving a request ---------------------------------------------------------- */

/* The request, out of line, claims an idle connection, else stands in line
   again (at the front: it keeps its place), else fails by its deadline.
   Returns the claimed connection, or NULL when r is taken care of. */
static pool_conn_t *claim_again_locked(pool_t *pool, pool_request_t *r)
{
    if (pool->closed) {
        pool__request_ready_locked(pool, r, POOL_ECLOSED, "pool is closed");
        return NULL;
    }
    if (!pool->paused) {
        pool__unpark_all_locked(pool);
        pool_conn_t *c = pool->idle_head;
        if (c) {
            pool__idle_remove_locked(pool, c);
            c->state = CONN_CHECKING;
            return c;
        }
    }
    if (pool__clock_now_us() >= r->deadline_us) {
        char msg[POOL_MSG_LEN];
        pool__timeout_message_locked(pool, r->timeout_ms, msg, sizeof msg);
        pool__request_ready_locked(pool, r, POOL_ETIMEDOUT, msg);
        return NULL;
    }
    pool__request_wait_locked(pool, r);
    atomic_store(&pool->fast_ok, false); /* the handshake with the fast path (fast.c) */
    pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool);
    return NULL;
}

/* Judges the connection handed to r; completes r with it, or closes it and
   tries again.  Releases the lock around the I/O; a pool_cancel meanwhile
   marks r REQ_CANCELLED, and then the connection goes back and r is freed. */
static void serve_locked(pool_t *pool, pool_request_t *r)
{
    pool_conn_t *c = r->w.conn;
    pool_checkout_t k = {.now_us = pool__clock_now_us(), .deadline_us = r->deadline_us};
    while (c) {
        r->state = REQ_VALIDATING;
        const char *what = NULL;
        char said[POOL_MSG_LEN];
        said[0] = '\0';
        close_reason_t why = pool__checkout_verdict_locked(pool, c, &k, &what, said);
        pool_closing_t closing;
        pool__closing_init(&closing);
        if (why == CLOSE_NONE && (r->state == REQ_CANCELLED || pool->closed))
            pool__make_available_locked(pool, c, pool__clock_now_us(), &closing);
        else if (why != CLOSE_NONE)
            pool__close_locked(pool, c, why, what, said, &closing);
        if (r->state == REQ_CANCELLED) {
            pool__request_free_locked(pool, r);
            c = NULL;
        } else if (why == CLOSE_NONE && !pool->closed) {
            r->w.conn = c;
            pool__request_ready_locked(pool, r, POOL_OK, NULL);
            c = NULL;
        } else {
            r->w.conn = NULL;
            c = claim_again_locked(pool, r);
        }
        pool__wake_workers_locked(pool);
        if (closing.n > 0) {
            pool_unlock(pool);
            pool__close_finish(pool, &closing);
            pthread_mutex_lock(&pool->lock);
            k.clock_stale = true;
        }
    }
}

/* Its deadline passed while it stood in line. */
static void expire_locked(pool_t *pool, pool_request_t *r)
{
    pool__waitq_remove(&pool->waiters, &r->w);
    char msg[POOL_MSG_LEN];
    pool__timeout_message_locked(pool, r->timeout_ms, msg, sizeof msg);
    pool__request_ready_locked(pool, r, POOL_ETIMEDOUT, msg);
}

/* In a forked child (fork.c): the parent's requests belong to the parent's
   loop.  They are freed unanswered, the closes left behind are dropped
   without a byte sent, and the eventfd, shared with the parent, is let go
   (the child's first pool_fd or request opens its own). */
void pool__service_forget_locked(pool_t *pool)
{
    pool->req_free = NULL;
    for (pool_request_t *r = pool->req_all; r; r = r->all_next) {
        r->state = REQ_FREE;
        r->next = pool->req_free;
        pool->req_free = r;
    }
    pool->checking = pool->ready = (pool_reqlist_t){0};
    pool->returns_head = pool->returns_tail = NULL; /* the parent's borrowings: never back */
    pool->deadlines.n = pool->deadlines.reserved = 0;
    while (pool->close_later) {
        close_later_t *l = pool->close_later;
        pool->close_later = l->next;
        for (int i = 0; i < l->batch.n; i++)
            pool__conn_drop_silently(l->batch.pg[i]);
        free(l);
    }
    if (pool->event_fd >= 0)
        close(pool->event_fd);
    pool->event_fd = -1;
    atomic_store(&pool->service_wake, WAKE_WAITING);
}

void *pool__service_main(void *arg)
{
    pool_t *pool = arg;
    pthread_mutex_lock(&pool->lock);
    while (!pool->closed) {
        /* From here on, work handed over sets WOKEN and the sleep below
           does not begin. */
        atomic_store_explicit(&pool->service_wake, WAKE_WAITING, memory_order_relaxed);
        pool_request_t *r = pool__reqlist_pop(&pool->checking);
        if (r) {
            serve_locked(pool, r);
            continue;
        }
        pool_conn_t *returned = next_return_locked(pool);
        if (returned) {
            finish_return_locked(pool, returned);
            continue;
        }
        if (pool->close_later) {
            close_leftovers_locked(pool);
            continue;
        }
        if (pool->share_conn) {
            pool__share_census_locked(pool);
            continue;
        }
        int64_t now = pool__clock_now_us();
        if (now >= pool->share_next_us) {
            pool__share_tick_locked(pool, now);
            continue;
        }
        pool_request_t *top = pool__reqheap_top(&pool->deadlines);
        if (top && top->deadline_us <= now) {
            expire_locked(pool, top);
            continue;
        }
        int64_t until = top ? top->deadline_us : INT64_MAX;
        if (pool->share_next_us < until)
            until = pool->share_next_us;
        pool_unlock(pool);
        while (atomic_load_explicit(&pool->service_wake, memory_order_acquire) != WAKE_WOKEN &&
               pool__clock_now_us() < until)
            pool__wake_wait(&pool->service_wake, until);
        pthread_mutex_lock(&pool->lock);
    }
    for (pool_conn_t *c; (c = next_return_locked(pool));)
        finish_return_locked(pool, c);
    if (pool->share_conn) { /* set aside for a census that will not run now */
        pool_closing_t closing;
        pool__closing_init(&closing);
        pool__make_available_locked(pool, pool->share_conn, pool__clock_now_us(), &closing);
        pool->share_conn = NULL; /* closed: the above detached it into closing */
        pool_unlock(pool);
        pool__close_finish(pool, &closing);
        pthread_mutex_lock(&pool->lock);
    }
    close_leftovers_locked(pool);
    pool_unlock(pool);
    return NULL;
}
