/* SPDX-License-Identifier: MIT */
/*
 * test_control.c - pool_resize, pool_evict, pool_pause and pool_resume on a
 * live pool: each under concurrent load, counting the backends the server
 * really has in pg_stat_activity, and each never interrupting a borrower.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A caller that borrows (with its own timeout) and keeps the connection. */
typedef struct borrower {
    pool_t *pool;
    int timeout_ms;
    PGconn *conn;
    pool_err_t err;
    int64_t served_ms;       /* test_now_ms() when pool_getconn returned */
    pthread_t tid;
} borrower_t;

static void *borrow_main(void *arg)
{
    borrower_t *b = arg;
    b->conn = pool_getconn_timeout(b->pool, b->timeout_ms);
    b->err = b->conn ? POOL_OK : pool_errcode();
    b->served_ms = test_now_ms();
    return NULL;
}

/* Starts borrowers one after the other, each waiting before the next starts,
   so their order in line is known. */
static void start_waiting(borrower_t *b, int n, pool_t *pool, int timeout_ms, int already)
{
    for (int i = 0; i < n; i++) {
        b[i] = (borrower_t){.pool = pool, .timeout_ms = timeout_ms};
        pthread_create(&b[i].tid, NULL, borrow_main, &b[i]);
        assert_true(test_wait_waiting(pool, already + i + 1));
    }
}

static pool_t *make_pool(const char *app, int min, int max, int overflow)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.max_overflow = overflow;
    cfg.acquire_timeout_ms = 10000;
    return test_pool_create(&cfg);
}

/* ---- resize ------------------------------------------------------------- */

static void test_growing_serves_waiters_at_once(void **state)
{
    pool_t *pool = make_pool("ctl_grow", 1, 2, 0);
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    assert_non_null(a);
    assert_non_null(b);
    borrower_t w[3];
    /* Without the resize nothing would serve them before their timeout. */
    start_waiting(w, 3, pool, 3000, 0);
    int64_t t0 = test_now_ms();
    assert_int_equal(pool_resize(pool, 1, 5, 0), POOL_OK);
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].tid, NULL);
        if (!w[i].conn)
            fail_msg("waiter %d not served: %s", i, pool_strerror(w[i].err));
        assert_true(w[i].served_ms - t0 < 2500);
    }
    assert_int_equal(test_count_backends("ctl_grow"), 5);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.max_size, 5);
    assert_int_equal(st.min_size, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(pool_putconn(pool, w[i].conn), POOL_OK);
    pool_putconn(pool, a);
    pool_putconn(pool, b);
    pool_destroy(pool);
}

static void test_a_higher_min_size_is_filled_in_the_background(void **state)
{
    pool_t *pool = make_pool("ctl_min", 1, 4, 0);
    assert_int_equal(test_count_backends("ctl_min"), 1);
    assert_int_equal(pool_resize(pool, 3, 4, 0), POOL_OK);
    assert_true(test_wait_backends("ctl_min", 3, 5000));
    assert_true(test_wait_idle(pool, 3, 5000));
    pool_destroy(pool);
}

static void test_shrinking_closes_idle_at_once_and_busy_ones_on_return(void **state)
{
    pool_t *pool = make_pool("ctl_shrink", 6, 6, 0);
    PGconn *held[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(held[i] = pool_getconn(pool));
    assert_int_equal(pool_resize(pool, 0, 2, 0), POOL_OK);
    /* The two idle ones are gone before pool_resize returns; the borrowed
       ones were not interrupted. */
    assert_int_equal(test_count_backends("ctl_shrink"), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(test_query_int(held[i], "SELECT 7"), 7);

    /* Someone waits, but while more than 2 are open a return is closed, not
       handed over: the waiter gets the third. */
    borrower_t w;
    start_waiting(&w, 1, pool, 10000, 0);
    assert_int_equal(pool_putconn(pool, held[0]), POOL_OK);
    assert_int_equal(test_count_backends("ctl_shrink"), 3);
    assert_int_equal(pool_putconn(pool, held[1]), POOL_OK);
    assert_int_equal(test_count_backends("ctl_shrink"), 2);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 1);
    int pid = test_backend_pid(held[2]);
    assert_int_equal(pool_putconn(pool, held[2]), POOL_OK);
    pthread_join(w.tid, NULL);
    assert_non_null(w.conn);
    assert_int_equal(test_backend_pid(w.conn), pid);
    assert_int_equal(test_count_backends("ctl_shrink"), 2);
    pool_putconn(pool, w.conn);
    pool_putconn(pool, held[3]);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 4);
    assert_int_equal(st.closed_evicted, 0); /* shrinking is no eviction */
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.total, 2);
    pool_destroy(pool);
}

