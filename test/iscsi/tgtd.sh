#!/usr/bin/env bash
# The reference iSCSI peer: tgtd (Debian's `tgt`) with one rdwr LUN backed by a file on
# /dev/shm, as shared/docs/TESTBED.md describes it.
#
#   test/iscsi/tgtd.sh start [PORT] [SIZE]   start it (if not running); print its LUN URL
#   test/iscsi/tgtd.sh stop [PORT]           stop it (if running) and remove its image
#   test/iscsi/tgtd.sh status [PORT]         exit 0 and print the URL when it is serving
#   test/iscsi/tgtd.sh pid [PORT]            print tgtd's process id (for CPU accounting)
#
#   PORT  iSCSI portal port on 127.0.0.1 (default 3261, leaving 3260 to ferrite); also
#         used as tgtd's control port, so several instances, and a system tgtd on control
#         port 0, never answer each other's tgtadm
#   SIZE  LUN size for truncate(1) (default 1G)
#
# Target iqn.2026-11.test:ref, LUN 1: iscsi://127.0.0.1:PORT/iqn.2026-11.test:ref/1
# (LUN 0 is tgtd's own controller LUN). Start waits until that LUN answers an INQUIRY;
# both commands are idempotent. Installs the `tgt` package when it is missing.
# Environment: TGTD_CPUS  a taskset(1) CPU list to pin tgtd to (e.g. "0"; default: none).
# Files: /dev/shm/ferrite-tgtd-PORT.img, ${TMPDIR:-/tmp}/ferrite-tgtd-PORT.{pid,log}.
set -euo pipefail

PROG=tgtd.sh
IQN=iqn.2026-11.test:ref
HOST=127.0.0.1
START_WAIT=15 # seconds for the control socket and then the portal to come up
STOP_WAIT=10  # seconds for tgtd to exit after "delete system"

die() {
    echo "$PROG: $*" >&2
    exit 1
}

