#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds pgpool and examples/demo.c in a temporary directory (nothing is
# written into the checkout) and runs the demo against $DATABASE_URL, or,
# when that is not set, against a throwaway PostgreSQL cluster started in a
# temporary directory (as the postgres user when run as root).  Both are
# removed afterwards.  The cluster listens on a Unix socket in its own
# directory only, no TCP, so its port number names nothing shared and two
# demos never collide.
# Extra arguments go to the demo: [-t threads] [-m max_size] [-d seconds].
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(mktemp -d /tmp/pgpool-demo-build.XXXXXX)
dir=
cleanup() {
    [ -n "$dir" ] && "$top/tests/pg_harness.sh" "$dir" 5432 destroy
    rm -rf "$build"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "building pgpool in $build ..."
cmake -S "$top" -B "$build" -DPGPOOL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j 2 --target demo >/dev/null

if [ -n "${DATABASE_URL:-}" ]; then
    "$build/demo" "$DATABASE_URL" "$@"
    exit
fi
dir=$(mktemp -d /tmp/pgpool-demo.XXXXXX)
"$top/tests/pg_harness.sh" "$dir" 5432 start
"$build/demo" "host=$dir port=5432 dbname=postgres user=postgres" "$@"
