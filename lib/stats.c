/* SPDX-License-Identifier: MIT */
/*
 * stats.c - the statistics snapshot and the latency histograms.
 *
 * Counters and histograms are updated under pool->lock by the same code that
 * counts the event, or by the fast path in its connection slot's shard (a
 * seqlock, fast.c); a snapshot taken under the lock adds the shards, each
 * read consistently, so a histogram's count always equals its counter.  Recording is a few
 * instructions: one bit scan picks the bucket.
 */
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>

uint64_t pool_hist_percentile(const pool_hist_t *h, double q)
{
    if (!h || h->count == 0)
        return 0;
    if (!(q >= 0.0)) /* also NaN */
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    double exact = q * (double)h->count;
    uint64_t target = (uint64_t)exact; /* ceil without libm */
    if ((double)target < exact)
        target++;
    if (target < 1)
        target = 1;
    uint64_t seen = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= target)
            return i == POOL_HIST_BUCKETS - 1 ? UINT64_MAX : (uint64_t)1 << i;
    }
    return UINT64_MAX; /* buckets do not add up to count: a hand-made histogram */
}

int pool_get_stats_sized(pool_t *pool, pool_stats_t *caller_out, size_t size)
{
    if (!pool || pool->magic != POOL_MAGIC || !caller_out || size < POOL_STATS_SIZE_MIN) {
        pool__set_error(POOL_EINVAL, !caller_out  ? "stats output is NULL"
                                     : size < POOL_STATS_SIZE_MIN ? "stats size is smaller than any pgpool header's"
                                                          : "pool is NULL or not a live pool");
        return POOL_EINVAL;
    }
    pool_stats_t whole;
    pool_stats_t *out = &whole;
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    *out = pool->stats;
    int parked = 0;
    for (const pool_conn_t *c = pool->all_slots; c; c = c->all_next) {
        pool__shard_add_to(&c->shard, out);
        parked += c->state == CONN_PARKED;
    }
    out->total = pool->nopen;
    out->idle = pool->nidle + parked;
    out->in_use = pool->nopen - out->idle;
    out->connecting = pool->nconnecting;
    out->waiting = pool->waiters.len; /* a caller handed a connection is no longer waiting */
    out->min_size = pool->cfg.min_size;
    out->max_size = pool->cfg.max_size;
    out->max_overflow = pool->cfg.max_overflow;
    out->effective_max = pool_limit(pool);
    pool_unlock(pool);
    pool__copy_out(caller_out, size, &whole, sizeof whole);
    return POOL_OK;
}

/* The caller's array has elements of `size` bytes: written in place when
   that is our layout, else filled in whole here and copied out at the
   caller's stride. */
int pool_get_host_stats_sized(pool_t *pool, pool_host_stats_t *caller_out, int max, size_t size)
{
    if (!pool_is_live(pool) || max < 0 || (!caller_out && max > 0) ||
        size < POOL_HOST_STATS_SIZE_1_0) {
        pool__set_error(POOL_EINVAL, "pool_get_host_stats: %s",
                        !pool_is_live(pool) ? "pool is NULL or not a live pool"
                        : max < 0           ? "max is negative"
                        : size < POOL_HOST_STATS_SIZE_1_0
                            ? "host stats size is smaller than any pgpool header's"
                            : "out is NULL but max is not 0");
        return -1;
    }
    const pool_hosts_t *h = &pool->hosts; /* immutable */
    if (max > h->n)
        max = h->n;
    bool in_place = size == sizeof(pool_host_stats_t) || max == 0;
    pool_host_stats_t *out = in_place ? caller_out : calloc((size_t)max, sizeof *out);
    if (!out && max > 0) {
        pool__set_error(POOL_ENOMEM, "pool_get_host_stats: out of memory");
        return -1;
    }
    for (int j = 0; j < max; j++) {
        snprintf(out[j].host, sizeof out[j].host, "%s", pool__hosts_name(h, j));
        snprintf(out[j].port, sizeof out[j].port, "%s", h->port[j]);
        out[j].open = 0;
    }
    pthread_mutex_lock(&pool->lock);
    pool__enter_locked(pool);
    int64_t now = pool__clock_now_us();
    for (int j = 0; j < max; j++) {
        const pool_host_state_t *st = &pool->host_state[j];
        out[j].down = st->down_until_us > now;
        out[j].connects = st->connects;
        out[j].connect_errors = st->connect_errors;
        out[j].evictions = st->evictions;
    }
    /* Open = tracked and not inherited across a fork, as pool_stats_t.total. */
    for (const pool_conn_t *c = pool->all_slots; c; c = c->all_next)
        if (c->state != CONN_FREE && !conn_inherited(pool, c) && c->host < max)
            out[c->host].open++;
    pool_unlock(pool);
    if (!in_place) {
        for (int j = 0; j < max; j++)
            pool__copy_out((char *)caller_out + (size_t)j * size, size, &out[j], sizeof out[j]);
        free(out);
    }
    return h->n;
}
