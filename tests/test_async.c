/* SPDX-License-Identifier: MIT */
/*
 * test_async.c - the event-loop calls: pool_getconn_async's callback runs
 * only in pool_dispatch, with a connection validated on a pool thread; the
 * pool's descriptor is readable exactly while callbacks are ready; deadlines
 * fire with no loop timer; blocking and async callers share one line;
 * pool_cancel has exactly one winner against a hand-over, and never loses a
 * connection; pool_destroy completes what is pending.
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What one request's callback saw. */
typedef struct outcome {
    pool_t *pool;
    int calls;
    PGconn *conn;
    pool_err_t err;
    char msg[POOL_ERRMSG_SIZE];
    pthread_t thread;
    bool keep;          /* keep the connection (else returned in the callback) */
    int order;          /* when it ran, from *seq */
    atomic_int *seq;
} outcome_t;

static void record(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    outcome_t *o = arg;
    o->calls++;
    o->conn = conn;
    o->err = err;
    o->thread = pthread_self();
    snprintf(o->msg, sizeof o->msg, "%s", err ? pool_errmsg() : "");
    if (o->seq)
        o->order = atomic_fetch_add(o->seq, 1);
    if (conn && test_query_int(conn, "SELECT 1") != 1)
        o->err = POOL_EINVAL; /* not a usable connection: the test fails on it */
    if (conn && !o->keep)
        assert_int_equal(pool_putconn(pool, conn), POOL_OK);
}

static bool fd_readable(pool_t *pool, int ms)
{
    return test_wait_readable(pool_fd(pool), ms);
}

static pool_t *async_pool(const char *app, int max)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.max_size = max;
    return test_pool_create(&cfg);
}

static void test_the_callback_runs_only_in_dispatch_with_a_usable_connection(void **state)
{
    pool_t *pool = async_pool("async_basic", 2);
    outcome_t o = {0};
    assert_non_null(pool_getconn_async(pool, 5000, record, &o));
    assert_int_equal(o.calls, 0); /* never inline */
    assert_true(fd_readable(pool, 5000));
    assert_int_equal(o.calls, 0); /* not without pool_dispatch either */
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.err, POOL_OK);
    assert_true(pthread_equal(o.thread, pthread_self()));
    assert_false(fd_readable(pool, 0));
    assert_int_equal(pool_dispatch(pool, 0), 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquired, 1);
    assert_int_equal(st.wait_hist.count, 1);
    assert_int_equal(st.in_use, 0);
    pool_destroy(pool);
}

static void test_bad_arguments_are_refused(void **state)
{
    pool_t *pool = async_pool("async_misuse", 1);
    outcome_t o = {0};
    assert_null(pool_getconn_async(NULL, 0, record, &o));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_null(pool_getconn_async(pool, 0, NULL, &o));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_cancel(pool, NULL), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_cancel(NULL, NULL), -1);
    assert_int_equal(pool_fd(NULL), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_dispatch(NULL, 0), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    /* A request of another pool. */
    pool_t *other = async_pool("async_misuse2", 1);
    pool_request_t *r = pool_getconn_async(other, 5000, record, &o);
    assert_non_null(r);
    assert_int_equal(pool_cancel(pool, r), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_cancel(other, r), 0);
    assert_int_equal(pool_cancel(other, r), -1); /* cancelled already */
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_dispatch(other, 0), 0);
    assert_int_equal(o.calls, 0);
    pool_destroy(other);
    /* The pool is intact. */
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_the_descriptor_is_the_same_and_readable_while_callbacks_are_ready(void **state)
{
    pool_t *pool = async_pool("async_fd", 2);
    int fd = pool_fd(pool);
    assert_true(fd >= 0);
    assert_int_equal(pool_fd(pool), fd);
    assert_false(fd_readable(pool, 0));
    outcome_t o[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_non_null(pool_getconn_async(pool, 5000, record, &o[i]));
    assert_true(fd_readable(pool, 5000));
    /* max bounds a dispatch; the rest stay ready, the descriptor readable. */
    int ran = pool_dispatch(pool, 1);
    assert_int_equal(ran, 1);
    for (int done = ran; done < 3; done += ran) {
        assert_true(fd_readable(pool, 5000));
        ran = pool_dispatch(pool, 1);
        assert_true(ran >= 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].err, POOL_OK);
    }
    assert_false(fd_readable(pool, 0));
    pool_destroy(pool);
}

