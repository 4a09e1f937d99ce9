# vm/lib.sh — helpers for guest scripts run by vm/harness.
# shellcheck shell=dash
# In the guest:  . /vm/lib.sh
# POSIX sh (+ 'local'): works under the guest's busybox ash and, in
# --host-root mode, under the host's dash.  iscsiadm/iscsid live in the guest initramfs; in
# --host-root mode they are run through chroot "$SBPS_VM_GUEST_ROOT".
#
#   start_iscsid                    start iscsid, wait until it accepts requests
#   iscsi_login TARGET_IQN [PORTAL] discovery (sendtargets) + login + wait for the disks
#                                   (already logged in: just rescan and wait)
#   iscsi_logout [TARGET_IQN]       log out of TARGET (default: all sessions)
#   iscsi_rescan                    rescan all sessions, wait for the disks
#   iscsi_devices [TARGET_IQN]      list /dev/sdX of the session(s), one per line
#   wwid_of /dev/sdX                udev-style WWID: 3 + NAA hex (36001405...)
#   dev_for_wwid WWID               the /dev/sdX with that WWID (rc 1 if none)
#   lun_of /dev/sdX                 the LUN (L of H:C:T:L)
#   vm_wait_until SECS CMD...       poll CMD every 0.05s until it succeeds

SBPS_VM_GUEST_ROOT=${SBPS_VM_GUEST_ROOT:-/}
SBPS_VM_PORTAL=${SBPS_VM_PORTAL:-127.0.0.1:3260}

_vm_g() { # run a guest (initramfs) tool
  if [ "$SBPS_VM_GUEST_ROOT" = / ]; then "$@"; else chroot "$SBPS_VM_GUEST_ROOT" "$@"; fi
}

_vm_err() { echo "lib.sh: $*" >&2; }

vm_wait_until() { # vm_wait_until SECS CMD... ; rc 1 on timeout
  local _w_max=$(( $1 * 20 )) _w_i=0
  shift
  while ! "$@"; do
    _w_i=$((_w_i + 1))
    [ "$_w_i" -ge "$_w_max" ] && return 1
    sleep 0.05
  done
  return 0
}

_vm_iscsid_up() { grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix 2>/dev/null; }

start_iscsid() {
  _vm_iscsid_up && return 0
  _vm_g /usr/sbin/iscsid -f </dev/null >>/tmp/iscsid.log 2>&1 &
  if ! vm_wait_until 20 _vm_iscsid_up; then
    _vm_err "iscsid did not come up; /tmp/iscsid.log:"; cat /tmp/iscsid.log >&2; return 1
  fi
}

_vm_quiet() { # run, print the output only on failure
  local _q_out _q_rc
  _q_out=$("$@" 2>&1) && return 0
  _q_rc=$?
  _vm_err "'$*' failed (rc $_q_rc):"; printf '%s\n' "$_q_out" >&2
  return "$_q_rc"
}

# sessions of TARGET (all if empty): prints sysfs session dirs
_vm_sessions() {
  local _s
  for _s in /sys/class/iscsi_session/session*; do
    [ -e "$_s/targetname" ] || continue
    if [ -z "${1:-}" ] || [ "$(cat "$_s/targetname")" = "$1" ]; then echo "$_s"; fi
  done
}

# scsi host numbers of the sessions of TARGET
_vm_hosts() {
  local _s _p _h
  for _s in $(_vm_sessions "${1:-}"); do
    _p=$(readlink -f "$_s/device")          # /sys/devices/platform/hostN/sessionM
    _h=${_p%/*}; _h=${_h##*/}
    echo "${_h#host}"
  done
}

# every disk-type scsi device of the given hosts has its block device
_vm_disks_ready() {
  local _h _d _b
  for _h in "$@"; do
    for _d in /sys/bus/scsi/devices/"$_h":*:*:*; do
      [ -e "$_d/type" ] || continue
      case $(cat "$_d/type") in 0|14) ;; *) continue ;; esac
      [ -d "$_d/block" ] || return 1
      for _b in "$_d"/block/*; do [ -b "/dev/${_b##*/}" ] || return 1; done
    done
  done
  return 0
}

_vm_scan_and_wait() { # TARGET (may be empty)
  local _hosts _h
  _hosts=$(_vm_hosts "${1:-}")
  [ -n "$_hosts" ] || { _vm_err "no iSCSI session${1:+ for $1}"; return 1; }
  for _h in $_hosts; do echo '- - -' >"/sys/class/scsi_host/host$_h/scan" || return 1; done
  # shellcheck disable=SC2086
  vm_wait_until 30 _vm_disks_ready $_hosts || { _vm_err "timeout waiting for disks"; return 1; }
}

