/* SPDX-License-Identifier: MIT */
/*
 * test_hostile.c - a process having a bad day: signals without SA_RESTART
 * at the threads waiting for a connection, extreme integers in every config
 * field and in pool_resize, error buffers too small for the message, and a
 * server whose own timeouts (idle_session_timeout,
 * idle_in_transaction_session_timeout, statement_timeout) kill or cancel
 * pooled sessions.  Each must end in a clear result, never a crash, a hang,
 * an early or late return, or a dead connection handed out.
 */
#include "harness.h"

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- signals ------------------------------------------------------------ */

static atomic_long delivered;

static void on_signal(int sig)
{
    atomic_fetch_add(&delivered, 1);
}

typedef struct waiter {
    pool_t *pool;
    int timeout_ms;
    int64_t waited_ms;
    pool_err_t err;
    pthread_t tid;
    atomic_bool done;
} waiter_t;

static void *wait_for_one(void *arg)
{
    waiter_t *w = arg;
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(w->pool, w->timeout_ms);
    w->waited_ms = test_now_ms() - t0;
    w->err = c ? POOL_OK : pool_errcode();
    if (c)
        pool_putconn(w->pool, c);
    atomic_store(&w->done, true);
    return NULL;
}

typedef struct pelter {
    waiter_t *w;
    int n;
    atomic_bool stop;
} pelter_t;

/* A signal at one waiter after another, every ~200 us. */
static void *pelt(void *arg)
{
    pelter_t *p = arg;
    for (int i = 0; !atomic_load(&p->stop); i++) {
        waiter_t *w = &p->w[i % p->n];
        if (!atomic_load(&w->done))
            pthread_kill(w->tid, SIGUSR1);
        test_sleep_us(200);
    }
    return NULL;
}

#define WAITERS 4

static void test_signals_without_restart_neither_cut_nor_stretch_a_wait(void **state)
{
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    struct sigaction old;
    sigaction(SIGUSR1, &sa, &old);
    pool_config_t cfg;
    test_config(&cfg, "hostile_signals");
    cfg.max_size = 1;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *held = pool_getconn(pool);

    /* Waits that must run their full 300 ms, no less, not much more. */
    waiter_t w[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (waiter_t){.pool = pool, .timeout_ms = 300};
        pthread_create(&w[i].tid, NULL, wait_for_one, &w[i]);
    }
    pelter_t p = {.w = w, .n = WAITERS};
    pthread_t pt;
    pthread_create(&pt, NULL, pelt, &p);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(w[i].tid, NULL);
    atomic_store(&p.stop, true);
    pthread_join(pt, NULL);
    for (int i = 0; i < WAITERS; i++) {
        assert_int_equal(w[i].err, POOL_ETIMEDOUT);
        assert_true(w[i].waited_ms >= 299);
        assert_true(w[i].waited_ms < 2000);
    }

    /* A wake-up amid the signals is not lost: the waiter served by a
       return gets the connection at once. */
    for (int i = 0; i < WAITERS; i++) {
        w[i] = (waiter_t){.pool = pool, .timeout_ms = 10000};
        pthread_create(&w[i].tid, NULL, wait_for_one, &w[i]);
    }
    atomic_store(&p.stop, false);
    pthread_create(&pt, NULL, pelt, &p); /* after the waiters' ids are written */
    assert_true(test_wait_waiting(pool, WAITERS));
    test_sleep_ms(100);
    int64_t t0 = test_now_ms();
    pool_putconn(pool, held);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(w[i].tid, NULL);
    int64_t all_served = test_now_ms() - t0;
    atomic_store(&p.stop, true);
    pthread_join(pt, NULL);
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(w[i].err, POOL_OK);
    print_message("%ld signals delivered; %d waiters served one after another in %lld ms\n",
                  atomic_load(&delivered), WAITERS, (long long)all_served);
    assert_true(atomic_load(&delivered) > 100);
    assert_true(all_served < 5000);
    pool_destroy(pool);
    sigaction(SIGUSR1, &old, NULL);
}

/* ---- extreme integers ------------------------------------------------- */

typedef struct field {
    const char *name;
    size_t offset;
} field_t;

