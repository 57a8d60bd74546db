/* SPDX-License-Identifier: MIT */
/*
 * pool.c - the core: the pool's state under its lock.
 *
 * Idle connections sit on a LIFO list (hot ones are reused, cold ones age
 * out at the tail); blocked callers sit on a FIFO queue, and a connection
 * that becomes available is handed straight to the longest waiter, so one
 * return wakes exactly one thread and a newcomer can never barge ahead.
 * Every function here runs with pool->lock held and never releases it, and
 * none does I/O: a connection to close is detached into a pool_closing_t
 * that the caller closes once the lock is released (close.c).  Everything
 * above (borrowing, returning, the threads, control, stats) calls down into
 * this file; it calls nothing above it.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <string.h>

/* ---- idle list ---------------------------------------------------------- */

/* Puts c at the head of the idle list, keeping its idle_since_us. */
static void idle_link_locked(pool_t *pool, pool_conn_t *c)
{
    c->state = CONN_IDLE;
    c->prev = NULL;
    c->next = pool->idle_head;
    if (pool->idle_head)
        pool->idle_head->prev = c;
    else
        pool->idle_tail = c;
    pool->idle_head = c;
    pool->nidle++;
}

void pool__idle_push_locked(pool_t *pool, pool_conn_t *c, int64_t now_us)
{
    c->idle_since_us = now_us;
    idle_link_locked(pool, c);
}

void pool__idle_remove_locked(pool_t *pool, pool_conn_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        pool->idle_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        pool->idle_tail = c->prev;
    c->prev = c->next = NULL;
    pool->nidle--;
}

/* Moves every parked connection (fast.c) to the idle list, for a lock holder
   that wants one, or wants to close idle ones. */
void pool__unpark_all_locked(pool_t *pool)
{
    /* Cleared before the scan: a connection parked after it sets it again. */
    if (!atomic_exchange(&pool->maybe_parked, false))
        return;
    for (pool_conn_t *c = pool->all_slots; c; c = c->all_next) {
        conn_state_t parked = CONN_PARKED;
        if (atomic_compare_exchange_strong(&c->state, &parked, CONN_CHECKING))
            idle_link_locked(pool, c);
    }
}

/* ---- connection slots ---------------------------------------------------- */

/* A slot for a new connection: a free one, else *spare (allocated by the
   caller before taking the lock), which is then consumed (*spare = NULL). */
pool_conn_t *pool__slot_get_locked(pool_t *pool, pool_conn_t **spare)
{
    pool_conn_t *c = pool->free_slots;
    if (c) {
        pool->free_slots = c->next;
        return c;
    }
    c = *spare;
    *spare = NULL;
    memset(c, 0, sizeof *c);
    c->all_next = pool->all_slots;
    pool->all_slots = c;
    return c;
}

/* The slot no longer holds a connection; it stays allocated (see pool_conn_t). */
void pool__release_slot_locked(pool_t *pool, pool_conn_t *c)
{
    c->pg = NULL;
    c->state = CONN_FREE;
    c->prev = NULL;
    c->next = pool->free_slots;
    pool->free_slots = c;
}

/* ---- detaching ------------------------------------------------------------ */

/* Counts a close in `closed` and in its reason's counter. */
static void count_close_locked(pool_t *pool, close_reason_t why)
{
    pool_stats_t *s = &pool->stats;
    s->closed++;
    switch (why) {
    case CLOSE_DEAD:
    case CLOSE_UNUSABLE: s->closed_broken++; break;
    case CLOSE_ROLE: s->closed_role++; break;
    case CLOSE_EVICTED:
    case CLOSE_SUSPECT: s->closed_evicted++; break;
    case CLOSE_LIFETIME: s->closed_lifetime++; break;
    case CLOSE_IDLE: s->closed_idle++; break;
    case CLOSE_NONE:
    case CLOSE_EXCESS:
    case CLOSE_REJECTED:
    case CLOSE_DISCARDED: break;
    }
}

