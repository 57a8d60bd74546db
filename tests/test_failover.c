/* SPDX-License-Identifier: MIT */
/*
 * test_failover.c - a primary and a streaming standby (failover_harness.sh),
 * eight writer threads on host=A,B target_session_attrs=read-write, and the
 * things that happen to such a pair: a clean failover (A stopped, B
 * promoted), the old primary back as a standby, a primary fenced read-only, a
 * primary black-holed on the network, and a pool that wants standbys seeing
 * its standby promoted.  Each scenario gets a fresh pair.  Recovery times are
 * printed as "failover-report: <scenario> <ms>"; PGPOOL_FAILOVER_RUNS=N runs
 * every scenario N times (for the p50 and max in the note).
 */
#include "harness.h"
#include "fault_proxy.h"

#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITERS 8
#define CONNECT_TIMEOUT_MS 5000   /* generous: a loaded machine (sanitizers) is slow */
#define BLACK_HOLE_TIMEOUT_MS 1000 /* connect_timeout_ms where a host is black-holed */
#define STATEMENT_MS 1000 /* a writer gives up on a statement after this (black hole) */

static char dir[256];
static const char *script;
static int port_a, port_b;

/* ---- the pair --------------------------------------------------------------- */

static bool harness(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static bool harness(const char *fmt, ...)
{
    char args[256], cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s %s", script, dir, args);
    return system(cmd) == 0;
}

/* The conninfo of the node on port (a static buffer per call site is not
   needed: each caller uses it at once). */
static const char *node(int port)
{
    static char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=postgres user=postgres", port);
    return ci;
}

/* Both nodes, A (reached on port a: A's own, or a proxy's) first, then B. */
static const char *pair_hosts(int a)
{
    static char hp[128];
    snprintf(hp, sizeof hp, "host=127.0.0.1,127.0.0.1 port=%d,%d", a, port_b);
    return hp;
}

static bool node_exec(int port, const char *sql)
{
    PGconn *c = PQconnectdb(node(port));
    bool ok = PQstatus(c) == CONNECTION_OK && test_exec_ok(c, sql);
    PQfinish(c);
    return ok;
}

static int pair_up(void **state)
{
    if (!script)
        return 0;
    port_a = test_free_port();
    port_b = test_free_port();
    while (port_b == port_a)
        port_b = test_free_port();
    if (!harness("start %d %d", port_a, port_b) ||
        !node_exec(port_a, "CREATE TABLE failover_t (id bigserial PRIMARY KEY, v int)"))
        return -1;
    /* The table reaches the standby before anything is measured. */
    int64_t deadline = test_now_ms() + 10000;
    while (!node_exec(port_b, "SELECT 1 FROM failover_t LIMIT 1"))
        if (test_now_ms() > deadline)
            return -1;
        else
            test_sleep_ms(20);
    return 0;
}

static int pair_down(void **state)
{
    if (script)
        harness("destroy");
    return 0;
}

/* ---- the writers ------------------------------------------------------------ */

typedef struct writers {
    pool_t *pool;
    const char *sql;            /* pg_is_in_recovery() first, then the write (if any) */
    atomic_bool stop;
    _Atomic int64_t mark_ms;    /* the event the test times recovery from */
    _Atomic int64_t first_ok_ms; /* first success that began after the mark */
    atomic_int ok, failed;
    atomic_int failed_after_recovery; /* failures that began after first_ok_ms */
    atomic_int on_a_after_mark;       /* successes on A that began after the mark */
    atomic_int in_recovery;           /* successes that found pg_is_in_recovery() true */
    atomic_int on_primary;            /* ... and false */
    atomic_int read_only_after_mark;  /* 25006 on a checkout that began after the mark */
    atomic_int econnect_fast_after_mark; /* pool_getconn failing at once with POOL_ECONNECT */
    pthread_t t[WRITERS];
} writers_t;

static void *writer_main(void *arg)
{
    writers_t *w = arg;
    while (!atomic_load(&w->stop)) {
        int64_t begun = test_now_ms();
        int64_t mark = atomic_load(&w->mark_ms);
        bool after_mark = mark > 0 && begun >= mark;
        PGconn *c = pool_getconn_timeout(w->pool, 2000);
        test_run_t rc = TEST_RUN_FAILED;
        test_run_out_t out = {0};
        bool on_a = false;
        if (c) {
            on_a = atoi(PQport(c)) != port_b;
            rc = test_run_within(c, w->sql, STATEMENT_MS, &out);
            if (rc == TEST_RUN_TIMED_OUT)
                pool_discard(w->pool, c); /* a statement left in flight */
            else
                pool_putconn(w->pool, c);
        } else if (after_mark && pool_errcode() == POOL_ECONNECT && test_now_ms() - begun < 1000) {
            atomic_fetch_add(&w->econnect_fast_after_mark, 1);
        }
        int64_t first_ok = atomic_load(&w->first_ok_ms);
        if (rc == TEST_RUN_OK) {
            bool in_recovery = strcmp(out.first, "t") == 0; /* pg_is_in_recovery() */
            atomic_fetch_add(in_recovery ? &w->in_recovery : &w->on_primary, 1);
            atomic_fetch_add(&w->ok, 1);
            if (after_mark) {
                atomic_fetch_add(&w->on_a_after_mark, on_a);
                int64_t none = 0;
                atomic_compare_exchange_strong(&w->first_ok_ms, &none, test_now_ms());
            }
        } else {
            atomic_fetch_add(&w->failed, 1);
            if (first_ok > 0 && begun > first_ok)
                atomic_fetch_add(&w->failed_after_recovery, 1);
            if (after_mark && strcmp(out.sqlstate, "25006") == 0)
                atomic_fetch_add(&w->read_only_after_mark, 1);
            test_sleep_ms(10); /* fail-fast callers would spin otherwise */
        }
    }
    return NULL;
}

static pool_t *pair_pool(const char *hosts_ports, const char *target, const char *extra,
                         int connect_timeout_ms)
{
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "%s dbname=postgres user=postgres target_session_attrs=%s application_name=failover %s",
             hosts_ports, target, extra ? extra : "");
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = WRITERS;
    cfg.connect_timeout_ms = connect_timeout_ms;
    cfg.acquire_timeout_ms = 2000;
    char err[512] = "";
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err);
    return pool;
}

