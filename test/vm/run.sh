#!/usr/bin/env bash
# Run a script inside a QEMU VM booting Debian 12's kernel over the host's root filesystem
# (virtme-ng), with RDMA (soft-RoCE rxe0), the kernel iSCSI/iSER/SRP initiators and an
# emulated NVMe drive set up first by test/vm/guest-prelude.sh. See test/vm/README.md.
#
#   test/vm/run.sh [--timeout SECS] [--rwdir DIR]... SCRIPT [ARGS...]
#
# SCRIPT runs as root in the guest with bash, in the current directory. The guest's root is
# the host's, read-only with throwaway overlays; only --rwdir directories (and the run's own
# directory, $FERRITE_VM_RUNDIR in the guest) write through to the host. Prints the guest's
# output and exits with SCRIPT's status; 124 when the timeout (default 600 s) hit, 125 when
# the VM or the prelude failed.
#
# Environment: FERRITE_VM_KVM=1 uses KVM when the host has real KVM (default: TCG, always);
# FERRITE_VM_CPUS (2), FERRITE_VM_MEMORY (2G), FERRITE_VM_NVME_SIZE (1G, a sparse image);
# FERRITE_VNG_VENV (~/.cache/ferrite/vng-venv) where virtme-ng is installed from PyPI;
# FERRITE_TGT_BIN, FERRITE_PERF_BIN, FERRITE_RPC_PY are passed on to the guest when set.
set -euo pipefail

VNG_VERSION=1.42
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${FERRITE_VNG_VENV:-$HOME/.cache/ferrite/vng-venv}
CPUS=${FERRITE_VM_CPUS:-2}
MEMORY=${FERRITE_VM_MEMORY:-2G}
NVME_SIZE=${FERRITE_VM_NVME_SIZE:-1G}

die() {
    echo "vm/run.sh: $*" >&2
    exit 125
}

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

timeout_secs=600
rwdirs=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --timeout) [ "$#" -ge 2 ] || die "--timeout needs SECS"; timeout_secs=$2; shift 2 ;;
        --timeout=*) timeout_secs=${1#--timeout=}; shift ;;
        --rwdir) [ "$#" -ge 2 ] || die "--rwdir needs DIR"; rwdirs+=("$2"); shift 2 ;;
        --rwdir=*) rwdirs+=("${1#--rwdir=}"); shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) break ;;
    esac
done
[ "$#" -ge 1 ] || { usage >&2; exit 125; }
[[ "$timeout_secs" =~ ^[0-9]+$ ]] || die "--timeout takes whole seconds, not '$timeout_secs'"
script=$(realpath -e "$1") || die "no such script: $1"
shift

# Host packages (qemu, the Debian kernel, busybox for vng's initramfs, the guest's tools).
bash "$REPO/scripts/deps.sh" vm >&2 || die "could not install the vm packages"

# virtme-ng, pinned, in its own venv; vng runs virtme-run from PATH.
if [ "$("$VENV/bin/vng" --version 2>/dev/null || true)" != "virtme-ng $VNG_VERSION" ]; then
    echo "vm/run.sh: installing virtme-ng==$VNG_VERSION into $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install -q "virtme-ng==$VNG_VERSION" >&2 || die "pip install virtme-ng==$VNG_VERSION failed"
fi
export PATH="$VENV/bin:$PATH"

# Debian's own kernel, the newest installed.
kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no /boot/vmlinuz-*-amd64 (linux-image-amd64 not installed?)"
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "no /lib/modules/$kver for $kernel"

# TCG unless asked for KVM and the host's KVM is real: a nested PVM /dev/kvm (kvm_pvm) makes
# QEMU abort or hang (shared/docs/TESTBED.md).
accel=(--disable-kvm)
if [ "${FERRITE_VM_KVM:-0}" = 1 ]; then
    if [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] &&
        { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }; then
        accel=()
    else
        echo "vm/run.sh: FERRITE_VM_KVM=1 but no real KVM here (kvm_pvm or no kvm_intel/kvm_amd); using TCG" >&2
    fi
fi

# The run's directory: the guest script, the NVMe image, the exit status. Under the repo's
# ignored target/ so that the guest sees it (its /tmp is a throwaway overlay).
mkdir -p "$REPO/target/vm"
rundir=$(mktemp -d "$REPO/target/vm/run.XXXXXX")
trap 'rm -rf "$rundir"' EXIT

nvme_img="$rundir/nvme0.img"
truncate -s "$NVME_SIZE" "$nvme_img"
nvme_bytes=$(stat -c %s "$nvme_img")

# The guest runs one short command (the kernel command line is limited to 2 KiB): this file.
guest="$rundir/guest.sh"
{
    echo '#!/bin/bash'
    printf 'export FERRITE_VM_RUNDIR=%q FERRITE_VM_NVME_BYTES=%q\n' "$rundir" "$nvme_bytes"
    # The binaries and client to test, when the host names them (as scripts/test-all.sh does).
    for var in FERRITE_TGT_BIN FERRITE_PERF_BIN FERRITE_RPC_PY; do
        [ -z "${!var:-}" ] || printf 'export %s=%q\n' "$var" "$(realpath "${!var}")"
    done
    printf 'source %q || exit 125\n' "$HERE/guest-prelude.sh"
    cat <<'EOF'
if ! ferrite_prelude; then
    echo 125 >"$FERRITE_VM_RUNDIR/status"
    exit 125
fi
EOF
    printf 'bash %q' "$script"
    [ "$#" -eq 0 ] || printf ' %q' "$@"
    cat <<'EOF'

rc=$?
echo "$rc" >"$FERRITE_VM_RUNDIR/status"
exit "$rc"
EOF
} >"$guest"

vng_args=(--run "$kernel" "${accel[@]}" --force-9p --cpus "$CPUS" --memory "$MEMORY"
    --rwdir "$rundir")
for d in "${rwdirs[@]}"; do
    [ -d "$d" ] || die "--rwdir $d: not a directory"
    vng_args+=(--rwdir "$(realpath "$d")")
done
vng_args+=("--qemu-opts=-drive file=$nvme_img,if=none,id=nv0,format=raw -device nvme,serial=ferrite0,drive=nv0")
vng_args+=("--exec=bash $guest")

echo "vm/run.sh: booting $(basename "$kernel") (${accel[*]:-kvm}, $CPUS vCPUs, $MEMORY) for $(basename "$script"), timeout ${timeout_secs}s" >&2
start=$EPOCHREALTIME
# QEMU reopens /proc/self/fd/1 and 2 and would clobber regular files: give it pipes. timeout
# signals its whole process group, so QEMU goes down with vng when the time is up.
set +e
timeout -k 10 "$timeout_secs" vng "${vng_args[@]}" </dev/null 2>&1 | cat
statuses=("${PIPESTATUS[@]}")
set -e
vng_rc=${statuses[0]}
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

if [ "$vng_rc" -eq 124 ] || [ "$vng_rc" -eq 137 ]; then
    echo "vm/run.sh: timed out after ${timeout_secs}s" >&2
    exit 124
fi
if [ ! -s "$rundir/status" ]; then
    echo "vm/run.sh: the VM ended without the script's status (vng exit $vng_rc) after ${elapsed}s" >&2
    exit 125
fi
rc=$(cat "$rundir/status")
echo "vm/run.sh: $(basename "$script") exited $rc, VM up ${elapsed}s" >&2
exit "$rc"
