#!/bin/sh
# Fails when the shared library exports a symbol outside the pool_ prefix.
set -eu
extra=$(nm -D --defined-only "$1" | awk '{print $3}' |
        grep -vE '^(pool_|_init$|_fini$|_edata$|_end$|__bss_start$)' || true)
if [ -n "$extra" ]; then
    echo "exported outside the pool_ prefix:"; echo "$extra"; exit 1
fi
echo "exports ok: $(nm -D --defined-only "$1" | grep -c ' T pool_') pool_* functions"
