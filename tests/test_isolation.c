/* SPDX-License-Identifier: MIT */
/*
 * test_isolation.c - a borrower never inherits another's session: with
 * reset_query "DISCARD ALL" every kind of session state is gone for the next
 * borrower, and even without it a connection returned as another user (SET
 * SESSION AUTHORIZATION, SET ROLE away from a superuser) is closed, not reused.
 */
#include "harness.h"

#include <string.h>

#define ROLE "pgpool_iso_role"

static int create_role(void **state)
{
    test_admin_int("DO $$ BEGIN CREATE ROLE " ROLE " NOLOGIN; "
                   "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
    test_admin_int("GRANT USAGE, CREATE ON SCHEMA public TO " ROLE);
    return 0;
}

static pool_t *one_connection(const char *app, const char *reset_query)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.max_size = 1;
    cfg.reset_query = reset_query;
    return test_pool_create(&cfg);
}

static char *show(PGconn *c, const char *sql, char *buf, size_t len)
{
    PGresult *r = PQexec(c, sql);
    snprintf(buf, len, "%s", PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
    return buf;
}

/* Borrows, runs `dirty` statements, returns; borrows again and expects the
   same backend (reused, not replaced) with `check` giving `expected`. */
static void expect_reset(const char *app, const char *const *dirty, const char *check,
                         const char *expected)
{
    pool_t *pool = one_connection(app, "DISCARD ALL");
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    for (const char *const *sql = dirty; *sql; sql++)
        if (!test_exec_ok(c, *sql))
            fail_msg("%s failed: %s", *sql, PQerrorMessage(c));
    pool_putconn(pool, c);
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid);
    char buf[256];
    assert_string_equal(show(c, check, buf, sizeof buf), expected);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 0);
    pool_destroy(pool);
}

static void test_discard_all_resets_set_role(void **state)
{
    const char *dirty[] = {"SET ROLE " ROLE, NULL};
    expect_reset("iso_role", dirty, "SELECT current_user", "postgres");
}

static void test_discard_all_resets_session_authorization(void **state)
{
    const char *dirty[] = {"SET SESSION AUTHORIZATION " ROLE, NULL};
    expect_reset("iso_auth", dirty, "SELECT session_user || '/' || current_user", "postgres/postgres");
}

static void test_discard_all_resets_search_path(void **state)
{
    const char *dirty[] = {"SET search_path TO pg_catalog", NULL};
    expect_reset("iso_path", dirty, "SHOW search_path", "\"$user\", public");
}

static void test_discard_all_drops_temp_tables(void **state)
{
    const char *dirty[] = {"CREATE TEMP TABLE iso_tmp (x int)", "INSERT INTO iso_tmp VALUES (1)", NULL};
    expect_reset("iso_temp", dirty, "SELECT to_regclass('pg_temp.iso_tmp') IS NULL", "t");
}

static void test_discard_all_drops_prepared_statements(void **state)
{
    const char *dirty[] = {"PREPARE iso_stmt AS SELECT 1", NULL};
    expect_reset("iso_prepared", dirty, "SELECT count(*) FROM pg_prepared_statements", "0");
}

static void test_discard_all_forgets_listen_registrations(void **state)
{
    const char *dirty[] = {"LISTEN iso_channel", NULL};
    expect_reset("iso_listen", dirty, "SELECT count(*) FROM pg_listening_channels()", "0");
}

/* Without reset_query: borrows, runs sql, returns; expects the connection was
   closed (a new backend next time) and counted as unusable. */
static void expect_closed_without_reset(const char *app, const char *sql)
{
    pool_t *pool = one_connection(app, NULL);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, sql));
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), pid);
    char buf[128];
    assert_string_equal(show(c, "SELECT session_user || '/' || current_user", buf, sizeof buf),
                        "postgres/postgres");
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_returned_as_another_session_user_is_closed_without_reset_query(void **state)
{
    expect_closed_without_reset("iso_auth_noreset", "SET SESSION AUTHORIZATION " ROLE);
}

static void test_returned_after_set_role_away_from_superuser_is_closed(void **state)
{
    expect_closed_without_reset("iso_role_noreset", "SET ROLE " ROLE);
}

static void test_returned_after_role_restored_is_reused(void **state)
{
    pool_t *pool = one_connection("iso_role_back", NULL);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "SET ROLE " ROLE));
    assert_true(test_exec_ok(c, "RESET ROLE"));
    pool_putconn(pool, c);
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_without_reset_query_other_session_state_stays_by_design(void **state)
{
    /* Documented default: only an open transaction is undone. */
    pool_t *pool = one_connection("iso_default", NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(test_exec_ok(c, "SET search_path TO pg_catalog"));
    assert_true(test_exec_ok(c, "PREPARE iso_kept AS SELECT 1"));
    pool_putconn(pool, c);
    c = pool_getconn(pool);
    char buf[128];
    assert_string_equal(show(c, "SHOW search_path", buf, sizeof buf), "pg_catalog");
    assert_string_equal(show(c, "SELECT count(*) FROM pg_prepared_statements", buf, sizeof buf), "1");
    pool_putconn(pool, c);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discard_all_resets_set_role),
        cmocka_unit_test(test_discard_all_resets_session_authorization),
        cmocka_unit_test(test_discard_all_resets_search_path),
        cmocka_unit_test(test_discard_all_drops_temp_tables),
        cmocka_unit_test(test_discard_all_drops_prepared_statements),
        cmocka_unit_test(test_discard_all_forgets_listen_registrations),
        cmocka_unit_test(test_returned_as_another_session_user_is_closed_without_reset_query),
        cmocka_unit_test(test_returned_after_set_role_away_from_superuser_is_closed),
        cmocka_unit_test(test_returned_after_role_restored_is_reused),
        cmocka_unit_test(test_without_reset_query_other_session_state_stays_by_design),
    };
    return cmocka_run_group_tests(tests, create_role, NULL);
}
