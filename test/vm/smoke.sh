#!/usr/bin/env bash
# Guest script: checks what test/vm/guest-prelude.sh set up. Run it with
#   test/vm/run.sh test/vm/smoke.sh
# Prints one line per check and exits 0 when all pass, 1 otherwise.
set -uo pipefail

failed=0
ok() { echo "smoke: ok   $*"; }
bad() { echo "smoke: FAIL $*"; failed=1; }

echo "smoke: kernel $(uname -r), $(nproc) vCPUs"

# RDMA: soft-RoCE rxe0 over dummy0.
if devs=$(ibv_devices 2>&1) && grep -qw rxe0 <<<"$devs"; then
    ok "ibv_devices lists rxe0 ($(rdma link show rxe0/1 2>/dev/null | sed 's/^link //'))"
else
    bad "ibv_devices does not list rxe0: $devs"
fi

# NVMe: the emulated drive, with the host image's size.
if [ -b /dev/nvme0n1 ] && [ -c /dev/ng0n1 ]; then
    size=$(blockdev --getsize64 /dev/nvme0n1)
    if [ "$size" = "${FERRITE_VM_NVME_BYTES:-}" ]; then
        ok "/dev/nvme0n1 is $size bytes (the image's size), /dev/ng0n1 is there ($(tr -d ' ' </sys/class/nvme/nvme0/serial) serial)"
    else
        bad "/dev/nvme0n1 is $size bytes, the image is ${FERRITE_VM_NVME_BYTES:-?}"
    fi
else
    bad "/dev/nvme0n1 or /dev/ng0n1 missing"
fi

# Kernel iSCSI initiator: the tools and the daemon.
if v=$(iscsiadm --version 2>&1); then
    ok "$v"
else
    bad "iscsiadm --version: $v"
fi
if pid=$(pgrep -x iscsid); then
    ok "iscsid runs (pid $(echo "$pid" | tr '\n' ' ' | sed 's/ $//'))"
else
    bad "iscsid is not running"
fi
for m in iscsi_tcp ib_iser ib_srp nvme configfs; do
    [ -d "/sys/module/$m" ] || bad "module $m not loaded"
done
if mountpoint -q /sys/kernel/config; then
    ok "configfs mounted, modules iscsi_tcp ib_iser ib_srp nvme loaded"
else
    bad "configfs not mounted"
fi

# Hugepages.
hp=$(cat /proc/sys/vm/nr_hugepages)
if [ "$hp" -ge 256 ]; then
    ok "$hp hugepages reserved ($(awk '/^Hugepagesize/ { print $2 $3 }' /proc/meminfo) each)"
else
    bad "only $hp hugepages reserved, wanted 256"
fi

# A writable HOME and the run directory written through to the host.
if touch "$HOME/.ferrite-smoke" && echo smoke >"$FERRITE_VM_RUNDIR/smoke.out"; then
    ok "HOME=$HOME is writable, run directory writes through"
else
    bad "HOME ($HOME) or $FERRITE_VM_RUNDIR not writable"
fi

if [ "$failed" -eq 0 ]; then
    echo "smoke: all checks passed"
else
    echo "smoke: some checks failed"
fi
exit "$failed"
