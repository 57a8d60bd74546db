/* SPDX-License-Identifier: MIT */
/*
 * soak.c - chaos soak: 32+ threads do random pool operations (getconn with
 * random timeouts, queries, transactions left open, failed transactions,
 * queries left in flight, pipeline mode, COPY, discards) while a chaos thread
 * terminates backends, restarts the server and toggles the fault proxy, and
 * an operator thread resizes (within the first size), evicts, pauses and
 * resumes the pool.
 * Invariants are checked all the time; the exit status is the violation count.
 *
 *   soak [-d seconds] [-t threads]      (env as for the tests; see README)
 */
#include "harness.h"
#include "fault_proxy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SIZE 6
#define MAX_OVERFLOW 2
#define DEADLINE_SLACK_MS 1000 /* scheduling noise, generous for sanitizer builds */

static pool_t *pool;
static fault_proxy_t *proxy;
static atomic_bool stop;
static atomic_long ops, got, violations;
static atomic_llong last_fault_ms; /* calm when no fault for a while */
static atomic_int faults[6];
static const char *fault_names[6] = {"terminate", "reset", "silent", "refuse", "latency", "restart"};
static atomic_int controls[3];
static const char *control_names[3] = {"resize", "evict", "pause"};

static void violation(const char *what, long long detail)
{
    atomic_fetch_add(&violations, 1);
    fprintf(stderr, "soak: VIOLATION: %s (%lld)\n", what, detail);
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        int timeout = (int)(rand_r(&seed) % 300);
        int64_t t0 = test_now_ms();
        PGconn *c = pool_getconn_timeout(pool, timeout);
        int64_t elapsed = test_now_ms() - t0;
        atomic_fetch_add(&ops, 1);
        if (elapsed > timeout + DEADLINE_SLACK_MS)
            violation("getconn returned past its deadline (ms late)", elapsed - timeout);
        if (!c)
            continue;
        atomic_fetch_add(&got, 1);
        if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE || PQisBusy(c) ||
            PQpipelineStatus(c) != PQ_PIPELINE_OFF)
            violation("handed out dead, busy or inside a transaction", PQtransactionStatus(c));
        PGresult *r;
        switch (rand_r(&seed) % 10) {
        case 0: /* transaction left open */
            test_exec_ok(c, "BEGIN");
            test_exec_ok(c, "SELECT 1");
            break;
        case 1: /* failed transaction */
            test_exec_ok(c, "BEGIN");
            test_exec_ok(c, "SELECT 1/0");
            break;
        case 2: /* query left in flight */
            PQsendQuery(c, "SELECT pg_sleep(0.005)");
            break;
        case 3:
            pool_discard(pool, c);
            continue;
        case 4:
            PQenterPipelineMode(c);
            break;
        case 5: /* mid-COPY */
            r = PQexec(c, "COPY (SELECT 1) TO STDOUT");
            PQclear(r);
            break;
        case 6: { /* hold it a while */
            test_sleep_ms((int)(rand_r(&seed) % 20));
            test_exec_ok(c, "SELECT 1");
            break;
        }
        default:
            test_exec_ok(c, "SELECT 1");
        }
        pool_putconn(pool, c);
    }
    return NULL;
}

static bool calm(void)
{
    return test_now_ms() - atomic_load(&last_fault_ms) > 1500;
}

static void *monitor(void *arg)
{
    pool_stats_t prev = {0}, st;
    PGconn *admin = NULL;
    int round = 0;
    while (!atomic_load(&stop)) {
        pool_get_stats(pool, &st);
        if (st.total != st.idle + st.in_use)
            violation("total != idle + in_use", st.total);
        if (st.total > MAX_SIZE + MAX_OVERFLOW)
            violation("total above max_size + max_overflow", st.total);
        if (st.acquired < prev.acquired || st.acquire_timeouts < prev.acquire_timeouts ||
            st.acquire_errors < prev.acquire_errors || st.connects < prev.connects ||
            st.connect_errors < prev.connect_errors || st.closed < prev.closed ||
            st.closed_broken < prev.closed_broken || st.pings < prev.pings ||
            st.rollbacks < prev.rollbacks || st.wait_us_total < prev.wait_us_total ||
            st.hold_us_total < prev.hold_us_total)
            violation("a counter went down", 0);
        prev = st;
        if (++round % 20 == 0 && calm()) {
            if (!admin || PQstatus(admin) != CONNECTION_OK) {
                PQfinish(admin);
                admin = PQconnectdb(test_conninfo("soak_admin"));
            }
            int n = test_query_int(admin, "SELECT count(*) FROM pg_stat_activity "
                                          "WHERE application_name = 'soak'");
            if (n > MAX_SIZE + MAX_OVERFLOW && calm())
                violation("backends on the server above max_size + max_overflow", n);
        }
        test_sleep_ms(5);
    }
    PQfinish(admin);
    return NULL;
}

static void fault(int kind)
{
    atomic_store(&last_fault_ms, test_now_ms());
    atomic_fetch_add(&faults[kind], 1);
}

static void *chaos(void *arg)
{
    unsigned seed = 7;
    int64_t last_restart = test_now_ms();
    while (!atomic_load(&stop)) {
        test_sleep_ms(200 + (int)(rand_r(&seed) % 300));
        if (atomic_load(&stop))
            break;
        int kind = (int)(rand_r(&seed) % 6);
        if (kind == 5 && (!test_server_controllable() || test_now_ms() - last_restart < 5000))
            kind = 0;
        fault(kind);
        switch (kind) {
        case 0:
            test_terminate_backends("soak");
            break;
        case 1:
            proxy_reset_all(proxy);
            break;
        case 2:
        case 3:
            proxy_set_mode(proxy, kind == 2 ? PROXY_SILENT : PROXY_REFUSE);
            test_sleep_ms(300);
            proxy_set_mode(proxy, PROXY_FORWARD);
            break;
        case 4:
            proxy_set_latency_ms(proxy, 20);
            test_sleep_ms(500);
            proxy_set_latency_ms(proxy, 0);
            break;
        case 5:
            test_server("stop");
            test_server("restart");
            last_restart = test_now_ms();
            break;
        }
        atomic_store(&last_fault_ms, test_now_ms());
    }
    return NULL;
}

