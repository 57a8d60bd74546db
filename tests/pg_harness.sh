#!/bin/sh
# SPDX-License-Identifier: MIT
# pg_harness.sh DIR PORT start|tcp-start|tls-start|stop|kill|restart|pause|resume|destroy
# tcp-start: also listens on 127.0.0.1:PORT (plain TCP, trust).
# tls-start: also serves TLS on 127.0.0.1:PORT with a throwaway CA in DIR/tls.
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

# A throwaway CA that signs a server certificate for localhost/127.0.0.1, and
# a second CA that signed nothing (for the wrong-CA test).
make_certs() {
    t="$dir/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgpool test CA" \
        -keyout "$t/ca.key" -out "$t/ca.crt" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgpool wrong CA" \
        -keyout "$t/wrong-ca.key" -out "$t/wrong-ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$t/san.ext"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
        -days 2 -extfile "$t/san.ext" -out "$t/server.crt" 2>/dev/null
    chmod 600 "$t/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$t"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$t/server.crt'
ssl_key_file = '$t/server.key'
CONF
}

case "$cmd" in
start|tcp-start|tls-start)
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
    [ "$cmd" = tls-start ] && make_certs
    [ "$cmd" = tcp-start ] && echo "listen_addresses = '127.0.0.1'" >>"$dir/data/postgresql.conf"
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
*) echo "usage: $0 DIR PORT start|tcp-start|tls-start|stop|kill|restart|pause|resume|destroy" >&2; exit 2 ;;
esac
