#!/usr/bin/env bash
# Guest script: Linux's SRP initiator (ib_srp over RDMA CM on soft-RoCE rxe0) against
# ferrite-tgt in the same VM. Run it with
#
#   test/vm/run.sh --timeout 900 test/vm/srp.sh [SRP_WIRE_TEST_BINARY]
#
# ferrite-tgt (the host's release build) serves a 256 MiB malloc LUN (fixed UUID) as LUN 0
# of SRP target srp0 on 169.254.77.1:$PORT, one reactor; a second target, srp-acl, on the
# same listener serves only the source address 169.254.77.99 (not ours). Checks, each
# failing the script:
#   1. add_target (ib_srp's default channel count): /dev/sdX of the LUN's size, vendor,
#      serial, VPD 0x83 NAA designator = the bdev's UUID (bdev_get_bdevs); srp_get_channels
#      lists as many channels as the SCSI host's ch_count;
#   2. fio verify (randrw, 4 KiB-1 MiB, QD32, crc32c, O_DIRECT): reads by RDMA WRITE,
#      writes by immediate data and RDMA READ;
#   3. ext4: files and sha256 sums; the remote port deleted through
#      /sys/class/srp_remote_ports/*/delete (channels gone in srp_get_channels), added again
#      with ch_count=1 (one channel): the sums match; fio verify again on one channel (over
#      the file system, which is not used after this);
#   4. logins refused: an unknown id_ext (SRP_LOGIN_REJ "unable to associate channel",
#      0x00010003, in ferrite's log; add_target fails), and target srp-acl whose ACL does
#      not list us (the same reason);
#   4b. with the srp_wire test binary given: our own initiator logs two channels of one
#      nexus in; a READ whose descriptor carries an rkey it never registered makes the
#      target's RDMA WRITE fail: that channel ends without a response, the other still
#      reads; ib_srp's channel is untouched;
#   4c. ferrite-perf srp (randrw, 4 KiB QD16 then 1 MiB QD4, 2 s each, core 1): I/O done, none
#      failed; ib_srp's channel untouched;
#   5. the link (dummy0 under rxe0) down for 3 s during a fio verify job (64 MiB, 8 MiB/s
#      each way, so it spans the outage), ferrite-tgt held across the moment it goes down
#      so that its own posts fail during the outage (lib.sh link_outage): ferrite-tgt
#      closes the channel but sends its DREQ only once the port is back, still answers
#      RPCs, ib_srp reconnects ("reconnect succeeded"), fio ends without an error and its
#      verify passes, and the sha256 of the disk's first 128 MiB (written before) is
#      unchanged;
#   6. a clean shutdown with the initiator connected: ferrite-tgt sends SRP_T_LOGOUT (the
#      kernel logs it) and exits; no I/O error in the kernel's log before that.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ADDR=169.254.77.1
PORT=5555
ID_EXT=0002c90300a1b2c3
IOC_GUID=0002c90300d4e5f6
ACL_ID_EXT=0002c90300a1b2c4
LUN_MIB=256
UUID=5e1f0c2a-7b3d-4e8f-9a10-2b3c4d5e6f70
HOST_DIR=/sys/class/infiniband_srp/srp-rxe0-1
# The srp_wire test binary (cargo test -p ferrite-transport --release --test srp_wire --no-run).
WIRE_BIN=${1:-}
FERRITE_PERF_BIN=${FERRITE_PERF_BIN:-$VM_REPO/target/release/ferrite-perf}

config=$VM_WORK/ferrite-srp.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc0", "num_blocks": $((LUN_MIB * 2048)), "block_size": 512, "uuid": "$UUID"}},
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc1", "num_blocks": 16384, "block_size": 512}}]},
  {"subsystem": "srp", "config": [
    {"method": "srp_create_target",
     "params": {"name": "srp0", "id_ext": "$ID_EXT", "ioc_guid": "$IOC_GUID",
                "host": "$ADDR", "port": $PORT, "luns": [{"bdev_name": "Malloc0", "lun_id": 0}]}},
    {"method": "srp_create_target",
     "params": {"name": "srp-acl", "id_ext": "$ACL_ID_EXT", "ioc_guid": "$IOC_GUID",
                "host": "$ADDR", "port": $PORT, "luns": [{"bdev_name": "Malloc1", "lun_id": 0}],
                "initiators": ["169.254.77.99"]}}]}
]}
JSON

# add_target OPTIONS: asks ib_srp to log in; returns the echo's status.
add_target() {
    echo "id_ext=$1,ioc_guid=$IOC_GUID,dest=$ADDR:$PORT${2:+,$2}" >"$HOST_DIR/add_target" 2>"$VM_WORK/add_target.err"
}

