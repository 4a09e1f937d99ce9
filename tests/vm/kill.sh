#!/bin/sh
# Guest script (run by vm/harness via tests/vm/run-kill): SIGKILL of the agent
# during apply on the kernel's LIO. TEST_BIN is the host-built hardening suite,
# shared read-only; the agent binary (stripped) is copied to RAM first. Prints the test's output and
# exits with its status.
set -u
[ -n "${TEST_BIN:-}" ] && [ -x "$TEST_BIN" ] || { echo "kill.sh: TEST_BIN not executable: ${TEST_BIN:-unset}" >&2; exit 2; }
export SBPS_LIO_CONFIGFS=/sys/kernel/config/target
export SBPS_LIO_IMAGES=/tmp
[ -d "$SBPS_LIO_CONFIGFS/core" ] || { echo "kill.sh: no LIO configfs at $SBPS_LIO_CONFIGFS" >&2; exit 2; }
mkdir -p /tmp/bin && cp "$SBPS_AGENT_SHARED" /tmp/bin/sbps-marshal || exit 2
export SBPS_AGENT_BIN=/tmp/bin/sbps-marshal
echo "kill.sh: kernel $(uname -r), $(cat "$SBPS_LIO_CONFIGFS/version" 2>/dev/null)"
start=$(date +%s)
"$TEST_BIN" --ignored --exact kernel_kill::sigkill_mid_apply_on_the_kernel --test-threads=1 --nocapture
rc=$?
echo "kill.sh: test binary exited $rc after $(( $(date +%s) - start ))s"
exit $rc
