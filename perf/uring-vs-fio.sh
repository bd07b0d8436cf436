#!/usr/bin/env bash
# The uring bdev (ferrite-perf bdev, one reactor on core 0) against fio's io_uring engine
# (one job pinned to core 0, O_DIRECT, fixed buffers, registered files) on the same file,
# job by job in one run, printing each pair and their ratio as a Markdown table.
#
#   perf/uring-vs-fio.sh [-t SECONDS] [-r ROUNDS] [-s] FILE
#
# -s: both sides submit through an SQPOLL ring (ferrite: bdev_uring_create's sqpoll; fio:
# --sqthread_poll=1), a kernel thread polling the submission queue.
#
# FILE must exist, be a multiple of 4 KiB and allow O_DIRECT; it is written to (filled once
# first so reads hit allocated blocks). Each job runs ROUNDS times (default 2), alternating
# fio and ferrite-perf, and the table shows every round: the machine is noisy, compare only
# figures of one round. Needs fio, python3 and target/release/ferrite-perf.
set -euo pipefail

SECS=5
ROUNDS=2
SQPOLL=false
FIO_SQPOLL=()
while getopts "t:r:s" o; do
    case $o in
        t) SECS=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        s) SQPOLL=true; FIO_SQPOLL=(--sqthread_poll=1) ;;
        *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
FILE=${1:?usage: perf/uring-vs-fio.sh [-t SECONDS] [-r ROUNDS] [-s] FILE}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERF=${FERRITE_PERF_BIN:-$ROOT/target/release/ferrite-perf}
# shellcheck source=perf/vs-fio-lib.sh
source "$ROOT/perf/vs-fio-lib.sh"
vs_fio_require fio python3 "$PERF"

CFG=$(mktemp /tmp/uring-vs-fio.XXXXXX.json)
trap 'rm -f "$CFG"' EXIT
printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_uring_create","params":{"name":"U0","filename":"%s","block_size":4096,"sqpoll":%s}}]}]}\n' \
    "$FILE" "$SQPOLL" >"$CFG"

# Allocate every block once.
fio --name=fill --filename="$FILE" --ioengine=io_uring --direct=1 --rw=write --bs=1M \
    --iodepth=8 --output=/dev/null

fio_iops() { # rw bs depth
    fio --name=peer --filename="$FILE" --ioengine=io_uring --direct=1 --fixedbufs \
        --registerfiles "${FIO_SQPOLL[@]}" --rw="$1" --bs="$2" --iodepth="$3" \
        "${VS_FIO_TIMED[@]}" | fio_json_iops
}

perf_iops() { # workload bs depth
    "$PERF" bdev -c "$CFG" -w "$1" -o "$2" -q "$3" -t "$SECS" -m 0x1 --output json \
        2>/dev/null | perf_json_iops
}

vs_fio_table "fio io_uring IOPS" "ferrite uring bdev IOPS"
