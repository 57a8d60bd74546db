/* SPDX-License-Identifier: MIT */
/*
 * test_fairness.c - waiters are served first come, first served; a returned
 * connection goes to the longest waiter and is never taken by a newcomer; one
 * return serves exactly one waiter; a connection returned without the lock
 * (parked) just as a caller starts to wait is never left parked while that
 * caller sleeps.
 */
#include "harness.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define NWAITERS 6

typedef struct waiter_arg {
    pool_t *pool;
    int id;
    atomic_int *served_seq;
    int served_at;      /* position in which it was served */
    pool_err_t err;
} waiter_arg_t;

static void *wait_then_return(void *arg)
{
    waiter_arg_t *w = arg;
    PGconn *c = pool_getconn_timeout(w->pool, 20000);
    w->err = c ? POOL_OK : pool_errcode();
    if (c) {
        w->served_at = atomic_fetch_add(w->served_seq, 1);
        pool_putconn(w->pool, c);
    }
    return NULL;
}

static pool_t *one_connection_pool(const char *app)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.max_size = 1;
    return test_pool_create(&cfg);
}

static void test_waiters_are_served_in_arrival_order(void **state)
{
    pool_t *pool = one_connection_pool("fair_order");
    PGconn *held = pool_getconn(pool);
    atomic_int seq = 0;
    waiter_arg_t w[NWAITERS];
    pthread_t t[NWAITERS];
    for (int i = 0; i < NWAITERS; i++) {
        w[i] = (waiter_arg_t){.pool = pool, .id = i, .served_seq = &seq, .served_at = -1};
        pthread_create(&t[i], NULL, wait_then_return, &w[i]);
        assert_true(test_wait_waiting(pool, i + 1)); /* arrival order is known */
    }
    pool_putconn(pool, held);
    for (int i = 0; i < NWAITERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NWAITERS; i++) {
        assert_int_equal(w[i].err, POOL_OK);
        assert_int_equal(w[i].served_at, i);
    }
    pool_destroy(pool);
}

typedef struct keeper {
    pool_t *pool;
    PGconn *conn;
    atomic_bool done;
} keeper_t;

static void *wait_and_keep(void *arg)
{
    keeper_t *k = arg;
    k->conn = pool_getconn_timeout(k->pool, 20000);
    atomic_store(&k->done, true);
    return NULL;
}

static void test_a_newcomer_never_takes_a_connection_from_a_waiter(void **state)
{
    pool_t *pool = one_connection_pool("fair_barging");
    PGconn *held = pool_getconn(pool);
    keeper_t w = {.pool = pool};
    pthread_t t;
    pthread_create(&t, NULL, wait_and_keep, &w);
    assert_true(test_wait_waiting(pool, 1));
    pool_putconn(pool, held);
    /* Handed straight to the waiter: nothing idle for a caller arriving now,
       however fast it comes, even before the waiter has woken up. */
    PGconn *barger = pool_getconn_timeout(pool, 0);
    assert_null(barger);
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    pthread_join(t, NULL);
    assert_ptr_equal(w.conn, held);
    pool_putconn(pool, w.conn);
    pool_destroy(pool);
}

static void test_one_return_serves_exactly_one_waiter(void **state)
{
    pool_t *pool = one_connection_pool("fair_one");
    PGconn *held = pool_getconn(pool);
    keeper_t k[3] = {{.pool = pool}, {.pool = pool}, {.pool = pool}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&t[i], NULL, wait_and_keep, &k[i]);
        assert_true(test_wait_waiting(pool, i + 1));
    }
    pool_putconn(pool, held);
    pthread_join(t[0], NULL);
    assert_non_null(k[0].conn);
    assert_true(test_wait_waiting(pool, 2)); /* the others still wait */
    assert_false(atomic_load(&k[1].done));
    assert_false(atomic_load(&k[2].done));
    pool_putconn(pool, k[0].conn);
    pthread_join(t[1], NULL);
    assert_non_null(k[1].conn);
    assert_false(atomic_load(&k[2].done));
    pool_putconn(pool, k[1].conn);
    pthread_join(t[2], NULL);
    assert_non_null(k[2].conn);
    pool_putconn(pool, k[2].conn);
    pool_destroy(pool);
}

static void test_a_timed_out_waiter_leaves_the_line_for_the_next(void **state)
{
    pool_t *pool = one_connection_pool("fair_timeout");
    PGconn *held = pool_getconn(pool);
    /* The first waiter gives up; the second, behind it, must still be served. */
    atomic_int seq = 0;
    waiter_arg_t second = {.pool = pool, .served_seq = &seq, .served_at = -1};
    pthread_t t;
    assert_null(pool_getconn_timeout(pool, 100)); /* waits alone, times out */
    pthread_create(&t, NULL, wait_then_return, &second);
    assert_true(test_wait_waiting(pool, 1));
    pool_putconn(pool, held);
    pthread_join(t, NULL);
    assert_int_equal(second.err, POOL_OK);
    pool_destroy(pool);
}

#define RACE_ROUNDS 4000

typedef struct race {
    pool_t *pool;
    test_spin_barrier_t go, done;
} race_t;

/* Borrows the pool's only connection, then returns it just as the other
   thread starts asking for it; the offsets sweep the overlap both ways. */
static void *hold_and_return(void *arg)
{
    race_t *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        PGconn *c = pool_getconn_timeout(r->pool, 5000);
        test_spin_meet(&r->go);
        test_spin_for(i % 40 * 10);
        if (c)
            pool_putconn(r->pool, c);
        test_spin_meet(&r->done);
    }
    return NULL;
}

static void test_a_return_racing_a_new_waiter_never_strands_it(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "fair_race");
    cfg.max_size = 1;
    cfg.pre_ping = 0; /* the return and the checkout without a syscall: the tightest race */
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    race_t r = {.pool = pool};
    pthread_t t;
    pthread_create(&t, NULL, hold_and_return, &r);
    int stranded = 0;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        test_spin_meet(&r.go);
        test_spin_for(i / 40 % 40 * 10);
        /* The holder is returning it right now: this caller gets it either
           at once or as a waiter woken by that return, not by the
           maintenance thread's next sweep (up to a second later). */
        int64_t t0 = test_now_ms();
        PGconn *c = stranded ? NULL : pool_getconn_timeout(pool, 5000);
        if (c)
            pool_putconn(pool, c);
        if (!c || test_now_ms() - t0 > 500)
            stranded++;
        test_spin_meet(&r.done);
    }
    pthread_join(t, NULL);
    assert_int_equal(stranded, 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_timeouts, 0);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiters_are_served_in_arrival_order),
        cmocka_unit_test(test_a_newcomer_never_takes_a_connection_from_a_waiter),
        cmocka_unit_test(test_one_return_serves_exactly_one_waiter),
        cmocka_unit_test(test_a_timed_out_waiter_leaves_the_line_for_the_next),
        cmocka_unit_test(test_a_return_racing_a_new_waiter_never_strands_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
