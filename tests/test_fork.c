/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - a child that uses an inherited pool gets fresh connections,
 * and the parent's sessions are untouched by anything the child does.
 */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
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

static void test_fork_while_other_threads_use_the_pool(void **state)
{
    skip_if_sanitized();
    pool_t *pool = test_pool("fork_busy", 1, 2, 0);
    busy_t b = {.pool = pool};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, keep_busy, &b);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_gets_fresh_connections_and_parent_sessions_survive),
        cmocka_unit_test(test_child_returning_a_connection_borrowed_before_fork_leaves_it_alone),
        cmocka_unit_test(test_child_destroying_the_pool_leaves_parent_sessions_alone),
        cmocka_unit_test(test_fork_while_other_threads_use_the_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
