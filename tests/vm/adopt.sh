#!/usr/bin/env bash
# Guest script (run by vm/harness --host-root via tests/vm/run-adopt): adoption of a
# target the original agent built. targetcli-fb (rtslib, as on CSM) sets the scene
# with the commands CSM's provisioning script and the original agent run; an
# initiator logs in and mounts an image; then the sbps-marshal daemon starts on it.
# It must change nothing: the same LUN numbers, serials, backstores and aliases in
# configfs, no operation applied, the initiator's session and mounted filesystem
# undisturbed, every image still found by WWID at the LUN targetcli gave it.
#
# Shared at /e2e: bin/{sbps-marshal,testbed}, tb/ (fixtures of `testbed make-fixtures`
# plus wwids.env and names.env computed on the host with python3).
# Prints PASS/FAIL per check and "adopt.sh: N passed, M failed"; exits 0 only when
# nothing failed.
set -u
. /vm/lib.sh

. /vm/files/e2e-common.sh
finish() {
  note "agent log tail:"; tail -n 30 "$LOG" 2>/dev/null | sed 's/^/  | /'
  [ -n "${AGENT:-}" ] && kill -TERM "$AGENT" 2>/dev/null
  [ -n "${TBPID:-}" ] && kill "$TBPID" 2>/dev/null
  mountpoint -q /tmp/m.A 2>/dev/null && umount /tmp/m.A
  echo "adopt.sh: $PASS passed, $FAIL failed ($(( $(date +%s) - T0 ))s)"
  [ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]
  exit $?
}
metrics() { python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "http://$METRICS/metrics"; }

# Everything the kernel holds for the target and the fileio backstores, one line per
# fact, sorted: LUN -> backstore (with its alias), and each backstore's file, size,
# serial, enable and write-cache mode. Equal snapshots = nothing changed.
snapshot() {
  local l a so
  echo "tpg enable=$(cat "$TPG/enable")"
  for l in "$TPG"/lun/lun_*; do
    for a in "$l"/*; do
      [ -L "$a" ] && echo "$(basename "$l") $(basename "$a") -> $(readlink -f "$a" | sed "s|^$CFS/||")"
    done
  done
  for so in "$CFS"/core/fileio_*/*/; do
    [ -f "$so/udev_path" ] || continue
    echo "${so#"$CFS"/} file=$(cat "$so/udev_path") serial=$(sed 's/.*: //' "$so/wwn/vpd_unit_serial")" \
      "enable=$(cat "$so/enable") wce=$(cat "$so/attrib/emulate_write_cache") $(tr '\n' ' ' <"$so/info" | tr -s ' ')"
  done
}
session_id() { _vm_g iscsiadm -m session 2>/dev/null | sed -n 's/.*\[\([0-9]*\)\].*/\1/p' | head -n1; }

# ---------------------------------------------------------------- the scene
note "setup: kernel $(uname -r), $(targetcli version 2>&1 | tail -n1)"
setup_fixtures || { echo "cannot copy the fixtures"; exit 3; }
# The inventory: A, B tagged, C untagged, and the two PE files: the original
# projects A, B, P1, P2.
{ echo '['; cat "$TB/rec/A.tagged.json"; echo ','; cat "$TB/rec/B.tagged.json"; echo ',';
  cat "$TB/rec/C.untagged.json"; echo ']'; } >"$TB/ims.json"
path_A=$MNT/$ID_A/rootfs path_B=$MNT/$ID_B/rootfs
path_P1=$MNT/PE/$PE_P1 path_P2=$MNT/PE/$PE_P2
# An image the original projected once and removed later (its file is gone now):
# its LUN number stays a gap.
cp "$path_P1" /tmp/retired.squashfs

# CSM's provisioning (roles/csm.sbps.lio_config), then the original agent's
# commands, in one targetcli session: `targetcli <command>` per command (as the
# original runs them) takes ~10 s each under emulation; the commands are the same.
note "targetcli builds the target (CSM provisioning + the original agent's commands)"
t=$(date +%s)
targetcli >/tmp/targetcli.log 2>&1 <<EOF
/iscsi create $IQN
/iscsi/$IQN/tpg1/portals delete 0.0.0.0 3260
/iscsi/$IQN/tpg1/portals create 127.0.0.1 3260
/iscsi/$IQN/tpg1 set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1 authentication=0 cache_dynamic_acls=1
/backstores/fileio create $NAME15_A $path_A 0 false true $SERIAL_A
/iscsi/$IQN/tpg1/luns create /backstores/fileio/$NAME15_A
/backstores/fileio create retired0000001 /tmp/retired.squashfs 0 false true 0000000000000000000000000000001
/iscsi/$IQN/tpg1/luns create /backstores/fileio/retired0000001
/backstores/fileio create $NAME15_B $path_B 0 false true $SERIAL_B
/iscsi/$IQN/tpg1/luns create /backstores/fileio/$NAME15_B
/backstores/fileio create $NAME15_P1 $path_P1 0 false true $SERIAL_P1
/iscsi/$IQN/tpg1/luns create /backstores/fileio/$NAME15_P1
/backstores/fileio create $NAME15_P2 $path_P2 0 false true $SERIAL_P2
/iscsi/$IQN/tpg1/luns create /backstores/fileio/$NAME15_P2
/iscsi/$IQN/tpg1/luns delete lun=1
/backstores/fileio delete retired0000001
saveconfig
exit
EOF
rc=$?
sed 's/^/  targetcli| /' /tmp/targetcli.log
note "targetcli took $(( $(date +%s) - t ))s (exit $rc)"
rm -f /tmp/retired.squashfs
check "targetcli built the target (LUNs $(ls "$TPG/lun" 2>/dev/null | tr '\n' ' '))" \
  [ "$(ls "$TPG/lun" 2>/dev/null | sort | tr '\n' ' ')" = "lun_0 lun_2 lun_3 lun_4 " ]