static pool_t *writers_pool(void)
{
    return pair_pool(pair_hosts(port_a), "read-write", NULL, CONNECT_TIMEOUT_MS);
}

#define WRITE_SQL "SELECT pg_is_in_recovery(); INSERT INTO failover_t (v) VALUES (1)"

static void writers_start(writers_t *w, pool_t *pool, const char *sql)
{
    memset(w, 0, sizeof *w);
    w->pool = pool;
    w->sql = sql;
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&w->t[i], NULL, writer_main, w), 0);
    /* Running, and writing: every writer has a connection by now. */
    int64_t deadline = test_now_ms() + 10000;
    while (atomic_load(&w->ok) < 4 * WRITERS) {
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(10);
    }
}

static void writers_stop(writers_t *w)
{
    atomic_store(&w->stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w->t[i], NULL);
}

/* Waits until a write that began after the mark succeeds; how long after
   `since` it did (at most 0: the pool was writing again by then). */
static int64_t recovery_ms(writers_t *w, int64_t since, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    while (atomic_load(&w->first_ok_ms) == 0) {
        if (test_now_ms() > deadline)
            fail_msg("no write succeeded within %d ms of the event (%d ok, %d failed)", timeout_ms,
                     atomic_load(&w->ok), atomic_load(&w->failed));
        test_sleep_ms(5);
    }
    int64_t ms = atomic_load(&w->first_ok_ms) - since;
    return ms > 0 ? ms : 0;
}

static void report(const char *scenario, int64_t ms)
{
    printf("failover-report: %s %lld\n", scenario, (long long)ms);
    fflush(stdout);
}

/* B promoted, the writers' mark set as the promotion begins: how long after
   the promotion returned the first write that began after the mark
   succeeded. */
static int64_t promote_b(writers_t *w)
{
    atomic_store(&w->mark_ms, test_now_ms());
    assert_true(harness("promote-b"));
    return recovery_ms(w, test_now_ms(), 10000);
}

/* A stopped (fast), B promoted. */
static int64_t fail_over(writers_t *w)
{
    assert_true(harness("stop-a fast"));
    return promote_b(w);
}

/* ---- scenarios -------------------------------------------------------------- */

