# shellcheck shell=bash
# Shared helpers for the shell tests (interop/ and e2e/). Source it first:
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# Exit codes: 0 pass, 77 skip (ctest SKIP_RETURN_CODE), anything else fail.

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${IMGFS_BUILD:=$(cd "$TESTS_DIR/.." && pwd)/build}"
: "${IMGFS:=$IMGFS_BUILD/mounttool/imgfs}"
export IMGFS IMGFS_BUILD

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# qemu_crypt ARGS...: qemu-img ARGS, where qemu times PBKDF2 (creating a
# LUKS header, adding a key slot, measuring one). That timing gives up now
# and then on these machines ("Unable to get accurate CPU usage", about
# one run in three): such a run is tried again, up to 30 times; any other
# failure fails the test. Prints qemu-img's output.
qemu_crypt() {
    local out try
    for try in $(seq 1 30); do
        out=$(qemu-img "$@" 2>&1) && { [[ -z $out ]] || printf '%s\n' "$out"; return 0; }
        grep -q "accurate CPU usage" <<<"$out" || fail "qemu-img $*: $out"
    done
    fail "qemu-img $*: $out"
}

need_cmd() {
    local c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"; done
}

need_fuse() {
    [[ -e /dev/fuse ]] || skip "/dev/fuse is missing (no FUSE in this environment)"
    [[ -r /dev/fuse && -w /dev/fuse ]] || skip "/dev/fuse is not accessible to uid $(id -u)"
    command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 is not installed"
    [[ $(id -u) -eq 0 ]] || [[ -u $(command -v fusermount3) ]] || skip "fusermount3 is not setuid and we are not root"
}

_IMGFS_MOUNTS=()

_lib_cleanup() {
    local rc=$? m
    set +e
    for m in "${_IMGFS_MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            "$IMGFS" umount "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
        fi
    done
    if [[ -n ${T:-} && -d $T ]]; then
        # Anything still mounted below $T (loop mounts, stray FUSE mounts).
        { grep -o " $T[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
        done
        rm -rf "$T"
    fi
    return "$rc"
}

# tmpdir: sets $T to a fresh directory, cleaned up (and unmounted) on exit.
tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/imgfs-test.XXXXXX")
    trap _lib_cleanup EXIT
}

# mount_imgfs SRC MNT [args...]: mounts and registers the mount for cleanup.
mount_imgfs() {
    local src=$1 mnt=$2
    shift 2
    mkdir -p "$mnt"
    "$IMGFS" mount "$@" "$src" "$mnt" || fail "imgfs mount $src $mnt failed"
    _IMGFS_MOUNTS+=("$mnt")
    mountpoint -q "$mnt" || fail "$mnt is not a mountpoint after imgfs mount returned"
}

umount_imgfs() {
    "$IMGFS" umount "$1" || fail "imgfs umount $1 failed"
}

# The shared corpus of real images, beside the checkout.
# Beside the checkout; a clone made elsewhere (CI's clean clone) falls back
# to the workplace's copy.
if [[ -z ${IMGFS_CORPUS:-} ]]; then
    IMGFS_CORPUS=$(cd "$TESTS_DIR/../.." && pwd)/shared/corpus
    [[ -d $IMGFS_CORPUS || ! -d /work/shared/corpus ]] || IMGFS_CORPUS=/work/shared/corpus
fi
export IMGFS_CORPUS
