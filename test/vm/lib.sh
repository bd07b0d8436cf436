# shellcheck shell=bash
# Helpers for guest scripts run by test/vm/run.sh: `source "$(dirname "$0")/lib.sh"`.
# Scripts run with `set -euo pipefail`; every check that fails ends the script with status 1.
#
#   say MSG / ok MSG / fail MSG         progress, a passed check, a failed one (exits 1)
#   expect_eq WHAT GOT WANT             fail unless GOT = WANT
#   expect_grep WHAT PATTERN TEXT       fail unless TEXT has a line matching PATTERN (grep -E)
#   ferrite_start CONFIG / ferrite_kill / ferrite_stop / ferrite_rpc ARGS...
#   iscsi_login PORTAL IQN / iscsi_logout PORTAL IQN / iscsi_disk IQN (prints sdX)
#   fio_run NAME FIO-ARGS...            fio with its output kept; fails on any fio error
#   fio_verify DEV NAME [FIO-ARGS...]   the verify job (randrw 4k-256k QD16 crc32c) on DEV
#   fio_iops DEV NAME FIO-ARGS...       prints IOPS and MiB/s of a time-based job
#   ext4_fill DEV DIR SUMS / ext4_check DEV DIR SUMS     files and sha256 sums on a new ext4
#   lio_iscsi_ramdisk IQN PORTAL MIB    a LIO iSCSI target over an rd_mcp ramdisk (configfs)

VM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FERRITE_TGT_BIN=${FERRITE_TGT_BIN:-$VM_REPO/target/release/ferrite-tgt}
FERRITE_RPC_PY=${FERRITE_RPC_PY:-$VM_REPO/app/rpc.py}
# Where the helpers put logs and scratch files: the guest's /tmp is a throwaway tmpfs.
VM_WORK=${VM_WORK:-/tmp/ferrite-vm}
mkdir -p "$VM_WORK"
FERRITE_SOCK=$VM_WORK/ferrite.sock
FERRITE_LOG=$VM_WORK/ferrite-tgt.log
FERRITE_PID=
_VM_T0=$EPOCHREALTIME

_vm_clock() {
    awk -v a="$_VM_T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%6.1f", b - a }'
}

say() { echo "[$(_vm_clock)s] $*"; }
ok() { echo "[$(_vm_clock)s] ok   $*"; }
fail() {
    echo "[$(_vm_clock)s] FAIL $*" >&2
    exit 1
}

expect_eq() {
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
    ok "$1: $2"
}

expect_grep() {
    grep -Eq -- "$2" <<<"$3" || fail "$1: no line matches /$2/ in:
$3"
    ok "$1: $(grep -Em1 -- "$2" <<<"$3" | sed 's/^ *//')"
}

# On a failing exit: what the target said last, and the kernel's view.
_vm_on_exit() {
    local rc=$?
    [ "$rc" -ne 0 ] || return 0
    if [ -s "$FERRITE_LOG" ]; then
        echo "--- last lines of $FERRITE_LOG"
        tail -n 30 "$FERRITE_LOG"
    fi
    echo "--- last kernel messages"
    dmesg | tail -n 30
}
trap _vm_on_exit EXIT

# --- ferrite-tgt -----------------------------------------------------------------------

# ferrite_start CONFIG: starts ferrite-tgt with CONFIG (a --json file) on FERRITE_CPUMASK
# (0x1) with a FERRITE_HEAP_MB (320) MiB heap, its RPC socket $FERRITE_SOCK, its log appended
# to $FERRITE_LOG; returns once it logs "ready" (fails if it exits or takes over 60 s).
ferrite_start() {
    local config=$1 before i
    [ -x "$FERRITE_TGT_BIN" ] || fail "no ferrite-tgt at $FERRITE_TGT_BIN (build it on the host)"
    touch "$FERRITE_LOG"
    before=$(grep -c 'ferrite-tgt ready' "$FERRITE_LOG" || true)
    "$FERRITE_TGT_BIN" -m "${FERRITE_CPUMASK:-0x1}" -s "${FERRITE_HEAP_MB:-320}" \
        -r "$FERRITE_SOCK" --json "$config" >>"$FERRITE_LOG" 2>&1 &
    FERRITE_PID=$!
    for i in $(seq 600); do
        [ "$(grep -c 'ferrite-tgt ready' "$FERRITE_LOG" || true)" -gt "$before" ] && {
            say "ferrite-tgt ready (pid $FERRITE_PID)"
            return 0
        }
        kill -0 "$FERRITE_PID" 2>/dev/null || fail "ferrite-tgt exited at start"
        sleep 0.1
    done
    fail "ferrite-tgt not ready after 60 s"
}

