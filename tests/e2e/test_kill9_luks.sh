#!/usr/bin/env bash
# kill -9 of the daemon during writes to a qcow2 with a LUKS header inside,
# over a base encrypted with another key: qemu-img check (with the keys)
# finds no errors and every fsync'd byte reads back decrypted (the rounds
# of test_kill9.sh).
KILL9_FORMAT=luks exec bash "$(dirname "${BASH_SOURCE[0]}")/test_kill9.sh"
