#!/bin/sh
# SPDX-License-Identifier: MIT
# pgpool as a part of another CMake project, with cmocka hidden as on a
# machine without it:
#   1. the library alone: the default configure, build and install succeed,
#      and build no test, example or fuzzer;
#   2. add_subdirectory(pgpool): the parent links pgpool::pgpool and builds
#      nothing else of ours, and our warnings stay off its targets;
#   3. FetchContent: the same through FetchContent_MakeAvailable.
# The programs built are run against CONNINFO.
# usage: tests/check_subproject.sh CONNINFO
set -eu
conninfo=$1
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgpool-subproject.XXXXXX)
trap 'rm -rf "$work"' EXIT
nocmocka=-DCMAKE_DISABLE_FIND_PACKAGE_cmocka=ON

# Fails when the build tree at $1 holds a target of ours beyond the library.
only_the_library() {
    extra=$(cmake --build "$1" --target help | grep -oE '(test_[a-z_0-9.]+|soak|bench|demo|failover|metrics_http|basic|fuzz_[a-z]+)$' || true)
    if [ -n "$extra" ]; then
        echo "$2 builds more than the library:"; echo "$extra"; exit 1
    fi
}

# 1. The library alone.
cmake -S "$src" -B "$work/lib" $nocmocka >"$work/lib.log" 2>&1
grep -q "the tests are not built: cmocka was not found" "$work/lib.log" ||
    { echo "no word about the missing cmocka:"; cat "$work/lib.log"; exit 1; }
cmake --build "$work/lib" -j 2 >/dev/null
cmake --install "$work/lib" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/pgpool.h"
echo "library alone: configured, built and installed without cmocka; tests skipped with a hint"

# The parent builds app.c with -Werror; our warning flags (-Wshadow,
# -Wconversion...) must not reach it: it shadows and narrows on purpose.
mkdir -p "$work/parent"
cat >"$work/parent/app.c" <<'C'
#include <pgpool.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    pool_config_t cfg;
    pool_config_init(&cfg);
    cfg.conninfo = argc > 1 ? argv[1] : "";
    cfg.max_size = 2;
    pool_t *pool = pool_create(&cfg, NULL, 0);
    if (!pool) { fprintf(stderr, "%s\n", pool_errmsg()); return 1; }
    PGconn *conn = pool_getconn(pool);
    int ok = conn && PQstatus(conn) == CONNECTION_OK;
    pool_putconn(pool, conn);
    pool_stats_t st;
    pool_get_stats(pool, &st);
    short narrowed = st.total; /* -Wconversion would warn: ours must not reach here */
    {
        int ok = narrowed; /* -Wshadow would warn */
        printf("subproject ok: acquired %llu, open %d\n", (unsigned long long)st.acquired, ok);
    }
    pool_destroy(pool);
    return !ok;
}
C

parent() { # dir how
    cat >"$1/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(parent C)
$2
add_executable(app "$work/parent/app.c")
target_compile_options(app PRIVATE -Werror)
target_link_libraries(app PRIVATE pgpool::pgpool)
CMAKE
    cmake -S "$1" -B "$1/build" $nocmocka -DPGPOOL_WERROR=ON >"$1/configure.log" 2>&1
    only_the_library "$1/build" "$3"
    cmake --build "$1/build" -j 2 >/dev/null
    "$1/build/app" "$conninfo"
}

# 2. add_subdirectory
mkdir -p "$work/sub"
parent "$work/sub" "add_subdirectory(\"$src\" pgpool)" add_subdirectory

# 3. FetchContent, from this checkout as its source
mkdir -p "$work/fetch"
parent "$work/fetch" "include(FetchContent)
FetchContent_Declare(pgpool SOURCE_DIR \"$src\")
FetchContent_MakeAvailable(pgpool)" FetchContent
echo "subproject check ok"
