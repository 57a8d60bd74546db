/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - a child that uses an inherited pool gets fresh connections,
 * and the parent's sessions are untouched by anything the child does.  What
 * the parent was doing at the fork (connects in progress, other threads
 * borrowing) leaves the child nothing open and nothing lost (CI runs this
 * under valgrind, whose leak check covers the children too).
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Every test here first skips under the sanitizers: their runtimes here
   (GCC 12, LLVM 14) cannot start threads in the child of a multi-threaded
   process (ThreadSanitizer: "dup thread with used id"; AddressSanitizer:
   allocator locks inherited held), which the pool must do.  The plain and
   valgrind runs cover fork. */
static void skip_if_sanitized(void)
{
    if (getenv("PGPOOL_TEST_SANITIZED"))
        skip();
}

/* Runs child_main in a child process; returns its exit status (0 = passed). */
static int run_child(int (*child_main)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_main(arg));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

typedef struct fork_arg {
    pool_t *pool;
    int parent_pid;     /* backend pid the parent is using */
    PGconn *parent_conn;
} fork_arg_t;

static int child_uses_pool(void *p)
{
    fork_arg_t *a = p;
    for (int i = 0; i < 3; i++) {
        PGconn *c = pool_getconn(a->pool);
        if (!c) {
            fprintf(stderr, "child: pool_getconn: %s\n", pool_errmsg());
            return 1;
        }
        if (PQbackendPID(c) == a->parent_pid)
            return 2; /* inherited, not fresh */
        if (test_query_int(c, "SELECT 1") != 1)
            return 3;
        if (pool_putconn(a->pool, c) != POOL_OK)
            return 4;
    }
    pool_stats_t st;
    pool_get_stats(a->pool, &st);
    if (st.total < 1 || st.total > 2)
        return 5;
    pool_destroy(a->pool);
    return 0;
}

static void test_child_gets_fresh_connections_and_parent_sessions_survive(void **state)
{
    skip_if_sanitized();
    pool_t *pool = test_pool("fork_fresh", 1, 2, 0);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    assert_true(test_exec_ok(c, "SET work_mem = '7MB'")); /* session state to keep */
    pool_putconn(pool, c);

    fork_arg_t a = {.pool = pool, .parent_pid = pid};
    assert_int_equal(run_child(child_uses_pool, &a), 0);

    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid); /* the same session, alive */
    PGresult *r = PQexec(c, "SHOW work_mem");
    assert_string_equal(PQgetvalue(r, 0, 0), "7MB");
    PQclear(r);
    pool_putconn(pool, c);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}

static int child_returns_parent_conn(void *p)
{
    fork_arg_t *a = p;
    /* Borrowed before the fork: returning it drops it without a word to the
       server, and the child's own borrowing gets a fresh one. */
    if (pool_putconn(a->pool, a->parent_conn) != POOL_OK)
        return 1;
    PGconn *c = pool_getconn(a->pool);
    if (!c || PQbackendPID(c) == a->parent_pid)
        return 2;
    pool_putconn(a->pool, c);
    pool_destroy(a->pool);
    return 0;
}

static void test_child_returning_a_connection_borrowed_before_fork_leaves_it_alone(void **state)
{
    skip_if_sanitized();
    pool_t *pool = test_pool("fork_borrowed", 1, 2, 0);
    PGconn *c = pool_getconn(pool);
    fork_arg_t a = {.pool = pool, .parent_pid = test_backend_pid(c), .parent_conn = c};
    assert_int_equal(run_child(child_returns_parent_conn, &a), 0);
    assert_int_equal(test_query_int(c, "SELECT 11"), 11); /* still ours, still alive */
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_destroy(pool);
}

static int child_destroys_only(void *p)
{
    fork_arg_t *a = p;
    pool_destroy(a->pool);
    return 0;
}

