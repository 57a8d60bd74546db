/* SPDX-License-Identifier: MIT */
/*
 * harness.c - helpers shared by the test files (see harness.h).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *dsn(void)
{
    const char *d = getenv("PGPOOL_TEST_DSN");
    if (!d || !*d) {
        fprintf(stderr, "PGPOOL_TEST_DSN is not set: run the tests through ctest\n");
        exit(1);
    }
    return d;
}

const char *test_conninfo(const char *app)
{
    static _Thread_local char buf[8][1024];
    static _Thread_local int next;
    char *out = buf[next++ % 8];
    snprintf(out, sizeof buf[0], "%s application_name=%s", dsn(), app);
    return out;
}

void test_config(pool_config_t *cfg, const char *app)
{
    pool_config_init(cfg);
    cfg->conninfo = test_conninfo(app);
    cfg->min_size = 1;
    cfg->max_size = 4;
    cfg->acquire_timeout_ms = 5000;
    cfg->connect_timeout_ms = 5000;
}

pool_t *test_pool_create(const pool_config_t *cfg)
{
    char err[POOL_ERRMSG_SIZE];
    pool_t *pool = pool_create(cfg, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err);
    return pool;
}

pool_t *test_pool(const char *app, int min, int max, int overflow)
{
    pool_config_t cfg;
    test_config(&cfg, app);
    cfg.min_size = min;
    cfg.max_size = max;
    cfg.max_overflow = overflow;
    return test_pool_create(&cfg);
}

bool test_wait_readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int64_t deadline = test_now_ms() + timeout_ms;
    for (;;) { /* polls once even with timeout 0: "readable now?" */
        int64_t left = deadline - test_now_ms();
        int r = poll(&pfd, 1, left > 0 ? (int)left : 0);
        if (r > 0)
            return true;
        if ((r < 0 && errno != EINTR) || left <= 0)
            return false;
    }
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(test_conninfo("pgpool_test_admin"));
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "admin connection failed: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

int test_query_int(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    int v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

int test_admin_int(const char *sql)
{
    PGconn *c = admin();
    if (!c)
        return -1;
    int v = test_query_int(c, sql);
    PQfinish(c);
    return v;
}

int test_count_backends(const char *app)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
    return test_admin_int(sql);
}

int test_terminate_backends(const char *app)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE application_name = '%s'", app);
    return test_admin_int(sql);
}

bool test_wait_backends(const char *app, int n, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    do {
        if (test_count_backends(app) == n)
            return true;
        test_sleep_ms(10);
    } while (test_now_ms() < deadline);
    return false;
}

bool test_server_controllable(void)
{
    return getenv("PGPOOL_TEST_HARNESS") != NULL;
}

bool test_server(const char *cmd)
{
    const char *h = getenv("PGPOOL_TEST_HARNESS");
    if (!h)
        return false;
    char line[1024];
    snprintf(line, sizeof line, "%s %s", h, cmd);
    return system(line) == 0;
}

int64_t test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

