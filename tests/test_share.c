/* SPDX-License-Identifier: MIT */
/*
 * test_share.c - three processes, each with a pool configured for 15, share
 * a server that lets their role have 20 connections: they start together
 * under load (15 threads each), the third leaves halfway through.
 * Without fair_share: the server refuses the excess (53300), each pool
 * refused lowers its ceiling and backs off, no caller fails, refusals stay a
 * trickle (not a storm), the two left grow into the slots freed; but the
 * shares come out first come, first served (a pool that reached its maximum
 * is never refused, so never yields).  With fair_share: each pool settles at
 * or under its share of the 20 (7 + 6 + 6: one slot is kept free for a pool
 * that holds nothing yet) and the two left grow to 10 + 9.  Each child reports its pool's state every 100 ms through a pipe;
 * the parent prints the refusals, the shares, the time to settle and the
 * time to grow back.
 */
#include "harness.h"

#include <poll.h>
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

/* The census' findings, for the test's output: which pool, when. */
static void child_log(int level, const char *msg, void *arg)
{
    if (strncmp(msg, "fair share:", 11) == 0 || level <= POOL_LOG_WARN)
        fprintf(stderr, "pool %d at %lld ms: %s\n", *(int *)arg, (long long)(test_now_ms() % 100000), msg);
}

static int child_main(int id, int out, int run_ms, int fair)
{
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE, test_conninfo("share"));
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = 15;
    cfg.fair_share = fair;
    cfg.acquire_timeout_ms = 30000;
    cfg.on_log = child_log;
    cfg.arg = &id;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    if (!pool)
        return 1;
    test_load_t l = {.pool = pool, .threads = THREADS, .check = test_load_exec,
                     .arg = "SELECT pg_sleep(0.005)"};
    test_load_start(&l);
    int64_t t0 = test_now_ms();
    for (int64_t now = t0; now - t0 < run_ms; now = test_now_ms()) {
        pool_stats_t st;
        pool_get_stats(pool, &st);
        sample_t s = {id, (int)(now - t0), st.total, st.effective_max, (int)st.server_refusals,
                      (int)atomic_load(&l.errors)};
        if (write(out, &s, sizeof s) != sizeof s)
            break;
        test_sleep_ms(100);
    }
    test_load_stop(&l);
    int failed = (int)atomic_load(&l.errors);
    if (failed)
        fprintf(stderr, "pool %d: %d failed: %s\n", id, failed, l.first_error);
    pool_destroy(pool);
    return failed == 0 ? 0 : 2;
}

/* This program, for run_three's children: argv[0] (under valgrind,
   /proc/self/exe is valgrind's own). */
static const char *self_path;

/* What one run shows. */
typedef struct run {
    sample_t last[POOLS];   /* each pool's latest sample */
    int most[POOLS];        /* each pool's most connections in the second before the exit */
    int at_exit[POOLS];     /* and its last sample before the exit */
    int refusals, first_second, before_exit, failed_children;
    int settle_ms;          /* from the start until no pool held more than SHARE again */
    int regrow_ms;          /* from the exit until the two left held more than before_exit
                               (with fair_share: REGROWN each), -1: never */
} run_t;

#define SHARE 7   /* 20, less one kept free for a newcomer, / 3: 7 + 6 + 6 */
#define REGROWN 9 /* of the 10 + 9 that the two left may have then */

