#!/bin/sh
# Guest script (run by vm/harness): the LIO contract suite against the real
# kernel's configfs. TEST_BIN is the host-built test binary, shared read-only.
# Prints the test runner's output (its summary line reaches CI's log) and exits
# with its status.
set -u
[ -n "${TEST_BIN:-}" ] && [ -x "$TEST_BIN" ] || { echo "contract.sh: TEST_BIN not executable: ${TEST_BIN:-unset}" >&2; exit 2; }
export SBPS_LIO_CONFIGFS=/sys/kernel/config/target
export SBPS_LIO_IMAGES=/tmp
[ -d "$SBPS_LIO_CONFIGFS/core" ] || { echo "contract.sh: no LIO configfs at $SBPS_LIO_CONFIGFS" >&2; exit 2; }
echo "contract.sh: kernel $(uname -r), $(cat "$SBPS_LIO_CONFIGFS/version" 2>/dev/null)"
start=$(date +%s)
# shellcheck disable=SC2086  # TEST_ARGS is a list of test-runner arguments
"$TEST_BIN" --test-threads=1 ${TEST_ARGS:-}
rc=$?
echo "contract.sh: test binary exited $rc after $(( $(date +%s) - start ))s"
exit $rc
