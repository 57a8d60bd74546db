/* SPDX-License-Identifier: MIT */
/*
 * fork.c - keeps a pool usable in a child after fork().
 *
 * pthread_atfork handlers take every live pool's lock before fork(), so the
 * child never inherits a lock held by a thread that does not exist there, and
 * mark every pool forked in the child.  The first call on a pool in the
 * child sees the mark and starts over (a new generation): inherited idle connections
 * and the parent's connects in progress (inflight.c) are dropped without a
 * byte sent (the parent's sessions live on), borrowed ones are dropped when
 * returned, and new threads are started.
 */
#include "pool_internal.h"

#include <stdlib.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pool_t *registry_head;       /* guarded by registry_lock */
static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&registry_lock);
    for (pool_t *p = registry_head; p; p = p->registry_next) {
        pthread_mutex_lock(&p->lock);
        pthread_mutex_lock(&p->inflight_lock); /* no connect is inside a libpq step */
    }
}

static void unlock_all(void)
{
    for (pool_t *p = registry_head; p; p = p->registry_next) {
        pthread_mutex_unlock(&p->inflight_lock);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

static void after_fork_parent(void)
{
    unlock_all();
}

static void after_fork_child(void)
{
    /* One thread here: no call on these pools runs.  Their first one starts
       over (pool__enter_locked); the lock-free path is shut until then. */
    for (pool_t *p = registry_head; p; p = p->registry_next) {
        atomic_store(&p->fast_ok, false);
        atomic_store(&p->forked, true);
    }
    unlock_all();
}

static void install_handlers(void)
{
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void pool__fork_register(pool_t *pool)
{
    pthread_once(&handlers_once, install_handlers);
    pthread_mutex_lock(&registry_lock);
    pool->registry_next = registry_head;
    registry_head = pool;
    pthread_mutex_unlock(&registry_lock);
}

void pool__fork_unregister(pool_t *pool)
{
    pthread_mutex_lock(&registry_lock);
    for (pool_t **pp = &registry_head; *pp; pp = &(*pp)->registry_next) {
        if (*pp == pool) {
            *pp = pool->registry_next;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

/* In the child, under the pool's lock, with no other thread of ours alive. */
static void fork_reset_locked(pool_t *pool)
{
    for (size_t i = 0; i <= pool->map.mask; i++) {
        pool_conn_t *c = pool->map.slots[i];
        if (!c)
            continue;
        /* Borrowed in the parent: kept until it comes back, then dropped.
           Idle, or borrowed in a generation before the parent's: dropped now. */
        if (c->state != CONN_IDLE && c->state != CONN_PARKED && c->fork_gen == pool->fork_gen)
            continue;
        pool__conn_map_remove(&pool->map, c->pg);
        pool__conn_drop_silently(c->pg);
        pool__release_slot_locked(pool, c);
        i--; /* the removal may have shifted a later entry into slot i (wraps to 0) */
    }
    PGconn *inflight[POOL_INFLIGHT_SLOTS]; /* the parent's connects in progress */
    for (int i = 0, n = pool__inflight_take_inherited(pool, inflight); i < n; i++)
        pool__conn_drop_silently(inflight[i]);
    pool__service_forget_locked(pool); /* before the line is emptied */
    pool__share_forked_locked(pool);
    pool->idle_head = pool->idle_tail = NULL;
    atomic_store(&pool->maybe_parked, false);
    pool->waiters.head = pool->waiters.tail = NULL;
    pool->waiters.len = 0;
    pool->nidle = pool->nopen = pool->nconnecting = pool->nclosing = 0;
    pool->ncalls = pool->grow_wanted = 0;
    pool->connect_failing = false;
    pool->backoff_us = 0;
    /* The parent's threads may have been blocked on these; none are here. */
    pthread_cond_init(&pool->work_cond, &pool->cond_attr);
    pthread_cond_init(&pool->maint_cond, &pool->cond_attr);
    pthread_cond_init(&pool->drain_cond, &pool->cond_attr);
    pool->fork_gen = pool->fork_gen + 1; /* what was open before is the parent's */
    atomic_store(&pool->forked, false);
    pool->threads_started = false;
    if (!pool->closed && pool__start_threads(pool) != 0)
        pool->closed = true; /* every call now fails with POOL_ECLOSED */
}

/* Every entry point calls this first, under the lock: a pool used for the
   first time in a forked child drops what it inherited. */
void pool__enter_locked(pool_t *pool)
{
    if (atomic_load_explicit(&pool->forked, memory_order_relaxed))
        fork_reset_locked(pool);
}
