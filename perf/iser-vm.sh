#!/usr/bin/env bash
# Guest script (not in CI): iSER performance in one VM run, over soft-RoCE rxe0.
#
#   cargo build --release --bins
#   test/vm/run.sh --timeout 1800 perf/iser-vm.sh [--seconds S] [--poll-only] [--only REGEX] [--no-fio]
#
# Three targets, each a 256 MiB RAM-backed LUN 0 on 169.254.77.1:
#   ferrite iSER  ferrite-tgt (one reactor, core 0), iSER portal :3260, malloc bdev
#   ferrite TCP   the same process and LUN, TCP portal :3261
#   LIO iSER      ib_isert, rd_mcp ramdisk, portal :3262 (np/.../iser = 1)
# The same fio jobs (libaio, O_DIRECT, pinned to CPU 1, S seconds after a 2 s ramp) through
# Linux's initiator (iscsiadm -I iser for the iSER targets), the targets taken in turn for
# each job and the order alternated: 4 KiB random read at QD1 and QD32, 4 KiB random write
# at QD32, 128 KiB random read at QD32. Then ferrite-perf iser (core 1) against both iSER
# targets: the same three read jobs.
#
# --poll-only runs ferrite-tgt with --poll-only (its reactor never sleeps); --only runs the
# jobs whose name matches REGEX (grep -E); --no-fio runs only the ferrite-perf jobs.
#
# Reported: IOPS, MiB/s, mean and p99 completion latency (fio's clat), and CPU: for
# ferrite its reactor's busy share (framework_get_reactors), for every run the guest's
# whole non-idle CPU over the run (/proc/stat: initiator and target together, both vCPUs).
# Under TCG everything is slow and the initiator dominates: only ratios within a run mean
# anything. Figures go into perf/RESULTS.md.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../test/vm/lib.sh"

RUNTIME=10
POLL_ONLY=
ONLY=.
NO_FIO=
while [ "$#" -gt 0 ]; do
    case $1 in
    --seconds) RUNTIME=$2; shift 2 ;;
    --poll-only) POLL_ONLY=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --no-fio) NO_FIO=1; shift ;;
    *) fail "unknown argument $1" ;;
    esac
done
FERRITE_PERF_BIN=${FERRITE_PERF_BIN:-$VM_REPO/target/release/ferrite-perf}
IP=169.254.77.1
IQN=iqn.2026-11.io.ferrite:vm-perf
LIO_IQN=iqn.2026-11.io.ferrite:vm-lio-isert
MIB=256

config=$VM_WORK/ferrite-perf.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc0", "num_blocks": $((MIB * 2048)), "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "$IP", "port": "3260", "iser": true}]}},
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 2, "portals": [{"host": "$IP", "port": "3261"}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "ferrite perf",
                "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}, {"pg_tag": 2, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64,
                "disable_chap": true}}]}
]}
JSON

say "kernel $(uname -r); $(nproc) vCPUs; fio $(fio --version)"
if [ -n "$POLL_ONLY" ]; then
    # lib.sh starts $FERRITE_TGT_BIN: a wrapper adds the flag (exec keeps the PID).
    printf '#!/bin/sh\nexec %s --poll-only "$@"\n' "$FERRITE_TGT_BIN" >"$VM_WORK/ferrite-tgt-poll"
    chmod +x "$VM_WORK/ferrite-tgt-poll"
    FERRITE_TGT_BIN=$VM_WORK/ferrite-tgt-poll
    say "ferrite-tgt runs with --poll-only"
fi
FERRITE_CPUMASK=0x1 ferrite_start "$config"
lio_iscsi_ramdisk "$LIO_IQN" "$IP:3262" "$MIB"
modprobe ib_isert || fail "modprobe ib_isert"
echo 1 >"/sys/kernel/config/target/iscsi/$LIO_IQN/tpgt_1/np/$IP:3262/iser"
say "LIO portal $IP:3262 is iSER"

ISCSI_IFACE=iser iscsi_login "$IP:3260" "$IQN"
ISCSI_IFACE=iser iscsi_login "$IP:3262" "$LIO_IQN"
# -I default: the SendTargets answers list both portals, and a login without -I would
# also try the iSER records of the TCP portal.
ISCSI_IFACE=default iscsi_login "$IP:3261" "$IQN"
# The ferrite node has two sessions (iSER and TCP): tell their disks apart by transport.
disk_of() { # IQN TRANSPORT
    local s dev sid
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname")" = "$1" ] || continue
        sid=${s##*session}
        iscsiadm -m session -r "$sid" -P 1 | grep -q "Iface Transport: $2\$" || continue
        for dev in "$s"/device/target*/*:0/block/*; do
            [ -b "/dev/${dev##*/}" ] && { echo "${dev##*/}"; return 0; }
        done
    done
    fail "no $2 disk for $1"
}
sleep 2
dev_fi=$(disk_of "$IQN" iser)
dev_ft=$(disk_of "$IQN" tcp)
dev_li=$(disk_of "$LIO_IQN" iser)
say "ferrite iSER /dev/$dev_fi, ferrite TCP /dev/$dev_ft, LIO iSER /dev/$dev_li"

cpu_ticks() { awk '/^cpu / { print $2+$3+$4+$6+$7+$8, $5 }' /proc/stat; }
reactor_ticks() {
    ferrite_rpc framework_get_reactors | python3 -c '
import json, sys
r = json.load(sys.stdin)["reactors"][0]
print(r["busy"], r["idle"])'
}

RESULTS=$VM_WORK/results.md
: >"$RESULTS"
row() { echo "$*" | tee -a "$RESULTS"; }

