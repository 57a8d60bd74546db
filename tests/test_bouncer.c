/* SPDX-License-Identifier: MIT */
/*
 * test_bouncer.c - pgpool in front of PgBouncer (Debian's 1.18, transaction
 * mode, default_pool_size=2; bouncer_harness.sh): pre-ping leaves a restarted
 * PgBouncer's dead connections behind, a transaction left open is rolled back
 * and a discarded connection closed (either would otherwise hold one of its
 * two server connections), waiters are served first come first served, a
 * PgBouncer that is gone fails callers at once, a PAUSE / repoint / RELOAD /
 * RESUME switchover costs delay and no errors, and a SET in on_connect leaks
 * into other clients' sessions while a PREPARE there vanishes from the
 * borrower's (why the README says never to do either).
 */
#include "harness.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dsn, *admin_dsn, *script;

static bool bouncer(const char *cmd)
{
    char line[1024];
    snprintf(line, sizeof line, "%s %s", script, cmd);
    return system(line) == 0;
}

static bool admin(const char *cmd)
{
    PGconn *c = PQconnectdb(admin_dsn);
    PGresult *r = PQexec(c, cmd);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        print_error("pgbouncer admin %s: %s", cmd, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok;
}

static pool_t *bouncer_pool(int min, int max, int (*on_connect)(PGconn *, void *))
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = dsn;
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.acquire_timeout_ms = 10000;
    cfg.connect_timeout_ms = 2000;
    cfg.ping_idle_ms = 0; /* pre-ping every checkout */
    cfg.on_connect = on_connect;
    pool_t *pool = test_pool_create(&cfg);
    return pool;
}

/* sql done within ms: PgBouncer makes a query wait while its server
   connections are all taken. */
static bool run_within(PGconn *c, const char *sql, int ms)
{
    return test_run_within(c, sql, ms, NULL) == TEST_RUN_OK;
}

/* Both of PgBouncer's server connections can be had: two transactions run
   side by side, each within a second. */
static void both_server_connections_free(pool_t *pool)
{
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(run_within(a, "BEGIN; SELECT 1", 1000));
    assert_true(run_within(b, "BEGIN; SELECT 1", 1000));
    assert_true(run_within(a, "ROLLBACK", 1000));
    assert_true(run_within(b, "ROLLBACK", 1000));
    pool_putconn(pool, a);
    pool_putconn(pool, b);
}

static void test_pre_ping_leaves_a_restarted_bouncer_behind(void **state)
{
    pool_t *pool = bouncer_pool(2, 4, NULL);
    assert_true(test_wait_idle(pool, 2, 5000));
    assert_true(bouncer("restart"));
    for (int i = 0; i < 4; i++) {
        PGconn *c = pool_getconn(pool);
        assert_non_null(c);
        assert_int_equal(test_query_int(c, "SELECT 1"), 1);
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.closed_broken >= 1);
    assert_int_equal(st.closed_broken + st.closed_evicted, 2);
    pool_destroy(pool);
}

static void test_a_transaction_left_open_is_rolled_back(void **state)
{
    pool_t *pool = bouncer_pool(0, 4, NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(run_within(c, "BEGIN; SELECT 1", 1000)); /* holds a server connection */
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    both_server_connections_free(pool);
    pool_destroy(pool);
}

static void test_a_discarded_connection_frees_its_server_connection(void **state)
{
    pool_t *pool = bouncer_pool(0, 4, NULL);
    PGconn *c = pool_getconn(pool);
    assert_true(run_within(c, "BEGIN; SELECT 1", 1000));
    assert_int_equal(pool_discard(pool, c), POOL_OK);
    both_server_connections_free(pool);
    pool_destroy(pool);
}

typedef struct waiter {
    pool_t *pool;
    int id;
    int *order;
    _Atomic int *served;
    pthread_t t;
} waiter_t;

static void *wait_then_record(void *arg)
{
    waiter_t *w = arg;
    PGconn *c = pool_getconn(w->pool);
    assert_non_null(c);
    w->order[atomic_fetch_add(w->served, 1)] = w->id;
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(w->pool, c);
    return NULL;
}

static void test_waiters_are_served_in_arrival_order(void **state)
{
    pool_t *pool = bouncer_pool(1, 1, NULL);
    PGconn *held = pool_getconn(pool);
    int order[4];
    _Atomic int served = 0;
    waiter_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (waiter_t){.pool = pool, .id = i, .order = order, .served = &served};
        pthread_create(&w[i].t, NULL, wait_then_record, &w[i]);
        assert_true(test_wait_waiting(pool, i + 1));
    }
    pool_putconn(pool, held);
    for (int i = 0; i < 4; i++)
        pthread_join(w[i].t, NULL);
    for (int i = 0; i < 4; i++)
        assert_int_equal(order[i], i);
    pool_destroy(pool);
}

