#!/usr/bin/env bash
# Clang's thread-safety analysis over every source of imagecore, fuse and
# mounttool: which lock guards what (imagecore/include/imagecore/
# thread_annotations.h) is checked by the compiler, and any finding fails.
# Syntax only: the analysis needs no code generation.
#   thread_safety.sh BUILD_DIR   (a configured build: compile_commands.json)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build}
CLANG=${CLANG:-clang++}
command -v "$CLANG" > /dev/null || { echo "thread_safety.sh: $CLANG not found" >&2; exit 1; }
[[ -f $BUILD/compile_commands.json ]] || { echo "thread_safety.sh: no $BUILD/compile_commands.json" >&2; exit 1; }
python3 - "$BUILD/compile_commands.json" "$ROOT" > "$BUILD/tsa-commands" <<'PY'
import json, shlex, sys
db, root = json.load(open(sys.argv[1])), sys.argv[2]
for e in db:
    f = e["file"]
    if not any(f.startswith(root + "/" + d + "/") for d in ("imagecore", "fuse", "mounttool")):
        continue
    args = shlex.split(e["command"]) if "command" in e else e["arguments"]
    keep = [a for a in args[1:] if a.startswith(("-I", "-D", "-std=", "-isystem")) or args[args.index(a) - 1] == "-isystem"]
    print(shlex.join(keep + [f]))
PY
n=$(wc -l < "$BUILD/tsa-commands")
# shellcheck disable=SC2016
xargs -P "$(nproc)" -L 1 -a "$BUILD/tsa-commands" sh -c \
    'exec "$0" -fsyntax-only -Wthread-safety -Werror=thread-safety -ferror-limit=0 -Wno-unknown-warning-option "$@"' "$CLANG"
echo "thread-safety analysis: $n sources, no findings"
