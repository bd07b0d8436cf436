#!/usr/bin/env bash
# 4 KiB random-read IOPS and target CPU of an iSCSI target against tgtd, in alternating
# runs of libiscsi's iscsi-perf, as a markdown table.
#
#   test/iscsi/perf-vs-tgtd.sh [OPTIONS] [URL]
#
#   URL   the target under test (ferrite's LUN). Without it only tgtd is measured (to
#         check the harness, or to get a baseline).
#
# Options:
#   -q, --qd "1 32 128"       queue depths (iscsi-perf -m)
#   -t, --secs N              seconds per run (default 10)
#   -r, --rounds N            runs per target and queue depth (default 3); the order of the
#                             two targets flips every round
#   --rpc SOCK                the target's CPU: ferrite's reactor busy time, from rpc.py
#                             framework_get_reactors (sum of busy ticks / tick_rate);
#                             the default when /var/tmp/ferrite.sock exists
#   --pid PID                 the target's CPU: utime+stime of process PID instead
#   --tgtd-url URL --tgtd-pid PID
#                             compare against a tgtd already running (default: start one
#                             with tgtd.sh on port 3261, pinned by --tgtd-cpus, and stop it
#                             at the end if this script started it)
#   --tgtd-cpus LIST          CPUs for the tgtd this starts (taskset list; default 0)
#   --client-cpus LIST        CPUs for iscsi-perf (default: the last CPU; "" for none)
#   -o, --out FILE            also write every run as TSV to FILE
#
# Why alternate: this kind of machine flips between a fast and a slow state (about 2x,
# sometimes mid-run) for every process alike, so only runs taken side by side compare.
# CPU is "% of one core" over the run's wall time and "us of CPU per I/O". For ferrite it
# is reactor busy time (a polling reactor spins at 100% of a core; busy counts the polls
# that did work), for tgtd the kernel's CPU accounting: the same quantity only when the
# reactor does not spin idle, which is what the busy ticks measure.
set -euo pipefail

PROG=perf-vs-tgtd.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RPC_PY=${FERRITE_RPC_PY:-$HERE/../../app/rpc.py}
DEFAULT_SOCK=/var/tmp/ferrite.sock
TGTD_PORT=3261

die() {
    echo "$PROG: $*" >&2
    exit 2
}

say() {
    echo "$PROG: $*" >&2
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

QDS="1 32 128"
SECS=10
ROUNDS=3
URL=
TARGET_RPC=
TARGET_PID=
TGTD_URL=
TGTD_PID=
TGTD_CPUS=0
CLIENT_CPUS=$(($(nproc) - 1))
OUT=

parse_args() {
    while [ "$#" -gt 0 ]; do
        case "$1" in
            -q | --qd) QDS=${2:?}; shift 2 ;;
            -t | --secs) SECS=${2:?}; shift 2 ;;
            -r | --rounds) ROUNDS=${2:?}; shift 2 ;;
            --rpc) TARGET_RPC=${2:?}; shift 2 ;;
            --pid) TARGET_PID=${2:?}; shift 2 ;;
            --tgtd-url) TGTD_URL=${2:?}; shift 2 ;;
            --tgtd-pid) TGTD_PID=${2:?}; shift 2 ;;
            --tgtd-cpus) TGTD_CPUS=${2?}; shift 2 ;;
            --client-cpus) CLIENT_CPUS=${2?}; shift 2 ;;
            -o | --out) OUT=${2:?}; shift 2 ;;
            -h | --help) usage; exit 0 ;;
            -*) die "unknown option $1 (see --help)" ;;
            *) [ -z "$URL" ] || die "one URL only"; URL=$1; shift ;;
        esac
    done
    [[ $SECS =~ ^[1-9][0-9]*$ ]] || die "--secs takes a positive number"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a positive number"
    local qd
    for qd in $QDS; do [[ $qd =~ ^[0-9]+$ ]] || die "bad queue depth '$qd'"; done
    if [ -n "$URL" ] && [ -z "$TARGET_RPC" ] && [ -z "$TARGET_PID" ] && [ -S "$DEFAULT_SOCK" ]; then
        TARGET_RPC=$DEFAULT_SOCK
    fi
}

# --- CPU accounting -----------------------------------------------------------------------

