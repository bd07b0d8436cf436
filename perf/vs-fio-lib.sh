# shellcheck shell=bash
# What perf/uring-vs-fio.sh and perf/nvme-vs-fio.sh share: the job list, reading IOPS out of
# fio's and ferrite-perf's JSON, and the table of pairs with their ratio. Sourced; the
# caller defines
#   fio_iops RW BS DEPTH        runs fio's job and prints its IOPS (pipe fio's JSON
#                               through fio_json_iops)
#   perf_iops WORKLOAD BS DEPTH runs ferrite-perf's and prints its IOPS (through
#                               perf_json_iops)
# sets SECS and ROUNDS before sourcing it, then calls vs_fio_table "FIO COLUMN" "FERRITE COLUMN".

# vs_fio_require TOOL...: exits 2 naming the first tool that is missing.
vs_fio_require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
    done
}

# name  fio-rw     perf-workload  block size  depth
VS_FIO_JOBS=(
    "randread-4k-qd1    randread   randread   4k    1"
    "randread-4k-qd32   randread   randread   4k    32"
    "randread-4k-qd128  randread   randread   4k    128"
    "randwrite-4k-qd1   randwrite  randwrite  4k    1"
    "randwrite-4k-qd32  randwrite  randwrite  4k    32"
    "randwrite-4k-qd128 randwrite  randwrite  4k    128"
    "read-128k-qd32     read       read       128k  32"
    "write-128k-qd32    write      write      128k  32"
)

# The options every fio job of the table takes: SECS seconds (the caller sets SECS before
# sourcing this), one job on core 0, JSON out.
# shellcheck disable=SC2034 # used by the scripts that source this
VS_FIO_TIMED=(--numjobs=1 --cpus_allowed=0 --time_based --runtime="$SECS" --norandommap
    --randrepeat=0 --group_reporting --output-format=json)

fio_json_iops() {
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"] + j["write"]["iops"]))'
}

perf_json_iops() {
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["total"]["iops"]))'
}

# vs_fio_table FIO_COLUMN FERRITE_COLUMN: every job ROUNDS times, fio first, then
# ferrite-perf, as a Markdown table with the ratio ferrite / fio.
vs_fio_table() {
    local j name rw wl bs qd r f p ratio
    echo "| job | round | $1 | $2 | ferrite / fio |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for j in "${VS_FIO_JOBS[@]}"; do
        read -r name rw wl bs qd <<<"$j"
        for r in $(seq 1 "$ROUNDS"); do
            f=$(fio_iops "$rw" "$bs" "$qd")
            p=$(perf_iops "$wl" "$bs" "$qd")
            ratio=$(awk -v a="$p" -v b="$f" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            echo "| $name | $r | $f | $p | **$ratio** |"
        done
    done
}
