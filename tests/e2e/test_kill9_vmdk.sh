#!/usr/bin/env bash
# kill -9 of the daemon during writes to a sparse vmdk child of a vmdk
# parent: qemu-img check finds no errors and every fsync'd byte is intact
# (the rounds of test_kill9.sh, on vmdk).
KILL9_FORMAT=vmdk exec bash "$(dirname "${BASH_SOURCE[0]}")/test_kill9.sh"
