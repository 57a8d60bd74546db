/* SPDX-License-Identifier: MIT */
/*
 * test_hooks.c - on_checkout and on_checkin: where they run (after
 * validation; before rollback and reset), that a rejecting hook's connection
 * is never handed out or reused, how their closes count, and that they run
 * without a pool lock held (they call the pool themselves).
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hook_log {
    pool_t *pool;           /* set after pool_create, for hooks that call the pool */
    _Atomic int calls;
    _Atomic int bad_status; /* checkouts that saw a connection not ready for use */
    _Atomic int reject_pid; /* reject this backend (0: none, -1: every one) */
    _Atomic int rejected;
    _Atomic int stats_ok;   /* pool_get_stats calls from inside the hook that worked */
    pthread_mutex_t lock;   /* guards the two below: the load test returns from 8 threads */
    PGTransactionStatusType txn_seen;
    char search_path_seen[128];
} hook_log_t;

static int checkout_hook(PGconn *conn, void *arg)
{
    hook_log_t *h = arg;
    atomic_fetch_add(&h->calls, 1);
    /* Validation ran first: the connection is usable right now. */
    if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE ||
        test_query_int(conn, "SELECT 1") != 1)
        atomic_fetch_add(&h->bad_status, 1);
    pool_stats_t st;
    if (h->pool && pool_get_stats(h->pool, &st) == POOL_OK) /* no lock held: no deadlock */
        atomic_fetch_add(&h->stats_ok, 1);
    int reject = atomic_load(&h->reject_pid);
    if (reject == -1 || reject == PQbackendPID(conn)) {
        atomic_fetch_add(&h->rejected, 1);
        return 1;
    }
    return 0;
}

static int checkin_hook(PGconn *conn, void *arg)
{
    hook_log_t *h = arg;
    atomic_fetch_add(&h->calls, 1);
    /* Runs before the rollback and the reset: it sees the borrower's state. */
    PGTransactionStatusType txn = PQtransactionStatus(conn);
    PGresult *r = PQexec(conn, "SELECT current_setting('search_path')");
    pthread_mutex_lock(&h->lock);
    h->txn_seen = txn;
    snprintf(h->search_path_seen, sizeof h->search_path_seen, "%s",
             PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "(failed)");
    pthread_mutex_unlock(&h->lock);
    PQclear(r);
    pool_stats_t st;
    if (h->pool && pool_get_stats(h->pool, &st) == POOL_OK)
        atomic_fetch_add(&h->stats_ok, 1);
    int reject = atomic_load(&h->reject_pid);
    if (reject == -1 || reject == PQbackendPID(conn)) {
        atomic_fetch_add(&h->rejected, 1);
        return 1;
    }
    return 0;
}

static pool_t *make_pool(const char *app, hook_log_t *h, bool checkout, bool checkin, int min,
                         int max)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.on_checkout = checkout ? checkout_hook : NULL;
    cfg.on_checkin = checkin ? checkin_hook : NULL;
    cfg.arg = h;
    cfg.reset_query = "RESET search_path";
    return h->pool = test_pool_create(&cfg);
}

static void test_on_checkout_runs_after_validation_and_may_call_the_pool(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_out_valid", &h, true, false, 2, 2);
    /* Both idle backends die: validation must close them before the hook
       ever sees them. */
    assert_int_equal(test_terminate_backends("hk_out_valid"), 2);
    assert_true(test_wait_backends("hk_out_valid", 0, 5000));
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_equal(atomic_load(&h.calls), 1);
    assert_int_equal(atomic_load(&h.bad_status), 0);
    assert_int_equal(atomic_load(&h.stats_ok), 1);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.closed_broken >= 1);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_destroy(pool);
}

