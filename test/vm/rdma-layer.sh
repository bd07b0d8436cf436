#!/usr/bin/env bash
# Guest script: the RDMA layer's tests (transport/tests/rdma_layer.rs) over soft-RoCE rxe0
# on 169.254.77.1. Build the test binary on the host first, then boot the VM:
#
#   cargo test -p ferrite-transport --release --test rdma_layer --no-run
#   test/vm/run.sh test/vm/rdma-layer.sh [TEST_BINARY] [-- TEST_ARGS...]
#
# TEST_BINARY defaults to the newest target/release/deps/rdma_layer-*. The tests are
# #[ignore]d on the host (it has no RDMA); here they run with --ignored, one at a time.
# Exits with the test binary's status (0 when all passed).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}

bin=
if [ "$#" -gt 0 ] && [ "$1" != "--" ]; then
    bin=$1
    shift
fi
[ "${1:-}" != "--" ] || shift
if [ -z "$bin" ]; then
    bin=$(find "$TARGET_DIR/release/deps" -maxdepth 1 -type f -executable -name 'rdma_layer-*' \
        -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "rdma-layer: no test binary (build it: cargo test -p ferrite-transport --release --test rdma_layer --no-run)" >&2
    exit 125
fi

if ! ibv_devices 2>/dev/null | grep -qw rxe0; then
    echo "rdma-layer: no rxe0 (the prelude should have made it)" >&2
    exit 125
fi

echo "rdma-layer: $(basename "$bin") on $(rdma link show rxe0/1 2>/dev/null | sed 's/^link //')"
export FERRITE_RDMA_ADDR=${FERRITE_RDMA_ADDR:-169.254.77.1}
export RUST_BACKTRACE=1
# The tests run their own reactors on both vCPUs: one at a time.
"$bin" --ignored --test-threads=1 "$@"
