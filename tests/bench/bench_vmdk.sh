#!/usr/bin/env bash
# The VMDK benchmark: bench_format.sh with FORMAT=vmdk (see there).
FORMAT=vmdk exec bash "$(dirname "${BASH_SOURCE[0]}")/bench_format.sh" "$@"
