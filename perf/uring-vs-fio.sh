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
for tool in fio python3 "$PERF"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

CFG=$(mktemp /tmp/uring-vs-fio.XXXXXX.json)
trap 'rm -f "$CFG"' EXIT
printf '{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_uring_create","params":{"name":"U0","filename":"%s","block_size":4096,"sqpoll":%s}}]}]}\n' \
    "$FILE" "$SQPOLL" >"$CFG"

# Allocate every block once.
fio --name=fill --filename="$FILE" --ioengine=io_uring --direct=1 --rw=write --bs=1M \
    --iodepth=8 --output=/dev/null

# name  fio-rw     perf-workload  block size  depth
JOBS=(
    "randread-4k-qd1    randread   randread   4k    1"
    "randread-4k-qd32   randread   randread   4k    32"
    "randread-4k-qd128  randread   randread   4k    128"
    "randwrite-4k-qd1   randwrite  randwrite  4k    1"
    "randwrite-4k-qd32  randwrite  randwrite  4k    32"
    "randwrite-4k-qd128 randwrite  randwrite  4k    128"
    "read-128k-qd32     read       read       128k  32"
    "write-128k-qd32    write      write      128k  32"
)

fio_iops() { # rw bs depth
    fio --name=peer --filename="$FILE" --ioengine=io_uring --direct=1 --fixedbufs \
        --registerfiles "${FIO_SQPOLL[@]}" --rw="$1" --bs="$2" --iodepth="$3" --numjobs=1 --cpus_allowed=0 \
        --time_based --runtime="$SECS" --norandommap --randrepeat=0 --group_reporting \
        --output-format=json |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"] + j["write"]["iops"]))'
}

perf_iops() { # workload bs depth
    "$PERF" bdev -c "$CFG" -w "$1" -o "$2" -q "$3" -t "$SECS" -m 0x1 --output json \
        2>/dev/null | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["total"]["iops"]))'
}

echo "| job | round | fio io_uring IOPS | ferrite uring bdev IOPS | ferrite / fio |"
echo "| --- | ---: | ---: | ---: | ---: |"
for j in "${JOBS[@]}"; do
    read -r name rw wl bs qd <<<"$j"
    for r in $(seq 1 "$ROUNDS"); do
        f=$(fio_iops "$rw" "$bs" "$qd")
        p=$(perf_iops "$wl" "$bs" "$qd")
        ratio=$(awk -v a="$p" -v b="$f" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        echo "| $name | $r | $f | $p | **$ratio** |"
    done
done