check "TPG enabled by targetcli" [ "$(cat "$TPG/enable" 2>/dev/null)" = 1 ]
[ "$FAIL" = 0 ] || finish
declare -A WANT_LUN=([A]=0 [B]=2 [P1]=3 [P2]=4)

# An initiator is already using the target: logged in, A mounted.
start_iscsid
iscsi_login "$IQN" || { fail "initiator login to the targetcli-built target"; finish; }
SID=$(session_id)
for l in A B P1 P2; do
  eval "w=\$WWID_$l"
  d=$(dev_for_wwid "$w") || { fail "before the agent: no device with $l's WWID $w"; continue; }
  check "before the agent: $l found by WWID at LUN ${WANT_LUN[$l]} ($d)" [ "$(lun_of "$d")" = "${WANT_LUN[$l]}" ]
  [ "$l" = A ] && DEV_A=$d
done
mkdir -p /tmp/m.A
mount -t squashfs -o ro "$DEV_A" /tmp/m.A || fail "mounting A"
check "A mounted: NAME reads '$NAME_A'" [ "$(cat /tmp/m.A/NAME 2>/dev/null)" = "$NAME_A" ]
before=$(snapshot)
cp /etc/rtslib-fb-target/saveconfig.json /tmp/rtslib-saveconfig.json
echo "$before" | sed 's/^/  before| /'

# ---------------------------------------------------------------- the agent
# LIO_SAVE_FILE: the file targetcli just saved (Debian's rtslib keeps it under
# /etc/rtslib-fb-target; on CSM it is /etc/target/saveconfig.json).
start_testbed /etc/rtslib-fb-target/saveconfig.json || { fail "testbed did not start"; finish; }

note "plan (dry run) before the daemon starts"
plan=$("$BIN/sbps-marshal" plan 2>&1)
echo "$plan" | sed 's/^/  plan| /'
check "plan: nothing to do for the 4 projections" [ "$plan" = "nothing to do (4 projections)" ]

note "daemon start, then a second scan (SIGHUP)"
"$BIN/sbps-marshal" run >>"$LOG" 2>&1 &
AGENT=$!
wait_for 90 ended_more_than 0 || { fail "the agent's first scan did not finish within 90s"; finish; }
kill -HUP "$AGENT"
wait_for 90 ended_more_than 1 || { fail "the second scan did not finish within 90s"; finish; }

after=$(snapshot)
if [ "$after" = "$before" ]; then
  pass "configfs unchanged: same LUN numbers, backstores, serials, aliases, TPG state"
else
  fail "configfs changed by the agent:"; diff <(echo "$before") <(echo "$after") | sed 's/^/  /'
fi
m=$(metrics)
check "metrics: no LIO operation applied" [ -z "$(grep '^sbps_marshal_operations_total' <<<"$m")" ]
check "metrics: converged" grep -qx 'sbps_marshal_converged 1' <<<"$m"
check "metrics: the original's gap (LUN 1) and 256 numbers above the highest quarantined" \
  grep -qx 'sbps_marshal_quarantined_luns 257' <<<"$m"
st=$("$BIN/sbps-marshal" status 2>&1)
check "status lists the quarantined numbers (1, 5-260)" \
  grep -qE 'quarantined LUN numbers \(not given to new images\): 1 \([^)]*\), 5-260 \(' <<<"$st" \
  || echo "$st" | sed 's/^/  status| /'
check "metrics: iscsi_rootfs_lun_cnt 2, iscsi_pe_lun_cnt 2" \
  [ "$(grep -cE '^iscsi_(rootfs|pe)_lun_cnt 2$' <<<"$m")" = 2 ]
