#!/bin/sh
# SPDX-License-Identifier: MIT
# examples/metrics_http under load: fetches /metrics and /metrics.json with
# curl, checks the text with promtool and the JSON with jq (figures and
# consistency), a 404 for an unknown path, and a clean exit on SIGTERM.  Also
# checks and unit-tests the example alerting rules with promtool.
set -eu
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
promtool check rules "$here/../examples/pgpool_alerts.yml"
(cd "$here" && promtool test rules pgpool_alerts_test.yml)
dir=$(mktemp -d /tmp/pgpool-metrics.XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

"$bin" "$PGPOOL_TEST_DSN application_name=metrics_http" -p 0 -t 4 -d 100 >"$dir/out" 2>"$dir/err" &
pid=$!

# Wait (up to 10 s) for the address it bound.
i=0
until grep -q '^listening on ' "$dir/out"; do
    i=$((i + 1)); [ $i -le 100 ] || { echo "no listening line"; cat "$dir/err"; exit 1; }
    kill -0 "$pid" || { echo "metrics_http died"; cat "$dir/err"; exit 1; }
    sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$dir/out")
base=${url%/metrics}
echo "scraping $url"

# Wait (up to 10 s) until the load has borrowed connections.
i=0
until [ "$(curl -fsS "$base/metrics.json" | jq .acquired)" -gt 10 ]; do
    i=$((i + 1)); [ $i -le 100 ] || { echo "no load"; exit 1; }
    sleep 0.1
done

curl -fsS -D "$dir/headers" -o "$dir/metrics.txt" "$url"
grep -qi '^content-type: text/plain; version=0.0.4' "$dir/headers"
promtool check metrics <"$dir/metrics.txt"
grep -Eq '^pgpool_acquired_total\{pool="demo"\} [1-9][0-9]*$' "$dir/metrics.txt"
grep -Eq '^pgpool_wait_seconds_bucket\{pool="demo",le="\+Inf"\} [1-9]' "$dir/metrics.txt"
grep -Eq '^pgpool_max_size\{pool="demo"\} 4$' "$dir/metrics.txt"
grep -Eq '^pgpool_host_connections\{pool="demo",host="[^"]*",port="[^"]*"\} [1-9]' "$dir/metrics.txt"
curl -fsS "$base/hosts.json" | jq -e '.pool == "demo" and (.hosts | length) == 1
       and .hosts[0].open > 0 and .hosts[0].connects > 0' >/dev/null

curl -fsS -D "$dir/jheaders" -o "$dir/metrics.json" "$base/metrics.json"
grep -qi '^content-type: application/json' "$dir/jheaders"
jq -e '.pool == "demo" and .acquired > 0 and .max_size == 4
       and (.wait_hist.buckets | length) == 32
       and .wait_hist.count == .acquired + .acquire_timeouts + .acquire_errors
       and .wait_hist.sum_us == .wait_us_total
       and .connect_hist.count == .connects' "$dir/metrics.json" >/dev/null

[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/nope")" = 404 ]
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/metrics")" = 405 ]

kill -TERM "$pid"
wait "$pid"
pid=
echo "metrics_http ok"