iscsi_login() { # TARGET_IQN [PORTAL]
  [ -n "${1:-}" ] || { _vm_err "usage: iscsi_login TARGET_IQN [PORTAL]"; return 2; }
  local _l_t=$1 _l_p=${2:-$SBPS_VM_PORTAL}
  start_iscsid || return 1
  if [ -z "$(_vm_sessions "$_l_t")" ]; then
    _vm_quiet _vm_g iscsiadm -m discovery -t sendtargets -p "$_l_p" || return 1
    _vm_quiet _vm_g iscsiadm -m node -T "$_l_t" -p "$_l_p" --login || return 1
  fi
  _vm_scan_and_wait "$_l_t"
}

iscsi_logout() { # [TARGET_IQN]
  if [ -n "${1:-}" ]; then
    _vm_quiet _vm_g iscsiadm -m node -T "$1" --logout
  else
    [ -z "$(_vm_sessions)" ] && return 0
    _vm_quiet _vm_g iscsiadm -m session --logout
  fi
}

iscsi_rescan() {
  _vm_quiet _vm_g iscsiadm -m session --rescan || return 1
  _vm_scan_and_wait ""
}

iscsi_devices() { # [TARGET_IQN]
  local _h _d
  for _h in $(_vm_hosts "${1:-}"); do
    for _d in /sys/bus/scsi/devices/"$_h":*:*:*/block/*; do
      [ -e "$_d" ] && echo "/dev/${_d##*/}"
    done
  done
}

# hex dump of a binary file: "00 83 00 3c ..." (one line)
_vm_hex() { od -An -v -tx1 "$1" | tr -s ' \n' '  '; }

# NAA designator (LU association) from a VPD page 0x83 file -> hex, or nothing
_vm_naa_from_pg83() {
  local _type _assoc _len _x _i
  [ -r "$1" ] || return 1
  # shellcheck disable=SC2046
  set -- $(_vm_hex "$1")
  [ $# -ge 4 ] || return 1
  shift 4
  while [ $# -ge 4 ]; do
    _type=$(( 0x$2 & 15 )); _assoc=$(( (0x$2 >> 4) & 3 )); _len=$(( 0x$4 ))
    shift 4
    [ $# -ge "$_len" ] || return 1
    if [ "$_type" = 3 ] && [ "$_assoc" = 0 ]; then
      _x=; _i=0
      while [ "$_i" -lt "$_len" ]; do _x=$_x$1; shift; _i=$((_i + 1)); done
      echo "$_x"; return 0
    fi
    shift "$_len"
  done
  return 1
}

wwid_of() { # /dev/sdX -> 3<naa hex>, as udev's ID_SERIAL / multipath WWID
  local _n=${1#/dev/} _sys _w _x
  _sys=/sys/block/$_n/device
  [ -d "$_sys" ] || { _vm_err "wwid_of: no such disk $1"; return 1; }
  _w=$(tr -d '\0' <"$_sys/wwid" 2>/dev/null | tr -d ' \n') || _w=
  case $_w in
    naa.*) echo "3${_w#naa.}" | tr 'A-F' 'a-f'; return 0 ;;
    eui.*) echo "2${_w#eui.}" | tr 'A-F' 'a-f'; return 0 ;;
  esac
  _x=$(_vm_naa_from_pg83 "$_sys/vpd_pg83") && [ -n "$_x" ] && { echo "3$_x"; return 0; }
  [ -n "$_w" ] && { echo "$_w"; return 0; }
  _vm_err "wwid_of: no WWID for $1"; return 1
}

dev_for_wwid() { # WWID -> /dev/sdX
  local _b
  for _b in /sys/block/sd*; do
    [ -e "$_b/device" ] || continue
    if [ "$(wwid_of "/dev/${_b##*/}" 2>/dev/null)" = "$1" ]; then echo "/dev/${_b##*/}"; return 0; fi
  done
  return 1
}

lun_of() { # /dev/sdX -> LUN
  local _n=${1#/dev/} _hctl
  [ -e "/sys/block/$_n/device" ] || { _vm_err "lun_of: no such disk $1"; return 1; }
  _hctl=$(readlink -f "/sys/block/$_n/device"); _hctl=${_hctl##*/}
  echo "${_hctl##*:}"
}
