/* SPDX-License-Identifier: MIT */
/*
 * test_misuse.c - every function given NULL, a foreign or twice-returned
 * connection, a pointer that is no pool; pool_destroy with waiters and
 * leaks; errors per thread; callbacks that call back into the pool.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void expect_unharmed(pool_t *pool, int idle)
{
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.idle, idle);
    assert_int_equal(st.total, st.idle + st.in_use);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
}

static void test_null_arguments_fail_with_einval(void **state)
{
    pool_t *pool = test_pool("misuse_null", 1, 1, 0);
    pool_stats_t st;
    assert_null(pool_getconn(NULL));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_null(pool_getconn_timeout(NULL, 10));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_putconn(NULL, NULL), POOL_EINVAL);
    assert_int_equal(pool_putconn(pool, NULL), POOL_EINVAL);
    assert_non_null(strstr(pool_errmsg(), "NULL"));
    assert_int_equal(pool_discard(pool, NULL), POOL_EINVAL);
    assert_int_equal(pool_discard(NULL, NULL), POOL_EINVAL);
    assert_int_equal(pool_get_stats(NULL, &st), POOL_EINVAL);
    assert_int_equal(pool_get_stats(pool, NULL), POOL_EINVAL);
    pool_destroy(NULL);
    expect_unharmed(pool, 1);
    pool_destroy(pool);
}

static void test_a_foreign_connection_is_refused(void **state)
{
    pool_t *pool = test_pool("misuse_foreign", 1, 2, 0);
    PGconn *mine = PQconnectdb(test_conninfo("misuse_foreign_own"));
    assert_int_equal(PQstatus(mine), CONNECTION_OK);
    assert_int_equal(pool_putconn(pool, mine), POOL_EINVAL);
    assert_non_null(strstr(pool_errmsg(), "not handed out by this pool"));
    assert_int_equal(pool_discard(pool, mine), POOL_EINVAL);
    assert_int_equal(test_query_int(mine, "SELECT 1"), 1); /* untouched */
    PQfinish(mine);
    expect_unharmed(pool, 1);
    pool_destroy(pool);
}

static void test_a_twice_returned_connection_is_refused(void **state)
{
    pool_t *pool = test_pool("misuse_twice", 1, 2, 0);
    PGconn *c = pool_getconn(pool);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    assert_int_equal(pool_putconn(pool, c), POOL_EINVAL);
    assert_non_null(strstr(pool_errmsg(), "already returned"));
    assert_int_equal(pool_discard(pool, c), POOL_EINVAL);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 0);
    expect_unharmed(pool, 1);
    pool_destroy(pool);
}

static void test_a_connection_returned_to_the_wrong_pool_is_refused(void **state)
{
    pool_t *a = test_pool("misuse_pool_a", 1, 1, 0), *b = test_pool("misuse_pool_b", 1, 1, 0);
    PGconn *c = pool_getconn(a);
    assert_int_equal(pool_putconn(b, c), POOL_EINVAL);
    assert_int_equal(pool_putconn(a, c), POOL_OK);
    expect_unharmed(a, 1);
    expect_unharmed(b, 1);
    pool_destroy(a);
    pool_destroy(b);
}

static void test_a_pointer_that_is_no_pool_is_refused(void **state)
{
    void *junk = calloc(1, 4096);
    assert_null(pool_getconn((pool_t *)junk));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_putconn((pool_t *)junk, (PGconn *)junk), POOL_EINVAL);
    pool_stats_t st;
    assert_int_equal(pool_get_stats((pool_t *)junk, &st), POOL_EINVAL);
    pool_destroy((pool_t *)junk); /* not a live pool: ignored */
    free(junk);
}

typedef struct errcheck {
    pool_err_t seen;
} errcheck_t;

static void *other_thread_error(void *arg)
{
    errcheck_t *e = arg;
    e->seen = pool_errcode();
    return NULL;
}

static void test_errors_are_per_thread(void **state)
{
    assert_int_equal(pool_putconn(NULL, NULL), POOL_EINVAL);
    errcheck_t e = {.seen = POOL_EINVAL};
    pthread_t t;
    pthread_create(&t, NULL, other_thread_error, &e);
    pthread_join(t, NULL);
    assert_int_equal(e.seen, POOL_OK);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
}

typedef struct waiter {
    pool_t *pool;
    pool_err_t err;
} waiter_t;

