#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds (Release), has
# clang check which lock guards what (packaging/thread_safety.sh), runs
# every ctest test (unit, interop against qemu, end-to-end mounts), then
# builds once more with AddressSanitizer + UBSan and runs the unit and
# interop tests under it. Exit status 0 only if everything passed.
#   IMGFS_SKIP_SANITIZE=1  skip the sanitizer build
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=deps.sh
source packaging/deps.sh
install_missing "${IMGFS_BUILD_DEPS[@]}" "${IMGFS_RUN_DEPS[@]}" "${IMGFS_TEST_DEPS[@]}"
# Loop devices for the ext4 test (no-op where the module is built in).
modprobe loop 2>/dev/null || true

# ccache (where a cache is kept) finds a clone's objects wherever it lies.
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1
phase() { echo "== $* ($(date +%T), ${SECONDS}s in)"; }

phase "Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
phase "Thread-safety analysis (clang)"
bash packaging/thread_safety.sh build
phase "ctest: unit and interop, two at a time"
# They share nothing (each its own temporary directory, loop device and
# tmpfs) and none waits on a clock; the mounts of e2e run one at a time.
(cd build && ctest --output-on-failure --timeout 600 -j"$(nproc)" -LE e2e)
phase "ctest: e2e"
(cd build && ctest --output-on-failure --timeout 600 -L e2e)

if [[ ${IMGFS_SKIP_SANITIZE:-0} != 1 ]]; then
    phase "ASan+UBSan build"
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMGFS_SANITIZE=ON >/dev/null
    cmake --build build-asan -j2
    phase "ctest under ASan+UBSan (unit, interop), two at a time"
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure --timeout 900 -j"$(nproc)" -L 'unit|interop')
fi
phase "all tests passed"
