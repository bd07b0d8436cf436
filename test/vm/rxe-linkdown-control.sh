#!/usr/bin/env bash
# Guest script, by hand (not in test-all.sh): the control for the link-down tests. The
# link under rxe0 goes down for SECS seconds (default 3) while fio verify runs freely on an
# iSER session, to LIO's ib_isert (default) or to ferrite-tgt (--ferrite), and nothing is
# arranged to keep the initiator quiet during the outage. Then it reports whether the
# session came back and whether rxe0 still takes a new RDMA CM connection (rping to
# itself), and QP1's state:
#
#   test/vm/run.sh --timeout 600 test/vm/rxe-linkdown-control.sh [--ferrite] [SECS]
#
# What to look for (test/vm/README.md, "The link taken down"): whether the initiator's QP
# failed during the outage (connection errors), whether its session came back, and whether
# rxe0 still makes RDMA CM connections (rping). Exits 0 once it has reported: it observes
# the kernel, it checks nothing of ferrite.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

target=lio
secs=3
for a in "$@"; do
    case $a in
    --ferrite) target=ferrite ;;
    *) secs=$a ;;
    esac
done
IP=169.254.77.1
export ISCSI_IFACE=iser
if [ "$target" = lio ]; then
    IQN=iqn.2026-11.io.ferrite:vm-lio-control
    PORTAL=$IP:3262
    lio_iscsi_ramdisk "$IQN" "$PORTAL" 128
    echo 1 >"/sys/kernel/config/target/iscsi/$IQN/tpgt_1/np/$PORTAL/iser"
else
    IQN=iqn.2026-11.io.ferrite:vm-control
    PORTAL=$IP:3260
    cat >"$VM_WORK/c.json" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 262144, "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "$IP", "port": "3260", "iser": true}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
JSON
    ferrite_start "$VM_WORK/c.json"
fi
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "$target over iSER: /dev/$dev; QP1: $(rdma res show qp lqpn 1 | tr -s ' ')"
errors=$(dmesg | grep -c 'detected conn error' || true)
fio --name=control --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw=randrw \
    --bsrange=4k-64k --iodepth=8 --size=64M --rate=2m,2m --verify=crc32c --verify_fatal=1 \
    --do_verify=1 >"$VM_WORK/control.fio" 2>&1 &
fio_pid=$!
sleep 3
ip link set dummy0 down
say "dummy0 down"
sleep "$secs"
ip link set dummy0 up
say "dummy0 up after $secs s; QP1: $(rdma res show qp lqpn 1 | tr -s ' ')"
back=no
for _ in $(seq 60); do
    if iscsiadm -m session -P 3 2>/dev/null | grep -q 'iSCSI Session State: LOGGED_IN'; then
        back=yes
        break
    fi
    sleep 1
done
say "connection errors during/after the outage: $(($(dmesg | grep -c 'detected conn error' || true) - errors))"
say "RESULT $target: session LOGGED_IN within 60 s of the link coming back: $back"
say "kernel: $(dmesg | grep -E 'conn error|iser|rxe' | tail -n 6 | tr '\n' '|')"
rping -s -a "$IP" -p 7471 -C 1 >/dev/null 2>&1 &
rping_server=$!
sleep 1
if timeout 20 rping -c -a "$IP" -p 7471 -C 1 >/dev/null 2>&1; then rping=yes; else rping=no; fi
kill "$rping_server" 2>/dev/null || true
say "RESULT rxe0 takes a new RDMA CM connection (rping to itself) after the outage: $rping"
kill "$fio_pid" 2>/dev/null || true
wait "$fio_pid" 2>/dev/null || true
[ "$back" = yes ] || say "fio: $(grep -E 'err=|error' "$VM_WORK/control.fio" | head -n 2 | tr '\n' ' ')"
exit 0