static void run_three(int fair, run_t *run)
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
            /* A fresh image, not a fork of this multi-threaded process:
               the sanitizers' runtimes cannot start threads in such a
               child ("dup thread with used id"). */
            char args[4][16];
            snprintf(args[0], sizeof args[0], "%d", i);
            snprintf(args[1], sizeof args[1], "%d", fds[1]);
            snprintf(args[2], sizeof args[2], "%d", i == POOLS - 1 ? EARLY_EXIT_MS : RUN_MS);
            snprintf(args[3], sizeof args[3], "%d", fair);
            execl(self_path, self_path, "--child", args[0], args[1], args[2], args[3],
                  (char *)NULL);
            _exit(127);
        }
    }
    close(fds[1]);
    memset(run, 0, sizeof *run);
    run->regrow_ms = run->first_second = -1;
    sample_t s;
    while (read(fds[0], &s, sizeof s) == sizeof s) {
        run->last[s.pool] = s;
        int refusals = 0;
        for (int i = 0; i < POOLS; i++)
            refusals += run->last[i].refusals;
        run->refusals = refusals;
        if (run->first_second < 0 && s.ms >= 1000)
            run->first_second = refusals; /* the start's burst */
        if (s.ms < EARLY_EXIT_MS && s.ms >= EARLY_EXIT_MS - 1000 && s.open > run->most[s.pool])
            run->most[s.pool] = s.open;
        if (s.ms < EARLY_EXIT_MS)
            run->at_exit[s.pool] = s.open;
        if (s.ms < EARLY_EXIT_MS && s.open > SHARE)
            run->settle_ms = s.ms + 100;
        if (s.pool != POOLS - 1 && s.ms < EARLY_EXIT_MS)
            run->before_exit = run->last[0].open + run->last[1].open;
        bool grown = fair ? run->last[0].open >= REGROWN && run->last[1].open >= REGROWN
                          : run->last[0].open + run->last[1].open > run->before_exit;
        if (s.pool != POOLS - 1 && s.ms > EARLY_EXIT_MS && run->regrow_ms < 0 && grown)
            run->regrow_ms = s.ms - EARLY_EXIT_MS;
    }
    for (int i = 0; i < POOLS; i++) {
        int status = 0;
        waitpid(pid[i], &status, 0);
        run->failed_children += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(fds[0]);
    test_admin_int("DROP ROLE IF EXISTS " ROLE);
    print_message("fair_share %d: limit %d, 3 pools of 15 under 15 threads each for %d s: %d "
                  "refusals (%d in the first second); before the third left they held %d + %d + "
                  "%d (in its last second at most %d + %d + %d; at or under %d each after %d "
                  "ms); the two left "
                  "held %d, then %d + %d at the end (effective_max %d, %d), grown back within "
                  "%d ms\n",
                  fair, LIMIT, RUN_MS / 1000, run->refusals, run->first_second, run->at_exit[0],
                  run->at_exit[1], run->at_exit[2], run->most[0],
                  run->most[1], run->most[2], SHARE, run->settle_ms, run->before_exit,
                  run->last[0].open, run->last[1].open, run->last[0].effective_max,
                  run->last[1].effective_max, run->regrow_ms);
}

static void test_without_fair_share_first_come_first_served(void **state)
{
    run_t run;
    run_three(0, &run);
    assert_int_equal(run.failed_children, 0); /* no caller failed, in any pool */
    /* Samples 100 ms apart: a pool may have lost a connection the others
       have not taken yet, or the other way round. */
    assert_true(run.at_exit[0] + run.at_exit[1] + run.at_exit[2] <= LIMIT + 2);
    assert_true(run.refusals > 0);
    assert_true(run.refusals < 300); /* bounded bursts, not a storm */
    assert_true(run.regrow_ms >= 0); /* the freed slots were taken */
    for (int i = 0; i < 2; i++)
        assert_true(run.last[i].open <= 15 && run.last[i].open >= 1);
}

static void test_with_fair_share_each_settles_at_its_share(void **state)
{
    run_t run;
    run_three(1, &run);
    assert_int_equal(run.failed_children, 0);
    assert_true(run.refusals < 300);
    for (int i = 0; i < POOLS; i++)
        assert_true(run.most[i] >= 1 && run.most[i] <= SHARE); /* settled at or under its share */
    assert_true(run.settle_ms < EARLY_EXIT_MS - 1000);
    assert_true(run.regrow_ms >= 0); /* both grew to their new share */
    for (int i = 0; i < 2; i++)
        assert_true(run.last[i].open <= 10 && run.last[i].effective_max <= 10);
}

/* ---- one pool: the name, the limits read, a census that fails ------------ */

#define ROLE2 "pgpool_share_one"

static char *show_name(pool_t *pool, char *buf, size_t len)
{
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    PGresult *r = PQexec(c, "SHOW application_name");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    pool_putconn(pool, c);
    return buf;
}

/* name followed by " #" and 8 hex digits, nothing else. */
static bool is_marked(const char *got, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(got, name, n) != 0 || strncmp(got + n, " #", 2) != 0 || strlen(got + n + 2) != 8)
        return false;
    return strspn(got + n + 2, "0123456789abcdef") == 8;
}

