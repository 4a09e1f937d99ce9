#!/bin/sh
# Guest script (run by vm/harness --host-root, chrooted into the host's /): the
# targetcli backend's contract (tests/lio/targetcli.rs), the stand-in tests and the
# one that needs the real targetcli-fb and the kernel's configfs. Backing files go
# to /tmp (the chroot's tmpfs overlay, writable, and where targetcli resolves paths).
# Prints the test runner's output and exits with its status.
set -u
[ -n "${TEST_BIN:-}" ] && [ -x "$TEST_BIN" ] || { echo "targetcli.sh: TEST_BIN not executable: ${TEST_BIN:-unset}" >&2; exit 2; }
[ -n "${SBPS_TARGETCLI:-}" ] && [ -x "$SBPS_TARGETCLI" ] || { echo "targetcli.sh: SBPS_TARGETCLI not executable: ${SBPS_TARGETCLI:-unset}" >&2; exit 2; }
export SBPS_TARGETCLI
export SBPS_LIO_CONFIGFS=/sys/kernel/config/target
export SBPS_LIO_IMAGES=/tmp
[ -d "$SBPS_LIO_CONFIGFS/core" ] || { echo "targetcli.sh: no LIO configfs at $SBPS_LIO_CONFIGFS" >&2; exit 2; }
echo "targetcli.sh: kernel $(uname -r), $(cat "$SBPS_LIO_CONFIGFS/version" 2>/dev/null), $("$SBPS_TARGETCLI" --version 2>&1)"
start=$(date +%s)
# shellcheck disable=SC2086  # TEST_ARGS is a list of test-runner arguments
"$TEST_BIN" --include-ignored --test-threads=1 --nocapture ${TEST_ARGS:-}
rc=$?
echo "targetcli.sh: test binary exited $rc after $(( $(date +%s) - start ))s"
exit $rc
