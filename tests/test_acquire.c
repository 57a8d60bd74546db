/* SPDX-License-Identifier: MIT */
/*
 * test_acquire.c - borrowing: reuse, growth to max_size and overflow,
 * timeouts as deadlines, max_waiting, and the wait statistics.
 */
#include "harness.h"

#include <pthread.h>
#include <string.h>

typedef struct borrower {
    pool_t *pool;
    int timeout_ms;
    int hold_ms;        /* when it gets one: how long to keep it */
    PGconn *conn;       /* what it got, if it keeps it */
    bool keep;
    pool_err_t err;
    int64_t elapsed_ms;
} borrower_t;

static void *borrow(void *arg)
{
    borrower_t *b = arg;
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(b->pool, b->timeout_ms);
    b->elapsed_ms = test_now_ms() - t0;
    b->err = c ? POOL_OK : pool_errcode();
    if (c) {
        if (!test_exec_ok(c, "SELECT 1"))
            b->err = POOL_ECONNECT;
        if (b->hold_ms)
            test_sleep_ms(b->hold_ms);
        if (b->keep)
            b->conn = c;
        else
            pool_putconn(b->pool, c);
    }
    return NULL;
}

static void test_getconn_returns_a_usable_connection(void **state)
{
    pool_t *pool = test_pool("acq_usable", 1, 2, 0);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    assert_int_equal(test_query_int(c, "SELECT 7"), 7);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, 1);
    assert_int_equal(st.in_use, 1);
    assert_int_equal(st.total, st.idle + st.in_use);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    pool_destroy(pool);
}

static void test_idle_connections_are_reused_most_recent_first(void **state)
{
    pool_t *pool = test_pool("acq_lifo", 2, 2, 0);
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    pool_putconn(pool, a);
    pool_putconn(pool, b);
    PGconn *c = pool_getconn(pool);
    assert_ptr_equal(c, b); /* the hot one */
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connects, 2);
    pool_destroy(pool);
}

static void test_timeout_is_a_deadline(void **state)
{
    pool_t *pool = test_pool("acq_deadline", 1, 1, 0);
    PGconn *held = pool_getconn(pool);
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(pool, 300);
    int64_t elapsed = test_now_ms() - t0;
    assert_null(c);
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_non_null(strstr(pool_errmsg(), "timed out after 300 ms"));
    assert_in_range(elapsed, 300, 1300);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_timeouts, 1);
    assert_int_equal(st.waiting, 0);
    assert_true(st.wait_us_max >= 300000);
    pool_putconn(pool, held);
    pool_destroy(pool);
}

static void test_timeout_zero_does_not_wait(void **state)
{
    pool_t *pool = test_pool("acq_nowait", 1, 1, 0);
    PGconn *held = pool_getconn_timeout(pool, 0); /* an idle one is there: served */
    assert_non_null(held);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 0));
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_true(test_now_ms() - t0 < 100);
    pool_putconn(pool, held);
    pool_destroy(pool);
}

static void test_a_caller_that_cannot_wait_still_makes_the_pool_grow(void **state)
{
    pool_t *pool = test_pool("acq_nowait_grow", 0, 2, 0);
    assert_null(pool_getconn_timeout(pool, 0)); /* nothing idle, may not wait */
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_true(test_wait_idle(pool, 1, 5000)); /* opened for the next one */
    PGconn *c = pool_getconn_timeout(pool, 0);
    assert_non_null(c);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connects, 1);
    pool_destroy(pool);
}

static void test_negative_timeout_waits_until_one_is_returned(void **state)
{
    pool_t *pool = test_pool("acq_forever", 1, 1, 0);
    PGconn *held = pool_getconn(pool);
    borrower_t b = {.pool = pool, .timeout_ms = -1};
    pthread_t t;
    pthread_create(&t, NULL, borrow, &b);
    assert_true(test_wait_waiting(pool, 1));
    test_sleep_ms(50); /* still waiting, not timed out */
    assert_true(test_wait_waiting(pool, 1));
    pool_putconn(pool, held);
    pthread_join(t, NULL);
    assert_int_equal(b.err, POOL_OK);
    pool_destroy(pool);
}

