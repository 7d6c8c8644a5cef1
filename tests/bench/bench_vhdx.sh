#!/usr/bin/env bash
# The VHDX benchmark: bench_format.sh with FORMAT=vhdx (see there): a 1 GiB
# dynamic disk of data runs and holes, 1 MiB sequential reads, 4 KiB random
# reads at QD1, and 512 MiB written into a fresh disk with the final fsync.
FORMAT=vhdx exec bash "$(dirname "${BASH_SOURCE[0]}")/bench_format.sh" "$@"