# fio_job TARGET DEV NAME FIO-ARGS...: one timed job; a table row.
fio_job() {
    local target=$1 dev=$2 name=$3 c0 c1 r0 r1 share="-"
    shift 3
    c0=$(cpu_ticks)
    [ "$target" = "LIO iSER" ] || r0=$(reactor_ticks)
    fio_run "$name" --filename="/dev/$dev" --ioengine=libaio --direct=1 --time_based \
        --runtime="$RUNTIME" --ramp_time=2 --cpus_allowed=1 --size=${MIB}M \
        --output-format=json "$@"
    c1=$(cpu_ticks)
    if [ "$target" != "LIO iSER" ]; then
        r1=$(reactor_ticks)
        share=$(awk -v a="$r0" -v b="$r1" 'BEGIN { split(a, x, " "); split(b, y, " ");
            printf "%.0f%%", 100 * (y[1] - x[1]) / ((y[1] - x[1]) + (y[2] - x[2])) }')
    fi
    python3 - "$VM_WORK/$name.fio" "$target" "$name" "$share" "$c0" "$c1" <<'PY' | tee -a "$RESULTS"
import json, sys
path, target, name, share, c0, c1 = sys.argv[1:]
j = json.load(open(path))["jobs"][0]
io = j["read"] if j["read"]["io_bytes"] else j["write"]
busy0, idle0 = map(int, c0.split()); busy1, idle1 = map(int, c1.split())
cpu = 100 * (busy1 - busy0) / max(1, (busy1 - busy0) + (idle1 - idle0)) * 2
print("| %s | %s | %.0f | %.1f | %.1f | %.1f | %s | %.0f%% |" % (
    name, target, io["iops"], io["bw_bytes"] / 2**20, io["clat_ns"]["mean"] / 1e3,
    io["clat_ns"]["percentile"]["99.000000"] / 1e3, share, cpu))
PY
}

row "| job | target | IOPS | MiB/s | mean clat µs | p99 clat µs | ferrite reactor busy | guest CPU (of 200%) |"
row "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
jobs=("4k-randread-qd1:--rw=randread --bs=4k --iodepth=1"
    "4k-randread-qd32:--rw=randread --bs=4k --iodepth=32"
    "4k-randwrite-qd32:--rw=randwrite --bs=4k --iodepth=32"
    "128k-randread-qd32:--rw=randread --bs=128k --iodepth=32")
k=0
for job in "${jobs[@]}"; do
    name=${job%%:*}
    [ -z "$NO_FIO" ] || continue
    grep -Eq -- "$ONLY" <<<"$name" || continue
    read -ra args <<<"${job#*:}"
    order=("ferrite iSER:$dev_fi" "LIO iSER:$dev_li" "ferrite TCP:$dev_ft")
    if [ $((k % 2)) -eq 1 ]; then
        order=("ferrite TCP:$dev_ft" "LIO iSER:$dev_li" "ferrite iSER:$dev_fi")
    fi
    for t in "${order[@]}"; do
        fio_job "${t%%:*}" "${t#*:}" "$name" "${args[@]}"
    done
    k=$((k + 1))
done

# ferrite-perf iser, the initiator on core 1. The kernel sessions stay logged in, idle.
row ""
row "| ferrite-perf iser job | target | IOPS | MiB/s | mean µs | p99 µs | ferrite reactor busy | client reactor busy |"
row "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
perf_job() { # TARGET URL NAME ARGS...
    local target=$1 url=$2 name=$3 r0 r1 share="-"
    shift 3
    [ "$target" = "LIO iSER" ] || r0=$(reactor_ticks)
    "$FERRITE_PERF_BIN" iser -u "$url" -m 0x2 -t "$RUNTIME" --output json "$@" \
        >"$VM_WORK/$name.perf" 2>"$VM_WORK/$name.perf.err" || {
        cat "$VM_WORK/$name.perf.err"
        fail "ferrite-perf iser $name against $target"
    }
    if [ "$target" != "LIO iSER" ]; then
        r1=$(reactor_ticks)
        share=$(awk -v a="$r0" -v b="$r1" 'BEGIN { split(a, x, " "); split(b, y, " ");
            printf "%.0f%%", 100 * (y[1] - x[1]) / ((y[1] - x[1]) + (y[2] - x[2])) }')
    fi
    python3 - "$VM_WORK/$name.perf" "$target" "$name" "$share" <<'PY' | tee -a "$RESULTS"
import json, sys
path, target, name, share = sys.argv[1:]
j = json.load(open(path))
print("| %s | %s | %.0f | %.1f | %.1f | %.1f | %s | %s |" % (
    name, target, j["iops"], j["mib_s"], j["latency_us"]["avg"], j["latency_us"]["p99"],
    share, "/".join("%.0f%%" % p for p in j["client_busy_pct"])))
PY
}
pjobs=("4k-randread-qd1:-w randread -o 4k -q 1"
    "4k-randread-qd32:-w randread -o 4k -q 32"
    "128k-randread-qd32:-w randread -o 128k -q 32")
k=0
for job in "${pjobs[@]}"; do
    name=${job%%:*}
    grep -Eq -- "$ONLY" <<<"$name" || continue
    read -ra args <<<"${job#*:}"
    order=("ferrite iSER:iser://$IP:3260/$IQN/0" "LIO iSER:iser://$IP:3262/$LIO_IQN/0")
    [ $((k % 2)) -eq 0 ] || order=("${order[1]}" "${order[0]}")
    for t in "${order[@]}"; do
        perf_job "${t%%:*}" "${t#*:}" "perf-$name" "${args[@]}"
    done
    k=$((k + 1))
done

iscsiadm -m node --logoutall=all >/dev/null || true
ferrite_stop
echo
say "results:"
cat "$RESULTS"
