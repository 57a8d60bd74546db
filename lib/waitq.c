/* SPDX-License-Identifier: MIT */
/*
 * waitq.c - the FIFO queue of callers blocked in pool_getconn.
 *
 * An intrusive doubly-linked list of waiters that live on their callers'
 * stacks: O(1) to join at either end, to serve the head and to leave from the
 * middle on timeout.  The caller holds pool->lock for every call.
 */
#include "pool_internal.h"

#include <stddef.h>

void pool__waitq_push_back(pool_waitq_t *q, pool_waiter_t *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->queued = true;
    q->len++;
}

/* For a caller whose handed-over connection failed validation: it keeps its
   place at the front instead of going to the back of the line. */
void pool__waitq_push_front(pool_waitq_t *q, pool_waiter_t *w)
{
    w->prev = NULL;
    w->next = q->head;
    if (q->head)
        q->head->prev = w;
    else
        q->tail = w;
    q->head = w;
    w->queued = true;
    q->len++;
}

void pool__waitq_remove(pool_waitq_t *q, pool_waiter_t *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    q->len--;
}

pool_waiter_t *pool__waitq_pop_front(pool_waitq_t *q)
{
    pool_waiter_t *w = q->head;
    if (w)
        pool__waitq_remove(q, w);
    return w;
}