static void test_a_deadline_fires_with_no_loop_timer(void **state)
{
    pool_t *pool = async_pool("async_deadline", 1);
    PGconn *held = pool_getconn(pool);
    outcome_t o = {0};
    int64_t t0 = test_now_ms();
    assert_non_null(pool_getconn_async(pool, 150, record, &o));
    assert_true(fd_readable(pool, 5000)); /* nobody called the pool meanwhile */
    int64_t waited = test_now_ms() - t0;
    assert_true(waited >= 140);
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(o.err, POOL_ETIMEDOUT);
    assert_null(o.conn);
    assert_non_null(strstr(o.msg, "timed out after 150 ms"));
    /* timeout 0 with nothing idle: done at once, still through dispatch. */
    outcome_t z = {0};
    assert_non_null(pool_getconn_async(pool, 0, record, &z));
    assert_int_equal(z.calls, 0);
    assert_true(fd_readable(pool, 5000));
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(z.err, POOL_ETIMEDOUT);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.acquire_timeouts, 2);
    assert_int_equal(st.waiting, 0);
    pool_putconn(pool, held);
    pool_destroy(pool);
}

static void test_max_waiting_counts_async_requests(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_busy");
    cfg.max_size = 1;
    cfg.max_waiting = 1;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *held = pool_getconn(pool);
    outcome_t o = {0}, p = {0};
    pool_request_t *r = pool_getconn_async(pool, 5000, record, &o);
    assert_non_null(r);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 1);
    assert_null(pool_getconn_async(pool, 5000, record, &p));
    assert_int_equal(pool_errcode(), POOL_EBUSY);
    assert_null(pool_getconn_timeout(pool, 1000));
    assert_int_equal(pool_errcode(), POOL_EBUSY);
    assert_int_equal(pool_cancel(pool, r), 0);
    pool_putconn(pool, held);
    assert_int_equal(pool_dispatch(pool, 0), 0);
    assert_int_equal(o.calls + p.calls, 0);
    pool_destroy(pool);
}

typedef struct blocking {
    pool_t *pool;
    atomic_int *seq;
    int order;
} blocking_t;

static void *borrow_in_line(void *arg)
{
    blocking_t *b = arg;
    PGconn *c = pool_getconn_timeout(b->pool, 20000);
    b->order = c ? atomic_fetch_add(b->seq, 1) : -1;
    if (c)
        pool_putconn(b->pool, c);
    return NULL;
}

/* blocking, async, blocking, async arrive in that order at a pool whose only
   connection is held: they are served in that order. */
static void test_blocking_and_async_callers_share_one_line(void **state)
{
    pool_t *pool = async_pool("async_line", 1);
    PGconn *held = pool_getconn(pool);
    atomic_int seq = 0;
    blocking_t b[2] = {{.pool = pool, .seq = &seq}, {.pool = pool, .seq = &seq}};
    outcome_t o[2] = {{.seq = &seq}, {.seq = &seq}};
    pthread_t t[2];
    pthread_create(&t[0], NULL, borrow_in_line, &b[0]);
    assert_true(test_wait_waiting(pool, 1));
    assert_non_null(pool_getconn_async(pool, 20000, record, &o[0]));
    pthread_create(&t[1], NULL, borrow_in_line, &b[1]);
    assert_true(test_wait_waiting(pool, 3));
    assert_non_null(pool_getconn_async(pool, 20000, record, &o[1]));
    pool_putconn(pool, held);
    /* The loop: the callbacks run here and return the connection. */
    while (o[0].calls + o[1].calls < 2) {
        assert_true(fd_readable(pool, 10000));
        pool_dispatch(pool, 0);
    }
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    assert_int_equal(b[0].order, 0);
    assert_int_equal(o[0].order, 1);
    assert_int_equal(b[1].order, 2);
    assert_int_equal(o[1].order, 3);
    pool_destroy(pool);
}