check "log: no operation in either scan" [ -z "$(grep -E 'create backstore|delete backstore|map LUN|unmap LUN|enable TPG|disable TPG' "$LOG")" ]
for l in A B P1 P2; do
  eval "w=\$WWID_$l"
  out=$("$BIN/sbps-marshal" explain "$w" 2>&1)
  check "explain $l: exported at LUN ${WANT_LUN[$l]}" grep -qE "exported at LUN ${WANT_LUN[$l]}$" <<<"$out" \
    || echo "$out" | head -n 6 | sed 's/^/  /'
done
check "ledger adopted the numbers: A 0, B 2, P1 3, P2 4" python3 - "$SERIAL_A:0" "$SERIAL_B:2" "$SERIAL_P1:3" "$SERIAL_P2:4" <<'PY'
import json, sys
luns = json.load(open("/tmp/state/ledger.json"))["luns"]
sys.exit(0 if all(luns.get(s, {}).get("lun") == int(n) for s, n in (a.split(":") for a in sys.argv[1:])) else 1)
PY
check "saveconfig.json as rewritten by the agent says what rtslib's said (objects, LUNs, aliases, portals, attributes)" \
  python3 - /tmp/rtslib-saveconfig.json /etc/rtslib-fb-target/saveconfig.json <<'PY'
import json, sys
def essence(path):
    d = json.load(open(path))
    sos = sorted((o["plugin"], o["name"], o.get("dev"), o.get("size"), o.get("wwn"), o.get("write_back"))
                 for o in d["storage_objects"])
    tgts = []
    for t in d["targets"]:
        for g in t["tpgs"]:
            tgts.append((t["wwn"], g["tag"], g["enable"],
                         sorted((l["index"], l["storage_object"], l["alias"]) for l in g["luns"]),
                         sorted((p["ip_address"], p["port"]) for p in g["portals"]),
                         {k: g["attributes"].get(k) for k in ("authentication", "generate_node_acls",
                          "demo_mode_write_protect", "prod_mode_write_protect", "cache_dynamic_acls")}))
    return sos, tgts
a, b = essence(sys.argv[1]), essence(sys.argv[2])
if a != b:
    print("  rtslib:", a, "\n  agent: ", b)
sys.exit(a != b)
PY

# The initiator never noticed.
check "initiator: the same session ($SID)" [ "$(session_id)" = "$SID" ]
check "initiator: mounted A still reads '$NAME_A'" [ "$(cat /tmp/m.A/NAME 2>/dev/null)" = "$NAME_A" ]
umount /tmp/m.A
iscsi_rescan >/dev/null 2>&1
for l in A B P1 P2; do
  eval "w=\$WWID_$l want=\$NAME_$l"
  d=$(dev_for_wwid "$w") || { fail "after adoption: no device with $l's WWID"; continue; }
  check "after adoption: $l at LUN ${WANT_LUN[$l]}" [ "$(lun_of "$d")" = "${WANT_LUN[$l]}" ]
  mkdir -p "/tmp/m.$l"
  got=$(mount -t squashfs -o ro "$d" "/tmp/m.$l" && cat "/tmp/m.$l/NAME"; umount "/tmp/m.$l" 2>/dev/null)
  check "after adoption: $l reads '$want'" [ "$got" = "$want" ]
done

# The gap the original left (LUN 1, freed a moment before the switch) may still be
# held by an initiator, and so may numbers above the highest (4) if the original's map
# was once bigger: a new image goes past ADOPTION_QUARANTINE_ABOVE (256) above it.
note "C tagged: a new image after adoption"
{ echo '['; cat "$TB/rec/A.tagged.json"; echo ','; cat "$TB/rec/B.tagged.json"; echo ',';
  cat "$TB/rec/C.tagged.json"; echo ']'; } >"$TB/ims.json"
n=$(count 'END SCAN')
kill -HUP "$AGENT"
wait_for 90 ended_more_than "$n" || { fail "the scan after tagging C did not finish within 90s"; finish; }
check "ledger: LUN 1 (the original's gap) and 5-260 (above the highest) quarantined" python3 -c \
  'import json,sys; q=set(json.load(open("/tmp/state/ledger.json"))["quarantine"]); sys.exit(0 if q == {str(n) for n in [1, *range(5, 261)]} else 1)'
iscsi_rescan >/dev/null 2>&1
if d=$(dev_for_wwid "$WWID_C"); then
  check "C at LUN 261, past the quarantined numbers (got $(lun_of "$d"))" [ "$(lun_of "$d")" = 261 ]
  mkdir -p /tmp/m.C
  got=$(mount -t squashfs -o ro "$d" /tmp/m.C && cat /tmp/m.C/NAME; umount /tmp/m.C 2>/dev/null)
  check "C reads '$NAME_C'" [ "$got" = "$NAME_C" ]
else
  fail "C: no device with WWID $WWID_C"
fi
check "the adopted LUNs did not move (0 2 3 4 + 261)" \
  [ "$(ls "$TPG/lun" | sort -t_ -k2 -n | tr '\n' ' ')" = "lun_0 lun_2 lun_3 lun_4 lun_261 " ]
finish
