/* SPDX-License-Identifier: MIT */
/*
 * test_config.c - pool_config_init defaults, pool_create's checks and the
 * connections it opens before it returns.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_config_init_fills_every_default(void **state)
{
    pool_config_t cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    pool_config_init(&cfg);
    assert_null(cfg.conninfo);
    assert_int_equal(cfg.min_size, 1);
    assert_int_equal(cfg.max_size, 10);
    assert_int_equal(cfg.max_overflow, 0);
    assert_int_equal(cfg.acquire_timeout_ms, 30000);
    assert_int_equal(cfg.connect_timeout_ms, 10000);
    assert_int_equal(cfg.idle_timeout_ms, 600000);
    assert_int_equal(cfg.max_lifetime_ms, 1800000);
    assert_int_equal(cfg.pre_ping, 1);
    assert_int_equal(cfg.ping_idle_ms, 1000);
    assert_int_equal(cfg.max_waiting, 0);
    assert_int_equal(cfg.leak_timeout_ms, 0);
    assert_null(cfg.reset_query);
    assert_null(cfg.on_connect);
    assert_null(cfg.on_log);
    assert_null(cfg.arg);
    pool_config_init(NULL); /* does nothing, does not crash */
}

typedef struct bad_case {
    void (*mutate)(pool_config_t *);
    const char *field;
} bad_case_t;

static void no_conninfo(pool_config_t *c) { c->conninfo = NULL; }
static void max_zero(pool_config_t *c) { c->max_size = 0; }
static void min_negative(pool_config_t *c) { c->min_size = -1; }
static void min_above_max(pool_config_t *c) { c->min_size = 5; c->max_size = 4; }
static void overflow_negative(pool_config_t *c) { c->max_overflow = -1; }
static void overflow_huge(pool_config_t *c) { c->max_overflow = 2000000000; }
static void connect_timeout_zero(pool_config_t *c) { c->connect_timeout_ms = 0; }
static void idle_negative(pool_config_t *c) { c->idle_timeout_ms = -5; }
static void lifetime_negative(pool_config_t *c) { c->max_lifetime_ms = -5; }
static void pre_ping_two(pool_config_t *c) { c->pre_ping = 2; }
static void ping_idle_negative(pool_config_t *c) { c->ping_idle_ms = -1; }
static void max_waiting_negative(pool_config_t *c) { c->max_waiting = -1; }
static void leak_negative(pool_config_t *c) { c->leak_timeout_ms = -1; }
static void conninfo_garbage(pool_config_t *c) { c->conninfo = "no_such_option=1"; }
static void conninfo_bad_uri(pool_config_t *c) { c->conninfo = "postgresql://[::1/x"; }

static void test_create_rejects_a_bad_field_and_names_it(void **state)
{
    const bad_case_t cases[] = {
        {no_conninfo, "conninfo"},         {max_zero, "max_size"},
        {min_negative, "min_size"},        {min_above_max, "min_size"},
        {overflow_negative, "max_overflow"}, {overflow_huge, "max_overflow"},
        {connect_timeout_zero, "connect_timeout_ms"}, {idle_negative, "idle_timeout_ms"},
        {lifetime_negative, "max_lifetime_ms"}, {pre_ping_two, "pre_ping"},
        {ping_idle_negative, "ping_idle_ms"}, {max_waiting_negative, "max_waiting"},
        {leak_negative, "leak_timeout_ms"}, {conninfo_garbage, "conninfo"},
        {conninfo_bad_uri, "conninfo"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pool_config_t cfg;
        test_config(&cfg, "cfg_bad");
        cases[i].mutate(&cfg);
        char err[256] = "";
        pool_t *pool = pool_create(&cfg, err, sizeof err);
        assert_null(pool);
        if (pool_errcode() != POOL_EINVAL)
            fail_msg("case %zu: code %d, message \"%s\"", i, pool_errcode(), err);
        if (!strstr(err, cases[i].field))
            fail_msg("case %zu: message \"%s\" does not name %s", i, err, cases[i].field);
        assert_string_equal(pool_errmsg(), err);
    }
    assert_null(pool_create(NULL, NULL, 0));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(test_count_backends("cfg_bad"), 0);
}

static void test_create_opens_min_size_connections_before_returning(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "cfg_min3");
    cfg.min_size = 3;
    cfg.max_size = 5;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    assert_int_equal(test_count_backends("cfg_min3"), 3);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.total, 3);
    assert_int_equal(st.idle, 3);
    assert_int_equal(st.connects, 3);
    assert_int_equal(st.min_size, 3);
    assert_int_equal(st.max_size, 5);
    pool_destroy(pool);
    assert_true(test_wait_backends("cfg_min3", 0, 5000));
}

