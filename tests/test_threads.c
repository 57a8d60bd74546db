/* SPDX-License-Identifier: MIT */
/*
 * test_threads.c - many threads at once: max_size + max_overflow never
 * exceeded (by the pool's count and by the server's), stats consistent in
 * every snapshot and adding up at the end.
 */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define NTHREADS 16
#define MAX_SIZE 3
#define MAX_OVERFLOW 2
#define RUN_MS 2500

typedef struct worker {
    pool_t *pool;
    atomic_bool *stop;
    unsigned seed;
    int acquired, timeouts, other_errors, bad_handouts;
} worker_t;

static void *work(void *arg)
{
    worker_t *w = arg;
    while (!atomic_load(w->stop)) {
        PGconn *c = pool_getconn_timeout(w->pool, (int)(rand_r(&w->seed) % 50));
        if (!c) {
            if (pool_errcode() == POOL_ETIMEDOUT)
                w->timeouts++;
            else
                w->other_errors++;
            continue;
        }
        w->acquired++;
        if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)
            w->bad_handouts++;
        switch (rand_r(&w->seed) % 10) {
        case 0: /* leave a transaction open */
            test_exec_ok(c, "BEGIN");
            test_exec_ok(c, "SELECT 1");
            pool_putconn(w->pool, c);
            break;
        case 1:
            pool_discard(w->pool, c);
            break;
        case 2:
            test_exec_ok(c, "SELECT pg_sleep(0.002)");
            pool_putconn(w->pool, c);
            break;
        default:
            if (test_query_int(c, "SELECT 1") != 1)
                w->bad_handouts++;
            pool_putconn(w->pool, c);
        }
    }
    return NULL;
}

typedef struct sampler {
    pool_t *pool;
    const char *app;
    atomic_bool *stop;
    int samples, backend_samples, violations, max_backends;
} sampler_t;

static void *sample(void *arg)
{
    sampler_t *s = arg;
    pool_stats_t prev = {0}, st;
    while (!atomic_load(s->stop)) {
        pool_get_stats(s->pool, &st);
        s->samples++;
        if (st.total != st.idle + st.in_use || st.total > MAX_SIZE + MAX_OVERFLOW ||
            st.idle < 0 || st.in_use < 0 || st.waiting < 0 || st.connecting < 0 ||
            st.acquired < prev.acquired || st.acquire_timeouts < prev.acquire_timeouts ||
            st.connects < prev.connects || st.closed < prev.closed ||
            st.rollbacks < prev.rollbacks || st.wait_us_total < prev.wait_us_total ||
            st.hold_us_total < prev.hold_us_total || st.closed_broken > st.closed)
            s->violations++;
        prev = st;
        if (s->samples % 10 == 0) {
            int n = test_count_backends(s->app);
            s->backend_samples++;
            if (n > s->max_backends)
                s->max_backends = n;
        }
        test_sleep_ms(1);
    }
    return NULL;
}

static void test_the_maximum_is_never_exceeded_and_stats_stay_consistent(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "threads_stress");
    cfg.min_size = 1;
    cfg.max_size = MAX_SIZE;
    cfg.max_overflow = MAX_OVERFLOW;
    cfg.ping_idle_ms = 5;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);

    atomic_bool stop = false;
    worker_t w[NTHREADS];
    pthread_t t[NTHREADS], ts;
    sampler_t s = {.pool = pool, .app = "threads_stress", .stop = &stop};
    pthread_create(&ts, NULL, sample, &s);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker_t){.pool = pool, .stop = &stop, .seed = (unsigned)i * 7919u + 1};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    test_sleep_ms(RUN_MS);
    atomic_store(&stop, true);
    uint64_t acquired = 0, timeouts = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        acquired += (uint64_t)w[i].acquired;
        timeouts += (uint64_t)w[i].timeouts;
        assert_int_equal(w[i].other_errors, 0);
        assert_int_equal(w[i].bad_handouts, 0);
    }
    pthread_join(ts, NULL);

    assert_true(s.samples > 50);
    assert_true(s.backend_samples > 5);
    assert_int_equal(s.violations, 0);
    assert_true(s.max_backends <= MAX_SIZE + MAX_OVERFLOW);

    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, acquired);
    assert_int_equal(st.acquire_timeouts, timeouts);
    assert_int_equal(st.acquire_errors, 0);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.connects - st.closed, (uint64_t)st.total);
    assert_true(st.rollbacks > 0);
    assert_true(acquired > 100);
    assert_true(st.total <= MAX_SIZE);
    assert_true(test_count_backends("threads_stress") <= MAX_SIZE + MAX_OVERFLOW);
    pool_destroy(pool);
    assert_true(test_wait_backends("threads_stress", 0, 5000));
}