/* A connection to a live server is closed gracefully: the close waits
   (bounded) until the server has ended the backend, so the server never
   counts more than the pool's maximum; one left busy (a query still running)
   too, its backend ending once the query has.  A dead one, or one whose
   server is suspect, is dropped. */
static bool close_graceful(close_reason_t why)
{
    return why != CLOSE_DEAD && why != CLOSE_SUSPECT;
}

/* Forgets c, counts why, and adds its PGconn to *out, which must have room.
   The backend still counts against max_size + max_overflow (nclosing) until
   pool__close_finish has closed it.  Upper layers close through
   pool__close_locked (close.c), which also retires a suspect host. */
void pool__detach_locked(pool_t *pool, pool_conn_t *c, close_reason_t why, pool_closing_t *out)
{
    if (c->state == CONN_IDLE)
        pool__idle_remove_locked(pool, c);
    pool__conn_map_remove(&pool->map, c->pg);
    out->graceful[out->n] = close_graceful(why);
    out->pg[out->n++] = c->pg;
    pool__release_slot_locked(pool, c);
    pool->nopen--;
    pool->nclosing++;
    count_close_locked(pool, why);
}

/* Detaches idle connections, oldest first, while more than keep are open and
   *out has room: pool_evict's retired ones (closed_evicted) and the excess of
   a shrink.  Returns how many. */
int pool__detach_idle_locked(pool_t *pool, int keep, pool_closing_t *out)
{
    pool__unpark_all_locked(pool);
    int n = 0;
    while (out->n < POOL_CLOSE_BATCH && pool->idle_tail && pool->nopen > keep) {
        pool_conn_t *c = pool->idle_tail;
        pool__detach_locked(pool, c, conn_stale(pool, c) ? CLOSE_EVICTED : CLOSE_EXCESS, out);
        n++;
    }
    return n;
}

/* ---- demand for new connections ----------------------------------------- */

/* How many more connections the workers should open now: enough for min_size
   and for every waiter no attempt is already under way for, within the room
   left under `limit`. */
static int demand_under_locked(const pool_t *pool, int limit)
{
    if (pool->closed)
        return 0;
    int room = limit - pool->nopen - pool->nconnecting - pool->nclosing;
    int for_min = pool->cfg.min_size - pool->nopen - pool->nconnecting;
    /* Paused, nobody is served: connections are kept to min_size only. */
    int for_waiters = pool->paused ? 0 : pool->waiters.len + pool->grow_wanted - pool->nconnecting;
    int want = for_min > for_waiters ? for_min : for_waiters;
    return want < room ? want : room;
}

/* Within the ceiling in force (pool_limit). */
int pool__connect_demand_locked(const pool_t *pool)
{
    return demand_under_locked(pool, pool_limit(pool));
}

/* Whether more connections are wanted than a learnt ceiling lets the
   workers open: a probe above it is due (workers.c). */
bool pool__ceiling_holds_back_locked(const pool_t *pool)
{
    return pool->ceiling > 0 && pool->ceiling < pool_share_limit(pool) &&
           demand_under_locked(pool, pool_share_limit(pool)) > 0;
}

void pool__wake_workers_locked(pool_t *pool)
{
    int demand = pool__connect_demand_locked(pool);
    if (demand == 1 || (demand <= 0 && pool__ceiling_holds_back_locked(pool)))
        pthread_cond_signal(&pool->work_cond); /* to open one, or to probe above the ceiling */
    else if (demand > 1)
        pthread_cond_broadcast(&pool->work_cond);
}

/* ---- making a connection available -------------------------------------- */

/* A blocking caller is woken after the lock is released (pool_unlock); an
   async request goes to the service thread, which validates c for it. */
static void hand_to_waiter_locked(pool_t *pool, pool_conn_t *c, pool_waiter_t *w, int64_t now_us)
{
    c->state = CONN_CHECKING;
    c->idle_since_us = now_us;
    w->conn = c;
    if (w->req)
        pool__request_handed_locked(pool, w->req);
    else
        pool__wake_after_unlock(&w->woken);
}

