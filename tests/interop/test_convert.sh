#!/usr/bin/env bash
# `imgfs convert` against qemu-img on the same inputs: every source layout
# to every writable output format reads as the source (qemu-img compare),
# passes qemu-img check, and is as sparse as qemu-img convert's output;
# -n, --target-is-zero, -B (only what differs from the new backing file;
# the vmdk workflow), several sources, -l, -S 0, -o; a failure half way
# leaves no file behind (and --salvage gets through); errors and exit codes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

# data runs as qemu-img map reports them (offsets left out: layouts differ)
runs() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    key = (e["data"], e["zero"] and not e["data"])
    if out and out[-1][2] == key and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], key])
for s, n, k in out:
    print(s, n, "data" if k[0] else "zero")'
}
converted() {  # converted SRC OUT: OUT reads as SRC and is clean
    qemu-img compare -q "$1" "$2" || fail "convert $1 -> $2: the output does not read as the source"
    case $2 in
        *.raw) ;;
        *) qemu-img check -q "$2" || fail "convert $1 -> $2: qemu-img check failed" ;;
    esac
}

qcreate -f qcow2 base.qcow2 24M
qio base.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M" "write -z 8M 1M" "write -P 3 $((12 * M + 1000)) 5000" \
    "write -P 0 14M 128k" "write -P 4 20M 64k"
qemu-img convert -O raw base.qcow2 src.raw
qemu-img convert -O qcow2 -o compat=0.10 base.qcow2 src-v2.qcow2
qemu-img convert -c -O qcow2 base.qcow2 src-comp.qcow2
qemu-img convert -O qcow2 -o extended_l2=on,cluster_size=128k base.qcow2 src-el2.qcow2
qemu-img convert -O vmdk base.qcow2 src.vmdk
qemu-img convert -O vmdk -o subformat=monolithicFlat base.qcow2 src-flat.vmdk
qemu-img convert -O vmdk -o subformat=streamOptimized base.qcow2 src-stream.vmdk
qcreate -f qcow2 -b base.qcow2 -F qcow2 src-top.qcow2
qio src-top.qcow2 qcow2 "write -P 5 1M 64k" "write -z 5M 64k" "write -P 6 22M 4k"
sources=(base.qcow2 src.raw src-v2.qcow2 src-comp.qcow2 src-el2.qcow2 src.vmdk src-flat.vmdk src-stream.vmdk src-top.qcow2)
outs=("raw" "qcow2" "qcow2 -o compat=0.10,cluster_size=4k" "vmdk" "vmdk -o subformat=monolithicFlat"
    "vmdk -o subformat=twoGbMaxExtentSparse")
n=0
for s in "${sources[@]}"; do
    for o in "${outs[@]}"; do
        # shellcheck disable=SC2086  # the format and its options
        set -- $o
        ext=$1
        [[ $ext == vmdk || $ext == raw ]] || ext=qcow2
        rm -f i.$ext q.$ext i-*.vmdk q-*.vmdk
        "$IMGFS" convert -O "$@" "$s" "i.$ext" || fail "imgfs convert -O $o $s failed"
        qemu-img convert -O "$@" "$s" "q.$ext"
        converted "$s" "i.$ext"
        if [[ $ext != raw ]]; then
            [[ $(runs "i.$ext") == "$(runs "q.$ext")" ]] || {
                diff <(runs "q.$ext") <(runs "i.$ext") | head || true
                fail "convert -O $o $s: data runs differ from qemu-img convert's"
            }
        else
            ia=$(du -k i.raw | cut -f1) qa=$(du -k q.raw | cut -f1)
            ((ia <= qa + 64)) || fail "convert -O raw $s: $ia KiB allocated, qemu-img's output $qa KiB"
        fi
        n=$((n + 1))
    done
done
echo "   $n source/output pairs read as their source, clean, as sparse as qemu-img's"

# the output's options are the create's
"$IMGFS" convert -O qcow2 -o cluster_size=4k,compat=0.10 base.qcow2 opt.qcow2
qemu-img info opt.qcow2 | grep -q "cluster_size: 4096" || fail "convert -o cluster_size=4k not applied"
qemu-img info opt.qcow2 | grep -q "compat: 0.10" || fail "convert -o compat=0.10 not applied"