static void test_clean_failover(void **state)
{
    if (!script)
        skip();
    pool_t *pool = writers_pool();
    writers_t w;
    writers_start(&w, pool, WRITE_SQL);
    int64_t recovered = fail_over(&w);
    test_sleep_ms(2000); /* then writes never fail */
    writers_stop(&w);
    report("clean-failover", recovered);
    assert_true(recovered <= 2000);
    assert_int_equal(atomic_load(&w.failed_after_recovery), 0);
    assert_int_equal(atomic_load(&w.on_a_after_mark), 0);
    assert_int_equal(atomic_load(&w.in_recovery), 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(test_host_stats(pool, 0).open, 0); /* every connection on B */
    assert_int_equal(test_host_stats(pool, 1).open, st.total);
    assert_true(st.total > 0);
    pool_destroy(pool);
}

static void test_old_primary_back_as_standby(void **state)
{
    if (!script)
        skip();
    pool_t *pool = writers_pool();
    writers_t w;
    writers_start(&w, pool, WRITE_SQL);
    fail_over(&w);
    assert_true(harness("rejoin-a"));
    /* Once A is no longer put last for failing, every connection is opened
       anew (A first), and A turns each away: nothing moves there. */
    int64_t deadline = test_now_ms() + 20000;
    while (test_host_stats(pool, 0).down) {
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(50);
    }
    assert_int_equal(pool_evict(pool), POOL_OK);
    test_sleep_ms(2000);
    writers_stop(&w);
    assert_int_equal(atomic_load(&w.on_a_after_mark), 0);
    assert_int_equal(atomic_load(&w.in_recovery), 0);
    assert_int_equal(test_host_stats(pool, 0).open, 0);
    assert_true(test_host_stats(pool, 0).connect_errors >= 1);
    assert_int_equal(atomic_load(&w.failed_after_recovery), 0);
    pool_destroy(pool);

    /* A alone: refused at once, with libpq's reason. */
    char hp[128];
    snprintf(hp, sizeof hp, "host=127.0.0.1 port=%d", port_a);
    pool = pair_pool(hp, "read-write", NULL, CONNECT_TIMEOUT_MS);
    int64_t t0 = test_now_ms();
    PGconn *c = pool_getconn_timeout(pool, 5000);
    int64_t elapsed = test_now_ms() - t0;
    if (c)
        fail_msg("a session on the standby was handed out under read-write");
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    if (!strstr(pool_errmsg(), "read-only") && !strstr(pool_errmsg(), "hot standby"))
        fail_msg("no reason given: %s", pool_errmsg());
    report("standby-refused", elapsed);
    assert_true(elapsed < 1000);
    pool_destroy(pool);
}

static void test_fencing(void **state)
{
    if (!script)
        skip();
    /* Pings on every checkout, so that each hears of the fence. */
    const char *hp = pair_hosts(port_a);
    pool_t *pool = pair_pool(hp, "read-write", "pool_ping_idle=0", CONNECT_TIMEOUT_MS);
    writers_t w;
    writers_start(&w, pool, WRITE_SQL);
    /* Two more pools, used by this thread alone, with three connections to
       A each: one pings every checkout; the other never pings, and one of
       its connections is held across the fence. */
    pool_t *pinging = pair_pool(hp, "read-write", "pool_ping_idle=0 pool_min_size=3",
                                CONNECT_TIMEOUT_MS);
    pool_t *quiet = pair_pool(hp, "read-write", "pool_ping_idle=1h pool_min_size=3",
                              CONNECT_TIMEOUT_MS);
    assert_true(test_wait_idle(pinging, 3, 5000));
    assert_true(test_wait_idle(quiet, 3, 5000));
    PGconn *held = pool_getconn(quiet);
    assert_non_null(held);

    test_fence(node(port_a), true);
    atomic_store(&w.mark_ms, test_now_ms());
    int64_t t0 = test_now_ms();
    /* The first ping hears of it: that connection and A's other idle ones
       are closed, and with no primary left the caller fails at once. */
    PGconn *c = pool_getconn_timeout(pinging, 5000);
    if (c)
        fail_msg("a read-only session was handed out after its ping");
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    pool_stats_t st;
    assert_pool_stats(pinging, &st);
    assert_int_equal(st.closed_role, 1);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.closed_evicted, 2);
    pool_destroy(pinging);

    /* The held session hears of it from its own write: 25006. */
    PGresult *r = PQexec(held, "INSERT INTO failover_t (v) VALUES (2)");
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "25006");
    PQclear(r);
    pool_putconn(quiet, held);
    assert_pool_stats(quiet, &st);
    assert_int_equal(st.closed_role, 1);   /* that connection */
    assert_int_equal(st.evictions, 1);     /* and A's idle ones with it */
    assert_int_equal(st.closed_evicted, 2);
    assert_int_equal(test_host_stats(quiet, 0).open, 0);
    pool_destroy(quiet);

    /* The writers' pool: no read-only session is handed out after its ping;
       with no primary left, callers fail fast. */
    int64_t deadline = test_now_ms() + 5000;
    while (atomic_load(&w.econnect_fast_after_mark) == 0) {
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(5);
    }
    report("fencing-fail-fast", test_now_ms() - t0);
    test_sleep_ms(1000);
    writers_stop(&w);
    assert_int_equal(atomic_load(&w.read_only_after_mark), 0);
    assert_int_equal(test_host_stats(pool, 0).open, 0);
    assert_int_equal(test_host_stats(pool, 1).open, 0);
    assert_pool_stats(pool, &st);
    assert_true(st.closed_role >= 1);
    assert_true(st.evictions >= 1);
    pool_destroy(pool);
}

