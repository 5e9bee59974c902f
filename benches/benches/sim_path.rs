//! Packets through the whole simulated path between two nodes: a smoltcp pod, the
//! sending node's engine (VXLAN encap), the simulated fabric, the receiving engine
//! (decap), the receiving pod; the cluster's control plane running alongside on turmoil.
//! 64-byte UDP datagrams; the rate is per wall-clock second.

use std::time::{Duration, Instant};

use contiv_sim::cluster::{ClusterSpec, SimCluster, Transport};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn two_nodes() -> SimCluster {
    let mut c = SimCluster::new(ClusterSpec {
        nodes: 2,
        pods_per_node: 1,
        seed: 7,
        transport: Transport::Vxlan,
    })
    .expect("cluster");
    c.start(Duration::from_secs(60)).expect("control plane up");
    c.create_pod("a", 0);
    c.create_pod("b", 1);
    c.run_until("pods running", Duration::from_secs(60), |c| c.all_running())
        .expect("pods run");
    // The first packet resolves the underlay neighbour; later ones find it.
    let (_, _, ip_b) = c.running_pods()[1].clone();
    c.udp_reach("a", ip_b, Duration::from_secs(5))
        .expect("a reaches b");
    c
}

fn sim_path(cr: &mut Criterion) {
    let mut c = two_nodes();
    let mut g = cr.benchmark_group("sim_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pod_to_pod_across_nodes_64B", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let (got, _) = c
                .udp_stream("a", "b", iters, Duration::from_secs(3600))
                .expect("stream");
            assert_eq!(got, iters, "the path lost datagrams");
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, sim_path);
criterion_main!(benches);
