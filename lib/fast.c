/* SPDX-License-Identifier: MIT */
/*
 * fast.c - borrowing and returning without the lock.
 *
 * A thread that returns a connection while nobody waits parks it in its slot
 * (state PARKED) instead of putting it on the idle list under the lock, and
 * remembers the slot; its next pool_getconn takes it back with one CAS.  With
 * as many connections as threads, each thread cycles on its own connection
 * and no two threads write the same cache line: no lock, no shared counter
 * (the statistics go to the slot's shard).  HikariCP's ConcurrentBag keeps a
 * thread-local list for the same reason.  Anything unusual takes the locked
 * path (getconn.c, putconn.c): someone waiting, a paused or closing pool, a round trip or a
 * hook due, a rollback or reset, an evicted, inherited or old connection.
 *
 * The handshake with callers that start to wait, which must never sleep while
 * a connection sits parked: such a caller, under the lock, queues itself,
 * closes the gate (pool->fast_ok = false) and then takes what is parked
 * (pool__unpark_all_locked); a returning thread parks (seq_cst) and then reads
 * the gate (seq_cst).  In the single order of seq_cst operations, either the
 * caller's scan sees the parked connection, or the returner sees the gate
 * closed and returns the connection the locked way (settle).  The
 * same handshake with pool->maybe_parked lets lock holders skip the scan when
 * nothing was parked since the last one.
 */
#include "pool_internal.h"

#include <sched.h>

/* The slot this thread used last, and in which pool (by id: a pool created
   at a destroyed one's address is another pool).  A hint, checked by CAS
   before use; slots outlive their connections, so looking is always safe. */
static _Thread_local struct {
    uint64_t pool_id; /* 0: none (pool ids start at 1) */
    pool_conn_t *c;
} mine __attribute__((tls_model("initial-exec"))); /* no __tls_get_addr call: 16 bytes
                                                     of static TLS, which glibc keeps
                                                     spare even for a dlopen'ed library */

void pool__fast_remember(const pool_t *pool, pool_conn_t *c)
{
    mine.pool_id = pool->id;
    mine.c = c;
}

pool_conn_t *pool__fast_mine(const pool_t *pool)
{
    return mine.pool_id == pool->id ? mine.c : NULL;
}

/* ---- the slot's statistics shard: a seqlock with one writer ------------- */

static inline void bump(_Atomic uint64_t *x, uint64_t by)
{
    /* One writer (the connection's holder): a load and a store, no RMW. */
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static inline void shard_begin(conn_shard_t *sh)
{
    bump(&sh->seq, 1); /* odd: a reader retries */
    atomic_thread_fence(memory_order_release);
}

static inline void shard_end(conn_shard_t *sh)
{
    atomic_store_explicit(&sh->seq, atomic_load_explicit(&sh->seq, memory_order_relaxed) + 1,
                          memory_order_release);
}

/* Adds the shard to *out, consistently (its counts agree with each other).
   Called under pool->lock by pool_get_stats. */
void pool__shard_add_to(const conn_shard_t *sh, pool_stats_t *out)
{
    uint64_t acquired, hcount, hsum, bucket[POOL_HIST_BUCKETS];
    for (;;) {
        uint64_t seq = atomic_load_explicit(&sh->seq, memory_order_acquire);
        if (seq & 1) {
            sched_yield(); /* the writer was preempted inside: let it finish (the one
                              syscall under the lock here; see pool_internal.h) */
            continue;
        }
        acquired = atomic_load_explicit(&sh->acquired, memory_order_relaxed);
        hcount = atomic_load_explicit(&sh->hold_count, memory_order_relaxed);
        hsum = atomic_load_explicit(&sh->hold_sum_us, memory_order_relaxed);
        for (int i = 0; i < POOL_HIST_BUCKETS; i++)
            bucket[i] = atomic_load_explicit(&sh->hold_bucket[i], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sh->seq, memory_order_relaxed) == seq)
            break;
    }
    /* A fast checkout waited 0 us: the wait histogram's first bucket. */
    out->acquired += acquired;
    out->wait_hist.count += acquired;
    out->wait_hist.bucket[0] += acquired;
    out->hold_us_total += hsum;
    out->hold_hist.count += hcount;
    out->hold_hist.sum_us += hsum;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++)
        out->hold_hist.bucket[i] += bucket[i];
}

/* ---- borrowing ------------------------------------------------------------ */

/* Takes this thread's parked connection back, when the gate is open: the
   caller then validates it (getconn.c) and finishes with pool__fast_checked_out, or
   takes the lock with the connection CHECKING. */