static void *cycle(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 2000; i++) {
        PGconn *c = pool_getconn_timeout(w->pool, -1);
        if (!c) {
            w->other_errors++;
            continue;
        }
        w->acquired++;
        pool_putconn(w->pool, c);
    }
    return NULL;
}

static void test_many_threads_cycling_all_get_served(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "threads_cycle");
    cfg.min_size = 2;
    cfg.max_size = 2;
    cfg.ping_idle_ms = 3600000;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    worker_t w[8];
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){.pool = pool};
        pthread_create(&t[i], NULL, cycle, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].acquired, 2000);
    }
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, 16000);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.idle, 2);
    pool_destroy(pool);
}

static void test_a_closed_backend_is_gone_from_the_server_before_its_slot_is_reused(void **state)
{
    /* Overflow churn: every return closes a connection and the next checkout
       opens one.  The server must never see more than max_size + max_overflow
       backends, so a close waits until the server has ended the backend. */
    pool_config_t cfg;
    test_config(&cfg, "threads_churn");
    cfg.min_size = 0;
    cfg.max_size = 1;
    cfg.max_overflow = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    PGconn *admin = PQconnectdb(test_conninfo("threads_churn_admin"));
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    const char *count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'threads_churn'";
    PGconn *a = pool_getconn(pool);
    int worst = 0;
    for (int i = 0; i < 30; i++) {
        PGconn *b = pool_getconn(pool); /* the overflow one: a new backend */
        assert_non_null(b);
        pool_putconn(pool, b);          /* above max_size, nobody waiting: closed */
        int n = test_query_int(admin, count);
        if (n > worst)
            worst = n;
    }
    assert_int_equal(worst, 1);
    pool_putconn(pool, a);
    PQfinish(admin);
    pool_destroy(pool);
}

typedef struct burst {
    pool_t *pool;
    pthread_barrier_t *start;
    pool_err_t err;
} burst_t;

static void *arrive(void *arg)
{
    burst_t *b = arg;
    pthread_barrier_wait(b->start);
    PGconn *c = pool_getconn_timeout(b->pool, 20000);
    b->err = c ? POOL_OK : pool_errcode();
    if (c) {
        test_exec_ok(c, "SELECT pg_sleep(0.01)");
        pool_putconn(b->pool, c);
    }
    return NULL;
}

typedef struct watch {
    pool_t *pool;
    atomic_bool stop;
    int max_connecting, max_total;
} watch_t;

