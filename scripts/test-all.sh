#!/usr/bin/env bash
# Set-up command 2: install what is missing, then run every check and test suite.
#
#   scripts/test-all.sh
#
# Each step runs even when an earlier one failed; the last line is "N passed, M failed"
# (counting steps) and the exit status is non-zero when any step failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# rustup's toolchain may be installed but not on PATH in a non-login shell.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

passed=0
failed=0
failed_steps=()

# step NAME COMMAND...: run one step, show its name and outcome, count it.
step() {
    local name=$1 start=$SECONDS
    shift
    echo
    echo "=== step: $name"
    echo "+ $*"
    if "$@"; then
        passed=$((passed + 1))
        echo "=== ok: $name ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failed_steps+=("$name")
        echo "=== FAILED: $name ($((SECONDS - start)) s)"
    fi
}

step deps bash scripts/deps.sh build test vm
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --release --workspace --bins

# The integration tests run the release binaries and the client found here.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export FERRITE_TGT_BIN="$TARGET_DIR/release/ferrite-tgt"
export FERRITE_PERF_BIN="$TARGET_DIR/release/ferrite-perf"
export FERRITE_RPC_PY="$ROOT/app/rpc.py"

# Includes the real-client iSCSI tests (test/tests/iscsi_conformance.rs, iscsi_clients.rs:
# libiscsi's iscsi-test-cu and tools, qemu-img/qemu-io; the deps step installs them), each
# against a ferrite-tgt of its own on a free port.
step cargo-test cargo test --workspace --release

# test_binary CRATE TEST: builds an integration test's binary (release) and prints its path.
test_binary() {
    cargo test -p "$1" --release --test "$2" --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
}
# vm_with_test_binary PACKAGE TEST SCRIPT [ARG...]: test/vm/run.sh SCRIPT ARG... BIN, where BIN
# is the release binary of PACKAGE's integration test TEST (those that need RDMA or the NVMe
# drive are #[ignore]d on the host and run in the VM). run.sh installs what the VM needs; a
# VM that cannot boot fails the step, never a skip.
vm_with_test_binary() {
    local package=$1 test=$2 script=$3 bin
    shift 3
    bin=$(test_binary "$package" "$test")
    if [ -z "$bin" ]; then
        echo "the $test test binary was not built" >&2
        return 1
    fi
    test/vm/run.sh --timeout 900 "test/vm/$script" "$@" "$bin"
}
# The RDMA layer's tests over soft-RoCE (test/vm/rdma-layer.sh, test/vm/README.md).
step vm-rdma-layer vm_with_test_binary ferrite-transport rdma_layer rdma-layer.sh
# iSER end to end: Linux's initiator (iscsiadm -I iser) and libiscsi against the release
# ferrite-tgt in the same VM (test/vm/iser.sh: login, fio verify, ext4 across logout/login,
# two sessions, a raw verbs peer sending bad input, an outage during I/O, the link under
# rxe0 down for 2 s during I/O).
step vm-iser vm_with_test_binary ferrite-transport iser_peer iser.sh --peer-bin
# The nvme bdev on QEMU's emulated NVMe namespace (test/vm/nvme.sh: bad input, identify
# passthrough against nvme-cli, iSCSI fio verify, ferrite-perf verify, no allocation on the
# I/O path with perf/tests/no_alloc.rs' ignored nvme test, hot removal).
step vm-nvme vm_with_test_binary ferrite-perf no_alloc nvme.sh
# SRP end to end: Linux's ib_srp against the release ferrite-tgt in the same VM
# (test/vm/srp.sh: identity, fio verify with 2 and 1 channels, ext4 across a new login,
# refused logins, a wrong rkey from our own initiator (transport/tests/srp_wire.rs),
# the link under rxe0 down for 3 s during fio verify, SRP_T_LOGOUT at shutdown).
step vm-srp vm_with_test_binary ferrite-transport srp_wire srp.sh
step rpc.py-unittest python3 -m unittest discover -s app -p 'test_*.py'

# The VM tests (test/vm/README.md): Debian 12's kernel under QEMU/TCG runs the release
# ferrite-tgt against Linux's iSCSI initiator, with LIO as the performance peer. run.sh
# installs virtme-ng if missing and exits non-zero when the VM cannot boot: never a skip.
step vm-iscsi-tcp test/vm/run.sh --timeout 1200 test/vm/iscsi-tcp.sh

echo
if [ "$failed" -gt 0 ]; then
    echo "failed steps: ${failed_steps[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
