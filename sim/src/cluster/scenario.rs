//! The scenario the demo and `contiv-harness sim` run: bring the cluster up, place pods,
//! check the connectivity matrix, inject each fault of the plan and check again once the
//! cluster recovers, churn pods, and end with the invariants. Every check is recorded;
//! the run's trace hash fingerprints everything that happened.

use std::fmt::Write as _;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{node_name, Check, ClusterSpec, EngineCounts, Event, Fault, SimCluster, SimError};

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub cluster: ClusterSpec,
    pub faults: Vec<Fault>,
    /// Pods deleted and made again (on seeded nodes) after the faults.
    pub churn: usize,
    /// Pairs probed in each connectivity check (all pairs when there are fewer).
    pub sample: usize,
    /// Simulated time the cluster keeps running at the end, before the last checks.
    pub linger: Duration,
}

impl Scenario {
    /// The demo: three nodes, two pods each, an agent restart and a lossy link.
    pub fn demo(seed: u64) -> Scenario {
        Scenario {
            cluster: ClusterSpec {
                seed,
                ..ClusterSpec::default()
            },
            faults: vec![
                Fault::AgentRestart { node: 1 },
                Fault::LinkLoss {
                    node: 2,
                    loss: 0.2,
                    duration: Duration::from_secs(5),
                },
            ],
            churn: 2,
            sample: 30,
            linger: Duration::ZERO,
        }
    }
}

impl Scenario {
    /// The seeded random-fault soak's run for `seed`: three nodes with two pods each,
    /// two faults drawn from the seed, one pod churned (`sim --replay SEED` runs it).
    pub fn soak(seed: u64) -> Scenario {
        Scenario {
            cluster: ClusterSpec {
                seed,
                ..ClusterSpec::default()
            },
            faults: random_faults(seed, 3, 2),
            churn: 1,
            sample: 24,
            linger: Duration::ZERO,
        }
    }
}

/// A parse error in a fault plan.
#[derive(Debug, thiserror::Error)]
#[error("fault plan: {0}")]
pub struct PlanError(String);

pub fn parse_duration(s: &str) -> Result<Duration, PlanError> {
    let bad = || PlanError(format!("{s:?} is not a duration (like 5s or 300ms)"));
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    s.strip_suffix('s')
        .ok_or_else(bad)?
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| bad())
}

fn parse_node(s: &str, nodes: usize) -> Result<usize, PlanError> {
    s.strip_prefix("node")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=nodes).contains(n))
        .map(|n| n - 1)
        .ok_or_else(|| PlanError(format!("{s:?} is not a node (node1..node{nodes})")))
}

fn parse_rate(s: &str) -> Result<f64, PlanError> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| PlanError(format!("{s:?} is not a rate between 0 and 1")))
}

/// Faults drawn from `seed`: `count` of the kinds the simulation knows.
pub fn random_faults(seed: u64, nodes: usize, count: usize) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
    (0..count)
        .map(|_| {
            let node = rng.random_range(0..nodes);
            let secs = Duration::from_secs(rng.random_range(1..6));
            match rng.random_range(0..8) {
                0 => Fault::NodeCrash { node, down: secs },
                1 => Fault::AgentRestart { node },
                2 => Fault::KsrRestart,
                3 => Fault::StoreOutage { duration: secs },
                4 if nodes > 1 => {
                    let other = (node + rng.random_range(1..nodes)) % nodes;
                    Fault::Partition {
                        a: node_name(node),
                        b: node_name(other),
                        duration: secs,
                    }
                }
                4 => Fault::Partition {
                    a: node_name(node),
                    b: super::hosts::STORE_HOST.into(),
                    duration: secs,
                },
                5 => Fault::LinkLoss {
                    node,
                    loss: 0.3,
                    duration: secs,
                },
                6 => Fault::LinkLatency {
                    node,
                    delay: Duration::from_millis(rng.random_range(1..50)),
                    duration: secs,
                },
                _ => Fault::Corruption {
                    node,
                    rate: 0.05,
                    duration: secs,
                },
            }
        })
        .collect()
}

