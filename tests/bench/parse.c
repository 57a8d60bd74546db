/* SPDX-License-Identifier: MIT */
/*
 * parse.c - how long pool_create takes over a huge conninfo, next to libpq
 * parsing the same string (PQconninfoParse), medians of 5.  A 1 MB string
 * of 40,000-odd pairs, pool_* keys among them, in the keyword/value form and
 * as a URI.  pool_create runs with min_size 0, so nothing connects: the time
 * is taking out the pool_* keys, checking the config and splitting the hosts
 * (libpq parses the rest twice on the way).  No timing gates anything.
 *
 *   build/tests/bench_parse [megabytes]
 */
#define _POSIX_C_SOURCE 200809L
#include <pgpool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* head, then pair (with sep before each but the first) until size bytes. */
static char *build(const char *head, const char *sep, const char *pair, const char *ours,
                   size_t size)
{
    char *s = malloc(size + 256);
    if (!s)
        exit(1);
    size_t n = (size_t)sprintf(s, "%s", head);
    for (int i = 0; n < size; i++) {
        const char *p = i % 100 == 99 ? ours : pair;
        n += (size_t)sprintf(s + n, "%s%s", i ? sep : "", p);
    }
    return s;
}

static double median_ms(const char *conninfo, int with_pool)
{
    double t[5];
    for (int r = 0; r < 5; r++) {
        double start = now_ms();
        if (with_pool) {
            pool_config_t cfg;
            pool_config_init(&cfg);
            cfg.conninfo = conninfo;
            cfg.min_size = 0;
            char err[POOL_ERRMSG_SIZE];
            pool_t *pool = pool_create(&cfg, err, sizeof err);
            if (!pool) {
                fprintf(stderr, "pool_create: %s\n", err);
                exit(1);
            }
            pool_destroy(pool);
        } else {
            char *err = NULL;
            PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
            if (!opts) {
                fprintf(stderr, "PQconninfoParse: %s", err ? err : "out of memory\n");
                exit(1);
            }
            PQconninfoFree(opts);
        }
        t[r] = now_ms() - start;
    }
    qsort(t, 5, sizeof t[0], by_value);
    return t[2];
}

int main(int argc, char **argv)
{
    double mb = argc > 1 ? atof(argv[1]) : 1.0;
    size_t size = (size_t)(mb * 1024 * 1024);
    /* libpq alone gets the same string with its own key where ours were
       (it would refuse a pool_* key). */
    const char *kv_head = "host=/nonexistent dbname=x ", *uri_head = "postgresql:///x?host=/nonexistent&";
    const char *pair = "application_name=pgpool_parse", *ours = "pool_max_size=7";
    char *kv = build(kv_head, " ", pair, ours, size), *kv_libpq = build(kv_head, " ", pair, pair, size);
    char *uri = build(uri_head, "&", pair, ours, size), *uri_libpq = build(uri_head, "&", pair, pair, size);
    const struct {
        const char *form, *conninfo, *libpq_only;
    } cases[] = {{"keyword/value", kv, kv_libpq}, {"URI", uri, uri_libpq}};
    for (int i = 0; i < 2; i++) {
        double ours_ms = median_ms(cases[i].conninfo, 1);
        double libpq = median_ms(cases[i].libpq_only, 0);
        printf("parse: %.1f MB conninfo, %s: pool_create %.1f ms, PQconninfoParse %.1f ms "
               "(%.1fx)\n",
               (double)strlen(cases[i].conninfo) / (1024 * 1024), cases[i].form, ours_ms, libpq,
               libpq > 0 ? ours_ms / libpq : 0);
    }
    free(kv);
    free(kv_libpq);
    free(uri);
    free(uri_libpq);
    return 0;
}
