#!/usr/bin/env bash
# kill -9 of `imgfs commit`, `rebase`, `resize` and `amend` on vmdk chains,
# at each of their writes, syncs and truncations in turn (strace kills the
# command as it enters the Nth such call): afterwards qemu-img and imgfs
# both read the chain as before the operation or as after it, and
# qemu-img check finds no corruption.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io strace
need_tool "$IMGFS" "$IMGCAT"
strace -f -qq -o /dev/null true 2>/dev/null || skip "strace cannot trace here (ptrace not allowed)"
# LeakSanitizer cannot run under ptrace (a sanitizer build then fails every
# traced run); leaks are looked for by the other tests.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
tmpdir
cd "$T"
M=$MiB
CALLS=pwrite64,pwritev,fdatasync,fsync,ftruncate,rename,linkat

# make_chain SUBFORMAT: base.vmdk (data everywhere) under child.vmdk (data
# in places), and other.vmdk, another parent for rebase.
make_chain() {
    rm -f ./*.vmdk
    qcreate -f vmdk -o subformat="$1" base.vmdk 6M
    qio base.vmdk vmdk "write -P 1 0 6M"
    qcreate -f vmdk -o subformat="$1" -b base.vmdk -F vmdk child.vmdk 6M
    qio child.vmdk vmdk "write -P 2 1M 2M" "write -P 3 $((5 * M)) 64k"
    qcreate -f vmdk -o subformat="$1" other.vmdk 6M
    qio other.vmdk vmdk "write -P 4 $((512 * 1024)) 3M"
    for f in ./*.vmdk; do cp "$f" "$f.orig"; done
}
restore() { for f in ./*.vmdk.orig; do cp "$f" "${f%.orig}"; done; }

# view IMG OUT: the chain's content by qemu-img, and the same by imgfs.
view() {
    rm -f "$2"
    qemu-img convert -f vmdk -O raw "$1" "$2" 2>qerr.txt || { cat qerr.txt; return 1; }
    "$IMGCAT" "$1" >"$2.imgfs" || return 1
    cmp -s "$2" "$2.imgfs" || { echo "imgfs reads $1 differently from qemu-img"; return 1; }
}
# one_of OUT WANT...: OUT is byte for byte one of WANT.
one_of() {
    local out=$1 w
    shift
    for w in "$@"; do cmp -s "$out" "$w" && return 0; done
    return 1
}

# matrix NAME CMD...: for every call of CALLS that CMD makes, a run killed
# as it enters that call; the chain must then read as before.raw or
# after.raw (made by the caller), and check clean for qemu-img.
matrix() {
    local name=$1 sc n k runs=0
    shift
    for sc in ${CALLS//,/ }; do
        restore
        strace -f -qq -o count.txt -e trace="$sc" -c -U calls,name "$@" >/dev/null 2>&1 || fail "$name failed"
        n=$(awk -v s="$sc" '$2 == s {print $1}' count.txt)
        n=${n:-0}
        for ((k = 1; k <= n; k++)); do
            restore
            (strace -f -qq -o /dev/null -e trace="$sc" -e inject="$sc":signal=KILL:when="$k" "$@" || true) >/dev/null 2>&1
            view child.vmdk got.raw || fail "$name: killed at $sc #$k: the chain cannot be read: $(cat qerr.txt)"
            one_of got.raw before.raw after.raw || fail "$name: killed at $sc #$k: the chain reads neither as before nor as after"
            for img in child.vmdk base.vmdk; do
                rc=0
                qemu-img check -q -f vmdk "$img" >/dev/null 2>&1 || rc=$?
                [[ $rc == 0 || $rc == 3 ]] || fail "$name: killed at $sc #$k: qemu-img check $img exits $rc"
            done
            runs=$((runs + 1))
        done
    done
    [[ $runs -ge 3 ]] || fail "$name: only $runs kill points (the trace found too few calls)"
    echo "$name: $runs kill points"
}

for sub in monolithicSparse twoGbMaxExtentSparse; do
    make_chain $sub
    view child.vmdk before.raw || fail "$sub: the new chain cannot be read"
    cp before.raw after.raw
    matrix "$sub commit" "$IMGFS" commit child.vmdk
    matrix "$sub commit -d" "$IMGFS" commit -d child.vmdk
    matrix "$sub rebase" "$IMGFS" rebase -f vmdk -F vmdk -b other.vmdk child.vmdk

    cp before.raw after.raw
    truncate -s 9M after.raw
    matrix "$sub resize" "$IMGFS" resize child.vmdk 9M

    cp before.raw after.raw
    matrix "$sub amend" "$IMGFS" amend -o adapter_type=lsilogic,hwversion=7 child.vmdk
done

echo "PASS: vmdk commit, rebase, resize and amend survive kill -9 at every write"
