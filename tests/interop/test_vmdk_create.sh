#!/usr/bin/env bash
# `imgfs create -f vmdk`, with qemu-img as the judge: every subformat and
# option qemu-img takes makes files qemu-img check finds clean, qemu-img
# info describes as it does its own (every key but the CID), and qemu-io
# writes and reads back; the gold <- dept <- user chain made with imgfs
# alone prints in `imgfs info --backing-chain` what qemu-img prints for it
# (text and JSON); refused options say why and leave no file behind.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp
need_tool "$IMGFS"
tmpdir
mkdir "$T/q" "$T/i"

# same_but_cid QEMU_JSON IMGFS_JSON LABEL
same_but_cid() {
    python3 - "$1" "$2" "$3" <<'PY' || fail "qemu-img info of imgfs's $3 differs from qemu's own"
import json, sys
def norm(x):
    x = dict(x); x.pop("actual-size", None); x["filename"] = x["filename"].split("/")[-1]
    d = x.get("format-specific", {}).get("data", {})
    d.pop("cid", None)
    if d.get("parent-cid", 4294967295) != 4294967295: d["parent-cid"] = "a parent"
    for e in d.get("extents", []): e["filename"] = e["filename"].split("/")[-1]
    return x
q, i = (norm(json.load(open(p))) for p in sys.argv[1:3])
if q != i:
    print("qemu :", q); print("imgfs:", i); sys.exit(1)
PY
}

echo "== every subformat and option"
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized; do
    for o in "" ",zeroed_grain=on" ",adapter_type=lsilogic,hwversion=7" ",adapter_type=buslogic,compat6=on" \
        ",adapter_type=legacyESX,toolsversion=12345"; do
        case $sub$o in *Flat*zeroed*) continue ;; esac
        n=$sub${o//[,=]/_}.vmdk
        (cd "$T/q" && qemu-img create -q -f vmdk -o "subformat=$sub$o" "$n" 2100M) || fail "qemu-img create $n"
        (cd "$T/i" && "$IMGFS" create -q -f vmdk -o "subformat=$sub$o" "$n" 2100M) || fail "imgfs create $n"
        out=$(qemu-img check "$T/i/$n" 2>&1) || fail "qemu-img check of imgfs's $n: $out"
        qemu-img info --output=json "$T/q/$n" >"$T/q.json"
        qemu-img info --output=json "$T/i/$n" >"$T/i.json"
        same_but_cid "$T/q.json" "$T/i.json" "$n"
        ls "$T/q" | grep "^${n%.vmdk}[-.]" >"$T/q.ls" || true
        ls "$T/i" | grep "^${n%.vmdk}[-.]" >"$T/i.ls" || true
        cmp -s "$T/q.ls" "$T/i.ls" || fail "$n: imgfs made files $(tr '\n' ' ' <"$T/i.ls"), qemu-img $(tr '\n' ' ' <"$T/q.ls")"
        if [[ $sub == twoGbMaxExtent* ]]; then  # a text descriptor: the same, line for line, but the CID
            diff <(sed 's/^CID=.*//' "$T/q/$n") <(sed 's/^CID=.*//' "$T/i/$n") >/dev/null ||
                fail "the descriptor of $n differs from qemu-img's beyond the CID"
        fi
        if [[ $sub != streamOptimized ]]; then
            qio "$T/i/$n" vmdk "write -P 0x5a $((2048 * MiB - 3000)) 6000"
            qemu-io -f vmdk -c "read -P 0x5a $((2048 * MiB - 3000)) 6000" "$T/i/$n" | grep -q "verification failed" &&
                fail "$n: qemu reads other bytes than it wrote"
        fi
    done
    echo "   $sub: clean, described as qemu-img's, written and read by qemu"
done

echo "== the gold <- dept <- user chain, made with imgfs only"
cd "$T/i"
"$IMGFS" create -q -f vmdk base_os_gold.vmdk 1G
"$IMGFS" create -q -f vmdk -b base_os_gold.vmdk -F vmdk dept_dev.vmdk
"$IMGFS" create -q -f vmdk -b dept_dev.vmdk -F vmdk user_alice.vmdk
diff <(qemu-img info --backing-chain user_alice.vmdk) <("$IMGFS" info --backing-chain user_alice.vmdk) ||
    fail "imgfs info --backing-chain differs from qemu-img's"
diff <(qemu-img info --output=json --backing-chain user_alice.vmdk) <("$IMGFS" info --output=json --backing-chain user_alice.vmdk) ||
    fail "imgfs info --backing-chain --output=json differs from qemu-img's"
for f in base_os_gold dept_dev user_alice; do
    out=$(qemu-img check "$f.vmdk" 2>&1) || fail "qemu-img check $f.vmdk: $out"
done
"$IMGFS" info user_alice.vmdk 2>&1 >/dev/null | grep -q . && fail "imgfs info warns on a chain it just made"
echo "   info --backing-chain as qemu-img prints it; check clean"

echo "== refusals"
refused() {
    local want=$1
    shift
    if "$IMGFS" create -q -f vmdk "$@" >/dev/null 2>"$T/err"; then fail "imgfs create $* succeeded"; fi
    grep -q "$want" "$T/err" || fail "imgfs create $*: '$(cat "$T/err")' does not say '$want'"
}
refused "Flat image can't have backing file" -o subformat=monolithicFlat -b base_os_gold.vmdk -F vmdk f.vmdk
refused "Unknown subformat" -o subformat=bogus b.vmdk 1M
refused "Unknown adapter type" -o adapter_type=scsi b.vmdk 1M
refused "compat6 cannot be enabled with hwversion set" -o compat6=on,hwversion=7 b.vmdk 1M
qemu-img create -q -f qcow2 q.qcow2 1M
refused "Only vmdk is supported" -b q.qcow2 -F qcow2 b.vmdk
[[ -z $(ls "$T/i" | grep -E '^(f|b)[-.]|imgfs-tmp') ]] || fail "a refused create left files: $(ls "$T/i")"
echo "   refused with qemu-img's reasons; nothing left behind"
echo "PASS: vmdk_create"