void test_sleep_us(int us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

bool test_wait_for(bool (*pred)(void *), void *arg, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    do {
        if (pred(arg))
            return true;
        test_sleep_ms(2);
    } while (test_now_ms() < deadline);
    return pred(arg);
}

bool test_wait_waiting(pool_t *pool, int n)
{
    int64_t deadline = test_now_ms() + 5000;
    do {
        pool_stats_t st;
        if (pool_get_stats(pool, &st) == POOL_OK && st.waiting == n)
            return true;
        test_sleep_ms(1);
    } while (test_now_ms() < deadline);
    return false;
}

bool test_wait_idle(pool_t *pool, int n, int timeout_ms)
{
    int64_t deadline = test_now_ms() + timeout_ms;
    do {
        pool_stats_t st;
        if (pool_get_stats(pool, &st) == POOL_OK && st.idle == n)
            return true;
        test_sleep_ms(2);
    } while (test_now_ms() < deadline);
    return false;
}

void test_log_cb(int level, const char *msg, void *arg)
{
    test_log_t *log = arg;
    if (!log)
        return;
    pthread_mutex_lock(&log_lock);
    log->lines++;
    if (level <= POOL_LOG_WARN)
        log->warnings++;
    size_t n = strlen(log->text);
    snprintf(log->text + n, sizeof log->text - n, "%d: %s\n", level, msg);
    pthread_mutex_unlock(&log_lock);
}

bool test_log_contains(test_log_t *log, const char *needle)
{
    pthread_mutex_lock(&log_lock);
    bool found = strstr(log->text, needle) != NULL;
    pthread_mutex_unlock(&log_lock);
    return found;
}

int test_log_count(test_log_t *log, const char *needle)
{
    pthread_mutex_lock(&log_lock);
    int n = 0;
    for (const char *line = log->text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *hit = strstr(line, needle);
        n += hit && hit < line + len;
        line += len + (end != NULL);
    }
    pthread_mutex_unlock(&log_lock);
    return n;
}

bool test_exec_ok(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(r);
    PQclear(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

int test_backend_pid(PGconn *conn)
{
    return PQbackendPID(conn);
}

static void *load_main(void *arg)
{
    test_load_t *load = arg;
    while (!atomic_load(&load->stop)) {
        PGconn *c = pool_getconn(load->pool);
        if (!c) {
            pthread_mutex_lock(&log_lock);
            if (!load->first_error[0])
                snprintf(load->first_error, sizeof load->first_error, "%s", pool_errmsg());
            pthread_mutex_unlock(&log_lock);
            atomic_fetch_add(&load->errors, 1);
            continue;
        }
        bool good = load->check ? load->check(c, load->arg) : test_exec_ok(c, "SELECT 1");
        atomic_fetch_add(good ? &load->ok : &load->errors, 1);
        pool_putconn(load->pool, c);
    }
    return NULL;
}

bool test_load_exec(PGconn *conn, void *sql)
{
    return test_exec_ok(conn, sql);
}

void test_load_start(test_load_t *load)
{
    atomic_store(&load->stop, false);
    atomic_store(&load->ok, 0);
    atomic_store(&load->errors, 0);
    load->first_error[0] = '\0';
    for (int i = 0; i < load->threads && i < TEST_LOAD_MAX_THREADS; i++)
        pthread_create(&load->tid[i], NULL, load_main, load);
}

void test_load_stop(test_load_t *load)
{
    atomic_store(&load->stop, true);
    for (int i = 0; i < load->threads && i < TEST_LOAD_MAX_THREADS; i++)
        pthread_join(load->tid[i], NULL);
}

bool test_load_progress(test_load_t *load, long n, int timeout_ms)
{
    long target = atomic_load(&load->ok) + atomic_load(&load->errors) + n;
    int64_t deadline = test_now_ms() + timeout_ms;
    while (atomic_load(&load->ok) + atomic_load(&load->errors) < target) {
        if (test_now_ms() >= deadline)
            return false;
        test_sleep_ms(2);
    }
    return true;
}

int test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

test_getconn_t test_getconn_timed(pool_t *pool, int timeout_ms)
{
    test_getconn_t g;
    int64_t t0 = test_now_ms();
    g.conn = pool_getconn_timeout(pool, timeout_ms);
    g.took_ms = test_now_ms() - t0;
    g.err = pool_errcode();
    snprintf(g.msg, sizeof g.msg, "%s", pool_errmsg());
    return g;
}

test_run_t test_run_within(PGconn *conn, const char *sql, int ms, test_run_out_t *out)
{
    test_run_out_t ignored;
    if (!out)
        out = &ignored;
    memset(out, 0, sizeof *out);
    if (!PQsendQuery(conn, sql))
        return TEST_RUN_FAILED;
    int64_t deadline = test_now_ms() + ms;
    test_run_t rc = TEST_RUN_OK;
    bool first = true;
    for (;;) {
        while (PQisBusy(conn)) {
            int64_t left = deadline - test_now_ms();
            struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) == 0)
                return TEST_RUN_TIMED_OUT;
            if (!PQconsumeInput(conn))
                break;
        }
        PGresult *r = PQgetResult(conn);
        if (!r)
            return PQstatus(conn) == CONNECTION_OK ? rc : TEST_RUN_FAILED;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && first && PQntuples(r) > 0)
            snprintf(out->first, sizeof out->first, "%s", PQgetvalue(r, 0, 0));
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(out->sqlstate, sizeof out->sqlstate, "%s", state ? state : "");
            rc = TEST_RUN_FAILED;
        }
        first = false;
        PQclear(r);
    }
}

pool_host_stats_t test_host_stats(pool_t *pool, int j)
{
    pool_host_stats_t hs[8];
    int n = pool_get_host_stats(pool, hs, 8);
    assert_in_range(j, 0, n - 1);
    return hs[j];
}

static bool exec_on(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    bool ok = PQstatus(c) == CONNECTION_OK && test_exec_ok(c, sql);
    PQfinish(c);
    return ok;
}

void test_fence(const char *conninfo, bool on)
{
    assert_true(exec_on(conninfo, on ? "ALTER SYSTEM SET default_transaction_read_only = on"
                                     : "ALTER SYSTEM RESET default_transaction_read_only"));
    assert_true(exec_on(conninfo, "SELECT pg_reload_conf()"));
    const char *want = on ? "on" : "off";
    int64_t deadline = test_now_ms() + 10000;
    for (;;) {
        PGconn *c = PQconnectdb(conninfo);
        PGresult *r = PQexec(c, "SHOW default_transaction_read_only");
        bool seen = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), want) == 0;
        PQclear(r);
        PQfinish(c);
        if (seen)
            return;
        assert_true(test_now_ms() < deadline);
        test_sleep_ms(20);
    }
}

void test_spin_meet(test_spin_barrier_t *b)
{
    int round = atomic_load(&b->round);
    if (atomic_fetch_add(&b->arrived, 1) == 1) {
        atomic_store(&b->arrived, 0);
        atomic_store(&b->round, round + 1);
        return;
    }
    for (int n = 0; atomic_load(&b->round) == round; n++)
        if (n > 1000)
            sched_yield(); /* one core, or valgrind */
}

void test_spin_for(int n)
{
    for (volatile int i = 0; i < n; i++)
        ;
}

/* Calls fn(fd, arg) for each descriptor open in this process. */
static void each_fd(void (*fn)(int fd, void *arg), void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    int own = d ? dirfd(d) : -1;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && atoi(e->d_name) != own)
            fn(atoi(e->d_name), arg);
    if (d)
        closedir(d);
}

static void count_socket(int fd, void *n)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode))
        (*(int *)n)++;
}

int test_count_sockets(void)
{
    int n = 0;
    each_fd(count_socket, &n);
    return n;
}

static void note_highest(int fd, void *high)
{
    if (fd > *(int *)high)
        *(int *)high = fd;
}

int test_highest_fd(void)
{
    int high = 0;
    each_fd(note_highest, &high);
    return high;
}
