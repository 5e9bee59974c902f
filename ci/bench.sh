#!/usr/bin/env bash
# Runs the criterion benchmarks in release and prints the packet rates as a ratio to the
# I/O bound measured in the same run.
#   ci/bench.sh [extra criterion options, e.g. --measurement-time 10]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -p contiv-benches --bench io_forward --bench ip4_forward --bench fib_lookup --bench vxlan --bench snat --bench sim_path -- "$@" | tee "$out"

# criterion prints "thrpt:  [low mid high]"; take the middle estimate of each benchmark.
rate() {
  awk -v name="$1" '
    $0 ~ "^"name"[ ]" || $0 == name { found = 1 }
    found && /thrpt:/ { v = $(NF-3); u = $(NF-2); if (u == "Kelem/s") v /= 1000; if (u == "elem/s") v /= 1e6; print v; exit }
  ' "$out"
}
io=$(rate "ip4_forward/io_bound_64B")
one=$(rate "ip4_forward/1_route")
million=$(rate "ip4_forward/1M_routes")
echo
echo "summary (Mpps per core, 64-byte packets)"
printf '  io bound (virtual ports, no processing)  %8.2f\n' "$io"
printf '  ip4_forward, 1 route                     %8.2f  (%.0f%% of io bound)\n' "$one" "$(echo "$one / $io * 100" | bc -l)"
printf '  ip4_forward, 1M routes                   %8.2f  (%.0f%% of io bound)\n' "$million" "$(echo "$million / $io * 100" | bc -l)"
encap=$(rate "vxlan/encap_64B")
decap=$(rate "vxlan/decap_64B")
printf '  vxlan-encap (inner 64B, routed twice)    %8.2f  (%.0f%% of io bound)\n' "$encap" "$(echo "$encap / $io * 100" | bc -l)"
printf '  vxlan-decap (inner 64B, routed twice)    %8.2f  (%.0f%% of io bound)\n' "$decap" "$(echo "$decap / $io * 100" | bc -l)"
est=$(rate "snat/established_64B")
new=$(rate "snat/new_connections_64B")
printf '  snat, established flows                  %8.2f  (%.0f%% of io bound)\n' "$est" "$(echo "$est / $io * 100" | bc -l)"
printf '  snat, every packet a new session         %8.2f  (%.0f%% of io bound)\n' "$new" "$(echo "$new / $io * 100" | bc -l)"
sim=$(rate "sim_path/pod_to_pod_across_nodes_64B")
printf '  simulated cluster, pod to pod across nodes %6.3f  (%.2f%% of io bound; smoltcp pods, two engines, fabric, turmoil)\n' "$sim" "$(echo "$sim / $io * 100" | bc -l)"

echo
echo "simulated cluster: 50 nodes x 20 pods up and a 100-pair connectivity check (wall time)"
cargo build --release -q -p contiv-harness
/usr/bin/time -f '  wall %e s, max RSS %M KiB' ./target/release/contiv-harness sim --nodes 50 --pods-per-node 20 --sample 100 --quiet | tail -n 2

echo
echo "contiv-ksr: reflection into a real etcd (needs etcd-server and protoc)"
cargo run --release -q -p contiv-ksr --features etcd --example reflect_bench

echo
if [ "$(id -u)" -eq 0 ] && command -v iperf3 >/dev/null 2>&1; then
  echo "pods: TCP through the engine's TAP ports against the kernel's veth + bridge path"
  cargo run --release -q -p contiv-harness -- netns bench-pods --seconds 3
  if command -v etcd >/dev/null 2>&1; then
    echo
    echo "cluster: cross-node pod TCP over VXLAN through two agents against the kernel's VXLAN"
    cargo build --release -q -p contiv-harness -p contiv-vswitch -p contiv-ksr --features contiv-vswitch/etcd,contiv-ksr/etcd
    ./target/release/contiv-harness netns bench-cluster --seconds 3
  fi
else
  echo "pods benchmark skipped: needs root and iperf3 (apt-get install iperf3)"
fi

echo
if [ "$(id -u)" -eq 0 ] && command -v dpdk-testpmd >/dev/null 2>&1 && pkg-config --exists libdpdk; then
  echo "DPDK: the engine against testpmd and Open vSwitch on the same vdevs"
  ci/dpdk-bench.sh 5
else
  echo "DPDK benchmark skipped: needs root, libdpdk-dev and dpdk-testpmd (apt-get install dpdk-dev)"
fi

echo
if [ "$(id -u)" -eq 0 ] && command -v etcd >/dev/null 2>&1; then
  echo "CNI: ADD latency (exec of contiv-cni to its exit) and rate, real agent and etcd"
  cargo test --release -q -p contiv-vswitch --features etcd --test cni_bench -- --ignored --nocapture 2>&1 | grep '^cni-bench'
else
  echo "CNI benchmark skipped: needs root and etcd-server"
fi
