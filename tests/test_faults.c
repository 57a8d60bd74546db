/* SPDX-License-Identifier: MIT */
/*
 * test_faults.c - the database refusing, stopping, restarting and killing
 * backends: fail fast with libpq's reason, back off instead of storming,
 * recover by itself, and never hand out a dead connection.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define REFUSING "host=/nonexistent/pgpool/socket port=1 dbname=postgres application_name=faults"

static pool_t *refusing_pool(int max_size)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = REFUSING;
    cfg.min_size = 0;
    cfg.max_size = max_size;
    cfg.acquire_timeout_ms = 10000;
    return test_pool_create(&cfg);
}

static void test_a_refusing_database_fails_callers_at_once_with_libpq_reason(void **state)
{
    pool_t *pool = refusing_pool(4);
    for (int i = 0; i < 3; i++) {
        int64_t t0 = test_now_ms();
        assert_null(pool_getconn(pool)); /* acquire_timeout_ms is 10 s */
        assert_true(test_now_ms() - t0 < 2000);
        assert_int_equal(pool_errcode(), POOL_ECONNECT);
        assert_non_null(strstr(pool_errmsg(), "could not open connection"));
        assert_non_null(strstr(pool_errmsg(), "/nonexistent/pgpool/socket"));
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_errors, 3);
    assert_true(st.connect_errors >= 1);
    assert_int_equal(st.total, 0);
    pool_destroy(pool);
}

typedef struct hammer {
    pool_t *pool;
    atomic_bool *stop;
    int calls, late;
} hammer_t;

static void *hammer_refusing(void *arg)
{
    hammer_t *h = arg;
    while (!atomic_load(h->stop)) {
        int64_t t0 = test_now_ms();
        PGconn *c = pool_getconn_timeout(h->pool, 100);
        if (test_now_ms() - t0 > 100 + 500)
            h->late++;
        if (c)
            pool_putconn(h->pool, c);
        h->calls++;
    }
    return NULL;
}

static void test_retries_back_off_instead_of_storming_the_database(void **state)
{
    pool_t *pool = refusing_pool(8);
    atomic_bool stop = false;
    hammer_t h[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        h[i] = (hammer_t){.pool = pool, .stop = &stop};
        pthread_create(&t[i], NULL, hammer_refusing, &h[i]);
    }
    test_sleep_ms(1500);
    atomic_store(&stop, true);
    int calls = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        calls += h[i].calls;
        assert_int_equal(h[i].late, 0);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* Backoff 10 ms doubling to 1 s: about ten attempts in 1.5 s, however
       many calls (thousands) arrive. */
    assert_true(st.connect_errors >= 3);
    assert_true(st.connect_errors <= 20);
    assert_true(calls > 100);
    pool_destroy(pool);
}

/* Teardown for tests that stop or pause the server: whatever failed, the
   next test finds it running. */
static int server_back_up(void **state)
{
    if (test_server_controllable()) {
        test_server("resume");
        test_server("restart 2>/dev/null"); /* fails harmlessly when it runs */
    }
    return 0;
}

static void test_timeout_message_names_the_last_connection_error(void **state)
{
    if (!test_server_controllable())
        skip();
    pool_config_t cfg;
    test_config(&cfg, "faults_msg");
    cfg.max_size = 2;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *held = pool_getconn(pool); /* checked out: could come back, so no fail-fast */
    assert_true(test_server("stop"));
    assert_null(pool_getconn_timeout(pool, 700));
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_non_null(strstr(pool_errmsg(), "last connection error"));
    assert_non_null(strstr(pool_errmsg(), "could not open connection"));
    assert_true(test_server("restart"));
    pool_putconn(pool, held); /* dead: closed, not reused */
    PGconn *c = pool_getconn_timeout(pool, 5000);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

typedef struct loader {
    pool_t *pool;
    atomic_bool *stop;
    atomic_int *ok_queries;
    int handed_out_dead;
    int errors;
} loader_t;

static void *load(void *arg)
{
    loader_t *l = arg;
    while (!atomic_load(l->stop)) {
        PGconn *c = pool_getconn_timeout(l->pool, 2000);
        if (!c) {
            l->errors++;
            test_sleep_ms(5);
            continue;
        }
        if (test_query_int(c, "SELECT 1") == 1)
            atomic_fetch_add(l->ok_queries, 1);
        else
            l->handed_out_dead++;
        pool_putconn(l->pool, c);
    }
    return NULL;
}

static void test_server_stopped_while_idle_then_restarted_under_load(void **state)
{
    if (!test_server_controllable())
        skip();
    pool_config_t cfg;
    test_config(&cfg, "faults_restart");
    cfg.min_size = 2;
    cfg.max_size = 4;
    cfg.acquire_timeout_ms = 10000;
    cfg.ping_idle_ms = 3600000; /* only the zero-round-trip check */
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_true(test_server("stop"));

    /* Idle connections are dead and nothing is checked out: fail fast. */
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn(pool));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_true(test_now_ms() - t0 < 3000);

    atomic_bool stop = false;
    atomic_int ok = 0;
    loader_t l[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        l[i] = (loader_t){.pool = pool, .stop = &stop, .ok_queries = &ok};
        pthread_create(&t[i], NULL, load, &l[i]);
    }
    test_sleep_ms(300); /* callers meet the stopped server for a while */
    assert_true(test_server("restart"));
    int64_t back = test_now_ms();
    while (atomic_load(&ok) == 0 && test_now_ms() - back < 10000)
        test_sleep_ms(5);
    int64_t recovered_ms = test_now_ms() - back;
    while (atomic_load(&ok) < 200 && test_now_ms() - back < 20000)
        test_sleep_ms(5);
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(l[i].handed_out_dead, 0);
    }
    assert_true(atomic_load(&ok) >= 200);
    assert_true(recovered_ms < 2500); /* backoff is capped near 1 s */
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    /* The first found dead evicts the server's other one (the second may
       be found dead first by another caller: then it is broken too). */
    assert_true(st.closed_broken >= 1);
    assert_true(st.evictions >= 1);
    assert_int_equal(st.closed_broken + st.closed_evicted, 2);
    assert_true(st.total <= 4);
    assert_int_equal(st.total, st.idle + st.in_use);
    pool_destroy(pool);
}

