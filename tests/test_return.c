/* SPDX-License-Identifier: MIT */
/*
 * test_return.c - pool_putconn in every state a borrower can leave a
 * connection in, reset_query, and pool_discard.
 */
#include "harness.h"

#include <string.h>

static pool_t *make_pool(const char *app, const char *reset_query)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = 1;
    cfg.max_size = 1;
    cfg.reset_query = reset_query;
    return test_pool_create(&cfg);
}

static void stats(pool_t *pool, pool_stats_t *st)
{
    assert_int_equal(pool_get_stats(pool, st), POOL_OK);
}

static void test_returned_in_a_transaction_is_rolled_back_and_reused(void **state)
{
    pool_t *pool = make_pool("ret_txn", NULL);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "CREATE TABLE IF NOT EXISTS ret_txn_t (x int)"));
    assert_true(test_exec_ok(c, "BEGIN"));
    assert_true(test_exec_ok(c, "INSERT INTO ret_txn_t VALUES (1)"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INTRANS);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);

    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid); /* same session, reused */
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(test_query_int(c, "SELECT count(*) FROM ret_txn_t"), 0);
    assert_true(test_exec_ok(c, "DROP TABLE ret_txn_t"));
    pool_putconn(pool, c);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    assert_int_equal(st.closed, 0);
    pool_destroy(pool);
}

static void test_returned_in_a_failed_transaction_is_rolled_back(void **state)
{
    pool_t *pool = make_pool("ret_failed_txn", NULL);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "BEGIN"));
    assert_false(test_exec_ok(c, "SELECT 1/0"));
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid);
    assert_int_equal(test_query_int(c, "SELECT 5"), 5);
    pool_putconn(pool, c);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    pool_destroy(pool);
}

/* Returns c in a state that cannot be reused and checks it was closed and
   replaced by a new backend. */
static void expect_closed_and_replaced(pool_t *pool, PGconn *c, const char *app)
{
    int pid = test_backend_pid(c);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.rollbacks, 0);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    int64_t deadline = test_now_ms() + 5000;
    while (test_admin_int(sql) != 0 && test_now_ms() < deadline)
        test_sleep_ms(10);
    assert_int_equal(test_admin_int(sql), 0); /* the backend is gone */
    c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), pid);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
}

static void test_returned_with_a_query_in_flight_is_closed(void **state)
{
    pool_t *pool = make_pool("ret_inflight", NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(PQsendQuery(c, "SELECT pg_sleep(0.2)"));
    expect_closed_and_replaced(pool, c, "ret_inflight");
    pool_destroy(pool);
}

static void test_returned_with_unread_results_is_closed(void **state)
{
    pool_t *pool = make_pool("ret_unread", NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(PQsendQuery(c, "SELECT 1"));
    assert_true(test_wait_readable(PQsocket(c), 5000)); /* the result is there, unread */
    expect_closed_and_replaced(pool, c, "ret_unread");
    pool_destroy(pool);
}

static void test_returned_in_pipeline_mode_is_closed(void **state)
{
    pool_t *pool = make_pool("ret_pipeline", NULL);
    PGconn *c = pool_getconn(pool);
    assert_int_equal(PQenterPipelineMode(c), 1);
    expect_closed_and_replaced(pool, c, "ret_pipeline");
    pool_destroy(pool);
}

static void test_returned_mid_copy_is_closed(void **state)
{
    pool_t *pool = make_pool("ret_copy", NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(test_exec_ok(c, "CREATE TEMP TABLE ret_copy_t (x int)"));
    PGresult *r = PQexec(c, "COPY ret_copy_t FROM STDIN");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    expect_closed_and_replaced(pool, c, "ret_copy");
    pool_destroy(pool);
}

static void test_returned_broken_connection_is_closed(void **state)
{
    pool_t *pool = make_pool("ret_broken", NULL);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)::int", pid);
    assert_int_equal(test_admin_int(sql), 1);
    assert_false(test_exec_ok(c, "SELECT 1")); /* the borrower sees it die */
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_returned_in_nonblocking_mode_is_handed_out_blocking(void **state)
{
    pool_t *pool = make_pool("ret_nonblocking", NULL);
    PGconn *c = pool_getconn(pool);
    assert_int_equal(PQsetnonblocking(c, 1), 0);
    pool_putconn(pool, c);
    c = pool_getconn(pool);
    assert_int_equal(PQisnonblocking(c), 0);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_reset_query_runs_on_every_return(void **state)
{
    pool_t *pool = make_pool("ret_reset", "DISCARD ALL");
    for (int i = 0; i < 3; i++) {
        PGconn *c = pool_getconn(pool);
        PGresult *r = PQexec(c, "SHOW work_mem");
        assert_string_equal(PQgetvalue(r, 0, 0), "4MB"); /* the default, every time */
        PQclear(r);
        assert_true(test_exec_ok(c, "SET work_mem = '17MB'"));
        assert_true(test_exec_ok(c, "PREPARE ret_reset_stmt AS SELECT 1"));
        pool_putconn(pool, c); /* without DISCARD ALL, the PREPARE would fail next time */
    }
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.closed, 0);
    assert_int_equal(st.connects, 1);
    pool_destroy(pool);
}

static void test_reset_query_runs_after_rollback(void **state)
{
    pool_t *pool = make_pool("ret_reset_txn", "DISCARD ALL");
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "BEGIN"));
    assert_true(test_exec_ok(c, "SET LOCAL work_mem = '9MB'"));
    pool_putconn(pool, c); /* DISCARD ALL cannot run in a transaction: ROLLBACK first */
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid);
    pool_putconn(pool, c);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}

