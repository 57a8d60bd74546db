#!/bin/sh
# pg_harness.sh DIR PORT start|stop|kill|restart|pause|resume|destroy
# A throwaway PostgreSQL cluster for the tests: initdb into DIR, Unix socket in
# DIR, fsync off, as the postgres user when run as root.  Never touches the
# system cluster.
set -eu
dir=$1 port=$2 cmd=$3
cd /  # the postgres user may not be able to enter the caller's directory

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/pg_ctl" ] || { echo "pg_harness: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_ctl() {
    as_owner "$bindir/pg_ctl" -D "$dir/data" "$@"
}

start() {
    pg_ctl -w -t 60 -l "$dir/server.log" -o "-k $dir -p $port" start >/dev/null
}

case "$cmd" in
start)
    if [ -f "$dir/data/postmaster.pid" ]; then pg_ctl -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
log_min_messages = warning
CONF
    start || { cat "$dir/server.log" >&2; exit 1; }
    ;;
stop) pg_ctl -m fast -w stop >/dev/null 2>&1 || true ;;
kill) pg_ctl -m immediate -w stop >/dev/null 2>&1 || true ;;
restart) start ;;
pause) kill -STOP "$(head -n 1 "$dir/data/postmaster.pid")" ;;   # accepts, never answers
resume) kill -CONT "$(head -n 1 "$dir/data/postmaster.pid")" ;;
destroy)
    pg_ctl -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*) echo "usage: $0 DIR PORT start|stop|kill|restart|pause|resume|destroy" >&2; exit 2 ;;
esac
