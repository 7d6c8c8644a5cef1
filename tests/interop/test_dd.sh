#!/usr/bin/env bash
# `imgfs dd` against `qemu-img dd`: for each bs/count/skip and format, the
# output has qemu-img's virtual size and content (qemu-img compare of the
# two outputs) and passes qemu-img check; errors as qemu-img's (exit code,
# one line) and no output is left. One deliberate difference: a skip past
# the end is an error with exit 1 and no file (qemu-img 7.2 prints the
# error, leaves an empty output and exits 0).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

qcreate -f qcow2 d.qcow2 10M
qio d.qcow2 qcow2 "write -P 1 0 1M" "write -P 2 5M 1M" "write -P 3 $((9 * M + 100)) 1000"
qemu-img convert -O vmdk d.qcow2 d.vmdk
qemu-img convert -O raw d.qcow2 d.raw
vsize_of() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }
n=0
for src in d.qcow2 d.vmdk d.raw; do
    for ops in "" "bs=1M count=2" "bs=1M skip=4" "bs=1M count=30" "bs=64k count=100 skip=70" "bs=4k skip=2303" \
        "bs=1000 count=7 skip=3" "count=100 skip=1"; do
        for of in raw qcow2 vmdk; do
            rm -f q.out i.out
            # shellcheck disable=SC2086
            qemu-img dd -O $of $ops if=$src of=q.out
            # shellcheck disable=SC2086
            "$IMGFS" dd -O $of $ops if=$src of=i.out || fail "imgfs dd -O $of $ops if=$src failed"
            [[ $(vsize_of i.out) == "$(vsize_of q.out)" ]] ||
                fail "dd -O $of $ops if=$src: size $(vsize_of i.out), qemu-img's $(vsize_of q.out)"
            qemu-img compare -q -f "$of" -F "$of" i.out q.out || fail "dd -O $of $ops if=$src: content differs from qemu-img dd's"
            [[ $of == raw ]] || qemu-img check -q -f "$of" i.out || fail "dd -O $of $ops if=$src: check failed"
            n=$((n + 1))
        done
    done
done
echo "   $n cases give qemu-img dd's output"

rm -f x.out
out=$("$IMGFS" dd bs=1M count=3 skip=4 if=d.qcow2 of=x.out 2>&1) && fail "dd with a skip past the end succeeded"
grep -q "cannot skip to specified offset" <<<"$out" || fail "dd skip past the end: $out"
[[ ! -e x.out ]] || fail "dd skip past the end left an output"

err() { NO_FILE=x.out errs_as_qemu dd "$@"; }
err if=d.qcow2
err of=x.out
err bs=0 if=d.qcow2 of=x.out
err bs=1M count=x if=d.qcow2 of=x.out
err foo=1 if=d.qcow2 of=x.out
err if=nowhere of=x.out
err -O nosuch if=d.qcow2 of=x.out
echo "dd: all cases agree with qemu-img"
