/* SPDX-License-Identifier: MIT */
/*
 * test_stats.c - latency histograms: bucket boundaries, pool_hist_percentile's
 * rules, and histograms that agree with the counters of the same snapshot,
 * under concurrency too.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void put(pool_hist_t *h, int bucket, uint64_t n)
{
    h->bucket[bucket] += n;
    h->count += n;
}

static void test_percentile_of_nothing_is_zero(void **state)
{
    pool_hist_t h = {0};
    assert_int_equal(pool_hist_percentile(NULL, 0.5), 0);
    assert_int_equal(pool_hist_percentile(&h, 0.5), 0);
    assert_int_equal(pool_hist_percentile(&h, 1.0), 0);
}

static void test_percentile_is_the_upper_bound_of_the_bucket_that_holds_it(void **state)
{
    pool_hist_t h = {0};
    put(&h, 1, 90); /* [1, 2) us */
    put(&h, 3, 10); /* [4, 8) us */
    assert_int_equal(pool_hist_percentile(&h, 0.0), 2);   /* max(1, 0) = first sample */
    assert_int_equal(pool_hist_percentile(&h, 0.5), 2);
    assert_int_equal(pool_hist_percentile(&h, 0.9), 2);   /* ceil(90) = 90: still bucket 1 */
    assert_int_equal(pool_hist_percentile(&h, 0.901), 8); /* ceil(90.1) = 91 */
    assert_int_equal(pool_hist_percentile(&h, 0.99), 8);
    assert_int_equal(pool_hist_percentile(&h, 1.0), 8);
}

static void test_percentile_clamps_q(void **state)
{
    pool_hist_t h = {0};
    put(&h, 0, 1); /* under 1 us: upper bound 2^0 = 1 */
    put(&h, 5, 1);
    assert_int_equal(pool_hist_percentile(&h, -3.0), 1);
    assert_int_equal(pool_hist_percentile(&h, 7.0), 32);
}

static void test_the_last_bucket_is_unbounded(void **state)
{
    pool_hist_t h = {0};
    put(&h, POOL_HIST_BUCKETS - 1, 1);
    assert_true(pool_hist_percentile(&h, 0.5) == UINT64_MAX);
    put(&h, POOL_HIST_BUCKETS - 2, 3);
    assert_int_equal(pool_hist_percentile(&h, 0.5), (uint64_t)1 << (POOL_HIST_BUCKETS - 2));
}

static uint64_t bucket_sum(const pool_hist_t *h)
{
    uint64_t n = 0;
    for (int i = 0; i < POOL_HIST_BUCKETS; i++)
        n += h->bucket[i];
    return n;
}

static void expect_consistent(const pool_stats_t *st, uint64_t returns)
{
    assert_int_equal(st->wait_hist.count, st->acquired + st->acquire_timeouts + st->acquire_errors);
    assert_int_equal(st->wait_hist.sum_us, st->wait_us_total);
    assert_int_equal(st->hold_hist.count, returns);
    assert_int_equal(st->hold_hist.sum_us, st->hold_us_total);
    assert_int_equal(st->connect_hist.count, st->connects);
    assert_int_equal(bucket_sum(&st->wait_hist), st->wait_hist.count);
    assert_int_equal(bucket_sum(&st->hold_hist), st->hold_hist.count);
    assert_int_equal(bucket_sum(&st->connect_hist), st->connect_hist.count);
}

typedef struct loader {
    pool_t *pool;
    atomic_bool *stop;
    unsigned seed;
    uint64_t returns;
} loader_t;

static void *load(void *arg)
{
    loader_t *l = arg;
    while (!atomic_load(l->stop)) {
        PGconn *c = pool_getconn_timeout(l->pool, (int)(rand_r(&l->seed) % 20));
        if (!c)
            continue;
        test_exec_ok(c, "SELECT 1");
        if (rand_r(&l->seed) % 8 == 0)
            pool_discard(l->pool, c);
        else
            pool_putconn(l->pool, c);
        l->returns++;
    }
    return NULL;
}

static void test_histograms_agree_with_the_counters_under_concurrency(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "stats_hist");
    cfg.min_size = 1;
    cfg.max_size = 3;
    cfg.max_overflow = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    atomic_bool stop = false;
    loader_t l[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        l[i] = (loader_t){.pool = pool, .stop = &stop, .seed = (unsigned)i + 1};
        pthread_create(&t[i], NULL, load, &l[i]);
    }
    for (int i = 0; i < 50; i++) { /* snapshots taken under load agree too */
        pool_stats_t st;
        assert_pool_stats(pool, &st);
        assert_int_equal(st.wait_hist.count, st.acquired + st.acquire_timeouts + st.acquire_errors);
        assert_int_equal(st.wait_hist.sum_us, st.wait_us_total);
        assert_int_equal(st.connect_hist.count, st.connects);
        assert_int_equal(st.hold_hist.sum_us, st.hold_us_total);
        test_sleep_ms(10);
    }
    atomic_store(&stop, true);
    uint64_t returns = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        returns += l[i].returns;
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    expect_consistent(&st, returns);
    assert_true(st.acquire_timeouts > 0 || st.acquired > 0);
    pool_destroy(pool);
}

static void test_a_real_wait_lands_in_its_bucket(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "stats_wait");
    cfg.max_size = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *held = pool_getconn(pool);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 100)); /* waits 100 ms: bucket [65536, 131072) us */
    int64_t waited_ms = test_now_ms() - t0;
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    uint64_t p100 = pool_hist_percentile(&st.wait_hist, 1.0);
    assert_true(p100 >= (uint64_t)waited_ms * 1000 / 2 && p100 > 100000);
    assert_true(p100 <= (uint64_t)waited_ms * 1000 * 2);
    assert_int_equal(pool_hist_percentile(&st.wait_hist, 0.5), 1); /* the instant checkout */
    pool_putconn(pool, held);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.hold_hist.count, 1);
    assert_true(pool_hist_percentile(&st.hold_hist, 1.0) > 100000);
    assert_int_equal(st.connect_hist.count, 1);
    assert_true(pool_hist_percentile(&st.connect_hist, 1.0) > 1); /* a connect takes time */
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_of_nothing_is_zero),
        cmocka_unit_test(test_percentile_is_the_upper_bound_of_the_bucket_that_holds_it),
        cmocka_unit_test(test_percentile_clamps_q),
        cmocka_unit_test(test_the_last_bucket_is_unbounded),
        cmocka_unit_test(test_histograms_agree_with_the_counters_under_concurrency),
        cmocka_unit_test(test_a_real_wait_lands_in_its_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