/// Parses a fault plan: faults separated by commas, each `kind:args`:
/// `node-crash:node1:10s`, `agent-restart:node2`, `ksr-restart`, `store-outage:5s`,
/// `partition:HOST:HOST:5s` (hosts: nodeN, store, api, ksr), `loss:node3:0.2:5s`,
/// `latency:node2:50ms:5s`, `corrupt:node1:0.05:5s`, or `random:N` (N faults from
/// the seed).
pub fn parse_faults(plan: &str, nodes: usize, seed: u64) -> Result<Vec<Fault>, PlanError> {
    let mut out = Vec::new();
    for item in plan.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split(':').collect();
        let want = |n: usize| {
            if parts.len() == n {
                Ok(())
            } else {
                Err(PlanError(format!(
                    "{item:?}: {} takes {} argument(s)",
                    parts[0],
                    n - 1
                )))
            }
        };
        let host = |s: &str| -> Result<String, PlanError> {
            if ["store", "api", "ksr"].contains(&s) {
                Ok(s.to_string())
            } else {
                parse_node(s, nodes).map(node_name)
            }
        };
        out.push(match parts[0] {
            "node-crash" => {
                want(3)?;
                Fault::NodeCrash {
                    node: parse_node(parts[1], nodes)?,
                    down: parse_duration(parts[2])?,
                }
            }
            "agent-restart" => {
                want(2)?;
                Fault::AgentRestart {
                    node: parse_node(parts[1], nodes)?,
                }
            }
            "ksr-restart" => {
                want(1)?;
                Fault::KsrRestart
            }
            "store-outage" => {
                want(2)?;
                Fault::StoreOutage {
                    duration: parse_duration(parts[1])?,
                }
            }
            "partition" => {
                want(4)?;
                Fault::Partition {
                    a: host(parts[1])?,
                    b: host(parts[2])?,
                    duration: parse_duration(parts[3])?,
                }
            }
            "loss" | "corrupt" => {
                want(4)?;
                let (node, rate, duration) = (
                    parse_node(parts[1], nodes)?,
                    parse_rate(parts[2])?,
                    parse_duration(parts[3])?,
                );
                if parts[0] == "loss" {
                    Fault::LinkLoss {
                        node,
                        loss: rate,
                        duration,
                    }
                } else {
                    Fault::Corruption {
                        node,
                        rate,
                        duration,
                    }
                }
            }
            "latency" => {
                want(4)?;
                Fault::LinkLatency {
                    node: parse_node(parts[1], nodes)?,
                    delay: parse_duration(parts[2])?,
                    duration: parse_duration(parts[3])?,
                }
            }
            "random" => {
                want(2)?;
                let n = parts[1]
                    .parse()
                    .map_err(|_| PlanError(format!("{:?} is not a count", parts[1])))?;
                out.extend(random_faults(seed, nodes, n));
                continue;
            }
            other => return Err(PlanError(format!("unknown fault {other:?}"))),
        });
    }
    Ok(out)
}

/// The plan text that gives `faults` back (for the replay command).
pub fn plan_text(faults: &[Fault]) -> String {
    let d = |d: &Duration| {
        if d.subsec_millis() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        }
    };
    faults
        .iter()
        .map(|f| match f {
            Fault::NodeCrash { node, down } => {
                format!("node-crash:{}:{}", node_name(*node), d(down))
            }
            Fault::AgentRestart { node } => format!("agent-restart:{}", node_name(*node)),
            Fault::KsrRestart => "ksr-restart".into(),
            Fault::StoreOutage { duration } => format!("store-outage:{}", d(duration)),
            Fault::Partition { a, b, duration } => format!("partition:{a}:{b}:{}", d(duration)),
            Fault::LinkLoss {
                node,
                loss,
                duration,
            } => format!("loss:{}:{loss}:{}", node_name(*node), d(duration)),
            Fault::LinkLatency {
                node,
                delay,
                duration,
            } => format!("latency:{}:{}:{}", node_name(*node), d(delay), d(duration)),
            Fault::Corruption {
                node,
                rate,
                duration,
            } => format!("corrupt:{}:{rate}:{}", node_name(*node), d(duration)),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Scenario {
    /// The one command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p contiv-harness -- sim --nodes {} --pods-per-node {} --seed {}",
            self.cluster.nodes, self.cluster.pods_per_node, self.cluster.seed
        );
        if self.cluster.transport == super::Transport::Nooverlay {
            cmd.push_str(" --nooverlay");
        }
        if !self.faults.is_empty() {
            let _ = write!(cmd, " --faults {}", plan_text(&self.faults));
        }
        let _ = write!(cmd, " --churn {} --sample {}", self.churn, self.sample);
        if !self.linger.is_zero() {
            let _ = write!(cmd, " --duration {}s", self.linger.as_secs());
        }
        cmd
    }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub checks: Vec<Check>,
    pub trace: u64,
    pub events: Vec<Event>,
    /// The last connectivity matrix: (from, to, reached).
    pub matrix: Vec<(String, String, bool)>,
    /// Per node: packets in, out, dropped, and the engine's error counters.
    pub nodes: Vec<(String, Option<EngineCounts>)>,
    pub simulated: Duration,
}

