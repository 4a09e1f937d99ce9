#!/bin/sh
# Guest script (run by vm/harness --host-root, chrooted into the host's /): the
# rtslib restore compatibility test (tests/lio/restore.rs) against the kernel's
# configfs, with the host's targetctl. Backing files go to /tmp (the chroot's
# tmpfs overlay, writable, and the same root targetctl resolves paths in).
# Prints the test runner's output and exits with its status.
set -u
[ -n "${TEST_BIN:-}" ] && [ -x "$TEST_BIN" ] || { echo "restore.sh: TEST_BIN not executable: ${TEST_BIN:-unset}" >&2; exit 2; }
[ -n "${SBPS_TARGETCTL:-}" ] && [ -x "$SBPS_TARGETCTL" ] || { echo "restore.sh: SBPS_TARGETCTL not executable: ${SBPS_TARGETCTL:-unset}" >&2; exit 2; }
export SBPS_TARGETCTL
export SBPS_LIO_CONFIGFS=/sys/kernel/config/target
export SBPS_LIO_IMAGES=/tmp
[ -d "$SBPS_LIO_CONFIGFS/core" ] || { echo "restore.sh: no LIO configfs at $SBPS_LIO_CONFIGFS" >&2; exit 2; }
echo "restore.sh: kernel $(uname -r), $(cat "$SBPS_LIO_CONFIGFS/version" 2>/dev/null), tool $SBPS_TARGETCTL"
start=$(date +%s)
# --nocapture: the test prints each rtslib call with its time and output.
# shellcheck disable=SC2086  # TEST_ARGS is a list of test-runner arguments
"$TEST_BIN" --test-threads=1 --nocapture ${TEST_ARGS:-}
rc=$?
echo "restore.sh: test binary exited $rc after $(( $(date +%s) - start ))s"
exit $rc
