#!/usr/bin/env bash
# The nvme bdev (ferrite-perf bdev, one reactor on core 0) against fio's io_uring_cmd engine
# (NVMe passthrough on the same /dev/ngXnY, one job pinned to core 0), job by job in one
# run, printing each pair and their ratio as a Markdown table. A guest script for the VM
# test bed (QEMU's emulated NVMe), not part of the CI suite:
#
#   test/vm/run.sh --timeout 1200 perf/nvme-vs-fio.sh [-t SECONDS] [-r ROUNDS] [DEVICE]
#
# DEVICE defaults to /dev/ng0n1; it is written to (filled once first). Each job runs ROUNDS
# times (default 1), fio first, then ferrite-perf. fio runs without --fixedbufs: the 6.1
# kernel of the bed answers EINVAL to fixed buffers in a hugepage-backed arena (the bed
# reserves hugepages, so ferrite-perf's arena is on them), so the nvme bdev passes plain
# addresses, and both sides map the user pages per command.
set -euo pipefail

SECS=5
ROUNDS=1
while getopts "t:r:" o; do
    case $o in
        t) SECS=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        *) sed -n '2,12p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
DEV=${1:-/dev/ng0n1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERF=${FERRITE_PERF_BIN:-$ROOT/target/release/ferrite-perf}
# shellcheck source=perf/vs-fio-lib.sh
source "$ROOT/perf/vs-fio-lib.sh"
vs_fio_require fio python3 "$PERF"
[ -c "$DEV" ] || { echo "$DEV is not a char device" >&2; exit 2; }

CFG=$(mktemp /tmp/nvme-vs-fio.XXXXXX.json)
trap 'rm -f "$CFG"' EXIT
printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_nvme_create","params":{"name":"N0","filename":"%s"}}]}]}\n' \
    "$DEV" >"$CFG"

echo "kernel $(uname -r), $(fio --version), $DEV, ${SECS}s per run" >&2
# Write every block once, so reads are not of never-written blocks.
fio --name=fill --filename="$DEV" --ioengine=io_uring_cmd --cmd_type=nvme --rw=write --bs=128k \
    --iodepth=32 --output=/dev/null

fio_iops() { # rw bs depth
    fio --name=peer --filename="$DEV" --ioengine=io_uring_cmd --cmd_type=nvme \
        --rw="$1" --bs="$2" --iodepth="$3" \
        "${VS_FIO_TIMED[@]}" | fio_json_iops
}

perf_iops() { # workload bs depth
    "$PERF" bdev -c "$CFG" -s 64 -w "$1" -o "$2" -q "$3" -t "$SECS" -m 0x1 --output json \
        2>/dev/null | perf_json_iops
}

vs_fio_table "fio io_uring_cmd IOPS" "ferrite nvme bdev IOPS"