static void test_resize_under_load_settles_at_each_new_size(void **state)
{
    pool_t *pool = make_pool("ctl_load", 2, 8, 0);
    test_load_t load = {.pool = pool, .threads = 8};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 200, 10000));
    assert_int_equal(pool_resize(pool, 1, 2, 1), POOL_OK);
    assert_true(test_load_progress(&load, 200, 10000));
    /* Every return above 3 open was closed: the server holds at most 3. */
    assert_true(test_wait_backends("ctl_load", 3, 5000) ||
                test_count_backends("ctl_load") <= 3);
    assert_true(test_count_backends("ctl_load") <= 3);
    assert_int_equal(pool_resize(pool, 4, 6, 0), POOL_OK);
    assert_true(test_load_progress(&load, 200, 10000));
    assert_true(test_count_backends("ctl_load") <= 6);
    assert_true(test_count_backends("ctl_load") >= 4);
    test_load_stop(&load);
    if (atomic_load(&load.errors) != 0)
        fail_msg("%ld errors under resize: %s", atomic_load(&load.errors), load.first_error);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.total <= 6);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}

static void test_resize_refuses_bad_sizes_and_leaves_the_pool_unchanged(void **state)
{
    pool_t *pool = make_pool("ctl_badsize", 1, 3, 1);
    const struct { int min, max, overflow; const char *field; } bad[] = {
        {4, 3, 0, "min_size"}, {0, 0, 0, "max_size"}, {-1, 3, 0, "min_size"},
        {1, 3, -1, "max_overflow"}, {1, 2000000000, 2000000000, "max_overflow"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pool_resize(pool, bad[i].min, bad[i].max, bad[i].overflow), POOL_EINVAL);
        assert_int_equal(pool_errcode(), POOL_EINVAL);
        if (!strstr(pool_errmsg(), bad[i].field))
            fail_msg("\"%s\" does not name %s", pool_errmsg(), bad[i].field);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.min_size, 1);
    assert_int_equal(st.max_size, 3);
    assert_int_equal(st.max_overflow, 1);
    assert_int_equal(pool_resize(NULL, 1, 2, 0), POOL_EINVAL);
    assert_int_equal(pool_evict(NULL), POOL_EINVAL);
    assert_int_equal(pool_pause(NULL), POOL_EINVAL);
    assert_int_equal(pool_resume(NULL), POOL_EINVAL);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_growing_far_beyond_the_created_size_keeps_returns_working(void **state)
{
    pool_t *pool = make_pool("ctl_far", 0, 1, 0);
    assert_int_equal(pool_resize(pool, 0, 40, 0), POOL_OK);
    PGconn *held[40];
    for (int i = 0; i < 40; i++)
        assert_non_null(held[i] = pool_getconn(pool));
    assert_int_equal(test_count_backends("ctl_far"), 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(pool_putconn(pool, held[i]), POOL_OK);
    for (int i = 0; i < 40; i++)
        assert_int_equal(pool_putconn(pool, held[i]), POOL_EINVAL); /* each found, once */
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.idle, 40);
    pool_destroy(pool);
}

/* ---- evict -------------------------------------------------------------- */

static bool backend_alive(int pid)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
    return test_admin_int(sql) == 1;
}

