#!/usr/bin/env bash
# -p and --progress=json on check, amend and dd (qemu-img has -p on amend
# only): plain percent lines ending at 100, JSON objects whose done grows
# to total; what the subcommand prints besides is unchanged (check's
# report equals qemu-img check's), and so is what it does.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

qcreate -f qcow2 -o cluster_size=4k a.qcow2 1G
qio a.qcow2 qcow2 "write -P 1 0 20M" "write -z 300M 10M" "write -P 2 900M 1M"
# json_ok FILE: one object per line, done never falls, the last done == total
json_ok() {
    python3 - "$1" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert len(lines) >= 2, "fewer than two progress objects"
done = [l["done"] for l in lines]
assert done == sorted(done), "done went back"
assert lines[-1]["done"] == lines[-1]["total"], "did not end at total"
assert lines[0]["done"] < lines[0]["total"], "the first update was already the end"
EOF
}
plain_ok() {  # FILE: percent lines, rising, the last one 100
    grep -E '^    \([0-9.]+/100%\)$' "$1" | sed 's/^    (\([0-9.]*\).*/\1/' > pct.txt
    [[ $(wc -l <pct.txt) -ge 2 ]] || fail "$2: fewer than two progress lines"
    sort -n -c pct.txt || fail "$2: progress went back"
    [[ $(tail -1 pct.txt) == 100.00 ]] || fail "$2: progress did not end at 100"
}

"$IMGFS" check -p a.qcow2 > out.txt || fail "check -p"
plain_ok out.txt "check -p"
diff <(grep -v '/100%)$' out.txt) <(qemu-img check a.qcow2) || fail "check -p: the report differs from qemu-img check's"
"$IMGFS" check --progress=json a.qcow2 > out.txt || fail "check --progress=json"
json_ok out.txt || fail "check --progress=json: $(head -3 out.txt)"

cp a.qcow2 b.qcow2
"$IMGFS" amend -p -o compat=0.10 b.qcow2 > out.txt || fail "amend -p"
plain_ok out.txt "amend -p"
qcheck b.qcow2 "amend -p"
qemu-img compare -q a.qcow2 b.qcow2 || fail "amend -p changed the disk"
cp a.qcow2 b.qcow2
"$IMGFS" amend --progress=json -o refcount_bits=8 b.qcow2 > out.txt || fail "amend --progress=json"
json_ok out.txt || fail "amend --progress=json: $(head -3 out.txt)"
qcheck b.qcow2 "amend --progress=json"

"$IMGFS" dd -p bs=1M count=950 if=a.qcow2 of=d.raw > out.txt || fail "dd -p"
plain_ok out.txt "dd -p"
qemu-img dd bs=1M count=950 if=a.qcow2 of=q.raw
cmp d.raw q.raw || fail "dd -p wrote other bytes than qemu-img dd"
rm -f d.raw
"$IMGFS" dd --progress=json bs=1M count=950 if=a.qcow2 of=d.raw > out.txt || fail "dd --progress=json"
json_ok out.txt || fail "dd --progress=json: $(head -3 out.txt)"
echo "PASS: progress of check, amend and dd"
