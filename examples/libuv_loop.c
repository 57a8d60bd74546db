/* SPDX-License-Identifier: MIT */
/*
 * libuv_loop.c - pgpool driven from a libuv loop: the model for any event
 * loop (libevent, an nginx module...).  Two things to wire:
 *
 *   1. A uv_poll_t on pool_fd(pool), UV_READABLE: its callback calls
 *      pool_dispatch(pool, 0), which runs the callbacks of the requests
 *      that are ready (a connection, or an error).
 *   2. Per borrowed connection, a uv_poll_t on PQsocket(conn) while its
 *      query runs with libpq's non-blocking calls.  Close that handle
 *      (uv_close) before the connection goes back: libuv must be done with
 *      the socket before another request may watch it.
 *
 * No timer: a request's deadline fires on its own and shows up through
 * pool_fd.  Nothing here blocks the loop.
 *
 *   ./libuv_loop CONNINFO [requests (10000)] [in flight (200)]
 */
#define _POSIX_C_SOURCE 200809L
#include <pgpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct app {
    uv_loop_t *loop;
    pool_t *pool;
    uv_poll_t pool_watch;
    int started, done, ok, total;
} app_t;

typedef struct request {
    app_t *app;
    int n;
    PGconn *conn;
    int ok;
    uv_poll_t sock_watch; /* on the connection's socket while its query runs */
} request_t;

static void start_request(app_t *app, request_t *r);

/* The request is over: the next one takes its place, and once every one is
   done the pool's watcher goes, so that uv_run returns. */
static void next(request_t *r)
{
    app_t *app = r->app;
    app->done++;
    app->ok += r->ok;
    if (app->started < app->total)
        start_request(app, r);
    else if (app->done == app->total)
        uv_close((uv_handle_t *)&app->pool_watch, NULL);
}

/* libuv has let go of the socket: the connection can go back. */
static void on_watch_closed(uv_handle_t *h)
{
    request_t *r = h->data;
    PQsetnonblocking(r->conn, 0); /* as the pool handed it out */
    if (r->ok)
        pool_putconn(r->app->pool, r->conn);
    else
        pool_discard(r->app->pool, r->conn); /* its session is in doubt */
    r->conn = NULL;
    next(r);
}

static void on_socket(uv_poll_t *w, int status, int events)
{
    request_t *r = w->data;
    int unsent = status < 0 ? -1 : PQflush(r->conn);
    if (unsent < 0 || !PQconsumeInput(r->conn)) {
        fprintf(stderr, "request %d: %s", r->n, PQerrorMessage(r->conn));
        uv_close((uv_handle_t *)w, on_watch_closed);
        return;
    }
    if (unsent == 0 && (events & UV_WRITABLE))
        uv_poll_start(w, UV_READABLE, on_socket); /* all sent */
    /* PQgetResult blocks unless PQisBusy says it will not: ask before each. */
    for (PGresult *res; !PQisBusy(r->conn);) {
        if (!(res = PQgetResult(r->conn))) {
            uv_poll_stop(w);
            uv_close((uv_handle_t *)w, on_watch_closed);
            return;
        }
        r->ok = r->ok || (PQresultStatus(res) == PGRES_TUPLES_OK &&
                          atoi(PQgetvalue(res, 0, 0)) == r->n);
        PQclear(res);
    }
}

/* pool_getconn_async's callback, run by pool_dispatch on the loop. */
static void on_connection(pool_t *pool, PGconn *conn, pool_err_t err, void *arg)
{
    request_t *r = arg;
    if (!conn) {
        fprintf(stderr, "request %d: %s\n", r->n, pool_errmsg());
        next(r);
        return;
    }
    r->conn = conn;
    char n[16];
    snprintf(n, sizeof n, "%d", r->n);
    const char *values[] = {n};
    if (PQsetnonblocking(conn, 1) != 0 ||
        !PQsendQueryParams(conn, "SELECT $1::int", 1, NULL, values, NULL, NULL, 0) ||
        uv_poll_init(r->app->loop, &r->sock_watch, PQsocket(conn)) != 0) {
        fprintf(stderr, "request %d: %s", r->n, PQerrorMessage(conn));
        pool_discard(pool, conn);
        r->conn = NULL;
        next(r);
        return;
    }
    r->sock_watch.data = r;
    uv_poll_start(&r->sock_watch, UV_READABLE | (PQflush(conn) == 1 ? UV_WRITABLE : 0), on_socket);
}

static void start_request(app_t *app, request_t *r)
{
    r->app = app;
    r->n = ++app->started;
    r->ok = 0;
    if (!pool_getconn_async(app->pool, 10000, on_connection, r)) {
        fprintf(stderr, "request %d: %s\n", r->n, pool_errmsg());
        next(r);
    }
}

static void on_pool(uv_poll_t *w, int status, int events)
{
    pool_dispatch(((app_t *)w->data)->pool, 0);
}

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    if (!conninfo) {
        fprintf(stderr, "usage: %s CONNINFO [requests] [in flight]\n", argv[0]);
        return 2;
    }
    app_t app = {.loop = uv_default_loop(), .total = argc > 2 ? atoi(argv[2]) : 10000};
    int in_flight = argc > 3 ? atoi(argv[3]) : 200;
    if (app.total < 1 || in_flight < 1) {
        fprintf(stderr, "requests and in flight must be positive\n");
        return 2;
    }
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.max_size = 8;
    char err[POOL_ERRMSG_SIZE];
    app.pool = pool_create(&cfg, err, sizeof err);
    if (!app.pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }
    request_t *reqs = calloc((size_t)in_flight, sizeof *reqs);
    if (!reqs || uv_poll_init(app.loop, &app.pool_watch, pool_fd(app.pool)) != 0) {
        fprintf(stderr, "setting up the loop failed\n");
        return 1;
    }
    app.pool_watch.data = &app;
    uv_poll_start(&app.pool_watch, UV_READABLE, on_pool);

    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < in_flight && app.started < app.total; i++)
        start_request(&app, &reqs[i]);
    uv_run(app.loop, UV_RUN_DEFAULT);
    double ms = (double)(uv_hrtime() - t0) / 1e6;

    pool_stats_t st;
    pool_get_stats(app.pool, &st);
    printf("%d requests, %d ok, %d failed, in %.0f ms (%.0f/s) on one thread; pool: %d open, "
           "%d in use, %llu checkouts\n",
           app.total, app.ok, app.total - app.ok, ms, app.total / (ms / 1e3), st.total, st.in_use,
           (unsigned long long)st.acquired);
    pool_destroy(app.pool);
    uv_loop_close(app.loop);
    free(reqs);
    return app.ok == app.total ? 0 : 1;
}