/* on_checkout runs where the validation runs: on a pool thread. */
static int note_checkout_thread(PGconn *conn, void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return 0;
}

static void test_validation_runs_on_a_pool_thread_and_replaces_a_dead_connection(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_validate");
    cfg.max_size = 1;
    cfg.ping_idle_ms = 0; /* a round trip at every checkout */
    pthread_t checked_on = pthread_self();
    cfg.on_checkout = note_checkout_thread;
    cfg.arg = &checked_on;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *c = pool_getconn(pool);
    int dead_pid = test_backend_pid(c);
    pool_putconn(pool, c);
    checked_on = pthread_self();
    assert_int_equal(test_terminate_backends("async_validate"), 1);
    outcome_t o = {.keep = true};
    assert_non_null(pool_getconn_async(pool, 10000, record, &o));
    assert_true(fd_readable(pool, 10000));
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(o.err, POOL_OK);
    assert_int_not_equal(test_backend_pid(o.conn), dead_pid);
    assert_false(pthread_equal(checked_on, pthread_self()));
    pool_putconn(pool, o.conn);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.acquired, 2);
    pool_destroy(pool);
}

static void test_a_server_that_refuses_fails_the_request_with_its_reason(void **state)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=x user=x",
             test_free_port());
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    pool_t *pool = test_pool_create(&cfg);
    outcome_t o = {0};
    assert_non_null(pool_getconn_async(pool, 10000, record, &o));
    assert_true(fd_readable(pool, 10000));
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(o.err, POOL_ECONNECT);
    assert_non_null(strstr(o.msg, "127.0.0.1"));
    pool_destroy(pool);
}

static void test_cancel_before_the_callback_gives_the_connection_back(void **state)
{
    pool_t *pool = async_pool("async_cancel", 1);
    PGconn *held = pool_getconn(pool);
    outcome_t waiting = {0}, ready = {0};
    /* Cancelled in line. */
    pool_request_t *r = pool_getconn_async(pool, 5000, record, &waiting);
    assert_int_equal(pool_cancel(pool, r), 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.waiting, 0);
    /* Cancelled once the connection was set aside for it. */
    r = pool_getconn_async(pool, 5000, record, &ready);
    pool_putconn(pool, held);
    assert_true(fd_readable(pool, 5000));
    assert_int_equal(pool_cancel(pool, r), 0);
    assert_false(fd_readable(pool, 0)); /* nothing is ready any more */
    assert_int_equal(pool_dispatch(pool, 0), 0);
    assert_int_equal(waiting.calls + ready.calls, 0);
    /* The connection is back: an immediate borrow finds it idle. */
    held = pool_getconn_timeout(pool, 0);
    assert_non_null(held);
    pool_putconn(pool, held);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.total, 1);
    pool_destroy(pool);
}

/* A callback that calls the pool: cancelling itself fails (it is running),
   dispatching recursively fails, and a new request is fine. */
typedef struct reentrant {
    pool_request_t *self;
    int cancel_rc, dispatch_rc;
    outcome_t next;
} reentrant_t;

static void call_back_in(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    reentrant_t *re = arg;
    re->cancel_rc = pool_cancel(pool, re->self);
    re->dispatch_rc = pool_dispatch(pool, 0);
    if (conn)
        pool_putconn(pool, conn);
    assert_non_null(pool_getconn_async(pool, 5000, record, &re->next));
}

static void test_a_callback_may_call_the_pool_but_not_cancel_itself_or_dispatch(void **state)
{
    pool_t *pool = async_pool("async_reentry", 1);
    reentrant_t re = {0};
    re.self = pool_getconn_async(pool, 5000, call_back_in, &re);
    assert_true(fd_readable(pool, 5000));
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(re.cancel_rc, -1);
    assert_int_equal(re.dispatch_rc, -1);
    assert_true(fd_readable(pool, 5000));
    assert_int_equal(pool_dispatch(pool, 0), 1);
    assert_int_equal(re.next.err, POOL_OK);
    pool_destroy(pool);
}

