/* SPDX-License-Identifier: MIT */
/*
 * test_settings.c - pool_* settings in the conninfo: taken out of URIs and
 * keyword/value strings exactly, the rest left for libpq verbatim, values
 * with units, errors that name the key, and pools configured by their URL
 * against the real server.  Links the static library to reach the splitter.
 */
#include "harness.h"
#include "pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Splits conninfo over a default config; the caller frees with pool__settings_free. */
static int split(const char *conninfo, pool_settings_t *out, char *err, size_t errlen)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = conninfo;
    *err = '\0';
    return pool__settings_from_conninfo(&cfg, out, err, errlen);
}

static void test_uri_pool_keys_are_taken_out_and_the_rest_kept_verbatim(void **state)
{
    pool_settings_t s;
    char err[POOL_MSG_LEN];
    assert_int_equal(split("postgresql://u:p%40ss@h:5/db?sslmode=disable&pool_max_size=20"
                           "&application_name=a%20b&pool_acquire_timeout=5s&pool_min_size=0",
                           &s, err, sizeof err),
                     POOL_OK);
    assert_string_equal(s.conninfo,
                        "postgresql://u:p%40ss@h:5/db?sslmode=disable&application_name=a%20b");
    assert_string_equal(s.cfg.conninfo, s.conninfo);
    assert_int_equal(s.cfg.max_size, 20);
    assert_int_equal(s.cfg.min_size, 0);
    assert_int_equal(s.cfg.acquire_timeout_ms, 5000);
    assert_int_equal(s.cfg.connect_timeout_ms, 10000); /* untouched default */
    assert_int_equal(s.applied, 3);
    pool__settings_free(&s);

    /* Only pool keys: no '?' is left behind; postgres:// works too. */
    assert_int_equal(split("postgres://h/db?pool_max_overflow=4", &s, err, sizeof err), POOL_OK);
    assert_string_equal(s.conninfo, "postgres://h/db");
    assert_int_equal(s.cfg.max_overflow, 4);
    pool__settings_free(&s);

    /* Values and keys are percent-decoded; a '?' in the password is not the query. */
    assert_int_equal(split("postgresql://u:pa?ss@h/db?pool%5Fmax_size=3"
                           "&pool_reset_query=DISCARD%20ALL",
                           &s, err, sizeof err),
                     POOL_OK);
    assert_string_equal(s.conninfo, "postgresql://u:pa?ss@h/db");
    assert_int_equal(s.cfg.max_size, 3);
    assert_string_equal(s.cfg.reset_query, "DISCARD ALL");
    pool__settings_free(&s);

    /* No pool keys at all: the string is unchanged. */
    assert_int_equal(split("postgresql:///db?host=/tmp&port=5", &s, err, sizeof err), POOL_OK);
    assert_string_equal(s.conninfo, "postgresql:///db?host=/tmp&port=5");
    assert_int_equal(s.applied, 0);
    pool__settings_free(&s);
}

static void test_keyword_value_pool_keys_are_taken_out_and_the_rest_kept(void **state)
{
    pool_settings_t s;
    char err[POOL_MSG_LEN];
    assert_int_equal(split("  host=h pool_min_size = 2 dbname='my db' "
                           "pool_reset_query='SET search_path TO \\'x\\'' password=a\\ b "
                           "pool_pre_ping=off pool_idle_timeout=2min",
                           &s, err, sizeof err),
                     POOL_OK);
    assert_string_equal(s.conninfo, "host=h dbname='my db' password=a\\ b");
    assert_int_equal(s.cfg.min_size, 2);
    assert_int_equal(s.cfg.pre_ping, 0);
    assert_int_equal(s.cfg.idle_timeout_ms, 120000);
    assert_string_equal(s.cfg.reset_query, "SET search_path TO 'x'");
    pool__settings_free(&s);

    /* libpq accepts what is left. */
    assert_int_equal(split("host=h pool_max_size=2 port=5", &s, err, sizeof err), POOL_OK);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(s.conninfo, &perr);
    assert_non_null(opts);
    PQconninfoFree(opts);
    pool__settings_free(&s);

    /* What is left still reads as keyword/value, even when it begins like a URI. */
    assert_int_equal(split("pool_max_size=1 postgresql://?pool_x=1", &s, err, sizeof err), POOL_OK);
    assert_string_equal(s.conninfo, " postgresql://?pool_x=1");
    pool__settings_free(&s);

    /* Where libpq will see a syntax error, the rest is handed on as it is,
       for libpq to explain. */
    assert_int_equal(split("host=h pool_max_size=2 dbname", &s, err, sizeof err), POOL_OK);
    assert_string_equal(s.conninfo, "host=h dbname");
    assert_int_equal(s.cfg.max_size, 2);
    assert_null(PQconninfoParse(s.conninfo, &perr));
    assert_non_null(strstr(perr, "dbname"));
    PQfreemem(perr);
    pool__settings_free(&s);
}

