//! CNI ADD latency and rate, measured from exec of contiv-cni to its exit, against a
//! real agent and etcd. A benchmark, not a test: it asserts nothing about time and is
//! ignored by default. `ci/bench.sh` runs it in release:
//!
//! `cargo test --release -p contiv-vswitch --features etcd --test cni_bench -- --ignored --nocapture`

mod common;
mod wait;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore = "a benchmark: run by ci/bench.sh"]
fn cni_add_latency_and_rate() {
    if !can_run() {
        return;
    }
    let node = Arc::new(Node::start("bench"));
    let n = 200;
    let pods: Arc<Vec<_>> = Arc::new((0..n).map(|i| node.pod_netns(i)).collect());

    let mut adds = Vec::with_capacity(n);
    for (i, p) in pods.iter().enumerate() {
        let out = node.add(&format!("seq{i}"), p);
        out.ok();
        adds.push(out.took);
    }
    let mut dels = Vec::with_capacity(n);
    for (i, p) in pods.iter().enumerate() {
        let out = node.del(&format!("seq{i}"), p);
        out.ok();
        dels.push(out.took);
    }
    adds.sort();
    dels.sort();
    println!(
        "cni-bench: {n} sequential ADDs, exec to exit: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&adds, 0.5).as_secs_f64() * 1e3,
        percentile(&adds, 0.99).as_secs_f64() * 1e3,
        adds[n - 1].as_secs_f64() * 1e3
    );
    println!(
        "cni-bench: {n} sequential DELs: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&dels, 0.5).as_secs_f64() * 1e3,
        percentile(&dels, 0.99).as_secs_f64() * 1e3
    );

    // 8 concurrent callers over the same pods.
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (node, pods, next) = (node.clone(), pods.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods.len() {
                    break;
                }
                node.add(&format!("par{i}"), &pods[i]).ok();
            })
        })
        .collect();
    for c in callers {
        c.join().expect("caller");
    }
    let took = start.elapsed();
    println!(
        "cni-bench: {n} ADDs by 8 concurrent callers in {:.2} s: {:.0} ADDs/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    for (i, p) in pods.iter().enumerate() {
        node.del(&format!("par{i}"), p).ok();
    }
    node.assert_no_pod_state();
}
