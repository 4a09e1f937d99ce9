#!/bin/sh
# shellcheck shell=dash
# vm/selftest.sh — guest side of vm/selftest (runs inside the VM).
#   selftest.sh raw IMAGE       raw configfs target + open-iscsi login (needs
#                               HELLO and PAYLOAD_MD5 in the environment)
#   selftest.sh targetcli       (--host-root) targetcli ls / saveconfig
# POSIX sh: busybox ash in the guest, the host's dash under --host-root.
set -u
. /vm/lib.sh

MODE=${1:-raw}
CFG=/sys/kernel/config/target
IQN=iqn.2023-06.csm.iscsi:testhost
TPG=$CFG/iscsi/$IQN/tpgt_1
NPASS=0 NFAIL=0

pass() { echo "PASS: $MODE: $*"; NPASS=$((NPASS + 1)); }
fail() { echo "FAIL: $MODE: $*"; NFAIL=$((NFAIL + 1)); }
# check DESC CMD...: record the outcome of CMD
check() { local _st_d=$1; shift; if "$@"; then pass "$_st_d"; else fail "$_st_d"; fi; }
# need DESC CMD...: like check, but give up (after cleanup) when it fails
need() { local _st_d=$1; shift; if "$@"; then pass "$_st_d"; else fail "$_st_d"; finish; fi; }
eq() { [ "$1" = "$2" ] || { echo "  expected '$2', got '$1'" >&2; return 1; }; }
w() { printf '%s\n' "$2" >"$1"; } # w FILE VALUE: a configfs write

# first 25 hex digits of the serial -> the udev/multipath WWID LIO will show
expected_wwid() {
  printf '36001405%s\n' "$(printf '%s' "$1" | tr 'A-F' 'a-f' | tr -cd '0-9a-f' | cut -c1-25)"
}

# target: backstore NAME on FILE (SIZE bytes) with SERIAL, exported at LUN
make_target() { # NAME FILE SIZE SERIAL LUN
  _bs=$CFG/core/fileio_0/$1
  mkdir -p "$CFG/core/fileio_0" &&
    mkdir "$_bs" &&
    w "$_bs/control" "fd_dev_name=$2,fd_dev_size=$3" &&
    w "$_bs/udev_path" "$2" &&
    w "$_bs/wwn/vpd_unit_serial" "$4" &&
    w "$_bs/attrib/emulate_model_alias" 1 &&
    w "$_bs/enable" 1 &&
    mkdir -p "$TPG" &&
    mkdir "$TPG/np/127.0.0.1:3260" &&
    w "$TPG/attrib/authentication" 0 &&
    w "$TPG/attrib/generate_node_acls" 1 &&
    w "$TPG/attrib/demo_mode_write_protect" 1 &&
    w "$TPG/attrib/cache_dynamic_acls" 1 &&
    mkdir "$TPG/lun/lun_$5" &&
    ln -s "$_bs" "$TPG/lun/lun_$5/$1" &&
    w "$TPG/enable" 1
}

teardown() { # best effort, in the order the kernel accepts
  for _l in "$TPG"/lun/lun_*; do
    [ -d "$_l" ] || continue
    for _s in "$_l"/*; do [ -L "$_s" ] && rm -f "$_s"; done
    rmdir "$_l"
  done 2>/dev/null
  for _n in "$TPG"/np/*; do [ -d "$_n" ] && rmdir "$_n"; done 2>/dev/null
  [ -d "$TPG" ] && rmdir "$TPG" 2>/dev/null
  [ -d "$CFG/iscsi/$IQN" ] && rmdir "$CFG/iscsi/$IQN" 2>/dev/null
  for _b in "$CFG"/core/fileio_*/*; do
    [ -f "$_b/enable" ] && rmdir "$_b" 2>/dev/null
  done
  for _h in "$CFG"/core/fileio_*; do [ -d "$_h" ] && rmdir "$_h" 2>/dev/null; done
  [ -d "$CFG/iscsi" ] && rmdir "$CFG/iscsi" 2>/dev/null
  return 0
}

CLEANED=0
cleanup() {
  [ "$CLEANED" = 1 ] && return 0
  CLEANED=1
  mountpoint -q /mnt/sq 2>/dev/null && umount /mnt/sq
  iscsi_logout >/dev/null 2>&1
  teardown
}

finish() {
  cleanup
  echo "selftest $MODE: $NPASS checks passed, $NFAIL failed"
  [ "$NFAIL" = 0 ] && exit 0
  exit 1
}

configfs_clean() {
  eq "$(ls "$CFG/core" | tr '\n' ' ')" "alua " && [ ! -e "$CFG/iscsi" ]
}