# -S 0 allocates everything; -S 64k leaves zero runs of 64k as holes
"$IMGFS" convert -S 0 -O raw base.qcow2 full.raw
[[ $(du -k full.raw | cut -f1) -ge $((24 * 1024)) ]] || fail "convert -S 0: not fully allocated ($(du -k full.raw))"
"$IMGFS" convert -S 64k -O qcow2 base.qcow2 s64.qcow2
converted base.qcow2 s64.qcow2

# -n into an existing image, with and without --target-is-zero
qemu-img create -q -f qcow2 ex.qcow2 24M
qio ex.qcow2 qcow2 "write -P 9 0 24M"
"$IMGFS" convert -n -O qcow2 base.qcow2 ex.qcow2
converted base.qcow2 ex.qcow2
qemu-img create -q -f qcow2 exz.qcow2 24M
"$IMGFS" convert -n --target-is-zero -O qcow2 base.qcow2 exz.qcow2
converted base.qcow2 exz.qcow2
qemu-img create -q -f raw exr.raw 24M
qio exr.raw raw "write -P 9 0 24M"
"$IMGFS" convert -n base.qcow2 exr.raw
converted base.qcow2 exr.raw
qemu-img create -q -f qcow2 small.qcow2 1M
out=$("$IMGFS" convert -n -O qcow2 base.qcow2 small.qcow2 2>&1) && fail "convert -n into a smaller image succeeded"
[[ $(wc -l <<<"$out") == 1 ]] || fail "convert -n into a smaller image: $out"

