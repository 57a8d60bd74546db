#!/bin/sh
# SPDX-License-Identifier: MIT
# bouncer_harness.sh DIR UPSTREAM_DIR UPSTREAM_PORT start|stop|restart|repoint DBNAME|destroy
# Debian's PgBouncer (/usr/sbin/pgbouncer) in front of the test cluster, as the
# postgres user when run as root: pool_mode=transaction, default_pool_size=2,
# listening on a Unix socket in DIR (port 6432), with the admin console open to
# user postgres.  The upstream is the cluster's Unix socket.
# server_login_retry is 1 s, not 15: a PAUSE that lands while PgBouncer is
# still logging a server connection in counts as a failed login, and
# PgBouncer then opens no server connection for server_login_retry (seen in
# its log: RESUME, then 15 s of nothing), longer than the tests' 10 s wait.
#   start            a fresh PgBouncer (database "postgres" -> dbname=postgres)
#   stop / restart   stops it (clients are cut off); and starts it again
#   repoint DBNAME   rewrites the [databases] entry to dbname=DBNAME (the
#                    switchover's "repoint"; RELOAD is the caller's)
#   destroy          stops it and removes DIR
set -eu
dir=$1 updir=$2 upport=$3 cmd=$4
cd /

bouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$bouncer" ] || { echo "bouncer_harness: no pgbouncer (apt-get install pgbouncer)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

write_ini() { # dbname
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
postgres = host=$updir port=$upport dbname=$1 user=postgres
[pgbouncer]
listen_addr =
listen_port = 6432
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
server_reset_query =
server_login_retry = 1
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
}

stop() {
    [ -f "$dir/pgbouncer.pid" ] || return 0
    pid=$(cat "$dir/pgbouncer.pid")
    kill "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pgbouncer.pid"
}

start() {
    as_owner "$bouncer" -d "$dir/pgbouncer.ini"
    i=0
    while [ ! -S "$dir/.s.PGSQL.6432" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ -S "$dir/.s.PGSQL.6432" ] || { cat "$dir/pgbouncer.log" >&2; exit 1; }
}

case "$cmd" in
start)
    stop 2>/dev/null || true
    rm -rf "$dir"
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/userlist.txt"
    write_ini postgres
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    start
    ;;
stop) stop ;;
restart) stop; start ;;
repoint) write_ini "$5"; [ "$(id -u)" = 0 ] && chown postgres: "$dir/pgbouncer.ini"; true ;;
destroy) stop; rm -rf "$dir" ;;
*) echo "usage: $0 DIR UPSTREAM_DIR UPSTREAM_PORT start|stop|restart|repoint DBNAME|destroy" >&2; exit 2 ;;
esac