static void test_evict_closes_idle_now_busy_on_return_and_refills(void **state)
{
    pool_t *pool = make_pool("ctl_evict", 3, 4, 0);
    PGconn *busy = pool_getconn(pool), *i1 = pool_getconn(pool), *i2 = pool_getconn(pool);
    PGconn *busy2 = pool_getconn(pool);
    int old[3] = {test_backend_pid(busy), test_backend_pid(i1), test_backend_pid(i2)};
    int old2 = test_backend_pid(busy2);
    pool_putconn(pool, i1);
    pool_putconn(pool, i2);
    borrower_t w;
    assert_int_equal(pool_evict(pool), POOL_OK);
    assert_false(backend_alive(old[1]));
    assert_false(backend_alive(old[2]));
    assert_int_equal(test_query_int(busy, "SELECT 5"), 5); /* not interrupted */
    /* Returned with nobody waiting: closed there and then, not kept idle. */
    assert_int_equal(pool_putconn(pool, busy2), POOL_OK);
    assert_false(backend_alive(old2));

    /* Hold every new connection, so a waiter is in line when busy comes
       back: it must get a new connection, never the evicted one. */
    PGconn *fresh[3];
    for (int i = 0; i < 3; i++) {
        assert_non_null(fresh[i] = pool_getconn(pool));
        for (int j = 0; j < 3; j++)
            assert_int_not_equal(test_backend_pid(fresh[i]), old[j]);
    }
    start_waiting(&w, 1, pool, 10000, 0);
    assert_int_equal(pool_putconn(pool, busy), POOL_OK);
    assert_false(backend_alive(old[0]));
    pthread_join(w.tid, NULL);
    assert_non_null(w.conn);
    assert_int_not_equal(test_backend_pid(w.conn), old[0]);
    pool_putconn(pool, w.conn);
    for (int i = 0; i < 3; i++)
        pool_putconn(pool, fresh[i]);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 4);
    assert_int_equal(st.closed_evicted, 4); /* two idle at the call, two in use */
    assert_int_equal(st.closed_broken, 0);
    assert_true(test_wait_idle(pool, 4, 5000));
    pool_destroy(pool);
}

/* Server-side microseconds since the epoch when this connection's backend
   started. */
