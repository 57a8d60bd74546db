#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared library exports exactly the functions the header declares
# (POOL_EXTERN), and the static library defines no global name outside pool_
# (internal ones are pool__*), so a program linking either can never collide
# with pgpool's internals.
# usage: tests/check_exports.sh include/pgpool.h libpgpool.so libpgpool.a
set -eu
header=$1 so=$2 archive=$3
for f in "$header" "$so" "$archive"; do
    [ -f "$f" ] || { echo "check_exports: no such file: $f"; exit 1; }
done
work=$(mktemp -d /tmp/pgpool-exports.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Declarations may span lines: join the header, then take the name before
# the first '(' of each POOL_EXTERN declaration.
tr '\n' ' ' <"$header" | grep -o 'POOL_EXTERN [^;#]*;' |
    sed -E 's/\(.*//; s/.*[^A-Za-z0-9_]([A-Za-z0-9_]+)[[:space:]]*$/\1/' | sort -u >"$work/api"
[ -s "$work/api" ] || { echo "check_exports: no POOL_EXTERN declaration in $header"; exit 1; }
nm -D --defined-only "$so" | awk '$2 ~ /^[A-Z]$/ {print $3}' |
    grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u >"$work/so"
if ! diff -u "$work/api" "$work/so" >"$work/diff"; then
    echo "the shared library's exports differ from the header's API (- header, + library):"
    cat "$work/diff"; exit 1
fi
# AddressSanitizer builds add an __odr_asan.<name> marker beside each global
# variable; it is the sanitizer's, not a name of ours.
nm --defined-only -g "$archive" | awk 'NF == 3 {print $3}' | grep -v '^__odr_asan[._]' |
    sort -u >"$work/archive"
if grep -v '^pool_' "$work/archive" >"$work/stray"; then
    echo "the static library defines global names outside pool_:"; cat "$work/stray"; exit 1
fi
echo "exports ok: $(wc -l <"$work/so") functions, the header's API exactly;" \
     "$(wc -l <"$work/archive") global names in the archive, all pool_"
