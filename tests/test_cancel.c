/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c - a thread cancelled (pthread_cancel, deferred) inside a
 * pool call: the call completes its bookkeeping, the thread acts on the
 * cancel after it returns, no connection is lost, no count stays raised,
 * and pool_destroy does not wait on a dead call.
 *
 * Each victim thread pushes a cleanup handler that returns the connection
 * it holds (what the header asks of a program whose threads may be
 * cancelled), gets the cancel while it blocks inside the call or just
 * before it (spinning on an atomic, which is no cancellation point), then
 * meets pthread_testcancel after the call.  Every join is bounded, so a
 * call that never returns fails the test instead of hanging it.
 */
#include "harness.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct victim {
    pool_t *pool;
    int step;                 /* which call to make, see victim_main */
    atomic_int ready;         /* 1: about to make the call (or inside it) */
    atomic_int go;            /* 1: the cancel is pending, make the call */
    atomic_int returned;      /* 1: the call returned */
    PGconn *held;             /* the connection the thread holds, for the cleanup handler */
    int rc;
} victim_t;

enum { GETCONN_AFTER_WAITING, GETCONN_IN_HOOK, PUTCONN_ROLLBACK, PUTCONN_RESET, PUTCONN_IN_HOOK,
       DISCARD, RESIZE, EVICT };

static void give_back(void *arg)
{
    victim_t *v = arg;
    if (v->held)
        pool_putconn(v->pool, v->held);
    v->held = NULL;
}

static void wait_for_go(victim_t *v)
{
    atomic_store(&v->ready, 1);
    while (!atomic_load(&v->go))
        ; /* no cancellation point here */
}

/* A hook that sleeps: nanosleep is a cancellation point, which must not act
   inside pgpool. */
static int sleepy_hook(PGconn *conn, void *arg)
{
    victim_t *v = arg;
    atomic_store(&v->ready, 1);
    struct timespec ts = {0, 200 * 1000000};
    nanosleep(&ts, NULL);
    return 0;
}

static void *victim_main(void *arg)
{
    victim_t *v = arg;
    pthread_cleanup_push(give_back, v);
    switch (v->step) {
    case GETCONN_AFTER_WAITING: /* cancelled while in line; a ping is due after */
        atomic_store(&v->ready, 1);
        v->held = pool_getconn_timeout(v->pool, 10000);
        break;
    case GETCONN_IN_HOOK: /* cancelled inside on_checkout */
        v->held = pool_getconn_timeout(v->pool, 10000);
        break;
    case PUTCONN_ROLLBACK:
    case PUTCONN_RESET:
    case PUTCONN_IN_HOOK:
    case DISCARD: {
        PGconn *c = pool_getconn(v->pool);
        if (c && v->step == PUTCONN_ROLLBACK)
            test_exec_ok(c, "BEGIN");
        if (v->step != PUTCONN_IN_HOOK)
            wait_for_go(v);
        v->rc = v->step == DISCARD ? pool_discard(v->pool, c) : pool_putconn(v->pool, c);
        break;
    }
    case RESIZE:
        wait_for_go(v);
        v->rc = pool_resize(v->pool, 0, 1, 0);
        break;
    case EVICT:
        wait_for_go(v);
        v->rc = pool_evict(v->pool);
        break;
    }
    atomic_store(&v->returned, 1);
    pthread_testcancel(); /* the cancel acts here, after the call */
    pthread_cleanup_pop(0);
    return (void *)1; /* not cancelled: a failure */
}

/* Joins t within 10 s; true when it ended by the cancel. */
static bool joined_cancelled(pthread_t t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    void *ret = NULL;
    if (pthread_timedjoin_np(t, &ret, &ts) != 0)
        fail_msg("the cancelled thread is still inside its call after 10 s");
    return ret == PTHREAD_CANCELED;
}

static void *destroy_main(void *pool)
{
    pool_destroy(pool);
    return NULL;
}

/* The pool is whole again: nothing in use, nobody counted inside, a
   connection can be had, and pool_destroy returns. */
static void expect_whole(pool_t *pool)
{
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
    PGconn *c = pool_getconn_timeout(pool, 10000);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pthread_t t;
    pthread_create(&t, NULL, destroy_main, pool);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    if (pthread_timedjoin_np(t, NULL, &ts) != 0)
        fail_msg("pool_destroy waits on a call that will never finish");
}

/* The victim's pool: one connection (two for pool_resize to have one to
   close), a round trip on every locked checkout, and the hook the step
   blocks in. */
