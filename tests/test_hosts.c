/* SPDX-License-Identifier: MIT */
/*
 * test_hosts.c - a conninfo with several hosts: one attempt per host, each
 * bounded by connect_timeout_ms (a silent first host costs one timeout, not
 * the caller's whole deadline), an error that names every host and never the
 * password, load_balance_hosts=random done by pgpool (libpq 15 rejects the
 * keyword), and a warning for several hosts without target_session_attrs.
 * And the role a server plays: a session or a server (fenced with
 * default_transaction_read_only) that no longer matches target_session_attrs
 * is closed when the pool next hears of it, never handed out; so is one on
 * which a write was refused as read-only (25006) where writes are expected.
 * The second host is the test server reached another way: its Unix socket,
 * or 127.0.0.1 through the fault proxy.
 */
#include "harness.h"
#include "fault_proxy.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fault_proxy_t *proxy;
static char sock_dir[200];
static char port[16];

static int setup(void **state)
{
    const char *sock = getenv("PGPOOL_TEST_SOCKET"); /* DIR/.s.PGSQL.PORT */
    if (!sock)
        return 0;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", sock);
    snprintf(sock_dir, sizeof sock_dir, "%s", dirname(copy));
    const char *dot = strrchr(sock, '.');
    snprintf(port, sizeof port, "%s", dot ? dot + 1 : "5432");
    proxy = proxy_start(sock);
    return 0;
}

static int teardown(void **state)
{
    proxy_stop(proxy);
    return 0;
}

static int flowing(void **state)
{
    if (proxy)
        proxy_set_mode(proxy, PROXY_FORWARD);
    return 0;
}

static pool_t *hosts_pool(const char *conninfo, int min, int connect_timeout_ms, test_log_t *log,
                          char *err, size_t errlen)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = min;
    cfg.max_size = 20;
    cfg.connect_timeout_ms = connect_timeout_ms;
    cfg.acquire_timeout_ms = 10000;
    cfg.on_log = log ? test_log_cb : NULL;
    cfg.arg = log;
    return pool_create(&cfg, err, errlen);
}

static void test_a_host_that_is_not_there_is_skipped_for_the_next(void **state)
{
    if (!proxy)
        skip();
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "host=/nonexistent-pgpool-dir,%s port=%s dbname=postgres user=postgres "
             "target_session_attrs=read-write application_name=hosts_skip", sock_dir, port);
    char err[512] = "";
    pool_t *pool = hosts_pool(conninfo, 1, 2000, NULL, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_string_equal(PQhost(c), sock_dir);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_a_silent_host_costs_one_connect_timeout_not_the_deadline(void **state)
{
    if (!proxy)
        skip();
    proxy_set_mode(proxy, PROXY_SILENT); /* accepts, never answers */
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1,%s port=%d,%s dbname=postgres user=postgres "
             "target_session_attrs=any application_name=hosts_silent",
             sock_dir, proxy_port(proxy), port);
    pool_t *pool = hosts_pool(conninfo, 0, 500, NULL, NULL, 0);
    assert_non_null(pool);
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(pool, 8000);
    int64_t elapsed = test_now_ms() - t0;
    assert_non_null(c);
    assert_string_equal(PQhost(c), sock_dir);
    /* The first host's attempt gives up after connect_timeout_ms (500), the
       second answers at once. */
    assert_in_range(elapsed, 450, 1500);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_every_host_failing_names_each_and_never_the_password(void **state)
{
    char err[512] = "";
    pool_t *pool = hosts_pool("host=/nonexistent-pgpool-a,/nonexistent-pgpool-b port=5 "
                              "dbname=postgres user=postgres password=sekrit123 "
                              "target_session_attrs=read-write",
                              1, 1000, NULL, err, sizeof err);
    assert_null(pool);
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(err, "could not open connection: "));
    assert_non_null(strstr(err, "host \"/nonexistent-pgpool-a\" port 5: "));
    assert_non_null(strstr(err, "; host \"/nonexistent-pgpool-b\" port 5: "));
    assert_null(strstr(err, "sekrit123"));
}

/* Opens n connections at once and counts those on the Unix socket. */
static int count_on_socket(pool_t *pool, int n)
{
    PGconn *held[20];
    int on_socket = 0;
    for (int i = 0; i < n; i++) {
        held[i] = pool_getconn(pool);
        assert_non_null(held[i]);
        on_socket += strcmp(PQhost(held[i]), sock_dir) == 0;
    }
    for (int i = 0; i < n; i++)
        pool_putconn(pool, held[i]);
    return on_socket;
}

