/* SPDX-License-Identifier: MIT */
/*
 * test_validation.c - pre_ping: the zero-round-trip check on every checkout,
 * the round trip only after ping_idle_ms, dead connections replaced
 * invisibly, and harmless input (a NOTIFY) not mistaken for death.
 */
#include "harness.h"

#include <signal.h>
#include <string.h>

static pool_t *make_pool(const char *app, int min, int max, int pre_ping, int ping_idle_ms)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.pre_ping = pre_ping;
    cfg.ping_idle_ms = ping_idle_ms;
    return test_pool_create(&cfg);
}

static void test_terminated_idle_backends_are_never_handed_out(void **state)
{
    /* ping_idle_ms huge: the zero-round-trip check stands guard; it sees the
       hang-up, or the FATAL message that comes first and calls for a round trip. */
    pool_t *pool = make_pool("val_killed", 3, 3, 1, 3600000);
    assert_int_equal(test_terminate_backends("val_killed"), 3);
    assert_true(test_wait_backends("val_killed", 0, 5000));
    for (int round = 0; round < 2; round++) {
        PGconn *c[3];
        for (int i = 0; i < 3; i++) {
            c[i] = pool_getconn(pool);
            assert_non_null(c[i]);
            assert_int_equal(test_query_int(c[i], "SELECT 1"), 1);
        }
        for (int i = 0; i < 3; i++)
            pool_putconn(pool, c[i]);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* The first one found dead retires its siblings on the same server
       (one host-wide eviction): they are not even looked at. */
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.closed_evicted, 2);
    assert_true(st.pings <= 1);
    assert_int_equal(st.total, 3);
    pool_destroy(pool);
}

/* Nobody asked for that close: it is logged at WARN, once for the dead one
   and its retired siblings together. */
static void test_a_backend_found_dead_is_reported(void **state)
{
    test_log_t log = {0};
    pool_config_t cfg;
    test_config(&cfg, "val_reported");
    cfg.min_size = cfg.max_size = 2;
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = test_pool_create(&cfg);
    assert_int_equal(test_terminate_backends("val_reported"), 2);
    assert_true(test_wait_backends("val_reported", 0, 5000));
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    pool_putconn(pool, c);
    assert_int_equal(test_log_count(&log, "closed a connection to host"), 1);
    assert_true(test_log_contains(&log, "the host's other connections are retired"));
    pool_destroy(pool);
}

static void test_round_trip_runs_only_after_ping_idle_ms(void **state)
{
    pool_t *pool = make_pool("val_ping_idle", 1, 1, 1, 150);
    PGconn *c = pool_getconn(pool); /* fresh from connect: idle < 150 ms */
    pool_putconn(pool, c);
    c = pool_getconn(pool);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.pings, 0);
    test_sleep_ms(200);
    c = pool_getconn(pool);
    assert_non_null(c);
    pool_putconn(pool, c);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.pings, 1);
    pool_destroy(pool);
}

static void test_ping_idle_zero_pings_every_checkout(void **state)
{
    pool_t *pool = make_pool("val_ping_all", 1, 1, 1, 0);
    for (int i = 0; i < 5; i++) {
        PGconn *c = pool_getconn(pool);
        assert_non_null(c);
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.pings, 5);
    pool_destroy(pool);
}

static void test_a_caller_that_cannot_wait_does_not_lose_connections_to_the_ping(void **state)
{
    /* A round trip due at checkout needs a moment even when the caller's
       deadline is now: cutting it short would close a healthy connection. */
    pool_t *pool = make_pool("val_ping_nowait", 1, 1, 1, 0);
    for (int i = 0; i < 20; i++) {
        PGconn *c = pool_getconn_timeout(pool, 0);
        assert_non_null(c);
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.pings, 20);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.connects, 1);
    pool_destroy(pool);
}

static void test_pre_ping_off_never_pings(void **state)
{
    pool_t *pool = make_pool("val_noping", 1, 1, 0, 0);
    for (int i = 0; i < 3; i++) {
        PGconn *c = pool_getconn(pool);
        assert_non_null(c);
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.pings, 0);
    pool_destroy(pool);
}

static void test_a_silent_backend_fails_the_round_trip_within_connect_timeout(void **state)
{
    /* A stopped backend looks fine from the socket (no data, no hang-up); only
       the round trip finds it, and it must give up within connect_timeout_ms. */
    pool_config_t cfg;
    test_config(&cfg, "val_silent");
    cfg.max_size = 1;
    cfg.ping_idle_ms = 0;
    cfg.connect_timeout_ms = 400;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    pool_putconn(pool, c);
    if (kill(pid, SIGSTOP) != 0) {
        pool_destroy(pool);
        skip(); /* not allowed to signal the server's processes */
    }
    int64_t t0 = test_now_ms();
    c = pool_getconn_timeout(pool, 10000);
    int64_t elapsed = test_now_ms() - t0;
    kill(pid, SIGCONT);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), pid);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    assert_in_range(elapsed, 390, 5000);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    pool_destroy(pool);
}

static void test_a_pending_notify_is_not_mistaken_for_a_dead_connection(void **state)
{
    pool_t *pool = make_pool("val_notify", 1, 1, 1, 3600000);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "LISTEN val_channel"));
    pool_putconn(pool, c);
    assert_int_equal(test_admin_int("SELECT count(*) FROM (SELECT pg_notify('val_channel', 'x')) n"), 1);
    assert_true(test_wait_readable(PQsocket(c), 5000)); /* it reached the idle socket */
    c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_equal(test_backend_pid(c), pid);
    assert_true(test_exec_ok(c, "UNLISTEN *"));
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.pings, 1); /* the unasked input was judged by a round trip */
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_terminated_idle_backends_are_never_handed_out),
        cmocka_unit_test(test_a_backend_found_dead_is_reported),
        cmocka_unit_test(test_round_trip_runs_only_after_ping_idle_ms),
        cmocka_unit_test(test_ping_idle_zero_pings_every_checkout),
        cmocka_unit_test(test_a_caller_that_cannot_wait_does_not_lose_connections_to_the_ping),
        cmocka_unit_test(test_pre_ping_off_never_pings),
        cmocka_unit_test(test_a_silent_backend_fails_the_round_trip_within_connect_timeout),
        cmocka_unit_test(test_a_pending_notify_is_not_mistaken_for_a_dead_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