impl Outcome {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn ok(&self) -> bool {
        self.passed() == self.checks.len()
    }

    /// The one line a run ends with.
    pub fn verdict(&self, what: &str) -> String {
        let first_failure = self
            .checks
            .iter()
            .find(|c| !c.passed)
            .map(|c| format!(" (first failure: {}: {})", c.name, c.detail))
            .unwrap_or_default();
        format!(
            "{what}: {} {}/{} checks, seed {}, trace {:016x}{first_failure}",
            if self.ok() { "PASS" } else { "FAIL" },
            self.passed(),
            self.checks.len(),
            self.seed,
            self.trace
        )
    }

    /// The connectivity matrix as a table (rows: from, columns: to).
    pub fn matrix_table(&self) -> String {
        let mut names: Vec<&String> = self.matrix.iter().flat_map(|(a, b, _)| [a, b]).collect();
        names.sort();
        names.dedup();
        let w = names.iter().map(|n| n.len()).max().unwrap_or(4);
        let mut t = format!("{:w$} ", "");
        for n in &names {
            let _ = write!(t, " {n:>w$}");
        }
        t.push('\n');
        for a in &names {
            let _ = write!(t, "{a:w$} ");
            for b in &names {
                let cell = self
                    .matrix
                    .iter()
                    .find(|(x, y, _)| x == *a && y == *b)
                    .map_or(if a == b { "-" } else { "." }, |(_, _, ok)| {
                        if *ok {
                            "ok"
                        } else {
                            "FAIL"
                        }
                    });
                let _ = write!(t, " {cell:>w$}");
            }
            t.push('\n');
        }
        t
    }
}

/// How long recovery from a fault may take, in simulated time, before it is a failure.
const RECOVERY_BOUND: Duration = Duration::from_secs(120);
/// How long one probe may take.
const PROBE_BOUND: Duration = Duration::from_secs(5);

