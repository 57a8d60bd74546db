/* SPDX-License-Identifier: MIT */
/*
 * contenders.c - pgpool and what a C programmer would use instead, behind one
 * interface: the obvious hand-rolled pool (a mutex, a condition variable and
 * an array), a dedicated connection per thread, a new connection per request,
 * libzdb's ConnectionPool (the C peer; when built with it), and PgBouncer in
 * transaction mode, with persistent client connections or one per request.
 */
#define _GNU_SOURCE
#include "contenders.h"

#include <pgpool.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_ZDB
#include <zdb.h>
#endif

#define MAX_CONNS 256

static bench_setup_t setup;
static atomic_long opened;

static PGconn *connect_one(const char *conninfo, char *err, size_t errlen)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    atomic_fetch_add(&opened, 1);
    return c;
}

static bool prepare(PGconn *c)
{
    PGresult *r = PQprepare(c, "q", "SELECT $1::int", 1, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

static bool pq_query(void *conn, bench_query_t q)
{
    PGconn *c = conn;
    PGresult *r;
    if (q == QUERY_PREPARED) {
        const char *one = "1";
        r = PQexecPrepared(c, "q", 1, &one, NULL, NULL, 0);
    } else {
        r = PQexec(c, "SELECT 1");
    }
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static long count_opened(void)
{
    return atomic_load(&opened);
}

/* ---- pgpool -------------------------------------------------------------- */

static pool_t *pool;

static int prepare_on_connect(PGconn *c, void *arg)
{
    return prepare(c) ? 0 : 1;
}

static bool pgpool_start(const bench_setup_t *s, char *err, size_t errlen)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = s->conninfo;
    cfg.min_size = s->min_size;
    cfg.max_size = s->pool_size;
    cfg.pre_ping = s->pre_ping;
    cfg.acquire_timeout_ms = 60000;
    if (s->query == QUERY_PREPARED)
        cfg.on_connect = prepare_on_connect;
    pool = pool_create(&cfg, err, errlen);
    return pool != NULL;
}

static void *pgpool_get(int thread)
{
    return pool_getconn(pool);
}

static void pgpool_put(void *conn, int thread)
{
    pool_putconn(pool, conn);
}

static void pgpool_stop(void)
{
    pool_destroy(pool);
    pool = NULL;
}

static long pgpool_connects(void)
{
    pool_stats_t st;
    return pool_get_stats(pool, &st) == POOL_OK ? (long)st.connects : -1;
}

static const contender_t pgpool_contender = {
    "pgpool", pgpool_start, pgpool_get, pq_query, pgpool_put, pgpool_stop, pgpool_connects,
};

/* ---- the hand-rolled pool: the obvious 30 lines ---------------------------- */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    PGconn *free[MAX_CONNS], *all[MAX_CONNS];
    int nfree, nall;
} hand = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static bool hand_start(const bench_setup_t *s, char *err, size_t errlen)
{
    hand.nfree = hand.nall = 0;
    for (int i = 0; i < s->pool_size && i < MAX_CONNS; i++) {
        PGconn *c = connect_one(s->conninfo, err, errlen);
        if (!c || (s->query == QUERY_PREPARED && !prepare(c)))
            return false;
        hand.all[hand.nall++] = hand.free[hand.nfree++] = c;
    }
    return true;
}

static void *hand_get(int thread)
{
    pthread_mutex_lock(&hand.lock);
    while (hand.nfree == 0)
        pthread_cond_wait(&hand.cond, &hand.lock);
    PGconn *c = hand.free[--hand.nfree];
    pthread_mutex_unlock(&hand.lock);
    return c;
}

static void hand_put(void *conn, int thread)
{
    pthread_mutex_lock(&hand.lock);
    hand.free[hand.nfree++] = conn;
    pthread_cond_signal(&hand.cond);
    pthread_mutex_unlock(&hand.lock);
}

static void hand_stop(void)
{
    for (int i = 0; i < hand.nall; i++)
        PQfinish(hand.all[i]);
    hand.nall = hand.nfree = 0;
}

static const contender_t hand_contender = {
    "hand-rolled", hand_start, hand_get, pq_query, hand_put, hand_stop, count_opened,
};

/* ---- a dedicated connection per thread (direct, or through PgBouncer) ------ */

static PGconn *dedicated[MAX_CONNS];
static int ndedicated;

static bool dedicated_open(const char *conninfo, const bench_setup_t *s, char *err, size_t errlen)
{
    if (!conninfo) {
        snprintf(err, errlen, "no PgBouncer (run through tests/bench/run.sh)");
        return false;
    }
    for (ndedicated = 0; ndedicated < s->threads && ndedicated < MAX_CONNS; ndedicated++) {
        dedicated[ndedicated] = connect_one(conninfo, err, errlen);
        if (!dedicated[ndedicated] || (s->query == QUERY_PREPARED && !prepare(dedicated[ndedicated])))
            return false;
    }
    return true;
}

static bool dedicated_start(const bench_setup_t *s, char *err, size_t errlen)
{
    return dedicated_open(s->conninfo, s, err, errlen);
}

static bool bouncer_persistent_start(const bench_setup_t *s, char *err, size_t errlen)
{
    return dedicated_open(s->bouncer, s, err, errlen);
}

static void *dedicated_get(int thread)
{
    return dedicated[thread];
}

static void dedicated_put(void *conn, int thread)
{
}

static void dedicated_stop(void)
{
    for (int i = 0; i < ndedicated; i++)
        PQfinish(dedicated[i]);
    ndedicated = 0;
}

static const contender_t dedicated_contender = {
    "dedicated", dedicated_start, dedicated_get, pq_query, dedicated_put, dedicated_stop, count_opened,
};
static const contender_t bouncer_persistent_contender = {
    "pgbouncer-persistent", bouncer_persistent_start, dedicated_get, pq_query, dedicated_put,
    dedicated_stop, count_opened,
};

/* ---- a new connection per request (direct, or through PgBouncer) ----------- */

static const char *per_request_conninfo;

static bool per_request_start(const bench_setup_t *s, char *err, size_t errlen)
{
    per_request_conninfo = s->conninfo;
    return true;
}

static bool bouncer_per_request_start(const bench_setup_t *s, char *err, size_t errlen)
{
    per_request_conninfo = s->bouncer;
    if (!s->bouncer)
        snprintf(err, errlen, "no PgBouncer (run through tests/bench/run.sh)");
    return s->bouncer != NULL;
}

static void *per_request_get(int thread)
{
    char err[256];
    PGconn *c = connect_one(per_request_conninfo, err, sizeof err);
    if (c && setup.query == QUERY_PREPARED && !prepare(c)) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void per_request_put(void *conn, int thread)
{
    PQfinish(conn);
}

static void nothing(void)
{
}

static const contender_t per_request_contender = {
    "connect-per-request", per_request_start, per_request_get, pq_query, per_request_put,
    nothing, count_opened,
};
static const contender_t bouncer_per_request_contender = {
    "pgbouncer-per-request", bouncer_per_request_start, per_request_get, pq_query,
    per_request_put, nothing, count_opened,
};

/* ---- libzdb's ConnectionPool ---------------------------------------------- */

#ifdef HAVE_ZDB
static URL_T zdb_url;
static ConnectionPool_T zdb_pool;

static bool zdb_start(const bench_setup_t *s, char *err, size_t errlen)
{
    zdb_url = URL_new(s->zdb_url);
    if (!zdb_url) {
        snprintf(err, errlen, "libzdb refused the URL %s", s->zdb_url);
        return false;
    }
    zdb_pool = ConnectionPool_new(zdb_url);
    ConnectionPool_setInitialConnections(zdb_pool, s->pool_size);
    ConnectionPool_setMaxConnections(zdb_pool, s->pool_size);
    /* Its reaper (a sweeper thread) stays at the default, as a user leaves it. */
    bool ok = true;
    TRY
        ConnectionPool_start(zdb_pool);
    ELSE
        snprintf(err, errlen, "libzdb: %s", Exception_frame.message);
        ok = false;
    END_TRY;
    return ok;
}

/* libzdb never waits: getConnection returns NULL when all are out, and the
   caller retries, as a libzdb user has to. */
static void *zdb_get(int thread)
{
    Connection_T c;
    while (!(c = ConnectionPool_getConnection(zdb_pool)))
        sched_yield();
    return c;
}

static bool zdb_query(void *conn, bench_query_t q)
{
    bool ok = true;
    TRY
        ResultSet_T r = Connection_executeQuery(conn, "SELECT 1");
        ok = ResultSet_next(r);
    ELSE
        ok = false;
    END_TRY;
    return ok;
}

static void zdb_put(void *conn, int thread)
{
    Connection_close(conn);
}

static void zdb_stop(void)
{
    if (zdb_pool)
        ConnectionPool_free(&zdb_pool);
    if (zdb_url)
        URL_free(&zdb_url);
}

static long zdb_connects(void)
{
    return -1;
}

static const contender_t zdb_contender = {
    "libzdb", zdb_start, zdb_get, zdb_query, zdb_put, zdb_stop, zdb_connects,
};
#endif

/* ---- registry ------------------------------------------------------------- */

const contender_t *const contenders[] = {
    &pgpool_contender, &hand_contender, &dedicated_contender, &per_request_contender,
#ifdef HAVE_ZDB
    &zdb_contender,
#endif
    &bouncer_persistent_contender, &bouncer_per_request_contender, NULL,
};

const contender_t *contender_find(const char *name)
{
    for (int i = 0; contenders[i]; i++)
        if (strcmp(contenders[i]->name, name) == 0)
            return contenders[i];
    return NULL;
}

/* Remembers the setup for contenders that need it per request. */
void contender_remember(const bench_setup_t *s)
{
    setup = *s;
    atomic_store(&opened, 0);
}
