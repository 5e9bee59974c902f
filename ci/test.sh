#!/usr/bin/env bash
# Runs every test of the project on this machine, installing what the tests need first.
# Fails loudly: any failing step stops the script with a non-zero exit.
#
# Needs root for apt-get (and, as later issues land, for network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests use, by the command that proves each is there.
declare -A packages=(
  [tcpdump]=tcpdump            # reads the pcap captures the virtual ports write
  [etcd]=etcd-server           # the real etcd the store's conformance suite runs against
  [protoc]=protobuf-compiler   # etcd-client's build script (feature `etcd` only)
  [kubectl]=kubernetes-client  # drives the simulated API server in its tests
  [ping]=iputils-ping          # pings between pod namespaces
  [ip]=iproute2                # makes the namespaces tests run in
  [ethtool]=ethtool            # turns veth offloads off for the AF_PACKET tests
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
# Debian's CNI reference plugins, chained after contiv-cni in its tests (not on PATH).
[ -x /usr/lib/cni/tuning ] || missing+=(containernetworking-plugins)
# The `dpdk` feature (on in this run): bindgen over libdpdk's headers needs libclang and
# pkg-config; the DPDK tests load libdpdk's drivers (net_ring, net_tap, net_af_packet).
for pkg in libdpdk-dev libclang-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci/test.sh: these packages are missing and only root can install them: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Tests that need an outside tool fail (rather than skip) when it is missing under CI.
export CONTIV_REQUIRE_TOOLS=1
export CARGO_TERM_COLOR=never

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "the demo's build needs nothing but Rust"
# Our .proto files are compiled by protox (tonic-prost-build's compile_fds), never by
# protoc: a build of the demo with a protoc that always fails must still work, and no
# crate that needs libclang (bindgen), libdpdk (contiv-dpdk-sys) or protoc at build time
# (etcd-client) may be in it.
if cargo tree -p contiv-harness -e normal,build --prefix none | grep -E '^(bindgen|contiv-dpdk-sys|etcd-client|protoc)' ; then
  echo "ci/test.sh: the demo's dependency graph pulls in a build that needs protoc, libclang or libdpdk" >&2
  exit 1
fi
PROTOC=/bin/false cargo build --locked -q -p contiv-harness

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
else
  cargo test --workspace --all-features --locked --no-fail-fast
fi

step "demo"
cargo run --locked -q -p contiv-harness -- demo | tail -n 22
cargo run --locked -q -p contiv-harness -- router --udp 3000 --no-pcap | tail -n 3

step "fuzz (bounded, fixed seed)"
ci/fuzz.sh 30 -seed=1 2>&1 | tail -n 4

printf '\nci/test.sh: all checks passed\n'