/* w, out of line, fails with err: msg says why (NULL: pool->last_error). */
void pool__waiter_fail_locked(pool_t *pool, pool_waiter_t *w, pool_err_t err, const char *msg)
{
    if (w->req) {
        pool__request_ready_locked(pool, w->req, err, msg ? msg : pool->last_error);
        return;
    }
    w->err = err;
    pool__wake_after_unlock(&w->woken);
}

/* One acquire's outcome in the statistics, blocking or not. */
void pool__count_acquire_locked(pool_t *pool, pool_err_t rc, int64_t waited_us)
{
    uint64_t waited = waited_us > 0 ? (uint64_t)waited_us : 0;
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
}

/* Why a caller timed out, in buf. */
void pool__timeout_message_locked(const pool_t *pool, int timeout_ms, char *buf, size_t len)
{
    bool failing = pool->connect_failing;
    snprintf(buf, len,
             "timed out after %d ms waiting for a connection (%d open, %d in use, %d waiting%s)%s%.380s",
             timeout_ms, pool->nopen, pool->nopen - pool->nidle, pool->waiters.len,
             pool->paused ? ", pool paused" : "", failing ? "; last connection error: " : "",
             failing ? pool->last_error : "");
}

/* c (open, validated or new, not on any list) goes to a census that waits
   for one (fair_share), else to the longest waiter, else
   to the idle list, else - above max_size with nobody waiting - it is detached
   into *out.  It is detached as well when it was retired, or when more than
   max_size + max_overflow are open (after pool_resize shrank the pool) even
   if someone waits. */
void pool__make_available_locked(pool_t *pool, pool_conn_t *c, int64_t now_us, pool_closing_t *out)
{
    if (conn_stale(pool, c)) {
        pool__detach_locked(pool, c, CLOSE_EVICTED, out);
        return;
    }
    if (pool->closed || pool->nopen > pool_limit(pool)) {
        pool__detach_locked(pool, c, CLOSE_EXCESS, out);
        return;
    }
    if (pool->share_wanted && !pool->paused) { /* for one round trip (share.c) */
        pool->share_wanted = false;
        c->state = CONN_CHECKING;
        c->idle_since_us = now_us;
        pool->share_conn = c;
        pool__wake_after_unlock(&pool->service_wake);
        return;
    }
    pool_waiter_t *w = pool->paused ? NULL : pool__waitq_pop_front(&pool->waiters);
    if (w)
        hand_to_waiter_locked(pool, c, w, now_us);
    else if (pool->nopen > pool->cfg.max_size)
        pool__detach_locked(pool, c, CLOSE_EXCESS, out);
    else
        pool__idle_push_locked(pool, c, now_us);
}

/* Hands idle connections to waiters, longest waiter first (pool_resume, and
   a caller that starts to wait). */
void pool__serve_waiters_locked(pool_t *pool)
{
    if (!pool->waiters.head)
        return;
    pool__unpark_all_locked(pool);
    int64_t now = pool__clock_now_us();
    while (pool->idle_head && pool->waiters.head) {
        pool_conn_t *c = pool->idle_head;
        pool__idle_remove_locked(pool, c);
        hand_to_waiter_locked(pool, c, pool__waitq_pop_front(&pool->waiters), now);
    }
}

/* xorshift64: uniform enough to spread retirements and retries, and no lock
   or syscall of libc's rand. */
uint64_t pool__random_locked(pool_t *pool)
{
    uint64_t x = pool->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    pool->rng = x;
    return x;
}

/* A random amount from 0 to max (>= 0), for jitter. */
int64_t pool__random_upto_locked(pool_t *pool, int64_t max)
{
    return max > 0 ? (int64_t)(pool__random_locked(pool) % (uint64_t)(max + 1)) : 0;
}

bool pool__past_lifetime(const pool_t *pool, const pool_conn_t *c, int64_t now_us)
{
    return pool->cfg.max_lifetime_ms > 0 && now_us - c->created_us >= c->lifetime_us;
}
