/* SPDX-License-Identifier: MIT */
/*
 * test_fdlimit.c - the process runs out of descriptors (RLIMIT_NOFILE
 * lowered to what is open, the holes below it filled): callers get libpq's
 * reason, "Too many open files", within their deadline, and the pool works
 * again by itself once descriptors are free.  Not run under valgrind, which
 * keeps descriptors of its own above the limit it reports and refuses a
 * lowered limit's effects on them.
 */
#include "harness.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static struct rlimit saved;
static int fillers[4096];
static int nfillers;


/* No descriptor can be had any more. */
static void exhaust(void)
{
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct rlimit low = {.rlim_cur = (rlim_t)test_highest_fd() + 1, .rlim_max = saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    nfillers = 0;
    for (int fd; nfillers < 4096 && (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
        fillers[nfillers++] = fd; /* the holes below the limit */
    assert_int_equal(open("/dev/null", O_RDONLY), -1);
}

static void relieve(void)
{
    while (nfillers > 0)
        close(fillers[--nfillers]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

static void test_out_of_descriptors_callers_get_the_reason_and_the_pool_recovers(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "fdlimit");
    cfg.min_size = 1;
    cfg.max_size = 2;
    pool_t *pool = test_pool_create(&cfg);
    PGconn *held = pool_getconn(pool);

    exhaust();
    /* One more is wanted: the attempt fails for want of a socket.  Something
       is checked out, so the caller waits for it within its deadline and
       is then told why nothing new could be opened. */
    test_getconn_t g = test_getconn_timed(pool, 1000);
    relieve();
    print_message("out of descriptors: %s after %lld ms: %s\n", pool_strerror(g.err),
                  (long long)g.took_ms, g.msg);
    assert_null(g.conn);
    assert_int_equal(g.err, POOL_ETIMEDOUT);
    assert_true(g.took_ms >= 990 && g.took_ms < 3000);
    assert_non_null(strstr(g.msg, "Too many open files"));

    /* Descriptors again: the workers' next attempt succeeds by itself. */
    PGconn *c = pool_getconn_timeout(pool, 5000);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
    pool_putconn(pool, held);

    /* Nothing open that could come back: the caller fails at once. */
    pool_destroy(pool);
    cfg.min_size = 0;
    pool = test_pool_create(&cfg);
    exhaust();
    g = test_getconn_timed(pool, 5000);
    relieve();
    assert_null(g.conn);
    assert_int_equal(g.err, POOL_ECONNECT);
    assert_true(g.took_ms < 2000);
    assert_non_null(strstr(g.msg, "Too many open files"));
    c = pool_getconn_timeout(pool, 5000);
    assert_non_null(c);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_descriptors_callers_get_the_reason_and_the_pool_recovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
