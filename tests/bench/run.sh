#!/bin/sh
# SPDX-License-Identifier: MIT
# tests/bench/run.sh [--quick | --smoke] [bench options...]
# The benchmark matrix from one command: installs what it needs (when root,
# from Debian's archive: build tools, libpq, PostgreSQL, libzdb, PgBouncer),
# starts a throwaway PostgreSQL and PgBouncer (transaction mode, pool of 8) on
# 127.0.0.1, builds tests/bench/bench.c in Release mode and runs it: JSON
# lines, then a markdown table.  Full: ~5 minutes; --quick: under a minute;
# --smoke: a few seconds (CI runs it so it keeps working; no timing gates).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
if [ "$(id -u)" = 0 ] && { ! command -v pgbouncer >/dev/null || [ ! -e /usr/include/zdb/zdb.h ] || [ ! -e /usr/include/cmocka.h ] || ! command -v cmake >/dev/null; }; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends cmake make gcc libc6-dev libpq-dev postgresql \
        libzdb-dev libcmocka-dev pgbouncer >/dev/null
fi

build="$top/build-bench"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPGPOOL_BUILD_TESTS=ON -DPGPOOL_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j 2 --target bench >/dev/null

dir=$(mktemp -d /tmp/pgpool-bench.XXXXXX)
chmod 755 "$dir" # the postgres user runs the server and PgBouncer in here
# Ports below Linux's ephemeral range (32768-60999), where a client socket
# of another run could hold a fixed one; a few tries, in case one is taken.
pick_ports() {
    pgport=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 10000)) bport=$((pgport + 1))
}
pick_ports
cleanup() {
    [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    "$top/tests/pg_harness.sh" "$dir/pg" $pgport destroy
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
tries=0
until "$top/tests/pg_harness.sh" "$dir/pg" $pgport tcp-start 2>"$dir/start.err"; do
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { cat "$dir/start.err" >&2; exit 1; }
    pick_ports
done

bouncer_args=
if command -v pgbouncer >/dev/null; then
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pgport dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 8
max_client_conn = 500
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    echo '"postgres" ""' >"$dir/userlist.txt"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$dir/pgbouncer.ini" "$dir/userlist.txt" "$dir"
        runuser -u postgres -- pgbouncer -d "$dir/pgbouncer.ini"
    else
        pgbouncer -d "$dir/pgbouncer.ini"
    fi
    bouncer_args="--bouncer host=127.0.0.1 port=$bport dbname=postgres user=postgres"
fi

echo "# $(nproc) cores, $(uname -sr), PostgreSQL $(PGHOST=127.0.0.1 PGPORT=$pgport psql -U postgres -Atc 'show server_version' postgres 2>/dev/null || echo '?'), $(pgbouncer --version 2>/dev/null | head -n 1 || echo 'no PgBouncer')"
# shellcheck disable=SC2086
exec_bench() {
    if [ -n "$bouncer_args" ]; then
        "$build/tests/bench" --db "host=127.0.0.1 port=$pgport dbname=postgres user=postgres" \
            --bouncer "host=127.0.0.1 port=$bport dbname=postgres user=postgres" \
            --zdb "postgresql://127.0.0.1:$pgport/postgres?user=postgres&password=trust" "$@"
    else
        "$build/tests/bench" --db "host=127.0.0.1 port=$pgport dbname=postgres user=postgres" \
            --zdb "postgresql://127.0.0.1:$pgport/postgres?user=postgres&password=trust" "$@"
    fi
}
exec_bench "$@"
