/* SPDX-License-Identifier: MIT */
/*
 * async.c - the event-loop calls measured from one loop thread, each next to
 * its blocking counterpart measured in the same run (repeats alternate the
 * two; medians):
 *
 *   async cycle    pool_getconn_async -> pool_fd readable -> pool_dispatch
 *                  -> callback -> pool_putconn, K requests in flight, no
 *                  query; next to the blocking cycle on one thread.  Also
 *                  the loop thread's CPU time per request (its thread clock:
 *                  epoll_wait included) and the time inside pgpool's calls
 *                  per request (pgpool's side of the loop's cost).
 *   async select1  K in flight, each running SELECT 1 with libpq's
 *                  non-blocking calls on an epoll loop (examples/epoll_loop.c's
 *                  way); next to K threads with a dedicated connection each.
 */
#define _GNU_SOURCE
#include "async.h"

#include <pgpool.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPEATS 15
#define MAX_FLIGHT 64

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct loop {
    pool_t *pool;
    int epfd;
    bool query;
    int64_t end_ns;
    long done, errors;
    int64_t in_pool_ns; /* wall time inside pgpool's calls, callbacks' own work excluded */
    int64_t in_callback_ns;
} loop_t;

typedef struct slot {
    loop_t *loop;
    PGconn *conn;
    bool ok;
} slot_t;

static void ask(slot_t *s);

static void finish(slot_t *s, bool ok)
{
    loop_t *l = s->loop;
    if (s->conn) {
        if (l->query) {
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, PQsocket(s->conn), NULL);
            PQsetnonblocking(s->conn, 0);
        }
        int64_t t0 = clock_ns(CLOCK_MONOTONIC);
        pool_putconn(l->pool, s->conn);
        int64_t spent = clock_ns(CLOCK_MONOTONIC) - t0;
        l->in_pool_ns += spent;
        l->in_callback_ns -= spent; /* when called from a callback: pgpool's, not the callback's */
        s->conn = NULL;
    }
    l->done += ok;
    l->errors += !ok;
    if (clock_ns(CLOCK_MONOTONIC) < l->end_ns)
        ask(s);
}

static void on_conn_body(slot_t *s, PGconn *conn);

static void on_conn(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    slot_t *s = arg;
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    on_conn_body(s, conn);
    s->loop->in_callback_ns += clock_ns(CLOCK_MONOTONIC) - t0;
}

static void on_conn_body(slot_t *s, PGconn *conn)
{
    s->conn = conn;
    s->ok = false;
    if (!conn || !s->loop->query) {
        finish(s, conn != NULL);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    if (PQsetnonblocking(conn, 1) != 0 || !PQsendQuery(conn, "SELECT 1") || PQflush(conn) != 0 ||
        epoll_ctl(s->loop->epfd, EPOLL_CTL_ADD, PQsocket(conn), &ev) != 0)
        finish(s, false);
}

static void on_socket(slot_t *s)
{
    if (!PQconsumeInput(s->conn)) {
        finish(s, false);
        return;
    }
    for (PGresult *r; !PQisBusy(s->conn);) { /* else PQgetResult would block */
        if (!(r = PQgetResult(s->conn))) {
            finish(s, s->ok);
            return;
        }
        s->ok = s->ok || PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
}

static void ask(slot_t *s)
{
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    if (!pool_getconn_async(s->loop->pool, 10000, on_conn, s))
        s->loop->errors++;
    int64_t spent = clock_ns(CLOCK_MONOTONIC) - t0;
    s->loop->in_pool_ns += spent;
    s->loop->in_callback_ns -= spent;
}

static pool_t *make_pool(const char *conninfo, int size)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = cfg.max_size = size;
    return pool_create(&cfg, NULL, 0);
}

/* One run of the async loop: requests per second, the loop thread's CPU ns
   per request, and the wall ns per request inside pgpool's calls
   (pool_getconn_async, pool_dispatch but its callbacks' own work,
   pool_putconn). */
static bool run_async(const char *conninfo, int flight, bool query, double seconds, double *ops,
                      double *cpu_ns, double *pool_ns)
{
    loop_t l = {.pool = make_pool(conninfo, flight), .epfd = epoll_create1(EPOLL_CLOEXEC),
                .query = query};
    if (!l.pool || l.epfd < 0)
        return false;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(l.epfd, EPOLL_CTL_ADD, pool_fd(l.pool), &ev);
    slot_t slots[MAX_FLIGHT];
    int64_t t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    l.end_ns = t0 + (int64_t)(seconds * 1e9);
    for (int i = 0; i < flight; i++) {
        slots[i] = (slot_t){.loop = &l};
        ask(&slots[i]);
    }
    for (int outstanding = flight; outstanding > 0;) {
        struct epoll_event evs[MAX_FLIGHT + 1];
        int n = epoll_wait(l.epfd, evs, MAX_FLIGHT + 1, 1000);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                on_socket(evs[i].data.ptr);
                continue;
            }
            int64_t d0 = clock_ns(CLOCK_MONOTONIC), cb0 = l.in_callback_ns;
            pool_dispatch(l.pool, 0);
            l.in_pool_ns += clock_ns(CLOCK_MONOTONIC) - d0 - (l.in_callback_ns - cb0);
        }
        if (clock_ns(CLOCK_MONOTONIC) >= l.end_ns) {
            pool_stats_t st;
            pool_get_stats(l.pool, &st);
            outstanding = st.in_use + st.waiting;
        }
    }
    double elapsed = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e9;
    double cpu = (double)(clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0);
    *ops = (double)l.done / elapsed;
    *cpu_ns = l.done ? cpu / (double)l.done : 0;
    *pool_ns = l.done ? (double)l.in_pool_ns / (double)l.done : 0;
    pool_destroy(l.pool);
    close(l.epfd);
    return l.errors == 0;
}

