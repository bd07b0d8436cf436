#!/usr/bin/env bash
# Guest script: the nvme bdev (io_uring NVMe passthrough) on QEMU's emulated NVMe
# namespace, /dev/ng0n1. Run it with
#
#   cargo test -p ferrite-perf --release --test no_alloc --no-run   # prints NO_ALLOC_BIN
#   test/vm/run.sh --timeout 900 test/vm/nvme.sh NO_ALLOC_BIN
#
# Checks, each failing the script:
#   1. bad input: the controller's char device, the namespace's block device and a block
#      size the namespace is not formatted with are refused with JSON-RPC errors;
#   2. the bdev's size, block size and ONCS-derived I/O types match `nvme id-ns`/`id-ctrl`;
#   3. bdev_nvme_send_cmd: Identify Controller and Identify Namespace through the bdev
#      are byte for byte nvme-cli's (`nvme id-ctrl -b`, `nvme id-ns -b`); save_config
#      round-trips the bdev;
#   4. the namespace exported over iSCSI/TCP: the kernel initiator's fio verify job;
#      VERIFY with BYTCHK (the NVMe Compare command) and COMPARE AND WRITE, matching and
#      not, answered with GOOD or MISCOMPARE; an NVMe Read through bdev_nvme_send_cmd returns
#      what COMPARE AND WRITE wrote; no I/O error in the kernel's log;
#   5. ferrite-perf verify at several I/O sizes and depths, and its unmap, write_zeroes and
#      flush workloads, with no failure;
#   6. no heap allocation on the I/O path: NO_ALLOC_BIN (perf/tests/no_alloc.rs) runs its
#      ignored nvme test;
#   7. hot removal: the controller's PCI device is removed during a ferrite-perf run;
#      the run ends on time with failed I/O counted and a log line that the namespace is
#      gone. After a PCI rescan, again under fio over iSCSI: fio ends with errors, the
#      target keeps answering, says the bdev is removed, and the LUN and the bdev are
#      deleted; nothing hangs.
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NG=/dev/ng0n1
BLK=/dev/nvme0n1
CTRL=/dev/nvme0
PORTAL=127.0.0.1:3260
IQN=iqn.2026-11.io.ferrite:vm-nvme
FERRITE_PERF_BIN=${FERRITE_PERF_BIN:-$VM_REPO/target/release/ferrite-perf}

[ -c "$NG" ] || fail "no $NG in the guest"
say "kernel $(uname -r); $(nvme version)"

