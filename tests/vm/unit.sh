#!/bin/sh
# Guest script (tests/vm/run-unit, under --host-root): the agent run by systemd
# under packaging/sbps-marshal.service exactly as packaged, plus a drop-in that
# points it at the testbed. Everything the agent reads sits where a CSM worker has
# it (the unit's PrivateTmp hides /tmp): the bucket "mounted" at
# /var/lib/cps-local/boot-images, /root/.ims.s3fs, the spire-agent hard link path,
# /etc/kubernetes/admin.conf. Checks that it still projects (LUNs by WWID through an
# initiator), that the journal has its priorities and fields, the sandbox is in
# force, and a bad setting is not restarted.
set -u
. /vm/lib.sh
. /vm/files/e2e-common.sh
SYSTEMD_PID= INIT=
# systemd's own tools run inside its namespaces (this script is beside them, in a
# chroot, where systemctl refuses most commands).
in_ns() { nsenter -t "$INIT" -m -p -r -w "$@"; }
systemctl() { in_ns systemctl "$@"; }
journalctl() { in_ns journalctl "$@"; }

finish() {
  note "journal of sbps-marshal (tail):"
  journalctl --no-pager -u sbps-marshal -n 40 -o short-monotonic 2>/dev/null | sed 's/^/  | /'
  [ -n "$INIT" ] && kill -KILL "$INIT" 2>/dev/null
  [ -n "${TBPID:-}" ] && kill "$TBPID" 2>/dev/null
  echo "unit.sh: $PASS passed, $FAIL failed ($(( $(date +%s) - T0 ))s)"
  [ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]
  exit $?
}
journal_json() { journalctl --no-pager -u sbps-marshal -o json "$@" 2>/dev/null; }
# jq-free: count entries of `journal_json ARGS` matching a python predicate on e
journal_count() { # journal_count PREDICATE JOURNALCTL-ARGS...
  local pred=$1; shift
  journal_json "$@" | python3 -c "
import json, sys
n = 0
for line in sys.stdin:
    e = json.loads(line)
    if $pred: n += 1
print(n)"
}
ended_scans() { journal_count 'e.get("MESSAGE") == "END SCAN"'; }
scans_more_than() { [ "$(ended_scans)" -gt "$1" ]; }
tpg_enabled() { [ "$(cat "$TPG/enable")" = 1 ]; }
tpg_disabled() { [ "$(cat "$TPG/enable")" = 0 ]; }
lun_count() { ls "$TPG/lun" 2>/dev/null | wc -l; }
find_image() { local w; eval "w=\$WWID_$1"; DEV=$(dev_for_wwid "$w") || { DEV=; return 1; }; }
read_name() {
  local m=/tmp/m.$1 out
  mkdir -p "$m"
  mount -t squashfs -o ro "$DEV" "$m" 2>/dev/null || { echo "<mount failed>"; return 1; }
  out=$(cat "$m/NAME"); umount "$m"; echo "$out"
}
set_ims() {
  local first=1 x
  { echo '['
    for x in "$@"; do [ $first = 1 ] || echo ','; first=0; cat "$TB/rec/${x%%:*}.${x#*:}.json"; done
    echo ']'; } >"$TB/ims.json.tmp" && mv "$TB/ims.json.tmp" "$TB/ims.json"
}