static void test_durations_take_units_and_a_bare_number_is_milliseconds(void **state)
{
    const struct { const char *value; int ms; } cases[] = {
        {"250", 250}, {"250ms", 250}, {"3s", 3000}, {"2min", 120000}, {"1h", 3600000},
        {"0", 0},     {"-1", -1},     {"0s", 0},    {"596h", 2145600000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char conninfo[128], err[POOL_MSG_LEN];
        snprintf(conninfo, sizeof conninfo, "host=h pool_acquire_timeout=%s", cases[i].value);
        pool_settings_t s;
        if (split(conninfo, &s, err, sizeof err) != POOL_OK)
            fail_msg("%s refused: %s", cases[i].value, err);
        assert_int_equal(s.cfg.acquire_timeout_ms, cases[i].ms);
        pool__settings_free(&s);
    }
    const char *booleans[] = {"1", "on", "true", "TRUE", "0", "off", "false", "Off"};
    for (size_t i = 0; i < sizeof booleans / sizeof booleans[0]; i++) {
        char conninfo[128], err[POOL_MSG_LEN];
        snprintf(conninfo, sizeof conninfo, "postgresql:///x?pool_pre_ping=%s", booleans[i]);
        pool_settings_t s;
        assert_int_equal(split(conninfo, &s, err, sizeof err), POOL_OK);
        assert_int_equal(s.cfg.pre_ping, i < 4 ? 1 : 0);
        pool__settings_free(&s);
    }
}

static void test_a_bad_value_or_unknown_key_is_refused_naming_the_key(void **state)
{
    const struct { const char *setting; const char *key; } cases[] = {
        {"pool_acquire_timeout=1.5s", "pool_acquire_timeout"},  /* fraction */
        {"pool_acquire_timeout=5x", "pool_acquire_timeout"},    /* unknown unit */
        {"pool_acquire_timeout=5S", "pool_acquire_timeout"},    /* units are lower case */
        {"pool_acquire_timeout=-5", "pool_acquire_timeout"},    /* only -1 means forever */
        {"pool_acquire_timeout=", "pool_acquire_timeout"},      /* empty */
        {"pool_idle_timeout=-1", "pool_idle_timeout"},          /* no "forever" here */
        {"pool_max_lifetime=597h", "pool_max_lifetime"},        /* over INT_MAX ms */
        {"pool_ping_idle=99999999999", "pool_ping_idle"},       /* overflow */
        {"pool_max_size=0", "pool_max_size"},                   /* out of range */
        {"pool_max_size=1s", "pool_max_size"},                  /* a count takes no unit */
        {"pool_min_size=abc", "pool_min_size"},
        {"pool_max_overflow=+1", "pool_max_overflow"},
        {"pool_connect_timeout=0", "pool_connect_timeout"},     /* must be at least 1 ms */
        {"pool_pre_ping=yes", "pool_pre_ping"},
        {"pool_max_waiting=1e3", "pool_max_waiting"},
        {"pool_leak_timeout=%zz", "pool_leak_timeout"},         /* bad escape (URI only) */
        {"pool_max_sise=3", "pool_max_sise"},                   /* unknown key */
        {"pool_=3", "pool_"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int uri = 0; uri < 2; uri++) {
            char conninfo[256], err[POOL_MSG_LEN];
            bool escape_case = strchr(cases[i].setting, '%') != NULL;
            if (escape_case && !uri)
                continue;
            snprintf(conninfo, sizeof conninfo, uri ? "postgresql://h/db?%s" : "host=h %s",
                     cases[i].setting);
            pool_settings_t s;
            int rc = split(conninfo, &s, err, sizeof err);
            if (rc != POOL_EINVAL)
                fail_msg("\"%s\" accepted", conninfo);
            if (!strstr(err, cases[i].key))
                fail_msg("\"%s\": message \"%s\" does not name %s", conninfo, err, cases[i].key);
        }
    }
}

static void test_a_later_duplicate_wins_and_the_url_overrides_the_struct(void **state)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.max_size = 50;
    cfg.reset_query = "DISCARD ALL";
    cfg.conninfo = "postgresql://h/db?pool_max_size=3&pool_reset_query=RESET%20ALL"
                   "&pool_max_size=7&pool_reset_query=";
    pool_settings_t s;
    char err[POOL_MSG_LEN];
    assert_int_equal(pool__settings_from_conninfo(&cfg, &s, err, sizeof err), POOL_OK);
    assert_int_equal(s.cfg.max_size, 7);
    assert_null(s.cfg.reset_query); /* empty: no reset query */
    pool__settings_free(&s);

    cfg.conninfo = "pool_max_size=3 host=h pool_max_size=9";
    assert_int_equal(pool__settings_from_conninfo(&cfg, &s, err, sizeof err), POOL_OK);
    assert_int_equal(s.cfg.max_size, 9);
    assert_string_equal(s.cfg.reset_query, "DISCARD ALL"); /* the struct's, kept */
    assert_string_equal(s.conninfo, "host=h");
    pool__settings_free(&s);
}