#define FIELD(f) {#f, offsetof(pool_config_t, f)}
static const field_t int_fields[] = {
    FIELD(min_size), FIELD(max_size), FIELD(max_overflow), FIELD(acquire_timeout_ms),
    FIELD(connect_timeout_ms), FIELD(idle_timeout_ms), FIELD(max_lifetime_ms), FIELD(pre_ping),
    FIELD(ping_idle_ms), FIELD(max_waiting), FIELD(leak_timeout_ms), FIELD(return_in_background),
    FIELD(lifetime_jitter_ms), FIELD(fair_share),
};
#undef FIELD

static void test_extreme_integers_in_every_field_are_refused_or_work(void **state)
{
    const int values[] = {INT_MIN, INT_MIN + 1, -1000000, -2, -1, 0, 1, 2, 1000000, INT_MAX - 1, INT_MAX};
    int refused = 0, created = 0;
    for (size_t f = 0; f < sizeof int_fields / sizeof int_fields[0]; f++) {
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            pool_config_t cfg;
            test_config(&cfg, "hostile_ints");
            cfg.min_size = 0;
            *(int *)(void *)((char *)&cfg + int_fields[f].offset) = values[v];
            char err[POOL_ERRMSG_SIZE];
            pool_t *pool = pool_create(&cfg, err, sizeof err);
            if (!pool) {
                refused++;
                if (pool_errcode() != POOL_EINVAL || !strstr(err, int_fields[f].name))
                    fail_msg("%s = %d: %s (%s)", int_fields[f].name, values[v],
                             pool_strerror(pool_errcode()), err);
                continue;
            }
            created++;
            /* It works: a borrow within a bounded time, or a clear failure
               (connect_timeout_ms 1 cannot connect: POOL_ECONNECT). */
            PGconn *c = pool_getconn_timeout(pool, 50);
            if (c)
                pool_putconn(pool, c);
            else if (pool_errcode() != POOL_ETIMEDOUT && pool_errcode() != POOL_EBUSY &&
                     pool_errcode() != POOL_ECONNECT)
                fail_msg("%s = %d: pool_getconn: %s", int_fields[f].name, values[v], pool_errmsg());
            pool_destroy(pool);
        }
    }
    print_message("%d configurations refused naming the field, %d created and used\n", refused,
                  created);
    assert_true(refused > 0 && created > 0);
}

static void test_extreme_sizes_in_pool_resize_leave_the_pool_intact(void **state)
{
    pool_t *pool = test_pool("hostile_resize", 1, 2, 0);
    const int v[] = {INT_MIN, -1, 0, 1, 2, INT_MAX};
    int n = (int)(sizeof v / sizeof v[0]);
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            for (int c = 0; c < n; c++) {
                int rc = pool_resize(pool, v[a], v[b], v[c]);
                bool sane = v[a] >= 0 && v[b] >= 1 && v[c] >= 0 && v[a] <= v[b] &&
                            (long)v[b] + v[c] <= 100000;
                if (rc != POOL_OK) {
                    assert_int_equal(rc, POOL_EINVAL);
                    assert_false(sane);
                }
                pool_resize(pool, 1, 2, 0);
            }
    PGconn *conn = pool_getconn_timeout(pool, 5000);
    assert_non_null(conn);
    assert_int_equal(test_query_int(conn, "SELECT 1"), 1);
    pool_putconn(pool, conn);
    assert_null(pool_getconn_async(pool, INT_MIN, NULL, NULL)); /* no callback */
    pool_destroy(pool);
}

/* ---- tiny buffers ------------------------------------------------------- */

#define GUARD 16

static void assert_fits(const char *buf, size_t len, const char *what)
{
    if (len > 0 && !memchr(buf, '\0', len))
        fail_msg("%s: no NUL within %zu bytes", what, len);
    for (size_t i = len; i < len + GUARD; i++)
        if (buf[i] != '#')
            fail_msg("%s: byte %zu written past a buffer of %zu", what, i, len);
}

