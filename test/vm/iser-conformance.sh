#!/usr/bin/env bash
# Guest script: libiscsi's conformance suite (iscsi-test-cu, the ALL family) over iser://
# (libiscsi's own iSER initiator, over soft-RoCE rxe0) against ferrite-tgt in the same VM.
#
#   cargo build --release --bins
#   test/vm/run.sh --timeout 900 test/vm/iser-conformance.sh [--suites GLOB] [--out DIR]
#
# The LUN is the one the TCP run uses (test/tests/iscsi_conformance.rs): a 1 GiB malloc bdev
# with 512-byte blocks, LUN 0 of one target node, open to any initiator name, here on an
# iSER portal at 169.254.77.1:3260. The suite runs through test/iscsi/run-test-cu.sh with
# --expected-skips test/iscsi/expected-skips.tsv, the same judge as over TCP: every test is
# classified passed / failed / skipped, a skip the file does not allow is a failure, and
# the script fails on any failure (skips are listed, never counted as passes). Then, as
# over TCP, ReadOnly runs again on the LUN write-protected (iscsi-swp) and must pass. At the
# end rdma_get_stats must show no QP left (every libiscsi connection cleaned up).
#
# By hand, not in scripts/test-all.sh: libiscsi 1.19's iSER client crashes in most suites,
# against LIO's ib_isert too (test/vm/README.md, "iser-conformance.sh").
#
#   --suites GLOB  only the suites matching GLOB (run-test-cu.sh -k; default all of them)
#   --out DIR      keep run-test-cu.sh's results there (an --rwdir of run.sh), else a
#                  scratch directory in the guest
#   --no-readonly  skip the write-protected ReadOnly run
set -euo pipefail
# shellcheck shell=bash source=test/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITES='*'
OUT=
READONLY=1
while [ "$#" -gt 0 ]; do
    case $1 in
    --suites) SUITES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-readonly) READONLY=; shift ;;
    *) fail "unknown argument $1" ;;
    esac
done
OUT=${OUT:-$VM_WORK/iscsi-test-cu}
mkdir -p "$OUT"

PORTAL=169.254.77.1:3260
IQN=iqn.2026-11.io.ferrite:vm-iser-conformance
LUN_MIB=1024
CU=$VM_REPO/test/iscsi
# The LUN lives in the buffer arena's heap, which is registered with the RDMA device.
export FERRITE_HEAP_MB=$((LUN_MIB + 256))

config=$VM_WORK/ferrite-iser-conformance.json
cat >"$config" <<JSON
{"subsystems": [
  {"subsystem": "bdev", "config": [
    {"method": "bdev_malloc_create",
     "params": {"name": "Conf0", "num_blocks": $((LUN_MIB * 2048)), "block_size": 512}}]},
  {"subsystem": "iscsi", "config": [
    {"method": "iscsi_create_portal_group",
     "params": {"tag": 1, "portals": [{"host": "${PORTAL%:*}", "port": "${PORTAL#*:}", "iser": true}]}},
    {"method": "iscsi_create_initiator_group",
     "params": {"tag": 1, "initiators": ["ANY"], "netmasks": ["ANY"]}},
    {"method": "iscsi_create_target_node",
     "params": {"name": "$IQN", "alias_name": "conformance", "pg_ig_maps": [{"pg_tag": 1, "ig_tag": 1}],
                "luns": [{"bdev_name": "Conf0", "lun_id": 0}], "queue_depth": 64, "disable_chap": true}}]}
]}
JSON

say "kernel $(uname -r); $(dpkg-query -W -f '${Package} ${Version}' libiscsi-bin 2>/dev/null)"
expect_grep "iscsi-test-cu links libibverbs (iSER)" 'libibverbs' "$(ldd "$(command -v iscsi-test-cu)")"
ferrite_start "$config"
url="iser://$PORTAL/$IQN/0"

# rdma_qps: the target's QP count.
rdma_qps() {
    ferrite_rpc rdma_get_stats | python3 -c 'import json, sys; print(json.load(sys.stdin)["qps"])'
}

# --- the suite ----------------------------------------------------------------------------
# The URL goes once (--one-path): given twice, iscsi-test-cu's two iSER contexts crash
# libiscsi 1.19's RDMA CM thread (SIGSEGV) before the first test, against LIO's ib_isert as
# against ferrite (test/vm/README.md). So MultipathIO skips; expected-skips-iser.tsv allows
# those skips and nothing else on top of the TCP run's expected-skips.tsv.
skips=$VM_WORK/expected-skips.tsv
cat "$CU/expected-skips.tsv" "$CU/expected-skips-iser.tsv" >"$skips"
say "iscsi-test-cu over $url, suites '$SUITES'"
t0=$SECONDS
rc=0
bash "$CU/run-test-cu.sh" --one-path --expected-skips "$skips" -k "$SUITES" \
    "$url" "$OUT" || rc=$?
say "iscsi-test-cu took $((SECONDS - t0)) s"
[ "$rc" -eq 0 ] || fail "iscsi-test-cu over iSER: run-test-cu.sh exit $rc (results in $OUT/results.tsv)"
classified=$(awk -F'\t' 'NR > 1 && $2 !~ /^\(/' "$OUT/results.tsv" | wc -l)
[ "$classified" -gt 0 ] || fail "no test classified"
ok "iscsi-test-cu over iSER: $(tail -n 1 <<<"$(awk -F'\t' 'NR > 1 { n[$3]++ } END {
    printf "%d passed, %d failed, %d skipped\n", n["passed"], n["failed"], n["skipped"] }' \
    "$OUT/results.tsv")") (skips allowed by expected-skips.tsv)"

# --- ReadOnly on the write-protected LUN ------------------------------------------------------
if [ -n "$READONLY" ]; then
    timeout 60 iscsi-swp --swp on "$url" >/dev/null || fail "iscsi-swp --swp on"
    expect_grep "write protection on" 'SWP:1' "$(timeout 60 iscsi-swp "$url")"
    rc=0
    bash "$CU/run-test-cu.sh" --one-path -k ReadOnly "$url" "$OUT/readonly" || rc=$?
    timeout 60 iscsi-swp --swp off "$url" >/dev/null || fail "iscsi-swp --swp off"
    [ "$rc" -eq 0 ] || fail "ReadOnly on a write-protected LUN: run-test-cu.sh exit $rc"
    skipped=$(awk -F'\t' 'NR > 1 && $3 != "passed"' "$OUT/readonly/results.tsv" | wc -l)
    expect_eq "ReadOnly tests not passed on the write-protected LUN" "$skipped" 0
fi

# --- nothing left behind ----------------------------------------------------------------------
for i in $(seq 30); do
    [ "$(rdma_qps)" = 0 ] && break
    sleep 1
done
expect_eq "QPs left after the suite (rdma_get_stats)" "$(rdma_qps)" 0
kill -0 "$FERRITE_PID" || fail "ferrite-tgt died"
ferrite_stop
ok "ferrite-tgt stopped cleanly"