static void test_child_destroying_the_pool_leaves_parent_sessions_alone(void **state)
{
    skip_if_sanitized();
    pool_t *pool = test_pool("fork_destroy", 1, 2, 0);
    PGconn *c = pool_getconn(pool);
    int pid = test_backend_pid(c);
    pool_putconn(pool, c);
    fork_arg_t a = {.pool = pool};
    assert_int_equal(run_child(child_destroys_only, &a), 0);
    c = pool_getconn(pool);
    assert_int_equal(test_backend_pid(c), pid);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

typedef struct busy {
    pool_t *pool;
    atomic_bool stop;
} busy_t;

static void *keep_busy(void *arg)
{
    busy_t *b = arg;
    while (!atomic_load(&b->stop)) {
        PGconn *c = pool_getconn(b->pool);
        if (c)
            pool_putconn(b->pool, c);
    }
    return NULL;
}

static int child_quick_use(void *p)
{
    fork_arg_t *a = p;
    PGconn *c = pool_getconn_timeout(a->pool, 5000);
    if (!c) {
        fprintf(stderr, "child: pool_getconn: %s\n", pool_errmsg());
        return 1;
    }
    if (test_query_int(c, "SELECT 1") != 1) {
        fprintf(stderr, "child: query failed: %s\n", PQerrorMessage(c));
        return 2;
    }
    pool_putconn(a->pool, c);
    pool_destroy(a->pool);
    return 0;
}

static bool pool_has_two_open(void *pool)
{
    pool_stats_t st;
    return pool_get_stats(pool, &st) == POOL_OK && st.total == 2;
}

static void test_fork_while_other_threads_use_the_pool(void **state)
{
    skip_if_sanitized();
    pool_t *pool = test_pool("fork_busy", 1, 2, 0);
    busy_t b = {.pool = pool};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, keep_busy, &b);
    /* Grown to 2 first: a fork during a connect is the next test's. */
    assert_true(test_wait_for(pool_has_two_open, pool, 10000));
    fork_arg_t a = {.pool = pool};
    for (int i = 0; i < 5; i++)
        assert_int_equal(run_child(child_quick_use, &a), 0);
    atomic_store(&b.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 0);
    pool_destroy(pool);
}


/* The child's first call on the pool drops the parent's attempt: its socket
   is closed (so the child holds none), and under valgrind nothing is lost. */
static int child_finds_connect_in_progress(void *p)
{
    fork_arg_t *a = p;
    int before = test_count_sockets();
    pool_stats_t st;
    if (pool_get_stats(a->pool, &st) != POOL_OK || st.connecting != 0)
        return 1;
    int after = test_count_sockets();
    if (after != before - 1) {
        fprintf(stderr, "child: %d sockets before its first call, %d after\n", before, after);
        return 2;
    }
    pool_destroy(a->pool);
    return 0;
}

static void test_child_drops_the_parents_connect_in_progress(void **state)
{
    skip_if_sanitized();
    /* A server that accepts and never answers: the worker's attempt waits
       between two of libpq's steps, as every connect does most of its time. */
    char dir[] = "/tmp/pgpool-silent.XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.5999", dir);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(l, 8), 0);

    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=%s port=5999 dbname=x user=x", dir);
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = 1;
    cfg.connect_timeout_ms = 60000;
    pool_t *pool = test_pool_create(&cfg);
    assert_null(pool_getconn_timeout(pool, 0)); /* asks a worker for one */
    assert_true(test_wait_readable(l, 10000));
    int s = accept(l, NULL, NULL);
    assert_true(s >= 0);
    assert_true(test_wait_readable(s, 10000)); /* the startup packet */
    /* libpq returns from PQconnectStartParams just after sending it; the
       attempt publishes its PGconn then (inflight.c). */
    test_sleep_ms(200);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.connecting, 1);

    fork_arg_t a = {.pool = pool};
    assert_int_equal(run_child(child_finds_connect_in_progress, &a), 0);
    pool_destroy(pool); /* stops the attempt */
    close(s);
    close(l);
    unlink(sa.sun_path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_gets_fresh_connections_and_parent_sessions_survive),
        cmocka_unit_test(test_child_returning_a_connection_borrowed_before_fork_leaves_it_alone),
        cmocka_unit_test(test_child_destroying_the_pool_leaves_parent_sessions_alone),
        cmocka_unit_test(test_fork_while_other_threads_use_the_pool),
        cmocka_unit_test(test_child_drops_the_parents_connect_in_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
