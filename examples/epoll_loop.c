/* SPDX-License-Identifier: MIT */
/*
 * epoll_loop.c - one thread, one epoll loop, many requests in flight, none
 * of them ever blocking the loop: each request borrows a connection with
 * pool_getconn_async, runs its query with libpq's non-blocking calls
 * (PQsendQueryParams, then PQconsumeInput when the socket is readable) and
 * returns the connection.  The loop watches the pool's descriptor
 * (pool_fd) and calls pool_dispatch when it is readable; it keeps no timer
 * for the pool: deadlines fire on their own.
 *
 *   ./epoll_loop CONNINFO [requests (10000)] [in flight (200)]
 *
 * Prints how many succeeded and exits 0 when every one did.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, under -std=c11 */
#include <pgpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

typedef struct loop loop_t;

/* One request: borrow, query, check the answer, return. */
typedef struct request {
    loop_t *loop;
    int n;               /* its number: the query returns it */
    PGconn *conn;        /* while it holds one */
    int fd;              /* the connection's socket, while watched */
    int ok;              /* its answer was right */
} request_t;

struct loop {
    pool_t *pool;
    int epfd;
    int started, done, ok, total, in_flight;
    request_t *slots;    /* in_flight of them, reused */
};

static void start_request(loop_t *l, request_t *r);

static void finish(request_t *r, int ok)
{
    loop_t *l = r->loop;
    if (r->conn) {
        if (r->fd >= 0)
            epoll_ctl(l->epfd, EPOLL_CTL_DEL, r->fd, NULL);
        PQsetnonblocking(r->conn, 0); /* as the pool handed it out */
        if (ok)
            pool_putconn(l->pool, r->conn);
        else
            pool_discard(l->pool, r->conn); /* its session is in doubt */
        r->conn = NULL;
        r->fd = -1;
    }
    l->done++;
    l->ok += ok;
    if (l->started < l->total)
        start_request(l, r); /* the slot takes the next request */
}

/* The connection's socket is readable (or writable while the query is
   still being sent): read what arrived; when the whole answer is in, check
   it and finish. */
static void on_socket(request_t *r, uint32_t events)
{
    int unsent = PQflush(r->conn);
    if (unsent < 0 || !PQconsumeInput(r->conn)) {
        fprintf(stderr, "request %d: %s", r->n, PQerrorMessage(r->conn));
        finish(r, 0);
        return;
    }
    if ((events & EPOLLOUT) && unsent == 0) { /* all sent: readable is all we wait for */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = r};
        epoll_ctl(r->loop->epfd, EPOLL_CTL_MOD, r->fd, &ev);
    }
    /* PQgetResult blocks unless PQisBusy says it will not: ask before each. */
    for (PGresult *res; !PQisBusy(r->conn);) {
        if (!(res = PQgetResult(r->conn))) {
            finish(r, r->ok);
            return;
        }
        r->ok = r->ok || (PQresultStatus(res) == PGRES_TUPLES_OK && atoi(PQgetvalue(res, 0, 0)) == r->n);
        PQclear(res);
    }
    /* more to come: epoll tells us */
}

/* pool_getconn_async's callback: runs inside pool_dispatch, on the loop. */
static void on_connection(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    request_t *r = arg;
    if (!conn) {
        fprintf(stderr, "request %d: %s\n", r->n, pool_errmsg());
        finish(r, 0);
        return;
    }
    r->conn = conn;
    char n[16];
    snprintf(n, sizeof n, "%d", r->n);
    const char *values[] = {n};
    if (PQsetnonblocking(conn, 1) != 0 ||
        !PQsendQueryParams(conn, "SELECT $1::int", 1, NULL, values, NULL, NULL, 0)) {
        fprintf(stderr, "request %d: %s", r->n, PQerrorMessage(conn));
        finish(r, 0);
        return;
    }
    r->fd = PQsocket(conn);
    struct epoll_event ev = {.events = EPOLLIN | (PQflush(conn) == 1 ? EPOLLOUT : 0),
                             .data.ptr = r};
    if (epoll_ctl(r->loop->epfd, EPOLL_CTL_ADD, r->fd, &ev) != 0) {
        perror("epoll_ctl");
        finish(r, 0);
    }
}

static void start_request(loop_t *l, request_t *r)
{
    r->n = ++l->started;
    r->conn = NULL;
    r->fd = -1;
    r->ok = 0;
    if (!pool_getconn_async(l->pool, 10000, on_connection, r)) {
        fprintf(stderr, "request %d: %s\n", r->n, pool_errmsg());
        l->done++;
        if (l->started < l->total)
            start_request(l, r);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    if (!conninfo) {
        fprintf(stderr, "usage: %s CONNINFO [requests] [in flight]\n", argv[0]);
        return 2;
    }
    loop_t l = {.total = argc > 2 ? atoi(argv[2]) : 10000,
                .in_flight = argc > 3 ? atoi(argv[3]) : 200};
    if (l.total < 1 || l.in_flight < 1) {
        fprintf(stderr, "requests and in flight must be positive\n");
        return 2;
    }
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.max_size = 8;
    char err[POOL_ERRMSG_SIZE];
    l.pool = pool_create(&cfg, err, sizeof err);
    if (!l.pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }
    l.epfd = epoll_create1(EPOLL_CLOEXEC);
    l.slots = calloc((size_t)l.in_flight, sizeof *l.slots);
    struct epoll_event pool_ev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the pool */
    if (l.epfd < 0 || !l.slots || pool_fd(l.pool) < 0 ||
        epoll_ctl(l.epfd, EPOLL_CTL_ADD, pool_fd(l.pool), &pool_ev) != 0) {
        fprintf(stderr, "setting up the loop failed\n");
        return 1;
    }

    double t0 = now_ms();
    for (int i = 0; i < l.in_flight && l.started < l.total; i++) {
        l.slots[i].loop = &l;
        start_request(&l, &l.slots[i]);
    }
    while (l.done < l.total) {
        struct epoll_event evs[64];
        int n = epoll_wait(l.epfd, evs, 64, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr)
                on_socket(evs[i].data.ptr, evs[i].events);
            else
                pool_dispatch(l.pool, 0); /* the callbacks run here */
        }
    }
    double ms = now_ms() - t0;

    pool_stats_t st;
    pool_get_stats(l.pool, &st);
    printf("%d requests, %d ok, %d failed, in %.0f ms (%.0f/s) on one thread; pool: %d open, "
           "%d in use, %llu checkouts, %llu timeouts\n",
           l.total, l.ok, l.total - l.ok, ms, l.total / (ms / 1e3), st.total, st.in_use,
           (unsigned long long)st.acquired, (unsigned long long)st.acquire_timeouts);
    pool_destroy(l.pool);
    free(l.slots);
    return l.ok == l.total ? 0 : 1;
}
