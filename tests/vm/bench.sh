#!/bin/sh
# Guest script (run by vm/harness): the configfs backend benchmark (examples/lio_bench.rs).
set -u
[ -x "${BENCH_BIN:-}" ] || { echo "bench.sh: BENCH_BIN not executable" >&2; exit 2; }
export SBPS_LIO_CONFIGFS=/sys/kernel/config/target
# shellcheck disable=SC2086
"$BENCH_BIN" ${BENCH_ARGS:-500 1 8}
