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

void hist_record(pool_hist_t *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;
    h->bucket[hist_bucket(us)]++;
}

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

int pool_get_stats(pool_t *pool, pool_stats_t *out)
{
    if (!pool || pool->magic != POOL_MAGIC || !out) {
        pool_set_error(POOL_EINVAL, out ? "pool is NULL or not a live pool" : "stats output is NULL");
        return POOL_EINVAL;
    }
    pthread_mutex_lock(&pool->lock);
    pool_enter_locked(pool);
    *out = pool->stats;
    int parked = 0;
    for (const pool_conn_t *c = pool->all_slots; c; c = c->all_next) {
        shard_add_to(&c->shard, out);
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
    pool_unlock(pool);
    return POOL_OK;
}

int pool_get_host_stats(pool_t *pool, pool_host_stats_t *out, int max)
{
    if (!pool_is_live(pool) || max < 0 || (!out && max > 0)) {
        pool_set_error(POOL_EINVAL, "pool_get_host_stats: %s",
                       !pool_is_live(pool) ? "pool is NULL or not a live pool"
                       : max < 0           ? "max is negative"
                                           : "out is NULL but max is not 0");
        return -1;
    }
    const pool_hosts_t *h = &pool->hosts; /* immutable */
    for (int j = 0; j < h->n && j < max; j++) {
        snprintf(out[j].host, sizeof out[j].host, "%s", hosts_name(h, j));
        snprintf(out[j].port, sizeof out[j].port, "%s", h->port[j]);
        out[j].open = 0;
    }
    pthread_mutex_lock(&pool->lock);
    pool_enter_locked(pool);
    int64_t now = clock_now_us();
    for (int j = 0; j < h->n && j < max; j++) {
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
    return h->n;
}
