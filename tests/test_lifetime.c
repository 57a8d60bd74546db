/* SPDX-License-Identifier: MIT */
/*
 * test_lifetime.c - idle_timeout_ms above min_size, max_lifetime_ms when next
 * idle (never while in use), refill to min_size, leak warnings.
 */
#include "harness.h"

#include <string.h>

static bool stats_until(pool_t *pool, pool_stats_t *st, int timeout_ms,
                        bool (*pred)(const pool_stats_t *))
{
    int64_t deadline = test_now_ms() + timeout_ms;
    do {
        pool_get_stats(pool, st);
        if (pred(st))
            return true;
        test_sleep_ms(5);
    } while (test_now_ms() < deadline);
    return false;
}

static bool total_is_1(const pool_stats_t *st) { return st->total == 1; }
static bool total_is_2(const pool_stats_t *st) { return st->total == 2; }
static bool lifetime_closed(const pool_stats_t *st) { return st->closed_lifetime >= 1 && st->total == 1; }
static bool one_leak(const pool_stats_t *st) { return st->leaks == 1; }

static void test_idle_connections_above_min_close_after_idle_timeout(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_idle");
    cfg.min_size = 1;
    cfg.max_size = 4;
    cfg.idle_timeout_ms = 200;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = pool_getconn(pool);
    int64_t returned_at = test_now_ms();
    for (int i = 0; i < 3; i++)
        pool_putconn(pool, c[i]);
    pool_stats_t st;
    assert_true(stats_until(pool, &st, 5000, total_is_1));
    assert_true(test_now_ms() - returned_at >= 200); /* not before idle_timeout_ms */
    assert_int_equal(st.closed_idle, 2);
    assert_int_equal(st.closed, 2);
    assert_true(test_wait_backends("life_idle", 1, 5000));
    test_sleep_ms(400); /* never below min_size */
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.total, 1);
    assert_int_equal(st.closed_idle, 2);
    pool_destroy(pool);
}

static void test_idle_timeout_zero_never_closes(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_idle_off");
    cfg.min_size = 0;
    cfg.idle_timeout_ms = 0;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c = pool_getconn(pool);
    pool_putconn(pool, c);
    test_sleep_ms(300);
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.total, 1);
    pool_destroy(pool);
}

static void test_lifetime_retires_idle_connections_and_refills(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_max");
    cfg.min_size = 1;
    cfg.max_size = 1;
    cfg.max_lifetime_ms = 300;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_true(stats_until(pool, &st, 5000, lifetime_closed));
    c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), pid);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_lifetime_never_closes_a_connection_in_use(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_in_use");
    cfg.min_size = 1;
    cfg.max_size = 1;
    cfg.max_lifetime_ms = 150;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c = pool_getconn(pool);
    test_sleep_ms(400); /* well past its lifetime, still borrowed */
    assert_int_equal(test_query_int(c, "SELECT 3"), 3);
    pool_stats_t st;
    pool_get_stats(pool, &st);
    assert_int_equal(st.closed, 0);
    pool_putconn(pool, c); /* now it is retired */
    pool_get_stats(pool, &st);
    assert_int_equal(st.closed_lifetime, 1);
    assert_true(stats_until(pool, &st, 5000, total_is_1));
    pool_destroy(pool);
}

static void test_pool_refills_to_min_size_after_backends_die(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_refill");
    cfg.min_size = 2;
    cfg.max_size = 3;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    pool_discard(pool, a);
    pool_discard(pool, b);
    pool_stats_t st;
    assert_true(stats_until(pool, &st, 5000, total_is_2));
    assert_int_equal(st.idle, 2);
    assert_true(test_wait_backends("life_refill", 2, 5000));
    pool_destroy(pool);
}

static void test_a_connection_held_past_leak_timeout_is_reported_once(void **state)
{
    test_log_t log = {0};
    pool_config_t cfg;
    test_config(&cfg, "life_leak");
    cfg.leak_timeout_ms = 100;
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c = pool_getconn(pool);
    pool_stats_t st;
    assert_true(stats_until(pool, &st, 5000, one_leak));
    assert_true(test_log_contains(&log, "leak"));
    test_sleep_ms(300);
    pool_get_stats(pool, &st);
    assert_int_equal(st.leaks, 1); /* once per checkout */
    pool_putconn(pool, c);
    c = pool_getconn(pool); /* a quick one is no leak */
    pool_putconn(pool, c);
    test_sleep_ms(250);
    pool_get_stats(pool, &st);
    assert_int_equal(st.leaks, 1);
    pool_destroy(pool);
}

/* 50 connections opened together, lifetime 6 s less up to 5 s of jitter:
   the retirements spread over the window instead of landing in one sweep
   (without jitter the first 25 go within the opening's own spread). */
#define JITTERED 50

static void test_lifetime_jitter_spreads_the_retirements(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_jitter");
    cfg.min_size = JITTERED;
    cfg.max_size = JITTERED;
    cfg.max_lifetime_ms = 6000;
    cfg.lifetime_jitter_ms = 5000;
    int64_t t0 = test_now_ms();
    pool_t *pool = test_pool_create(&cfg);
    int64_t opened_ms = test_now_ms() - t0;
    int64_t first = -1, half = -1;
    while (half < 0 && test_now_ms() - t0 < 15000) {
        pool_stats_t st;
        assert_pool_stats(pool, &st);
        if (first < 0 && st.closed_lifetime >= 1)
            first = test_now_ms();
        if (st.closed_lifetime >= JITTERED / 2)
            half = test_now_ms();
        test_sleep_ms(20);
    }
    assert_true(first >= 0 && half >= 0);
    print_message("opened %d in %lld ms; first retirement %lld ms later, the %dth %lld ms after it\n",
                  JITTERED, (long long)opened_ms, (long long)(first - t0), JITTERED / 2,
                  (long long)(half - first));
    assert_true(first - t0 >= 900); /* no lifetime below max_lifetime - jitter */
    /* Without jitter the first 25 retire as they were opened (half of the
       opening's spread) within one maintenance tick (250 ms here). */
    assert_true(half - first >= opened_ms / 2 + 1000);
    pool_destroy(pool);
}

static void test_lifetime_jitter_is_checked(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "life_jitter_bad");
    cfg.max_lifetime_ms = 1000;
    cfg.lifetime_jitter_ms = 1000;
    char err[POOL_ERRMSG_SIZE];
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_non_null(strstr(err, "lifetime_jitter_ms"));
    cfg.lifetime_jitter_ms = -1;
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "lifetime_jitter_ms"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_connections_above_min_close_after_idle_timeout),
        cmocka_unit_test(test_idle_timeout_zero_never_closes),
        cmocka_unit_test(test_lifetime_retires_idle_connections_and_refills),
        cmocka_unit_test(test_lifetime_never_closes_a_connection_in_use),
        cmocka_unit_test(test_pool_refills_to_min_size_after_backends_die),
        cmocka_unit_test(test_a_connection_held_past_leak_timeout_is_reported_once),
        cmocka_unit_test(test_lifetime_jitter_spreads_the_retirements),
        cmocka_unit_test(test_lifetime_jitter_is_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