pool_conn_t *pool__fast_take(pool_t *pool)
{
    pool_conn_t *c = pool__fast_mine(pool);
    /* In a forked child fast_ok is cleared (fork.c): the locked path starts over. */
    if (!c || !atomic_load_explicit(&pool->fast_ok, memory_order_relaxed))
        return NULL;
    conn_state_t parked = CONN_PARKED;
    /* Acquire: what the returner wrote before parking (idle_since_us) is seen. */
    if (!atomic_compare_exchange_strong_explicit(&c->state, &parked, CONN_CHECKING,
                                                 memory_order_acquire, memory_order_relaxed))
        return NULL;
    return c;
}

void pool__fast_checked_out(pool_conn_t *c, int64_t now_us)
{
    atomic_store_explicit(&c->checkout_us, now_us, memory_order_relaxed);
    atomic_store_explicit(&c->leak_reported, false, memory_order_relaxed);
    shard_begin(&c->shard);
    bump(&c->shard.acquired, 1);
    shard_end(&c->shard);
    atomic_store_explicit(&c->state, CONN_IN_USE, memory_order_release);
}

/* ---- returning ------------------------------------------------------------ */

static void record_hold(conn_shard_t *sh, uint64_t us)
{
    shard_begin(sh);
    bump(&sh->hold_count, 1);
    bump(&sh->hold_sum_us, us);
    bump(&sh->hold_bucket[hist_bucket(us)], 1);
    shard_end(sh);
}

/* Whether pg, this thread's connection, can be parked as it is: nothing to
   roll back or reset, no hook, same session, not evicted, inherited or old.
   The caller holds it (RETURNING). */
static bool parkable(pool_t *pool, pool_conn_t *c, PGconn *pg, int64_t now)
{
    if (conn_inherited(pool, c) || c->doom != DOOM_NONE || conn_stale(pool, c) ||
        !pool__conn_returnable(pg) || PQtransactionStatus(pg) != PQTRANS_IDLE ||
        pool__past_lifetime(pool, c, now))
        return false;
    if (c->results_counted && c->results == c->results_verified)
        return true;
    if (pool__session_identity_changed(c) || !pool__hosts_role_ok(&pool->hosts, pg))
        return false;
    c->results_verified = c->results;
    return true;
}

/* c was parked just as the gate closed or the pool was evicted: it gets what
   a locked return gives it (the longest waiter, the idle list, or a close
   when retired or above max_size).  If a lock holder moved it to the idle
   list meanwhile, waiters are served from there instead.  Takes the lock. */
static void settle(pool_t *pool, pool_conn_t *c)
{
    int cancel = pool__cancel_off(); /* closing may reach a cancellation point */
    pool_closing_t closing;
    pool__closing_init(&closing);
    pthread_mutex_lock(&pool->lock);
    conn_state_t parked = CONN_PARKED;
    if (atomic_compare_exchange_strong(&c->state, &parked, CONN_CHECKING))
        pool__make_available_locked(pool, c, c->idle_since_us, &closing);
    else if (!pool->paused)
        pool__serve_waiters_locked(pool);
    pool__wake_workers_locked(pool);
    pool_unlock(pool);
    pool__close_finish(pool, &closing);
    pool__cancel_restore(cancel);
}

/* Returns pg without the lock when it is this thread's last borrowed
   connection and nothing unusual is due; false: use the locked path. */
bool pool__fast_return(pool_t *pool, PGconn *pg)
{
    pool_conn_t *c = pool__fast_mine(pool);
    if (!c || atomic_load_explicit(&c->pg, memory_order_relaxed) != pg ||
        !atomic_load_explicit(&pool->fast_ok, memory_order_relaxed) || pool->cfg.on_checkin ||
        pool->reset_query)
        return false;
    conn_state_t in_use = CONN_IN_USE;
    /* Claimed, so that a second return of the same connection (a misuse,
       refused on the locked path) cannot run alongside. */
    if (!atomic_compare_exchange_strong_explicit(&c->state, &in_use, CONN_RETURNING,
                                                 memory_order_acquire, memory_order_relaxed))
        return false;
    int64_t now = pool__clock_now_us();
    if (!parkable(pool, c, pg, now)) {
        atomic_store_explicit(&c->state, CONN_IN_USE, memory_order_release);
        return false;
    }
    int64_t out = atomic_load_explicit(&c->checkout_us, memory_order_relaxed);
    record_hold(&c->shard, (uint64_t)(now > out ? now - out : 0));
    c->idle_since_us = now;
    atomic_store(&c->state, CONN_PARKED); /* seq_cst: the handshake */
    if (!atomic_load(&pool->maybe_parked))
        atomic_store(&pool->maybe_parked, true);
    /* The gate closed (a caller waits, the pool paused or shrank) or the pool
       or the host was evicted while we parked: let the locked path see to it. */
    if (!atomic_load(&pool->fast_ok) || c->epoch != atomic_load(&pool->epoch) ||
        atomic_load(&c->evicted))
        settle(pool, c);
    return true;
}
