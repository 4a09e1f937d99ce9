# Shared by the end-to-end guest scripts (agent.sh, adopt.sh), sourced from
# /vm/files/checks.sh: PASS/FAIL bookkeeping and polling. POSIX sh (busybox ash and
# the host's dash/bash under --host-root). The agent's log is $LOG.
PASS=0 FAIL=0
T0=$(date +%s)

pass() { PASS=$((PASS + 1)); echo "PASS: $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
check() { # check "description" CMD...
  local d=$1; shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}
note() { echo "---- [$(( $(date +%s) - T0 ))s] $*"; }

# wait_for SECS CMD...: poll CMD until it succeeds or SECS of wall time passed
# (vm_wait_until counts polls, which under TCG take far longer than their 50 ms)
wait_for() {
  local end=$(( $(date +%s) + $1 )); shift
  while ! "$@"; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.2
  done
}
# lines of the agent's log matching $1
count() { local n; n=$(grep -c "$1" "$LOG" 2>/dev/null); echo "${n:-0}"; }
ended_more_than() { [ "$(count 'END SCAN')" -gt "$1" ]; }