/* The operator: resizes within MAX_SIZE + MAX_OVERFLOW (so the invariants
   above still hold), evicts, pauses for up to 100 ms.  A call that fails is
   a violation: each must be safe under load. */
static void *operator(void *arg)
{
    unsigned seed = 11;
    while (!atomic_load(&stop)) {
        test_sleep_ms(100 + (int)(rand_r(&seed) % 300));
        int kind = (int)(rand_r(&seed) % 3), rc = POOL_OK;
        atomic_fetch_add(&controls[kind], 1);
        if (kind == 0) {
            int max = 1 + (int)(rand_r(&seed) % MAX_SIZE);
            int min = (int)(rand_r(&seed) % 3);
            rc = pool_resize(pool, min < max ? min : max, max, (int)(rand_r(&seed) % (MAX_OVERFLOW + 1)));
        } else if (kind == 1) {
            rc = pool_evict(pool);
        } else {
            rc = pool_pause(pool);
            test_sleep_ms((int)(rand_r(&seed) % 100));
            if (rc == POOL_OK)
                rc = pool_resume(pool);
        }
        if (rc != POOL_OK)
            violation("a runtime control call failed", rc);
    }
    if (pool_resize(pool, 2, MAX_SIZE, MAX_OVERFLOW) != POOL_OK || pool_resume(pool) != POOL_OK)
        violation("could not restore the first size", 0);
    return NULL;
}

int main(int argc, char **argv)
{
    int seconds = 30, nthreads = 32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-d") == 0)
            seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-t") == 0)
            nthreads = atoi(argv[i + 1]);
    }
    const char *sock = getenv("PGPOOL_TEST_SOCKET");
    if (!sock || !(proxy = proxy_start(sock))) {
        fprintf(stderr, "soak: needs PGPOOL_TEST_SOCKET (run it through ctest)\n");
        return 77;
    }
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=postgres user=postgres application_name=soak",
             proxy_port(proxy));
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 2;
    cfg.max_size = MAX_SIZE;
    cfg.max_overflow = MAX_OVERFLOW;
    cfg.connect_timeout_ms = 1000;
    cfg.ping_idle_ms = 50;
    cfg.idle_timeout_ms = 2000;
    cfg.max_lifetime_ms = 5000;
    cfg.leak_timeout_ms = 3000;
    test_log_t log = {0};
    cfg.on_log = test_log_cb;
    cfg.arg = &log;
    char err[512];
    pool = pool_create(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "soak: pool_create: %s\n", err);
        return 1;
    }

    pthread_t *t = calloc((size_t)nthreads + 3, sizeof *t);
    for (int i = 0; i < nthreads; i++)
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    pthread_create(&t[nthreads], NULL, monitor, NULL);
    pthread_create(&t[nthreads + 1], NULL, chaos, NULL);
    pthread_create(&t[nthreads + 2], NULL, operator, NULL);
    test_sleep_ms(seconds * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < nthreads + 3; i++)
        pthread_join(t[i], NULL);
    free(t);

    /* Settle: traffic flows, the server runs; the pool must be whole again. */
    proxy_set_mode(proxy, PROXY_FORWARD);
    proxy_set_latency_ms(proxy, 0);
    if (test_server_controllable())
        test_server("restart 2>/dev/null");
    PGconn *c = pool_getconn_timeout(pool, 10000);
    if (!c || test_query_int(c, "SELECT 1") != 1)
        violation("no working connection after the chaos", 0);
    if (c)
        pool_putconn(pool, c);
    pool_stats_t st;
    pool_get_stats(pool, &st);
    if (st.in_use != 0 || st.waiting != 0 || st.total != st.idle ||
        st.connects - st.closed != (uint64_t)st.total)
        violation("stats do not add up at rest", st.in_use);
    test_sleep_ms(1600);
    int n = test_count_backends("soak");
    if (n > MAX_SIZE + MAX_OVERFLOW)
        violation("backends above the maximum at rest", n);
    pool_destroy(pool);
    if (!test_wait_backends("soak", 0, 10000))
        violation("backends left after pool_destroy", test_count_backends("soak"));
    proxy_stop(proxy);
    if (strstr(log.text, "password"))
        violation("a log line mentions a password", 0);

    int total_faults = 0;
    for (int i = 0; i < 6; i++)
        total_faults += atomic_load(&faults[i]);
    printf("soak: %d s, %d threads: %ld operations (%ld connections handed out), %d faults (",
           seconds, nthreads, atomic_load(&ops), atomic_load(&got), total_faults);
    for (int i = 0; i < 6; i++)
        printf("%s%s %d", i ? ", " : "", fault_names[i], atomic_load(&faults[i]));
    printf("), controls (");
    for (int i = 0; i < 3; i++)
        printf("%s%s %d", i ? ", " : "", control_names[i], atomic_load(&controls[i]));
    printf("), connects %llu, closed_broken %llu, violations %ld\n", (unsigned long long)st.connects,
           (unsigned long long)st.closed_broken, atomic_load(&violations));
    return atomic_load(&violations) == 0 ? 0 : 1;
}
