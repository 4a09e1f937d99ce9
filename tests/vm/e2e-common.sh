# Shared by the end-to-end guest scripts (agent.sh, adopt.sh), sourced from
# /vm/files/e2e-common.sh: the layout in the guest, PASS/FAIL bookkeeping, polling,
# the testbed's doubles and the agent's settings. POSIX sh (busybox ash, and the
# host's dash/bash under --host-root).

E=${E2E_DIR:-/e2e}               # shared read-only: bin/, tb/
BIN=/tmp/bin                     # a copy in RAM of $E/bin
TB=/tmp/tb                       # testbed dir (writable copy: tests edit ims.json, faults/)
MNT=/tmp/mnt                     # the agent's "s3fs mount": a writable copy of the bucket
NODE=e2e-node
IQN=iqn.2023-06.csm.iscsi:$NODE
CFS=/sys/kernel/config/target
TPG=$CFS/iscsi/$IQN/tpgt_1
LOG=/tmp/agent.log
METRICS=127.0.0.1:9180

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

# Copies the binaries and fixtures to RAM and sources the fixtures' ids, WWIDs and
# names; then a writable copy of the bucket is the mount.
setup_fixtures() {
  cp -a "$E/tb" "$TB" && cp -a "$E/bin" "$BIN" || return 1
  . "$TB/ids.env"; . "$TB/wwids.env"
  [ -f "$TB/names.env" ] && . "$TB/names.env"
  cp -a "$TB/bucket" "$MNT"
}

# Starts the testbed's S3, IMS and Kubernetes doubles (TBPID), waits for their
# ports, and exports the agent's settings for them; LIO_SAVE_FILE is $1.
start_testbed() {
  local s3p imsp k8sp
  "$BIN/testbed" serve "$TB" --node "$NODE" --ports-file "$TB/ports" >/tmp/testbed.log 2>&1 &
  TBPID=$!
  wait_for 60 test -s "$TB/ports" || { cat /tmp/testbed.log; return 1; }
  s3p=$(sed 's/.*s3=\([0-9]*\).*/\1/' "$TB/ports")
  imsp=$(sed 's/.*ims=\([0-9]*\).*/\1/' "$TB/ports")
  k8sp=$(sed 's/.*k8s=\([0-9]*\).*/\1/' "$TB/ports")
  note "testbed: $(cat "$TB/ports")"
  mkdir -p /tmp/state "$(dirname "$1")" && chmod 700 /tmp/state
  export SBPS_MARSHAL_S3_PROTO=http SBPS_MARSHAL_S3_HOST=127.0.0.1:$s3p \
    SBPS_MARSHAL_S3_CREDENTIAL_FILE=$TB/s3.creds \
    SBPS_MARSHAL_API_GATEWAY=http://127.0.0.1:$imsp \
    SBPS_MARSHAL_SPIRE_AGENT_PATH=$TB/spire-agent \
    SBPS_MARSHAL_KUBECONFIG=$TB/kubeconfig.run SBPS_MARSHAL_NODE_NAME=$NODE \
    SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=$MNT \
    SBPS_MARSHAL_STATE_DIR=/tmp/state SBPS_MARSHAL_LOCK_FILE=/tmp/sbps-marshal.lock \
    SBPS_MARSHAL_LIO_SAVE_FILE=$1 SBPS_MARSHAL_RTSLIB_LOCK_DIR=/run \
    SBPS_MARSHAL_METRICS_LISTEN=$METRICS SBPS_MARSHAL_SCAN_FREQUENCY=3600 \
    SBPS_MARSHAL_TARGET_SERVICE= SBPS_MARSHAL_XNAME_FILE=/tmp/no-xname
}