# ferrite_kill: SIGKILL, as a crash would.
ferrite_kill() {
    kill -9 "$FERRITE_PID"
    wait "$FERRITE_PID" 2>/dev/null || true
    say "ferrite-tgt (pid $FERRITE_PID) killed"
    FERRITE_PID=
}

# ferrite_stop: a clean shutdown; fails if it takes over 30 s.
ferrite_stop() {
    [ -n "$FERRITE_PID" ] || return 0
    kill -TERM "$FERRITE_PID"
    local i
    for i in $(seq 300); do
        kill -0 "$FERRITE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$FERRITE_PID" 2>/dev/null && fail "ferrite-tgt did not stop on SIGTERM"
    wait "$FERRITE_PID" 2>/dev/null || true
    FERRITE_PID=
}

ferrite_rpc() {
    python3 "$FERRITE_RPC_PY" -s "$FERRITE_SOCK" "$@"
}

# --- open-iscsi ------------------------------------------------------------------------

# iscsi_login PORTAL IQN: SendTargets discovery on PORTAL (must list IQN), then login.
# ISCSI_NODE_SETTINGS ("name=value ...") are applied to the node record before the login;
# ISCSI_IFACE (e.g. iser) picks the initiator interface for both.
iscsi_login() {
    local portal=$1 iqn=$2 found kv
    local iface=(${ISCSI_IFACE:+-I "$ISCSI_IFACE"})
    found=$(iscsiadm -m discovery -t sendtargets -p "$portal" "${iface[@]}") ||
        fail "discovery on $portal: $found"
    grep -q " $iqn\$" <<<"$found" || fail "discovery on $portal does not list $iqn: $found"
    for kv in ${ISCSI_NODE_SETTINGS:-}; do
        iscsiadm -m node -T "$iqn" -p "$portal" "${iface[@]}" -o update -n "${kv%%=*}" -v "${kv#*=}" >/dev/null
    done
    iscsiadm -m node -T "$iqn" -p "$portal" "${iface[@]}" --login >/dev/null ||
        fail "login to $iqn at $portal"
}

iscsi_logout() {
    iscsiadm -m node -T "$2" -p "$1" --logout >/dev/null || fail "logout from $2 at $1"
}

# iscsi_disk IQN: the block device (sdX) of LUN 0 of the session with IQN, once the kernel
# has attached it (waits up to 30 s).
iscsi_disk() {
    local iqn=$1 s i dev
    for i in $(seq 300); do
        for s in /sys/class/iscsi_session/session*; do
            [ "$(cat "$s/targetname" 2>/dev/null)" = "$iqn" ] || continue
            for dev in "$s"/device/target*/*:0/block/*; do
                [ -b "/dev/${dev##*/}" ] && { echo "${dev##*/}"; return 0; }
            done
        done
        sleep 0.1
    done
    fail "no disk for $iqn after 30 s"
}

# --- fio -------------------------------------------------------------------------------

# fio_run NAME ARGS...: runs fio, its output in $VM_WORK/NAME.fio; shows it and fails when
# fio reports any error.
fio_run() {
    local name=$1 out=$VM_WORK/$1.fio
    shift
    if ! fio --name="$name" "$@" >"$out" 2>&1; then
        cat "$out"
        fail "fio $name failed"
    fi
    grep -q 'err= *[1-9]' "$out" && { cat "$out"; fail "fio $name reported errors"; }
    return 0
}

# The verify job: random reads and writes of 4 KiB to 256 KiB at QD16, every written block
# checked by crc32c afterwards. FIO_VERIFY_SIZE (128M) is how much of the disk it covers.
fio_verify() {
    local dev=$1 name=$2
    shift 2
    fio_run "$name" --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw=randrw \
        --bsrange=4k-256k --iodepth=16 --size="${FIO_VERIFY_SIZE:-128M}" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 "$@"
    ok "fio $name on /dev/$dev: $(awk '/READ:|WRITE:/ { printf "%s %s ", $1, $2 }' "$VM_WORK/$name.fio")verified"
}

