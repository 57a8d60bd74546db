/* SPDX-License-Identifier: MIT */
/*
 * test_netfaults.c - the pool behind a fault-injection proxy (fault_proxy.c):
 * a silent network, connections reset mid-query, refused connections and
 * latency.  Every check and attempt fails within its bound, no caller waits
 * past its deadline, and when traffic flows again the pool recovers by itself
 * without handing out a dead connection.
 */
#include "harness.h"
#include "fault_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fault_proxy_t *proxy;

static int start_proxy(void **state)
{
    const char *sock = getenv("PGPOOL_TEST_SOCKET");
    proxy = sock ? proxy_start(sock) : NULL;
    return 0;
}

static int stop_proxy(void **state)
{
    proxy_stop(proxy);
    return 0;
}

/* Every test starts and ends with traffic flowing. */
static int flowing(void **state)
{
    if (proxy) {
        proxy_set_mode(proxy, PROXY_FORWARD);
        proxy_set_latency_ms(proxy, 0);
    }
    return 0;
}

static pool_t *proxied_pool(const char *app, int min, int max, int connect_timeout_ms,
                            int ping_idle_ms)
{
    if (!proxy)
        skip();
    static char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=postgres user=postgres application_name=%s",
             proxy_port(proxy), app);
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.connect_timeout_ms = connect_timeout_ms;
    cfg.ping_idle_ms = ping_idle_ms;
    cfg.acquire_timeout_ms = 10000;
    return test_pool_create(&cfg);
}

static bool no_connections(void *p)
{
    return proxy_connections(p) == 0;
}

static bool usable(PGconn *c)
{
    return c && test_query_int(c, "SELECT 1") == 1;
}

static void test_a_ping_on_a_silent_network_fails_within_connect_timeout(void **state)
{
    pool_t *pool = proxied_pool("net_silent_ping", 1, 1, 500, 0);
    PGconn *c = pool_getconn(pool);
    assert_true(usable(c));
    pool_putconn(pool, c);

    proxy_set_mode(proxy, PROXY_SILENT);
    int64_t t0 = test_now_ms();
    c = pool_getconn_timeout(pool, 5000);
    int64_t elapsed = test_now_ms() - t0;
    /* The ping gives up after 500 ms and closes the connection; the new
       attempt hangs in the handshake for 500 ms more and fails: nothing is
       checked out, so the caller fails then, well before its 5 s. */
    assert_null(c);
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_in_range(elapsed, 450, 2500);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    assert_true(st.connect_errors >= 1);

    proxy_set_mode(proxy, PROXY_FORWARD); /* the pool recovers by itself */
    c = pool_getconn_timeout(pool, 5000);
    assert_true(usable(c));
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_a_connect_on_a_silent_network_fails_within_connect_timeout(void **state)
{
    pool_t *pool = proxied_pool("net_silent_connect", 0, 2, 400, 1000);
    proxy_set_mode(proxy, PROXY_SILENT);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 5000));
    int64_t elapsed = test_now_ms() - t0;
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(pool_errmsg(), "timeout expired"));
    assert_in_range(elapsed, 350, 2000);
    proxy_set_mode(proxy, PROXY_FORWARD);
    PGconn *c = pool_getconn_timeout(pool, 5000);
    assert_true(usable(c));
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_no_caller_waits_past_its_deadline_on_a_silent_network(void **state)
{
    pool_t *pool = proxied_pool("net_silent_deadline", 1, 2, 3000, 0);
    PGconn *c = pool_getconn(pool);
    pool_putconn(pool, c);
    proxy_set_mode(proxy, PROXY_SILENT);
    for (int timeout = 50; timeout <= 400; timeout *= 2) {
        int64_t t0 = test_now_ms();
        assert_null(pool_getconn_timeout(pool, timeout));
        int64_t elapsed = test_now_ms() - t0;
        if (elapsed > timeout + 300)
            fail_msg("timeout %d ms: returned after %lld ms", timeout, (long long)elapsed);
    }
    proxy_set_mode(proxy, PROXY_FORWARD);
    c = pool_getconn_timeout(pool, 8000);
    assert_true(usable(c));
    pool_putconn(pool, c);
    pool_destroy(pool);
}

