/*
 * basic.c - the smallest correct use of pgpool: create a pool, borrow a
 * connection, run a query, return it, destroy the pool.
 *
 *   ./basic "host=/tmp dbname=postgres"      (or set DATABASE_URL)
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
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    cfg.max_size = 4;

    char err[256];
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }

    PGconn *conn = pool_getconn(pool);
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
    pool_putconn(pool, conn);

    pool_destroy(pool);
    return 0;
}
