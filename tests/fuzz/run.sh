#!/usr/bin/env bash
# run.sh SECONDS: builds every fuzz target with clang and libFuzzer
# (-fsanitize=fuzzer,address,undefined, IMGFS_FUZZ=ON) in build-fuzz/,
# makes fresh seeds, and fuzzes each target for SECONDS, two at a time
# (the machine has two cores). Prints each target's executions per second
# and whether it failed. A crash, sanitizer report, leak, timeout (a hang)
# or out-of-memory input is copied to regressions/<target>/, where ctest
# replays it from then on, and the script exits 1.
# Environment: IMGFS_FUZZ_BUILD (build dir), FUZZ_JOBS (default 2),
# FUZZ_TARGETS (a subset, space separated), FUZZ_RSS_MB (default 2048).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[[ $# -eq 1 && $1 =~ ^[0-9]+$ ]] || { echo "usage: $0 SECONDS" >&2; exit 2; }
SECONDS_EACH=$1
BUILD=${IMGFS_FUZZ_BUILD:-$ROOT/build-fuzz}
JOBS=${FUZZ_JOBS:-2}
RSS_MB=${FUZZ_RSS_MB:-2048}

mapfile -t LINES < <(grep -E '^[a-z]' "$HERE/targets.txt")
declare -A SEED_DIR
ALL=()
for l in "${LINES[@]}"; do
    read -r t s <<<"$l"
    SEED_DIR[$t]=$s
    ALL+=("$t")
done
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL[*]}}"

echo "== building ${TARGETS[*]} in $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMGFS_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$BUILD" -j2 --target "${TARGETS[@]}" >"$BUILD/fuzz-build.log" 2>&1 ||
    { tail -30 "$BUILD/fuzz-build.log"; echo "build failed (log: $BUILD/fuzz-build.log)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/imgfs-fuzz.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "== seeds"
bash "$HERE/make_seeds.sh" "$WORK/seeds" | grep seeds

# fuzz_one TARGET: one libFuzzer run; leaves WORK/TARGET.{log,rc}.
fuzz_one() {
    local t=$1 corpus=$BUILD/fuzz-corpus/$1 rc=0
    mkdir -p "$corpus" "$WORK/artifacts/$t"
    # The kept corpus (first directory) grows from run to run; new inputs go there.
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$BUILD/tests/fuzz/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb="$RSS_MB" \
        -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$t/" \
        "$corpus" "$WORK/seeds/${SEED_DIR[$t]}" >"$WORK/$t.log" 2>&1 || rc=$?
    echo "$rc" >"$WORK/$t.rc"
}

echo "== fuzzing each target for ${SECONDS_EACH}s, $JOBS at a time"
for t in "${TARGETS[@]}"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    echo "   start $t"
    fuzz_one "$t" &
done
wait

failed=0
printf '%-28s %10s %10s  %s\n' target exec/s runs result
for t in "${TARGETS[@]}"; do
    rc=$(cat "$WORK/$t.rc")
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$WORK/$t.log" | grep -o '[0-9]*$' || echo "?")
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$WORK/$t.log" | grep -o '[0-9]*$' || echo "?")
    mapfile -t found < <(find "$WORK/artifacts/$t" -type f | sort)
    if [[ $rc -eq 0 && ${#found[@]} -eq 0 ]]; then
        result=ok
    else
        failed=1
        result="FAILED (exit $rc)"
        if ((${#found[@]})); then
            mkdir -p "$HERE/regressions/$t"
            cp "${found[@]}" "$HERE/regressions/$t/"
            result+=" kept: $(basename -a "${found[@]}" | tr '\n' ' ')"
        fi
        mkdir -p "$BUILD/fuzz-logs"
        cp "$WORK/$t.log" "$BUILD/fuzz-logs/$t.log"
        result+=" log: $BUILD/fuzz-logs/$t.log"
    fi
    printf '%-28s %10s %10s  %s\n' "$t" "$eps" "$runs" "$result"
done
exit "$failed"