static void test_getconn_uses_the_pool_default_timeout(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "acq_default_to");
    cfg.max_size = 1;
    cfg.acquire_timeout_ms = 200;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *held = pool_getconn(pool);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn(pool));
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_in_range(test_now_ms() - t0, 200, 1200);
    pool_putconn(pool, held);
    pool_destroy(pool);
}

static void test_pool_grows_to_max_size_then_waits(void **state)
{
    pool_t *pool = test_pool("acq_grow", 0, 3, 0);
    PGconn *c[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(c[i] = pool_getconn(pool));
    assert_null(pool_getconn_timeout(pool, 200));
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_int_equal(test_count_backends("acq_grow"), 3);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.total, 3);
    assert_int_equal(st.connects, 3);
    for (int i = 0; i < 3; i++)
        pool_putconn(pool, c[i]);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.idle, 3); /* max_size are kept */
    pool_destroy(pool);
}

static void test_overflow_opens_beyond_max_and_shrinks_at_once_on_return(void **state)
{
    pool_t *pool = test_pool("acq_overflow", 0, 2, 1);
    PGconn *c[3];
    for (int i = 0; i < 3; i++)
        assert_non_null(c[i] = pool_getconn(pool));
    assert_null(pool_getconn_timeout(pool, 200)); /* max_size + max_overflow reached */
    assert_int_equal(test_count_backends("acq_overflow"), 3);
    pool_putconn(pool, c[0]); /* 3 open > max_size, nobody waiting: closed */
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.total, 2);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.closed, 1);
    assert_int_equal(st.closed_broken, 0);
    assert_true(test_wait_backends("acq_overflow", 2, 5000));
    pool_putconn(pool, c[1]);
    pool_putconn(pool, c[2]);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.idle, 2);
    pool_destroy(pool);
}

static void test_overflow_connection_goes_to_a_waiter_instead_of_closing(void **state)
{
    pool_t *pool = test_pool("acq_overflow_wait", 0, 1, 1);
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    assert_non_null(a);
    assert_non_null(b);
    borrower_t w = {.pool = pool, .timeout_ms = 5000, .keep = true};
    pthread_t t;
    pthread_create(&t, NULL, borrow, &w);
    assert_true(test_wait_waiting(pool, 1));
    pool_putconn(pool, b);
    pthread_join(t, NULL);
    assert_int_equal(w.err, POOL_OK);
    assert_ptr_equal(w.conn, b);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 0);
    assert_int_equal(st.total, 2);
    pool_putconn(pool, a);
    pool_putconn(pool, w.conn);
    pool_destroy(pool);
}

static void test_a_discard_or_broken_return_while_callers_wait_serves_them_anew(void **state)
{
    pool_t *pool = test_pool("acq_discard_wait", 1, 1, 0);
    for (int round = 0; round < 2; round++) {
        PGconn *held = pool_getconn(pool);
        int pid = test_backend_pid(held);
        borrower_t w = {.pool = pool, .timeout_ms = 5000, .keep = true};
        pthread_t t;
        pthread_create(&t, NULL, borrow, &w);
        assert_true(test_wait_waiting(pool, 1));
        if (round == 0) {
            pool_discard(pool, held);
        } else {
            assert_true(PQsendQuery(held, "SELECT 1")); /* returned busy: closed */
            pool_putconn(pool, held);
        }
        pthread_join(t, NULL);
        assert_int_equal(w.err, POOL_OK); /* served by a replacement, not left waiting */
        assert_int_not_equal(test_backend_pid(w.conn), pid);
        pool_putconn(pool, w.conn);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connects, 3);
    assert_int_equal(st.total, 1);
    pool_destroy(pool);
}

static void test_max_waiting_rejects_the_excess_at_once(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "acq_maxwait");
    cfg.max_size = 1;
    cfg.max_waiting = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *held = pool_getconn(pool);
    borrower_t w = {.pool = pool, .timeout_ms = 10000};
    pthread_t t;
    pthread_create(&t, NULL, borrow, &w);
    assert_true(test_wait_waiting(pool, 1));
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 5000));
    assert_int_equal(pool_errcode(), POOL_EBUSY);
    assert_true(test_now_ms() - t0 < 200);
    pool_putconn(pool, held);
    pthread_join(t, NULL);
    assert_int_equal(w.err, POOL_OK);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_errors, 1);
    pool_destroy(pool);
}

