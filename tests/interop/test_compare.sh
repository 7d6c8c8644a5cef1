#!/usr/bin/env bash
# `imgfs compare` against `qemu-img compare` on the same pairs: what it
# prints line by line and the exit code, in plain and strict mode, for
# raw, qcow2 and vmdk, chains, images sharing a backing file, different
# sizes, zero clusters against holes. Errors: one line, qemu-img's exit
# code. Then that a compare of two overlays on one backing file never
# reads the backing file (it is made unreadable to show it).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io strace
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

qcreate -f qcow2 base.qcow2 8M
qio base.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M"
qemu-img convert -O raw base.qcow2 base.raw
qemu-img convert -O vmdk base.qcow2 base.vmdk
qemu-img convert -O qcow2 -o compat=0.10 base.qcow2 v2.qcow2
qemu-img convert -c -O qcow2 base.qcow2 comp.qcow2
qcreate -f qcow2 -b base.qcow2 -F qcow2 o1.qcow2
qio o1.qcow2 qcow2 "write -P 3 1M 4k"
qcreate -f qcow2 -b base.qcow2 -F qcow2 o2.qcow2
qio o2.qcow2 qcow2 "write -P 3 1M 4k"
qcreate -f qcow2 -b base.qcow2 -F qcow2 o3.qcow2
qio o3.qcow2 qcow2 "write -P 3 1M 4k" "write -P 4 $((5 * M + 1000)) 1"
qcreate -f qcow2 -b base.qcow2 -F qcow2 o4.qcow2
qio o4.qcow2 qcow2 "write -P 1 0 64k"  # the same bytes, held by the overlay
qemu-img convert -O raw o3.qcow2 o3.raw
qcreate -f qcow2 big.qcow2 12M
qio big.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M"
qcreate -f qcow2 big2.qcow2 12M
qio big2.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M" "write -P 9 10M 512"
qcreate -f qcow2 big3.qcow2 12M
qio big3.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M" "write -z 10M 1M"
qcreate -f qcow2 zc.qcow2 8M
qio zc.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M" "write -z 7M 64k"
qcreate -f qcow2 e1.qcow2 8M
qcreate -f qcow2 e2.qcow2 8M
qcreate -f raw e.raw 8M
qcreate -f vmdk -b base.vmdk -F vmdk child.vmdk
qio child.vmdk vmdk "write -P 3 1M 4k" "write -P 4 $((5 * M + 1000)) 1"
qcreate -f vmdk -o subformat=monolithicFlat flat.vmdk 8M
qemu-img convert -n -O vmdk base.raw flat.vmdk
qemu-img convert -O vmdk -o subformat=streamOptimized base.qcow2 stream.vmdk

same() { same_as_qemu compare "$@"; }
pairs=(
    "base.qcow2 base.raw" "base.qcow2 base.vmdk" "base.raw base.vmdk" "v2.qcow2 base.qcow2" "comp.qcow2 base.raw"
    "o1.qcow2 o2.qcow2" "o1.qcow2 o3.qcow2" "o3.qcow2 o3.raw" "o4.qcow2 base.qcow2" "o1.qcow2 base.qcow2"
    "base.qcow2 big.qcow2" "big.qcow2 base.qcow2" "base.qcow2 big2.qcow2" "big2.qcow2 base.raw" "base.qcow2 big3.qcow2"
    "zc.qcow2 base.qcow2" "e1.qcow2 e2.qcow2" "e1.qcow2 e.raw" "e.raw e1.qcow2"
    "child.vmdk o3.qcow2" "child.vmdk base.vmdk" "flat.vmdk base.raw" "stream.vmdk base.qcow2" "stream.vmdk flat.vmdk"
)
for p in "${pairs[@]}"; do
    # shellcheck disable=SC2086  # two file names
    { same $p; same -s $p; same -q $p; }
done
same -f qcow2 -F raw base.qcow2 base.raw
same -f raw -F qcow2 base.qcow2 base.qcow2
same -f vmdk -F qcow2 child.vmdk o3.qcow2
echo "   $SAME_CASES cases print and exit as qemu-img compare"

# errors: one line, exit codes as qemu-img's
err() { errs_as_qemu compare "$@"; }
err base.qcow2 nowhere.qcow2
err nowhere.qcow2 base.qcow2
err -f vmdk base.qcow2 base.raw
err base.qcow2
printf 'QFI\xfb\0\0\0\3garbage' >bad.qcow2
err base.qcow2 bad.qcow2

# two overlays with the same writes on one backing file: its data is never
# read (only its header, L1 and L2 tables), counted with strace
qcreate -f qcow2 -b base.qcow2 -F qcow2 s1.qcow2
qio s1.qcow2 qcow2 "write -P 3 1M 4k" "write -P 5 7M 64k"
cp s1.qcow2 s2.qcow2
# (LeakSanitizer cannot run under ptrace: off for this run of an ASan build)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -y -e trace=pread64,preadv,preadv2,read -o st.log "$IMGFS" compare s1.qcow2 s2.qcow2 >/dev/null ||
    fail "compare of two equal overlays"
read_base=$(grep -F "base.qcow2>" st.log | awk -F'= ' '{s += $NF} END {print s + 0}')
(( read_base < 512 * 1024 )) || fail "compare read $read_base bytes of the shared backing file (it holds 4 MiB of data)"
echo "   two overlays on one backing file: $read_base bytes of it read (metadata), of 4 MiB of data"
echo "compare: all cases agree with qemu-img"
