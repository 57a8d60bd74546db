/* SPDX-License-Identifier: MIT */
/*
 * bench.c - pgpool next to what users would pick instead, side by side in one
 * run: every cell of the matrix (workload x threads x contender) is repeated,
 * contenders alternating within each repeat to spread the machine's noise, and
 * the median is reported, one JSON line per cell, then a markdown table with
 * each contender's ratio to the workload's baseline measured in the same run.
 *
 *   bench --db CONNINFO [--bouncer CONNINFO] [--zdb URL] [--seconds S]
 *         [--repeats R] [--quick | --smoke] [--only WORKLOAD]
 *
 * tests/bench/run.sh installs what it needs, starts PostgreSQL and PgBouncer
 * on 127.0.0.1, builds and runs this.  Workloads:
 *   cycle     T threads loop getconn + putconn, no query (the pool's own cost)
 *   select1   getconn, SELECT 1, putconn
 *   prepared  like select1 with a statement prepared on each new connection
 *   burst     64 threads arrive at once at a pool with min 0, max 16
 *   memory    pgpool's own heap bytes per pooled connection and per waiter
 *   async     the event-loop calls on one loop thread (async.c)
 */
#define _GNU_SOURCE
#include "async.h"
#include "contenders.h"

#include <pgpool.h>

#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define MAX_REPEATS 15
#define SUB 16                     /* histogram buckets per power of two */
#define HBUCKETS (64 * SUB)
#define CYCLE_SAMPLE 32            /* cycle: time one iteration in 32 (a clock read
                                      costs as much as the cycle itself) */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- a log histogram with 16 sub-buckets per power of two (~4% error) ---- */

typedef struct hist {
    uint64_t n;
    uint32_t b[HBUCKETS];
} hist_t;

static int hist_index(uint64_t v)
{
    if (v < SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);           /* v in [2^e, 2^(e+1)) */
    int sub = (int)((v >> (e - 4)) & (SUB - 1)); /* next four bits */
    return (e - 3) * SUB + sub;
}

static uint64_t hist_value(int i)
{
    if (i < SUB)
        return (uint64_t)i;
    int e = i / SUB + 3, sub = i % SUB;
    return ((uint64_t)1 << e) + ((uint64_t)sub << (e - 4)) + ((uint64_t)1 << (e - 4)) / 2;
}

static void hist_add(hist_t *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
}

static uint64_t hist_pct(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (target < 1)
        target = 1;
    for (int i = 0; i < HBUCKETS; i++)
        if ((seen += h->b[i]) >= target)
            return hist_value(i);
    return 0;
}

/* ---- one cell ------------------------------------------------------------- */

typedef enum workload { W_CYCLE, W_SELECT1, W_PREPARED } workload_t;
static const char *workload_names[] = {"cycle", "select1", "prepared"};

typedef struct result {
    double ops_per_s, iter_p50_us, iter_p99_us, wait_p99_us, slowest_share;
    long ops, errors;
} result_t;

typedef struct worker {
    int id;
    long ops, errors;
    hist_t iter, wait;
    pthread_t tid;
} worker_t;

static const contender_t *current;
static bench_query_t current_query;
static atomic_bool go, stop;
static worker_t workers[MAX_THREADS];

static void *work(void *arg)
{
    worker_t *w = arg;
    while (!atomic_load_explicit(&go, memory_order_acquire))
        ;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        bool timed = current_query != QUERY_NONE || w->ops % CYCLE_SAMPLE == 0;
        uint64_t t0 = timed ? now_ns() : 0;
        void *c = current->get(w->id);
        uint64_t t1 = timed ? now_ns() : 0;
        if (!c) {
            w->errors++;
            continue;
        }
        bool ok = current_query == QUERY_NONE || current->query(c, current_query);
        current->put(c, w->id);
        if (!ok)
            w->errors++;
        w->ops++;
        if (timed) {
            hist_add(&w->iter, now_ns() - t0);
            hist_add(&w->wait, t1 - t0);
        }
    }
    return NULL;
}

