#!/usr/bin/env bash
# Guest script (not in CI): a scheduler trace of 4 s of fio 4 KiB randread QD1 (fio on vCPU 1)
# through ib_iser against ferrite iSER (one reactor on vCPU 0): who wakes whom, context
# switches, call-function IPIs and timer interrupts per vCPU (perf record -a, tracepoints).
#
#   cargo build --release --bins
#   test/vm/run.sh --timeout 900 perf/qd1-trace-vm.sh
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../test/vm/lib.sh"
IP=169.254.77.1
IQN=iqn.2026-11.io.ferrite:vm-qd1
config=$VM_WORK/f.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 524288, "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group", "params": {"tag": 1, "portals": [{"host": "$IP", "port": "3260", "iser": true}]}},
    {"method": "iscsi_create_initiator_group", "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node", "params": {"name": "$IQN", "alias_name": "q", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
       "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
JSON
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing || true
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug || true
ferrite_start "$config"
ISCSI_IFACE=iser iscsi_login "$IP:3260" "$IQN"
sleep 2
dev=$(iscsi_disk "$IQN")
say "ferrite threads: $(ps -T -p "$FERRITE_PID" -o tid=,comm=,psr= | tr '\n' ';')"
perf record -o "$VM_WORK/perf.data" -a -e sched:sched_wakeup,sched:sched_switch,irq_vectors:call_function_single_entry,irq_vectors:local_timer_entry -- \
    fio --name=t --filename="/dev/$dev" --ioengine=libaio --direct=1 --time_based --runtime=4 --cpus_allowed=1 \
    --rw=randread --bs=4k --iodepth=1 --output-format=json --output="$VM_WORK/fio.json" || say "perf record failed"
say "fio: $(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))["jobs"][0]["read"]; print(r["total_ios"], "I/Os,", round(r["iops"]), "IOPS")' "$VM_WORK/fio.json")"
set +o pipefail # head closes the summaries' pipes early
perf script -i "$VM_WORK/perf.data" -F comm,tid,cpu,event,trace 2>/dev/null >"$VM_WORK/trace.txt" || true
say "events by type and cpu:"
awk '{for(i=1;i<=NF;i++) if ($i ~ /^(sched|irq_vectors):/) {print $i, $3}}' "$VM_WORK/trace.txt" | sort | uniq -c | sort -rn | head -20
say "wakeups: waker comm -> wakee comm target_cpu:"
grep "sched:sched_wakeup" "$VM_WORK/trace.txt" | sed -E 's/^ *([^ ]+) +[0-9]+ +\[([0-9]+)\].*comm=([^ ]+) .*target_cpu=([0-9]+).*/\1 cpu\2 -> \3 cpu\4/' | sort | uniq -c | sort -rn | head -25
say "switches to (next_comm) by cpu:"
grep "sched:sched_switch" "$VM_WORK/trace.txt" | sed -E 's/.*\[([0-9]+)\].*next_comm=([^ ]+) .*/cpu\1 \2/' | sort | uniq -c | sort -rn | head -25
say "call_function_single IPIs: interrupted comm by cpu:"
grep "call_function_single_entry" "$VM_WORK/trace.txt" | awk '{print $1, $3}' | sort | uniq -c | sort -rn | head -10
say "local timer interrupts: interrupted comm by cpu:"
grep "local_timer_entry" "$VM_WORK/trace.txt" | awk '{print $1, $3}' | sort | uniq -c | sort -rn | head -10
iscsiadm -m node --logoutall=all >/dev/null || true
ferrite_stop
