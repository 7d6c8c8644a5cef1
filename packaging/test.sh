#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds (Release), runs
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

echo "== Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
echo "== ctest (unit, interop, e2e)"
(cd build && ctest --output-on-failure --timeout 600)

if [[ ${IMGFS_SKIP_SANITIZE:-0} != 1 ]]; then
    echo "== ASan+UBSan build"
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMGFS_SANITIZE=ON >/dev/null
    cmake --build build-asan -j2
    echo "== ctest under ASan+UBSan (unit, interop)"
    # Two at a time: the unit and interop tests share nothing (each its own
    # temporary directory, loop device and tmpfs) and none waits on a clock.
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure --timeout 900 -j"$(nproc)" -L 'unit|interop')
fi
echo "== all tests passed"
