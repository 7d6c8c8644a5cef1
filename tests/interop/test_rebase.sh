#!/usr/bin/env bash
# `imgfs rebase` against `qemu-img rebase` on the same inputs: the disk
# reads as before (qemu-img compare with a raw copy made first), qemu-img
# check is clean, the image holds exactly the clusters qemu-img's rebase
# leaves in it, the new reference is what qemu-img info shows, and errors
# and exit codes match. Then what qemu-img cannot do: the vmdk merge.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

# allocated FILE: the runs the image itself holds (depth 0), as qemu-img
# map sees them. Whether a run of zeros is held as data or as a zero
# cluster is left out: imgfs always writes zeros as zeros, qemu-img only
# past the end of the old backing file.
allocated() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    if e["depth"] == 0 and e["present"]:
        if runs and runs[-1][0] + runs[-1][1] == e["start"]:
            runs[-1][1] += e["length"]
        else:
            runs.append([e["start"], e["length"]])
for s, n in runs:
    print(s, n)'
}
backing_of() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
i = json.load(sys.stdin)
print(i.get("backing-filename", "-"), i.get("backing-filename-format", "-"))'
}
# reads_as IMG RAW: the disk's content is RAW's
reads_as() {
    qemu-img compare -q "$1" "$2" || fail "$1 does not read as $2 after rebase"
}
checked() {
    qemu-img check -q "$1" || fail "qemu-img check $1 after imgfs rebase failed"
}
# both NAME ARGS...: run qemu-img rebase on q-NAME and imgfs rebase on
# i-NAME (copies of NAME); same exit code, same reference, same clusters.
both() {
    local name=$1 qe ie
    shift
    cp "$name" "q-$name"
    cp "$name" "i-$name"
    qemu-img rebase "$@" "q-$name" && qe=0 || qe=$?
    "$IMGFS" rebase "$@" "i-$name" && ie=0 || ie=$?
    [[ $qe == "$ie" ]] || fail "rebase $* $name: exit $ie, qemu-img $qe"
    [[ $(backing_of "i-$name") == "$(backing_of "q-$name")" ]] ||
        fail "rebase $* $name: backing $(backing_of "i-$name"), qemu-img $(backing_of "q-$name")"
    [[ $(allocated "i-$name") == "$(allocated "q-$name")" ]] || {
        diff <(allocated "q-$name") <(allocated "i-$name") | head || true
        fail "rebase $* $name: clusters held differ from qemu-img's"
    }
    checked "i-$name"
}

# --- the base + diff workflow: diff ends up with only what differs
qcreate -f qcow2 base.qcow2 8M
qio base.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 5M 1M"
qemu-img convert -O qcow2 base.qcow2 modified.qcow2
qio modified.qcow2 qcow2 "write -P 7 64k 4k" "write -P 8 2M 1M" "write -z 5M 64k" "write -P 9 7M 512" "discard 1M 64k"
qcreate -f qcow2 -b modified.qcow2 -F qcow2 diff.qcow2
qemu-img convert -O raw modified.qcow2 modified.raw
both diff.qcow2 -b base.qcow2 -F qcow2
reads_as i-diff.qcow2 modified.raw
[[ $(allocated i-diff.qcow2 | wc -l) -ge 4 ]] || fail "base + diff: diff.qcow2 holds too little: $(allocated i-diff.qcow2)"

# --- a three-layer chain: drop the middle layer (shared bottom), and
# flatten, and a new backing file that is shorter than the image
qcreate -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 12M
qio mid.qcow2 qcow2 "write -P 3 1M 1M" "write -P 4 9M 64k"
qcreate -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qio top.qcow2 qcow2 "write -P 5 1M 64k" "write -P 6 10M 4k"
qemu-img convert -O raw top.qcow2 top.raw
both top.qcow2 -b base.qcow2 -F qcow2
reads_as i-top.qcow2 top.raw
both top.qcow2 -b ""
reads_as i-top.qcow2 top.raw
qcreate -f qcow2 short.qcow2 2M
qio short.qcow2 qcow2 "write -P 1 0 2M"
both top.qcow2 -b short.qcow2 -F qcow2
reads_as i-top.qcow2 top.raw

# --- an image without backing file gets one: zeros over its data are written
qcreate -f qcow2 lone.qcow2 8M
qio lone.qcow2 qcow2 "write -P 5 4M 64k"
qemu-img convert -O raw lone.qcow2 lone.raw
both lone.qcow2 -b base.qcow2 -F qcow2
reads_as i-lone.qcow2 lone.raw

