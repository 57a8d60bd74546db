#!/bin/sh
# SPDX-License-Identifier: MIT
# The library's files are layers: CMakeLists.txt lists lib/*.c lowest first,
# and a file may call (or read a variable of) only files listed before it,
# never one after it: no call goes up, so there is no circle.  Read from the
# object files' symbols, so it holds for what the compiler saw.
# usage: tests/check_layers.sh CMakeLists.txt OBJECT_DIR
set -eu
cmakelists=$1 objdir=$2
files=$(sed -n '/^set(PGPOOL_SOURCES/,/)/p' "$cmakelists" | grep -o 'lib/[a-z_]*\.c')
[ -n "$files" ] || { echo "check_layers: no PGPOOL_SOURCES in $cmakelists"; exit 1; }
work=$(mktemp -d /tmp/pgpool-layers.XXXXXX)
trap 'rm -rf "$work"' EXIT
i=0
for f in $files; do
    i=$((i + 1))
    obj="$objdir/$f.o"
    [ -f "$obj" ] || { echo "check_layers: no object $obj"; exit 1; }
    nm "$obj" | awk -v i="$i" -v f="$f" '$2 ~ /^[TDBR]$/ {print $3, i, f}' >>"$work/defined"
    nm "$obj" | awk -v i="$i" -v f="$f" '$1 == "U" && $2 ~ /^pool_/ {print $2, i, f}' >>"$work/used"
done
bad=0
while read -r sym user_i user_f; do
    def=$(awk -v s="$sym" '$1 == s {print $2, $3}' "$work/defined")
    [ -n "$def" ] || continue
    def_i=${def% *} def_f=${def#* }
    if [ "$def_i" -gt "$user_i" ]; then
        echo "upward call: $user_f uses $sym from $def_f"
        bad=1
    fi
done <"$work/used"
[ "$bad" = 0 ] || exit 1
echo "layers ok: $(echo "$files" | wc -l) files, every call goes down"