static void test_destroy_completes_every_pending_request(void **state)
{
    pool_t *pool = async_pool("async_destroy", 1);
    outcome_t ready = {0}, waiting[3] = {{0}};
    assert_non_null(pool_getconn_async(pool, 5000, record, &ready));
    assert_true(fd_readable(pool, 5000)); /* ready, holding the connection */
    for (int i = 0; i < 3; i++)
        assert_non_null(pool_getconn_async(pool, -1, record, &waiting[i]));
    pool_destroy(pool); /* the callbacks run in here */
    assert_int_equal(ready.calls, 1);
    assert_int_equal(ready.err, POOL_ECLOSED);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(waiting[i].calls, 1);
        assert_int_equal(waiting[i].err, POOL_ECLOSED);
        assert_non_null(strstr(waiting[i].msg, "closed"));
    }
}

/* ---- the race: a cancel against a hand-over ----------------------------- */

#define RACE_ROUNDS 5000

typedef struct race {
    pool_t *pool;
    PGconn *held;
    test_spin_barrier_t go, done;
} race_t;

/* Returns the pool's only connection, at offsets that sweep the other
   thread's cancel from before the hand-over to after the callback is ready. */
static void *return_against_cancel(void *arg)
{
    race_t *r = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        test_spin_meet(&r->go);
        test_spin_for(i % 10 * 200);
        pool_putconn(r->pool, r->held);
        test_spin_meet(&r->done);
    }
    return NULL;
}

static void test_a_cancel_racing_a_hand_over_has_one_winner_and_loses_nothing(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_race");
    cfg.max_size = 1;
    pool_t *pool = test_pool_create(&cfg);
    race_t r = {.pool = pool};
    pthread_t t;
    pthread_create(&t, NULL, return_against_cancel, &r);
    int won_by_cancel = 0, won_when_ready = 0, won_by_callback = 0, lost = 0, twice = 0;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        r.held = pool_getconn_timeout(pool, 5000);
        assert_non_null(r.held);
        outcome_t o = {.keep = true};
        pool_request_t *req = pool_getconn_async(pool, 5000, record, &o);
        assert_non_null(req);
        test_spin_meet(&r.go);
        /* Four kinds of round: cancel at once (the request in line, or just
           handed the connection), after a pause of up to ~100 us (the
           service thread validating it), once it is ready, or after a
           dispatch (the callback has run: the cancel must lose). */
        switch (i % 4) {
        case 0: test_spin_for(i / 4 % 20 * 100); break;
        case 1: test_sleep_us(i / 4 % 100); break;
        case 2: test_wait_readable(pool_fd(pool), 5000); break;
        case 3:
            if (test_wait_readable(pool_fd(pool), 5000))
                pool_dispatch(pool, 0);
            break;
        }
        bool was_ready = test_wait_readable(pool_fd(pool), 0);
        int rc = pool_cancel(pool, req);
        test_spin_meet(&r.done);
        /* Whatever the cancel left ready would be dispatched now. */
        if (o.calls == 0 && test_wait_readable(pool_fd(pool), rc == 0 ? 0 : 5000))
            pool_dispatch(pool, 0);
        if (rc == 0 && o.calls == 0) {
            won_by_cancel++;
            won_when_ready += was_ready;
        }
        else if (rc == -1 && o.calls == 1)
            won_by_callback++;
        else
            twice++;
        if (o.conn)
            pool_putconn(pool, o.conn);
        /* The connection is idle again, whoever won. */
        PGconn *c = pool_getconn_timeout(pool, 2000);
        if (!c)
            lost++;
        else
            pool_putconn(pool, c);
    }
    pthread_join(t, NULL);
    print_message("cancel won %d rounds (%d of them once the request was ready), the callback %d\n",
                  won_by_cancel, won_when_ready, won_by_callback);
    assert_int_equal(twice, 0);
    assert_int_equal(lost, 0);
    assert_true(won_by_cancel > 0 && won_when_ready > 0 && won_by_callback > 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.total, 1);
    assert_int_equal(st.waiting, 0);
    pool_destroy(pool);
}