static void *load_and_discard_failures(void *arg)
{
    loader_t *l = arg;
    while (!atomic_load(l->stop)) {
        PGconn *c = pool_getconn_timeout(l->pool, 5000);
        if (!c) {
            l->errors++;
            continue;
        }
        if (test_query_int(c, "SELECT 1") == 1) {
            atomic_fetch_add(l->ok_queries, 1);
            pool_putconn(l->pool, c);
        } else {
            l->handed_out_dead++; /* killed while borrowed: the borrower saw it */
            pool_discard(l->pool, c);
        }
    }
    return NULL;
}

static void test_backends_terminated_under_load_are_replaced(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "faults_kill");
    cfg.min_size = 2;
    cfg.max_size = 4;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    atomic_bool stop = false;
    atomic_int ok = 0;
    loader_t l[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        l[i] = (loader_t){.pool = pool, .stop = &stop, .ok_queries = &ok};
        pthread_create(&t[i], NULL, load_and_discard_failures, &l[i]);
    }
    int killed = 0;
    for (int round = 0; round < 5; round++) {
        test_sleep_ms(100);
        killed += test_terminate_backends("faults_kill");
    }
    int before = atomic_load(&ok);
    int64_t deadline = test_now_ms() + 10000;
    while (atomic_load(&ok) < before + 100 && test_now_ms() < deadline)
        test_sleep_ms(5);
    atomic_store(&stop, true);
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(l[i].errors, 0);
    }
    assert_true(killed > 0);
    assert_true(atomic_load(&ok) >= before + 100);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.total <= 4);
    assert_true(test_count_backends("faults_kill") <= 4);
    pool_destroy(pool);
}

static void test_a_caller_never_waits_past_its_deadline_for_a_hanging_connect(void **state)
{
    if (!test_server_controllable())
        skip();
    pool_config_t cfg;
    test_config(&cfg, "faults_hang");
    cfg.min_size = 0;
    cfg.max_size = 2;
    cfg.connect_timeout_ms = 4000;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_true(test_server("pause")); /* new connections hang in the handshake */
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn_timeout(pool, 300));
    int64_t elapsed = test_now_ms() - t0;
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connecting, 1); /* still trying, for the next caller */
    assert_true(test_server("resume"));
    assert_in_range(elapsed, 300, 1000);
    /* The attempt that outlived its caller completes and waits, idle. */
    assert_true(test_wait_idle(pool, 1, 5000));
    PGconn *c = pool_getconn_timeout(pool, 0);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connects, 1);
    pool_destroy(pool);
}

static void test_destroy_does_not_wait_for_a_hanging_connect(void **state)
{
    if (!test_server_controllable())
        skip();
    pool_config_t cfg;
    test_config(&cfg, "faults_hang_destroy");
    cfg.min_size = 0;
    cfg.connect_timeout_ms = 10000;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_true(test_server("pause"));
    assert_null(pool_getconn_timeout(pool, 100)); /* leaves an attempt hanging */
    int64_t t0 = test_now_ms();
    pool_destroy(pool);
    int64_t elapsed = test_now_ms() - t0;
    assert_true(test_server("resume"));
    assert_true(elapsed < 1000);
    assert_true(test_wait_backends("faults_hang_destroy", 0, 5000));
}

static void test_no_message_or_log_line_shows_the_password(void **state)
{
    test_log_t log = {0};
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = REFUSING " password=hunter2secret";
    cfg.min_size = 0;
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    assert_null(pool_getconn(pool));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_null(strstr(pool_errmsg(), "hunter2secret"));
    assert_null(pool_getconn_timeout(pool, 50));
    assert_null(strstr(pool_errmsg(), "hunter2secret"));
    pool_destroy(pool);
    assert_true(log.warnings >= 1); /* the failing connects were logged... */
    assert_false(test_log_contains(&log, "hunter2secret")); /* ...without it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_refusing_database_fails_callers_at_once_with_libpq_reason),
        cmocka_unit_test(test_retries_back_off_instead_of_storming_the_database),
        cmocka_unit_test(test_backends_terminated_under_load_are_replaced),
        cmocka_unit_test_teardown(test_timeout_message_names_the_last_connection_error, server_back_up),
        cmocka_unit_test_teardown(test_server_stopped_while_idle_then_restarted_under_load, server_back_up),
        cmocka_unit_test_teardown(test_a_caller_never_waits_past_its_deadline_for_a_hanging_connect, server_back_up),
        cmocka_unit_test_teardown(test_destroy_does_not_wait_for_a_hanging_connect, server_back_up),
        cmocka_unit_test(test_no_message_or_log_line_shows_the_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