static void test_load_balance_hosts_random_spreads_new_connections(void **state)
{
    if (!proxy)
        skip();
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "postgresql:///postgres?host=%s,127.0.0.1&port=%s,%d&user=postgres"
             "&target_session_attrs=any&application_name=hosts_random&load_balance_hosts=random",
             sock_dir, port, proxy_port(proxy));
    pool_t *pool = hosts_pool(conninfo, 0, 2000, NULL, NULL, 0);
    assert_non_null(pool);
    int on_socket = count_on_socket(pool, 20);
    pool_destroy(pool);
    /* 20 fair coin tosses: all on one side has odds of 2 in a million. */
    assert_in_range(on_socket, 1, 19);

    /* Without it, hosts are tried in order: every connection on the first. */
    char *opt = strstr(conninfo, "&load_balance_hosts=random");
    *opt = '\0';
    pool = hosts_pool(conninfo, 0, 2000, NULL, NULL, 0);
    assert_non_null(pool);
    assert_int_equal(count_on_socket(pool, 20), 20);
    pool_destroy(pool);
}

static void test_a_bad_load_balance_hosts_value_names_the_key(void **state)
{
    char err[512] = "";
    assert_null(hosts_pool("host=/tmp dbname=postgres load_balance_hosts=sometimes", 0, 1000,
                           NULL, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_non_null(strstr(err, "load_balance_hosts"));
    assert_non_null(strstr(err, "sometimes"));
}

static void test_ports_that_do_not_match_the_hosts_fail_create(void **state)
{
    char err[512] = "";
    assert_null(hosts_pool("host=/a,/b,/c port=1,2 dbname=postgres", 0, 1000, NULL, err,
                           sizeof err));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_non_null(strstr(err, "could not match 2 port numbers to 3 hosts"));
}

static void test_several_hosts_without_target_session_attrs_warn(void **state)
{
    if (!proxy)
        skip();
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "host=%s,%s port=%s dbname=postgres user=postgres",
             sock_dir, sock_dir, port);
    test_log_t log = {0};
    pool_t *pool = hosts_pool(conninfo, 0, 1000, &log, NULL, 0);
    assert_non_null(pool);
    assert_true(test_log_contains(&log, "2 hosts and target_session_attrs \"any\""));
    pool_destroy(pool);

    /* One host, or a target named: no warning. */
    test_log_t quiet = {0};
    snprintf(conninfo, sizeof conninfo,
             "host=%s,%s port=%s dbname=postgres user=postgres target_session_attrs=read-write",
             sock_dir, sock_dir, port);
    pool = hosts_pool(conninfo, 0, 1000, &quiet, NULL, 0);
    assert_non_null(pool);
    assert_false(test_log_contains(&quiet, "target_session_attrs"));
    pool_destroy(pool);
}

/* The test server fenced read-only, or not. */
static void fence(bool on)
{
    test_fence(getenv("PGPOOL_TEST_DSN"), on);
}

static int unfence(void **state)
{
    if (proxy)
        fence(false);
    return 0;
}

/* Borrows the one connection of a pool on the test server with the given
   target, lets spoil() run the borrower's statements on it, returns it and
   borrows again: true when the pool retired it (closed_role 1, another
   backend), false when it was reused. */
static bool retired_after(const char *target, void (*spoil)(PGconn *))
{
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "host=%s port=%s dbname=postgres user=postgres target_session_attrs=%s "
             "application_name=hosts_role", sock_dir, port, target);
    pool_t *pool = hosts_pool(conninfo, 1, 2000, NULL, NULL, 0);
    assert_non_null(pool);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    int pid = test_backend_pid(c);
    spoil(c);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    c = pool_getconn(pool);
    assert_non_null(c);
    bool retired = test_backend_pid(c) != pid;
    assert_int_equal(st.closed_role, retired ? 1 : 0);
    if (retired) /* whoever comes next gets a session that can write */
        assert_int_equal(test_query_int(c, "SELECT (current_setting('transaction_read_only') = "
                                           "'off')::int"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
    return retired;
}

static void set_read_only(PGconn *c)
{
    assert_true(test_exec_ok(c, "SET default_transaction_read_only = on"));
}

static void test_a_session_made_read_only_is_not_reused_under_read_write(void **state)
{
    if (!proxy)
        skip();
    /* The server reports the change with the SET's result: closed at return
       under read-write; without a target the session is the borrower's. */
    assert_true(retired_after("read-write", set_read_only));
    assert_false(retired_after("any", set_read_only));
}

static void write_in_read_only_transaction(PGconn *c)
{
    assert_true(test_exec_ok(c, "BEGIN READ ONLY"));
    PGresult *r = PQexec(c, "CREATE TABLE hosts_never_made (i int)");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "25006");
    PQclear(r);
    assert_true(test_exec_ok(c, "ROLLBACK"));
}

static void test_a_write_refused_as_read_only_retires_the_connection(void **state)
{
    if (!proxy)
        skip();
    /* 25006 (read_only_sql_transaction) seen by the application's own
       statement: where writes are expected the server may have been made
       read-only without saying so (PgBouncer in between, an old server), so
       the connection is closed at return, not handed to the next writer.
       Without a target it is an application error like any other. */
    assert_true(retired_after("read-write", write_in_read_only_transaction));
    assert_false(retired_after("any", write_in_read_only_transaction));
}

static void test_a_fenced_server_is_left_after_the_next_ping(void **state)
{
    if (!proxy)
        skip();
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "host=%s port=%s dbname=postgres user=postgres target_session_attrs=read-write "
             "application_name=hosts_fence pool_ping_idle=0", sock_dir, port);
    pool_t *pool = hosts_pool(conninfo, 2, 2000, NULL, NULL, 0);
    assert_non_null(pool);
    fence(true);
    /* Both idle connections are pinged, hear that the server went read-only
       and are closed; new ones are refused by libpq's own check, and with
       nothing checked out the caller fails at once, saying why. */
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(pool, 8000);
    int64_t elapsed = test_now_ms() - t0;
    if (c)
        fail_msg("a connection to the fenced server was handed out");
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(pool_errmsg(), "read-only"));
    assert_true(elapsed < 4000);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* The first ping that heard it evicted the server: the other idle one
       was closed without a ping of its own. */
    assert_int_equal(st.closed_role, 1);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.closed_evicted, 1);
    assert_int_equal(st.total, 0);

    fence(false);
    /* Served again once an attempt starts after the unfencing: one already
       under way may still fail its caller at once (slow under valgrind). */
    int64_t deadline = test_now_ms() + 10000;
    while (!(c = pool_getconn_timeout(pool, 2000)) && test_now_ms() < deadline)
        assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT (current_setting("
                                       "'default_transaction_read_only') = 'off')::int"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

/* A pool on two hosts, the fault proxy (127.0.0.1) first and the Unix socket
   second, both the test server. */
static pool_t *two_host_pool(const char *name, int connect_timeout_ms)
{
    static char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1,%s port=%d,%s dbname=postgres user=postgres "
             "target_session_attrs=read-write application_name=%s",
             sock_dir, proxy_port(proxy), port, name);
    pool_t *pool = hosts_pool(conninfo, 0, connect_timeout_ms, NULL, NULL, 0);
    assert_non_null(pool);
    return pool;
}

static bool on_proxy(PGconn *c)
{
    return atoi(PQport(c)) == proxy_port(proxy);
}

static void test_a_host_that_failed_goes_last_for_a_while(void **state)
{
    if (!proxy)
        skip();
    pool_t *pool = two_host_pool("hosts_down", 2000);
    proxy_set_mode(proxy, PROXY_REFUSE);
    PGconn *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = pool_getconn(pool);
        assert_non_null(c[i]);
        assert_false(on_proxy(c[i]));
    }
    /* One attempt found the first host refusing; the next two went straight
       to the second, which is now preferred for a while (1 s, doubling on
       each failure, capped at 8 s). */
    pool_host_stats_t a = test_host_stats(pool, 0), b = test_host_stats(pool, 1);
    assert_int_equal(a.connect_errors, 1);
    assert_int_equal(a.down, 1);
    assert_int_equal(a.open, 0);
    assert_int_equal(b.open, 3);
    assert_int_equal(b.connects, 3);
    assert_int_equal(b.down, 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_string_equal(b.host, sock_dir);
    assert_string_equal(b.port, port);

    /* Back, and its down time over: new connections go to it first again. */
    proxy_set_mode(proxy, PROXY_FORWARD);
    int64_t deadline = test_now_ms() + 5000;
    while (test_host_stats(pool, 0).down) {
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(50);
    }
    PGconn *d = pool_getconn(pool);
    assert_non_null(d);
    assert_true(on_proxy(d));
    pool_putconn(pool, d);
    for (int i = 0; i < 3; i++)
        pool_putconn(pool, c[i]);
    pool_destroy(pool);
}

static void kill_own_backend(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT pg_terminate_backend(pg_backend_pid())");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
}

static void test_a_broken_connection_evicts_its_host_and_no_other(void **state)
{
    if (!proxy)
        skip();
    pool_t *pool = two_host_pool("hosts_evict", 2000);
    /* Three on the first host (the proxy), two on the second (the first one
       refusing meanwhile). */
    PGconn *a[3], *b[2];
    for (int i = 0; i < 3; i++) {
        a[i] = pool_getconn(pool);
        assert_true(a[i] && on_proxy(a[i]));
    }
    proxy_set_mode(proxy, PROXY_REFUSE);
    for (int i = 0; i < 2; i++) {
        b[i] = pool_getconn(pool);
        assert_true(b[i] && !on_proxy(b[i]));
    }
    proxy_set_mode(proxy, PROXY_FORWARD);
    pool_putconn(pool, b[0]);
    pool_putconn(pool, b[1]);
    pool_putconn(pool, a[1]); /* idle on the first host */
    int a0_pid = test_backend_pid(a[0]);
    assert_true(test_exec_ok(a[0], "BEGIN"));

    /* a[2]'s backend goes away (57P01, the connection breaks): the first
       host's idle connection is closed at once, a[0] (in use) is left alone
       until it comes back; the second host's are untouched. */
    kill_own_backend(a[2]);
    pool_putconn(pool, a[2]);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.closed_evicted, 1);
    assert_int_equal(test_host_stats(pool, 0).open, 1);
    assert_int_equal(test_host_stats(pool, 0).evictions, 1);
    assert_int_equal(test_host_stats(pool, 1).open, 2);
    assert_int_equal(test_host_stats(pool, 1).evictions, 0);
    assert_int_equal(test_backend_pid(a[0]), a0_pid); /* never interrupted */
    pool_putconn(pool, a[0]);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_evicted, 2);
    assert_int_equal(st.rollbacks, 0); /* retired: closed as it was, no ROLLBACK first */
    assert_int_equal(st.evictions, 1); /* a retired one does not evict again */
    assert_int_equal(test_host_stats(pool, 0).open, 0);
    /* What is left is the second host's two, idle and usable. */
    PGconn *c[2];
    for (int i = 0; i < 2; i++) {
        c[i] = pool_getconn(pool);
        assert_true(c[i] && !on_proxy(c[i]));
        assert_int_equal(test_query_int(c[i], "SELECT 1"), 1);
    }
    for (int i = 0; i < 2; i++)
        pool_putconn(pool, c[i]);
    pool_destroy(pool);
}

