# shellcheck shell=bash
# Debian packages imgfs needs to build, test and run. Sourced by
# quickstart.sh and test.sh; installs only what is missing (needs root).

IMGFS_BUILD_DEPS=(build-essential cmake pkg-config libfuse3-dev zlib1g-dev libzstd-dev libssl-dev
                  libcli11-dev nlohmann-json3-dev libgtest-dev googletest ccache)
IMGFS_RUN_DEPS=(fuse3)
# clang: the thread-safety analysis (packaging/thread_safety.sh).
IMGFS_TEST_DEPS=(qemu-utils qemu-system-common fio e2fsprogs util-linux python3 kmod attr fdisk strace clang)

install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "imgfs: missing packages: ${missing[*]} (run as root, or install them with apt-get)" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
