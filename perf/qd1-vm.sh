#!/usr/bin/env bash
# Guest script (not in CI): where QD1 latency through Linux's initiators goes, in one VM run.
#
#   cargo build --release --bins
#   test/vm/run.sh --timeout 1200 perf/qd1-vm.sh [--seconds S] [--poll-only] [--placements "1 0 ..."]
#
# Four targets on 169.254.77.1, each a 256 MiB RAM-backed LUN 0: ferrite iSER (:3260) and
# ferrite TCP (:3261) from one ferrite-tgt on FERRITE_CPUMASK (0x1), LIO iSER (:3262) and
# LIO TCP (:3263) from one LIO tpg. fio 4 KiB randread QD1 against each, with fio pinned
# to each vCPU in turn and unpinned. Per run: IOPS, clat min/p50/p90/p99, and the guest's
# interrupt, IPI and softirq counts per I/O (/proc/interrupts, /proc/softirqs).
# --placements "1 0 any 1+spin" (the default): fio's vCPU for each round; N+spin also runs
# a nice-19 busy loop on every vCPU, so no vCPU ever halts (HLT) while waiting; N+fifo makes
# the ksoftirqd threads SCHED_FIFO for the round.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../test/vm/lib.sh"

RUNTIME=5
POLL_ONLY=
PLACEMENTS="1 0 any 1+spin"
while [ "$#" -gt 0 ]; do
    case $1 in
    --seconds) RUNTIME=$2; shift 2 ;;
    --placements) PLACEMENTS=$2; shift 2 ;;
    --poll-only) POLL_ONLY=1; shift ;;
    *) fail "unknown argument $1" ;;
    esac
done
IP=169.254.77.1
IQN=iqn.2026-11.io.ferrite:vm-qd1
LIO_IQN=iqn.2026-11.io.ferrite:vm-lio-qd1
MIB=256
config=$VM_WORK/ferrite-qd1.json
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
     "params": {"name": "$IQN", "alias_name": "ferrite qd1",
                "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}, {"pg_tag": 2, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64,
                "disable_chap": true}}]}
]}
JSON
say "kernel $(uname -r); $(nproc) vCPUs; HZ: $(grep -m1 'CONFIG_HZ=' /boot/config-"$(uname -r)" 2>/dev/null || echo '?')"
if [ -n "$POLL_ONLY" ]; then
    printf '#!/bin/sh\nexec %s --poll-only "$@"\n' "$FERRITE_TGT_BIN" >"$VM_WORK/ferrite-tgt-poll"
    chmod +x "$VM_WORK/ferrite-tgt-poll"
    FERRITE_TGT_BIN=$VM_WORK/ferrite-tgt-poll
fi
ferrite_start "$config"
lio_iscsi_ramdisk "$LIO_IQN" "$IP:3262" "$MIB"
modprobe ib_isert || fail "modprobe ib_isert"
echo 1 >"/sys/kernel/config/target/iscsi/$LIO_IQN/tpgt_1/np/$IP:3262/iser"
mkdir "/sys/kernel/config/target/iscsi/$LIO_IQN/tpgt_1/np/$IP:3263"
ISCSI_IFACE=iser iscsi_login "$IP:3260" "$IQN"
ISCSI_IFACE=iser iscsi_login "$IP:3262" "$LIO_IQN"
ISCSI_IFACE=default iscsi_login "$IP:3261" "$IQN"
ISCSI_IFACE=default iscsi_login "$IP:3263" "$LIO_IQN"
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
targets=("ferrite iSER:$(disk_of "$IQN" iser)" "LIO iSER:$(disk_of "$LIO_IQN" iser)"
    "ferrite TCP:$(disk_of "$IQN" tcp)" "LIO TCP:$(disk_of "$LIO_IQN" tcp)")
say "targets: ${targets[*]}"