# -B: only what differs from the new backing file
qemu-img convert -O raw src-top.qcow2 top.raw
"$IMGFS" convert -O qcow2 -B base.qcow2 -F qcow2 src-top.qcow2 b.qcow2
converted src-top.qcow2 b.qcow2
qemu-img info b.qcow2 | grep -q "^backing file: base.qcow2" || fail "convert -B: no backing file"
held=$(qemu-img map --output=json b.qcow2 | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["present"]))')
((held <= 3 * 65536)) || fail "convert -B holds $held bytes; the top image differs from base in 3 clusters"
# the vmdk workflow: disk-c.qcow2 on disk-b.vmdk on disk-a.vmdk, converted
# to a vmdk on disk-a.vmdk
qcreate -f vmdk disk-a.vmdk 8M
qio disk-a.vmdk vmdk "write -P 1 0 4M"
qcreate -f vmdk -b disk-a.vmdk -F vmdk disk-b.vmdk
qio disk-b.vmdk vmdk "write -P 2 1M 1M"
qcreate -f qcow2 -b disk-b.vmdk -F vmdk disk-c.qcow2
qio disk-c.qcow2 qcow2 "write -P 3 3M 64k"
"$IMGFS" convert -f qcow2 -O vmdk -B disk-a.vmdk -F vmdk disk-c.qcow2 disk-c.vmdk
converted disk-c.qcow2 disk-c.vmdk
cid_a=$(grep -a '^CID=' disk-a.vmdk | head -1 | cut -d= -f2)
pcid_c=$(grep -a '^parentCID=' disk-c.vmdk | cut -d= -f2)
# hex numbers (qemu writes a CID without leading zeros, imgfs with them)
[[ -n $cid_a && -n $pcid_c ]] && (( 16#$cid_a == 16#$pcid_c )) || fail "convert -B to vmdk: parentCID $pcid_c is not disk-a's CID $cid_a"

# several sources, concatenated as qemu-img does
qemu-img convert -O raw base.qcow2 src.vmdk src-top.qcow2 cat-q.raw
"$IMGFS" convert -O qcow2 base.qcow2 src.vmdk src-top.qcow2 cat-i.qcow2
converted cat-q.raw cat-i.qcow2

# -l: an internal snapshot of the source
cp base.qcow2 snap.qcow2
qemu-img snapshot -c first snap.qcow2
qio snap.qcow2 qcow2 "write -P 7 0 8M"
qemu-img convert -O raw -l first snap.qcow2 snap-q.raw
for l in first 1 snapshot.name=first snapshot.id=1; do
    rm -f snap-i.raw
    "$IMGFS" convert -O raw -l "$l" snap.qcow2 snap-i.raw
    cmp -s snap-q.raw snap-i.raw || fail "convert -l $l differs from qemu-img convert -l"
done

# -p shows progress; -q prints nothing
out=$("$IMGFS" convert -p -O raw base.qcow2 p.raw 2>&1)
grep -q "100.00" <<<"$out" || fail "convert -p: no progress: $out"
rm -f p.raw
out=$("$IMGFS" convert -q -O raw base.qcow2 p.raw 2>&1)
[[ -z $out ]] || fail "convert -q printed: $out"

# --progress=json: one JSON object per line, ending at 100%; SIGUSR1 asks
# for the progress at once (and does not end the program)
rm -f p.raw
"$IMGFS" convert --progress=json -O raw base.qcow2 p.raw >prog.json
python3 - prog.json <<'PY' || fail "convert --progress=json: $(cat prog.json)"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines and lines[-1]["percent"] == 100 and lines[-1]["done"] == lines[-1]["total"], lines
assert all(set(l) == {"done", "total", "percent", "rate", "eta"} for l in lines)
PY
rm -f p.raw
"$IMGFS" convert -p -r 8M -O raw base.qcow2 p.raw >usr1.out &
pid=$!
# Signalled once imgfs runs with its handler (see sigcaught) and the copy
# has begun (its first progress line).
until sigcaught $pid && [[ -s usr1.out ]]; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
kill -USR1 $pid
wait $pid || fail "convert -p: SIGUSR1 ended it (exit $?)"
grep -q "100.00" usr1.out || fail "convert -p after SIGUSR1: $(cat usr1.out)"
cmp -s p.raw src.raw || fail "convert -r 8M: the output differs"

# a failure half way leaves nothing: a compressed cluster in the middle is garbage
cp src-comp.qcow2 broken.qcow2
host=$(qemu-img map --output=json src-comp.qcow2 | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["data"] and e["start"] >= 5 * 1024 * 1024 and "offset" not in e:
        print(e["start"]); break')
[[ -n $host ]] || fail "no compressed run found to damage"
# find the compressed cluster of guest offset 5M through qemu-img's own
# check: overwrite a range of the file after its L2 tables with garbage
python3 - broken.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
hdr = f.read(104)
cluster_bits = struct.unpack(">I", hdr[20:24])[0]
l1_off = struct.unpack(">Q", hdr[40:48])[0]
f.seek(l1_off); l2_off = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
cs = 1 << cluster_bits
idx = (5 << 20) // cs
f.seek(l2_off + 8 * idx); e = struct.unpack(">Q", f.read(8))[0]
assert e & (1 << 62), "not compressed"
x = 62 - (cluster_bits - 8)
host = e & ((1 << x) - 1)
f.seek(host); f.write(b"\xff" * 512)
PY
rm -f fail.raw
out=$("$IMGFS" convert -O raw broken.qcow2 fail.raw 2>&1) && fail "convert of a damaged source succeeded"
# (the driver's warning that it turns the image read-only may come first)
[[ $(wc -l <<<"$out") -le 2 ]] && grep -q "^imgfs: broken.qcow2: compressed cluster" <<<"$(tail -1 <<<"$out")" ||
    fail "convert of a damaged source: not one error line naming the file: $out"
[[ ! -e fail.raw ]] || fail "a failed convert left its output"
ls -a | grep -q "imgfs-tmp" && fail "a failed convert left temporary files: $(ls -a | grep imgfs-tmp)"
out=$("$IMGFS" convert --salvage -O raw broken.qcow2 fail.raw 2>&1) || fail "convert --salvage failed: $out"
grep -qi "error while reading" <<<"$out" || fail "convert --salvage did not warn: $out"

# errors: one line, exit code as qemu-img's
err() { NO_FILE=e.out errs_as_qemu convert "$@"; }
err nowhere.qcow2 e.out
err -m 17 base.qcow2 e.out
err -S 1000 base.qcow2 e.out
err --target-is-zero base.qcow2 e.out
err -O nosuchformat base.qcow2 e.out
err -O qcow2 -o cluster_size=3k base.qcow2 e.out
err -l nosuch snap.qcow2 e.out
err base.qcow2
echo "convert: all cases agree with qemu-img"
