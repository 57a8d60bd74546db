#!/bin/sh
# Builds pgpool and runs examples/demo.c against $DATABASE_URL, or, when that is
# not set, against a throwaway PostgreSQL cluster started in a temporary
# directory (as the postgres user when run as root) and removed afterwards.
# Extra arguments go to the demo: [-t threads] [-m max_size] [-d seconds].
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build-demo"
cmake -S "$top" -B "$build" -DPGPOOL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j 2 >/dev/null

if [ -n "${DATABASE_URL:-}" ]; then
    exec "$build/demo" "$DATABASE_URL" "$@"
fi
dir=$(mktemp -d /tmp/pgpool-demo.XXXXXX)
port=54330
trap '"$top/tests/pg_harness.sh" "$dir" $port destroy' EXIT
trap 'exit 130' INT TERM
"$top/tests/pg_harness.sh" "$dir" $port start
"$build/demo" "host=$dir port=$port dbname=postgres user=postgres" "$@"
