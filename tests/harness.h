/* SPDX-License-Identifier: MIT */
/*
 * harness.h - what every test file shares: the server under test, counting
 * and killing backends, controlling the throwaway cluster, capturing logs.
 *
 * The server is named by PGPOOL_TEST_DSN (set by CTest to the cluster its
 * fixture started; point it at any other server to run the suite there).
 * Tests that stop or restart the server need PGPOOL_TEST_HARNESS too.
 */
#ifndef PGPOOL_TEST_HARNESS_H
#define PGPOOL_TEST_HARNESS_H

#include <pgpool.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* The DSN of the server, with application_name=app appended.  Static buffer
   per call site is not needed: returns a malloc'd string freed at exit. */
const char *test_conninfo(const char *app);

/* A config with test-friendly defaults: conninfo for app, min 1, max 4. */
void test_config(pool_config_t *cfg, const char *app);

/* The pool *cfg describes; fails the test, with pool_create's message, when
   it cannot be created. */
pool_t *test_pool_create(const pool_config_t *cfg);

/* A pool on the test server named app (test_config's settings) with these
   sizes; fails the test when it cannot be created. */
pool_t *test_pool(const char *app, int min, int max, int overflow);

/* Waits until fd is readable (something arrived), at most timeout_ms. */
bool test_wait_readable(int fd, int timeout_ms);

/* Backends in pg_stat_activity with this application_name. */
int test_count_backends(const char *app);

/* pg_terminate_backend() on every backend of app; returns how many. */
int test_terminate_backends(const char *app);

/* Runs sql on a fresh admin connection; returns the first value as int (or -1). */
int test_admin_int(const char *sql);

/* Waits (polling, with a deadline) until count_backends(app) == n. */
bool test_wait_backends(const char *app, int n, int timeout_ms);

/* Controls the throwaway cluster: "stop", "kill", "restart", "pause" (the
   postmaster stops answering new connections), "resume".  False (and the
   test skips) when PGPOOL_TEST_HARNESS is not set. */
bool test_server(const char *cmd);
bool test_server_controllable(void);

/* Monotonic milliseconds. */
int64_t test_now_ms(void);
void test_sleep_ms(int ms);
void test_sleep_us(int us);

/* Waits (polling every ms, up to timeout_ms) until pred(arg) is true. */
bool test_wait_for(bool (*pred)(void *), void *arg, int timeout_ms);

/* Waits (polling, up to 5 s) until stats.waiting == n. */
bool test_wait_waiting(pool_t *pool, int n);
/* Waits (polling, up to timeout_ms) until stats.idle == n. */
bool test_wait_idle(pool_t *pool, int n, int timeout_ms);

/* A log sink for on_log: counts lines and keeps them for grepping. */
typedef struct test_log {
    int lines;
    int warnings;
    char text[16384];
} test_log_t;
void test_log_cb(int level, const char *msg, void *arg);
bool test_log_contains(test_log_t *log, const char *needle);
/* How many logged lines contain needle. */
int test_log_count(test_log_t *log, const char *needle);

/* Runs a query on conn; true when it succeeds. */
bool test_exec_ok(PGconn *conn, const char *sql);
/* The first column of the first row as an int, or -1. */
int test_query_int(PGconn *conn, const char *sql);

/* The backend pid of a borrowed connection. */
int test_backend_pid(PGconn *conn);

/* Concurrent load: threads loop pool_getconn, a query, pool_putconn until
   test_load_stop.  check (optional) runs on each connection instead of
   SELECT 1 and returns false to count an error. */
#define TEST_LOAD_MAX_THREADS 64
typedef struct test_load {
    pool_t *pool;
    int threads;
    bool (*check)(PGconn *conn, void *arg);
    void *arg;
    /* filled in by the load */
    _Atomic bool stop;
    _Atomic long ok, errors;
    char first_error[256];  /* pool_errmsg of the first failed getconn */
    pthread_t tid[TEST_LOAD_MAX_THREADS];
} test_load_t;
/* A check for test_load_t that runs arg (an SQL string). */
bool test_load_exec(PGconn *conn, void *sql);
void test_load_start(test_load_t *load);
void test_load_stop(test_load_t *load);
/* Waits (up to timeout_ms) until the load has done n more iterations. */
bool test_load_progress(test_load_t *load, long n, int timeout_ms);

/* A TCP port on 127.0.0.1 that nothing listens on just now; -1 on failure. */
int test_free_port(void);

/* This process's open descriptors (/proc/self/fd): how many are sockets, and
   the highest number open. */
int test_count_sockets(void);
int test_highest_fd(void);

/* Two threads meet here and leave together, spinning (a sleeping barrier
   wakes one of them tens of microseconds after the other): races are swept
   by spinning test_spin_for(n) after it, n varying by round. */
typedef struct test_spin_barrier {
    atomic_int arrived;
    atomic_int round;
} test_spin_barrier_t;
void test_spin_meet(test_spin_barrier_t *b);
void test_spin_for(int n);

/* Runs sql (one or more statements) and waits at most ms for every result:
   a statement on a silent server (black hole) or one queued behind
   PgBouncer's pool must not hang the test.  out (optional) gets the SQLSTATE
   of a failed result and the first value of the first row returned. */
typedef enum { TEST_RUN_OK, TEST_RUN_FAILED, TEST_RUN_TIMED_OUT } test_run_t;
typedef struct test_run_out {
    char sqlstate[6];
    char first[64];
} test_run_out_t;
test_run_t test_run_within(PGconn *conn, const char *sql, int ms, test_run_out_t *out);

/* One pool_getconn_timeout, timed, with its outcome kept (pool_errmsg is
   the thread's, and the next call overwrites it). */
typedef struct test_getconn {
    PGconn *conn;
    int64_t took_ms;
    pool_err_t err;
    char msg[POOL_ERRMSG_SIZE];
} test_getconn_t;
test_getconn_t test_getconn_timed(pool_t *pool, int timeout_ms);

/* One host's figures (index j in the conninfo) from pool_get_host_stats. */
pool_host_stats_t test_host_stats(pool_t *pool, int j);

/* default_transaction_read_only on the whole server conninfo names, as an
   operator fences a demoted primary (on) or lifts the fence (off); returns
   once new sessions see it: every backend has been signalled by then and
   reloads before its next statement. */
void test_fence(const char *conninfo, bool on);

#define assert_pool_stats(pool, st) assert_int_equal(pool_get_stats((pool), (st)), POOL_OK)

#endif
