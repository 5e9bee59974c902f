//! Scenario tests of the simulated cluster: the production agents, KSR and dataplanes on
//! turmoil, pods on smoltcp. A failing test prints its seed and the command that replays
//! it.

use std::time::Duration;

use contiv_sim::cluster::scenario::{parse_faults, run, Outcome, Scenario};
use contiv_sim::cluster::{ClusterSpec, Fault, Transport};

fn scenario(nodes: usize, pods: usize, seed: u64, faults: Vec<Fault>, churn: usize) -> Scenario {
    Scenario {
        cluster: ClusterSpec {
            nodes,
            pods_per_node: pods,
            seed,
            transport: Transport::Vxlan,
        },
        faults,
        churn,
        sample: 24,
        linger: Duration::ZERO,
    }
}

fn run_ok(s: &Scenario) -> Outcome {
    let out = run(s, |_| {}).unwrap_or_else(|e| {
        panic!(
            "seed {}: {e}\nreplay: {}",
            s.cluster.seed,
            s.replay_command()
        )
    });
    let failed: Vec<String> = out
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("  {}: {}", c.name, c.detail))
        .collect();
    assert!(
        failed.is_empty(),
        "seed {}: {} checks failed:\n{}\nreplay: {}",
        s.cluster.seed,
        failed.len(),
        failed.join("\n"),
        s.replay_command()
    );
    out
}

#[test]
fn pods_reach_each_other_on_one_node_and_across_nodes_over_vxlan() {
    let mut s = scenario(3, 2, 11, vec![], 0);
    s.sample = 30;
    let out = run_ok(&s);
    // Every ordered pair of the 6 pods: same node and across.
    assert_eq!(out.matrix.len(), 30);
    assert!(out.matrix.iter().all(|m| m.2));
    assert!(out.checks.iter().any(|c| c.name.starts_with("TCP ")));
}

#[test]
fn pods_reach_each_other_without_an_overlay() {
    let mut s = scenario(3, 2, 12, vec![], 0);
    s.cluster.transport = Transport::Nooverlay;
    run_ok(&s);
}