static void test_host_stats_refuse_bad_arguments(void **state)
{
    assert_int_equal(pool_get_host_stats(NULL, NULL, 0), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    if (!proxy)
        skip();
    pool_t *pool = two_host_pool("hosts_stats_args", 2000);
    assert_int_equal(pool_get_host_stats(pool, NULL, 0), 2); /* how many */
    assert_int_equal(pool_get_host_stats(pool, NULL, 1), -1);
    assert_non_null(strstr(pool_errmsg(), "out is NULL"));
    pool_host_stats_t one;
    assert_int_equal(pool_get_host_stats(pool, &one, -1), -1);
    assert_int_equal(pool_get_host_stats(pool, &one, 1), 2); /* only the first written */
    assert_string_equal(one.host, "127.0.0.1");
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_a_host_that_is_not_there_is_skipped_for_the_next, flowing),
        cmocka_unit_test_setup(test_a_silent_host_costs_one_connect_timeout_not_the_deadline,
                               flowing),
        cmocka_unit_test(test_every_host_failing_names_each_and_never_the_password),
        cmocka_unit_test_setup(test_load_balance_hosts_random_spreads_new_connections, flowing),
        cmocka_unit_test(test_a_bad_load_balance_hosts_value_names_the_key),
        cmocka_unit_test(test_ports_that_do_not_match_the_hosts_fail_create),
        cmocka_unit_test_setup(test_several_hosts_without_target_session_attrs_warn, flowing),
        cmocka_unit_test(test_a_session_made_read_only_is_not_reused_under_read_write),
        cmocka_unit_test(test_a_write_refused_as_read_only_retires_the_connection),
        cmocka_unit_test_teardown(test_a_fenced_server_is_left_after_the_next_ping, unfence),
        cmocka_unit_test_setup(test_a_host_that_failed_goes_last_for_a_while, flowing),
        cmocka_unit_test_setup(test_a_broken_connection_evicts_its_host_and_no_other, flowing),
        cmocka_unit_test_setup(test_host_stats_refuse_bad_arguments, flowing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