/* ---- scale: 10,000 requests on one thread, with blocking callers -------- */

#define MANY 10000

typedef struct many {
    pool_t *pool;
    int state[MANY];          /* 0 pending, 1 called back, 2 cancelled */
    pool_err_t err[MANY];
    int served_seq[MANY];     /* the order in which those served got a connection */
    int64_t start_ms[MANY], done_ms[MANY];
    int timeout_ms[MANY];
    int next_served;
    int64_t putconn_ns;       /* the loop's time inside pool_putconn */
} many_t;

typedef struct many_ref {
    many_t *m;
    int i;
} many_ref_t;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void many_done(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    many_ref_t *ref = arg;
    many_t *m = ref->m;
    m->state[ref->i] = 1;
    m->err[ref->i] = err;
    m->done_ms[ref->i] = test_now_ms();
    if (conn) {
        m->served_seq[ref->i] = m->next_served++;
        int64_t t0 = now_ns();
        pool_putconn(pool, conn);
        m->putconn_ns += now_ns() - t0;
    }
}

typedef struct blocker {
    pool_t *pool;
    atomic_bool *stop;
    int ok, failed;
} blocker_t;

static void *borrow_until_stopped(void *arg)
{
    blocker_t *b = arg;
    while (!atomic_load(b->stop)) {
        PGconn *c = pool_getconn_timeout(b->pool, 30000);
        if (!c) {
            b->failed++;
            continue;
        }
        b->ok++;
        pool_putconn(b->pool, c);
        test_sleep_us(200);
    }
    return NULL;
}

