#!/usr/bin/env bash
# Guest script: Linux's iSER initiator (open-iscsi -I iser, ib_iser over soft-RoCE rxe0)
# against ferrite-tgt in the same VM. Run it with
#
#   test/vm/run.sh --timeout 900 test/vm/iser.sh
#
# ferrite-tgt (the host's release build) serves a 256 MiB malloc LUN on an iSER portal at
# 169.254.77.1:3260 (rxe0's address), one reactor. Checks, each failing the script:
#   1. discovery and login over iSER; /dev/sdX of the LUN's size; iscsi_get_connections
#      says "iser";
#   2. fio verify (randrw, 4 KiB-1 MiB, QD32, crc32c, O_DIRECT): reads by RDMA WRITE,
#      writes by immediate data and RDMA READ;
#   3. ext4: files and sha256 sums, unmount, logout, login again, the sums match;
#   4. a clean logout and shutdown, no I/O error in the kernel's log.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PORTAL=169.254.77.1:3260
IQN=iqn.2026-11.io.ferrite:vm-iser
LUN_MIB=256
export ISCSI_IFACE=iser

config=$VM_WORK/ferrite-iser.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Malloc0", "num_blocks": $((LUN_MIB * 2048)), "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "${PORTAL%:*}", "port": "${PORTAL#*:}", "iser": true}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "ferrite iser", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Malloc0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
JSON

say "kernel $(uname -r); $(iscsiadm --version); $(rdma link show 2>/dev/null | head -1)"

# --- 1. discovery and login over iSER ---------------------------------------------------
ferrite_start "$config"
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "logged in to $IQN over iSER: /dev/$dev"
expect_eq "size of /dev/$dev" "$(lsblk -bdno SIZE "/dev/$dev")" "$((LUN_MIB * 1024 * 1024))"
expect_grep "the session's transport" "Iface Transport: iser" "$(iscsiadm -m session -P 1)"
conns=$(ferrite_rpc iscsi_get_connections)
expect_grep "iscsi_get_connections transport" '"transport": "iser"' "$conns"

# --- 2. fio verify ---------------------------------------------------------------------
fio_verify "$dev" verify --bsrange=4k-1m --iodepth=32

# --- 3. ext4, logout, login, sums --------------------------------------------------------
ext4_fill "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"
iscsi_logout "$PORTAL" "$IQN"
say "logged out"
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "logged in again: /dev/$dev"
ext4_check "$dev" "$VM_WORK/mnt" "$VM_WORK/ext4.sums"

# --- 4. the end -------------------------------------------------------------------------
expect_eq "I/O errors in the kernel's log" "$(dmesg | grep -c 'I/O error' || true)" 0
iscsi_logout "$PORTAL" "$IQN"
ferrite_stop
ok "logged out; ferrite-tgt stopped cleanly"
say "iser: all checks passed"
