#!/usr/bin/env bash
# Set-up command 1: install what is missing, build the release binaries, run ferrite-tgt.
#
#   scripts/run-target.sh [ferrite-tgt arguments...]
#
# Without arguments the target serves its embedded default (a 1 GiB malloc bdev Malloc0) and
# listens for RPCs on /var/tmp/ferrite.sock. Arguments go to ferrite-tgt as they are and are
# read relative to the directory you started in (e.g. --json my.json).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# rustup's toolchain may be installed but not on PATH in a non-login shell.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

bash "$ROOT/scripts/deps.sh" build
(cd "$ROOT" && cargo build --release -p ferrite-app -p ferrite-perf)
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrite-tgt" "$@"