static void test_create_with_min_size_zero_opens_nothing(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "cfg_min0");
    cfg.min_size = 0;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.total, 0);
    assert_int_equal(test_count_backends("cfg_min0"), 0);
    PGconn *c = pool_getconn(pool); /* opened on demand */
    assert_non_null(c);
    assert_int_equal(test_query_int(c, "SELECT 42"), 42);
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_destroy(pool);
}

static void test_create_fails_with_libpq_reason_when_first_connection_fails(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "cfg_nohost");
    cfg.conninfo = "host=/nonexistent/socket/dir port=5 dbname=postgres";
    char err[512] = "";
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    assert_null(pool);
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(err, "could not open connection"));
    assert_non_null(strstr(err, "/nonexistent/socket/dir")); /* libpq's own words */
}

static int on_connect_rejects(PGconn *conn, void *arg)
{
    return 1;
}

static void test_create_fails_when_on_connect_rejects(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "cfg_reject");
    cfg.on_connect = on_connect_rejects;
    char err[512] = "";
    assert_null(pool_create(&cfg, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_ECONNECT);
    assert_non_null(strstr(err, "on_connect"));
    assert_true(test_wait_backends("cfg_reject", 0, 5000));
}

static void test_create_copies_its_strings(void **state)
{
    char conninfo[512], reset[64];
    snprintf(conninfo, sizeof conninfo, "%s", test_conninfo("cfg_copy"));
    snprintf(reset, sizeof reset, "RESET search_path");
    pool_config_t cfg;
    test_config(&cfg, "cfg_copy");
    cfg.conninfo = conninfo;
    cfg.reset_query = reset;
    cfg.max_size = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    memset(conninfo, 'x', sizeof conninfo - 1);
    memset(reset, 'x', sizeof reset - 1);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_true(test_exec_ok(c, "SET search_path TO nowhere"));
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.closed_broken, 0); /* the copied reset query ran fine */
    c = pool_getconn(pool);
    PGresult *r = PQexec(c, "SHOW search_path");
    assert_string_equal(PQgetvalue(r, 0, 0), "\"$user\", public");
    PQclear(r);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_bad_conninfo_message_never_shows_the_password(void **state)
{
    const char *secrets[] = {
        "password=hunter2secret bogus_key=1",
        "password=hunter2secret dbname",
        "password='hunter2secret' sslmode=nonsense",
        "postgresql://u:hunter2secret@/db?bogus_key=1",
        "postgresql://u:hunter2secret@host:99999999/db",
    };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        pool_config_t cfg;
        test_config(&cfg, "cfg_secret");
        cfg.conninfo = secrets[i];
        char err[512] = "";
        assert_null(pool_create(&cfg, err, sizeof err));
        if (strstr(err, "hunter2secret") || strstr(pool_errmsg(), "hunter2secret"))
            fail_msg("case %zu leaks the password: %s", i, err);
    }
}