static bool run_cell(const contender_t *k, const bench_setup_t *s, double seconds, result_t *out)
{
    char err[512] = "";
    contender_remember(s);
    if (!k->start(s, err, sizeof err)) {
        fprintf(stderr, "bench: %s skipped: %s\n", k->name, err);
        k->stop();
        return false;
    }
    current = k;
    current_query = s->query;
    atomic_store(&go, false);
    atomic_store(&stop, false);
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < s->threads; i++) {
        workers[i].id = i;
        pthread_create(&workers[i].tid, NULL, work, &workers[i]);
    }
    uint64_t t0 = now_ns();
    atomic_store_explicit(&go, true, memory_order_release);
    struct timespec nap = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&nap, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < s->threads; i++)
        pthread_join(workers[i].tid, NULL);
    double elapsed = (double)(now_ns() - t0) / 1e9;
    k->stop();

    hist_t iter = {0}, wait = {0};
    long ops = 0, errors = 0, slowest = -1;
    for (int i = 0; i < s->threads; i++) {
        ops += workers[i].ops;
        errors += workers[i].errors;
        if (slowest < 0 || workers[i].ops < slowest)
            slowest = workers[i].ops;
        for (int b = 0; b < HBUCKETS; b++) {
            iter.b[b] += workers[i].iter.b[b];
            wait.b[b] += workers[i].wait.b[b];
        }
        iter.n += workers[i].iter.n;
        wait.n += workers[i].wait.n;
    }
    *out = (result_t){
        .ops_per_s = (double)ops / elapsed,
        .iter_p50_us = (double)hist_pct(&iter, 0.5) / 1e3,
        .iter_p99_us = (double)hist_pct(&iter, 0.99) / 1e3,
        .wait_p99_us = (double)hist_pct(&wait, 0.99) / 1e3,
        .slowest_share = ops ? (double)slowest * s->threads / (double)ops : 0,
        .ops = ops,
        .errors = errors,
    };
    return true;
}

/* ---- the matrix ------------------------------------------------------------ */

typedef struct cell {
    const char *contender;   /* as in contenders.c */
    const char *label;       /* as printed: contender plus variant */
    workload_t workload;
    int threads, pool_size;
    bool pre_ping;
    bool baseline;           /* the others in its (workload, threads) group are compared with it */
    result_t runs[MAX_REPEATS];
    int nruns;
} cell_t;

#define MAX_CELLS 96
static cell_t cells[MAX_CELLS];
static int ncells;

static void add(const char *contender, const char *label, workload_t w, int threads,
                bool pre_ping, bool baseline)
{
    if (!contender_find(contender))
        return; /* not built in (libzdb) */
    cells[ncells++] = (cell_t){.contender = contender, .label = label, .workload = w,
                               .threads = threads, .pool_size = 8, .pre_ping = pre_ping,
                               .baseline = baseline};
}

static void build_matrix(const char *only, bool smoke)
{
    static const int cycle_t[] = {1, 2, 8, 64}, select_t[] = {1, 8, 64};
    for (size_t i = 0; i < 4; i++) {
        if (only && strcmp(only, "cycle") != 0)
            break;
        int t = cycle_t[i];
        if (smoke && t != 8)
            continue;
        add("hand-rolled", "hand-rolled", W_CYCLE, t, false, true);
        add("pgpool", "pgpool pre_ping=0", W_CYCLE, t, false, false);
        add("pgpool", "pgpool", W_CYCLE, t, true, false);
        add("libzdb", "libzdb", W_CYCLE, t, false, false);
    }
    for (size_t i = 0; i < 3; i++) {
        if (only && strcmp(only, "select1") != 0)
            break;
        int t = select_t[i];
        if (smoke && t != 8)
            continue;
        /* the upper bound at T <= 8: a connection per thread, nobody waits */
        add("dedicated", "dedicated", W_SELECT1, t, false, t <= 8);
        add("hand-rolled", "hand-rolled", W_SELECT1, t, false, t > 8);
        add("pgpool", "pgpool", W_SELECT1, t, true, false);
        add("pgpool", "pgpool pre_ping=0", W_SELECT1, t, false, false);
        add("libzdb", "libzdb", W_SELECT1, t, false, false);
        add("pgbouncer-persistent", "pgbouncer-persistent", W_SELECT1, t, false, false);
        if (t <= 8) {
            add("connect-per-request", "connect-per-request", W_SELECT1, t, false, false);
            add("pgbouncer-per-request", "pgbouncer-per-request", W_SELECT1, t, false, false);
        }
    }
    if (!only || strcmp(only, "prepared") == 0) {
        add("dedicated", "dedicated", W_PREPARED, 8, false, true);
        add("hand-rolled", "hand-rolled", W_PREPARED, 8, false, false);
        add("pgpool", "pgpool", W_PREPARED, 8, true, false);
    }
}