static void *wait_forever(void *arg)
{
    waiter_t *w = arg;
    PGconn *c = pool_getconn_timeout(w->pool, -1);
    w->err = c ? POOL_OK : pool_errcode();
    return NULL;
}

static void test_destroy_wakes_waiters_with_eclosed_and_reports_leaks(void **state)
{
    test_log_t log = {0};
    pool_config_t cfg;
    test_config(&cfg, "misuse_destroy");
    cfg.max_size = 1;
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *held = pool_getconn(pool);
    assert_non_null(held);
    waiter_t w[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (waiter_t){.pool = pool, .err = POOL_OK};
        pthread_create(&t[i], NULL, wait_forever, &w[i]);
    }
    int64_t deadline = test_now_ms() + 5000;
    pool_stats_t st;
    do {
        pool_get_stats(pool, &st);
        test_sleep_ms(1);
    } while (st.waiting < 3 && test_now_ms() < deadline);
    assert_int_equal(st.waiting, 3);
    pool_destroy(pool); /* returns only after the waiters left */
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].err, POOL_ECLOSED);
    }
    assert_true(test_log_contains(&log, "leak"));
    assert_true(test_wait_backends("misuse_destroy", 0, 5000)); /* closed, held one too */
}

static pool_t *reentrant_pool;
static atomic_int reentrant_calls;

static int on_connect_calls_back(PGconn *conn, void *arg)
{
    pool_stats_t st;
    if (reentrant_pool && pool_get_stats(reentrant_pool, &st) == POOL_OK)
        atomic_fetch_add(&reentrant_calls, 1);
    return test_exec_ok(conn, "SET work_mem = '5MB'") ? 0 : 1;
}

static void log_calls_back(int level, const char *msg, void *arg)
{
    pool_stats_t st;
    if (reentrant_pool && pool_get_stats(reentrant_pool, &st) == POOL_OK)
        atomic_fetch_add(&reentrant_calls, 1);
}

static void test_callbacks_may_call_into_the_pool(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "misuse_reentrant");
    cfg.min_size = 0;
    cfg.max_size = 2;
    cfg.leak_timeout_ms = 50;
    cfg.on_connect = on_connect_calls_back;
    cfg.on_log = log_calls_back;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    reentrant_pool = pool;
    PGconn *c = pool_getconn(pool); /* on_connect runs in a worker, calls back */
    assert_non_null(c);
    PGresult *r = PQexec(c, "SHOW work_mem");
    assert_string_equal(PQgetvalue(r, 0, 0), "5MB");
    PQclear(r);
    int64_t deadline = test_now_ms() + 5000;
    while (atomic_load(&reentrant_calls) < 2 && test_now_ms() < deadline)
        test_sleep_ms(5); /* the leak warning's on_log calls back too */
    assert_true(atomic_load(&reentrant_calls) >= 2);
    pool_putconn(pool, c);
    reentrant_pool = NULL;
    pool_destroy(pool);
}

static int on_connect_counts(PGconn *conn, void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

static void test_on_connect_runs_once_per_new_connection(void **state)
{
    atomic_int calls = 0;
    pool_config_t cfg;
    test_config(&cfg, "misuse_on_connect");
    cfg.min_size = 2;
    cfg.max_size = 3;
    cfg.on_connect = on_connect_counts;
    cfg.arg = &calls;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_int_equal(atomic_load(&calls), 2);
    PGconn *c[3];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++)
            c[i] = pool_getconn(pool);
        for (int i = 0; i < 3; i++)
            pool_putconn(pool, c[i]);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(atomic_load(&calls), 3);
    assert_int_equal(st.connects, 3);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_arguments_fail_with_einval),
        cmocka_unit_test(test_a_foreign_connection_is_refused),
        cmocka_unit_test(test_a_twice_returned_connection_is_refused),
        cmocka_unit_test(test_a_connection_returned_to_the_wrong_pool_is_refused),
        cmocka_unit_test(test_a_pointer_that_is_no_pool_is_refused),
        cmocka_unit_test(test_errors_are_per_thread),
        cmocka_unit_test(test_destroy_wakes_waiters_with_eclosed_and_reports_leaks),
        cmocka_unit_test(test_callbacks_may_call_into_the_pool),
        cmocka_unit_test(test_on_connect_runs_once_per_new_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
