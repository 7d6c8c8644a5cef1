#!/usr/bin/env bash
# kill -9 of the daemon during writes to a dynamic vhdx: after the log's
# replay qemu-img check finds no errors and every fsync'd byte is intact
# (the rounds of test_kill9.sh, on vhdx).
KILL9_FORMAT=vhdx exec bash "$(dirname "${BASH_SOURCE[0]}")/test_kill9.sh"