# srp_disk: the block device (sdX) of the ib_srp SCSI host (waits up to 30 s).
srp_disk() {
    local h dev i
    for i in $(seq 300); do
        for h in /sys/class/scsi_host/host*; do
            [ "$(cat "$h/proc_name" 2>/dev/null)" = ib_srp ] || continue
            for dev in "$h"/device/target*/*:0/block/*; do
                [ -b "/dev/${dev##*/}" ] && { echo "${dev##*/}"; return 0; }
            done
        done
        sleep 0.1
    done
    fail "no SRP disk after 30 s"
}

srp_host() {
    local h
    for h in /sys/class/scsi_host/host*; do
        [ "$(cat "$h/proc_name" 2>/dev/null)" = ib_srp ] && { echo "$h"; return 0; }
    done
    return 1
}

channel_count() {
    ferrite_rpc srp_get_channels | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))'
}

# remove_ports: deletes every SRP remote port and waits for the channels to end.
remove_ports() {
    local p i
    for p in /sys/class/srp_remote_ports/*; do
        [ -e "$p/delete" ] && echo 1 >"$p/delete"
    done
    for i in $(seq 300); do
        srp_host >/dev/null || break
        sleep 0.1
    done
    srp_host >/dev/null && fail "the ib_srp SCSI host is still there after delete"
    for i in $(seq 100); do
        [ "$(channel_count)" = 0 ] && break
        sleep 0.2
    done
    expect_eq "channels after the remote port's delete" "$(channel_count)" 0
}

rejects() { grep -c "rejected: .*(0x00010003)" "$FERRITE_LOG" || true; }

say "kernel $(uname -r), $(nproc) vCPUs; $(fio --version); $(rdma link show 2>/dev/null | head -1)"
[ -w "$HOST_DIR/add_target" ] || fail "no $HOST_DIR/add_target (ib_srp on rxe0)"

# --- 1. login and identity ---------------------------------------------------------------
ferrite_start "$config"
targets=$(ferrite_rpc srp_get_targets)
expect_grep "srp0 is active" '"active": true' "$targets"
info=$(ferrite_rpc bdev_get_bdevs -b Malloc0)
read -r t_uuid t_bytes < <(python3 -c '
import json, sys
b = json.load(sys.stdin)[0]
print(b["uuid"], b["num_blocks"] * b["block_size"])' <<<"$info")
serial=${t_uuid//-/}
naa=6${serial:1}
expect_eq "target's Malloc0 uuid" "$t_uuid" "$UUID"

add_target "$ID_EXT" || fail "add_target: $(cat "$VM_WORK/add_target.err")"
dev=$(srp_disk)
host=$(srp_host)
say "logged in to srp0: /dev/$dev ($host)"
expect_eq "size of /dev/$dev" "$(lsblk -bdno SIZE "/dev/$dev")" "$t_bytes"
expect_eq "vendor of /dev/$dev" "$(lsblk -dno VENDOR "/dev/$dev" | sed 's/ *$//')" FERRITE
expect_grep "sg_inq serial" "Unit serial number: $serial *$" "$(sg_inq "/dev/$dev")"
expect_grep "VPD 0x83 NAA designator (the uuid)" "^ *0x$naa$" "$(sg_vpd -p di "/dev/$dev")"
expect_eq "kernel's wwid of /dev/$dev" "$(cat "/sys/block/$dev/device/wwid")" "naa.$naa"
ch=$(cat "$host/ch_count")
expect_eq "channels in srp_get_channels (ib_srp ch_count)" "$(channel_count)" "$ch"
chans=$(ferrite_rpc srp_get_channels)
expect_grep "the channels use immediate data" '"immediate_data": true' "$chans"

# --- 2. fio verify -----------------------------------------------------------------------
fio_verify "$dev" verify --bsrange=4k-1m --iodepth=32

# --- 3. ext4, delete the remote port, add it again with one channel ------------------------
ext4_fill "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"
remove_ports
add_target "$ID_EXT" ch_count=1 || fail "add_target again: $(cat "$VM_WORK/add_target.err")"
dev=$(srp_disk)
expect_eq "channels with ch_count=1" "$(channel_count)" 1
ext4_check "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"
# The file system is not needed any more: the rest uses the disk raw.
FIO_VERIFY_SIZE=64M fio_verify "$dev" verify1 --bsrange=4k-1m --iodepth=32

# --- 4. refused logins -------------------------------------------------------------------
before=$(rejects)
add_target deadbeef00000001 && fail "add_target with an unknown id_ext succeeded"
ok "add_target with an unknown id_ext failed: $(cat "$VM_WORK/add_target.err")"
expect_eq "SRP_LOGIN_REJ 0x00010003 in ferrite's log (unknown target port)" "$(rejects)" "$((before + 1))"
add_target "$ACL_ID_EXT" && fail "add_target to srp-acl (not in its ACL) succeeded"
ok "add_target to srp-acl failed: $(cat "$VM_WORK/add_target.err")"
expect_eq "SRP_LOGIN_REJ 0x00010003 in ferrite's log (ACL)" "$(rejects)" "$((before + 2))"
say "kernel: $(dmesg | grep -iE 'srp.*reject' | tail -n 1)"
expect_eq "channels after the refused logins" "$(channel_count)" 1

# --- 4b. bad input from an initiator of our own (transport/tests/srp_wire.rs) ----------------
if [ -n "$WIRE_BIN" ]; then
    out=$(FERRITE_SRP_TARGET="$ID_EXT:$IOC_GUID@$ADDR:$PORT" "$WIRE_BIN" --ignored --test-threads=1 2>&1) ||
        fail "srp_wire: $out"
    expect_grep "srp_wire: a wrong rkey ends only its channel" "test result: ok. 1 passed" "$out"
    expect_grep "ferrite's log: the failed RDMA WRITE" "work request failed" "$(cat "$FERRITE_LOG")"
    expect_eq "ib_srp's channel after srp_wire" "$(channel_count)" 1
else
    say "srp_wire: no test binary given, skipped (test-all.sh passes it)"
fi

# --- 4c. ferrite-perf srp: our own load generator (its login, credits, direct descriptors) ---
for job in "4k 16" "1m 4"; do
    read -r bs qd <<<"$job"
    out=$("$FERRITE_PERF_BIN" srp -u "srp://$ADDR:$PORT/$ID_EXT/$IOC_GUID/0" -w randrw -o "$bs" \
        -q "$qd" -t 2 -m 0x2 --output json 2>&1) || fail "ferrite-perf srp randrw $bs: $out"
    expect_eq "ferrite-perf srp randrw $bs QD$qd: failed I/Os" \
        "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["failed"] if j["ios"] > 0 else "no I/O")' "$out")" 0
done
expect_eq "ib_srp's channel after ferrite-perf srp" "$(channel_count)" 1

# --- 5. the link down during I/O ---------------------------------------------------------
# The first 128 MiB (verify1's data and what ext4 left) must come through unchanged.
before_sum=$(dd if="/dev/$dev" bs=1M count=128 iflag=direct status=none | sha256sum)
reconnects=$(dmesg | grep -c "reconnect succeeded" || true)
ios=$(disk_ios "$dev")
FIO_VERIFY_SIZE=64M fio_verify "$dev" linkdown --bsrange=4k-256k --iodepth=16 --offset=128M \
    --rate=8m,8m &
fio_pid=$!
wait_for_io "$dev" "$ios"
sleep 1
kill -0 "$fio_pid" 2>/dev/null || fail "fio linkdown ended before the outage (lower its rate)"
# 3 s: ib_srp tries to reconnect reconnect_delay (10 s) after its QP failed; a longer
# outage would have it send its CM request while the port is down (see test/vm/README.md).
link_outage 3
wait "$fio_pid" || fail "fio verify across the link going down"
ferrite_rpc srp_get_targets >/dev/null || fail "ferrite-tgt does not answer after the link came back"
ok "ferrite-tgt answers after the link came back; $(channel_count) channel(s)"
expect_outage_handled
dev=$(srp_disk)
expect_eq "sha256 of the first 128 MiB after the link came back" \
    "$(dd if="/dev/$dev" bs=1M count=128 iflag=direct status=none | sha256sum)" "$before_sum"
[ "$(dmesg | grep -c "reconnect succeeded" || true)" -gt "$reconnects" ] ||
    fail "ib_srp did not log 'reconnect succeeded' after the outage"
ok "ib_srp reconnected: $(dmesg | grep "reconnect succeeded" | tail -n 1)"
expect_eq "channels after the outage" "$(channel_count)" 1

# --- 6. the end --------------------------------------------------------------------------
expect_eq "I/O errors in the kernel's log" "$(dmesg | grep -c 'I/O error' || true)" 0
ferrite_stop
ok "ferrite-tgt stopped cleanly with the initiator logged in"
expect_grep "SRP_T_LOGOUT in the kernel's log" "[Tt]arget logout" "$(dmesg)"
remove_ports_quiet() { for p in /sys/class/srp_remote_ports/*; do [ -e "$p/delete" ] && echo 1 >"$p/delete"; done; }
remove_ports_quiet || true
say "srp: all checks passed"