# ---------------------------------------------------------------- the deployment layout
note "setup: kernel $(uname -r), $(/lib/systemd/systemd --version | head -n1)"
MNT=/var/lib/cps-local/boot-images
mkdir -p /var/lib/cps-local
setup_fixtures || { echo "cannot copy the fixtures"; exit 3; }
set_ims A:tagged B:tagged C:untagged G:tagged
echo '{"iscsi": "sbps"}' >"$TB/node-labels.json"
echo 500 >"$TB/faults/manifest-$ID_G"          # G: unknown (a warning with its IMAGE_ID)
mkdir -p "$TPG/np/127.0.0.1:3260" || { echo "cannot create the target"; exit 3; }
echo 0 >"$TPG/attrib/authentication"
echo 1 >"$TPG/attrib/generate_node_acls"
echo 1 >"$TPG/attrib/demo_mode_write_protect"
echo 1 >"$TPG/attrib/cache_dynamic_acls"
start_testbed /etc/target/saveconfig.json || { echo "testbed did not start"; exit 3; }
install -D -m 0755 "$BIN/sbps-marshal" /usr/bin/sbps-marshal
install -D -m 0600 "$TB/s3.creds" /root/.ims.s3fs
install -D -m 0755 "$TB/spire-agent" /opt/cray/cray-spire/sbps-marshal-spire-agent
install -D -m 0600 "$TB/kubeconfig.run" /etc/kubernetes/admin.conf
mkdir -p /etc/target /etc/systemd/system/sbps-marshal.service.d
install -m 0644 /e2e/sbps-marshal.service /etc/systemd/system/sbps-marshal.service
cat >/etc/systemd/system/sbps-marshal.service.d/10-testbed.conf <<CONF
[Service]
Environment=SBPS_MARSHAL_S3_PROTO=http SBPS_MARSHAL_S3_HOST=$SBPS_MARSHAL_S3_HOST
Environment=SBPS_MARSHAL_API_GATEWAY=$SBPS_MARSHAL_API_GATEWAY
Environment=SBPS_MARSHAL_NODE_NAME=$NODE SBPS_MARSHAL_TARGET_SERVICE= SBPS_MARSHAL_SCAN_FREQUENCY=3600
Environment=SSL_CERT_FILE=/e2e/ca.pem
CONF
cat >/etc/systemd/system/sbps-vm.target <<'UNIT'
[Unit]
Description=sbps-marshal under its unit (test VM)
Wants=systemd-journald.service sbps-marshal.service
UNIT
# No SBPS_MARSHAL_* of start_testbed may leak into the agent: systemd starts clean.
for v in $(env | sed -n 's/^\(SBPS_MARSHAL_[A-Z_0-9]*\)=.*/\1/p'); do unset "$v"; done

note "booting systemd as PID 1 of a PID namespace"
unshare --pid --fork --mount-proc env -i container=sbps-vm PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --unit=sbps-vm.target --log-target=console >/tmp/systemd.log 2>&1 &
SYSTEMD_PID=$!
init_pid() { INIT=$(pgrep -P "$SYSTEMD_PID" -x systemd) && [ -n "$INIT" ]; }
wait_for 30 init_pid || { fail "systemd did not start"; sed 's/^/  systemd| /' /tmp/systemd.log | tail -n 40; finish; }
if ! wait_for 240 systemctl is-active --quiet sbps-marshal.service; then
  fail "sbps-marshal.service did not become active"
  sed 's/^/  systemd| /' /tmp/systemd.log | tail -n 40
  systemctl status --no-pager sbps-marshal.service 2>&1 | sed 's/^/  | /'
  finish
fi
pass "systemd started sbps-marshal.service (Type=notify: READY received)"
wait_for 180 scans_more_than 0 || { fail "no END SCAN in the journal within 180s"; finish; }

# ---------------------------------------------------------------- the sandbox is in force
PID=$(pidof sbps-marshal)
check "the agent runs with no_new_privs" grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$PID/status"
check "the agent runs under a seccomp filter" grep -q '^Seccomp:[[:space:]]*2' "/proc/$PID/status"
check "the agent has its own mount namespace" [ "$(readlink "/proc/$PID/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]
# /proc/PID/root: the file system as the agent sees it (its mounts, its root)
check "/usr is read-only for the agent (ProtectSystem=strict)" sh -c "! touch /proc/$PID/root/usr/sbps-probe 2>/dev/null"
check "/etc/target is writable for the agent (ReadWritePaths)" sh -c "touch /proc/$PID/root/etc/target/probe && rm /proc/$PID/root/etc/target/probe"
check "/root is read-only for the agent (ProtectHome=read-only)" sh -c "! touch /proc/$PID/root/root/sbps-probe 2>/dev/null"
check "/tmp is the agent's own (PrivateTmp)" [ ! -e "/proc/$PID/root$TB/ims.json" ]
check "the state directory is the unit's StateDirectory (0700)" [ "$(stat -c %a /var/lib/sbps-marshal)" = 700 ]
note "exposure: $(in_ns systemd-analyze security sbps-marshal.service 2>/dev/null | tail -n1)"

