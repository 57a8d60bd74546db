#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the Debian packages (cpack -G DEB: libpgpool1 and libpgpool-dev),
# checks what each holds, installs them with apt, runs the install check
# against /usr (pkg-config shared and static, CMake), and removes them again.
# Needs root and a Debian machine.
# usage: tests/check_packages.sh CONNINFO
set -eu
conninfo=$1
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/pgpool-packages.XXXXXX)
trap 'rm -rf "$work"' EXIT

cmake -S "$src" -B "$work/build" -DCMAKE_INSTALL_PREFIX=/usr -DPGPOOL_BUILD_TESTS=OFF \
    -DPGPOOL_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$work/build" -j 2 >/dev/null
(cd "$work/build" && cpack -G DEB >/dev/null)
runtime=$(ls "$work"/build/libpgpool1_*.deb)
dev=$(ls "$work"/build/libpgpool-dev_*.deb)
for deb in "$runtime" "$dev"; do
    echo "$(basename "$deb"): $(dpkg-deb -f "$deb" Package Version Depends | tr '\n' ' ')"
done
dpkg-deb -c "$runtime" >"$work/runtime.list"
dpkg-deb -c "$dev" >"$work/dev.list"
# The runtime package holds the versioned library and its copyright only;
# the link, the archive, the header and the build files are the dev package's.
grep -q 'libpgpool\.so\.1 ->' "$work/runtime.list"
if grep -qE 'pgpool\.h|libpgpool\.a|pgpool\.pc|libpgpool\.so ->' "$work/runtime.list"; then
    echo "libpgpool1 holds development files:"; cat "$work/runtime.list"; exit 1
fi
grep -q 'usr/share/doc/libpgpool1/copyright' "$work/runtime.list"
for f in include/pgpool.h libpgpool.a pgpool.pc pgpoolConfig.cmake 'libpgpool.so ->'; do
    grep -qF "$f" "$work/dev.list" || { echo "libpgpool-dev lacks $f"; exit 1; }
done

apt-get install -y "$runtime" "$dev" >/dev/null
trap 'apt-get remove -y libpgpool-dev libpgpool1 >/dev/null; rm -rf "$work"' EXIT
"$src/tests/check_install.sh" --installed /usr "$conninfo"
echo "packages ok"
