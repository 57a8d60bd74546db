/*
 * cycle.c - the pool's own overhead: T threads loop getconn + putconn with no
 * query, on 8 connections, against the obvious hand-rolled pool (a mutex, a
 * condition variable and an array) measured in the same run.  Reports the
 * median of 5 repeats and the ratio to the hand-rolled pool.
 *
 *   bench_cycle "host=... dbname=..." [cycles per run, split among the threads]
 */
#define _GNU_SOURCE
#include <pgpool.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCONN 8
#define REPEATS 5

/* ---- the hand-rolled baseline ------------------------------------------- */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    PGconn *free[NCONN];
    int nfree;
} hand = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0};

static PGconn *hand_get(void)
{
    pthread_mutex_lock(&hand.lock);
    while (hand.nfree == 0)
        pthread_cond_wait(&hand.cond, &hand.lock);
    PGconn *c = hand.free[--hand.nfree];
    pthread_mutex_unlock(&hand.lock);
    return c;
}

static void hand_put(PGconn *c)
{
    pthread_mutex_lock(&hand.lock);
    hand.free[hand.nfree++] = c;
    pthread_cond_signal(&hand.cond);
    pthread_mutex_unlock(&hand.lock);
}

/* ---- the loop ------------------------------------------------------------ */
static pool_t *pool;
static int use_pool, iterations; /* per thread */

static void *loop(void *arg)
{
    for (int i = 0; i < iterations; i++) {
        if (use_pool) {
            PGconn *c = pool_getconn(pool);
            if (!c)
                abort();
            pool_putconn(pool, c);
        } else {
            hand_put(hand_get());
        }
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Cycles per second for T threads. */
static double run(int threads)
{
    pthread_t t[64];
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, loop, NULL);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return (double)threads * iterations / (now_s() - t0);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONNINFO [iterations]\n", argv[0]);
        return 2;
    }
    int cycles = argc > 2 ? atoi(argv[2]) : 400000;
    for (int i = 0; i < NCONN; i++) {
        PGconn *c = PQconnectdb(argv[1]);
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "connect: %s", PQerrorMessage(c));
            return 1;
        }
        hand.free[hand.nfree++] = c;
    }
    const char *names[] = {"hand-rolled", "pgpool pre_ping=0", "pgpool pre_ping=1"};
    int thread_counts[] = {1, 2, 8, 64};
    printf("| contender | T | ns per cycle (per thread) | M cycles/s | vs hand-rolled |\n|---|---|---|---|---|\n");
    for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++) {
        int threads = thread_counts[ti];
        iterations = cycles / threads;
        double rate[3][REPEATS];
        for (int r = 0; r < REPEATS; r++) {
            for (int k = 0; k < 3; k++) { /* alternate contenders to spread noise */
                use_pool = k > 0;
                if (use_pool) {
                    pool_config_t cfg;
                    pool_config_init(&cfg);
                    cfg.conninfo = argv[1];
                    cfg.min_size = cfg.max_size = NCONN;
                    cfg.pre_ping = k == 2;
                    cfg.ping_idle_ms = 3600000;
                    cfg.acquire_timeout_ms = -1;
                    char err[256];
                    if (!(pool = pool_create(&cfg, err, sizeof err))) {
                        fprintf(stderr, "pool_create: %s\n", err);
                        return 1;
                    }
                }
                rate[k][r] = run(threads);
                if (use_pool)
                    pool_destroy(pool);
            }
        }
        double median[3];
        for (int k = 0; k < 3; k++) {
            qsort(rate[k], REPEATS, sizeof rate[k][0], cmp);
            median[k] = rate[k][REPEATS / 2];
        }
        for (int k = 0; k < 3; k++)
            printf("| %s | %d | %.0f | %.2f | %.2fx |\n", names[k], threads,
                   1e9 * threads / median[k], median[k] / 1e6, median[k] / median[0]);
    }
    for (int i = 0; i < NCONN; i++)
        PQfinish(hand.free[i]);
    return 0;
}