# cpu_seconds KIND ARG: the target's CPU time so far, in seconds (a float), or "" if unknown.
#   pid PID    utime+stime of the whole process (all its threads), fields 14 and 15 of
#              /proc/PID/stat, in clock ticks
#   rpc SOCK   ferrite's reactors' busy ticks summed, over tick_rate
cpu_seconds() {
    case "$1" in
        pid)
            # The command name (field 2) may hold spaces: cut after its closing parenthesis.
            local stat
            stat=$(cat "/proc/$2/stat" 2>/dev/null) || { echo ""; return; }
            stat=${stat##*) }
            awk -v hz="$(getconf CLK_TCK)" '{ printf "%.6f\n", ($12 + $13) / hz }' <<<"$stat"
            ;;
        rpc)
            python3 "$RPC_PY" -s "$2" framework_get_reactors 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.6f" % (sum(x["busy"] for x in r["reactors"]) / r["tick_rate"]))' 2>/dev/null || echo ""
            ;;
        *) echo "" ;;
    esac
}

# --- one run ------------------------------------------------------------------------------

block_size() {
    timeout 20 iscsi-readcapacity16 "$1" 2>/dev/null |
        sed -n 's/^LOGICAL BLOCK LENGTH IN BYTES:\([0-9]*\)/\1/p'
}

# measure NAME URL BLOCKS QD CPUKIND CPUARG: one iscsi-perf run; appends a TSV row
# "name qd round iops cpu_pct us_per_io" to $RUNS and prints it.
measure() {
    local name=$1 url=$2 blocks=$3 qd=$4 kind=$5 arg=$6 round=$7
    local pin=() c0 c1 t0 t1 log iops cpu_pct us_io
    [ -z "$CLIENT_CPUS" ] || pin=(taskset -c "$CLIENT_CPUS")
    log=$(mktemp)
    c0=$(cpu_seconds "$kind" "$arg")
    t0=$(date +%s.%N)
    if ! timeout $((SECS + 60)) "${pin[@]}" iscsi-perf -m "$qd" -b "$blocks" -t "$SECS" -r "$url" \
        >"$log" 2>&1; then
        say "iscsi-perf failed against $name ($url), QD $qd:"
        tr '\r' '\n' <"$log" | tail -n 5 >&2
        rm -f "$log"
        printf '%s\t%s\t%s\tFAILED\t\t\n' "$name" "$qd" "$round" >>"$RUNS"
        return 1
    fi
    t1=$(date +%s.%N)
    c1=$(cpu_seconds "$kind" "$arg")
    # iscsi-perf redraws one status line with \r; its last words are "iops average N (...)".
    iops=$(tr '\r' '\n' <"$log" | sed -n 's/^ *iops average \([0-9]*\) .*/\1/p' | tail -n 1)
    rm -f "$log"
    [ -n "$iops" ] || { say "no 'iops average' in iscsi-perf's output ($name QD $qd)"; return 1; }
    cpu_pct=
    us_io=
    if [ -n "$c0" ] && [ -n "$c1" ]; then
        read -r cpu_pct us_io < <(awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
            -v iops="$iops" -v secs="$SECS" 'BEGIN {
                cpu = c1 - c0; printf "%.1f %.2f\n", 100 * cpu / (t1 - t0),
                    (iops > 0 ? 1e6 * cpu / (iops * secs) : 0) }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$qd" "$round" "$iops" "$cpu_pct" "$us_io" |
        tee -a "$RUNS" >&2
}

# --- the table ----------------------------------------------------------------------------

# mean and range of column COL for NAME at QD: "mean (min–max)", or "mean" with one run.
stat_of() {
    awk -F'\t' -v n="$1" -v q="$2" -v c="$3" -v fmt="$4" '
        $1 == n && $2 == q && $c != "" && $4 != "FAILED" {
            k++; s += $c; if (k == 1 || $c < lo) lo = $c; if (k == 1 || $c > hi) hi = $c }
        END {
            if (!k) { print "–"; exit }
            m = sprintf(fmt, s / k)
            if (k > 1) m = m " (" sprintf(fmt, lo) "–" sprintf(fmt, hi) ")"
            print m }' "$RUNS"
}

mean_of() {
    awk -F'\t' -v n="$1" -v q="$2" '$1 == n && $2 == q && $4 != "FAILED" { k++; s += $4 }
        END { if (k) print s / k; else print 0 }' "$RUNS"
}

table() {
    local names=("$@") qd n
    echo
    echo "4 KiB random read, iscsi-perf, ${SECS}s runs, $ROUNDS per target and queue depth," \
        "alternating; client CPUs: ${CLIENT_CPUS:-any}. IOPS and CPU as mean (min–max)."
    echo
    local head="| QD |" rule="| --- |"
    for n in "${names[@]}"; do
        head+=" $n IOPS | $n CPU % | $n µs CPU/IO |"
        rule+=" --- | --- | --- |"
    done
    [ "${#names[@]}" -eq 2 ] && head+=" IOPS ${names[0]}/${names[1]} |" && rule+=" --- |"
    echo "$head"
    echo "$rule"
    for qd in $QDS; do
        local row="| $qd |"
        for n in "${names[@]}"; do
            row+=" $(stat_of "$n" "$qd" 4 '%.0f') | $(stat_of "$n" "$qd" 5 '%.0f') | $(stat_of "$n" "$qd" 6 '%.1f') |"
        done
        if [ "${#names[@]}" -eq 2 ]; then
            row+=" $(awk -v a="$(mean_of "${names[0]}" "$qd")" -v b="$(mean_of "${names[1]}" "$qd")" \
                'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }') |"
        fi
        echo "$row"
    done
}

