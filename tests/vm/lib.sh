# shellcheck shell=bash
# The host side every tests/vm/run-* script shares, sourced by each of them: where
# the checkout, the VM harness and cargo's output are; building and finding a test
# binary or an example; the stripped agent and testbed; the end-to-end fixtures;
# running the guest (its console logged, or its wall time reported).
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets REPO and HARNESS (SBPS_VM_HARNESS, default vm/harness of this checkout); the
# functions set BIN, TDIR and WORK. Failures exit 126 (harness or build error) naming
# the script, except a failed cargo build, which exits with cargo's status.

VM_ME=$(basename "$0")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HARNESS=${SBPS_VM_HARNESS:-$REPO/vm/harness}

vm_die() {
  echo "$VM_ME: $*" >&2
  exit 126
}

vm_need_harness() {
  [[ -x $HARNESS ]] || vm_die "no VM harness at $HARNESS (set SBPS_VM_HARNESS)"
}

vm_need_mksquashfs() {
  command -v mksquashfs >/dev/null || vm_die "mksquashfs missing (apt-get install squashfs-tools)"
}

# Builds with `cargo ARGS...` and sets BIN to the executable cargo made for NAME (a
# test binary deps/NAME-HASH, an example examples/NAME), wherever CARGO_TARGET_DIR
# puts it: the guest gets it through a share of its directory.
vm_cargo_bin() {
  local name=$1 json
  shift
  json=$(cd "$REPO" && cargo "$@" --message-format=json)
  BIN=$(grep -oE "\"executable\":\"[^\"]*/$name(-[0-9a-f]+)?\"" <<<"$json" | tail -n1 | cut -d'"' -f4)
  [[ -n $BIN && -x $BIN ]] || vm_die "$name not found in cargo's output"
}

# Builds the integration test binary NAME (tests/NAME/) and sets BIN to it.
vm_test_bin() {
  vm_cargo_bin "$1" test --no-run --test "$1"
}

# Cargo's target directory (CARGO_TARGET_DIR, or the workspace's).
vm_target_dir() {
  (cd "$REPO" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
}

# Builds the agent and the testbed (debug) and sets TDIR to where they are.
vm_build_agent() {
  echo "$VM_ME: building sbps-marshal and the testbed" >&2
  (cd "$REPO" && cargo build --quiet -p sbps-marshal -p sbps-testkit --bin sbps-marshal --bin testbed)
  TDIR=$(vm_target_dir)/debug
}

# A fresh work directory /tmp/sbps-NAME.XXXXXX in WORK, removed on exit unless KEEP=1.
vm_work() {
  WORK=$(mktemp -d "/tmp/sbps-$1.XXXXXX")
  [[ ${KEEP:-0} = 1 ]] || trap 'rm -rf "$WORK"' EXIT
}

# A stripped copy of BINARY in WORK/DEST: the guest copies what it runs to RAM, and
# 150 MB of debug info paged in over 9p costs seconds per start under emulation.
vm_strip() {
  mkdir -p "$(dirname "$WORK/$2")"
  strip -o "$WORK/$2" "$1"
}

# The agent and the testbed, stripped, in WORK/bin (after vm_build_agent).
vm_stage_agent() {
  vm_strip "$TDIR/sbps-marshal" bin/sbps-marshal
  vm_strip "$TDIR/testbed" bin/testbed
}

# The end-to-end fixtures in WORK/tb (squashfs images, bucket, IMS records: testbed
# make-fixtures) and the WWIDs expected of them, computed apart from the agent's code.
vm_fixtures() {
  "$WORK/bin/testbed" make-fixtures "$WORK/tb" >&2
  "$REPO/tests/vm/expected-wwids" "$WORK/tb/keys.txt" >"$WORK/tb/wwids.env"
}

# Boots the guest (harness ARGS..., the last one its script) with the console teed
# to WORK/vm.log; prints the guest script's summary line and exits with its status.
vm_run_logged() {
  local script rc
  script=$(basename "${!#}")
  set +e
  "$HARNESS" "$@" | tee "$WORK/vm.log"
  rc=${PIPESTATUS[0]}
  set -e
  echo "$VM_ME: guest summary: $(grep -a -E "^$script: [0-9]+ passed" "$WORK/vm.log" | tail -n1 || echo none) (exit $rc)"
  exit "$rc"
}

# Boots the guest (harness ARGS...); reports its exit status and wall time and
# exits with that status.
vm_run_timed() {
  local start rc=0
  start=$(date +%s)
  "$HARNESS" "$@" || rc=$?
  echo "$VM_ME: exit $rc, VM wall time $(($(date +%s) - start))s" >&2
  exit $rc
}
