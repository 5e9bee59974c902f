#!/usr/bin/env bash
# Fuzzes the IPv4 graph (ethernet-input .. interface-output) for SECONDS seconds.
#   ci/fuzz.sh [SECONDS] [libFuzzer options...]
# cargo-fuzz is installed from crates.io when missing. The toolchain here is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/../plugin/dataplane"
seconds=${1:-60}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run ip4_graph -- -max_total_time="$seconds" "$@"