# counters: LOC (timer), RES (reschedule IPI), CAL (function-call IPI), and softirqs
counters() {
    awk '/^ *(LOC|RES|CAL):/ { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; printf "%s=%d ", $1, s }' /proc/interrupts
    awk '/^ *(NET_RX|TASKLET|IRQ_POLL|SCHED|TIMER):/ { s = 0; for (i = 2; i <= NF; i++) s += $i; printf "%s=%d ", $1, s }' /proc/softirqs
    # how often the ksoftirqd threads ran (softirqs deferred to them, not run at irq exit)
    local p n=0
    for p in $(pgrep '^ksoftirqd/'); do
        n=$((n + $(awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s }' "/proc/$p/status")))
    done
    printf "KSOFTIRQD=%d " "$n"
}
RESULTS=$VM_WORK/results.md
: >"$RESULTS"
row() { echo "$*" | tee -a "$RESULTS"; }
row "| fio CPU | target | IOPS | min µs | p50 µs | p90 µs | p99 µs | per I/O: timer irq / resched IPI / call IPI / NET_RX / TASKLET / IRQ_POLL / ksoftirqd runs |"
row "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
SPIN_PIDS=()
stop_spinners() {
    local p
    for p in "${SPIN_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SPIN_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SPIN_PIDS=()
}
for cpu in $PLACEMENTS; do
    # N+spin: fio on vCPU N, and a nice-19 busy loop on every vCPU so that none ever halts
    # (fio and the target preempt it at once: it only keeps the vCPUs out of HLT).
    # N+fifo: fio on vCPU N, the ksoftirqd threads SCHED_FIFO for the round (softirqs
    # deferred to them run at once instead of waiting for the CPU's current task).
    if [ "${cpu%+fifo}" != "$cpu" ]; then
        for p in $(pgrep '^ksoftirqd/'); do chrt -f -p 1 "$p"; done
    fi
    if [ "${cpu%+spin}" != "$cpu" ]; then
        for c in $(seq 0 $(($(nproc) - 1))); do
            taskset -c "$c" nice -n 19 sh -c 'while :; do :; done' &
            SPIN_PIDS+=($!)
        done
    fi
    pin=(--cpus_allowed="${cpu%+*}")
    [ "$cpu" != any ] || pin=()
    for t in "${targets[@]}"; do
        name="qd1-${cpu}-${t%%:*}"; name=${name// /-}
        c0=$(counters)
        fio_run "$name" --filename="/dev/${t#*:}" --ioengine=libaio --direct=1 --time_based \
            --runtime="$RUNTIME" --ramp_time=1 "${pin[@]}" --size=${MIB}M --rw=randread --bs=4k \
            --iodepth=1 --output-format=json
        c1=$(counters)
        python3 - "$VM_WORK/$name.fio" "$cpu" "${t%%:*}" "$c0" "$c1" "$RUNTIME" <<'PY' | tee -a "$RESULTS"
import json, sys
path, cpu, target, c0, c1, secs = sys.argv[1:]
j = json.load(open(path))["jobs"][0]["read"]
p = j["clat_ns"]["percentile"]
a = dict(kv.split("=") for kv in c0.split()); b = dict(kv.split("=") for kv in c1.split())
n = max(1, j["total_ios"])
def per(k): return "%.2f" % ((int(b[k]) - int(a[k])) / n)
print("| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %s |" % (cpu, target, j["iops"],
    j["clat_ns"]["min"] / 1e3, p["50.000000"] / 1e3, p["90.000000"] / 1e3, p["99.000000"] / 1e3,
    " / ".join(per(k) for k in ("LOC:", "RES:", "CAL:", "NET_RX:", "TASKLET:", "IRQ_POLL:", "KSOFTIRQD"))))
PY
    done
    stop_spinners
    for p in $(pgrep '^ksoftirqd/'); do chrt -o -p 0 "$p"; done
done
iscsiadm -m node --logoutall=all >/dev/null || true
ferrite_stop
echo
say "results:"
cat "$RESULTS"
