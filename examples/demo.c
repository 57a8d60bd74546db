/* SPDX-License-Identifier: MIT */
/*
 * demo.c - N worker threads share a pool of M connections and run real
 * queries; one stats line a second, a summary at the end.
 *
 *   ./demo [CONNINFO] [-t threads] [-m max_size] [-d seconds]
 *   CONNINFO defaults to $DATABASE_URL.
 */
#define _POSIX_C_SOURCE 200809L
#include <pgpool.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pool_t *pool;
static atomic_bool stop;
static atomic_ulong queries, failures;

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        PGconn *conn = pool_getconn(pool);
        if (!conn) {
            atomic_fetch_add(&failures, 1);
            continue;
        }
        /* A short query that holds the connection ~1 ms, like a small request. */
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM generate_series(1, %u)", 1000 + rand_r(&seed) % 20000);
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            atomic_fetch_add(&queries, 1);
        else
            atomic_fetch_add(&failures, 1);
        PQclear(res);
        pool_putconn(pool, conn);
    }
    return NULL;
}

static void print_line(const char *label, const pool_stats_t *s, double acquired_per_s)
{
    uint64_t calls = s->acquired + s->acquire_timeouts + s->acquire_errors;
    printf("%-7s open %3d  idle %3d  in use %3d  waiting %3d  acquired/s %8.0f  "
           "wait mean %7.1f us  max %8llu us\n",
           label, s->total, s->idle, s->in_use, s->waiting, acquired_per_s,
           calls ? (double)s->wait_us_total / (double)calls : 0.0,
           (unsigned long long)s->wait_us_max);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *conninfo = getenv("DATABASE_URL");
    int nthreads = 16, max_size = 4, seconds = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            max_size = atoi(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else
            conninfo = argv[i];
    }
    if (!conninfo || nthreads < 1 || nthreads > 1024) {
        fprintf(stderr, "usage: %s [CONNINFO] [-t threads] [-m max_size] [-d seconds]\n", argv[0]);
        return 2;
    }

    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 1;
    cfg.max_size = max_size;
    cfg.acquire_timeout_ms = 5000;
    char err[512];
    pool = pool_create(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }
    printf("demo: %d threads sharing a pool of %d connections for %d s\n", nthreads, max_size, seconds);

    pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
    for (int i = 0; i < nthreads; i++)
        pthread_create(&threads[i], NULL, worker, (void *)(uintptr_t)(i + 1));

    pool_stats_t s;
    uint64_t last = 0;
    for (int t = 1; t <= seconds; t++) {
        sleep(1);
        pool_get_stats(pool, &s);
        char label[16];
        snprintf(label, sizeof label, "[%ds]", t);
        print_line(label, &s, (double)(s.acquired - last));
        last = s.acquired;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    free(threads);

    pool_get_stats(pool, &s);
    print_line("summary", &s, (double)s.acquired / seconds);
    printf("summary queries %lu  failures %lu  connects %llu  closed %llu  pings %llu\n",
           atomic_load(&queries), atomic_load(&failures), (unsigned long long)s.connects,
           (unsigned long long)s.closed, (unsigned long long)s.pings);
    pool_destroy(pool);
    return atomic_load(&failures) == 0 && atomic_load(&queries) > 0 ? 0 : 1;
}