static pool_t *victim_pool(const char *app, victim_t *v, const char *reset_query)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = cfg.max_size = v->step == RESIZE ? 2 : 1;
    cfg.ping_idle_ms = 0;
    cfg.on_checkout = v->step == GETCONN_IN_HOOK ? sleepy_hook : NULL;
    cfg.on_checkin = v->step == PUTCONN_IN_HOOK ? sleepy_hook : NULL;
    cfg.reset_query = reset_query;
    cfg.arg = v;
    return v->pool = test_pool_create(&cfg);
}

/* Starts the victim, cancels it once it is ready (inside its call, or about
   to make it), lets it go, and checks it ran the call to its end, which
   succeeded, and then died of the cancel. */
static void run_cancelled(victim_t *v)
{
    pthread_t t;
    pthread_create(&t, NULL, victim_main, v);
    while (!atomic_load(&v->ready))
        test_sleep_ms(1);
    pthread_cancel(t);
    atomic_store(&v->go, 1);
    assert_true(joined_cancelled(t));
    assert_int_equal(atomic_load(&v->returned), 1);
    assert_int_equal(v->rc, POOL_OK);
}

static void test_a_caller_cancelled_in_line_still_takes_and_gives_back_its_connection(void **state)
{
    victim_t v = {.step = GETCONN_AFTER_WAITING};
    pool_t *pool = victim_pool("cancel_line", &v, NULL);
    PGconn *mine = pool_getconn(pool);
    pthread_t t;
    pthread_create(&t, NULL, victim_main, &v);
    assert_true(test_wait_waiting(pool, 1));
    pthread_cancel(t); /* pending: waiting in line is no cancellation point */
    pool_putconn(pool, mine); /* handed to the victim, which pings it */
    assert_true(joined_cancelled(t));
    assert_int_equal(atomic_load(&v.returned), 1);
    expect_whole(pool);
}

static void test_a_caller_cancelled_inside_on_checkout_gets_its_connection(void **state)
{
    victim_t v = {.step = GETCONN_IN_HOOK};
    pool_t *pool = victim_pool("cancel_checkout", &v, NULL);
    run_cancelled(&v);
    expect_whole(pool);
}

static void test_a_return_cancelled_at_its_rollback_completes(void **state)
{
    victim_t v = {.step = PUTCONN_ROLLBACK};
    pool_t *pool = victim_pool("cancel_rollback", &v, NULL);
    run_cancelled(&v);
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.rollbacks, 1);
    expect_whole(pool);
}

static void test_a_return_cancelled_at_its_reset_query_completes(void **state)
{
    victim_t v = {.step = PUTCONN_RESET};
    pool_t *pool = victim_pool("cancel_reset", &v, "SELECT pg_sleep(0.2)");
    run_cancelled(&v);
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.closed_broken, 0); /* the reset ran to its end: reused */
    expect_whole(pool);
}

static void test_a_return_cancelled_inside_on_checkin_completes(void **state)
{
    victim_t v = {.step = PUTCONN_IN_HOOK};
    pool_t *pool = victim_pool("cancel_checkin", &v, NULL);
    run_cancelled(&v);
    expect_whole(pool);
}

static void test_a_discard_cancelled_at_its_close_completes(void **state)
{
    victim_t v = {.step = DISCARD};
    pool_t *pool = victim_pool("cancel_discard", &v, NULL);
    run_cancelled(&v);
    expect_whole(pool);
}

static void test_resize_and_evict_cancelled_at_their_closes_complete(void **state)
{
    for (int step = RESIZE; step <= EVICT; step++) {
        victim_t v = {.step = step};
        pool_t *pool = victim_pool(step == RESIZE ? "cancel_resize" : "cancel_evict", &v, NULL);
        run_cancelled(&v);
        expect_whole(pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_caller_cancelled_in_line_still_takes_and_gives_back_its_connection),
        cmocka_unit_test(test_a_caller_cancelled_inside_on_checkout_gets_its_connection),
        cmocka_unit_test(test_a_return_cancelled_at_its_rollback_completes),
        cmocka_unit_test(test_a_return_cancelled_at_its_reset_query_completes),
        cmocka_unit_test(test_a_return_cancelled_inside_on_checkin_completes),
        cmocka_unit_test(test_a_discard_cancelled_at_its_close_completes),
        cmocka_unit_test(test_resize_and_evict_cancelled_at_their_closes_complete),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
