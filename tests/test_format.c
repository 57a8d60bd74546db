/* SPDX-License-Identifier: MIT */
/*
 * test_format.c - pool_stats_format: Prometheus text that promtool accepts and
 * JSON that jq parses, both carrying the snapshot's figures; snprintf-style
 * sizing and truncation; escaping of the pool name; bad arguments.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool have(const char *tool)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", tool);
    return system(cmd) == 0;
}

/* A snapshot with some of everything in it, from a real pool. */
static void busy_snapshot(pool_stats_t *st)
{
    pool_config_t cfg;
    test_config(&cfg, "format_busy");
    cfg.max_size = 1;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    assert_non_null(pool);
    PGconn *c = pool_getconn(pool);
    assert_null(pool_getconn_timeout(pool, 20)); /* a timeout */
    test_exec_ok(c, "BEGIN");
    pool_putconn(pool, c);                        /* a rollback */
    c = pool_getconn(pool);
    pool_discard(pool, c);                        /* a close */
    assert_pool_stats(pool, st);
    pool_destroy(pool);
}

static char *format(const pool_stats_t *st, pool_format_t fmt, const char *name)
{
    int n = pool_stats_format(st, fmt, name, NULL, 0);
    assert_true(n > 0);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(pool_stats_format(st, fmt, name, buf, (size_t)n + 1), n);
    assert_int_equal(strlen(buf), n);
    return buf;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The value on the line that starts with `prefix`, or -1. */
static long long value_of(const char *text, const char *prefix)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            return atoll(p + strlen(prefix));
    return -1;
}

static void test_prometheus_text_carries_the_snapshot_and_passes_promtool(void **state)
{
    pool_stats_t st;
    busy_snapshot(&st);
    char *text = format(&st, POOL_FORMAT_PROMETHEUS, "main");
    assert_int_equal(value_of(text, "pgpool_acquired_total{pool=\"main\"} "), st.acquired);
    assert_int_equal(value_of(text, "pgpool_acquire_timeouts_total{pool=\"main\"} "), 1);
    assert_int_equal(value_of(text, "pgpool_rollbacks_total{pool=\"main\"} "), 1);
    assert_int_equal(value_of(text, "pgpool_closed_total{pool=\"main\"} "), st.closed);
    assert_int_equal(value_of(text, "pgpool_connections{pool=\"main\",state=\"idle\"} "), st.idle);
    assert_int_equal(value_of(text, "pgpool_max_size{pool=\"main\"} "), 1);
    assert_int_equal(value_of(text, "pgpool_wait_seconds_count{pool=\"main\"} "), st.wait_hist.count);
    assert_int_equal(value_of(text, "pgpool_wait_seconds_bucket{pool=\"main\",le=\"+Inf\"} "),
                     st.wait_hist.count);
    assert_int_equal(value_of(text, "pgpool_connect_seconds_bucket{pool=\"main\",le=\"0.000001\"} "),
                     st.connect_hist.bucket[0]);
    /* Buckets are cumulative: the last bounded one (2^30 us) holds all but the
       samples above it. */
    assert_int_equal(value_of(text, "pgpool_wait_seconds_bucket{pool=\"main\",le=\"1073.741824\"} "),
                     st.wait_hist.count - st.wait_hist.bucket[POOL_HIST_BUCKETS - 1]);
    assert_true(st.wait_hist.count >= 3);
    assert_non_null(strstr(text, "# TYPE pgpool_hold_seconds histogram\n"));
    assert_non_null(strstr(text, "# TYPE pgpool_wait_time_max_seconds gauge\n"));
    if (!have("promtool")) {
        free(text);
        skip();
    }
    write_file("format_metrics.prom", text);
    assert_int_equal(system("promtool check metrics < format_metrics.prom"), 0);
    free(text);
}

static void test_json_carries_the_snapshot_and_parses(void **state)
{
    pool_stats_t st;
    busy_snapshot(&st);
    const char *name = "we\"ird\\ name\n\t\x01 é";
    char *text = format(&st, POOL_FORMAT_JSON, name);
    if (!have("jq")) {
        free(text);
        skip();
    }
    write_file("format_stats.json", text);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "jq -e '.acquired == %llu and .acquire_timeouts == 1 and .rollbacks == 1 and "
             ".max_size == 1 and .wait_us_total == %llu and "
             "(.wait_hist.buckets | length) == 32 and .wait_hist.count == %llu and "
             ".connect_hist.count == .connects and "
             ".pool == \"we\\\"ird\\\\ name\\n\\t\\u0001 é\"' format_stats.json >/dev/null",
             (unsigned long long)st.acquired, (unsigned long long)st.wait_us_total,
             (unsigned long long)st.wait_hist.count);
    assert_int_equal(system(cmd), 0);
    free(text);
}

static void test_a_strange_pool_name_is_escaped_for_prometheus(void **state)
{
    pool_stats_t st = {0};
    char *text = format(&st, POOL_FORMAT_PROMETHEUS, "a\"b\\c\nd");
    assert_non_null(strstr(text, "pgpool_waiting{pool=\"a\\\"b\\\\c\\nd\"} 0\n"));
    if (have("promtool")) {
        write_file("format_escape.prom", text);
        assert_int_equal(system("promtool check metrics < format_escape.prom"), 0);
    }
    free(text);
}