static void test_a_rejecting_on_checkout_closes_that_one_and_serves_another(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_out_reject", &h, true, false, 2, 2);
    PGconn *a = pool_getconn(pool);
    int bad = test_backend_pid(a);
    pool_putconn(pool, a); /* on top of the idle list: next in line */
    atomic_store(&h.reject_pid, bad);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), bad);
    assert_int_equal(atomic_load(&h.rejected), 1);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", bad);
    assert_int_equal(test_admin_int(sql), 0); /* closed, never handed out */
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 1);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.acquired, 2);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_an_always_rejecting_on_checkout_fails_within_the_deadline(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_out_never", &h, true, false, 1, 2);
    atomic_store(&h.reject_pid, -1);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 300));
    int64_t took = test_now_ms() - t0;
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_true(took >= 290 && took < 3000);
    assert_true(atomic_load(&h.rejected) >= 1);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, 0);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}

static void test_on_checkin_runs_before_rollback_and_reset(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_in_order", &h, false, true, 1, 1);
    PGconn *c = pool_getconn(pool);
    assert_true(test_exec_ok(c, "SET search_path TO borrower"));
    assert_true(test_exec_ok(c, "BEGIN"));
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    assert_int_equal(atomic_load(&h.calls), 1);
    assert_int_equal(h.txn_seen, PQTRANS_INTRANS);      /* not yet rolled back */
    assert_string_equal(h.search_path_seen, "borrower"); /* not yet reset */
    assert_int_equal(atomic_load(&h.stats_ok), 1);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    c = pool_getconn(pool); /* the same connection, rolled back and reset */
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    PGresult *r = PQexec(c, "SHOW search_path");
    assert_string_equal(PQgetvalue(r, 0, 0), "\"$user\", public");
    PQclear(r);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

typedef struct waiter {
    pool_t *pool;
    PGconn *conn;
    pthread_t tid;
} waiter_t;

static void *wait_main(void *arg)
{
    waiter_t *w = arg;
    w->conn = pool_getconn_timeout(w->pool, 10000);
    return NULL;
}

static void test_a_rejecting_on_checkin_closes_it_even_with_someone_waiting(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_in_reject", &h, false, true, 1, 1);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    waiter_t w = {.pool = pool};
    pthread_create(&w.tid, NULL, wait_main, &w);
    assert_true(test_wait_waiting(pool, 1));
    atomic_store(&h.reject_pid, pid);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pthread_join(w.tid, NULL);
    assert_non_null(w.conn);
    assert_int_not_equal(test_backend_pid(w.conn), pid); /* a new one, not the rejected */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    assert_int_equal(test_admin_int(sql), 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 1);
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.rollbacks, 0);
    pool_putconn(pool, w.conn);
    pool_destroy(pool);
}

static void test_on_checkin_does_not_run_for_discard(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_in_discard", &h, false, true, 1, 2);
    PGconn *c = pool_getconn(pool);
    assert_int_equal(pool_discard(pool, c), POOL_OK);
    assert_int_equal(atomic_load(&h.calls), 0);
    c = pool_getconn(pool);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    assert_int_equal(atomic_load(&h.calls), 1);
    /* A second return of the same connection is refused without a hook call. */
    assert_int_equal(pool_putconn(pool, c), POOL_EINVAL);
    assert_int_equal(atomic_load(&h.calls), 1);
    pool_destroy(pool);
}

static void test_hooks_under_load_run_once_per_checkout_and_return(void **state)
{
    hook_log_t h = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pool_t *pool = make_pool("hk_load", &h, true, true, 2, 4);
    test_load_t load = {.pool = pool, .threads = 8};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 300, 20000));
    test_load_stop(&load);
    assert_int_equal(atomic_load(&load.errors), 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* Each checkout ran on_checkout once, each return on_checkin once. */
    assert_int_equal(atomic_load(&h.calls), (int)(2 * st.acquired));
    assert_int_equal(atomic_load(&h.bad_status), 0);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_on_checkout_runs_after_validation_and_may_call_the_pool),
        cmocka_unit_test(test_a_rejecting_on_checkout_closes_that_one_and_serves_another),
        cmocka_unit_test(test_an_always_rejecting_on_checkout_fails_within_the_deadline),
        cmocka_unit_test(test_on_checkin_runs_before_rollback_and_reset),
        cmocka_unit_test(test_a_rejecting_on_checkin_closes_it_even_with_someone_waiting),
        cmocka_unit_test(test_on_checkin_does_not_run_for_discard),
        cmocka_unit_test(test_hooks_under_load_run_once_per_checkout_and_return),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
