/* SPDX-License-Identifier: MIT */
/*
 * test_oom.c - allocation failure, ours and libpq's.
 *
 * This program replaces malloc and friends (glibc allows it: every
 * allocation in the process, libpq's and glibc's own included, comes here)
 * with wrappers around glibc's that can fail: the Nth allocation of the
 * calling thread (a sweep over N finds every allocation a call makes), or
 * a random share of every thread's (a storm).  It counts allocations still
 * live, so a leak on any failure path shows as a count that does not come
 * back.  Each failure must reach the caller as POOL_ENOMEM with a message
 * that says so, never as bad input; nothing crashes; the pool works again
 * once allocations succeed.  Built without sanitizers only (they bring
 * their own malloc), and not run under valgrind (which replaces this one).
 */
#include "harness.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

static _Thread_local long countdown;     /* > 0: the countdown-th allocation from now fails */
static _Thread_local bool fired;         /* this thread's countdown made one fail */
static _Thread_local unsigned storm_seed;
static atomic_int storm_permille;        /* random failures on every thread */
static atomic_long storm_fired;
static atomic_long live;                 /* allocations not freed yet */

static bool fail_now(void)
{
    if (countdown > 0 && --countdown == 0)
        return fired = true;
    int p = atomic_load_explicit(&storm_permille, memory_order_relaxed);
    if (p > 0 && (int)(rand_r(&storm_seed) % 1000) < p) {
        atomic_fetch_add_explicit(&storm_fired, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

static void *counted(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

void *malloc(size_t size)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_malloc(size));
}

void *calloc(size_t n, size_t size)
{
    if (fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_calloc(n, size));
}

void *realloc(void *p, size_t size)
{
    if (size > 0 && fail_now()) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = __libc_realloc(p, size);
    if (!p && q)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    else if (p && size == 0)
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    return q;
}

/* Never failed, only counted: so that free() balances whatever allocated. */
void *memalign(size_t align, size_t size)
{
    return counted(__libc_memalign(align, size));
}

void *aligned_alloc(size_t align, size_t size)
{
    return counted(__libc_memalign(align, size));
}

int posix_memalign(void **out, size_t align, size_t size)
{
    void *p = counted(__libc_memalign(align, size));
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

void free(void *p)
{
    if (p)
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    __libc_free(p);
}

/* ---- helpers ------------------------------------------------------------- */

static void quiet_log(int level, const char *msg, void *arg)
{
    (void)level, (void)msg, (void)arg; /* no stdio: it allocates */
}

static void oom_config(pool_config_t *cfg, const char *app)
{
    test_config(cfg, app);
    cfg->min_size = 1;
    cfg->max_size = 2;
    cfg->on_log = quiet_log;
}

/* One checkout that runs a query. */
static void serve_one(pool_t *pool)
{
    PGconn *c = pool_getconn_timeout(pool, 10000);
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 1"), 1);
    pool_putconn(pool, c);
}

/* Live allocations once everything a first use caches (libpq, NSS, stdio)
   is in place: a whole cycle first, then the count. */
static long settled_baseline(const char *app)
{
    pool_config_t cfg;
    oom_config(&cfg, app);
    pool_t *pool = test_pool_create(&cfg);
    serve_one(pool);
    pool_destroy(pool);
    return atomic_load(&live);
}

/* Once allocations succeed again the pool serves, and destroying it gives
   back every allocation made since baseline. */
static void expect_whole_then_destroy(pool_t *pool, long baseline)
{
    serve_one(pool);
    pool_destroy(pool);
    assert_int_equal(atomic_load(&live), baseline);
}

/* A failure reported, and truthfully. */
static void expect_enomem(const char *where, long n, const char *msg)
{
    if (pool_errcode() != POOL_ENOMEM || !strstr(msg, "out of memory"))
        fail_msg("%s, allocation %ld failing: %s (%s), not POOL_ENOMEM saying so", where, n,
                 pool_strerror(pool_errcode()), msg);
}

/* ---- the sweeps ------------------------------------------------------------ */

static void test_pool_create_reports_every_allocation_failure_as_enomem(void **state)
{
    long baseline = settled_baseline("oom_create");
    /* pool_* keys too, so that the splitting allocates. */
    char conninfo[512];
    snprintf(conninfo, sizeof conninfo,
             "%s pool_max_size=3 pool_acquire_timeout=5s pool_reset_query='SELECT 1'",
             test_conninfo("oom_create"));
    long n;
    for (n = 1; n < 100000; n++) {
        pool_config_t cfg;
        oom_config(&cfg, "oom_create");
        cfg.conninfo = conninfo;
        char err[POOL_ERRMSG_SIZE] = "";
        fired = false;
        countdown = n;
        pool_t *pool = pool_create(&cfg, err, sizeof err);
        countdown = 0;
        if (!pool)
            expect_enomem("pool_create", n, err);
        else
            pool_destroy(pool);
        assert_int_equal(atomic_load(&live), baseline); /* nothing leaked on the way */
        if (!fired)
            break; /* every allocation pool_create makes has failed once */
    }
    print_message("pool_create: %ld allocation points swept\n", n - 1);
    assert_true(n > 10);
}

static void test_borrowing_and_returning_survive_every_allocation_failure(void **state)
{
    long baseline = settled_baseline("oom_cycle");
    pool_config_t cfg;
    oom_config(&cfg, "oom_cycle");
    cfg.reset_query = "SELECT 1"; /* a round trip on every return */
    cfg.ping_idle_ms = 0;         /* and on every checkout */
    pool_t *pool = test_pool_create(&cfg);
    long n;
    for (n = 1; n < 100000; n++) {
        fired = false;
        countdown = n;
        PGconn *c = pool_getconn_timeout(pool, 5000);
        int rc = c ? pool_putconn(pool, c) : POOL_OK;
        countdown = 0;
        if (!c)
            expect_enomem("pool_getconn", n, pool_errmsg());
        assert_int_equal(rc, POOL_OK);
        pool_stats_t st;
        assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
        assert_int_equal(st.in_use, 0);
        assert_int_equal(st.total, st.idle + st.in_use);
        if (!fired)
            break;
    }
    print_message("pool_getconn + pool_putconn with ping and reset: %ld allocation points swept\n",
                  n - 1);
    expect_whole_then_destroy(pool, baseline);
}

static void test_stats_and_formatting_survive_every_allocation_failure(void **state)
{
    pool_config_t cfg;
    oom_config(&cfg, "oom_stats");
    pool_t *pool = test_pool_create(&cfg);
    static char text[65536];
    struct {
        pool_host_stats_t h;
        char newer[8]; /* a layout unlike the library's: copied through a buffer */
    } hosts[2];
    long n;
    for (n = 1; n < 1000; n++) {
        fired = false;
        countdown = n;
        pool_stats_t st;
        int rc = pool_get_stats(pool, &st);
        int len = rc == POOL_OK ? pool_stats_format(&st, POOL_FORMAT_PROMETHEUS, "x", text,
                                                      sizeof text)
                                : -1;
        int nh = pool_get_host_stats_sized(pool, &hosts[0].h, 2, sizeof hosts[0]);
        countdown = 0;
        assert_int_equal(rc, POOL_OK);
        assert_true(len > 0);
        if (nh < 0)
            expect_enomem("pool_get_host_stats", n, pool_errmsg());
        if (!fired)
            break;
    }
    print_message("stats and formatting: %ld allocation points swept\n", n - 1);
    pool_destroy(pool);
}

/* ---- the storm ------------------------------------------------------------- */

typedef struct stormer {
    pool_t *_Atomic pool;    /* set when the storm may begin */
    atomic_bool *stop;       /* the storm is over */
    atomic_bool *release;    /* the thread may exit */
    atomic_bool done;        /* its storm loop is over: served and failed are final */
    long served, failed;
} stormer_t;

/* Started before the baseline is taken and kept until after the last
   count: a thread's exit can free or cache what glibc allocated for it,
   which would move the count for reasons that are not pgpool's. */
static void *storm_main(void *arg)
{
    stormer_t *s = arg;
    storm_seed = (unsigned)(uintptr_t)s;
    while (!atomic_load(&s->pool))
        test_sleep_ms(1);
    while (!atomic_load(s->stop)) {
        PGconn *c = pool_getconn_timeout(s->pool, 200);
        if (!c) {
            s->failed++;
            continue;
        }
        s->served++;
        PGresult *r = PQexec(c, "SELECT 1"); /* libpq's allocations fail too */
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok)
            pool_putconn(s->pool, c);
        else
            pool_discard(s->pool, c);
    }
    atomic_store(&s->done, true);
    while (!atomic_load(s->release))
        test_sleep_ms(1);
    return NULL;
}

static void test_a_storm_of_failures_under_threads_leaves_the_pool_whole(void **state)
{
    atomic_bool stop = false, release = false;
    stormer_t s[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        s[i] = (stormer_t){.stop = &stop, .release = &release};
        pthread_create(&t[i], NULL, storm_main, &s[i]);
    }
    long baseline = settled_baseline("oom_storm");
    pool_config_t cfg;
    oom_config(&cfg, "oom_storm");
    cfg.max_size = 4;
    cfg.ping_idle_ms = 0;
    cfg.reset_query = "SELECT 1";
    pool_t *pool = test_pool_create(&cfg);
    atomic_store(&storm_fired, 0);
    atomic_store(&storm_permille, 20); /* 2% of every allocation, every thread */
    for (int i = 0; i < 6; i++)
        atomic_store(&s[i].pool, pool);
    test_sleep_ms(2000); /* the storm: how long, not a wait for something */
    atomic_store(&storm_permille, 0);
    atomic_store(&stop, true);
    long served = 0, failed = 0;
    for (int i = 0; i < 6; i++) {
        while (!atomic_load(&s[i].done))
            test_sleep_ms(1);
        served += s[i].served;
        failed += s[i].failed;
    }
    print_message("storm: %ld allocations failed, %ld checkouts served, %ld failed\n",
                  atomic_load(&storm_fired), served, failed);
    assert_true(atomic_load(&storm_fired) > 0);
    pool_stats_t st;
    assert_int_equal(pool_get_stats(pool, &st), POOL_OK);
    assert_int_equal(st.in_use, 0);
    assert_int_equal(st.total, st.idle + st.in_use);
    assert_true(st.total <= cfg.max_size);
    expect_whole_then_destroy(pool, baseline);
    atomic_store(&release, true);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_create_reports_every_allocation_failure_as_enomem),
        cmocka_unit_test(test_borrowing_and_returning_survive_every_allocation_failure),
        cmocka_unit_test(test_stats_and_formatting_survive_every_allocation_failure),
        cmocka_unit_test(test_a_storm_of_failures_under_threads_leaves_the_pool_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
