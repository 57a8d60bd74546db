/* SPDX-License-Identifier: MIT */
/*
 * test_share.c - three processes, each with a pool configured for 15, share
 * a server that lets their role have 20 connections: they start together
 * under load, the server refuses the excess (53300), each pool refused lowers
 * its ceiling and backs off, no caller fails, refusals stay a trickle (not a
 * storm), and when one process exits the other two grow into the slots it
 * freed.  Each child reports its pool's state every 100 ms through a pipe;
 * the parent prints the refusals, the shares and the time to grow back.
 * Without fair_share the shares are first come, first served (a pool that
 * reached its maximum is never refused, so never yields): fair shares are
 * fair_share's job (issue 14, not yet built).
 */
#include "harness.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROLE "pgpool_share"
#define LIMIT 20
#define POOLS 3
#define THREADS 15
#define RUN_MS 8000
#define EARLY_EXIT_MS 4000 /* the third pool leaves then */

typedef struct sample {
    int pool, ms, open, effective_max, refusals, failed;
} sample_t;

typedef struct child_load {
    pool_t *pool;
    atomic_bool stop;
    atomic_int failed;
} child_load_t;

static void *child_borrow(void *arg)
{
    child_load_t *l = arg;
    while (!atomic_load(&l->stop)) {
        PGconn *c = pool_getconn_timeout(l->pool, 30000);
        if (!c) {
            atomic_fetch_add(&l->failed, 1);
            continue;
        }
        PQclear(PQexec(c, "SELECT pg_sleep(0.005)"));
        pool_putconn(l->pool, c);
    }
    return NULL;
}

/* One process: a pool of 15 under 15 threads for run_ms, a sample a 100 ms. */
static int child_main(int id, int out, int run_ms)
{
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE, test_conninfo("share"));
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = 15;
    cfg.on_log = NULL;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    if (!pool)
        return 1;
    child_load_t l = {.pool = pool};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, child_borrow, &l);
    int64_t t0 = test_now_ms();
    for (int64_t now = t0; now - t0 < run_ms; now = test_now_ms()) {
        pool_stats_t st;
        pool_get_stats(pool, &st);
        sample_t s = {id, (int)(now - t0), st.total, st.effective_max, (int)st.server_refusals,
                      atomic_load(&l.failed)};
        if (write(out, &s, sizeof s) != sizeof s)
            break;
        test_sleep_ms(100);
    }
    atomic_store(&l.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    int failed = atomic_load(&l.failed);
    pool_destroy(pool);
    return failed == 0 ? 0 : 2;
}

static void test_three_pools_share_a_limit_of_20_and_grow_back(void **state)
{
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    test_admin_int("CREATE ROLE " ROLE " LOGIN CONNECTION LIMIT 20");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid[POOLS];
    for (int i = 0; i < POOLS; i++) {
        fflush(NULL);
        pid[i] = fork();
        assert_true(pid[i] >= 0);
        if (pid[i] == 0) {
            close(fds[0]);
            _exit(child_main(i, fds[1], i == POOLS - 1 ? EARLY_EXIT_MS : RUN_MS));
        }
    }
    close(fds[1]);
    /* The latest sample of each pool, and what the run shows. */
    sample_t last[POOLS] = {{0}};
    int regrow_ms = -1, total_refusals = 0, first_second = -1, before_exit = 0;
    int shares[POOLS] = {0};
    sample_t s;
    while (read(fds[0], &s, sizeof s) == sizeof s) {
        last[s.pool] = s;
        int refusals = 0;
        for (int i = 0; i < POOLS; i++)
            refusals += last[i].refusals;
        total_refusals = refusals;
        if (first_second < 0 && s.ms >= 1000)
            first_second = refusals; /* the start's burst */
        if (s.ms < EARLY_EXIT_MS)
            shares[s.pool] = s.open;
        if (s.pool != POOLS - 1 && s.ms < EARLY_EXIT_MS)
            before_exit = last[0].open + last[1].open;
        /* Grown back: the two left hold more than before the third left. */
        if (s.pool != POOLS - 1 && s.ms > EARLY_EXIT_MS && regrow_ms < 0 &&
            last[0].open + last[1].open > before_exit + 2)
            regrow_ms = s.ms - EARLY_EXIT_MS;
    }
    int failed_children = 0;
    for (int i = 0; i < POOLS; i++) {
        int status = 0;
        waitpid(pid[i], &status, 0);
        failed_children += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(fds[0]);
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    print_message("limit %d, 3 pools of 15 under 15 threads each for %d s: %d refusals (%d in the "
                  "first second); shares before the third left %d + %d + %d; the two left held "
                  "%d, then %d + %d at the end (effective_max %d, %d), more within %d ms\n",
                  LIMIT, RUN_MS / 1000, total_refusals, first_second, shares[0], shares[1],
                  shares[2], before_exit, last[0].open, last[1].open, last[0].effective_max,
                  last[1].effective_max, regrow_ms);
    assert_int_equal(failed_children, 0); /* no caller failed, in any pool */
    assert_true(shares[0] + shares[1] + shares[2] <= LIMIT + 2); /* samples 100 ms apart */
    assert_true(total_refusals > 0);
    assert_true(total_refusals < 300); /* bounded bursts, not a storm */
    assert_true(regrow_ms >= 0);        /* the freed slots were taken */
    for (int i = 0; i < 2; i++)
        assert_true(last[i].open <= 15 && last[i].open >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_pools_share_a_limit_of_20_and_grow_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
