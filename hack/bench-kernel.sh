#!/usr/bin/env bash
# bench-kernel.sh - run the kernel benchmarks once each in a guest kernel:
# 10,000 virtual servers x 10 real servers (add, list, and `ipvsadm -R` of the
# same rule set as a baseline), 20,000 ipset members, deleting one backend's
# flows among 100,000 conntrack entries.
#
#   hack/bench-kernel.sh [extra test binary flags]
set -euo pipefail
exec env VM_MEM="${VM_MEM:-2048}" "$(dirname "$0")/test-kernel.sh" -test.run '^$' -test.bench . -test.benchtime 1x -test.benchmem "$@"
