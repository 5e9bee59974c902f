#!/usr/bin/env bash
# The engine's full IPv4 forwarding against dpdk-testpmd --forward-mode=io and Open vSwitch
# with DPDK, on the same two vdevs in the same run: frames from net_pcap replaying a
# capture of 60-byte IPv4/UDP packets forever, out of net_null. One forwarding core each,
# hugepages (set up here if missing). Needs root, libdpdk-dev, dpdk-testpmd (dpdk-dev) and
# ovs-vswitchd-dpdk (openvswitch-switch-dpdk; skipped when absent).
#   ci/dpdk-bench.sh [seconds per run, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
work=$(mktemp -d)
ovs_dir="$work/ovs"
cleanup() {
  for pid in "$ovs_dir"/*.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  rm -rf "$work" /var/run/dpdk/contiv-bench-*
}
trap cleanup EXIT

if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 1024 ]; then
  echo 1024 > /proc/sys/vm/nr_hugepages
fi
grep -q ' /dev/hugepages hugetlbfs' /proc/mounts || { mkdir -p /dev/hugepages; mount -t hugetlbfs nodev /dev/hugepages; }

cargo build --release -q -p contiv-benches --features dpdk --bin dpdk-forward
pcap="$work/frames.pcap"
./target/release/dpdk-forward --write-pcap "$pcap"

ours_line=$(./target/release/dpdk-forward --hugepages --seconds "$seconds" | tee /dev/stderr)
ours=$(echo "$ours_line" | awk '{print $2}')

# testpmd prints per-port rates every stats period; the last Tx-pps of port 1 is the rate.
timeout -s INT $((seconds + 4)) dpdk-testpmd -l 0,1 -m 1024 --no-pci --no-telemetry \
  --file-prefix contiv-bench-tp --vdev="net_pcap0,rx_pcap=$pcap,infinite_rx=1" \
  --vdev=net_null0,no-rx=1 -- --forward-mode=io --auto-start --nb-cores=1 \
  --stats-period=2 > "$work/testpmd.log" 2>&1 || true
testpmd=$(awk '/statistics for port 0/ {p = 0} /statistics for port 1/ {p = 1}
  p && /Tx-pps/ {v = $2} END {printf "%.2f", v / 1e6}' "$work/testpmd.log")

ovs=""
if [ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ]; then
  mkdir -p "$ovs_dir"
  export OVS_RUNDIR="$ovs_dir" OVS_LOGDIR="$ovs_dir" OVS_DBDIR="$ovs_dir"
  db="unix:$ovs_dir/db.sock"
  ovsdb-tool create "$ovs_dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$ovs_dir/conf.db" --remote="punix:$ovs_dir/db.sock" \
    --pidfile="$ovs_dir/ovsdb.pid" --detach --log-file="$ovs_dir/ovsdb.log"
  ovs-vsctl --db="$db" --no-wait init
  ovs-vsctl --db="$db" --no-wait set Open_vSwitch . other_config:dpdk-init=true \
    other_config:dpdk-socket-mem=1024 other_config:pmd-cpu-mask=0x2 \
    other_config:dpdk-lcore-mask=0x1 \
    "other_config:dpdk-extra=--no-pci --no-telemetry --file-prefix contiv-bench-ovs"
  /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk "$db" --pidfile="$ovs_dir/vswitchd.pid" \
    --detach --log-file="$ovs_dir/vswitchd.log"
  ovs-vsctl --db="$db" add-br br0 -- set bridge br0 datapath_type=netdev
  ovs-vsctl --db="$db" add-port br0 p0 -- set Interface p0 type=dpdk \
    "options:dpdk-devargs=\"net_pcap0,rx_pcap=$pcap,infinite_rx=1\"" ofport_request=1
  ovs-vsctl --db="$db" add-port br0 p1 -- set Interface p1 type=dpdk \
    "options:dpdk-devargs=\"net_null0,no-rx=1\"" ofport_request=2
  ovs-ofctl del-flows br0
  ovs-ofctl add-flow br0 in_port=1,actions=output:2
  ovs-ofctl add-flow br0 in_port=2,actions=output:1
  tx() { ovs-ofctl dump-ports br0 2 | awk -F'pkts=' '/tx/ {split($2, a, ","); print a[1]}'; }
  sleep 2 # warm-up (a benchmark, not a test: nothing waits on this)
  a=$(tx); sleep "$seconds"; b=$(tx)
  ovs=$(echo "($b - $a) / $seconds / 1000000" | bc -l)
fi

echo
echo "summary (Mpps, one forwarding core, hugepages, net_pcap -> net_null)"
printf '  dpdk-testpmd --forward-mode=io           %8.2f\n' "$testpmd"
if [ -n "$ovs" ]; then
  printf '  Open vSwitch %-28s %8.2f\n' "$(ovs-vswitchd --version | awk 'NR==1 {print $NF}') (1 flow/dir)" "$ovs"
fi
printf '  contiv engine, full ip4 forwarding, 1M routes %4.2f  (%.0f%% of testpmd' "$ours" "$(echo "$ours / $testpmd * 100" | bc -l)"
if [ -n "$ovs" ]; then
  printf ', %.2fx Open vSwitch)\n' "$(echo "$ours / $ovs" | bc -l)"
else
  printf '; Open vSwitch with DPDK not installed)\n'
fi
