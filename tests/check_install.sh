#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs a build tree to a temporary prefix and builds examples/basic.c out
# of tree against it three ways, then runs each against CONNINFO:
#   1. pkg-config --cflags --libs pgpool          (shared library)
#   2. pkg-config --static --cflags --libs pgpool with libpgpool.a
#   3. CMake find_package(pgpool): pgpool::pgpool and pgpool::pgpool_static
# and checks the installed libraries' symbols (tests/check_exports.sh).
# usage: tests/check_install.sh BUILD_DIR CONNINFO
#        tests/check_install.sh --installed PREFIX CONNINFO   (already installed
#        there, e.g. /usr by the .deb packages)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgpool-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ "$1" = --installed ]; then
    prefix=$2
    conninfo=$3
else
    build=$(cd "$1" && pwd)
    conninfo=$2
    prefix="$work/prefix"
    cmake --install "$build" --prefix "$prefix" >/dev/null
fi

pc=$(find "$prefix"/lib* -name pgpool.pc | head -1)
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH="$(dirname "$pc")"
echo "installed in $prefix; pgpool.pc says: $(pkg-config --modversion pgpool)"
"$src/tests/check_exports.sh" "$prefix/include/pgpool.h" "$libdir/libpgpool.so" "$libdir/libpgpool.a"

# Fails unless BINARY loads the libpgpool.so.1 installed here (compared by
# real path: on merged-/usr Debian the loader may say /lib for /usr/lib).
loads_ours() {
    got=$(ldd "$1" | awk '/libpgpool\.so\.1 =>/ {print $3}')
    [ -n "$got" ] && [ "$(readlink -f "$got")" = "$(readlink -f "$libdir/libpgpool.so.1")" ] ||
        { echo "$1 loads '$got', not $libdir/libpgpool.so.1"; exit 1; }
}

run() { # name binary
    out=$("$2" "$conninfo")
    echo "$1: $out"
}

# 1. shared, through pkg-config
cc -o "$work/app_shared" "$src/examples/basic.c" $(pkg-config --cflags --libs pgpool) -Wl,-rpath,"$libdir"
loads_ours "$work/app_shared"
run "pkg-config, shared" "$work/app_shared"

# 2. static: pkg-config --static's flags, the archive picked with -l:
static_libs=$(pkg-config --static --libs pgpool | sed 's/-lpgpool\b/-l:libpgpool.a/')
cc -o "$work/app_static" "$src/examples/basic.c" $(pkg-config --static --cflags pgpool) $static_libs
if ldd "$work/app_static" | grep -q libpgpool; then
    echo "app_static still loads libpgpool.so"; exit 1
fi
nm "$work/app_static" | grep -q ' T pool_create_sized$'
run "pkg-config --static, libpgpool.a" "$work/app_static"

# 3. CMake package, both targets
mkdir -p "$work/cmake-app"
cat >"$work/cmake-app/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(pgpool 1.0 REQUIRED)
add_executable(app_cmake "$src/examples/basic.c")
target_link_libraries(app_cmake PRIVATE pgpool::pgpool)
add_executable(app_cmake_static "$src/examples/basic.c")
target_link_libraries(app_cmake_static PRIVATE pgpool::pgpool_static)
CMAKE
cmake -S "$work/cmake-app" -B "$work/cmake-app/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake-app/build" >/dev/null
loads_ours "$work/cmake-app/build/app_cmake"
if ldd "$work/cmake-app/build/app_cmake_static" | grep -q libpgpool; then
    echo "app_cmake_static still loads libpgpool.so"; exit 1
fi
run "cmake pgpool::pgpool" "$work/cmake-app/build/app_cmake"
run "cmake pgpool::pgpool_static" "$work/cmake-app/build/app_cmake_static"
echo "install check ok"
