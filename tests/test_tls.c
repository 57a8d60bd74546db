/* SPDX-License-Identifier: MIT */
/*
 * test_tls.c - the pool over TLS: sslmode=verify-full works through the pool
 * against a cluster serving a certificate from a throwaway CA, and a wrong CA
 * fails at once with POOL_ECONNECT and libpq's reason.  The test starts its
 * own TLS cluster on 127.0.0.1 on a free port (openssl makes the CA).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[64];
static int port;
static bool ready;

static int harness(const char *cmd)
{
    char line[512];
    snprintf(line, sizeof line, "%s %s %d %s", getenv("PGPOOL_TEST_SCRIPT"), dir, port, cmd);
    return system(line);
}

static int start_tls_cluster(void **state)
{
    if (!getenv("PGPOOL_TEST_SCRIPT") || system("command -v openssl >/dev/null 2>&1") != 0)
        return 0; /* tests skip */
    snprintf(dir, sizeof dir, "/tmp/pgpool-tls.XXXXXX");
    if (!mkdtemp(dir) || (port = test_free_port()) < 0)
        return 0;
    ready = harness("tls-start") == 0;
    return 0;
}

static int stop_tls_cluster(void **state)
{
    if (dir[0])
        harness("destroy");
    return 0;
}

static const char *tls_conninfo(const char *app, const char *ca)
{
    static char buf[512];
    snprintf(buf, sizeof buf,
             "host=localhost hostaddr=127.0.0.1 port=%d dbname=postgres user=postgres "
             "sslmode=verify-full sslrootcert=%s/tls/%s application_name=%s",
             port, dir, ca, app);
    return buf;
}

static void test_verify_full_works_through_the_pool(void **state)
{
    if (!ready)
        skip();
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = tls_conninfo("tls_ok", "ca.crt");
    cfg.max_size = 2;
    char err[512] = "";
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err);
    for (int i = 0; i < 3; i++) {
        PGconn *c = pool_getconn(pool);
        assert_non_null(c);
        assert_int_equal(PQsslInUse(c), 1);
        assert_int_equal(test_query_int(c, "SELECT ssl::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), 1);
        pool_putconn(pool, c);
    }
    pool_destroy(pool);
}

static void test_a_wrong_ca_fails_at_once_with_libpq_reason(void **state)
{
    if (!ready)
        skip();
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = tls_conninfo("tls_wrong_ca", "wrong-ca.crt");
    char err[512] = "";
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(err, "certificate verify failed"));

    cfg.min_size = 0; /* and a caller waiting on such a pool fails at once too */
    cfg.acquire_timeout_ms = 10000;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn(pool));
    assert_true(test_now_ms() - t0 < 2000);
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(pool_errmsg(), "certificate verify failed"));
    pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_full_works_through_the_pool),
        cmocka_unit_test(test_a_wrong_ca_fails_at_once_with_libpq_reason),
    };
    return cmocka_run_group_tests(tests, start_tls_cluster, stop_tls_cluster);
}