static void test_ten_thousand_requests_on_one_thread_beside_blocking_callers(void **state)
{
    pool_t *pool = async_pool("async_many", 4);
    many_t *m = calloc(1, sizeof *m);
    many_ref_t *refs = calloc(MANY, sizeof *refs);
    pool_request_t **req = calloc(MANY, sizeof *req);
    m->pool = pool;
    /* Every connection held: the whole crowd queues, in a known order. */
    PGconn *held[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(held[i] = pool_getconn(pool));
    atomic_bool stop = false;
    blocker_t b[2] = {{.pool = pool, .stop = &stop}, {.pool = pool, .stop = &stop}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, borrow_until_stopped, &b[i]);
    assert_true(test_wait_waiting(pool, 2));
    unsigned seed = 13;
    int64_t t0 = now_ns();
    for (int i = 0; i < MANY; i++) {
        refs[i] = (many_ref_t){.m = m, .i = i};
        m->timeout_ms[i] = i % 7 == 0 ? 50 : 60000; /* these time out in line */
        m->start_ms[i] = test_now_ms();
        req[i] = pool_getconn_async(pool, m->timeout_ms[i], many_done, &refs[i]);
        assert_non_null(req[i]);
    }
    int64_t asked_ns = now_ns() - t0;
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.waiting >= MANY - MANY / 7 + 2); /* all but the 50 ms ones, which may be gone */
    /* A sixth cancelled in line, at random. */
    int cancelled = 0;
    int64_t cancel_ns = 0;
    while (cancelled < MANY / 6) {
        int i = (int)(rand_r(&seed) % MANY);
        if (m->state[i] == 0) {
            int64_t c0 = now_ns();
            assert_int_equal(pool_cancel(pool, req[i]), 0);
            cancel_ns += now_ns() - c0;
            m->state[i] = 2;
            cancelled++;
        }
    }
    test_sleep_ms(100); /* the 50 ms ones expire in line, whatever the machine's speed */
    for (int i = 0; i < 4; i++)
        pool_putconn(pool, held[i]);
    /* The loop: dispatch, and cancel another at random now and then, until
       a third is cancelled and everything else called back. */
    int64_t dispatch_ns = 0;
    int dispatched = 0;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < MANY; i++)
            pending += m->state[i] == 0;
        if (pending == 0)
            break;
        if (test_wait_readable(pool_fd(pool), 100)) {
            int64_t d0 = now_ns();
            int64_t put_before = m->putconn_ns;
            int n = pool_dispatch(pool, 64);
            dispatch_ns += now_ns() - d0 - (m->putconn_ns - put_before);
            dispatched += n;
        }
        for (int k = 0; k < 8 && cancelled < MANY / 3; k++) {
            int i = (int)(rand_r(&seed) % MANY);
            if (m->state[i] == 0) {
                assert_int_equal(pool_cancel(pool, req[i]), 0);
                m->state[i] = 2;
                cancelled++;
            }
        }
    }
    int64_t loop_ms = (now_ns() - t0) / 1000000;
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    /* Served in arrival order; timed out no sooner than their deadline. */
    int served = 0, timed_out = 0, last_seq = -1, out_of_order = 0, early = 0, other = 0;
    for (int i = 0; i < MANY; i++) {
        if (m->state[i] != 1)
            continue;
        if (m->err[i] == POOL_OK) {
            served++;
            out_of_order += m->served_seq[i] < last_seq;
            last_seq = m->served_seq[i];
        } else if (m->err[i] == POOL_ETIMEDOUT) {
            timed_out++;
            early += m->done_ms[i] - m->start_ms[i] < m->timeout_ms[i];
        } else {
            other++;
        }
    }
    print_message("%d requests in %lld ms: %d served, %d timed out, %d cancelled; blocking callers: %d served, "
                  "%d failed; loop thread per request: pool_getconn_async %.0f ns, pool_cancel %.0f ns, "
                  "pool_dispatch %.0f ns (callbacks' own work excluded), pool_putconn %.0f ns\n",
                  MANY, (long long)loop_ms, served, timed_out, cancelled, b[0].ok + b[1].ok, b[0].failed + b[1].failed,
                  (double)asked_ns / MANY, (double)cancel_ns / (MANY / 6),
                  (double)dispatch_ns / (dispatched ? dispatched : 1),
                  (double)m->putconn_ns / (served ? served : 1));
    assert_int_equal(served + timed_out + cancelled, MANY);
    assert_int_equal(out_of_order, 0);
    assert_int_equal(early, 0);
    assert_int_equal(other, 0);
    assert_true(timed_out > 0);
    assert_int_equal(b[0].failed + b[1].failed, 0);
    assert_true(b[0].ok > 0 && b[1].ok > 0);
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.waiting, 0);
    assert_true(st.total <= 4);
    assert_int_equal(st.acquired, 4 + (uint64_t)served + (uint64_t)(b[0].ok + b[1].ok));
    assert_int_equal(st.acquire_timeouts, timed_out);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
    free(m);
    free(refs);
    free(req);
}

/* ---- return_in_background ------------------------------------------------ */

static int note_checkin_thread(PGconn *conn, void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return 0;
}

static bool pool_is_idle(void *pool)
{
    pool_stats_t st;
    return pool_get_stats(pool, &st) == POOL_OK && st.in_use == 0 && st.idle == st.total;
}

static void test_a_return_in_background_never_waits_and_reuse_waits_for_the_reset(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_background");
    cfg.max_size = 1;
    cfg.return_in_background = 1;
    cfg.reset_query = "SELECT pg_sleep(1); SET application_name = 'reset_done'";
    pthread_t checked_in_on;
    cfg.on_checkin = note_checkin_thread;
    cfg.arg = &checked_in_on;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *c = pool_getconn(pool);
    assert_true(test_exec_ok(c, "BEGIN"));
    assert_true(test_exec_ok(c, "SET LOCAL application_name = 'in_transaction'"));
    int64_t t0 = test_now_ms();
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    int64_t took = test_now_ms() - t0;
    assert_true(took < 500); /* the rollback and the 1 s reset_query are not waited for */
    assert_true(pthread_equal(checked_in_on, pthread_self())); /* on_checkin: the caller's */
    /* Reused only once both finished: the reset's mark is there. */
    c = pool_getconn_timeout(pool, 10000);
    assert_non_null(c);
    assert_true(test_now_ms() - t0 >= 900);
    PGresult *r = PQexec(c, "SHOW application_name");
    assert_string_equal(PQgetvalue(r, 0, 0), "reset_done");
    PQclear(r);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_IDLE);
    pool_putconn(pool, c);
    assert_true(test_wait_for(pool_is_idle, pool, 10000));
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.rollbacks, 1);
    assert_int_equal(st.acquired, 2);
    assert_int_equal(st.hold_hist.count, 2);
    assert_int_equal(st.closed, 0);
    pool_destroy(pool);
}

