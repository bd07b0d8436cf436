#!/usr/bin/env bash
# ferrite SRP against LIO's ib_srpt and ferrite iSER, the same fio jobs through Linux's
# initiators (ib_srp, ib_iser) over soft-RoCE in one VM run, printed as a Markdown table.
# A guest script for the VM test bed, not part of the CI suite:
#
#   cargo build --release --bins
#   test/vm/run.sh --timeout 1500 perf/srp-vs-lio.sh [-t SECONDS] [-n]
#
# ferrite-tgt runs one reactor (-m 0x1) with two 128 MiB malloc bdevs: Malloc0 as LUN 0 of
# SRP target srp0 (169.254.77.1:5555), Malloc1 as LUN 0 of an iSCSI target on an iSER portal
# (169.254.77.1:3260). LIO serves a 128 MiB rd_mcp ramdisk through ib_srpt (RDMA CM port
# 5556). ib_srp logs in to both SRP targets with its defaults (one channel per vCPU).
# Each job runs SECONDS (default 8, after a 2 s ramp) on each disk in turn: fio, libaio,
# O_DIRECT, one job. Then the same jobs with ferrite-perf srp as the initiator (its reactor
# on core 1, one channel, SECONDS each, no ramp) against both SRP targets, the kernel's
# sessions staying logged in, idle. -n: only the ferrite-perf srp jobs (no fio).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=test/vm/lib.sh
source "$ROOT/test/vm/lib.sh"

SECS=8
FIO=1
while getopts "t:n" o; do
    case $o in
        t) SECS=$OPTARG ;;
        n) FIO=0 ;;
        *) sed -n '2,18p' "$0"; exit 2 ;;
    esac
done

ADDR=169.254.77.1
SRP_PORT=5555
LIO_PORT=5556
ISER_PORTAL=$ADDR:3260
IQN=iqn.2026-11.io.ferrite:perf-iser
ID_EXT=0002c90300a1b2c3
IOC_GUID=0002c90300d4e5f6
MIB=128
HOST_DIR=/sys/class/infiniband_srp/srp-rxe0-1
FERRITE_PERF_BIN=${FERRITE_PERF_BIN:-$VM_REPO/target/release/ferrite-perf}
export ISCSI_IFACE=iser

config=$VM_WORK/ferrite-perf.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": $((MIB * 2048)), "block_size": 512}},
    {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": $((MIB * 2048)), "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "$ADDR", "port": "3260", "iser": true}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "perf iser", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc1", "lun_id": 0}], "queue_depth": 128, "disable_chap": true}}]},
  {"subsystem": "srp", "config": [
    {"method": "srp_create_target",
     "params": {"name": "srp0", "id_ext": "$ID_EXT", "ioc_guid": "$IOC_GUID",
                "host": "$ADDR", "port": $SRP_PORT, "luns": [{"bdev_name": "Malloc0", "lun_id": 0}]}}]}
]}
JSON

# The sdX of the ib_srp SCSI host whose target is $1 (id_ext), waiting up to 30 s.
srp_disk_of() {
    local want=$1 h dev i
    for i in $(seq 300); do
        for h in /sys/class/scsi_host/host*; do
            [ "$(cat "$h/proc_name" 2>/dev/null)" = ib_srp ] || continue
            grep -qi "$want" "$h/id_ext" 2>/dev/null || continue
            for dev in "$h"/device/target*/*:0/block/*; do
                [ -b "/dev/${dev##*/}" ] && { echo "${dev##*/}"; return 0; }
            done
        done
        sleep 0.1
    done
    fail "no SRP disk for id_ext $want after 30 s"
}