static void test_a_failing_reset_query_closes_the_connection(void **state)
{
    pool_t *pool = make_pool("ret_reset_fails", "SELECT 1/0");
    PGconn *c = pool_getconn(pool);
    expect_closed_and_replaced(pool, c, "ret_reset_fails");
    pool_destroy(pool);
}

/* A reset_query that always fails closes every returned connection: the
   operator learns why (the server's own words) at WARN, once a second with
   a count, not once per return. */
static void test_a_failing_reset_query_says_why_once_a_second(void **state)
{
    test_log_t log = {0};
    pool_config_t cfg;
    test_config(&cfg, "ret_reset_warn");
    cfg.max_size = 1;
    cfg.reset_query = "SELEC 1";
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = test_pool_create(&cfg);
    int64_t start = test_now_ms();
    int returns = 0;
    while (returns < 5 || test_now_ms() - start < 1200) {
        PGconn *c = pool_getconn(pool);
        assert_non_null(c);
        assert_int_equal(pool_putconn(pool, c), POOL_OK);
        returns++;
    }
    int64_t elapsed_ms = test_now_ms() - start;
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.closed_broken, (uint64_t)returns);
    int lines = test_log_count(&log, "reset_query failed");
    assert_true(lines >= 2);                          /* 1.2 s: the first, then one a second */
    assert_true(lines <= 1 + (int)(elapsed_ms / 1000)); /* never one per return */
    assert_true(test_log_contains(&log, "syntax error at or near \"SELEC\""));
    assert_true(test_log_contains(&log, "more closes nobody asked for since the last warning"));
    assert_int_equal(log.warnings, lines);
    pool_destroy(pool);
}

static void test_discard_closes_and_the_pool_refills_to_min_size(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "ret_discard");
    cfg.min_size = 2;
    cfg.max_size = 2;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_int_equal(pool_discard(pool, c), POOL_OK);
    pool_stats_t st;
    stats(pool, &st);
    assert_int_equal(st.closed, 1);
    assert_int_equal(st.closed_broken, 0);
    int64_t deadline = test_now_ms() + 5000;
    do {
        stats(pool, &st);
        if (st.total == 2)
            break;
        test_sleep_ms(5);
    } while (test_now_ms() < deadline);
    assert_int_equal(st.total, 2);
    assert_int_equal(st.connects, 3);
    assert_true(test_wait_backends("ret_discard", 2, 5000));
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_int_equal(test_admin_int(sql), 0);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_returned_in_a_transaction_is_rolled_back_and_reused),
        cmocka_unit_test(test_returned_in_a_failed_transaction_is_rolled_back),
        cmocka_unit_test(test_returned_with_a_query_in_flight_is_closed),
        cmocka_unit_test(test_returned_with_unread_results_is_closed),
        cmocka_unit_test(test_returned_in_pipeline_mode_is_closed),
        cmocka_unit_test(test_returned_mid_copy_is_closed),
        cmocka_unit_test(test_returned_broken_connection_is_closed),
        cmocka_unit_test(test_returned_in_nonblocking_mode_is_handed_out_blocking),
        cmocka_unit_test(test_reset_query_runs_on_every_return),
        cmocka_unit_test(test_reset_query_runs_after_rollback),
        cmocka_unit_test(test_a_failing_reset_query_closes_the_connection),
        cmocka_unit_test(test_a_failing_reset_query_says_why_once_a_second),
        cmocka_unit_test(test_discard_closes_and_the_pool_refills_to_min_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