# --- extended L2 (subclusters) and a 4 KiB-cluster image
qcreate -f qcow2 -o extended_l2=on,cluster_size=128k el2.qcow2 -b base.qcow2 -F qcow2
qio el2.qcow2 qcow2 "write -P 5 8k 8k"
qemu-img convert -O raw el2.qcow2 el2.raw
"$IMGFS" rebase -b "" el2.qcow2
reads_as el2.qcow2 el2.raw
checked el2.qcow2
qcreate -f qcow2 -o cluster_size=4k small-cl.qcow2 -b modified.qcow2 -F qcow2
both small-cl.qcow2 -b base.qcow2 -F qcow2
reads_as i-small-cl.qcow2 modified.raw

# --- unsafe: only the reference; a backing file that does not exist is fine
both diff.qcow2 -u -b base.qcow2 -F qcow2
cp diff.qcow2 q-diff.qcow2 && qemu-img rebase -u -b nowhere.qcow2 -F qcow2 q-diff.qcow2
cp diff.qcow2 i-diff.qcow2 && "$IMGFS" rebase -u -b nowhere.qcow2 -F qcow2 i-diff.qcow2
[[ $(backing_of i-diff.qcow2) == "nowhere.qcow2 qcow2" ]] || fail "rebase -u to a missing file: $(backing_of i-diff.qcow2)"
cmp -n 104 i-diff.qcow2 q-diff.qcow2 || fail "rebase -u to a missing file: the header fields differ from qemu-img's"
both diff.qcow2 -u

# --- a relative name is stored as given and resolved against the image's directory
mkdir -p sub
cp diff.qcow2 sub/d.qcow2
"$IMGFS" rebase -u -b ../modified.qcow2 -F qcow2 sub/d.qcow2
[[ $(backing_of sub/d.qcow2) == "../modified.qcow2 qcow2" ]] || fail "relative name not stored as given: $(backing_of sub/d.qcow2)"
"$IMGFS" rebase -b ../base.qcow2 -F qcow2 sub/d.qcow2
reads_as sub/d.qcow2 modified.raw

# --- -p prints progress, -q nothing
cp diff.qcow2 p.qcow2
out=$("$IMGFS" rebase -p -b base.qcow2 -F qcow2 p.qcow2 2>&1)
grep -q '100.00' <<<"$out" || fail "rebase -p printed no progress: $out"
cp diff.qcow2 p.qcow2
out=$("$IMGFS" rebase -q -b base.qcow2 -F qcow2 p.qcow2 2>&1)
[[ -z $out ]] || fail "rebase -q printed: $out"

# --- errors: one line, exit code as qemu-img's
err() {  # err EXPECTED_TEXT ARGS...
    local want=$1 out rc qrc
    shift
    cp diff.qcow2 e.qcow2
    qemu-img rebase "$@" >/dev/null 2>&1 && qrc=0 || qrc=$?
    cp diff.qcow2 e.qcow2
    out=$("$IMGFS" rebase "$@" 2>&1) && rc=0 || rc=$?
    [[ $rc == "$qrc" && $rc != 0 ]] || fail "rebase $*: exit $rc, qemu-img $qrc"
    [[ $(wc -l <<<"$out") == 1 ]] || fail "rebase $*: not one line: $out"
    grep -qF -- "$want" <<<"$out" || fail "rebase $*: '$out' does not say '$want'"
}
err "Must specify backing file (-b)" e.qcow2
err "backing format must be specified" -b base.qcow2 e.qcow2
err "Could not open new backing file 'nowhere.qcow2'" -b nowhere.qcow2 -F qcow2 e.qcow2
err "nowhere.qcow2" -b base.qcow2 -F qcow2 nowhere.qcow2
qcreate -f raw r.raw 1M
err "Could not change the backing file to 'base.qcow2'" -f raw -b base.qcow2 -F qcow2 r.raw
err "e.qcow2" -b e.qcow2 -F qcow2 e.qcow2
cmp -s e.qcow2 diff.qcow2 || fail "a refused rebase changed the image"

# --- vmdk: the merge qemu-img 7.2 gives up on (it copies, then cannot
# change the parent); imgfs finishes it
qcreate -f vmdk disk-a.vmdk 8M
qio disk-a.vmdk vmdk "write -P 1 0 4M"
qcreate -f vmdk -b disk-a.vmdk -F vmdk disk-b.vmdk
qio disk-b.vmdk vmdk "write -P 2 1M 1M" "write -P 3 6M 64k"
qcreate -f vmdk -b disk-b.vmdk -F vmdk disk-c.vmdk
qio disk-c.vmdk vmdk "write -P 4 1M 4k"
qemu-img convert -O raw disk-c.vmdk disk-c.raw
cp disk-c.vmdk q-disk-c.vmdk
out=$(qemu-img rebase -f vmdk -b disk-a.vmdk -F vmdk q-disk-c.vmdk 2>&1) &&
    fail "qemu-img rebase of a vmdk succeeded: the test no longer shows what qemu-img cannot do" || true