static int by_ops(const void *a, const void *b)
{
    double x = ((const result_t *)a)->ops_per_s, y = ((const result_t *)b)->ops_per_s;
    return (x > y) - (x < y);
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of each figure over the repeats (each figure on its own). */
static result_t median(cell_t *c)
{
    result_t m = {0};
    if (c->nruns == 0)
        return m;
    qsort(c->runs, (size_t)c->nruns, sizeof c->runs[0], by_ops);
    m = c->runs[c->nruns / 2];
    double v[MAX_REPEATS];
    size_t offs[] = {offsetof(result_t, iter_p50_us), offsetof(result_t, iter_p99_us),
                     offsetof(result_t, wait_p99_us), offsetof(result_t, slowest_share)};
    for (size_t f = 0; f < sizeof offs / sizeof offs[0]; f++) {
        for (int r = 0; r < c->nruns; r++)
            v[r] = *(double *)(void *)((char *)&c->runs[r] + offs[f]);
        qsort(v, (size_t)c->nruns, sizeof v[0], by_double);
        *(double *)(void *)((char *)&m + offs[f]) = v[c->nruns / 2];
    }
    long errors = 0;
    for (int r = 0; r < c->nruns; r++)
        errors += c->runs[r].errors;
    m.errors = errors;
    return m;
}

static const cell_t *baseline_of(const cell_t *c)
{
    for (int i = 0; i < ncells; i++)
        if (cells[i].baseline && cells[i].workload == c->workload && cells[i].threads == c->threads)
            return &cells[i];
    return NULL;
}

/* ---- burst and memory (pgpool only) --------------------------------------- */

typedef struct burst_arg {
    pool_t *pool;
    pthread_barrier_t *start;
    uint64_t wait_ns;
    bool ok;
} burst_arg_t;

static void *burst_one(void *arg)
{
    burst_arg_t *a = arg;
    pthread_barrier_wait(a->start);
    uint64_t t0 = now_ns();
    PGconn *c = pool_getconn(a->pool);
    a->wait_ns = now_ns() - t0;
    a->ok = false;
    if (c) {
        PGresult *r = PQexec(c, "SELECT 1");
        a->ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        pool_putconn(a->pool, c);
    }
    return NULL;
}

/* 64 threads at once at min 0, max 16: time until all are served, connections
   opened, p99 wait. */
static void burst(const char *conninfo, int repeats)
{
    double total_ms[MAX_REPEATS], p99_ms[MAX_REPEATS];
    long most_opened = 0, errors = 0;
    for (int r = 0; r < repeats; r++) {
        pool_config_t cfg;
        pool_config_init(&cfg);
        cfg.conninfo = conninfo;
        cfg.min_size = 0;
        cfg.max_size = 16;
        char err[256];
        pool_t *pool = pool_create(&cfg, err, sizeof err);
        if (!pool) {
            fprintf(stderr, "bench: burst: %s\n", err);
            return;
        }
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, MAX_THREADS + 1);
        burst_arg_t args[MAX_THREADS];
        pthread_t tid[MAX_THREADS];
        for (int i = 0; i < MAX_THREADS; i++) {
            args[i] = (burst_arg_t){.pool = pool, .start = &start};
            pthread_create(&tid[i], NULL, burst_one, &args[i]);
        }
        pthread_barrier_wait(&start);
        uint64_t t0 = now_ns();
        for (int i = 0; i < MAX_THREADS; i++)
            pthread_join(tid[i], NULL);
        total_ms[r] = (double)(now_ns() - t0) / 1e6;
        double waits[MAX_THREADS];
        for (int i = 0; i < MAX_THREADS; i++) {
            waits[i] = (double)args[i].wait_ns / 1e6;
            errors += !args[i].ok;
        }
        qsort(waits, MAX_THREADS, sizeof waits[0], by_double);
        p99_ms[r] = waits[(int)ceil(0.99 * MAX_THREADS) - 1];
        pool_stats_t st;
        pool_get_stats(pool, &st);
        if ((long)st.connects > most_opened)
            most_opened = (long)st.connects;
        pool_destroy(pool);
        pthread_barrier_destroy(&start);
    }
    qsort(total_ms, (size_t)repeats, sizeof total_ms[0], by_double);
    qsort(p99_ms, (size_t)repeats, sizeof p99_ms[0], by_double);
    printf("{\"contender\":\"pgpool\",\"workload\":\"burst\",\"threads\":64,\"pool_size\":16,"
           "\"all_served_ms\":%.2f,\"connections_opened_max\":%ld,\"wait_p99_ms\":%.2f,"
           "\"errors\":%ld}\n",
           total_ms[repeats / 2], most_opened, p99_ms[repeats / 2], errors);
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void *wait_for_one(void *arg)
{
    PGconn *c = pool_getconn_timeout(arg, 60000);
    if (c)
        pool_putconn(arg, c);
    return NULL;
}

/* pgpool's own heap bytes per pooled connection (libpq's measured apart and
   taken off) and per waiting thread. */
static void memory(const char *conninfo)
{
    enum { N = 32 };
    size_t h0 = heap_in_use();
    PGconn *raw[N];
    for (int i = 0; i < N; i++)
        raw[i] = PQconnectdb(conninfo);
    size_t libpq = heap_in_use() - h0;
    for (int i = 0; i < N; i++)
        PQfinish(raw[i]);

    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.min_size = 0;
    cfg.max_size = N;
    size_t h1 = heap_in_use();
    pool_t *pool = pool_create(&cfg, NULL, 0);
    if (!pool)
        return;
    size_t empty = heap_in_use() - h1;
    PGconn *held[N];
    for (int i = 0; i < N; i++)
        held[i] = pool_getconn(pool);
    size_t full = heap_in_use() - h1;
    /* Waiters: their bookkeeping lives on their own stacks. */
    size_t h2 = heap_in_use();
    pthread_t tid[16];
    for (int i = 0; i < 16; i++)
        pthread_create(&tid[i], NULL, wait_for_one, pool);
    pool_stats_t st;
    do
        pool_get_stats(pool, &st);
    while (st.waiting < 16);
    long per_waiter = ((long)heap_in_use() - (long)h2) / 16; /* thread stacks are mmap'd, not heap */
    for (int i = 0; i < N; i++)
        pool_putconn(pool, held[i]);
    for (int i = 0; i < 16; i++)
        pthread_join(tid[i], NULL);
    pool_destroy(pool);
    long per_conn = ((long)full - (long)empty - (long)libpq) / N;
    printf("{\"contender\":\"pgpool\",\"workload\":\"memory\",\"pool_size\":%d,"
           "\"pool_fixed_bytes\":%zu,\"bytes_per_connection\":%ld,\"libpq_bytes_per_connection\":%zu,"
           "\"heap_bytes_per_waiter\":%ld}\n",
           N, empty, per_conn, libpq / N, per_waiter);
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *db = NULL, *bouncer = NULL, *zdb = NULL, *only = NULL;
    double seconds = 1.0;
    int repeats = 5;
    bool smoke = false;
    for (int i = 1; i < argc; i++) {
        bool more = i + 1 < argc;
        if (more && strcmp(argv[i], "--db") == 0)
            db = argv[++i];
        else if (more && strcmp(argv[i], "--bouncer") == 0)
            bouncer = argv[++i];
        else if (more && strcmp(argv[i], "--zdb") == 0)
            zdb = argv[++i];
        else if (more && strcmp(argv[i], "--only") == 0)
            only = argv[++i];
        else if (more && strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[++i]);
        else if (more && strcmp(argv[i], "--repeats") == 0)
            repeats = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            seconds = 0.25, repeats = 3;
        else if (strcmp(argv[i], "--smoke") == 0)
            seconds = 0.02, repeats = 1, smoke = true;
        else {
            fprintf(stderr, "usage: %s --db CONNINFO [--bouncer CONNINFO] [--zdb URL] [--seconds S] "
                            "[--repeats R] [--quick|--smoke] [--only cycle|select1|prepared|burst|memory|async]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!db || repeats < 1 || repeats > MAX_REPEATS || seconds <= 0) {
        fprintf(stderr, "bench: --db is required; 1-%d repeats; seconds > 0\n", MAX_REPEATS);
        return 2;
    }
    build_matrix(only, smoke);

    /* Repeat the whole matrix, alternating contenders within each group. */
    for (int r = 0; r < repeats; r++)
        for (int i = 0; i < ncells; i++) {
            cell_t *c = &cells[i];
            bench_setup_t s = {.conninfo = db, .bouncer = bouncer, .zdb_url = zdb,
                               .pool_size = c->pool_size, .min_size = c->pool_size,
                               .threads = c->threads, .pre_ping = c->pre_ping,
                               .query = (bench_query_t)c->workload};
            if (r > 0 && c->nruns == 0)
                continue; /* skipped the first time: not available */
            if (run_cell(contender_find(c->contender), &s, seconds, &c->runs[c->nruns]))
                c->nruns++;
        }

    result_t med[MAX_CELLS];
    long errors = 0;
    for (int i = 0; i < ncells; i++) {
        med[i] = median(&cells[i]);
        errors += med[i].errors;
        if (cells[i].nruns == 0)
            continue;
        printf("{\"contender\":\"%s\",\"workload\":\"%s\",\"threads\":%d,\"pool_size\":%d,"
               "\"ops\":%ld,\"ops_per_s\":%.0f,\"iter_p50_us\":%.2f,\"iter_p99_us\":%.2f,"
               "\"wait_p99_us\":%.2f,\"slowest_thread_share\":%.2f,\"errors\":%ld}\n",
               cells[i].label, workload_names[cells[i].workload], cells[i].threads,
               cells[i].pool_size, med[i].ops, med[i].ops_per_s, med[i].iter_p50_us,
               med[i].iter_p99_us, med[i].wait_p99_us, med[i].slowest_share, med[i].errors);
    }
    if (!only || strcmp(only, "burst") == 0)
        burst(db, smoke ? 1 : repeats);
    if (!only || strcmp(only, "memory") == 0)
        memory(db);
    if (!only || strcmp(only, "async") == 0)
        errors += bench_async(db, seconds, smoke ? 1 : repeats);

    printf("\n| workload | T | contender | ops/s | vs baseline | ns/op per thread | p50 us | p99 us | "
           "wait p99 us | slowest thread | errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < ncells; i++) {
        if (cells[i].nruns == 0)
            continue;
        const cell_t *b = baseline_of(&cells[i]);
        const result_t *bm = b ? &med[b - cells] : NULL;
        printf("| %s | %d | %s | %.0f | %.2fx%s | %.0f | %.1f | %.1f | %.1f | %.2f | %ld |\n",
               workload_names[cells[i].workload], cells[i].threads, cells[i].label,
               med[i].ops_per_s, bm && bm->ops_per_s > 0 ? med[i].ops_per_s / bm->ops_per_s : 0,
               cells[i].baseline ? " (baseline)" : "",
               med[i].ops_per_s > 0 ? 1e9 * cells[i].threads / med[i].ops_per_s : 0,
               med[i].iter_p50_us, med[i].iter_p99_us, med[i].wait_p99_us,
               med[i].slowest_share, med[i].errors);
    }
    printf("\n(%d repeats of %.2f s per cell, medians; slowest thread = its "
           "iterations / the mean)\n", repeats, seconds);
    return errors == 0 ? 0 : 1;
}