# ------------------------------------------------------------------- raw
run_raw() {
  IMG=${2:?usage: selftest.sh raw IMAGE}
  : "${HELLO:?}" "${PAYLOAD_MD5:?}"
  SIZE=$(stat -c %s "$IMG")
  SERIAL=$(cat /proc/sys/kernel/random/uuid)
  WWID=$(expected_wwid "$SERIAL")
  echo "image $IMG ($SIZE bytes), serial $SERIAL, expected WWID $WWID"

  need "configfs is mounted with LIO loaded" test -d "$CFG/core"
  need "target set up through raw configfs writes (fileio_0/img1 at lun_3)" \
    make_target img1 "$IMG" "$SIZE" "$SERIAL" 3
  check "backstore info shows the file" grep -q "File: $IMG" "$CFG/core/fileio_0/img1/info"
  need "iscsi_login (sendtargets discovery + login)" iscsi_login "$IQN"
  check "tpgt_1/dynamic_sessions lists the initiator" \
    grep -q 'iqn.2024-01.test:initiator' "$TPG/dynamic_sessions"
  DEV=$(dev_for_wwid "$WWID") || DEV=
  need "device found by WWID $WWID" test -n "$DEV"
  echo "  device: $DEV, WWID $(wwid_of "$DEV"), sysfs wwid $(cat "/sys/block/${DEV#/dev/}/device/wwid")"
  check "wwid_of $DEV is $WWID" eq "$(wwid_of "$DEV")" "$WWID"
  check "iscsi_devices lists $DEV" eq "$(iscsi_devices "$IQN")" "$DEV"
  check "LUN of $DEV is 3" eq "$(lun_of "$DEV")" 3
  check "INQUIRY product is the backstore name (emulate_model_alias)" \
    eq "$(cat "/sys/block/${DEV#/dev/}/device/model" | tr -d ' ')" img1
  check "unit serial (VPD 0x80) is the configured serial" \
    sh -c "sg_inq -p 0x80 '$DEV' | grep -q '$SERIAL'"
  check "size seen by the initiator is the image size" eq "$(blockdev --getsize64 "$DEV")" "$SIZE"
  check "device is read-only (blockdev --getro)" eq "$(blockdev --getro "$DEV")" 1
  mkdir -p /mnt/sq
  need "mount -t squashfs -o ro $DEV" mount -t squashfs -o ro "$DEV" /mnt/sq
  check "hello.txt has the expected content" eq "$(cat /mnt/sq/hello.txt)" "$HELLO"
  check "payload.bin md5 matches" eq "$(md5sum </mnt/sq/payload.bin | cut -d' ' -f1)" "$PAYLOAD_MD5"
  if dd if=/dev/zero of="$DEV" bs=512 count=1 conv=fsync 2>/dev/null; then
    fail "writing to $DEV fails (write protect)"
  else
    pass "writing to $DEV fails (write protect)"
  fi
  check "umount" umount /mnt/sq
  check "iscsi_logout" iscsi_logout "$IQN"
  check "session gone" eq "$(ls /sys/class/iscsi_session 2>/dev/null)" ""
  check "$DEV gone after logout" test ! -e "/sys/block/${DEV#/dev/}"
  teardown
  check "teardown leaves configfs clean" configfs_clean
  check "image unchanged on the share" eq "$(stat -c %s "$IMG")" "$SIZE"
}

# ------------------------------------------------------------------- targetcli
run_targetcli() {
  need "running chrooted in the host root" test "${SBPS_VM_HOST_ROOT:-0}" = 1
  need "targetcli is installed on the host" test -x /usr/bin/targetcli
  need "system D-Bus is running" test -S /run/dbus/system_bus_socket
  dd if=/dev/zero of=/tmp/hr1.img bs=1024 count=1024 2>/dev/null
  SERIAL=$(cat /proc/sys/kernel/random/uuid)
  WWID=$(expected_wwid "$SERIAL")
  need "raw configfs target (fileio_0/hr1 at lun_0)" make_target hr1 /tmp/hr1.img 1048576 "$SERIAL" 0
  OUT=$(targetcli ls 2>&1); rc=$?
  printf '%s\n' "$OUT"
  check "targetcli ls exits 0" eq "$rc" 0
  check "targetcli ls shows the backstore and the target" \
    sh -c 'printf "%s" "$1" | grep -q "hr1" && printf "%s" "$1" | grep -q "$2"' sh "$OUT" "$IQN"
  OUT=$(targetcli saveconfig /tmp/x.json 2>&1); rc=$?
  printf '%s\n' "$OUT" | grep -v 'db_root\|UserWarning\|warn(' | tail -n 3
  check "targetcli saveconfig /tmp/x.json exits 0" eq "$rc" 0
  check "saved JSON is valid and has the serial" \
    python3 -c 'import json,sys; c=json.load(open("/tmp/x.json")); so=c["storage_objects"]; assert any(s["wwn"]==sys.argv[1] and s["name"]=="hr1" for s in so), so' "$SERIAL"
  # the initramfs tools work from the host root too (chroot to the guest root)
  need "iscsi_login from the host root" iscsi_login "$IQN"
  DEV=$(dev_for_wwid "$WWID") || DEV=
  check "device found by WWID $WWID, LUN 0" eq "${DEV:+$(lun_of "$DEV")}" 0
  check "iscsi_logout" iscsi_logout "$IQN"
  teardown
  check "teardown leaves configfs clean" configfs_clean
}

case $MODE in
  raw) run_raw "$@" ;;
  targetcli) run_targetcli "$@" ;;
  *) echo "usage: selftest.sh raw IMAGE | targetcli" >&2; exit 2 ;;
esac
finish
