/* SPDX-License-Identifier: MIT */
/*
 * test_sizing.c - the pool against a server with fewer slots than it is
 * configured for: a refusal for lack of slots (SQLSTATE 53300, here a role's
 * CONNECTION LIMIT) lowers the pool's ceiling at once, callers waiting are
 * served by returns rather than failed, the ceiling grows back when the
 * server has room again, and the error keeps libpq's words.
 */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#define ROLE "pgpool_sizing"

static void set_role_limit(int limit)
{
    char sql[128];
    snprintf(sql, sizeof sql, "ALTER ROLE " ROLE " CONNECTION LIMIT %d", limit);
    test_admin_int(sql);
    assert_int_equal(test_admin_int("SELECT rolconnlimit FROM pg_roles WHERE rolname = '" ROLE "'"),
                     limit);
}

static int setup(void **state)
{
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    test_admin_int("CREATE ROLE " ROLE " LOGIN");
    return 0;
}

static int teardown(void **state)
{
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    return 0;
}

/* The test's conninfo, as the role (a later keyword wins in libpq). */
static const char *role_conninfo(const char *app)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s user=" ROLE, test_conninfo(app));
    return buf;
}

static int role_backends(void)
{
    return test_admin_int("SELECT count(*) FROM pg_stat_activity WHERE usename = '" ROLE "'");
}

#define THREADS 10

static void test_a_refusal_lowers_the_ceiling_and_it_grows_back_with_room(void **state)
{
    set_role_limit(4);
    pool_config_t cfg;
    test_config(&cfg, "sizing_ceiling");
    cfg.conninfo = role_conninfo("sizing_ceiling");
    cfg.min_size = 1;
    cfg.max_size = 10;
    cfg.acquire_timeout_ms = 20000;
    pool_t *pool = test_pool_create(&cfg);
    test_load_t l = {.pool = pool, .threads = THREADS, .check = test_load_exec,
                     .arg = "SELECT pg_sleep(0.005)"};
    test_load_start(&l);

    /* 10 threads want 10 connections; the server lets the role have 4. */
    int most = 0;
    int64_t t0 = test_now_ms();
    pool_stats_t st;
    while (test_now_ms() - t0 < 3000) {
        int n = role_backends();
        most = n > most ? n : most;
        test_sleep_ms(20);
    }
    assert_pool_stats(pool, &st);
    print_message("limit 4: %llu refusals in 3 s, effective_max %d, %d open, at most %d backends\n",
                  (unsigned long long)st.server_refusals, st.effective_max, st.total, most);
    assert_true(st.server_refusals > 0);
    assert_true(st.server_refusals < 100); /* backed off, not a storm */
    assert_true(st.effective_max <= 5); /* 4, or 5 while a probe above it is in flight */
    assert_true(most <= 4);
    if (atomic_load(&l.errors) != 0) /* served by returns meanwhile */
        fail_msg("%ld failed: %s", atomic_load(&l.errors), l.first_error);
    long served_before = atomic_load(&l.ok);
    assert_true(served_before > 0);

    /* Room again: the ceiling climbs back to max_size. */
    set_role_limit(-1);
    int64_t t1 = test_now_ms();
    do {
        test_sleep_ms(20);
        assert_pool_stats(pool, &st);
    } while ((st.effective_max < 10 || st.total < 8) && test_now_ms() - t1 < 10000);
    print_message("limit lifted: effective_max %d, %d open after %lld ms\n", st.effective_max,
                  st.total, (long long)(test_now_ms() - t1));
    assert_int_equal(st.effective_max, 10);
    assert_true(st.total >= 8);

    test_load_stop(&l);
    assert_int_equal(atomic_load(&l.errors), 0);
    pool_destroy(pool);
}

static void test_a_refused_caller_times_out_with_libpqs_words(void **state)
{
    set_role_limit(0); /* every connect refused with 53300 */
    pool_config_t cfg;
    test_config(&cfg, "sizing_refused");
    cfg.conninfo = role_conninfo("sizing_refused");
    cfg.min_size = 0;
    pool_t *pool = test_pool_create(&cfg);
    assert_null(pool_getconn_timeout(pool, 500));
    /* Not failed at once as for a server that is down: the server is up,
       a slot may free up within the deadline. */
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    const char *msg = pool_errmsg();
    assert_non_null(strstr(msg, "too many connections for role"));
    assert_null(strstr(msg, "53300:"));  /* the verbose form stays inside */
    assert_null(strstr(msg, "LOCATION"));
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.server_refusals >= 1);
    assert_int_equal(st.effective_max, 1);
    pool_destroy(pool);
    set_role_limit(-1);
}

/* A connection error that is not a refusal keeps failing callers at once
   (as before), and leaves the ceiling alone. */
static void test_other_connect_errors_leave_the_ceiling_alone(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "sizing_other");
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s dbname=pgpool_no_such_db", test_conninfo("sizing_other"));
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    pool_t *pool = test_pool_create(&cfg);
    assert_null(pool_getconn_timeout(pool, 5000));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(pool_errmsg(), "does not exist"));
    assert_null(strstr(pool_errmsg(), "3D000:"));
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.server_refusals, 0);
    assert_int_equal(st.effective_max, cfg.max_size + cfg.max_overflow);
    pool_destroy(pool);
}

/* fair_share is checked and settable in the conninfo; the pool says the
   name its connections carry, and the limits it found (here as a superuser,
   whom only max_connections binds). */
static void test_fair_share_is_checked_and_says_what_applies(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "sizing_fair");
    cfg.fair_share = 2;
    char err[POOL_ERRMSG_SIZE];
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "fair_share"));
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s pool_fair_share=on", test_conninfo("sizing_fair"));
    cfg.conninfo = conninfo;
    cfg.fair_share = 0;
    test_log_t log = {0};
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = test_pool_create(&cfg);
    assert_true(test_log_contains(&log, "connections are named \"sizing_fair #"));
    int64_t deadline = test_now_ms() + 5000;
    while (!test_log_contains(&log, "fair share: max_connections") && test_now_ms() < deadline)
        test_sleep_ms(10);
    assert_true(test_log_contains(&log, "(a superuser: only max_connections binds)"));
    assert_true(test_log_contains(&log, "this pool's share is"));
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_refusal_lowers_the_ceiling_and_it_grows_back_with_room),
        cmocka_unit_test(test_a_refused_caller_times_out_with_libpqs_words),
        cmocka_unit_test(test_other_connect_errors_leave_the_ceiling_alone),
        cmocka_unit_test(test_fair_share_is_checked_and_says_what_applies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