static void test_a_bouncer_that_is_gone_fails_callers_at_once(void **state)
{
    pool_t *pool = bouncer_pool(1, 2, NULL);
    assert_true(bouncer("stop"));
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn(pool);
    int64_t elapsed = test_now_ms() - t0;
    assert_null(c);
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_true(elapsed < 3000); /* not the 10 s acquire timeout */
    assert_true(bouncer("start"));
    int64_t deadline = test_now_ms() + 10000;
    while (!(c = pool_getconn_timeout(pool, 2000)) && test_now_ms() < deadline)
        test_sleep_ms(50);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static bool on_database(PGconn *c, void *arg)
{
    PGresult *r = PQexec(c, "SELECT current_database()");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (ok && strcmp(PQgetvalue(r, 0, 0), "template1") == 0)
        atomic_store((_Atomic bool *)arg, true);
    PQclear(r);
    return ok;
}

static void test_a_switchover_costs_delay_not_errors(void **state)
{
    pool_t *pool = bouncer_pool(2, 4, NULL);
    _Atomic bool moved = false;
    test_load_t load = {.pool = pool, .threads = 4, .check = on_database, .arg = &moved};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 20, 10000));
    /* The operator's switchover: hold new transactions, point the database
       elsewhere (here: another database of the same server), reload, go. */
    assert_true(admin("PAUSE postgres"));
    assert_true(bouncer("repoint template1"));
    assert_true(admin("RELOAD"));
    test_sleep_ms(200);
    assert_true(admin("RESUME postgres"));
    int64_t deadline = test_now_ms() + 10000;
    while (!atomic_load(&moved) && test_now_ms() < deadline)
        test_sleep_ms(20);
    long ok_then = atomic_load(&load.ok);
    assert_true(test_load_progress(&load, 20, 10000));
    test_load_stop(&load);
    assert_true(atomic_load(&moved));
    assert_true(atomic_load(&load.ok) > ok_then);
    if (atomic_load(&load.errors) != 0)
        fail_msg("%ld errors across the switchover: %s", atomic_load(&load.errors),
                 load.first_error);
    pool_destroy(pool);
    assert_true(bouncer("repoint postgres"));
    assert_true(admin("RELOAD"));
}

static int set_in_on_connect(PGconn *c, void *arg)
{
    return test_exec_ok(c, "SET statement_timeout = '4321ms'") ? 0 : 1;
}

static void test_a_set_in_on_connect_leaks_to_other_clients(void **state)
{
    pool_t *pool = bouncer_pool(1, 1, set_in_on_connect);
    /* Another client of the same PgBouncer, not through the pool, is handed
       the server connection the SET ran on: the setting leaks to it. */
    PGconn *other = PQconnectdb(dsn);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    bool leaked = false;
    for (int i = 0; i < 20 && !leaked; i++) {
        PGresult *r = PQexec(other, "SHOW statement_timeout");
        leaked = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "4321ms") == 0;
        PQclear(r);
    }
    PQfinish(other);
    assert_true(leaked);
    pool_destroy(pool);
    /* Leave no such server connection behind for the next test. */
    assert_true(bouncer("restart"));
}

static int prepare_in_on_connect(PGconn *c, void *arg)
{
    return test_exec_ok(c, "PREPARE pgpool_p AS SELECT 1") ? 0 : 1;
}

static void test_a_prepare_in_on_connect_vanishes(void **state)
{
    assert_true(bouncer("restart")); /* no server connection yet */
    pool_t *pool = bouncer_pool(1, 1, prepare_in_on_connect);
    /* Another client takes the one server connection the PREPARE ran on (its
       transaction holds it); the borrower's next statement gets a new one. */
    PGconn *other = PQconnectdb(dsn);
    assert_true(run_within(other, "BEGIN; SELECT 1", 2000));
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    PGresult *r = PQexec(c, "EXECUTE pgpool_p");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "26000"); /* no such statement */
    PQclear(r);
    pool_putconn(pool, c);
    PQfinish(other);
    pool_destroy(pool);
    assert_true(bouncer("restart"));
}

int main(void)
{
    dsn = getenv("PGPOOL_BOUNCER_DSN");
    admin_dsn = getenv("PGPOOL_BOUNCER_ADMIN_DSN");
    script = getenv("PGPOOL_BOUNCER_SCRIPT");
    if (!dsn || !admin_dsn || !script) {
        fprintf(stderr, "test_bouncer: PGPOOL_BOUNCER_DSN, _ADMIN_DSN and _SCRIPT not set\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pre_ping_leaves_a_restarted_bouncer_behind),
        cmocka_unit_test(test_a_transaction_left_open_is_rolled_back),
        cmocka_unit_test(test_a_discarded_connection_frees_its_server_connection),
        cmocka_unit_test(test_waiters_are_served_in_arrival_order),
        cmocka_unit_test(test_a_bouncer_that_is_gone_fails_callers_at_once),
        cmocka_unit_test(test_a_switchover_costs_delay_not_errors),
        cmocka_unit_test(test_a_set_in_on_connect_leaks_to_other_clients),
        cmocka_unit_test(test_a_prepare_in_on_connect_vanishes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