/* The blocking counterparts: the cycle on one thread through the pool, or
   K threads with a dedicated connection each running SELECT 1. */
typedef struct blocking {
    pool_t *pool;
    PGconn *conn;
    int64_t end_ns;
    long ops;
    bool ok;
} blocking_t;

static void *blocking_main(void *arg)
{
    blocking_t *b = arg;
    b->ok = true;
    while (clock_ns(CLOCK_MONOTONIC) < b->end_ns) {
        if (b->pool) {
            PGconn *c = pool_getconn(b->pool);
            b->ok = b->ok && c;
            if (c)
                pool_putconn(b->pool, c);
        } else {
            PGresult *r = PQexec(b->conn, "SELECT 1");
            b->ok = b->ok && PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
        }
        b->ops++;
    }
    return NULL;
}

static bool run_blocking(const char *conninfo, int threads, bool query, double seconds, double *ops)
{
    blocking_t b[MAX_FLIGHT];
    pthread_t tid[MAX_FLIGHT];
    pool_t *pool = query ? NULL : make_pool(conninfo, 1);
    for (int i = 0; i < threads; i++) /* connected before the clock starts */
        b[i] = (blocking_t){.pool = pool, .conn = query ? PQconnectdb(conninfo) : NULL};
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < threads; i++) {
        b[i].end_ns = t0 + (int64_t)(seconds * 1e9);
        pthread_create(&tid[i], NULL, blocking_main, &b[i]);
    }
    long total = 0;
    bool ok = query || pool;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += b[i].ops;
        ok = ok && b[i].ok;
        if (b[i].conn)
            PQfinish(b[i].conn);
    }
    *ops = (double)total / ((double)(clock_ns(CLOCK_MONOTONIC) - t0) / 1e9);
    pool_destroy(pool);
    return ok;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], by_value);
    return v[n / 2];
}

int bench_async(const char *conninfo, double seconds, int repeats)
{
    struct {
        const char *name, *baseline;
        int flight;
        bool query;
    } cases[] = {
        {"cycle", "blocking cycle, 1 thread", 1, false},
        {"cycle", "blocking cycle, 1 thread", 8, false},
        {"select1", "dedicated connections, 8 threads", 8, true},
    };
    if (repeats > MAX_REPEATS)
        repeats = MAX_REPEATS;
    int errors = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double ops[MAX_REPEATS], cpu[MAX_REPEATS], in_pool[MAX_REPEATS], base[MAX_REPEATS];
        for (int r = 0; r < repeats; r++) {
            errors += !run_blocking(conninfo, cases[k].query ? cases[k].flight : 1, cases[k].query,
                                    seconds, &base[r]);
            errors += !run_async(conninfo, cases[k].flight, cases[k].query, seconds, &ops[r], &cpu[r],
                                 &in_pool[r]);
        }
        double o = median_of(ops, repeats), b = median_of(base, repeats);
        printf("{\"contender\":\"pgpool-async\",\"workload\":\"async %s\",\"in_flight\":%d,"
               "\"loop_threads\":1,\"ops_per_s\":%.0f,\"loop_cpu_ns_per_request\":%.0f,"
               "\"in_pgpool_ns_per_request\":%.0f,\"baseline\":\"%s\",\"baseline_ops_per_s\":%.0f,"
               "\"vs_baseline\":%.2f}\n",
               cases[k].query ? "select1" : "cycle", cases[k].flight, o, median_of(cpu, repeats),
               median_of(in_pool, repeats), cases[k].baseline, b, b > 0 ? o / b : 0);
    }
    return errors;
}