#[test]
fn pod_churn_leaves_no_leaks() {
    let out = run_ok(&scenario(2, 3, 13, vec![], 4));
    for name in [
        "no leaked or missing IP allocations",
        "no leaked interfaces",
    ] {
        assert!(
            out.checks.iter().any(|c| c.name == name && c.passed),
            "{name}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let faults = |seed| parse_faults("agent-restart:node2,loss:node1:0.2:2s", 2, seed).unwrap();
    let a = run_ok(&scenario(2, 2, 21, faults(21), 1));
    let b = run_ok(&scenario(2, 2, 21, faults(21), 1));
    assert_eq!(
        a.trace, b.trace,
        "one seed, two traces: the simulation leaks nondeterminism"
    );
    assert_eq!(a.events.len(), b.events.len());
    let c = run_ok(&scenario(2, 2, 22, faults(22), 1));
    assert_ne!(a.trace, c.trace, "two seeds gave one trace");
}

fn fault_test(plan: &str, seed: u64) {
    let faults = parse_faults(plan, 3, seed).unwrap();
    let out = run_ok(&scenario(3, 2, seed, faults, 1));
    assert!(
        out.checks
            .iter()
            .any(|c| c.name.starts_with("connectivity after: ") && c.passed),
        "no connectivity check ran after the fault"
    );
}

#[test]
fn node_crash_and_restart() {
    fault_test("node-crash:node2:5s", 31);
}

#[test]
fn agent_restart() {
    fault_test("agent-restart:node1", 32);
}

#[test]
fn ksr_restart() {
    fault_test("ksr-restart", 33);
}

#[test]
fn store_outage() {
    fault_test("store-outage:5s", 34);
}

#[test]
fn partition_between_nodes_and_between_a_node_and_the_store() {
    fault_test("partition:node1:node2:4s,partition:node3:store:4s", 35);
}

#[test]
fn link_loss_latency_and_corruption() {
    fault_test(
        "loss:node1:0.3:3s,latency:node2:40ms:3s,corrupt:node3:0.05:3s",
        36,
    );
}

/// Random faults from each seed, the invariants as the oracle: `SIM_SOAK_SEEDS` seeds in
/// all (200 by default), from `SIM_SOAK_FIRST` (1000), split over four tests so they run
/// in parallel.
fn soak_shard(shard: u64) {
    const SHARDS: u64 = 4;
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (seeds, first) = (env("SIM_SOAK_SEEDS", 200), env("SIM_SOAK_FIRST", 1000));
    for seed in (first..first + seeds).filter(|s| s % SHARDS == shard) {
        run_ok(&Scenario::soak(seed));
    }
}

#[test]
fn random_fault_soak_0() {
    soak_shard(0);
}

#[test]
fn random_fault_soak_1() {
    soak_shard(1);
}

#[test]
fn random_fault_soak_2() {
    soak_shard(2);
}

#[test]
fn random_fault_soak_3() {
    soak_shard(3);
}

#[test]
fn fault_plans_parse_and_print_back() {
    let plan = "node-crash:node1:10s,agent-restart:node2,ksr-restart,store-outage:5s,partition:node1:store:3s,loss:node3:0.2:5s,latency:node2:50ms:5s,corrupt:node1:0.05:2s";
    let f = parse_faults(plan, 3, 1).unwrap();
    assert_eq!(f.len(), 8);
    assert_eq!(contiv_sim::cluster::scenario::plan_text(&f), plan);
    for bad in [
        "node-crash:node9:1s",
        "loss:node1:2:1s",
        "teleport",
        "store-outage:5",
    ] {
        assert!(parse_faults(bad, 3, 1).is_err(), "{bad}");
    }
}

fn ten_nodes(transport: Transport, seed: u64) {
    let mut s = scenario(10, 2, seed, vec![], 0);
    s.cluster.transport = transport;
    s.sample = 60;
    let out = run_ok(&s);
    assert_eq!(out.matrix.len(), 60);
}

#[test]
fn ten_nodes_over_vxlan() {
    ten_nodes(Transport::Vxlan, 41);
}

#[test]
fn ten_nodes_without_an_overlay() {
    ten_nodes(Transport::Nooverlay, 42);
}

/// A node leaves: the others drop its tunnel and routes, and its ID and record leave the
/// store; it joins again and gets its old ID back, and its new pods are reached.
#[test]
fn a_node_leaves_and_rejoins_with_its_old_id() {
    use contiv_sim::cluster::SimCluster;
    let bound = Duration::from_secs(60);
    let mut c = SimCluster::new(ClusterSpec {
        nodes: 3,
        pods_per_node: 1,
        seed: 43,
        transport: Transport::Vxlan,
    })
    .unwrap();
    c.start(bound).unwrap();
    for n in 0..3 {
        c.create_pod(&format!("p{n}"), n);
    }
    c.run_until("pods running", bound, |c| c.all_running())
        .unwrap();
    let old_id = c.node_id(2).unwrap();
    let remote_items = |c: &mut SimCluster, node: usize, id: u32| {
        c.dump(node)
            .unwrap()
            .items
            .iter()
            .filter(|e| e.key.starts_with(&format!("remote/{id}/")))
            .count()
    };
    assert_eq!(
        remote_items(&mut c, 0, old_id),
        2,
        "a tunnel and routes to node3"
    );

    c.node_leave(2);
    c.run_until("node3's record and ID gone", bound, |c| {
        c.store_keys("node-info/node3").is_empty()
            && c.store_keys(&format!("node-id/{old_id}")).is_empty()
    })
    .unwrap();
    for node in [0, 1] {
        c.run_until("the tunnel and routes to node3 removed", bound, |c| {
            remote_items(c, node, old_id) == 0
        })
        .unwrap();
    }
    let checks = c.invariants();
    assert!(checks.iter().all(|k| k.passed), "{checks:#?}");

    c.node_rejoin(2);
    c.run_until("node3's agent back", bound, |c| {
        c.agents_ready() && c.node_id(2).is_some()
    })
    .unwrap();
    assert_eq!(
        c.node_id(2),
        Some(old_id),
        "the lowest free ID is its old one"
    );
    c.create_pod("p3", 2);
    c.run_until("p3 running", bound, |c| c.all_running())
        .unwrap();
    let ip = c
        .running_pods()
        .into_iter()
        .find(|p| p.0 == "p3")
        .unwrap()
        .2;
    c.udp_reach("p0", ip, Duration::from_secs(5)).unwrap();
    let checks = c.invariants();
    assert!(checks.iter().all(|k| k.passed), "{checks:#?}");
}