static int64_t backend_start_us(PGconn *conn)
{
    PGresult *r = PQexec(conn, "SELECT (extract(epoch FROM backend_start) * 1000000)::bigint "
                               "FROM pg_stat_activity WHERE pid = pg_backend_pid()");
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

static int64_t server_now_us(void)
{
    PGconn *c = PQconnectdb(test_conninfo("ctl_clock"));
    PGresult *r = PQexec(c, "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint");
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

typedef struct evict_watch {
    _Atomic bool evicted;      /* pool_evict has returned */
    _Atomic int64_t before_us; /* server time just before pool_evict was called */
    _Atomic long stale;        /* old connections handed out after the evict */
    _Atomic long checked;      /* checkouts that began after the evict */
} evict_watch_t;

/* Whether this load thread's next pool_getconn begins after the evict:
   sampled before it is called, so a hand-out that raced the evict is not
   mistaken for one after it. */
static _Thread_local bool next_after_evict;

static bool no_stale_connection(PGconn *conn, void *arg)
{
    evict_watch_t *w = arg;
    int64_t started = backend_start_us(conn);
    if (started < 0)
        return false;
    if (next_after_evict) {
        atomic_fetch_add(&w->checked, 1);
        if (started < atomic_load(&w->before_us))
            atomic_fetch_add(&w->stale, 1);
    }
    next_after_evict = atomic_load(&w->evicted);
    return true;
}

static void test_evict_under_load_never_hands_out_an_old_connection(void **state)
{
    pool_t *pool = make_pool("ctl_evload", 4, 4, 0);
    evict_watch_t watch = {0};
    test_load_t load = {.pool = pool, .threads = 8, .check = no_stale_connection, .arg = &watch};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 100, 10000));
    int64_t before = server_now_us();
    assert_true(before > 0);
    atomic_store(&watch.before_us, before);
    assert_int_equal(pool_evict(pool), POOL_OK);
    atomic_store(&watch.evicted, true);
    assert_true(test_load_progress(&load, 300, 10000));
    test_load_stop(&load);
    if (atomic_load(&load.errors) != 0)
        fail_msg("%ld errors under evict: %s", atomic_load(&load.errors), load.first_error);
    assert_true(atomic_load(&watch.checked) > 0);
    assert_int_equal(atomic_load(&watch.stale), 0);

    /* Everything is back: no backend from before the evict is left. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ctl_evload' "
             "AND backend_start < to_timestamp(%lld / 1000000.0)", (long long)before);
    assert_int_equal(test_admin_int(sql), 0);
    assert_true(test_count_backends("ctl_evload") <= 4);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.closed >= 4);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}

typedef struct evict_in_hook {
    pool_t *pool;
    _Atomic int armed;
    _Atomic int evicted_pid;
} evict_in_hook_t;

/* on_checkout runs after validation: evicting from there is an evict that
   lands while the connection is on its way out. */
static int evict_on_checkout(PGconn *conn, void *arg)
{
    evict_in_hook_t *e = arg;
    if (atomic_exchange(&e->armed, 0)) {
        atomic_store(&e->evicted_pid, PQbackendPID(conn));
        pool_evict(e->pool);
    }
    return 0;
}

static void test_a_connection_on_its_way_out_during_an_evict_is_not_handed_out(void **state)
{
    evict_in_hook_t e = {0};
    pool_config_t cfg;
    test_config(&cfg, "ctl_evhook");
    cfg.min_size = 1;
    cfg.max_size = 2;
    cfg.on_checkout = evict_on_checkout;
    cfg.arg = &e;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    e.pool = pool;
    atomic_store(&e.armed, 1);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    int old = atomic_load(&e.evicted_pid);
    assert_true(old > 0);
    assert_int_not_equal(test_backend_pid(c), old);
    assert_false(backend_alive(old));
    pool_putconn(pool, c);
    pool_destroy(pool);
}

/* ---- pause and resume --------------------------------------------------- */

static void test_pause_holds_callers_in_line_and_resume_serves_them_in_order(void **state)
{
    pool_t *pool = make_pool("ctl_pause", 2, 4, 0);
    PGconn *a = pool_getconn(pool), *b = pool_getconn(pool);
    int idle_pids[2] = {test_backend_pid(a), test_backend_pid(b)};
    pool_putconn(pool, a);
    pool_putconn(pool, b);
    assert_int_equal(pool_pause(pool), POOL_OK);
    assert_int_equal(pool_pause(pool), POOL_OK); /* idempotent */
    borrower_t w[3];
    start_waiting(w, 3, pool, 10000, 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 3);
    assert_int_equal(st.idle, 2);       /* there, but not handed out */
    assert_int_equal(st.connecting, 0); /* and no more opened for the waiters */
    assert_int_equal(test_count_backends("ctl_pause"), 2);

    /* A caller that cannot wait fails at once, saying why. */
    assert_null(pool_getconn_timeout(pool, 0));
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_non_null(strstr(pool_errmsg(), "paused"));

    assert_int_equal(pool_resume(pool), POOL_OK);
    pthread_join(w[0].tid, NULL);
    pthread_join(w[1].tid, NULL);
    assert_non_null(w[0].conn);
    assert_non_null(w[1].conn);
    /* The first two in line got the idle ones; the third a new one. */
    pthread_join(w[2].tid, NULL);
    assert_non_null(w[2].conn);
    int p0 = test_backend_pid(w[0].conn), p1 = test_backend_pid(w[1].conn);
    assert_true((p0 == idle_pids[0] && p1 == idle_pids[1]) ||
                (p0 == idle_pids[1] && p1 == idle_pids[0]));
    assert_int_not_equal(test_backend_pid(w[2].conn), idle_pids[0]);
    assert_int_not_equal(test_backend_pid(w[2].conn), idle_pids[1]);
    assert_int_equal(pool_resume(pool), POOL_OK); /* idempotent */
    for (int i = 0; i < 3; i++)
        assert_int_equal(pool_putconn(pool, w[i].conn), POOL_OK);
    pool_destroy(pool);
}

static void test_waiters_keep_their_order_through_a_pause(void **state)
{
    pool_t *pool = make_pool("ctl_order", 1, 1, 0);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    borrower_t w[3];
    start_waiting(w, 2, pool, 10000, 0);
    assert_int_equal(pool_pause(pool), POOL_OK);
    start_waiting(&w[2], 1, pool, 10000, 2);
    /* Returned while paused: kept idle, nobody served. */
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.waiting, 3);
    assert_int_equal(pool_resume(pool), POOL_OK);
    /* One connection goes round the line in arrival order. */
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].tid, NULL);
        assert_non_null(w[i].conn);
        if (i > 0)
            assert_true(w[i].served_ms >= w[i - 1].served_ms);
        assert_int_equal(pool_putconn(pool, w[i].conn), POOL_OK);
    }
    pool_destroy(pool);
}