static void test_tiny_buffers_get_a_terminated_prefix_and_nothing_past_them(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "hostile_buffers");
    cfg.max_size = -5; /* refused: the message goes into errbuf */
    char buf[64 + GUARD];
    for (size_t len = 0; len < 64; len++) {
        memset(buf, '#', sizeof buf);
        assert_null(pool_create(&cfg, len ? buf : buf, len));
        assert_fits(buf, len, "pool_create errbuf");
    }
    assert_null(pool_create(&cfg, NULL, 100)); /* NULL errbuf: no write at all */

    pool_t *pool = test_pool("hostile_buffers", 1, 2, 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    for (int fmt = 0; fmt < 2; fmt++) {
        int need = pool_stats_format(&st, (pool_format_t)fmt, "p", NULL, 0);
        assert_true(need > 0);
        for (size_t len = 0; len < 64; len++) {
            memset(buf, '#', sizeof buf);
            int n = pool_stats_format(&st, (pool_format_t)fmt, "p", buf, len);
            assert_int_equal(n, need); /* like snprintf: what it needs */
            assert_fits(buf, len, "pool_stats_format");
        }
    }
    pool_host_stats_t hs[2];
    int nh = pool_get_host_stats(pool, hs, 2);
    assert_int_equal(nh, 1);
    for (size_t len = 0; len < 64; len++) {
        memset(buf, '#', sizeof buf);
        int n = pool_host_stats_format(hs, nh, POOL_FORMAT_JSON, "p", buf, len);
        assert_true(n > 0);
        assert_fits(buf, len, "pool_host_stats_format");
    }
    pool_destroy(pool);
}

/* ---- the server's own timeouts ----------------------------------------- */

static pool_t *pool_with_options(const char *app, const char *options)
{
    static char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s options='%s'", test_conninfo(app), options);
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.conninfo = conninfo;
    cfg.max_size = 2;
    return test_pool_create(&cfg);
}

static void test_idle_session_timeout_kills_idle_ones_and_no_dead_one_is_handed_out(void **state)
{
    pool_t *pool = pool_with_options("hostile_idle", "-c idle_session_timeout=200");
    for (int i = 0; i < 5; i++) {
        test_sleep_ms(400); /* the server ends every idle session meanwhile */
        PGconn *c = pool_getconn_timeout(pool, 5000);
        assert_non_null(c);
        assert_int_equal(test_query_int(c, "SELECT 1"), 1);
        pool_putconn(pool, c);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.closed_broken >= 4);
    assert_int_equal(st.acquire_errors + st.acquire_timeouts, 0);
    pool_destroy(pool);
}

static void test_idle_in_transaction_timeout_kills_a_borrowed_one_and_it_is_not_reused(void **state)
{
    pool_t *pool = pool_with_options("hostile_idle_tx", "-c idle_in_transaction_session_timeout=200");
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "BEGIN"));
    test_sleep_ms(500); /* the server ends the session, inside its transaction */
    assert_false(test_exec_ok(c, "SELECT 1"));
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    c = pool_getconn_timeout(pool, 5000);
    assert_non_null(c);
    assert_int_not_equal(test_backend_pid(c), pid);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    pool_destroy(pool);
}

static void test_statement_timeout_cancels_a_query_and_the_session_is_kept(void **state)
{
    pool_t *pool = pool_with_options("hostile_stmt", "-c statement_timeout=100");
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    PGresult *r = PQexec(c, "SELECT pg_sleep(2)");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014"); /* query_canceled */
    PQclear(r);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid); /* the same session, healthy */
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed, 0);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals_without_restart_neither_cut_nor_stretch_a_wait),
        cmocka_unit_test(test_extreme_integers_in_every_field_are_refused_or_work),
        cmocka_unit_test(test_extreme_sizes_in_pool_resize_leave_the_pool_intact),
        cmocka_unit_test(test_tiny_buffers_get_a_terminated_prefix_and_nothing_past_them),
        cmocka_unit_test(test_idle_session_timeout_kills_idle_ones_and_no_dead_one_is_handed_out),
        cmocka_unit_test(test_idle_in_transaction_timeout_kills_a_borrowed_one_and_it_is_not_reused),
        cmocka_unit_test(test_statement_timeout_cancels_a_query_and_the_session_is_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