static void test_output_is_sized_and_truncated_like_snprintf(void **state)
{
    pool_stats_t st = {0};
    for (int fmt = POOL_FORMAT_PROMETHEUS; fmt <= POOL_FORMAT_JSON; fmt++) {
        int n = pool_stats_format(&st, (pool_format_t)fmt, "p", NULL, 0);
        assert_true(n > 100);
        char *full = malloc((size_t)n + 1);
        assert_int_equal(pool_stats_format(&st, (pool_format_t)fmt, "p", full, (size_t)n + 1), n);
        char small[40];
        memset(small, 'x', sizeof small);
        assert_int_equal(pool_stats_format(&st, (pool_format_t)fmt, "p", small, sizeof small), n);
        assert_int_equal(strlen(small), sizeof small - 1); /* truncated, terminated */
        assert_memory_equal(small, full, sizeof small - 1);
        char exact[1];
        assert_int_equal(pool_stats_format(&st, (pool_format_t)fmt, "p", exact, 1), n);
        assert_int_equal(exact[0], '\0');
        free(full);
    }
}

static void test_bad_arguments_fail_with_einval(void **state)
{
    pool_stats_t st = {0};
    char buf[16];
    assert_int_equal(pool_stats_format(NULL, POOL_FORMAT_JSON, "p", buf, sizeof buf), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_stats_format(&st, POOL_FORMAT_JSON, NULL, buf, sizeof buf), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_stats_format(&st, (pool_format_t)42, "p", buf, sizeof buf), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_stats_format(&st, POOL_FORMAT_JSON, "p", NULL, 5), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
}

/* Two hosts' figures, made up: the formatter only writes them out. */
static const pool_host_stats_t two_hosts[2] = {
    {.host = "db-a.example", .port = "5432", .open = 3, .down = 0, .connects = 7,
     .connect_errors = 1, .evictions = 2},
    {.host = "/run/post\"gres", .port = "", .open = 0, .down = 1, .connects = 0,
     .connect_errors = 9, .evictions = 0},
};

static void test_host_stats_as_prometheus_and_json(void **state)
{
    int n = pool_host_stats_format(two_hosts, 2, POOL_FORMAT_PROMETHEUS, "p", NULL, 0);
    assert_true(n > 0);
    char *text = malloc((size_t)n + 1);
    assert_int_equal(pool_host_stats_format(two_hosts, 2, POOL_FORMAT_PROMETHEUS, "p", text,
                                            (size_t)n + 1), n);
    assert_int_equal(value_of(text, "pgpool_host_connections{pool=\"p\",host=\"db-a.example\","
                                    "port=\"5432\"} "), 3);
    assert_int_equal(value_of(text, "pgpool_host_down{pool=\"p\",host=\"/run/post\\\"gres\","
                                    "port=\"\"} "), 1);
    assert_int_equal(value_of(text, "pgpool_host_evictions_total{pool=\"p\",host=\"db-a.example\","
                                    "port=\"5432\"} "), 2);
    assert_int_equal(value_of(text, "pgpool_host_connect_errors_total{pool=\"p\",host=\"/run/"
                                    "post\\\"gres\",port=\"\"} "), 9);
    assert_non_null(strstr(text, "# TYPE pgpool_host_connects_total counter\n"));
    if (have("promtool")) {
        write_file("format_hosts.prom", text);
        assert_int_equal(system("promtool check metrics < format_hosts.prom"), 0);
    }
    free(text);

    char json[1024];
    n = pool_host_stats_format(two_hosts, 2, POOL_FORMAT_JSON, "p", json, sizeof json);
    assert_true(n > 0 && n < (int)sizeof json);
    assert_non_null(strstr(json, "{\"pool\":\"p\",\"hosts\":[{\"host\":\"db-a.example\","
                                 "\"port\":\"5432\",\"open\":3,\"down\":0,\"connects\":7,"
                                 "\"connect_errors\":1,\"evictions\":2},{\"host\":"
                                 "\"/run/post\\\"gres\""));
    if (have("jq")) {
        write_file("format_hosts.json", json);
        assert_int_equal(system("jq -e '(.hosts | length) == 2 and .hosts[1].down == 1' "
                                "format_hosts.json >/dev/null"), 0);
    }

    char buf[16];
    assert_int_equal(pool_host_stats_format(NULL, 1, POOL_FORMAT_JSON, "p", buf, sizeof buf), -1);
    assert_int_equal(pool_errcode(), POOL_EINVAL);
    assert_int_equal(pool_host_stats_format(two_hosts, -1, POOL_FORMAT_JSON, "p", buf, sizeof buf),
                     -1);
    assert_int_equal(pool_host_stats_format(two_hosts, 2, POOL_FORMAT_JSON, NULL, buf, sizeof buf),
                     -1);
    assert_int_equal(pool_host_stats_format(two_hosts, 2, (pool_format_t)7, "p", buf, sizeof buf),
                     -1);
    assert_int_equal(pool_host_stats_format(NULL, 0, POOL_FORMAT_JSON, "p", buf, sizeof buf),
                     (int)strlen("{\"pool\":\"p\",\"hosts\":[]}\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus_text_carries_the_snapshot_and_passes_promtool),
        cmocka_unit_test(test_json_carries_the_snapshot_and_parses),
        cmocka_unit_test(test_a_strange_pool_name_is_escaped_for_prometheus),
        cmocka_unit_test(test_output_is_sized_and_truncated_like_snprintf),
        cmocka_unit_test(test_bad_arguments_fail_with_einval),
        cmocka_unit_test(test_host_stats_as_prometheus_and_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