static void test_pause_under_load_stops_checkouts_and_resume_restarts_them(void **state)
{
    pool_t *pool = make_pool("ctl_pload", 2, 4, 0);
    test_load_t load = {.pool = pool, .threads = 8};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 100, 10000));
    assert_int_equal(pool_pause(pool), POOL_OK);
    /* Borrowers finish and return; then every load thread waits in line. */
    assert_true(test_wait_waiting(pool, 8));
    pool_stats_t st, st2;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    assert_true(st.total <= 4);
    assert_true(test_count_backends("ctl_pload") <= 4);
    assert_true(test_wait_waiting(pool, 8)); /* still all waiting */
    assert_pool_stats(pool, &st2);
    assert_int_equal(st2.acquired, st.acquired);
    assert_int_equal(pool_resume(pool), POOL_OK);
    assert_true(test_load_progress(&load, 200, 10000));
    test_load_stop(&load);
    if (atomic_load(&load.errors) != 0)
        fail_msg("%ld errors around the pause: %s", atomic_load(&load.errors), load.first_error);
    pool_destroy(pool);
}

static void test_destroy_while_paused_fails_the_waiters(void **state)
{
    pool_t *pool = make_pool("ctl_pdestroy", 1, 2, 0);
    assert_int_equal(pool_pause(pool), POOL_OK);
    borrower_t w;
    start_waiting(&w, 1, pool, -1, 0);
    pool_destroy(pool);
    pthread_join(w.tid, NULL);
    assert_null(w.conn);
    assert_int_equal(w.err, POOL_ECLOSED);
    assert_true(test_wait_backends("ctl_pdestroy", 0, 5000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_growing_serves_waiters_at_once),
        cmocka_unit_test(test_a_higher_min_size_is_filled_in_the_background),
        cmocka_unit_test(test_shrinking_closes_idle_at_once_and_busy_ones_on_return),
        cmocka_unit_test(test_resize_under_load_settles_at_each_new_size),
        cmocka_unit_test(test_resize_refuses_bad_sizes_and_leaves_the_pool_unchanged),
        cmocka_unit_test(test_growing_far_beyond_the_created_size_keeps_returns_working),
        cmocka_unit_test(test_evict_closes_idle_now_busy_on_return_and_refills),
        cmocka_unit_test(test_evict_under_load_never_hands_out_an_old_connection),
        cmocka_unit_test(test_a_connection_on_its_way_out_during_an_evict_is_not_handed_out),
        cmocka_unit_test(test_pause_holds_callers_in_line_and_resume_serves_them_in_order),
        cmocka_unit_test(test_waiters_keep_their_order_through_a_pause),
        cmocka_unit_test(test_pause_under_load_stops_checkouts_and_resume_restarts_them),
        cmocka_unit_test(test_destroy_while_paused_fails_the_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
