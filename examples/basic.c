/* SPDX-License-Identifier: MIT */
/*
 * basic.c - a first program: create a pool, borrow a connection, run a
 * query, return it, read the pool's statistics, destroy the pool.  Errors
 * are printed the documented way: pool_errmsg() says what failed and why.
 *
 *   ./basic "host=/var/run/postgresql dbname=postgres"      (or set DATABASE_URL)
 */
#include <pgpool.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    const char *conninfo = argc > 1 ? argv[1] : getenv("DATABASE_URL");
    if (!conninfo) {
        fprintf(stderr, "usage: %s CONNINFO (or set DATABASE_URL)\n", argv[0]);
        return 2;
    }

    pool_config_t cfg;
    pool_config_init(&cfg); /* always first: every field gets its default */
    cfg.conninfo = conninfo;
    cfg.max_size = 4;

    char err[POOL_ERRMSG_SIZE]; /* never truncated at this size */
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }

    PGconn *conn = pool_getconn(pool); /* waits up to acquire_timeout_ms (30 s) */
    if (!conn) {
        fprintf(stderr, "pool_getconn: %s\n", pool_errmsg());
        pool_destroy(pool);
        return 1;
    }
    PGresult *res = PQexec(conn, "SELECT version()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        printf("%s\n", PQgetvalue(res, 0, 0));
    else
        fprintf(stderr, "query failed: %s", PQerrorMessage(conn));
    PQclear(res);
    pool_putconn(pool, conn); /* or pool_discard() if the session is in doubt */

    pool_stats_t st;
    pool_get_stats(pool, &st);
    printf("pool: %d open (%d idle, %d in use), %llu checkouts, %llu connections opened, "
           "wait p99 <= %llu us\n",
           st.total, st.idle, st.in_use, (unsigned long long)st.acquired,
           (unsigned long long)st.connects,
           (unsigned long long)pool_hist_percentile(&st.wait_hist, 0.99));

    pool_destroy(pool);
    return 0;
}