# fio_iops DEV NAME ARGS...: a timed job (libaio, direct); prints "IOPS MiB/s" of all its I/O.
fio_iops() {
    local dev=$1 name=$2
    shift 2
    fio_run "$name" --filename="/dev/$dev" --ioengine=libaio --direct=1 --time_based \
        --output-format=json "$@"
    python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
iops = j["read"]["iops"] + j["write"]["iops"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 2**20
print("%.0f %.1f" % (iops, bw))' "$VM_WORK/$name.fio"
}

# --- ext4 ------------------------------------------------------------------------------

# ext4_fill DEV DIR SUMS: a new ext4 on DEV, mounted on DIR, some files of random data
# (4 KiB to 8 MiB), their sha256 sums into SUMS; unmounted again.
ext4_fill() {
    local dev=$1 dir=$2 sums=$3 i
    mkfs.ext4 -q -F "/dev/$dev" || fail "mkfs.ext4 /dev/$dev"
    mkdir -p "$dir"
    mount "/dev/$dev" "$dir" || fail "mount /dev/$dev"
    mkdir -p "$dir/data"
    for i in 1 2 3 4 5 6 7 8; do
        head -c $((4096 << i)) /dev/urandom >"$dir/data/file$i"
    done
    (cd "$dir" && sha256sum data/*) >"$sums"
    umount "$dir" || fail "umount $dir"
    ok "ext4 on /dev/$dev: $(wc -l <"$sums") files written, sums taken, unmounted"
}

# ext4_check DEV DIR SUMS: mounts DEV on DIR and checks the files against SUMS.
ext4_check() {
    local dev=$1 dir=$2 sums=$3 out
    mount "/dev/$dev" "$dir" || fail "mount /dev/$dev"
    out=$(cd "$dir" && sha256sum -c "$sums" 2>&1) || fail "sha256 sums differ on /dev/$dev: $out"
    umount "$dir" || fail "umount $dir"
    ok "ext4 on /dev/$dev: $(wc -l <"$sums") files match their sha256 sums"
}

# --- LIO (the kernel target), by hand through configfs ---------------------------------

# lio_iscsi_ramdisk IQN PORTAL MIB: LIO serving an rd_mcp ramdisk of MIB MiB as LUN 0 of IQN
# on PORTAL (host:port), in demo mode: any initiator, no CHAP, writable.
lio_iscsi_ramdisk() {
    local iqn=$1 portal=$2 mib=$3 cfs=/sys/kernel/config/target
    local rd=$cfs/core/rd_mcp_0/ferrite_peer tpg=$cfs/iscsi/$1/tpgt_1
    modprobe -a target_core_mod iscsi_target_mod || fail "modprobe target_core_mod iscsi_target_mod"
    mkdir -p "$rd"
    echo "rd_pages=$((mib * 1024 * 1024 / $(getconf PAGESIZE)))" >"$rd/control"
    echo 1 >"$rd/enable"
    mkdir -p "$tpg/lun/lun_0"
    ln -s "$rd" "$tpg/lun/lun_0/ferrite_peer"
    mkdir "$tpg/np/$portal"
    echo 0 >"$tpg/attrib/authentication"
    echo 1 >"$tpg/attrib/generate_node_acls"
    echo 1 >"$tpg/attrib/cache_dynamic_acls"
    echo 0 >"$tpg/attrib/demo_mode_write_protect"
    echo 1 >"$tpg/enable"
    say "LIO: $iqn LUN 0 on a $mib MiB rd_mcp ramdisk, portal $portal"
}

# --- the link under rxe0 ------------------------------------------------------------------

# link_outage SECS: dummy0 (under rxe0) down for SECS seconds, then up. ferrite-tgt is held
# (SIGSTOP) for half a second across the moment the link goes down, so it has the requests
# that came in meanwhile to answer when it runs again with the port down: its posts fail
# (local QP operation error) and it closes those connections during the outage, which is
# the case that must not send a CM message before the port is back (test/vm/README.md).
# The initiator sends nothing during the outage unless its own I/O does.
link_outage() {
    local secs=$1
    kill -STOP "$FERRITE_PID"
    sleep 0.5
    ip link set dummy0 down
    kill -CONT "$FERRITE_PID"
    say "dummy0 down (ferrite-tgt held for 0.5 s across it)"
    sleep "$secs"
    ip link set dummy0 up
    say "dummy0 up after $secs s"
}

# disk_ios DEV: reads and writes completed on DEV so far (/sys/block/DEV/stat).
disk_ios() {
    awk '{ print $1 + $5 }' "/sys/block/$1/stat"
}

# wait_for_io DEV BEFORE: waits (up to 60 s) until DEV has completed 20 more I/Os than
# BEFORE (disk_ios), i.e. a job started on it is doing I/O; fails otherwise. fio under TCG
# can take seconds to start.
wait_for_io() {
    local i
    for i in $(seq 600); do
        [ "$(disk_ios "$1")" -ge $(($2 + 20)) ] && return 0
        sleep 0.1
    done
    fail "no I/O on /dev/$1 60 s after its fio job started"
}

# expect_outage_handled: ferrite-tgt's log shows a connection closed while the port was
# down and its peer told only once the port was back.
expect_outage_handled() {
    local log
    log=$(cat "$FERRITE_LOG")
    expect_grep "ferrite-tgt closed a connection during the outage, DREQ held" \
        "closing while its port is down" "$log"
    expect_grep "ferrite-tgt told the peer once the port was back" \
        "the port is back; disconnecting the peer" "$log"
}