# LIO: an rd_mcp ramdisk as LUN 0 of ib_srpt's port on rxe0, for the initiator at $ADDR.
lio_srpt_ramdisk() {
    local cfs=/sys/kernel/config/target guid tpg rd
    guid=$(cat /sys/class/infiniband/rxe0/node_guid)
    rd=$cfs/core/rd_mcp_0/srp_peer
    modprobe -a target_core_mod ib_srpt || fail "modprobe ib_srpt"
    # The fabric's directory appears when made; then its discovery attributes.
    mkdir -p "$cfs/srpt"
    echo "$LIO_PORT" >"$cfs/srpt/discovery_auth/rdma_cm_port"
    mkdir -p "$rd"
    echo "rd_pages=$((MIB * 1024 * 1024 / $(getconf PAGESIZE)))" >"$rd/control"
    echo 1 >"$rd/enable"
    tpg=$cfs/srpt/$guid/tpgt_1
    mkdir -p "$tpg/lun/lun_0"
    ln -s "$rd" "$tpg/lun/lun_0/srp_peer"
    mkdir -p "$tpg/acls/$ADDR/lun_0"
    ln -s "$tpg/lun/lun_0" "$tpg/acls/$ADDR/lun_0/lun_0"
    echo 1 >"$tpg/enable"
    LIO_ID=${guid//:/}
    say "LIO ib_srpt: port $guid, $MIB MiB rd_mcp LUN 0, RDMA CM port $LIO_PORT"
}

say "kernel $(uname -r), $(nproc) vCPUs, $(fio --version), ${SECS}s per run"
ferrite_start "$config"
echo "id_ext=$ID_EXT,ioc_guid=$IOC_GUID,dest=$ADDR:$SRP_PORT" >"$HOST_DIR/add_target" ||
    fail "add_target ferrite"
f_srp=$(srp_disk_of "$ID_EXT")
lio_srpt_ramdisk
echo "id_ext=$LIO_ID,ioc_guid=$LIO_ID,dest=$ADDR:$LIO_PORT" >"$HOST_DIR/add_target" ||
    fail "add_target LIO"
l_srp=$(srp_disk_of "$LIO_ID")
iscsi_login "$ISER_PORTAL" "$IQN"
f_iser=$(iscsi_disk "$IQN")
say "ferrite SRP /dev/$f_srp, LIO SRP /dev/$l_srp, ferrite iSER /dev/$f_iser"
for d in "$f_srp" "$l_srp" "$f_iser"; do
    expect_eq "size of /dev/$d" "$(lsblk -bdno SIZE "/dev/$d")" "$((MIB * 1024 * 1024))"
    [ "$FIO" = 1 ] || continue
    # Fill once, so reads are of written blocks everywhere.
    fio_run "fill-$d" --filename="/dev/$d" --ioengine=libaio --direct=1 --rw=write --bs=1m \
        --iodepth=8 --size="${MIB}M"
done

# name  rw  block size  depth
JOBS=(
    "randread-4k-qd1    randread   4k    1"
    "randread-4k-qd32   randread   4k    32"
    "randwrite-4k-qd32  randwrite  4k    32"
    "read-128k-qd16     read       128k  16"
    "write-128k-qd16    write      128k  16"
    "read-1m-qd8        read       1m    8"
    "write-1m-qd8       write      1m    8"
)
if [ "$FIO" = 1 ]; then
    echo
    echo "| job | ferrite SRP | LIO ib_srpt | ferrite iSER | SRP ferrite/LIO | ferrite SRP/iSER |"
    echo "| --- | --- | --- | --- | --- | --- |"
fi
for job in "${JOBS[@]}"; do
    [ "$FIO" = 1 ] || break
    read -r name rw bs qd <<<"$job"
    declare -A got=()
    for d in "$f_srp" "$l_srp" "$f_iser"; do
        got[$d]=$(fio_iops "$d" "$name-$d" --rw="$rw" --bs="$bs" --iodepth="$qd" \
            --runtime="$SECS" --ramp_time=2 --size="${MIB}M")
    done
    python3 - "$name" "$bs" "${got[$f_srp]}" "${got[$l_srp]}" "${got[$f_iser]}" <<'PY'
import sys
name, bs = sys.argv[1], sys.argv[2]
f, l, i = ([float(x) for x in a.split()] for a in sys.argv[3:6])
k = 0 if bs == "4k" else 1  # IOPS for 4 KiB jobs, MiB/s for the others
unit = "IOPS" if k == 0 else "MiB/s"
fmt = lambda v: ("%.0f" if k == 0 else "%.1f") % v[k]
ratio = lambda a, b: "%.2f" % (a[k] / b[k]) if b[k] else "-"
print("| %s (%s) | %s | %s | %s | %s | %s |" % (name, unit, fmt(f), fmt(l), fmt(i), ratio(f, l), ratio(f, i)))
PY
    unset got
done

# ferrite-perf srp: the same jobs, our own initiator on core 1 (ferrite-tgt is on core 0).
perf_srp() { # NAME URL RW BS QD: prints "IOPS MiB/s mean-us p99-us", fails on any error
    local out=$VM_WORK/$1.perf
    "$FERRITE_PERF_BIN" srp -u "$2" -w "$3" -o "$4" -q "$5" -t "$SECS" -m 0x2 --output json \
        >"$out" 2>"$out.err" || { cat "$out.err" "$out" >&2; fail "ferrite-perf srp $1"; }
    python3 - "$out" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["failed"] == 0 and j["ios"] > 0, j
print(j["iops"], j["mib_s"], j["latency_us"]["avg"], j["latency_us"]["p99"])
PY
}
echo
echo "| ferrite-perf srp job | ferrite SRP | LIO ib_srpt | ferrite/LIO | mean µs ferrite / LIO |"
echo "| --- | --- | --- | --- | --- |"
for job in "${JOBS[@]}"; do
    read -r name rw bs qd <<<"$job"
    f=$(perf_srp "perf-$name-ferrite" "srp://$ADDR:$SRP_PORT/$ID_EXT/$IOC_GUID/0" "$rw" "$bs" "$qd")
    l=$(perf_srp "perf-$name-lio" "srp://$ADDR:$LIO_PORT/$LIO_ID/$LIO_ID/0" "$rw" "$bs" "$qd")
    python3 - "$name" "$bs" "$f" "$l" <<'PY'
import sys
name, bs = sys.argv[1], sys.argv[2]
f, l = ([float(x) for x in a.split()] for a in sys.argv[3:5])
k = 0 if bs == "4k" else 1  # IOPS for 4 KiB jobs, MiB/s for the others
unit = "IOPS" if k == 0 else "MiB/s"
fmt = lambda v: ("%.0f" if k == 0 else "%.1f") % v[k]
ratio = "%.2f" % (f[k] / l[k]) if l[k] else "-"
print("| %s (%s) | %s | %s | %s | %.0f / %.0f |" % (name, unit, fmt(f), fmt(l), ratio, f[2], l[2]))
PY
done
echo
for p in /sys/class/srp_remote_ports/*; do [ -e "$p/delete" ] && echo 1 >"$p/delete"; done
iscsi_logout "$ISER_PORTAL" "$IQN"
ferrite_stop
say "done"