static void test_strerror_covers_every_code(void **state)
{
    for (int e = POOL_OK; e <= POOL_ENOMEM; e++) {
        const char *s = pool_strerror((pool_err_t)e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(pool_strerror((pool_err_t)999), "unknown error");
    assert_string_equal(pool_strerror(POOL_ETIMEDOUT), "timed out waiting for a connection");
}

/* A program built against a newer header passes a larger struct: the tail
   this library does not know must be zero (pool_config_init_sized zeroes
   it), else pool_create refuses instead of ignoring a setting. */
static void test_config_from_a_newer_header_needs_its_unknown_tail_zero(void **state)
{
    struct {
        pool_config_t cfg;
        uint64_t newer_field;
    } big;
    memset(&big, 0x5a, sizeof big);
    pool_config_init_sized(&big.cfg, sizeof big);
    assert_int_equal(big.newer_field, 0);
    assert_int_equal(big.cfg.max_size, 10);
    big.cfg.conninfo = test_conninfo("cfg_newer");
    big.cfg.min_size = 0;
    char err[512];
    pool_t *pool = pool_create_sized(&big.cfg, sizeof big, err, sizeof err);
    assert_non_null(pool);
    pool_destroy(pool);

    big.newer_field = 1;
    assert_null(pool_create_sized(&big.cfg, sizeof big, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_non_null(strstr(err, "built against a newer pgpool.h"));
}

static void test_struct_sizes_below_the_first_layout_are_refused(void **state)
{
    pool_config_t cfg;
    test_config(&cfg, "cfg_tiny");
    char err[512];
    assert_null(pool_create_sized(&cfg, 8, err, sizeof err));
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_non_null(strstr(err, "smaller than any pgpool header's"));
    memset(&cfg, 0x5a, sizeof cfg);
    pool_config_init_sized(&cfg, 8); /* does nothing */
    assert_int_equal(cfg.min_size, 0x5a5a5a5a);

    test_config(&cfg, "cfg_tiny");
    cfg.min_size = 0;
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    assert_non_null(pool);
    pool_stats_t st;
    assert_int_equal(pool_get_stats_sized(pool, &st, 8), POOL_EINVAL);
    assert_int_equal(pool_stats_format_sized(&st, 8, POOL_FORMAT_JSON, "x", NULL, 0), -1);
    pool_host_stats_t hs;
    assert_int_equal(pool_get_host_stats_sized(pool, &hs, 1, 8), -1);
    assert_int_equal(pool_host_stats_format_sized(&hs, 1, 8, POOL_FORMAT_JSON, "x", NULL, 0), -1);

    /* Larger than ours: the tail is zeroed, never left as it was. */
    struct {
        pool_stats_t stats;
        uint64_t newer_field;
    } big;
    memset(&big, 0x5a, sizeof big);
    assert_int_equal(pool_get_stats_sized(pool, &big.stats, sizeof big), POOL_OK);
    assert_int_equal(big.newer_field, 0);
    assert_int_equal(big.stats.max_size, cfg.max_size);
    pool_destroy(pool);
}

static void test_version_is_the_headers(void **state)
{
    assert_int_equal(pool_version(), PGPOOL_VERSION_NUMBER);
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", PGPOOL_VERSION_MAJOR, PGPOOL_VERSION_MINOR,
             PGPOOL_VERSION_PATCH);
    assert_string_equal(pool_version_string(), expect);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_init_fills_every_default),
        cmocka_unit_test(test_create_rejects_a_bad_field_and_names_it),
        cmocka_unit_test(test_create_opens_min_size_connections_before_returning),
        cmocka_unit_test(test_create_with_min_size_zero_opens_nothing),
        cmocka_unit_test(test_create_fails_with_libpq_reason_when_first_connection_fails),
        cmocka_unit_test(test_create_fails_when_on_connect_rejects),
        cmocka_unit_test(test_create_copies_its_strings),
        cmocka_unit_test(test_bad_conninfo_message_never_shows_the_password),
        cmocka_unit_test(test_strerror_covers_every_code),
        cmocka_unit_test(test_config_from_a_newer_header_needs_its_unknown_tail_zero),
        cmocka_unit_test(test_struct_sizes_below_the_first_layout_are_refused),
        cmocka_unit_test(test_version_is_the_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