grep -q "Operation not supported" <<<"$out" || fail "qemu-img rebase of a vmdk: $out"
"$IMGFS" rebase -f vmdk -b disk-a.vmdk -F vmdk disk-c.vmdk
checked disk-c.vmdk
reads_as disk-c.vmdk disk-c.raw
[[ $(backing_of disk-c.vmdk) == "disk-a.vmdk -" || $(backing_of disk-c.vmdk) == "disk-a.vmdk vmdk" ]] ||
    fail "vmdk rebase: qemu-img sees backing $(backing_of disk-c.vmdk)"
cid_a=$(grep -a '^CID=' disk-a.vmdk | head -1 | cut -d= -f2)
pcid_c=$(grep -a '^parentCID=' disk-c.vmdk | head -1 | cut -d= -f2)
# hex numbers (qemu writes a CID without leading zeros, imgfs with them)
[[ -n $cid_a && -n $pcid_c ]] && (( 16#$cid_a == 16#$pcid_c )) || fail "vmdk rebase: parentCID $pcid_c, disk-a's CID $cid_a"
"$IMGFS" info disk-c.vmdk >/dev/null || fail "imgfs info after the vmdk rebase failed"
# and flattening a vmdk: no parent left, reads the same
"$IMGFS" rebase -f vmdk -b "" disk-c.vmdk
checked disk-c.vmdk
reads_as disk-c.vmdk disk-c.raw
[[ $(backing_of disk-c.vmdk) == "- -" ]] || fail "vmdk flatten: backing $(backing_of disk-c.vmdk)"
# a qcow2 overlay on a vmdk moved to another vmdk parent
qcreate -f qcow2 -b disk-b.vmdk -F vmdk over.qcow2
qio over.qcow2 qcow2 "write -P 5 7M 4k"
qemu-img convert -O raw over.qcow2 over.raw
both over.qcow2 -b disk-a.vmdk -F vmdk
reads_as i-over.qcow2 over.raw
# -c (qemu-img 7.2 has none; later ones do): the clusters copied land
# compressed, the same clusters as without -c, and the disk reads the same.
clusters() {  # IMG: "compressed allocated"
    qemu-img check --output=json "$1" | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j.get("corruptions", 0) + j.get("leaks", 0) == 0, "not clean"
print(j.get("compressed-clusters", 0), j.get("allocated-clusters", 0))'
}
qcreate -f qcow2 cbase.qcow2 8M
qio cbase.qcow2 qcow2 "write -P 1 0 8M"
qcreate -f qcow2 -b cbase.qcow2 -F qcow2 cmid.qcow2
qio cmid.qcow2 qcow2 "write -P 2 1M 1M" "write -P 3 6M 100k"
qcreate -f qcow2 -b cmid.qcow2 -F qcow2 ctop.qcow2
qio ctop.qcow2 qcow2 "write -P 4 1M 64k"
qemu-img convert -O raw ctop.qcow2 ctop.raw
cp ctop.qcow2 plain.qcow2
"$IMGFS" rebase -b cbase.qcow2 -F qcow2 plain.qcow2
"$IMGFS" rebase -c -b cbase.qcow2 -F qcow2 ctop.qcow2 || fail "rebase -c failed"
checked ctop.qcow2
reads_as ctop.qcow2 ctop.raw
read -r comp alloc <<<"$(clusters ctop.qcow2)"
read -r pcomp palloc <<<"$(clusters plain.qcow2)"
[[ $alloc == "$palloc" && $pcomp == 0 ]] || fail "rebase -c: $alloc clusters, without -c $palloc ($pcomp compressed)"
(( comp == alloc - 1 )) || fail "rebase -c: $comp of $alloc clusters compressed (all but the one the image held)"
qio ctop.qcow2 qcow2 "write -P 5 1M 8k" "write -P 6 1200k 4k"
checked ctop.qcow2
echo "   rebase -c: $comp of $alloc clusters compressed"
qcreate -f raw craw.raw 1M
errs_as_qemu rebase -c -f raw -b cbase.qcow2 -F qcow2 craw.raw
echo "rebase: all cases agree with qemu-img"
