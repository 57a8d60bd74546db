/* SPDX-License-Identifier: MIT */
/*
 * contenders.h - what the benchmark compares pgpool with: one interface over
 * every way a C program can get a PostgreSQL session for a request.
 */
#ifndef PGPOOL_BENCH_CONTENDERS_H
#define PGPOOL_BENCH_CONTENDERS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum bench_query { QUERY_NONE, QUERY_SELECT1, QUERY_PREPARED } bench_query_t;

typedef struct bench_setup {
    const char *conninfo;   /* the server, over TCP on 127.0.0.1 */
    const char *bouncer;    /* PgBouncer's conninfo, or NULL */
    const char *zdb_url;    /* the server as a libzdb URL */
    int pool_size;          /* max (and min) connections of a pool */
    int min_size;           /* for the burst: 0 */
    int threads;            /* dedicated contenders open one per thread */
    bool pre_ping;
    bench_query_t query;    /* PREPARED: prepare "q" on every new connection */
} bench_setup_t;

typedef struct contender {
    const char *name;
    bool (*start)(const bench_setup_t *s, char *err, size_t errlen);
    void *(*get)(int thread);                 /* NULL: failed (counted as an error) */
    bool (*query)(void *conn, bench_query_t q);
    void (*put)(void *conn, int thread);
    void (*stop)(void);
    long (*connects)(void);                   /* connections opened since start, or -1 */
} contender_t;

/* Call before contender->start: resets the connection count, keeps the setup. */
void contender_remember(const bench_setup_t *s);

/* Every contender, by name; NULL when unknown. */
const contender_t *contender_find(const char *name);
extern const contender_t *const contenders[];

#endif
