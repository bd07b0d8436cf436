#!/usr/bin/env bash
# ferrite-tgt against tgtd with `ferrite-perf iscsi` as the one client: IOPS and the
# target's CPU per I/O, in alternating runs (perf/RESULTS.md, "iSCSI").
#
#   perf/bench/iscsi-vs-tgtd.sh [-t SECS] [-r ROUNDS] [-o OUT.tsv]
#
# Starts its own ferrite-tgt (release build, --no-default -m 0x1: one reactor on core 0;
# a 1 GiB malloc bdev with 512-byte blocks as LUN 0, target node queue depth 256) on
# 127.0.0.1:$FERRITE_PORT and its own tgtd (test/iscsi/tgtd.sh: 1 GiB rdwr LUN on
# /dev/shm, pinned to core 0) on 127.0.0.1:$TGTD_PORT, writes both LUNs once, then for
# each case runs ferrite-perf pinned to core 1 (taskset -c 1, -m 0x2) against the two
# targets in turn, the order flipping every round. Stops both at the end.
#
# Target CPU: ferrite: the reactors' busy ticks (rpc.py framework_get_reactors) over
# tick_rate; tgtd: utime+stime of the process (all threads) from /proc/PID/stat.
# Both deltas are taken around the whole ferrite-perf run (login to logout).
#
# Environment: FERRITE_PORT (3290), TGTD_PORT (3291), CASES ("randread:4k:32
# randread:4k:128 read:128k:32" as workload:size:depth), TARGET_CPU (0), CLIENT_CPU (1).
set -euo pipefail

PROG=iscsi-vs-tgtd.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PERF=$ROOT/target/release/ferrite-perf
TGT=$ROOT/target/release/ferrite-tgt
RPC=$ROOT/app/rpc.py
TGTD_SH=$ROOT/test/iscsi/tgtd.sh
FERRITE_PORT=${FERRITE_PORT:-3290}
TGTD_PORT=${TGTD_PORT:-3291}
CASES=${CASES:-"randread:4k:32 randread:4k:128 read:128k:32"}
TARGET_CPU=${TARGET_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SECS=8
ROUNDS=2
OUT=

die() { echo "$PROG: $*" >&2; exit 2; }
say() { echo "$PROG: $*" >&2; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        -t) SECS=${2:?}; shift 2 ;;
        -r) ROUNDS=${2:?}; shift 2 ;;
        -o) OUT=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ -x "$PERF" ] && [ -x "$TGT" ] || die "build first: cargo build --release -p ferrite-perf -p ferrite-app"