# What nvme-cli says about the namespace.
idns=$(nvme id-ns "$BLK" -o json)
idctrl=$(nvme id-ctrl "$CTRL" -o json)
read -r nsze bs oncs vwc < <(python3 -c '
import json, sys
ns, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
f = ns["flbas"] & 0xf
print(ns["nsze"], 1 << ns["lbafs"][f]["ds"], c["oncs"], c["vwc"] & 1)' "$idns" "$idctrl")
say "namespace: $nsze blocks of $bs bytes, ONCS $oncs, VWC $vwc"
wrong_bs=$((bs == 512 ? 4096 : 512))

config=$VM_WORK/ferrite-nvme.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_nvme_create", "params": {"name": "Nvme0", "filename": "$NG"}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "${PORTAL%:*}", "port": "${PORTAL#*:}"}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "ferrite nvme", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Nvme0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
JSON
ferrite_start "$config"

# --- 1. bad input ------------------------------------------------------------------------
refuse() {
    local what=$1 needle=$2 out
    shift 2
    if out=$(ferrite_rpc "$@" 2>&1); then
        fail "$what: accepted: $out"
    fi
    grep -q -- "$needle" <<<"$out" || fail "$what: no '$needle' in: $out"
    ok "$what refused: $(grep -o "\"message\": \"[^\"]*" <<<"$out" | head -1 | cut -c13-)"
}
refuse "the controller's char device" "is an NVMe controller" bdev_nvme_create "$CTRL" X0
refuse "the namespace's block device" "is a block device" bdev_nvme_create "$BLK" X1
refuse "block size $wrong_bs" "formatted with $bs-byte blocks" \
    bdev_nvme_create "$NG" X2 "$wrong_bs"
refuse "a second bdev with the same name" "already exists" bdev_nvme_create "$NG" Nvme0
ferrite_rpc rpc_get_methods >/dev/null || fail "target not answering after refusals"

# --- 2. what the bdev says -----------------------------------------------------------------
info=$(ferrite_rpc bdev_get_bdevs -b Nvme0)
read -r got_blocks got_bs unmap wz cmp drv_vwc < <(python3 -c '
import json, sys
b = json.loads(sys.argv[1])[0]
t, d = b["supported_io_types"], b["driver_specific"]["nvme"]
print(b["num_blocks"], b["block_size"], int(t["unmap"]), int(t["write_zeroes"]),
      int(t["compare"]), int(d["volatile_write_cache"]))' "$info")
expect_eq "num_blocks vs nvme id-ns nsze" "$got_blocks" "$nsze"
expect_eq "block_size vs the formatted LBA format" "$got_bs" "$bs"
expect_eq "unmap vs ONCS DSM" "$unmap" "$(((oncs >> 2) & 1))"
expect_eq "write_zeroes vs ONCS Write Zeroes" "$wz" "$(((oncs >> 3) & 1))"
expect_eq "compare vs ONCS Compare" "$cmp" "$((oncs & 1))"
expect_eq "volatile write cache vs VWC" "$drv_vwc" "$vwc"

# --- 3. passthrough and save_config ------------------------------------------------------
# send_cmd CMD-TYPE NSID CNS: an Identify through bdev_nvme_send_cmd; prints its data (hex)
# after checking the completion's status is 0.
identify_via_ferrite() {
    local cmdbuf out
    cmdbuf=$(python3 -c '
import base64, struct, sys
c = bytearray(64); c[0] = 0x06
struct.pack_into("<I", c, 4, int(sys.argv[1])); struct.pack_into("<I", c, 40, int(sys.argv[2]))
print(base64.urlsafe_b64encode(c).decode())' "$1" "$2")
    out=$(ferrite_rpc bdev_nvme_send_cmd -n Nvme0 -t admin -r c2h -c "$cmdbuf" -D 4096)
    python3 -c '
import base64, json, struct, sys
r = json.loads(sys.argv[1])
status = struct.unpack_from("<I", base64.urlsafe_b64decode(r["cpl"]), 12)[0] >> 17
assert status == 0, "status %#x" % status
sys.stdout.write(base64.urlsafe_b64decode(r["data"]).hex())' "$out"
}
ours=$(identify_via_ferrite 0 1 | sha256sum)
theirs=$(nvme id-ctrl "$CTRL" -b | od -An -v -tx1 | tr -d ' \n' | sha256sum)
expect_eq "Identify Controller via bdev_nvme_send_cmd = nvme id-ctrl -b" "$ours" "$theirs"
nsid=$(nvme get-ns-id "$BLK" | grep -o '[0-9]*$')
ours=$(identify_via_ferrite "$nsid" 0 | sha256sum)
theirs=$(nvme id-ns "$BLK" -b | od -An -v -tx1 | tr -d ' \n' | sha256sum)
expect_eq "Identify Namespace via bdev_nvme_send_cmd = nvme id-ns -b" "$ours" "$theirs"

saved=$(ferrite_rpc save_config)
expect_grep "save_config has the bdev" "\"filename\": \"$NG\"" "$saved"
expect_grep "save_config's method" '"method": "bdev_nvme_create"' "$saved"

# --- 4. over iSCSI -------------------------------------------------------------------------
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
say "logged in to $IQN: /dev/$dev"
expect_eq "size of /dev/$dev" "$(lsblk -bdno SIZE "/dev/$dev")" "$((nsze * bs))"
FIO_VERIFY_SIZE=128M fio_verify "$dev" verify --bsrange=4k-256k --iodepth=32

# VERIFY(16) BYTCHK=1 is the namespace's Compare command; COMPARE AND WRITE is the bdev
# layer's, under its range lock.
blk=$VM_WORK/blk
head -c "$bs" /dev/urandom >"$blk.a"
head -c "$bs" /dev/urandom >"$blk.b"
dd if="$blk.a" of="/dev/$dev" bs="$bs" seek=100 count=1 oflag=direct status=none
if ((oncs & 1)); then
    sg_verify --16 --lba=100 --count=1 --ndo="$bs" --in="$blk.a" "/dev/$dev" ||
        fail "VERIFY BYTCHK of matching data"
    ok "VERIFY BYTCHK (NVMe Compare) of matching data: GOOD"
    rc=0
    sg_verify --16 --quiet --lba=100 --count=1 --ndo="$bs" --in="$blk.b" "/dev/$dev" || rc=$?
    expect_eq "VERIFY BYTCHK of other data (sg exit 14 = MISCOMPARE)" "$rc" 14
fi
cat "$blk.a" "$blk.b" >"$blk.ab"
sg_compare_and_write --lba=100 --num=1 --in="$blk.ab" "/dev/$dev" ||
    fail "COMPARE AND WRITE with the right old data"
dd if="/dev/$dev" of="$blk.now" bs="$bs" skip=100 count=1 iflag=direct status=none
cmp -s "$blk.now" "$blk.b" || fail "COMPARE AND WRITE did not write the new data"
ok "COMPARE AND WRITE with the right old data: written"
rc=0
sg_compare_and_write --lba=100 --num=1 --in="$blk.ab" "/dev/$dev" 2>/dev/null || rc=$?
expect_eq "COMPARE AND WRITE with stale old data (sg exit 14 = MISCOMPARE)" "$rc" 14
# An I/O command through the passthrough RPC: NVMe Read of block 100 (NSID 0: the bdev's).
cmdbuf=$(python3 -c '
import base64, struct
c = bytearray(64); c[0] = 0x02; struct.pack_into("<Q", c, 40, 100)
print(base64.urlsafe_b64encode(c).decode())')
ferrite_rpc bdev_nvme_send_cmd -n Nvme0 -t io -r c2h -c "$cmdbuf" -D "$bs" |
    python3 -c 'import base64, json, sys; sys.stdout.buffer.write(base64.urlsafe_b64decode(json.load(sys.stdin)["data"]))' \
        >"$blk.read"
cmp -s "$blk.read" "$blk.b" || fail "NVMe Read through bdev_nvme_send_cmd: not the data written over iSCSI"
ok "NVMe Read of block 100 through bdev_nvme_send_cmd = the data COMPARE AND WRITE wrote"
expect_eq "I/O errors in the kernel's log" "$(dmesg | grep -c 'I/O error' || true)" 0
# Whether the ring's probe found the kernel taking fixed buffers for passthrough
# (IORING_URING_CMD_FIXED): Debian 12's 6.1 answers EINVAL for the target's hugepage-backed
# arena, so there the commands pass plain addresses (no copy either way). The probe must
# have run: true or false, not null.
fixed=$(ferrite_rpc bdev_get_bdevs -b Nvme0 | python3 -c '
import json, sys; print(json.load(sys.stdin)[0]["driver_specific"]["nvme"]["fixed_buffers"])')
expect_grep "fixed-buffer probe ran (fixed_buffers)" '^(True|False)$' "$fixed"
iscsi_logout "$PORTAL" "$IQN"
ferrite_stop
ok "logged out; ferrite-tgt stopped cleanly"

# --- 5. ferrite-perf ------------------------------------------------------------------------
perf_config=$VM_WORK/perf-nvme.json
cat >"$perf_config" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_create", "params": {"name": "Nvme0", "filename": "$NG"}}]}]}
JSON
# perf_check NAME ARGS...: a ferrite-perf bdev run that must succeed without failures.
perf_check() {
    local name=$1 out
    shift
    out=$("$FERRITE_PERF_BIN" bdev -c "$perf_config" -s 64 --output json "$@" 2>"$VM_WORK/$name.err") ||
        fail "ferrite-perf $name: $(tail -5 "$VM_WORK/$name.err")"
    python3 -c '
import json, sys
r = json.loads(sys.argv[1]); j = r["jobs"][0]
assert r["success"] and j["fails"] == 0 and j["miscompares"] == 0 and j["ios"] > 0, r
print("%d I/Os, %.0f IOPS" % (j["ios"], j["iops"]))' "$out" >"$VM_WORK/$name.sum" ||
        fail "ferrite-perf $name: $out"
    ok "ferrite-perf $name: $(cat "$VM_WORK/$name.sum")"
}
perf_check "verify ${bs}B QD1" -w verify -o "$bs" -q 1 -t 1
perf_check "verify 4k QD32" -w verify -o 4k -q 32 -t 2
perf_check "verify 128k QD128" -w verify -o 128k -q 128 -t 2
((oncs & 4)) && perf_check "unmap 64k QD16" -w unmap -o 64k -q 16 -t 1
((oncs & 8)) && perf_check "write_zeroes 1M QD4" -w write_zeroes -o 1M -q 4 -t 1
perf_check "flush QD1" -w flush -o 4k -q 1 -t 1

# --- 6. no heap allocation on the I/O path ----------------------------------------------
no_alloc=${1:-}
[ -x "$no_alloc" ] || fail "no no_alloc test binary given (see the top of this script)"
FERRITE_NVME_DEV=$NG "$no_alloc" --ignored --exact nvme_io_path_allocates_nothing \
    >"$VM_WORK/no_alloc.out" 2>&1 || { cat "$VM_WORK/no_alloc.out"; fail "no_alloc nvme"; }
grep -q "test result: ok. 1 passed" "$VM_WORK/no_alloc.out" ||
    { cat "$VM_WORK/no_alloc.out"; fail "no_alloc nvme did not run"; }
ok "no heap allocation on the reactor over 100k nvme I/Os (perf/tests/no_alloc.rs)"

# --- 7. hot removal ------------------------------------------------------------------------
pci=$(basename "$(readlink -f /sys/class/nvme/nvme0/device)")
"$FERRITE_PERF_BIN" bdev -c "$perf_config" -s 64 --output json -w randrw -o 4k -q 32 -t 6 \
    >"$VM_WORK/remove.json" 2>"$VM_WORK/remove.err" &
perf_pid=$!
# Remove only once I/O runs (a progress line), not while the bdev is being made.
for _ in $(seq 600); do
    grep -q ' IOPS' "$VM_WORK/remove.err" 2>/dev/null && break
    kill -0 "$perf_pid" 2>/dev/null || fail "ferrite-perf ended before the removal: $(cat "$VM_WORK/remove.err")"
    sleep 0.1
done
grep -q ' IOPS' "$VM_WORK/remove.err" || fail "ferrite-perf ran no I/O within 60 s"
say "removing the NVMe controller (PCI $pci) under a running ferrite-perf"
echo 1 >"/sys/bus/pci/devices/$pci/remove"
for _ in $(seq 600); do
    kill -0 "$perf_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$perf_pid" 2>/dev/null; then
    kill -9 "$perf_pid"
    fail "ferrite-perf still running 60 s after the removal (hang)"
fi
rc=0
wait "$perf_pid" || rc=$?
[ "$rc" -lt 128 ] || fail "ferrite-perf died of signal $((rc - 128)) after the removal"
fails=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["fails"])' \
    "$VM_WORK/remove.json") || fail "no report from ferrite-perf after the removal: $(tail -5 "$VM_WORK/remove.err")"
[ "$fails" -gt 0 ] || fail "no failed I/O counted after the removal"
ok "ferrite-perf ended on time after the removal (exit $rc), $fails I/Os failed"
expect_grep "the bdev noticed" "is gone" "$(cat "$VM_WORK/remove.err")"

# The controller back, then removed again under the target serving it over iSCSI with
# fio running: the initiator gets errors (NOT READY, MEDIUM NOT PRESENT), the target keeps
# answering, says the bdev is removed, and the LUN and the bdev can be deleted.
echo 1 >/sys/bus/pci/rescan
for _ in $(seq 300); do
    [ -c "$NG" ] && break
    sleep 0.1
done
[ -c "$NG" ] || fail "$NG did not come back after a PCI rescan"
ok "$NG back after a PCI rescan"
ferrite_start "$config"
iscsi_login "$PORTAL" "$IQN"
dev=$(iscsi_disk "$IQN")
pci=$(basename "$(readlink -f /sys/class/nvme/nvme0/device)")
fio --name=removal --filename="/dev/$dev" --ioengine=libaio --direct=1 --rw=randrw --bs=4k \
    --iodepth=16 --time_based --runtime=30 >"$VM_WORK/removal.fio" 2>&1 &
fio_pid=$!
sleep 3
say "removing the NVMe controller (PCI $pci) under fio on /dev/$dev over iSCSI"
echo 1 >"/sys/bus/pci/devices/$pci/remove"
for _ in $(seq 900); do
    kill -0 "$fio_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$fio_pid" 2>/dev/null; then
    kill -9 "$fio_pid"
    fail "fio over iSCSI still running 90 s after the removal (hang)"
fi
rc=0
wait "$fio_pid" || rc=$?
[ "$rc" -ne 0 ] || fail "fio over iSCSI saw no error after the removal"
ok "fio over iSCSI ended with an error after the removal (exit $rc)"
expect_grep "the initiator's sense" "Medium not present|Not ready|I/O error" "$(dmesg | tail -50)"
removed=$(ferrite_rpc bdev_get_bdevs -b Nvme0 | python3 -c '
import json, sys; print(json.load(sys.stdin)[0]["driver_specific"]["nvme"]["removed"])')
expect_eq "bdev_get_bdevs says removed" "$removed" True
iscsi_logout "$PORTAL" "$IQN"
ferrite_rpc iscsi_delete_target_node "$IQN" >/dev/null || fail "iscsi_delete_target_node after the removal"
expect_eq "bdev_nvme_delete after the removal" "$(ferrite_rpc bdev_nvme_delete Nvme0)" true
ferrite_stop
ok "logged out, LUN and bdev deleted, ferrite-tgt stopped cleanly"
echo 1 >/sys/bus/pci/rescan
say "nvme: all checks passed"
