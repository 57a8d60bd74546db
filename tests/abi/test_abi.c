/* SPDX-License-Identifier: MIT */
/*
 * test_abi.c - a program built against an older pgpool.h, run against this
 * library.  CMake builds it twice: against tests/abi/1.0/pgpool.h (1.0 as
 * released: no struct sizes passed) and against this header with its
 * structs cut back to the contract's first layout (tests/CMakeLists.txt
 * generates it).  Every struct the library fills or
 * reads sits in front of a guard of known bytes: a library that wrote past
 * the caller's struct changes the guard; one that read past it finds hook
 * pointers made of guard bytes and crashes.  Plain C and exit codes, no
 * cmocka: it has to compile against any header.
 *
 *   PGPOOL_TEST_DSN=... build/tests/test_abi_1.0
 */
#include <pgpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_BYTE 0xa5

static int failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static int guard_intact(const unsigned char *guard, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (guard[i] != GUARD_BYTE)
            return 0;
    return 1;
}

static struct {
    pool_config_t cfg;
    unsigned char guard[256];
} config;

static struct {
    pool_stats_t stats;
    unsigned char guard[256];
} snapshot;

static struct {
    pool_host_stats_t hosts[2];
    unsigned char guard[256];
} host_snapshot;

static char text[65536];

static void check_config(const char *dsn)
{
    memset(&config, GUARD_BYTE, sizeof config);
    pool_config_init(&config.cfg);
    CHECK(guard_intact(config.guard, sizeof config.guard));
    CHECK(config.cfg.conninfo == NULL && config.cfg.min_size == 1 && config.cfg.max_size == 10);
    CHECK(config.cfg.arg == NULL);
    config.cfg.conninfo = dsn;
    config.cfg.max_size = 2;
}

static void check_stats(pool_t *pool)
{
    memset(&snapshot, GUARD_BYTE, sizeof snapshot);
    CHECK(pool_get_stats(pool, &snapshot.stats) == POOL_OK);
    CHECK(guard_intact(snapshot.guard, sizeof snapshot.guard));
    CHECK(snapshot.stats.acquired == 1 && snapshot.stats.total >= 1 && snapshot.stats.in_use == 0);
    CHECK(snapshot.stats.max_size == 2);

    int n = pool_stats_format(&snapshot.stats, POOL_FORMAT_PROMETHEUS, "abi", text, sizeof text);
    CHECK(n > 0 && (size_t)n < sizeof text);
    CHECK(strstr(text, "pgpool_acquired_total{pool=\"abi\"} 1\n") != NULL);
    n = pool_stats_format(&snapshot.stats, POOL_FORMAT_JSON, "abi", text, sizeof text);
    CHECK(n > 0 && strstr(text, "\"acquired\":1,") != NULL);
#ifdef PGPOOL_ABI_TEST_SMALLER
    /* Fields the caller's struct lacks are left out, not printed as zero. */
    CHECK(strstr(text, "wait_hist") == NULL && strstr(text, "closed_evicted") == NULL);
#else
    CHECK(strstr(text, "\"wait_hist\"") != NULL && strstr(text, "\"closed_evicted\"") != NULL);
#endif
}

static void check_host_stats(pool_t *pool)
{
    memset(&host_snapshot, GUARD_BYTE, sizeof host_snapshot);
    CHECK(pool_get_host_stats(pool, host_snapshot.hosts, 2) == 1);
    /* One host: only hosts[0] written, hosts[1] untouched. */
    CHECK(guard_intact((const unsigned char *)&host_snapshot.hosts[1],
                       sizeof host_snapshot.hosts[1]));
    CHECK(guard_intact(host_snapshot.guard, sizeof host_snapshot.guard));
    CHECK(host_snapshot.hosts[0].open >= 1);
    int n = pool_host_stats_format(host_snapshot.hosts, 1, POOL_FORMAT_JSON, "abi", text,
                                   sizeof text);
    CHECK(n > 0 && strstr(text, "\"open\":") != NULL);
}

int main(void)
{
    const char *dsn = getenv("PGPOOL_TEST_DSN");
    if (!dsn) {
        fprintf(stderr, "PGPOOL_TEST_DSN is not set\n");
        return 2;
    }
#ifdef PGPOOL_VERSION_NUMBER
    CHECK(pool_version() >= PGPOOL_VERSION_NUMBER);
#endif
    check_config(dsn);
    char err[1024];
    pool_t *pool = pool_create(&config.cfg, err, sizeof err);
    if (!pool) {
        fprintf(stderr, "pool_create: %s\n", err);
        return 1;
    }
    /* A checkout runs the hooks the library would find past a short config. */
    PGconn *conn = pool_getconn(pool);
    CHECK(conn != NULL);
    if (conn) {
        PGresult *res = PQexec(conn, "SELECT 1");
        CHECK(PQresultStatus(res) == PGRES_TUPLES_OK);
        PQclear(res);
        CHECK(pool_putconn(pool, conn) == POOL_OK);
    }
    check_stats(pool);
    check_host_stats(pool);
    pool_destroy(pool);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("abi ok: %zu-byte config, %zu-byte stats\n", sizeof(pool_config_t),
           sizeof(pool_stats_t));
    return 0;
}