# --- main ---------------------------------------------------------------------------------

STARTED_TGTD=

cleanup() {
    [ -z "${RUNS_TMP:-}" ] || rm -f "$RUNS_TMP"
    if [ -n "$STARTED_TGTD" ]; then
        "$HERE/tgtd.sh" stop "$TGTD_PORT" >/dev/null 2>&1 || true
    fi
}

main() {
    parse_args "$@"
    command -v iscsi-perf >/dev/null || die "iscsi-perf not found: run scripts/deps.sh test (libiscsi-bin)"
    trap cleanup EXIT
    if [ -n "$OUT" ]; then
        RUNS=$OUT
    else
        RUNS_TMP=$(mktemp)
        RUNS=$RUNS_TMP
    fi
    printf 'target\tqd\tround\tiops\tcpu_pct\tus_cpu_per_io\n' >"$RUNS"

    # tgtd: ours (started here, pinned) or the one given.
    if [ -z "$TGTD_URL" ]; then
        if ! "$HERE/tgtd.sh" status "$TGTD_PORT" >/dev/null 2>&1; then
            TGTD_CPUS=$TGTD_CPUS "$HERE/tgtd.sh" start "$TGTD_PORT" >/dev/null
            STARTED_TGTD=yes
        else
            say "using the tgtd already running on port $TGTD_PORT (its CPU pinning is its own)"
        fi
        TGTD_URL=$("$HERE/tgtd.sh" status "$TGTD_PORT")
        TGTD_PID=$("$HERE/tgtd.sh" pid "$TGTD_PORT" 2>/dev/null || true)
    fi
    [ -n "$TGTD_PID" ] || say "no tgtd pid: tgtd's CPU column stays empty (give --tgtd-pid)"

    # The contenders: name, URL, CPU kind, CPU argument, blocks per 4 KiB.
    local names=() urls=() kinds=() args=() blocks=() bs i
    if [ -n "$URL" ]; then
        names+=(target)
        urls+=("$URL")
        if [ -n "$TARGET_PID" ]; then
            kinds+=(pid); args+=("$TARGET_PID")
        elif [ -n "$TARGET_RPC" ]; then
            [ -f "$RPC_PY" ] || die "rpc.py not found at $RPC_PY (set FERRITE_RPC_PY)"
            [ -n "$(cpu_seconds rpc "$TARGET_RPC")" ] ||
                die "framework_get_reactors on $TARGET_RPC gave no busy ticks"
            kinds+=(rpc); args+=("$TARGET_RPC")
        else
            say "no --rpc or --pid for $URL: its CPU columns stay empty"
            kinds+=(none); args+=("")
        fi
    fi
    names+=(tgtd)
    urls+=("$TGTD_URL")
    kinds+=(pid)
    args+=("$TGTD_PID")
    for i in "${!urls[@]}"; do
        bs=$(block_size "${urls[$i]}")
        [ -n "$bs" ] || die "READ CAPACITY(16) failed on ${urls[$i]}"
        [ $((4096 % bs)) -eq 0 ] || die "${urls[$i]}: block size $bs does not divide 4 KiB"
        blocks+=($((4096 / bs)))
    done

    say "$(printf '%s ' "${names[@]}")| QD $QDS | ${SECS}s x $ROUNDS rounds" \
        "(~$(($(wc -w <<<"$QDS") * ROUNDS * ${#names[@]} * (SECS + 1)))s)"
    say "columns: target qd round iops cpu% us_cpu_per_io"
    local qd round order j
    for qd in $QDS; do
        for round in $(seq "$ROUNDS"); do
            # Flip the order every round so that neither target always runs first.
            order=("${!names[@]}")
            if [ $((round % 2)) -eq 0 ]; then
                order=()
                for ((j = ${#names[@]} - 1; j >= 0; j--)); do order+=("$j"); done
            fi
            for i in "${order[@]}"; do
                measure "${names[$i]}" "${urls[$i]}" "${blocks[$i]}" "$qd" \
                    "${kinds[$i]}" "${args[$i]}" "$round" || true
            done
        done
    done
    table "${names[@]}"
    ! grep -q $'\tFAILED\t' "$RUNS"
}

main "$@"