static pool_t *fair_pool(const char *conninfo, int max, test_log_t *log)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 1;
    cfg.max_size = max;
    cfg.fair_share = 1;
    cfg.acquire_timeout_ms = 10000;
    cfg.on_log = test_log_cb;
    cfg.arg = log;
    return test_pool_create(&cfg);
}

static void test_connections_carry_the_name_and_the_pools_mark(void **state)
{
    test_log_t log = {0};
    char got[128], conninfo[1024], longname[101];
    pool_t *pool = fair_pool(test_conninfo("shareapp"), 2, &log);
    assert_true(is_marked(show_name(pool, got, sizeof got), "shareapp"));
    assert_true(test_log_contains(&log, "connections are named \"shareapp #"));
    assert_true(test_log_contains(&log, "application_name \"shareapp\""));
    pool_t *other = fair_pool(test_conninfo("shareapp"), 2, NULL);
    char other_name[128];
    assert_string_not_equal(show_name(other, other_name, sizeof other_name), got); /* a mark each */
    pool_destroy(other);
    pool_destroy(pool);

    /* None configured: pgpool's own name, and the log says so. */
    memset(&log, 0, sizeof log);
    const char *dsn = getenv("PGPOOL_TEST_DSN");
    pool = fair_pool(dsn, 2, &log);
    assert_true(is_marked(show_name(pool, got, sizeof got), "pgpool"));
    assert_true(test_log_contains(&log, "no application_name set"));
    pool_destroy(pool);

    /* Too long: cut so that the mark survives the server's 63 bytes. */
    memset(longname, 'n', 100);
    longname[100] = '\0';
    snprintf(conninfo, sizeof conninfo, "%s application_name=%s", dsn, longname);
    pool = fair_pool(conninfo, 2, NULL);
    show_name(pool, got, sizeof got);
    assert_int_equal(strlen(got), 63);
    assert_true(is_marked(got, longname + 100 - 53));
    pool_destroy(pool);

    /* Without fair_share the name is the conninfo's, untouched. */
    pool = test_pool("shareplain", 1, 2, 0);
    assert_string_equal(show_name(pool, got, sizeof got), "shareplain");
    pool_destroy(pool);
}

static bool effective_max_is(pool_t *pool, int want, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    pool_stats_t st;
    do {
        pool_get_stats(pool, &st);
        if (st.effective_max == want)
            return true;
        test_sleep_ms(20);
    } while (test_now_ms() < deadline);
    print_message("effective_max %d, wanted %d\n", st.effective_max, want);
    return false;
}

static int reset_role(void **state)
{
    test_admin_int("ALTER DATABASE postgres CONNECTION LIMIT -1");
    test_admin_int("GRANT SELECT ON pg_stat_activity TO PUBLIC");
    test_admin_int("DROP ROLE IF EXISTS " ROLE2);
    return 0;
}

/* Others' backends of the same role and database leave less to share; the
   share grows (rechecked every second under load) once they are gone. */
static void test_the_share_is_what_the_limits_leave(void **state)
{
    reset_role(state);
    test_admin_int("CREATE ROLE " ROLE2 " LOGIN CONNECTION LIMIT 10");
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE2, test_conninfo("sharelimits"));
    PGconn *others[3];
    for (int i = 0; i < 3; i++) {
        char theirs[1024];
        snprintf(theirs, sizeof theirs, "%s user=" ROLE2, test_conninfo("someone_else"));
        others[i] = PQconnectdb(theirs);
        assert_int_equal(PQstatus(others[i]), CONNECTION_OK);
    }
    test_log_t log = {0};
    pool_t *pool = fair_pool(conninfo, 15, &log);
    /* 10, less the 3 others hold, less one kept free for a newcomer */
    assert_true(effective_max_is(pool, 6, 5000));
    assert_true(test_log_contains(&log, "role limit 10, database limit none"));
    assert_true(test_log_contains(&log, "7 slots left to 1 pool"));
    assert_true(test_log_contains(&log, "one kept free for a newcomer, this pool's share is 6"));
    for (int i = 0; i < 3; i++)
        PQfinish(others[i]);
    test_load_t load = {.pool = pool, .threads = 12};
    test_load_start(&load);
    bool grew = effective_max_is(pool, 9, 5000);
    test_load_stop(&load);
    assert_true(grew);
    assert_int_equal(load.errors, 0);

    /* A database's limit binds as well: 6, less the 3 that others hold, less
       the one kept free. */
    pool_destroy(pool);
    test_admin_int("ALTER ROLE " ROLE2 " CONNECTION LIMIT -1");
    test_admin_int("ALTER DATABASE postgres CONNECTION LIMIT 6");
    for (int i = 0; i < 3; i++) {
        char theirs[1024];
        snprintf(theirs, sizeof theirs, "%s user=" ROLE2, test_conninfo("someone_else"));
        others[i] = PQconnectdb(theirs);
        assert_int_equal(PQstatus(others[i]), CONNECTION_OK);
    }
    memset(&log, 0, sizeof log);
    pool = fair_pool(conninfo, 15, &log);
    assert_true(effective_max_is(pool, 2, 5000));
    assert_true(test_log_contains(&log, "database limit 6"));
    for (int i = 0; i < 3; i++)
        PQfinish(others[i]);
    pool_destroy(pool);
    reset_role(state);
}

