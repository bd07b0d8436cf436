#!/usr/bin/env bash
# Guest script: Linux's iSCSI initiator (open-iscsi, iscsi_tcp) against ferrite-tgt running in
# the same VM, then the same fio jobs against LIO for a performance ratio. Run it with
#
#   test/vm/run.sh --timeout 900 test/vm/iscsi-tcp.sh [--no-perf]
#
# ferrite-tgt (the host's release build) serves a 256 MiB malloc LUN on 127.0.0.1:3260, one
# reactor (-m 0x1). Checks, each failing the script when it fails:
#   1. discovery and login; /dev/sdX with the LUN's size, vendor, product, serial and VPD 0x83
#      designators as the target reports them (rpc.py bdev_get_bdevs) and the kernel sees them;
#   2. fio verify (randrw, 4 KiB-256 KiB, QD16, crc32c, O_DIRECT, libaio);
#   3. ext4: files and sha256 sums, unmount, logout, login again, the sums match;
#   4. a LUN reset (sg_reset -d) during fio verify: fio passes, the target logs the reset;
#   5. ferrite-tgt killed (SIGKILL) during fio and restarted with the same config: the session
#      recovers and fio ends without an I/O error. The malloc LUN comes back empty, so that
#      fio runs without verify; a verify job after the restart checks the new instance's data;
#   6. (unless --no-perf) LIO with an rd_mcp ramdisk of the same size on 127.0.0.1:3261 and
#      ferrite, the same fio jobs alternately; prints IOPS, MiB/s and the ratio.
set -euo pipefail
# shellcheck source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

perf=1
[ "${1:-}" = --no-perf ] && perf=0

PORTAL=127.0.0.1:3260
IQN=iqn.2026-11.io.ferrite:vm-tcp
LUN_MIB=256
# Fixed, so that the restarted target is the same disk to the initiator.
UUID=6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9
LIO_PORTAL=127.0.0.1:3261
LIO_IQN=iqn.2026-11.io.ferrite:vm-lio-peer
# Recovery after the kill must fit in this; the kernel fails I/O after it.
export ISCSI_NODE_SETTINGS="node.session.timeo.replacement_timeout=60"