static void test_black_hole(void **state)
{
    if (!script)
        skip();
    char sock[300];
    snprintf(sock, sizeof sock, "%s/.s.PGSQL.%d", dir, port_a);
    fault_proxy_t *proxy = proxy_start(sock);
    assert_non_null(proxy);
    pool_t *pool = pair_pool(pair_hosts(proxy_port(proxy)), "read-write", NULL,
                             BLACK_HOLE_TIMEOUT_MS);
    writers_t w;
    writers_start(&w, pool, WRITE_SQL);
    /* A's network goes silent (A is gone behind it), B is promoted. */
    proxy_set_mode(proxy, PROXY_SILENT);
    assert_true(harness("stop-a immediate"));
    int64_t recovered = promote_b(&w);
    test_sleep_ms(1000);
    writers_stop(&w);
    report("black-hole", recovered);
    assert_true(recovered <= BLACK_HOLE_TIMEOUT_MS + 1000);
    assert_int_equal(atomic_load(&w.on_a_after_mark), 0);
    assert_int_equal(atomic_load(&w.in_recovery), 0);
    pool_destroy(pool);
    proxy_stop(proxy);
}

static void test_standby_pool_sees_its_standby_promoted(void **state)
{
    if (!script)
        skip();
    const char *hp = pair_hosts(port_a);
    pool_t *pool = pair_pool(hp, "standby", NULL, CONNECT_TIMEOUT_MS);
    writers_t w;
    writers_start(&w, pool, "SELECT pg_is_in_recovery()");
    assert_int_equal(atomic_load(&w.on_primary), 0); /* readers on B */
    assert_true(harness("promote-b"));
    int64_t t0 = test_now_ms();
    atomic_store(&w.mark_ms, t0);
    /* B's sessions report the promotion after their next statement and are
       retired; no standby is left, so callers fail at once. */
    int64_t deadline = t0 + 5000;
    while (atomic_load(&w.econnect_fast_after_mark) == 0) {
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(5);
    }
    report("standby-promoted-fail-fast", test_now_ms() - t0);
    int ok_then = atomic_load(&w.ok);
    test_sleep_ms(1000);
    writers_stop(&w);
    assert_int_equal(atomic_load(&w.ok), ok_then); /* nothing served from a primary since */
    assert_int_equal(test_host_stats(pool, 1).open, 0);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_true(st.closed_role >= 1);
    assert_int_equal(st.total, 0);
    pool_destroy(pool);
}

int main(void)
{
    script = getenv("PGPOOL_FAILOVER_SCRIPT");
    const char *d = getenv("PGPOOL_FAILOVER_DIR");
    snprintf(dir, sizeof dir, "%s", d ? d : "/tmp/pgpool-failover");
    const char *runs_env = getenv("PGPOOL_FAILOVER_RUNS");
    int runs = runs_env ? atoi(runs_env) : 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_failover, pair_up, pair_down),
        cmocka_unit_test_setup_teardown(test_old_primary_back_as_standby, pair_up, pair_down),
        cmocka_unit_test_setup_teardown(test_fencing, pair_up, pair_down),
        cmocka_unit_test_setup_teardown(test_black_hole, pair_up, pair_down),
        cmocka_unit_test_setup_teardown(test_standby_pool_sees_its_standby_promoted, pair_up,
                                        pair_down),
    };
    int failed = 0;
    for (int i = 0; i < (runs > 0 ? runs : 1); i++)
        failed += cmocka_run_group_tests(tests, NULL, NULL);
    return failed;
}
