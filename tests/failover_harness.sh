#!/bin/sh
# SPDX-License-Identifier: MIT
# failover_harness.sh DIR start PORT_A PORT_B | stop-a fast|immediate | promote-b |
#                        rejoin-a | destroy
# A throwaway primary and streaming standby for the failover tests, as the
# postgres user when run as root, in DIR (never the system cluster):
#   start       primary A (initdb -A trust) on 127.0.0.1:PORT_A and standby B
#               (pg_basebackup -R -X stream from A) on 127.0.0.1:PORT_B, both
#               with their Unix sockets in DIR; returns once B streams from A
#   stop-a      stops A (-m fast: clean shutdown; -m immediate: a crash)
#   promote-b   pg_ctl promote -w B (it returns once B accepts writes)
#   rejoin-a    A back as B's standby at PORT_A (a fresh pg_basebackup -R from B)
#   destroy     stops both and removes DIR
set -eu
dir=$1 cmd=$2
cd /  # the postgres user may not be able to enter the caller's directory

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/pg_ctl" ] || { echo "failover_harness: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_of() { sed -n "s/^$1=//p" "$dir/ports"; }

start_node() { # name port
    as_owner "$bindir/pg_ctl" -D "$dir/$1" -w -t 60 -l "$dir/$1.log" \
        -o "-k $dir -p $2 -c listen_addresses=127.0.0.1" start >/dev/null ||
        { cat "$dir/$1.log" >&2; exit 1; }
}

stop_node() { # name mode
    [ -f "$dir/$1/postmaster.pid" ] || return 0
    as_owner "$bindir/pg_ctl" -D "$dir/$1" -m "$2" -w -t 60 stop >/dev/null 2>&1 || true
}

sql() { # port query: one value
    as_owner "$bindir/psql" -X -A -t -h "$dir" -p "$1" -U postgres -d postgres -c "$2"
}

# Waits (up to 30 s) until `sql PORT QUERY` prints WANT.
wait_for() { # port query want
    i=0
    while [ "$(sql "$1" "$2" 2>/dev/null || true)" != "$3" ]; do
        i=$((i + 1))
        [ $i -lt 300 ] || { echo "failover_harness: timed out waiting for: $2 = $3" >&2; exit 1; }
        sleep 0.1
    done
}

# A copy of the node on port $1 into $dir/$2, set up to stream from it.
clone_standby() { # source-port name
    rm -rf "${dir:?}/$2"
    as_owner "$bindir/pg_basebackup" -h "$dir" -p "$1" -U postgres -D "$dir/$2" -R -X stream \
        --checkpoint=fast --no-sync >"$dir/$2.basebackup.log" 2>&1 ||
        { cat "$dir/$2.basebackup.log" >&2; exit 1; }
}

case "$cmd" in
start)
    stop_node a immediate 2>/dev/null || true
    stop_node b immediate 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    printf 'a=%s\nb=%s\n' "$3" "$4" >"$dir/ports"
    as_owner "$bindir/initdb" -D "$dir/a" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/a/postgresql.conf" <<CONF
fsync = off
synchronous_commit = off
full_page_writes = on
wal_level = replica
max_wal_senders = 10
wal_keep_size = 64MB
hot_standby = on
wal_log_hints = on
max_connections = 100
shared_buffers = 16MB
log_min_messages = warning
CONF
    start_node a "$3"
    clone_standby "$3" b
    start_node b "$4"
    wait_for "$3" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 1
    ;;
stop-a) stop_node a "${3:-fast}" ;;
promote-b)
    as_owner "$bindir/pg_ctl" -D "$dir/b" -w -t 60 promote >/dev/null
    ;;
rejoin-a)
    stop_node a immediate
    clone_standby "$(port_of b)" a
    start_node a "$(port_of a)"
    wait_for "$(port_of a)" "SELECT pg_is_in_recovery()" t
    ;;
destroy)
    stop_node a immediate
    stop_node b immediate
    rm -rf "$dir"
    ;;
*) echo "usage: $0 DIR start PORT_A PORT_B|stop-a fast|immediate|promote-b|rejoin-a|destroy" >&2; exit 2 ;;
esac
