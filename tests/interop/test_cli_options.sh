#!/usr/bin/env bash
# The options qemu-img takes on the older subcommands, taken by imgfs too:
# check -q, snapshot -q/-U/--image-opts, create -u/--object, resize and
# commit --image-opts; their output and exit codes as qemu-img's. And
# --help lists each option with its default; --version answers.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

qcreate -f qcow2 a.qcow2 16M
qio a.qcow2 qcow2 "write -P 1 0 1M"
qemu-img snapshot -c one a.qcow2
same_as_qemu check -q a.qcow2
same_as_qemu check -q --output=json a.qcow2
same_as_qemu snapshot -q -l a.qcow2
same_as_qemu snapshot -U -l a.qcow2
same_as_qemu snapshot -l --image-opts driver=qcow2,file.filename=a.qcow2
cp a.qcow2 q.qcow2
cp a.qcow2 i.qcow2
qemu-img snapshot -q -c two q.qcow2
"$IMGFS" snapshot -q -c two i.qcow2 | grep -q . && fail "snapshot -q -c printed something"
[[ $(qemu-img snapshot -l i.qcow2 | awk 'NR > 2 { print $2 }' | tr '\n' ' ') == "one two " ]] || fail "snapshot -q -c did not make the snapshot"

# a leaking image: -q prints no report, the exit code (3) says it
qcreate -f qcow2 leak.qcow2 16M
qio leak.qcow2 qcow2 "write -P 1 0 1M" "discard 0 64k"   # a free cluster inside the file
python3 - leak.qcow2 <<'EOF'
import struct, sys
f = open(sys.argv[1], "r+b"); d = f.read()
cs = 1 << struct.unpack_from(">I", d, 20)[0]
rt = struct.unpack_from(">Q", d, 48)[0]; rb = struct.unpack_from(">Q", d, rt)[0]
free = [c for c in range(len(d) // cs) if struct.unpack_from(">H", d, rb + 2 * c)[0] == 0]
assert free, "no free cluster to leak"
f.seek(rb + 2 * free[0]); f.write(struct.pack(">H", 1))
EOF
qemu-img check leak.qcow2 >/dev/null 2>&1 && fail "the leak is not there" || [[ $? == 3 ]] || fail "qemu-img check: not a leak"
same_as_qemu check -q leak.qcow2

# create -u: the backing file is not opened; -F and the size are needed
for args in "-u -b gone.qcow2 -F qcow2 u.qcow2 16M" "-u -b gone.qcow2 u.qcow2 16M" "-u -b gone.qcow2 -F qcow2 u.qcow2"; do
    rm -f u.qcow2
    # shellcheck disable=SC2086  # the words are arguments
    qemu-img create -q -f qcow2 $args >/dev/null 2>&1 && qrc=0 || qrc=$?
    rm -f u.qcow2
    # shellcheck disable=SC2086
    "$IMGFS" create -q -f qcow2 $args >/dev/null 2>&1 && irc=0 || irc=$?
    [[ $qrc == "$irc" ]] || fail "create $args: exit $irc, qemu-img $qrc"
done
"$IMGFS" create -q -f qcow2 -u -b gone.qcow2 -F qcow2 u.qcow2 16M
[[ $(qemu-img info -U --output=json u.qcow2 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backing-filename"], d["virtual-size"])') == "gone.qcow2 16777216" ]] ||
    fail "create -u: the backing name or the size is not as asked"
# --object: secrets only; another object type is refused in one line, nothing made
out=$("$IMGFS" create -f qcow2 --object throttle-group,id=t0,x-iops-total=10 o.qcow2 1M 2>&1) && fail "create --object throttle-group succeeded"
[[ $(wc -l <<<"$out") == 1 && $out == *"--object throttle-group"* && ! -e o.qcow2 ]] || fail "create --object: $out"
"$IMGFS" create -q -f qcow2 --object secret,id=s0,data=x o.qcow2 1M || fail "create with an unused secret failed"
qemu-img check -q o.qcow2 || fail "create with an unused secret: check failed"

# resize and commit through --image-opts
cp a.qcow2 r.qcow2
"$IMGFS" resize -q --image-opts driver=qcow2,file.filename=r.qcow2 32M || fail "resize --image-opts"
[[ $(qemu-img info --output=json r.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == 33554432 ]] ||
    fail "resize --image-opts: wrong size"
qcreate -f qcow2 -b a.qcow2 -F qcow2 top.qcow2
qio top.qcow2 qcow2 "write -P 2 2M 64k"
qemu-img convert -O raw top.qcow2 top.raw
"$IMGFS" commit -q --image-opts driver=qcow2,file.filename=top.qcow2 || fail "commit --image-opts"
qemu-img compare -q a.qcow2 top.raw || fail "commit --image-opts: the base does not hold the overlay's data"

# --help shows the defaults; --version answers
"$IMGFS" convert --help | grep -qE -- '-m UINT=8' || fail "convert --help shows no default for -m"
"$IMGFS" convert --help | grep -qE -- '-O TEXT=raw' || fail "convert --help shows no default for -O"
"$IMGFS" info --help | grep -qE -- '--output .*=human' || fail "info --help shows no default for --output"
"$IMGFS" --version | grep -qE '^imgfs [0-9]' || fail "--version"
echo "PASS: CLI options ($SAME_CASES cases print as qemu-img)"