config=$VM_WORK/ferrite.json
cat >"$config" <<EOF
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc0", "num_blocks": $((LUN_MIB * 2048)), "block_size": 512, "uuid": "$UUID"}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "${PORTAL%:*}", "port": "${PORTAL#*:}"}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["127.0.0.1/32"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "ferrite vm", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
EOF

# How many times the target logged a LUN reset it completed.
lun_resets() {
    grep -c 'task management LogicalUnitReset on LUN 0: FunctionComplete' "$FERRITE_LOG" || true
}

# wait_inflight DEV: until the kernel has I/O in flight on DEV (fails after 20 s).
wait_inflight() {
    for _ in $(seq 200); do
        [ "$(awk '{ print $1 + $2 }' "/sys/block/$1/inflight")" -gt 0 ] && return 0
        sleep 0.1
    done
    fail "no I/O in flight on /dev/$1"
}

say "kernel $(uname -r), $(nproc) vCPUs; $(iscsiadm --version); $(fio --version)"

# --- 1. login and identity ---------------------------------------------------------------
ferrite_start "$config"
info=$(ferrite_rpc bdev_get_bdevs -b Malloc0)
read -r t_uuid t_product t_bytes < <(python3 -c '
import json, sys
b = json.load(sys.stdin)[0]
print(b["uuid"], b["product_name"].replace(" ", "_"), b["num_blocks"] * b["block_size"])' <<<"$info")
t_product=${t_product//_/ }
serial=${t_uuid//-/}
naa=6${serial:1}
expect_eq "target's Malloc0 uuid" "$t_uuid" "$UUID"

iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "logged in to $IQN: /dev/$dev"
expect_eq "size of /dev/$dev" "$(lsblk -bdno SIZE "/dev/$dev")" "$t_bytes"
expect_eq "transport of /dev/$dev" "$(lsblk -dno TRAN "/dev/$dev")" iscsi
expect_eq "vendor of /dev/$dev" "$(lsblk -dno VENDOR "/dev/$dev" | sed 's/ *$//')" FERRITE
expect_eq "model of /dev/$dev" "$(lsblk -dno MODEL "/dev/$dev" | sed 's/ *$//')" "$t_product"
inq=$(sg_inq "/dev/$dev")
expect_grep "sg_inq vendor" "Vendor identification: FERRITE *$" "$inq"
expect_grep "sg_inq product" "Product identification: $t_product *$" "$inq"
expect_grep "sg_inq serial" "Unit serial number: $serial *$" "$inq"
expect_grep "sg_vpd -p sn" "Unit serial number: $serial *$" "$(sg_vpd -p sn "/dev/$dev")"
di=$(sg_vpd -p di "/dev/$dev")
expect_grep "VPD 0x83 NAA designator (the uuid)" "^ *0x$naa$" "$di"
expect_grep "VPD 0x83 T10 vendor ID" "vendor id: FERRITE" "$di"
expect_grep "VPD 0x83 T10 vendor specific (the serial)" "vendor specific: $serial" "$di"
expect_grep "VPD 0x83 SCSI name of the target" "$IQN" "$di"
expect_eq "kernel's wwid of /dev/$dev" "$(cat "/sys/block/$dev/device/wwid")" "naa.$naa"

# --- 2. fio verify ------------------------------------------------------------------------
fio_verify "$dev" verify

# --- 3. ext4, logout, login, sums -----------------------------------------------------------
ext4_fill "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"
iscsi_logout "$PORTAL" "$IQN"
say "logged out"
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "logged in again: /dev/$dev"
ext4_check "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"

# --- 4. LUN reset during fio verify ---------------------------------------------------------
resets=$(lun_resets)
# Capped at 20 MiB/s each way so that the job outlasts the reset on a fast machine too (TCG
# stays below it; fio turns --rate_iops into bytes at the smallest block size: no use here).
FIO_VERIFY_SIZE=256M fio_verify "$dev" verify-reset --rate=20m &
fio_pid=$!
wait_inflight "$dev"
sleep 1
sg_reset -d "/dev/$dev" || fail "sg_reset -d /dev/$dev"
kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before the LUN reset: make its job longer"
ok "sg_reset -d /dev/$dev during fio"
wait "$fio_pid" || fail "fio verify across the LUN reset"
expect_eq "LUN resets in the target's log" "$(lun_resets)" "$((resets + 1))"

# --- 5. target killed and restarted during fio ---------------------------------------------
fio_run restart --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw=randrw \
    --bsrange=4k-256k --iodepth=16 --time_based --runtime=30 &
fio_pid=$!
wait_inflight "$dev"
sleep 2
ferrite_kill
sleep 3
ferrite_start "$config"
t=$EPOCHREALTIME
ops=0
while [ "$ops" -eq 0 ]; do
    ops=$(ferrite_rpc bdev_get_iostat -b Malloc0 | python3 -c '
import json, sys
b = json.load(sys.stdin)["bdevs"][0]
print(b["num_read_ops"] + b["num_write_ops"])')
    secs=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
    [ "$secs" -lt 90 ] || fail "no I/O reached the restarted target in 90 s"
done
ok "the initiator recovered: I/O reached the restarted target within ${secs} s"
wait "$fio_pid" || fail "fio across the target's restart"
kill -0 "$FERRITE_PID" 2>/dev/null || fail "ferrite-tgt died after its restart"
ok "fio (randrw, no verify: the malloc LUN restarted empty) ended without errors across the kill and restart"
expect_grep "session state after recovery" "iSCSI Session State: LOGGED_IN" "$(iscsiadm -m session -P 1)"
FIO_VERIFY_SIZE=64M fio_verify "$dev" verify-after-restart

# --- 6. LIO as the peer ---------------------------------------------------------------------
if [ "$perf" = 1 ]; then
    lio_iscsi_ramdisk "$LIO_IQN" "$LIO_PORTAL" "$LUN_MIB"
    iscsi_login "$LIO_PORTAL" "$LIO_IQN"
    lio_dev=$(iscsi_disk "$LIO_IQN")
    expect_eq "size of LIO's /dev/$lio_dev" "$(lsblk -bdno SIZE "/dev/$lio_dev")" "$t_bytes"
    secs=${PERF_SECS:-10}
    rows=()
    res_ferrite="" res_lio=""
    order="ferrite lio"
    for w in "randread 4k" "randwrite 4k" "randread 128k" "randwrite 128k"; do
        read -r rw bs <<<"$w"
        for who in $order; do
            d=$dev
            [ "$who" = lio ] && d=$lio_dev
            r=$(fio_iops "$d" "perf-$who-$rw-$bs" --rw="$rw" --bs="$bs" --iodepth=16 \
                --ramp_time=2 --runtime="$secs")
            say "$who $rw $bs QD16: ${r% *} IOPS, ${r#* } MiB/s"
            printf -v "res_$who" '%s' "$r"
        done
        ratio=$(awk -v f="${res_ferrite% *}" -v l="${res_lio% *}" 'BEGIN { printf "%.2f", f / l }')
        rows+=("| $bs $rw QD16 | ${res_ferrite% *} | ${res_ferrite#* } | ${res_lio% *} | ${res_lio#* } | **$ratio** |")
        # The other target goes first next time: the machine's speed drifts.
        order=$(echo "$order" | awk '{ print $2, $1 }')
    done
    echo
    echo "fio libaio direct, ${secs} s + 2 s ramp each, one LUN of $LUN_MIB MiB; ferrite: malloc, one reactor (-m 0x1);"
    echo "LIO: rd_mcp, its kernel threads on any of the $(nproc) vCPUs; fio and the initiator share the same vCPUs."
    echo
    echo "| job | ferrite IOPS | ferrite MiB/s | LIO IOPS | LIO MiB/s | ferrite / LIO |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    iscsi_logout "$LIO_PORTAL" "$LIO_IQN"
fi

expect_eq "I/O errors in the kernel's log" "$(dmesg | grep -c 'I/O error' || true)" 0
iscsi_logout "$PORTAL" "$IQN"
ferrite_stop
ok "logged out; ferrite-tgt stopped cleanly"
say "iscsi-tcp: all checks passed"