/* ---- against the real server ------------------------------------------- */

/* A URI for the test server, with extra query parameters appended. */
static void test_uri(char *out, size_t len, const char *app, const char *extra)
{
    const char *dsn = getenv("PGPOOL_TEST_DSN");
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &perr);
    assert_non_null(opts);
    const char *host = "", *port = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0 && o->val)
            host = o->val;
        if (strcmp(o->keyword, "port") == 0 && o->val)
            port = o->val;
    }
    snprintf(out, len, "postgresql://postgres@/postgres?host=%s&port=%s&application_name=%s%s",
             host, port, app, extra);
    PQconninfoFree(opts);
}

static void test_a_pool_configured_by_its_url_uses_the_settings(void **state)
{
    char url[1024];
    test_uri(url, sizeof url, "set_url",
             "&pool_min_size=2&pool_max_size=3&pool_max_overflow=1&pool_acquire_timeout=300ms");
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = url;
    cfg.acquire_timeout_ms = 20000; /* the program's default; the URL wins */
    char err[512] = "";
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err); /* libpq would refuse pool_* keys */
    assert_int_equal(test_count_backends("set_url"), 2);
    pool_stats_t st;
    assert_pool_stats(pool, &st);
    assert_int_equal(st.min_size, 2);
    assert_int_equal(st.max_size, 3);
    assert_int_equal(st.max_overflow, 1);

    PGconn *held[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(held[i] = pool_getconn(pool));
    int64_t t0 = test_now_ms();
    assert_null(pool_getconn(pool));
    int64_t waited = test_now_ms() - t0;
    assert_int_equal(pool_errcode(), POOL_ETIMEDOUT);
    assert_true(waited >= 290 && waited < 5000);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pool_putconn(pool, held[i]), POOL_OK);
    pool_destroy(pool);
}

static void test_a_keyword_value_reset_query_runs_on_return(void **state)
{
    char conninfo[1024];
    snprintf(conninfo, sizeof conninfo,
             "%s pool_max_size=1 pool_min_size=1 pool_reset_query='RESET search_path'",
             test_conninfo("set_kv"));
    pool_config_t cfg;
    test_config(&cfg, "set_kv");
    cfg.conninfo = conninfo;
    char err[512] = "";
    pool_t *pool = pool_create(&cfg, err, sizeof err);
    if (!pool)
        fail_msg("pool_create: %s", err);
    PGconn *c = pool_getconn(pool);
    assert_non_null(c);
    assert_true(test_exec_ok(c, "SET search_path TO nowhere"));
    assert_int_equal(pool_putconn(pool, c), POOL_OK);
    c = pool_getconn(pool);
    PGresult *r = PQexec(c, "SHOW search_path");
    assert_string_equal(PQgetvalue(r, 0, 0), "\"$user\", public");
    PQclear(r);
    pool_putconn(pool, c);
    pool_destroy(pool);
}

static void test_pool_create_refuses_bad_settings_naming_the_key_never_the_password(void **state)
{
    char url[1024];
    const char *extras[] = {
        "&pool_max_size=hunter2secret", "&pool_bogus=1", "&pool_min_size=9&pool_max_size=3",
    };
    const char *keys[] = {"pool_max_size", "pool_bogus", "pool_"};
    for (size_t i = 0; i < 3; i++) {
        test_uri(url, sizeof url, "set_bad", extras[i]);
        char *withpw = strstr(url, "postgres@");
        assert_non_null(withpw);
        char conninfo[1100];
        snprintf(conninfo, sizeof conninfo, "postgresql://postgres:hunter2secret@%s",
                 withpw + strlen("postgres@"));
        pool_config_t cfg;
        pool_config_init(&cfg);
        cfg.conninfo = conninfo;
        char err[512] = "";
        assert_null(pool_create(&cfg, err, sizeof err));
        assert_int_equal(pool_errcode(), POOL_EINVAL);
        if (!strstr(err, keys[i]))
            fail_msg("\"%s\" does not name %s", err, keys[i]);
        if (strstr(err, "hunter2secret") || strstr(pool_errmsg(), "hunter2secret"))
            fail_msg("the password leaked: %s", err);
    }
    assert_int_equal(test_count_backends("set_bad"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_pool_keys_are_taken_out_and_the_rest_kept_verbatim),
        cmocka_unit_test(test_keyword_value_pool_keys_are_taken_out_and_the_rest_kept),
        cmocka_unit_test(test_durations_take_units_and_a_bare_number_is_milliseconds),
        cmocka_unit_test(test_a_bad_value_or_unknown_key_is_refused_naming_the_key),
        cmocka_unit_test(test_a_later_duplicate_wins_and_the_url_overrides_the_struct),
        cmocka_unit_test(test_a_pool_configured_by_its_url_uses_the_settings),
        cmocka_unit_test(test_a_keyword_value_reset_query_runs_on_return),
        cmocka_unit_test(test_pool_create_refuses_bad_settings_naming_the_key_never_the_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
