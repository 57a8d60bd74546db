#!/bin/sh
# Installs a build tree to a temporary prefix and builds examples/basic.c out
# of tree against it three ways, then runs each against CONNINFO:
#   1. pkg-config --cflags --libs pgpool          (shared library)
#   2. pkg-config --static --cflags --libs pgpool with libpgpool.a
#   3. CMake find_package(pgpool): pgpool::pgpool and pgpool::pgpool_static
# usage: tests/check_install.sh BUILD_DIR CONNINFO
set -eu
build=$(cd "$1" && pwd)
conninfo=$2
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgpool-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(find "$prefix" -name pgpool.pc)
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH="$(dirname "$pc")"
echo "installed to $prefix; pgpool.pc says: $(pkg-config --modversion pgpool)"

run() { # name binary
    out=$("$2" "$conninfo")
    echo "$1: $out"
}

# 1. shared, through pkg-config
cc -o "$work/app_shared" "$src/examples/basic.c" $(pkg-config --cflags --libs pgpool) -Wl,-rpath,"$libdir"
ldd "$work/app_shared" | grep -q "libpgpool.so.1 => $libdir"
run "pkg-config, shared" "$work/app_shared"

# 2. static: pkg-config --static's flags, the archive picked with -l:
static_libs=$(pkg-config --static --libs pgpool | sed 's/-lpgpool\b/-l:libpgpool.a/')
cc -o "$work/app_static" "$src/examples/basic.c" $(pkg-config --static --cflags pgpool) $static_libs
if ldd "$work/app_static" | grep -q libpgpool; then
    echo "app_static still loads libpgpool.so"; exit 1
fi
nm "$work/app_static" | grep -q ' T pool_create$'
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
ldd "$work/cmake-app/build/app_cmake" | grep -q "libpgpool.so.1 => $libdir"
if ldd "$work/cmake-app/build/app_cmake_static" | grep -q libpgpool; then
    echo "app_cmake_static still loads libpgpool.so"; exit 1
fi
run "cmake pgpool::pgpool" "$work/cmake-app/build/app_cmake"
run "cmake pgpool::pgpool_static" "$work/cmake-app/build/app_cmake_static"
echo "install check ok"
