# shellcheck shell=bash
# Sourced inside the VM by run.sh's generated guest script, before the test script runs.
# Sets up what the VM tests expect (see test/vm/README.md):
#   configfs mounted; soft-RoCE rxe0 on dummy0 (169.254.77.1/24); iscsi_tcp, ib_iser,
#   ib_srp and nvme loaded; iscsid running; a writable $HOME; 256 hugepages; /dev/nvme0n1.
# Returns non-zero (with a message) when any of that fails. Not a standalone script.

ferrite_prelude() {
    local step="" t0=$EPOCHREALTIME t=$EPOCHREALTIME times=""
    _fail() {
        echo "guest-prelude: $step failed" >&2
        return 1
    }

    # Each step's wall time, printed in one line at the end.
    _lap() {
        times+=" $step: $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }');"
        t=$EPOCHREALTIME
    }

    step="configfs"
    modprobe configfs || { _fail; return 1; }
    if ! mountpoint -q /sys/kernel/config; then
        mount -t configfs configfs /sys/kernel/config || { _fail; return 1; }
    fi

    _lap
    step="rdma_rxe on dummy0"
    modprobe rdma_rxe || { _fail; return 1; }
    if ! ip link show dummy0 >/dev/null 2>&1; then
        ip link add dummy0 type dummy || { _fail; return 1; }
    fi
    ip link set dummy0 up || { _fail; return 1; }
    ip addr replace 169.254.77.1/24 dev dummy0 || { _fail; return 1; }
    if [ ! -e /sys/class/infiniband/rxe0 ]; then
        rdma link add rxe0 type rxe netdev dummy0 || { _fail; return 1; }
    fi

    _lap
    step="initiator modules"
    modprobe -a iscsi_tcp ib_iser ib_srp nvme || { _fail; return 1; }

    _lap
    step="iscsid"
    mkdir -p /run/lock/iscsi /var/lib/iscsi /etc/iscsi || { _fail; return 1; }
    if ! grep -qs '^InitiatorName=' /etc/iscsi/initiatorname.iscsi; then
        echo "InitiatorName=$(iscsi-iname -p iqn.2026-11.io.ferrite.vm)" \
            >/etc/iscsi/initiatorname.iscsi || { _fail; return 1; }
    fi
    if ! pgrep -x iscsid >/dev/null; then
        iscsid || { _fail; return 1; }
    fi

    _lap
    step="HOME"
    export HOME=/run/ferrite-home
    mkdir -p "$HOME" || { _fail; return 1; }

    _lap
    step="hugepages"
    echo 256 >/proc/sys/vm/nr_hugepages || { _fail; return 1; }

    _lap
    step="NVMe /dev/nvme0n1"
    local i
    for i in $(seq 1 100); do
        [ -b /dev/nvme0n1 ] && [ -c /dev/ng0n1 ] && break
        [ "$i" -eq 100 ] && { _fail; return 1; }
        sleep 0.1
    done
    _lap
    echo "guest-prelude: ready in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }') (${times%;} )" >&2
    return 0
}
