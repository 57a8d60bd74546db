/* SPDX-License-Identifier: MIT */
/*
 * requests.c - the bookkeeping of pool_getconn_async requests, under the lock.
 *
 * A request waits in the same line as blocking callers (its pool_waiter_t
 * is in pool->waiters), and, when it has a deadline, in a binary heap keyed
 * by that deadline, so that the service thread (service.c) sleeps until the
 * earliest one.  Handed a connection, it joins the `checking` list for the
 * service thread to validate; done, the `ready` list, and the pool's eventfd
 * turns readable for the loop's pool_dispatch (async.c).  Everything here
 * runs with pool->lock held and does no I/O: the eventfd is written and the
 * service thread woken after the lock is released (wake.c); the only
 * syscall left under it is the eventfd's read when `ready` turns empty (see
 * the list in pool_internal.h).
 */
#include "pool_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- the deadline heap ---------------------------------------------------- */

static void heap_place(pool_reqheap_t *h, size_t i, pool_request_t *r)
{
    h->a[i] = r;
    r->heap_at = i;
}

static void heap_up(pool_reqheap_t *h, size_t i)
{
    pool_request_t *r = h->a[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->a[parent]->deadline_us <= r->deadline_us)
            break;
        heap_place(h, i, h->a[parent]);
        i = parent;
    }
    heap_place(h, i, r);
}

static void heap_down(pool_reqheap_t *h, size_t i)
{
    pool_request_t *r = h->a[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && h->a[child + 1]->deadline_us < h->a[child]->deadline_us)
            child++;
        if (r->deadline_us <= h->a[child]->deadline_us)
            break;
        heap_place(h, i, h->a[child]);
        i = child;
    }
    heap_place(h, i, r);
}

/* The caller made room (pool__reqheap_has_room). */
void pool__reqheap_push(pool_reqheap_t *h, pool_request_t *r)
{
    h->a[h->n] = r;
    r->heap_at = h->n++;
    heap_up(h, r->heap_at);
}

void pool__reqheap_remove(pool_reqheap_t *h, pool_request_t *r)
{
    size_t i = r->heap_at;
    if (i == SIZE_MAX)
        return;
    r->heap_at = SIZE_MAX;
    pool_request_t *last = h->a[--h->n];
    if (i == h->n)
        return;
    heap_place(h, i, last);
    heap_up(h, i);
    heap_down(h, last->heap_at);
}

pool_request_t *pool__reqheap_top(const pool_reqheap_t *h)
{
    return h->n ? h->a[0] : NULL;
}

/* ---- the checking and ready lists ------------------------------------------ */

static void list_push(pool_reqlist_t *l, pool_request_t *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->len++;
}

void pool__reqlist_remove(pool_reqlist_t *l, pool_request_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->len--;
}

pool_request_t *pool__reqlist_pop(pool_reqlist_t *l)
{
    pool_request_t *r = l->head;
    if (r)
        pool__reqlist_remove(l, r);
    return r;
}

/* ---- the descriptor --------------------------------------------------------- */

/* Readable while `ready` is not empty: written when it turns non-empty,
   read (to zero) when pool_dispatch empties it. */
int pool__request_fd_locked(pool_t *pool)
{
    if (pool->event_fd < 0) {
        pool->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (pool->event_fd >= 0 && pool->ready.len > 0)
            pool__request_fd_signal_locked(pool);
    }
    return pool->event_fd;
}

/* Written once the lock is released (wake.c), so that the loop, woken by
   it, does not find the lock still held.  Until then the descriptor may lag
   the list by a moment: never the other way (a drain happens only with the
   list empty), so at worst a dispatch finds nothing. */
void pool__request_fd_signal_locked(pool_t *pool)
{
    if (pool->event_fd >= 0)
        pool__signal_fd_after_unlock(pool->event_fd);
}

void pool__request_fd_drain_locked(pool_t *pool)
{
    uint64_t n;
    if (pool->event_fd >= 0 && read(pool->event_fd, &n, sizeof n) < 0) {
        /* EAGAIN: it was not readable. */
    }
}

/* ---- transitions ------------------------------------------------------------ */

/* Done: the connection (validated) or NULL with err and msg.  The callback
   runs in the next pool_dispatch. */
void pool__request_ready_locked(pool_t *pool, pool_request_t *r, pool_err_t err, const char *msg)
{
    pool__reqheap_remove(&pool->deadlines, r);
    r->done_us = pool__clock_now_us();
    r->err = err;
    if (err != POOL_OK)
        snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : pool_strerror(err));
    r->state = REQ_READY;
    list_push(&pool->ready, r);
    if (pool->ready.len == 1)
        pool__request_fd_signal_locked(pool);
}

/* Handed a connection (r->w.conn) by the line: the service thread validates
   it. */
void pool__request_handed_locked(pool_t *pool, pool_request_t *r)
{
    pool__reqheap_remove(&pool->deadlines, r);
    r->state = REQ_CHECKING;
    list_push(&pool->checking, r);
    pool__wake_after_unlock(&pool->service_wake);
}

/* Into the line, at the back or (after its connection failed validation)
   back at the front, and into the deadline heap (room made by the caller). */
void pool__request_wait_locked(pool_t *pool, pool_request_t *r)
{
    r->w.conn = NULL;
    r->w.err = POOL_OK;
    if (r->at_front)
        pool__waitq_push_front(&pool->waiters, &r->w);
    else
        pool__waitq_push_back(&pool->waiters, &r->w);
    r->at_front = true;
    r->state = REQ_WAITING;
    if (r->deadline_us != INT64_MAX) {
        pool__reqheap_push(&pool->deadlines, r);
        if (pool__reqheap_top(&pool->deadlines) == r) /* the service thread sleeps too long */
            pool__wake_after_unlock(&pool->service_wake);
    }
}