/* The borrowed connection's pg_sleep is running on the server. */
static bool sleep_running(void *unused)
{
    return test_admin_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'net_reset' "
                          "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'") == 1;
}

static void test_connections_reset_mid_query_are_closed_and_replaced(void **state)
{
    pool_t *pool = proxied_pool("net_reset", 2, 2, 2000, 1000);
    PGconn *busy = pool_getconn(pool);
    assert_true(PQsendQuery(busy, "SELECT pg_sleep(5)"));
    assert_true(test_wait_for(sleep_running, NULL, 5000));
    proxy_reset_all(proxy);
    assert_true(test_wait_for(no_connections, proxy, 5000)); /* both reset, idle one too */
    PGresult *r;
    bool failed = false;
    while ((r = PQgetResult(busy))) {
        failed = failed || PQresultStatus(r) != PGRES_TUPLES_OK;
        PQclear(r);
    }
    assert_true(failed || PQstatus(busy) == CONNECTION_BAD);
    pool_putconn(pool, busy); /* broken: closed */
    for (int i = 0; i < 4; i++) { /* the idle one was reset too: never handed out */
        PGconn *c = pool_getconn_timeout(pool, 5000);
        assert_true(usable(c));
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* The broken one came back first and evicted its host: the idle one
       went with it, unlooked-at. */
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.closed_evicted, 1);
    pool_destroy(pool);
    test_terminate_backends("net_reset"); /* the server side of the reset query */
}

static void test_refused_connections_fail_at_once_then_recover(void **state)
{
    pool_t *pool = proxied_pool("net_refuse", 0, 2, 2000, 1000);
    proxy_set_mode(proxy, PROXY_REFUSE);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn(pool));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_true(test_now_ms() - t0 < 2000);
    proxy_set_mode(proxy, PROXY_FORWARD);
    PGconn *c = pool_getconn_timeout(pool, 5000);
    assert_true(usable(c));
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.total, 1); /* refused attempts leaked no capacity */
    assert_int_equal(st.connecting, 0);
    pool_destroy(pool);
}

static void test_latency_slows_but_breaks_nothing(void **state)
{
    pool_t *pool = proxied_pool("net_latency", 1, 2, 3000, 0);
    proxy_set_latency_ms(proxy, 40);
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn(pool); /* the ping crosses the slow link */
    assert_true(test_now_ms() - t0 >= 40);
    assert_true(usable(c));
    pool_putconn(pool, c);
    /* A caller whose deadline is shorter than the ping still returns on time. */
    t0 = test_now_ms();
    c = pool_getconn_timeout(pool, 20);
    int64_t elapsed = test_now_ms() - t0;
    assert_true(elapsed < 20 + 300);
    if (c)
        pool_putconn(pool, c);
    proxy_set_latency_ms(proxy, 0);
    c = pool_getconn_timeout(pool, 5000);
    assert_true(usable(c));
    pool_putconn(pool, c);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_ping_on_a_silent_network_fails_within_connect_timeout, flowing, flowing),
        cmocka_unit_test_setup_teardown(test_a_connect_on_a_silent_network_fails_within_connect_timeout, flowing, flowing),
        cmocka_unit_test_setup_teardown(test_no_caller_waits_past_its_deadline_on_a_silent_network, flowing, flowing),
        cmocka_unit_test_setup_teardown(test_connections_reset_mid_query_are_closed_and_replaced, flowing, flowing),
        cmocka_unit_test_setup_teardown(test_refused_connections_fail_at_once_then_recover, flowing, flowing),
        cmocka_unit_test_setup_teardown(test_latency_slows_but_breaks_nothing, flowing, flowing),
    };
    return cmocka_run_group_tests(tests, start_proxy, stop_proxy);
}