static void test_waiter_gets_a_newly_opened_connection(void **state)
{
    pool_t *pool = test_pool("acq_new", 0, 2, 0);
    PGconn *a = pool_getconn(pool);
    PGconn *b = pool_getconn_timeout(pool, 5000); /* nothing idle: a new one is opened for it */
    assert_non_null(a);
    assert_non_null(b);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connects, 2);
    pool_putconn(pool, a);
    pool_putconn(pool, b);
    pool_destroy(pool);
}

static void test_wait_and_hold_time_are_counted(void **state)
{
    pool_t *pool = test_pool("acq_times", 1, 1, 0);
    PGconn *held = pool_getconn(pool);
    borrower_t w = {.pool = pool, .timeout_ms = 5000};
    pthread_t t;
    pthread_create(&t, NULL, borrow, &w);
    assert_true(test_wait_waiting(pool, 1));
    test_sleep_ms(100);
    pool_putconn(pool, held);
    pthread_join(t, NULL);
    assert_int_equal(w.err, POOL_OK);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, 2);
    assert_true(st.wait_us_max >= 100000);
    assert_true(st.wait_us_total >= st.wait_us_max);
    assert_true(st.hold_us_total >= 100000);
    pool_destroy(pool);
}

typedef struct handoff {
    pool_t *pool;
    PGconn *conn;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int step; /* 1: borrowed; 2: told to return; 3: returned */
} handoff_t;

static void *borrow_then_return_when_told(void *arg)
{
    handoff_t *h = arg;
    PGconn *c = pool_getconn(h->pool);
    pthread_mutex_lock(&h->lock);
    h->conn = c;
    h->step = 1;
    pthread_cond_broadcast(&h->cond);
    while (h->step != 2)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    pool_putconn(h->pool, c);
    pthread_mutex_lock(&h->lock);
    h->step = 3;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void handoff_wait(handoff_t *h, int step)
{
    pthread_mutex_lock(&h->lock);
    while (h->step != step)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

/* Affinity: a thread keeps talking to the same backend, as with a dedicated
   connection, even when another thread returned one more recently. */
static void test_a_thread_gets_back_the_connection_it_used_last(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "acq_affinity");
    cfg.min_size = 2;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    PGconn *mine = pool_getconn(pool);
    handoff_t h = {.pool = pool, .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    pthread_t t;
    pthread_create(&t, NULL, borrow_then_return_when_told, &h);
    handoff_wait(&h, 1);
    assert_ptr_not_equal(h.conn, mine);
    assert_int_equal(pool_putconn(pool, mine), POOL_OK);
    pthread_mutex_lock(&h.lock);
    h.step = 2;
    pthread_cond_broadcast(&h.cond);
    pthread_mutex_unlock(&h.lock);
    handoff_wait(&h, 3); /* the other one is now the most recently returned */
    pthread_join(t, NULL);
    PGconn *again = pool_getconn(pool);
    assert_ptr_equal(again, mine);
    pool_putconn(pool, again);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_getconn_returns_a_usable_connection),
        cmocka_unit_test(test_idle_connections_are_reused_most_recent_first),
        cmocka_unit_test(test_timeout_is_a_deadline),
        cmocka_unit_test(test_timeout_zero_does_not_wait),
        cmocka_unit_test(test_a_caller_that_cannot_wait_still_makes_the_pool_grow),
        cmocka_unit_test(test_negative_timeout_waits_until_one_is_returned),
        cmocka_unit_test(test_getconn_uses_the_pool_default_timeout),
        cmocka_unit_test(test_pool_grows_to_max_size_then_waits),
        cmocka_unit_test(test_overflow_opens_beyond_max_and_shrinks_at_once_on_return),
        cmocka_unit_test(test_overflow_connection_goes_to_a_waiter_instead_of_closing),
        cmocka_unit_test(test_a_discard_or_broken_return_while_callers_wait_serves_them_anew),
        cmocka_unit_test(test_max_waiting_rejects_the_excess_at_once),
        cmocka_unit_test(test_waiter_gets_a_newly_opened_connection),
        cmocka_unit_test(test_wait_and_hold_time_are_counted),
        cmocka_unit_test(test_a_thread_gets_back_the_connection_it_used_last),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
