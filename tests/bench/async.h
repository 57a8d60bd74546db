/* SPDX-License-Identifier: MIT */
/*
 * async.h - the benchmark's event-loop workloads (async.c).
 */
#ifndef PGPOOL_BENCH_ASYNC_H
#define PGPOOL_BENCH_ASYNC_H

/* Prints one JSON line per case; returns the number of runs with errors. */
int bench_async(const char *conninfo, double seconds, int repeats);

#endif