# ---------------------------------------------------------------- the journal
check "journalctl -p warning: G's unknown manifest at priority 4 with IMAGE_ID and RULE" \
  [ "$(journal_count "e['PRIORITY'] == '4' and e.get('IMAGE_ID') == '$ID_G' and 'RULE' in e" -p warning)" -ge 1 ]
check "journalctl -p warning holds no info line" \
  [ "$(journal_count "e['PRIORITY'] not in ('0','1','2','3','4')" -p warning)" = 0 ]
check "START SCAN is a message of its own, priority 6" \
  [ "$(journal_count "e['MESSAGE'] == 'START SCAN' and e['PRIORITY'] == '6'")" -ge 1 ]
check "the start line names version and revision" \
  [ "$(journal_count "'VERSION' in e and 'REVISION' in e and 'starting' in e['MESSAGE']")" = 1 ]

# ---------------------------------------------------------------- G withdrawn: the map is whole
# While G is unknown and not exported the TPG stays closed (the first enable waits for
# a whole map); withdrawn from IMS, the next scan (systemctl reload = SIGHUP) opens it.
check "G unknown and not exported: the TPG stays disabled" tpg_disabled
set_ims A:tagged B:tagged C:untagged
n=$(ended_scans)
systemctl reload sbps-marshal.service
wait_for 120 scans_more_than "$n" || fail "no scan after the reload"

# ---------------------------------------------------------------- it still projects
check "TPG enabled after a converged scan" wait_for 30 tpg_enabled
check "4 LUNs in configfs (A, B, P1, P2; got $(lun_count))" [ "$(lun_count)" = 4 ]
check "saveconfig.json written under /etc/target" [ -s /etc/target/saveconfig.json ]
check "ledger in the state directory" [ -s /var/lib/sbps-marshal/ledger.json ]
start_iscsid
iscsi_login "$IQN" || fail "initiator login"
for l in A B P1 P2; do
  if find_image "$l"; then
    eval "want=\$NAME_$l"
    check "image $l found by WWID ($DEV), content right" [ "$(read_name "$l")" = "$want" ]
  else
    fail "image $l: no device with its WWID"
  fi
done

check "journalctl OP=map-lun: 4 entries with LUN and SERIAL, priority 6" \
  [ "$(journal_count "e['PRIORITY'] == '6' and 'LUN' in e and 'SERIAL' in e" OP=map-lun)" = 4 ]

# ---------------------------------------------------------------- reload, then a bad setting
n=$(ended_scans)
systemctl reload sbps-marshal.service
check "systemctl reload: a scan at once" wait_for 120 scans_more_than "$n"

printf '[Service]\nEnvironment=SBPS_MARSHAL_SCAN_FREQUENCY=abc\n' >/etc/systemd/system/sbps-marshal.service.d/20-bad.conf
systemctl daemon-reload
systemctl restart sbps-marshal.service 2>/dev/null
gone() { [ "$(systemctl show -p ActiveState --value sbps-marshal.service)" = failed ]; }
wait_for 120 gone
check "a bad setting: exit status 2, unit failed" [ "$(systemctl show -p ExecMainStatus --value sbps-marshal.service)" = 2 ]
sleep 35                                        # past RestartSec=30s
not_restarted() {
  [ "$(systemctl show -p NRestarts --value sbps-marshal.service)" = 0 ] &&
    [ "$(systemctl show -p ActiveState --value sbps-marshal.service)" = failed ]
}
check "... and not restarted (RestartPreventExitStatus=2)" not_restarted
check "... one error entry naming the key" \
  [ "$(journal_count "e['PRIORITY'] == '3' and 'SBPS_MARSHAL_SCAN_FREQUENCY' in e['MESSAGE']")" = 1 ]
iscsi_logout >/dev/null 2>&1
finish