static bool one_closed(void *pool)
{
    pool_stats_t st;
    return pool_get_stats(pool, &st) == POOL_OK && st.closed == 1;
}

static void test_a_discard_or_broken_return_in_background_closes_on_a_pool_thread(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_bg_close");
    cfg.min_size = 0;
    cfg.max_size = 2;
    cfg.return_in_background = 1;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *c = pool_getconn(pool);
    assert_int_equal(pool_discard(pool, c), POOL_OK);
    assert_true(test_wait_for(one_closed, pool, 10000));
    assert_true(test_wait_backends("async_bg_close", 0, 10000));
    /* Returned with a query in flight: closed, not reused. */
    c = pool_getconn(pool);
    assert_true(PQsendQuery(c, "SELECT pg_sleep(0.2)"));
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    PGconn *next = pool_getconn(pool);
    assert_non_null(next);
    assert_int_equal(test_query_int(next, "SELECT 1"), 1);
    pool_putconn(pool, next);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.in_use, 0);
    pool_destroy(pool);
}

static void test_return_in_background_is_checked_and_settable_in_the_conninfo(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "async_bg_conf");
    cfg.return_in_background = 2;
    char err[POOL_ERRMSG_SIZE];
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "return_in_background"));
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s pool_return_in_background=maybe",
             test_conninfo("async_bg_conf"));
    cfg.return_in_background = 0;
    cfg.conninfo = conninfo;
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "pool_return_in_background"));
    /* on: a rollback is not waited for (the same as the struct's field). */
    snprintf(conninfo, sizeof conninfo, "%s pool_return_in_background=on pool_reset_query='SELECT pg_sleep(1)'",
             test_conninfo("async_bg_conf"));
    pool_t *pool = test_pool_create(&cfg);
    PGconn *c = pool_getconn(pool);
    int64_t t0 = test_now_ms();
    pool_putconn(pool, c);
    assert_true(test_now_ms() - t0 < 500);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_callback_runs_only_in_dispatch_with_a_usable_connection),
        cmocka_unit_test(test_bad_arguments_are_refused),
        cmocka_unit_test(test_the_descriptor_is_the_same_and_readable_while_callbacks_are_ready),
        cmocka_unit_test(test_a_deadline_fires_with_no_loop_timer),
        cmocka_unit_test(test_max_waiting_counts_async_requests),
        cmocka_unit_test(test_blocking_and_async_callers_share_one_line),
        cmocka_unit_test(test_validation_runs_on_a_pool_thread_and_replaces_a_dead_connection),
        cmocka_unit_test(test_a_server_that_refuses_fails_the_request_with_its_reason),
        cmocka_unit_test(test_cancel_before_the_callback_gives_the_connection_back),
        cmocka_unit_test(test_a_callback_may_call_the_pool_but_not_cancel_itself_or_dispatch),
        cmocka_unit_test(test_destroy_completes_every_pending_request),
        cmocka_unit_test(test_a_cancel_racing_a_hand_over_has_one_winner_and_loses_nothing),
        cmocka_unit_test(test_ten_thousand_requests_on_one_thread_beside_blocking_callers),
        cmocka_unit_test(test_a_return_in_background_never_waits_and_reuse_waits_for_the_reset),
        cmocka_unit_test(test_a_discard_or_broken_return_in_background_closes_on_a_pool_thread),
        cmocka_unit_test(test_return_in_background_is_checked_and_settable_in_the_conninfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
