#!/usr/bin/env bash
# Install the Debian packages ferrite needs, only those missing; quiet when all are there.
#
#   scripts/deps.sh [GROUP...]     GROUP: build (default), test, vm
#
# apt's output goes to $FERRITE_DEPS_LOG (default /tmp/ferrite-deps.log) and is shown
# only when apt fails. Also checks that the Rust toolchain (cargo) is there.
set -euo pipefail

LOG=${FERRITE_DEPS_LOG:-${TMPDIR:-/tmp}/ferrite-deps.log}

# Compile ferrite, including the RDMA transports (rdma-sys runs bindgen: libclang, clang 14).
build_packages() {
    echo build-essential pkg-config python3 libclang-dev clang libibverbs-dev librdmacm-dev
}

# Run the tests on the host: libiscsi's tools (iscsi-test-cu, iscsi-perf...), fio, and the
# small system tools the scripts use (lsblk, pgrep, ip; losetup, mount and mkfs.ext4 for the
# uring bdev's tests on ext4 over a loop device). qemu-img/qemu-io with their iscsi://
# driver come after these, as a pinned pair (see ensure_qemu_iscsi).
test_packages() {
    echo libiscsi-bin fio util-linux procps iproute2 mount e2fsprogs
}

# The VM test bed and its guest tools (RDMA, kernel initiators, NVMe, LIO; see test/vm/README.md
# and shared/docs/TESTBED.md). The guest runs the host's root filesystem, so everything a guest
# script runs is installed here; LIO's modules come with linux-image-amd64. virtme-ng itself
# comes from PyPI (test/vm/run.sh). scripts/test-all.sh installs this group.
vm_packages() {
    echo qemu-system-x86 linux-image-amd64 busybox-static rdma-core ibverbs-providers \
        ibverbs-utils perftest rdmacm-utils open-iscsi srptools targetcli-fb fio nvme-cli \
        sg3-utils kmod udev e2fsprogs util-linux procps iproute2 python3 python3-venv
}

die() {
    echo "deps.sh: $*" >&2
    exit 1
}

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# Run apt-get as root, its output to the log; on failure show the log and stop.
apt_quiet() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: cannot run apt-get $*"
        sudo=(sudo)
    fi
    echo "+ apt-get $*" >>"$LOG"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q "$@" >>"$LOG" 2>&1; then
        echo "deps.sh: apt-get $* failed; its output ($LOG):" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "deps.sh: installing ${missing[*]} (apt log: $LOG)"
    : >"$LOG"
    apt_quiet update
    apt_quiet install -y --no-install-recommends "${missing[@]}"
}

# qemu-img and qemu-io reach iSCSI through qemu-block-extra's module, which must be the exact
# version of qemu-utils; the machine image may carry a qemu-utils from backports that no
# configured source has the module for. test/iscsi/clients.sh installs a matching pair
# (downgrading qemu-utils if need be); silent when qemu can already open iscsi:// URLs.
ensure_qemu_iscsi() {
    local clients
    clients="$(dirname "${BASH_SOURCE[0]}")/../test/iscsi/clients.sh"
    bash "$clients" --install-qemu || die "could not make qemu-img open iscsi:// URLs (see above)"
}

check_cargo() {
    if ! command -v cargo >/dev/null; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            die "cargo is in $HOME/.cargo/bin but not on PATH: export PATH=\"\$HOME/.cargo/bin:\$PATH\""
        fi
        die "cargo not found: ferrite needs a Rust toolchain (rustup's stable, with rustfmt and clippy) on PATH"
    fi
}

main() {
    [ "$#" -gt 0 ] || set -- build
    local packages=() list=() group qemu=
    for group in "$@"; do
        case "$group" in
            build | test | vm)
                read -ra list <<<"$("${group}_packages")"
                packages+=("${list[@]}")
                [ "$group" != test ] || qemu=1 ;;
            -h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown group '$group' (groups: build, test, vm)" ;;
        esac
    done
    command -v dpkg-query >/dev/null || die "dpkg-query not found: this script expects Debian (12)"
    install_missing "${packages[@]}"
    [ -z "$qemu" ] || ensure_qemu_iscsi
    check_cargo
}

main "$@"