say() {
    echo "$PROG: $*" >&2
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# --- installing tgt (the same dpkg-query / apt-get pattern as scripts/deps.sh) -----------

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

ensure_tgt() {
    is_installed tgt && command -v tgtd >/dev/null && return 0
    command -v apt-get >/dev/null || die "tgtd is missing and there is no apt-get to install tgt"
    local sudo=() log=${TMPDIR:-/tmp}/ferrite-tgt-install.log
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: cannot install tgt"
        sudo=(sudo)
    fi
    say "installing tgt (apt log: $log)"
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y \
            --no-install-recommends tgt; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "apt-get install tgt failed"
    fi
    # Where services may start (no policy-rc.d forbidding it), the package starts a system
    # tgtd on 0.0.0.0:3260, ferrite's port. Say so rather than stop a service we don't own.
    if tgtadm -C 0 --op show --mode sys >/dev/null 2>&1; then
        say "warning: installing tgt started the system tgtd (control port 0, portal :3260);" \
            "stop it with: tgtadm -C 0 --op update --mode sys --name State -v offline;" \
            "tgtadm -C 0 --op delete --mode system"
    fi
}

# --- state --------------------------------------------------------------------------------

set_port() {
    PORT=${1:-3261}
    if ! [[ $PORT =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
        die "bad port '$PORT'"
    fi
    URL=iscsi://$HOST:$PORT/$IQN/1
    IMG=/dev/shm/ferrite-tgtd-$PORT.img
    PIDFILE=${TMPDIR:-/tmp}/ferrite-tgtd-$PORT.pid
    LOG=${TMPDIR:-/tmp}/ferrite-tgtd-$PORT.log
}

tgtadm_c() {
    tgtadm -C "$PORT" "$@"
}

# The tgtd we started on this port, if alive: its pid from the pid file, checked by name
# so that a recycled pid is never taken for it.
our_pid() {
    local pid
    [ -r "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tgtd ] || return 1
    echo "$pid"
}

control_up() {
    tgtadm_c --op show --mode sys >/dev/null 2>&1
}

# The LUN answers an INQUIRY over iSCSI (the check that matters to the clients), or, when
# libiscsi's tools are missing, the portal accepts a TCP connection.
portal_up() {
    if command -v iscsi-inq >/dev/null; then
        timeout 5 iscsi-inq "$URL" >/dev/null 2>&1
    else
        timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
    fi
}

port_taken() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# --- commands -----------------------------------------------------------------------------

cmd_start() {
    local size=${1:-1G}
    ensure_tgt
    if control_up && portal_up; then
        say "already running on $HOST:$PORT (pid $(our_pid || echo '?'))"
        echo "$URL"
        return 0
    fi
    # Half-started (control socket up, no LUN) or a dead instance's leftovers: start over.
    control_up && cmd_stop >/dev/null
    port_taken && die "$HOST:$PORT is taken by another program: $(ss -ltnp "sport = :$PORT" | tail -n +2)"

    truncate -s "$size" "$IMG"
    local pin=()
    [ -n "${TGTD_CPUS:-}" ] && pin=(taskset -c "$TGTD_CPUS")
    # -f keeps tgtd in the foreground, so $! is tgtd itself; setsid detaches it from our
    # terminal and process group so that it outlives this script.
    setsid "${pin[@]}" tgtd -f -C "$PORT" --iscsi "portal=$HOST:$PORT" </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    if ! wait_for "$START_WAIT" control_up; then
        tail -n 20 "$LOG" >&2
        die "tgtd's control socket did not come up in ${START_WAIT}s (log: $LOG)"
    fi
    tgtadm_c --lld iscsi --op new --mode target --tid 1 -T "$IQN"
    tgtadm_c --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$IMG" --bstype rdwr
    tgtadm_c --lld iscsi --op bind --mode target --tid 1 -I ALL
    if ! wait_for "$START_WAIT" portal_up; then
        tail -n 20 "$LOG" >&2
        die "tgtd started but $URL did not answer in ${START_WAIT}s (log: $LOG)"
    fi
    say "tgtd (pid $(our_pid || echo '?')) serves a $size LUN at $URL"
    echo "$URL"
}

cmd_stop() {
    local pid
    pid=$(our_pid || true)
    if control_up; then
        # tgtd ignores SIGTERM; this is its own way to go. "delete system" is refused
        # ("invalid request") while any target exists, so the targets go first, --force
        # because initiators may still be logged in.
        local tid
        tgtadm_c --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
        for tid in $(tgtadm_c --lld iscsi --op show --mode target 2>/dev/null |
            sed -n 's/^Target \([0-9]*\):.*/\1/p'); do
            tgtadm_c --lld iscsi --op delete --mode target --tid "$tid" --force >/dev/null 2>&1 || true
        done
        tgtadm_c --op delete --mode system >/dev/null 2>&1 || true
    elif [ -z "$pid" ]; then
        rm -f "$IMG" "$PIDFILE"
        say "not running on port $PORT"
        return 0
    fi
    if [ -n "$pid" ] && ! wait_for "$STOP_WAIT" bash -c "! kill -0 $pid 2>/dev/null"; then
        say "tgtd (pid $pid) still alive ${STOP_WAIT}s after 'delete system': SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    if ! wait_for "$STOP_WAIT" bash -c "! tgtadm -C $PORT --op show --mode sys >/dev/null 2>&1"; then
        die "a tgtd we did not start answers on control port $PORT and will not stop"
    fi
    rm -f "$IMG" "$PIDFILE"
    say "stopped (port $PORT)"
}

cmd_status() {
    if control_up && portal_up; then
        echo "$URL"
    else
        say "not serving on $HOST:$PORT"
        return 1
    fi
}

main() {
    local cmd=${1:-}
    [ "$#" -gt 0 ] && shift
    case "$cmd" in
        start)
            [ "$#" -le 2 ] || die "start takes [PORT] [SIZE]"
            set_port "${1:-}"
            cmd_start "${2:-}"
            ;;
        stop)
            [ "$#" -le 1 ] || die "stop takes [PORT]"
            set_port "${1:-}"
            if ! command -v tgtadm >/dev/null; then
                say "tgt is not installed: nothing to stop"
                return 0
            fi
            cmd_stop
            ;;
        status)
            set_port "${1:-}"
            command -v tgtadm >/dev/null || die "tgt is not installed"
            cmd_status
            ;;
        pid)
            set_port "${1:-}"
            our_pid || die "no tgtd of ours on port $PORT"
            ;;
        -h | --help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