/* A role that may not read pg_stat_activity: said once, no share, and the
   pool works as without fair_share. */
static void test_a_census_that_fails_leaves_the_pool_working(void **state)
{
    reset_role(state);
    test_admin_int("CREATE ROLE " ROLE2 " LOGIN");
    test_admin_int("REVOKE SELECT ON pg_stat_activity FROM PUBLIC");
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo, "%s user=" ROLE2, test_conninfo("sharedenied"));
    test_log_t log = {0};
    pool_t *pool = fair_pool(conninfo, 4, &log);
    test_load_t load = {.pool = pool, .threads = 6};
    test_load_start(&load);
    assert_true(test_load_progress(&load, 200, 10000));
    int64_t deadline = test_now_ms() + 3000; /* a few censuses, each under load */
    while (test_now_ms() < deadline && !test_log_contains(&log, "could not read"))
        test_sleep_ms(20);
    test_sleep_ms(1500);
    test_load_stop(&load);
    assert_int_equal(load.errors, 0);
    assert_int_equal(test_log_count(&log, "could not read the server's limits"), 1);
    assert_true(test_log_contains(&log, "permission denied"));
    pool_stats_t st;
    pool_get_stats(pool, &st);
    assert_int_equal(st.effective_max, 4);
    pool_destroy(pool);
    reset_role(state);
}

/* A forked child's pool is a pool of its own: its own mark.  Skipped under
   the sanitizers, as test_fork is (their runtimes cannot start threads in
   the child of a multi-threaded process). */
static void test_a_forked_child_draws_its_own_mark(void **state)
{
    if (getenv("PGPOOL_TEST_SANITIZED"))
        skip();
    pool_t *pool = fair_pool(test_conninfo("sharefork"), 2, NULL);
    char mine[128], theirs[128] = {0};
    show_name(pool, mine, sizeof mine);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char got[128];
        PGconn *c = pool_getconn(pool);
        PGresult *r = c ? PQexec(c, "SHOW application_name") : NULL;
        snprintf(got, sizeof got, "%s", r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "");
        PQclear(r);
        if (c)
            pool_putconn(pool, c);
        pool_destroy(pool);
        _exit(write(fds[1], got, strlen(got) + 1) > 0 ? 0 : 1);
    }
    close(fds[1]);
    assert_true(read(fds[0], theirs, sizeof theirs - 1) > 0);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(is_marked(theirs, "sharefork"));
    assert_string_not_equal(theirs, mine);
    assert_true(is_marked(show_name(pool, mine, sizeof mine), "sharefork")); /* the parent's goes on */
    pool_destroy(pool);
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    if (argc == 6 && strcmp(argv[1], "--child") == 0) /* one of run_three's processes */
        return child_main(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connections_carry_the_name_and_the_pools_mark),
        cmocka_unit_test_teardown(test_the_share_is_what_the_limits_leave, reset_role),
        cmocka_unit_test_teardown(test_a_census_that_fails_leaves_the_pool_working, reset_role),
        cmocka_unit_test(test_a_forked_child_draws_its_own_mark),
        cmocka_unit_test(test_without_fair_share_first_come_first_served),
        cmocka_unit_test(test_with_fair_share_each_settles_at_its_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