static void *watch_connecting(void *arg)
{
    watch_t *w = arg;
    while (!atomic_load(&w->stop)) {
        pool_stats_t st;
        pool_get_stats(w->pool, &st);
        if (st.connecting > w->max_connecting)
            w->max_connecting = st.connecting;
        if (st.total > w->max_total)
            w->max_total = st.total;
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void test_a_burst_is_served_with_bounded_connection_attempts(void **state)
{
    enum { CROWD = 48, MAX = 16 };
    pool_config_t cfg;
    test_config(&cfg, "threads_burst");
    cfg.min_size = 0;
    cfg.max_size = MAX;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CROWD);
    burst_t b[CROWD];
    pthread_t t[CROWD], tw;
    watch_t w = {.pool = pool};
    pthread_create(&tw, NULL, watch_connecting, &w);
    for (int i = 0; i < CROWD; i++) {
        b[i] = (burst_t){.pool = pool, .start = &start};
        pthread_create(&t[i], NULL, arrive, &b[i]);
    }
    for (int i = 0; i < CROWD; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(b[i].err, POOL_OK);
    }
    atomic_store(&w.stop, true);
    pthread_join(tw, NULL);
    pthread_barrier_destroy(&start);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(w.max_connecting >= 1);
    assert_true(w.max_connecting <= 2); /* attempts in flight are bounded */
    assert_true(w.max_total <= MAX);
    assert_true(st.connects <= MAX);
    assert_int_equal(st.acquired, CROWD);
    pool_destroy(pool);
}

/* ---- overload: a crowd far larger than the pool ------------------------ */

typedef struct crowd_member {
    pool_t *pool;
    pthread_barrier_t *start;
    int timeout_ms;
    pool_err_t err;
    int64_t elapsed_ms;
} crowd_member_t;

static void *crowd_member(void *arg)
{
    crowd_member_t *m = arg;
    pthread_barrier_wait(m->start);
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(m->pool, m->timeout_ms);
    m->elapsed_ms = test_now_ms() - t0;
    m->err = c ? POOL_OK : pool_errcode();
    if (c) {
        test_sleep_ms(1); /* hold it a moment, like a short request */
        pool_putconn(m->pool, c);
    }
    return NULL;
}

/* Runs n threads at once against pool; each waits up to 100..1500 ms. */
static void run_crowd(pool_t *pool, int n, crowd_member_t *m)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    unsigned seed = 42;
    for (int i = 0; i < n; i++) {
        m[i] = (crowd_member_t){.pool = pool, .start = &start,
                                .timeout_ms = 100 + (int)(rand_r(&seed) % 1400)};
        assert_int_equal(pthread_create(&t[i], &attr, crowd_member, &m[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    free(t);
    pthread_barrier_destroy(&start);
    pthread_attr_destroy(&attr);
}

static int crowd_size(void)
{
    return getenv("PGPOOL_TEST_SANITIZED") ? 500 : 2000; /* sanitizers are slow */
}

static void test_a_crowd_of_waiters_is_served_or_timed_out_by_its_deadlines(void **state)
{
    int n = crowd_size();
    pool_config_t cfg;
    test_config(&cfg, "threads_crowd");
    cfg.min_size = 4;
    cfg.max_size = 4;
    cfg.ping_idle_ms = 3600000;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    crowd_member_t *m = calloc((size_t)n, sizeof *m);
    run_crowd(pool, n, m);
    int served = 0, timed_out = 0, late = 0, other = 0;
    for (int i = 0; i < n; i++) {
        if (m[i].err == POOL_OK)
            served++;
        else if (m[i].err == POOL_ETIMEDOUT)
            timed_out++;
        else
            other++;
        if (m[i].elapsed_ms > m[i].timeout_ms + 1000)
            late++;
    }
    free(m);
    assert_int_equal(served + timed_out, n); /* no lost wake-up: every one came back */
    assert_int_equal(other, 0);
    assert_int_equal(late, 0);
    assert_true(served > 4);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, (uint64_t)served);
    assert_int_equal(st.acquire_timeouts, (uint64_t)timed_out);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.total, 4);
    assert_int_equal(st.idle, 4);
    pool_destroy(pool);
}

static void test_beyond_max_waiting_a_crowd_is_rejected_at_once(void **state)
{
    int n = crowd_size();
    pool_config_t cfg;
    test_config(&cfg, "threads_crowd_busy");
    cfg.min_size = 4;
    cfg.max_size = 4;
    cfg.max_waiting = 50;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    crowd_member_t *m = calloc((size_t)n, sizeof *m);
    run_crowd(pool, n, m);
    int busy = 0, slow_busy = 0, other = 0;
    for (int i = 0; i < n; i++) {
        if (m[i].err == POOL_EBUSY) {
            busy++;
            if (m[i].elapsed_ms > 500)
                slow_busy++;
        } else if (m[i].err != POOL_OK && m[i].err != POOL_ETIMEDOUT) {
            other++;
        }
    }
    free(m);
    assert_true(busy > 0);
    assert_int_equal(slow_busy, 0); /* rejected at once, never after waiting */
    assert_int_equal(other, 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_errors, (uint64_t)busy);
    assert_int_equal(st.acquired + st.acquire_timeouts + st.acquire_errors, (uint64_t)n);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_maximum_is_never_exceeded_and_stats_stay_consistent),
        cmocka_unit_test(test_many_threads_cycling_all_get_served),
        cmocka_unit_test(test_a_closed_backend_is_gone_from_the_server_before_its_slot_is_reused),
        cmocka_unit_test(test_a_burst_is_served_with_bounded_connection_attempts),
        cmocka_unit_test(test_a_crowd_of_waiters_is_served_or_timed_out_by_its_deadlines),
        cmocka_unit_test(test_beyond_max_waiting_a_crowd_is_rejected_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