WORK=$(mktemp -d)
SOCK=$WORK/ferrite.sock
FERRITE_PID=
STARTED_TGTD=
cleanup() {
    if [ -n "$FERRITE_PID" ] && kill -0 "$FERRITE_PID" 2>/dev/null; then
        kill "$FERRITE_PID" 2>/dev/null || true
        wait "$FERRITE_PID" 2>/dev/null || true
    fi
    [ -z "$STARTED_TGTD" ] || "$TGTD_SH" stop "$TGTD_PORT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

rpc() { python3 "$RPC" -s "$SOCK" "$@"; }

# ferrite
"$TGT" --no-default -m "$(printf '0x%x' $((1 << TARGET_CPU)))" -r "$SOCK" -s 1200 \
    >"$WORK/ferrite.log" 2>&1 &
FERRITE_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$WORK/ferrite.log" >&2; die "ferrite-tgt did not come up"; }
rpc iscsi_set_options -q 256 >/dev/null
rpc bdev_malloc_create -b Malloc0 1024 512 >/dev/null
rpc iscsi_create_portal_group 1 "127.0.0.1:$FERRITE_PORT" >/dev/null
rpc iscsi_create_initiator_group 1 ANY 127.0.0.1/32 >/dev/null
rpc iscsi_create_target_node iqn.2026-11.io.ferrite:bench "" Malloc0:0 1:1 256 -d >/dev/null
FERRITE_URL=iscsi://127.0.0.1:$FERRITE_PORT/iqn.2026-11.io.ferrite:bench/0

# tgtd
"$TGTD_SH" status "$TGTD_PORT" >/dev/null 2>&1 && die "a tgtd already serves port $TGTD_PORT"
TGTD_CPUS=$TARGET_CPU "$TGTD_SH" start "$TGTD_PORT" 1G >/dev/null
STARTED_TGTD=yes
TGTD_URL=$("$TGTD_SH" status "$TGTD_PORT")
TGTD_PID=$("$TGTD_SH" pid "$TGTD_PORT")

cpu_seconds() { # ferrite|tgtd
    if [ "$1" = ferrite ]; then
        rpc framework_get_reactors | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.6f" % (sum(x["busy"] for x in r["reactors"]) / r["tick_rate"]))'
    else
        local stat
        stat=$(cat "/proc/$TGTD_PID/stat")
        stat=${stat##*) }
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.6f\n", ($12 + $13) / hz }' <<<"$stat"
    fi
}

client() { # URL ARGS...
    local url=$1
    shift
    taskset -c "$CLIENT_CPU" "$PERF" iscsi -u "$url" -m "$(printf '0x%x' $((1 << CLIENT_CPU)))" "$@"
}

say "writing both LUNs once (reads then hit real data, not holes or the zero page)"
for url in "$FERRITE_URL" "$TGTD_URL"; do
    client "$url" -w write -o 1m -q 8 -t 4 --output json >/dev/null 2>&1 ||
        die "prefill of $url failed"
done

ROWS=$WORK/rows.tsv
printf 'case\tround\ttarget\tiops\tmib_s\tavg_us\tp99_us\ttarget_cpu_s\ttarget_us_per_io\tclient_ns_per_io\n' >"$ROWS"
say "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CASES; do
    IFS=: read -r wl size qd <<<"$c"
    for round in $(seq "$ROUNDS"); do
        order="ferrite tgtd"
        [ $((round % 2)) -eq 0 ] && order="tgtd ferrite"
        for t in $order; do
            url=$FERRITE_URL
            [ "$t" = tgtd ] && url=$TGTD_URL
            c0=$(cpu_seconds "$t")
            client "$url" -w "$wl" -o "$size" -q "$qd" -t "$SECS" --output json \
                >"$WORK/run.json" 2>"$WORK/run.err" ||
                { say "run failed: $t $c: $(tail -n 1 "$WORK/run.err")"; continue; }
            c1=$(cpu_seconds "$t")
            python3 - "$c" "$round" "$t" "$c0" "$c1" "$WORK/run.json" >>"$ROWS" <<'EOF'
import json, sys
case, rnd, t, c0, c1, path = sys.argv[1:7]
r = json.load(open(path))
tot = r["total"]
cpu = float(c1) - float(c0)
print("\t".join([case, rnd, t, "%.0f" % tot["iops"], "%.1f" % tot["mib_s"],
                 "%.1f" % tot["avg_us"], "%.1f" % tot["p99_us"], "%.3f" % cpu,
                 "%.2f" % (1e6 * cpu / max(tot["ios"], 1)), "%.0f" % r["ns_per_io"]]))
EOF
            tail -n 1 "$ROWS" >&2
        done
    done
done
say "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$OUT" ] || cp "$ROWS" "$OUT"

# Means per case and target, and ferrite/tgtd ratios.
python3 - "$ROWS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| case | target | runs: IOPS | mean IOPS | target µs CPU/IO | client ns/IO |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
means = {}
for case in dict.fromkeys(r["case"] for r in rows):
    for t in ("ferrite", "tgtd"):
        rs = [r for r in rows if r["case"] == case and r["target"] == t]
        if not rs:
            continue
        iops = [float(r["iops"]) for r in rs]
        us = [float(r["target_us_per_io"]) for r in rs]
        ns = [float(r["client_ns_per_io"]) for r in rs]
        means[(case, t)] = (sum(iops) / len(iops), sum(us) / len(us))
        print("| %s | %s | %s | %.0f | %s | %s |" % (case, t, " / ".join("%.0f" % x for x in iops),
              means[(case, t)][0], " / ".join("%.2f" % x for x in us), " / ".join("%.0f" % x for x in ns)))
print()
print("| case | IOPS ferrite/tgtd | CPU per I/O tgtd/ferrite |")
print("| --- | ---: | ---: |")
for case in dict.fromkeys(r["case"] for r in rows):
    f, g = means.get((case, "ferrite")), means.get((case, "tgtd"))
    if f and g:
        print("| %s | %.2f | %.2f |" % (case, f[0] / g[0], g[1] / f[1] if f[1] else float("nan")))
EOF
