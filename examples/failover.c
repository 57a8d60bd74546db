/* SPDX-License-Identifier: MIT */
/*
 * failover.c - writers on a pool over a primary and its standby, printing
 * once a second how many writes succeeded and failed and on which host, so a
 * failover can be watched from the application's side.
 *
 *   ./failover "host=db1,db2 dbname=app target_session_attrs=read-write" [seconds]
 *
 * It creates failover_demo (id bigserial, at timestamptz) when missing.  Each
 * of 8 threads borrows, inserts one row, returns.  A statement gets 1 s (a
 * black-holed server never answers; libpq would wait for ever): one that
 * timed out is discarded, not returned.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */
#include <pgpool.h>

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WRITERS 8
#define STATEMENT_MS 1000

static pool_t *pool;
static atomic_bool stop;
static atomic_long ok, failed;
static char last_host[128]; /* guarded by host_lock */
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs sql within STATEMENT_MS: 1 done, 0 failed, -1 timed out (still in flight). */
static int exec_bounded(PGconn *c, const char *sql)
{
    if (!PQsendQuery(c, sql))
        return 0;
    long long deadline = now_ms() + STATEMENT_MS;
    int rc = 1;
    for (;;) {
        while (PQisBusy(c)) {
            long long left = deadline - now_ms();
            struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) == 0)
                return -1;
            if (!PQconsumeInput(c))
                return 0;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            return rc;
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = 0;
        PQclear(r);
    }
}

static void *writer(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        PGconn *c = pool_getconn_timeout(pool, 2000);
        if (!c) {
            atomic_fetch_add(&failed, 1);
            /* The pool fails fast while no host takes writes: do not spin. */
            nanosleep(&(struct timespec){.tv_nsec = 50000000}, NULL);
            continue;
        }
        char host[128];
        snprintf(host, sizeof host, "%s:%s", PQhost(c), PQport(c));
        int rc = exec_bounded(c, "INSERT INTO failover_demo (at) VALUES (now())");
        if (rc < 0)
            pool_discard(pool, c);
        else
            pool_putconn(pool, c);
        if (rc > 0) {
            atomic_fetch_add(&ok, 1);
            pthread_mutex_lock(&host_lock);
            snprintf(last_host, sizeof last_host, "%s", host);
            pthread_mutex_unlock(&host_lock);
        } else {
            atomic_fetch_add(&failed, 1);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    int seconds = argc > 2 ? atoi(argv[2]) : 60;
    if (!conninfo) {
        fprintf(stderr, "usage: %s CONNINFO [seconds] (or set DATABASE_URL)\n", argv[0]);
        return 2;
    }
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.max_size = WRITERS;
    cfg.connect_timeout_ms = 1000;
    cfg.acquire_timeout_ms = 2000;
    char err[512];
    if (!(pool = pool_create(&cfg, err, sizeof err))) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }
    PGconn *c = pool_getconn(pool);
    if (!c || exec_bounded(c, "CREATE TABLE IF NOT EXISTS failover_demo "
                              "(id bigserial PRIMARY KEY, at timestamptz)") != 1) {
        fprintf(stderr, "could not create failover_demo: %s\n",
                c ? PQerrorMessage(c) : pool_errmsg());
        if (c)
            pool_discard(pool, c);
        pool_destroy(pool);
        return 1;
    }
    pool_putconn(pool, c);

    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&t[i], NULL, writer, NULL);
    printf("%4s %8s %8s  %-24s %s\n", "sec", "ok", "failed", "last write on", "open per host");
    long prev_ok = 0, prev_failed = 0;
    for (int s = 1; s <= seconds; s++) {
        sleep(1);
        long o = atomic_load(&ok), f = atomic_load(&failed);
        char host[128];
        pthread_mutex_lock(&host_lock);
        snprintf(host, sizeof host, "%s", last_host);
        pthread_mutex_unlock(&host_lock);
        pool_host_stats_t hs[8];
        int n = pool_get_host_stats(pool, hs, 8);
        printf("%4d %8ld %8ld  %-24s", s, o - prev_ok, f - prev_failed, host);
        for (int i = 0; i < n && i < 8; i++)
            printf(" %s:%s=%d%s", hs[i].host, hs[i].port, hs[i].open, hs[i].down ? "(down)" : "");
        printf("\n");
        fflush(stdout);
        prev_ok = o;
        prev_failed = f;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    pool_stats_t st;
    pool_get_stats(pool, &st);
    printf("closed_broken %llu, closed_role %llu, evictions %llu, closed_evicted %llu\n",
           (unsigned long long)st.closed_broken, (unsigned long long)st.closed_role,
           (unsigned long long)st.evictions, (unsigned long long)st.closed_evicted);
    pool_destroy(pool);
    return 0;
}
