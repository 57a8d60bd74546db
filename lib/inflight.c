/* SPDX-License-Identifier: MIT */
/*
 * inflight.c - connections being opened, where a forked child can find them.
 *
 * A connect runs with the pool's lock released, on a PGconn that only the
 * connecting thread knows of.  fork() in the middle of it would give the
 * child a copy of that PGconn and not of the thread: ~35 KB the child could
 * neither use nor free (valgrind's "definitely lost").  So an attempt
 * publishes its PGconn here, and the scratch memory it allocated, and takes inflight_lock around each of libpq's
 * steps on it (PQconnectPoll: non-blocking, microseconds); fork() takes the
 * same lock (fork.c), so the child finds every published PGconn between two
 * steps, whole, and drops it without a byte sent (pool__fork_reset_locked).
 *
 * Not covered, and said so: PQconnectStartParams itself (the host name
 * lookup runs inside it, and a fork must not wait for DNS; the PGconn is
 * published the moment it returns), and on_connect (application code runs
 * on the PGconn: the child leaves that one alone, still pointed to, never
 * freed).
 */
#include "pool_internal.h"

#include <stdlib.h>

int pool__inflight_claim(pool_t *pool)
{
    int slot = -1;
    pthread_mutex_lock(&pool->inflight_lock);
    for (int i = 0; i < POOL_INFLIGHT_SLOTS && slot < 0; i++) {
        if (!pool->inflight[i].claimed) {
            pool->inflight[i] = (pool_inflight_t){.claimed = true};
            slot = i;
        }
    }
    pthread_mutex_unlock(&pool->inflight_lock);
    return slot; /* -1: never with one attempt per worker, and then unpublished */
}

/* pg: the attempt's PGconn, or NULL once it is closed or adopted. */
void pool__inflight_set(pool_t *pool, int slot, PGconn *pg)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&pool->inflight_lock);
    pool->inflight[slot].pg = pg;
    pthread_mutex_unlock(&pool->inflight_lock);
}

PostgresPollingStatusType pool__inflight_poll(pool_t *pool, int slot, PGconn *pg)
{
    if (slot < 0)
        return PQconnectPoll(pg);
    pthread_mutex_lock(&pool->inflight_lock);
    PostgresPollingStatusType st = PQconnectPoll(pg);
    pthread_mutex_unlock(&pool->inflight_lock);
    return st;
}

/* scratch: memory the attempt allocated (hosts.c), freed by a forked child. */
void pool__inflight_set_scratch(pool_t *pool, int slot, void *scratch)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&pool->inflight_lock);
    pool->inflight[slot].scratch = scratch;
    pthread_mutex_unlock(&pool->inflight_lock);
}

void pool__inflight_in_hook(pool_t *pool, int slot, bool in_hook)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&pool->inflight_lock);
    pool->inflight[slot].in_hook = in_hook;
    pthread_mutex_unlock(&pool->inflight_lock);
}

void pool__inflight_release(pool_t *pool, int slot)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&pool->inflight_lock);
    pool->inflight[slot] = (pool_inflight_t){0};
    pthread_mutex_unlock(&pool->inflight_lock);
}

/* In a forked child, with one thread: hands over (into out, up to
   POOL_INFLIGHT_SLOTS) the PGconns the parent's attempts left between two
   steps, frees their scratch memory and forgets them.  One inside on_connect stays in its slot, which
   stays claimed: still pointed to, never touched. */
int pool__inflight_take_inherited(pool_t *pool, PGconn **out)
{
    int n = 0;
    pthread_mutex_lock(&pool->inflight_lock);
    for (int i = 0; i < POOL_INFLIGHT_SLOTS; i++) {
        pool_inflight_t *s = &pool->inflight[i];
        if (!s->claimed || (s->pg && s->in_hook))
            continue;
        if (s->pg)
            out[n++] = s->pg;
        free(s->scratch);
        *s = (pool_inflight_t){0};
    }
    pthread_mutex_unlock(&pool->inflight_lock);
    return n;
}