fn check(checks: &mut Vec<Check>, name: impl Into<String>, r: Result<String, String>) {
    let (passed, detail) = match r {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    checks.push(Check {
        name: name.into(),
        passed,
        detail,
    });
}

fn matrix_check(
    c: &mut SimCluster,
    checks: &mut Vec<Check>,
    name: &str,
    sample: usize,
) -> Result<Vec<(String, String, bool)>, SimError> {
    let m = c.connectivity(sample, PROBE_BOUND)?;
    let ok = m.iter().filter(|x| x.2).count();
    let failed: Vec<String> = m
        .iter()
        .filter(|x| !x.2)
        .map(|(a, b, _)| format!("{a}->{b}"))
        .collect();
    check(
        checks,
        name,
        if failed.is_empty() {
            Ok(format!("{ok}/{} pairs reached over UDP", m.len()))
        } else {
            Err(format!(
                "{ok}/{} reached; failed {}",
                m.len(),
                failed.join(" ")
            ))
        },
    );
    Ok(m)
}

/// Waits until the pods all run and no fault is in effect; a check either way.
fn settle(c: &mut SimCluster, checks: &mut Vec<Check>, name: &str) -> Result<bool, SimError> {
    let r = c.run_until(name, RECOVERY_BOUND, |c| c.settled() && c.agents_ready());
    let ok = r.is_ok();
    check(
        checks,
        name,
        match r {
            Ok(t) => Ok(format!(
                "{} pods running after {:.1} s",
                c.pod_count(),
                t.as_secs_f64()
            )),
            Err(SimError::Timeout { .. }) => Err(format!(
                "not settled within {RECOVERY_BOUND:?}: {} of {} pods running",
                c.running_pods().len(),
                c.pod_count()
            )),
            Err(e) => return Err(e),
        },
    );
    Ok(ok)
}

/// Runs `s`, calling `progress` with every event.
pub fn run(s: &Scenario, progress: impl FnMut(&Event) + 'static) -> Result<Outcome, SimError> {
    let mut c = SimCluster::new(s.cluster.clone())?;
    c.on_event(progress);
    let mut checks = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(s.cluster.seed ^ 0x5c4e);
    let up = c.start(Duration::from_secs(60));
    check(
        &mut checks,
        "control plane up (agents serving, KSR leading)",
        up.map(|t| format!("after {:.2} s", t.as_secs_f64()))
            .map_err(|e| e.to_string()),
    );
    let mut made = 0usize;
    for n in 0..s.cluster.nodes {
        for k in 0..s.cluster.pods_per_node {
            c.create_pod(&format!("pod-{}-{}", n + 1, k + 1), n);
            made += 1;
        }
    }
    settle(&mut c, &mut checks, &format!("{made} pods running"))?;
    let mut matrix = matrix_check(&mut c, &mut checks, "connectivity", s.sample)?;
    // One TCP exchange and one ping across nodes.
    let running = c.running_pods();
    if let (Some(a), Some(b)) = (
        running.first(),
        running.iter().find(|p| p.1 != running[0].1),
    ) {
        let (a, b) = (a.clone(), b.clone());
        check(
            &mut checks,
            format!("TCP {} -> {}", a.0, b.0),
            c.tcp_request(&a.0, b.2, PROBE_BOUND)
                .map_err(|e| e.to_string())
                .and_then(|reply| {
                    if reply.starts_with(&b.0) {
                        Ok(format!("answered {reply:?}"))
                    } else {
                        Err(format!("answered {reply:?}"))
                    }
                }),
        );
        check(
            &mut checks,
            format!("ping {} -> {}", a.0, b.0),
            c.ping(&a.0, b.2, PROBE_BOUND)
                .map(|t| format!("answered in {} ms", t.as_millis()))
                .map_err(|e| e.to_string()),
        );
    }
    for f in &s.faults {
        c.inject(f.clone());
        if settle(&mut c, &mut checks, &format!("recovered from: {f}"))? {
            matrix = matrix_check(
                &mut c,
                &mut checks,
                &format!("connectivity after: {f}"),
                s.sample,
            )?;
            // The invariants hold after each recovery, not only at the end.
            for mut inv in c.invariants() {
                inv.name = format!("after {f}: {}", inv.name);
                checks.push(inv);
            }
        }
    }
    if s.churn > 0 {
        let mut candidates = c.running_pods();
        for i in 0..s.churn.min(candidates.len()) {
            let victim = candidates
                .swap_remove(rng.random_range(0..candidates.len()))
                .0;
            c.delete_pod(&victim);
            let node = rng.random_range(0..s.cluster.nodes);
            c.create_pod(&format!("churn-{}", i + 1), node);
        }
        settle(
            &mut c,
            &mut checks,
            &format!("churn of {} pods settled", s.churn),
        )?;
        matrix = matrix_check(&mut c, &mut checks, "connectivity after churn", s.sample)?;
    }
    if !s.linger.is_zero() {
        c.run_for(s.linger)?;
        matrix = matrix_check(
            &mut c,
            &mut checks,
            &format!("connectivity after {:?} more", s.linger),
            s.sample,
        )?;
    }
    checks.extend(c.invariants());
    let nodes = (0..s.cluster.nodes)
        .map(|i| (node_name(i), c.engine_counts(i)))
        .collect();
    Ok(Outcome {
        seed: s.cluster.seed,
        trace: c.trace().hash(),
        events: c.events().to_vec(),
        simulated: c.now(),
        checks,
        matrix,
        nodes,
    })
}
