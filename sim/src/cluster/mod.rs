//! The simulated cluster: the production control plane and dataplane of every node in
//! one process, on turmoil's simulated network and clock, with pods as smoltcp stacks.
//!
//! ```text
//!  store (MemoryStore over gRPC)   api (simulated API server + scheduler's hands)   ksr
//!        ▲  ▲                             ▲                                          │
//!        │  └─────────────── turmoil: every control-plane connection ───────────────┘
//!  node1: contiv agent ─ engine ─ pods (smoltcp)     node2: ...     nodeN: ...
//!             └── uplink ──────── fabric (learning switch, impairments) ────── uplink
//! ```
//!
//! The driver ([`SimCluster`]) owns what is not a process: the fabric, the pods' stacks,
//! the engines' polling (one poll of every engine, the fabric and every pod after each
//! turmoil tick, repeated while anything moves), the scheduler's decisions and the fault
//! plan. Everything it does comes from the seed, so a run is a pure function of its spec.

pub mod fabric;
pub mod hosts;
pub mod net;
pub mod node_host;
pub mod pod;
pub mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contiv_hw::{BufferPool, Impairments, Timestamp};
use contiv_store::MemoryStore;
use contiv_vswitch::{AgentConfig, AgentDump, Request};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::apiserver::ApiServer;
use crate::TraceHasher;
use fabric::Fabric;
use hosts::{lock, ApiCommand, KubeletCommand, Mailbox, NodeShared};
use node_host::Namespaces;
use pod::SimPod;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulation failed: {0}")]
    Turmoil(String),
    #[error("{what} did not happen within {bound:?} of simulated time")]
    Timeout { what: String, bound: Duration },
    #[error("bad configuration: {0}")]
    Config(String),
}

/// How nodes reach each other's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Vxlan,
    Nooverlay,
}

impl Transport {
    fn config_name(self) -> &'static str {
        match self {
            Transport::Vxlan => "vxlan",
            Transport::Nooverlay => "nooverlay",
        }
    }
}

/// What the cluster is made of.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub pods_per_node: usize,
    pub seed: u64,
    pub transport: Transport,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            nodes: 3,
            pods_per_node: 2,
            seed: 1,
            transport: Transport::Vxlan,
        }
    }
}

/// A fault the driver injects; each heals by itself after its duration (or at once, for
/// restarts).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The node goes down with its pods; after `down` it boots again and its pods are
    /// made again (new sandboxes, new CNI ADDs).
    NodeCrash {
        node: usize,
        down: Duration,
    },
    /// contiv-vswitch (agent and dataplane) restarts; pods keep their namespaces.
    AgentRestart {
        node: usize,
    },
    KsrRestart,
    StoreOutage {
        duration: Duration,
    },
    /// No traffic between two hosts (control plane) and, for two nodes, between their
    /// uplinks.
    Partition {
        a: String,
        b: String,
        duration: Duration,
    },
    LinkLoss {
        node: usize,
        loss: f64,
        duration: Duration,
    },
    LinkLatency {
        node: usize,
        delay: Duration,
        duration: Duration,
    },
    Corruption {
        node: usize,
        rate: f64,
        duration: Duration,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::NodeCrash { node, down } => write!(f, "node{} crashes for {down:?}", node + 1),
            Fault::AgentRestart { node } => write!(f, "node{}'s agent restarts", node + 1),
            Fault::KsrRestart => write!(f, "contiv-ksr restarts"),
            Fault::StoreOutage { duration } => write!(f, "the store is down for {duration:?}"),
            Fault::Partition { a, b, duration } => {
                write!(f, "{a} and {b} are partitioned for {duration:?}")
            }
            Fault::LinkLoss {
                node,
                loss,
                duration,
            } => write!(
                f,
                "node{}'s link loses {:.0}% for {duration:?}",
                node + 1,
                loss * 100.0
            ),
            Fault::LinkLatency {
                node,
                delay,
                duration,
            } => write!(
                f,
                "node{}'s link delays {delay:?} for {duration:?}",
                node + 1
            ),
            Fault::Corruption {
                node,
                rate,
                duration,
            } => write!(
                f,
                "node{}'s link corrupts {:.0}% for {duration:?}",
                node + 1,
                rate * 100.0
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodPhase {
    /// The kubelet was asked to ADD.
    Adding,
    Running,
    /// The kubelet was asked to DEL.
    Deleting,
    /// An ADD failed; tried again at the given time.
    Backoff(Duration),
    /// The sandbox went down with its node; a new one is made when the node is back.
    AwaitingNode,
}

struct PodRecord {
    node: usize,
    container: String,
    netns: PathBuf,
    phase: PodPhase,
    ip: Option<Ipv4Addr>,
    stack: Option<SimPod>,
    attempts: u32,
}

/// One check of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// Something that happened, at a simulated time.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Duration,
    pub what: String,
}

/// A fault in effect, and when it heals.
struct ActiveFault {
    fault: Fault,
    heals_at: Duration,
}

/// The simulation's tick: each host's runtime runs this much simulated time per step.
const TICK: Duration = Duration::from_millis(1);
/// Rounds of engine, fabric and pod polls per tick, at most (a packet crosses four hops
/// from pod to pod).
const POLL_ROUNDS: usize = 16;
/// The kubelet's wait before it makes a new sandbox for a pod whose ADD failed.
const ADD_RETRY: Duration = Duration::from_secs(2);
/// Packet buffers the whole simulation shares.
const POOL_BUFFERS: usize = 64 * 1024;

/// Called with every event as it happens.
type Progress = Box<dyn FnMut(&Event)>;

/// What a node's engine counted.
#[derive(Clone, Debug, Default)]
pub struct EngineCounts {
    pub received: u64,
    pub transmitted: u64,
    pub drops: u64,
    /// The engine's error counters (`show errors`).
    pub errors: String,
}

pub struct SimCluster {
    spec: ClusterSpec,
    sim: turmoil::Sim<'static>,
    nodes: Vec<Arc<NodeShared>>,
    namespaces: Namespaces,
    fabric: Fabric,
    pool: BufferPool,
    store: Arc<Mutex<Option<MemoryStore>>>,
    api: Arc<Mutex<Option<ApiServer>>>,
    api_commands: Arc<Mailbox<ApiCommand>>,
    ksr_metrics: Arc<Mutex<Arc<contiv_ksr::Metrics>>>,
    pods: BTreeMap<String, PodRecord>,
    rng: ChaCha8Rng,
    trace: TraceHasher,
    events: Vec<Event>,
    faults: Vec<ActiveFault>,
    down: BTreeSet<usize>,
    /// Nodes that left the cluster (their Node object deleted).
    departed: BTreeSet<usize>,
    boots: Vec<u64>,
    next_token: u64,
    progress: Option<Progress>,
}

fn agent_config(spec: &ClusterSpec, name: &str) -> Result<AgentConfig, SimError> {
    let yaml = format!(
        "nodeName: {name}\n\
         store:\n  endpoints: [\"http://{}:{}\"]\n  timeoutMs: {}\n\
         nodeToNodeTransport: {}\n\
         hostInterconnect: false\n\
         uplink:\n  afPacket: eth0\n",
        hosts::STORE_HOST,
        hosts::STORE_PORT,
        hosts::STORE_TIMEOUT.as_millis(),
        spec.transport.config_name(),
    );
    AgentConfig::from_yaml("<simulation>", &yaml).map_err(|e| SimError::Config(e.to_string()))
}

pub fn node_name(index: usize) -> String {
    format!("node{}", index + 1)
}

impl SimCluster {
    /// Builds the cluster (nothing runs until it is stepped).
    pub fn new(spec: ClusterSpec) -> Result<SimCluster, SimError> {
        if spec.nodes == 0 {
            return Err(SimError::Config("a cluster needs a node".into()));
        }
        let mut sim = turmoil::Builder::new()
            .rng_seed(spec.seed)
            .tick_duration(TICK)
            .simulation_duration(Duration::from_secs(365 * 24 * 3600))
            .build();
        let store = Arc::new(Mutex::new(None));
        let api = Arc::new(Mutex::new(None));
        let api_commands = Arc::new(Mailbox::default());
        let ksr_metrics = Arc::new(Mutex::new(Arc::new(contiv_ksr::Metrics::default())));
        sim.host(hosts::STORE_HOST, hosts::store_host(store.clone()));
        sim.host(
            hosts::API_HOST,
            hosts::api_host(api.clone(), api_commands.clone()),
        );
        sim.host(hosts::KSR_HOST, hosts::ksr_host(ksr_metrics.clone()));
        let pool = BufferPool::new("sim", POOL_BUFFERS);
        let shared_pool = Arc::new(pool.handle());
        let namespaces = Namespaces::default();
        let mut fabric = Fabric::default();
        let mut nodes = Vec::new();
        for i in 0..spec.nodes {
            let name = node_name(i);
            let shared = Arc::new(NodeShared {
                name: name.clone(),
                config: agent_config(&spec, &name)?,
                namespaces: namespaces.clone(),
                pool: shared_pool.clone(),
                engine: Mutex::new(None),
                uplink: Arc::new(Mutex::new(None)),
                requests: Mutex::new(None),
                metrics: Mutex::new(None),
                node_id: Mutex::new(None),
                kubelet: Mailbox::default(),
                results: Mutex::new(Vec::new()),
            });
            let uplink = fabric.attach(i, spec.seed ^ (i as u64) << 32);
            *lock(&shared.uplink) = Some(Box::new(uplink));
            sim.host(name.as_str(), hosts::node_host(shared.clone()));
            nodes.push(shared);
            api_commands.push(ApiCommand::CreateNode { name });
        }
        let rng = ChaCha8Rng::seed_from_u64(spec.seed);
        Ok(SimCluster {
            boots: vec![1; spec.nodes],
            spec,
            sim,
            nodes,
            namespaces,
            fabric,
            pool,
            store,
            api,
            api_commands,
            ksr_metrics,
            pods: BTreeMap::new(),
            rng,
            trace: TraceHasher::default(),
            events: Vec::new(),
            faults: Vec::new(),
            down: BTreeSet::new(),
            departed: BTreeSet::new(),
            next_token: 1,
            progress: None,
        })
    }

    /// Called with every event as it happens (the demo's progress display).
    pub fn on_event(&mut self, f: impl FnMut(&Event) + 'static) {
        self.progress = Some(Box::new(f));
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    pub fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn trace(&self) -> &TraceHasher {
        &self.trace
    }

    fn log(&mut self, what: impl Into<String>) {
        let e = Event {
            at: self.now(),
            what: what.into(),
        };
        self.trace.text(&e.what);
        self.trace.value(e.at.as_nanos() as u64);
        if let Some(p) = &mut self.progress {
            p(&e);
        }
        self.events.push(e);
    }

    /// One tick: every host runs, then packets move until nothing does.
    pub fn step(&mut self) -> Result<(), SimError> {
        self.sim
            .step()
            .map_err(|e| SimError::Turmoil(e.to_string()))?;
        let now_d = self.now();
        let now = Timestamp(now_d.as_nanos() as u64);
        self.kubelet_results();
        self.heal_faults();
        self.retry_backoffs();
        for _ in 0..POLL_ROUNDS {
            let mut moved = 0;
            for n in &self.nodes {
                let engine = lock(&n.engine).clone();
                if let Some(e) = engine {
                    moved += lock(&e).poll(now);
                }
            }
            moved += self.fabric.step(&mut self.pool, now, &mut self.trace);
            for p in self.pods.values_mut() {
                if let Some(stack) = &mut p.stack {
                    if stack.wants_poll(now) {
                        moved += usize::from(stack.poll(&mut self.pool, now));
                    }
                }
            }
            if moved == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Steps until `done` holds, at most `bound` of simulated time.
    pub fn run_until(
        &mut self,
        what: &str,
        bound: Duration,
        mut done: impl FnMut(&mut SimCluster) -> bool,
    ) -> Result<Duration, SimError> {
        let start = self.now();
        loop {
            if done(self) {
                return Ok(self.now() - start);
            }
            if self.now() - start >= bound {
                return Err(SimError::Timeout {
                    what: what.into(),
                    bound,
                });
            }
            self.step()?;
        }
    }

    /// Steps for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.now() + d;
        while self.now() < end {
            self.step()?;
        }
        Ok(())
    }

    /// Whether every node that is up has an agent serving.
    pub fn agents_ready(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, n)| {
            self.down.contains(&i)
                || lock(&n.metrics)
                    .as_ref()
                    .is_some_and(|m| m.ready.load(std::sync::atomic::Ordering::Relaxed))
        })
    }

    pub fn ksr_leading(&self) -> bool {
        let m = lock(&self.ksr_metrics).clone();
        m.is_leader.load(std::sync::atomic::Ordering::Relaxed)
            && m.synced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Brings the control plane up: every agent serving, KSR leading and synced.
    pub fn start(&mut self, bound: Duration) -> Result<Duration, SimError> {
        let took = self.run_until("the agents and KSR start", bound, |c| {
            c.agents_ready() && c.ksr_leading()
        })?;
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{}={}", n.name, lock(&n.node_id).unwrap_or(0)))
            .collect();
        self.log(format!(
            "control plane up: {} agents, KSR leading; node IDs {}",
            self.nodes.len(),
            ids.join(" ")
        ));
        Ok(took)
    }

    fn new_container_id(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// The scheduler places pod `name` on `node`: the API object, then the kubelet's
    /// sandbox and CNI ADD.
    pub fn create_pod(&mut self, name: &str, node: usize) {
        self.api_commands.push(ApiCommand::CreatePod {
            name: name.into(),
            node: node_name(node),
        });
        self.pods.insert(
            name.to_string(),
            PodRecord {
                node,
                container: String::new(),
                netns: PathBuf::new(),
                phase: PodPhase::Adding,
                ip: None,
                stack: None,
                attempts: 0,
            },
        );
        self.sandbox(name);
    }

    /// A new sandbox for the pod (namespace, container ID) and a CNI ADD.
    fn sandbox(&mut self, name: &str) {
        let container = self.new_container_id();
        let Some(p) = self.pods.get_mut(name) else {
            return;
        };
        let netns = PathBuf::from(format!(
            "/sim/{}/{name}-{}",
            node_name(p.node),
            &container[..8]
        ));
        self.namespaces.create(&netns);
        p.container = container.clone();
        p.netns = netns.clone();
        p.phase = PodPhase::Adding;
        p.attempts += 1;
        self.nodes[p.node].kubelet.push(KubeletCommand::Add {
            pod: name.into(),
            container,
            netns,
        });
    }

    /// The pod goes away: CNI DEL, then its namespace and API object.
    pub fn delete_pod(&mut self, name: &str) {
        let Some(p) = self.pods.get_mut(name) else {
            return;
        };
        p.phase = PodPhase::Deleting;
        p.stack = None;
        self.nodes[p.node].kubelet.push(KubeletCommand::Del {
            pod: name.into(),
            container: p.container.clone(),
            netns: p.netns.clone(),
        });
    }

    fn kubelet_results(&mut self) {
        let now = self.now();
        let mut done = Vec::new();
        for n in &self.nodes {
            done.append(&mut lock(&n.results));
        }
        for r in done {
            let Some(p) = self.pods.get_mut(&r.pod) else {
                continue;
            };
            if p.container != r.container {
                continue; // an answer for a sandbox that was replaced
            }
            match (r.add, r.outcome, p.phase) {
                (true, Ok(Some(ip)), PodPhase::Adding) => {
                    p.phase = PodPhase::Running;
                    p.ip = Some(ip);
                    let seed = self.rng.random::<u64>();
                    p.stack = SimPod::attach(
                        &r.pod,
                        &self.namespaces,
                        &p.netns,
                        "eth0",
                        seed,
                        Timestamp(now.as_nanos() as u64),
                    );
                    let attempts = p.attempts;
                    self.api_commands.push(ApiCommand::PodRunning {
                        name: r.pod.clone(),
                        ip,
                    });
                    self.log(format!(
                        "{} running on {} at {ip}{}",
                        r.pod,
                        node_name(self.pods[&r.pod].node),
                        if attempts > 1 {
                            format!(" (ADD attempt {attempts})")
                        } else {
                            String::new()
                        }
                    ));
                }
                (true, outcome, PodPhase::Adding) => {
                    let why = match outcome {
                        Err(e) => e,
                        Ok(_) => "the result has no address".into(),
                    };
                    p.phase = PodPhase::Backoff(now + ADD_RETRY);
                    self.namespaces.remove(&p.netns.clone());
                    self.log(format!(
                        "{}: CNI ADD failed ({}); the kubelet retries in {ADD_RETRY:?}",
                        r.pod,
                        why.trim()
                    ));
                }
                (false, Ok(_), PodPhase::Deleting) => {
                    self.namespaces.remove(&p.netns.clone());
                    self.pods.remove(&r.pod);
                    self.api_commands.push(ApiCommand::DeletePod {
                        name: r.pod.clone(),
                    });
                    self.log(format!("{} deleted", r.pod));
                }
                (false, Err(e), PodPhase::Deleting) => {
                    let node = p.node;
                    let (container, netns) = (p.container.clone(), p.netns.clone());
                    self.log(format!("{}: CNI DEL failed ({e}); again", r.pod));
                    self.nodes[node].kubelet.push(KubeletCommand::Del {
                        pod: r.pod.clone(),
                        container,
                        netns,
                    });
                }
                _ => {}
            }
        }
    }

    fn retry_backoffs(&mut self) {
        let now = self.now();
        let due: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| {
                matches!(p.phase, PodPhase::Backoff(t) if t <= now) && !self.down.contains(&p.node)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.sandbox(&name);
        }
    }

    /// Pods whose ADD succeeded and whose stack runs.
    pub fn running_pods(&self) -> Vec<(String, usize, Ipv4Addr)> {
        self.pods
            .iter()
            .filter(|(_, p)| p.phase == PodPhase::Running && p.stack.is_some())
            .filter_map(|(n, p)| p.ip.map(|ip| (n.clone(), p.node, ip)))
            .collect()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Whether every pod is running.
    pub fn all_running(&self) -> bool {
        self.pods.values().all(|p| p.phase == PodPhase::Running)
    }

    /// Whether no pod is being added, deleted or retried.
    pub fn settled(&self) -> bool {
        self.all_running()
            && self.nodes.iter().all(|n| n.kubelet.is_empty())
            && self.faults.is_empty()
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Pod `from` sends UDP to `to`'s echo port, again every 500 ms, until the echo comes
    /// back or `bound` passes; the time it took.
    pub fn udp_reach(
        &mut self,
        from: &str,
        to: Ipv4Addr,
        bound: Duration,
    ) -> Result<Duration, SimError> {
        self.probe(
            from,
            bound,
            "UDP",
            |pod, token| {
                pod.send_udp_probe(to, token);
            },
            |pod, token| pod.udp_answered(token),
        )
    }

    /// Pod `from` streams `count` UDP datagrams to pod `to`'s discard port as fast as
    /// its socket takes them; returns how many arrived and the simulated time taken
    /// (stops at `bound`).
    pub fn udp_stream(
        &mut self,
        from: &str,
        to: &str,
        count: u64,
        bound: Duration,
    ) -> Result<(u64, Duration), SimError> {
        let ip = self
            .pods
            .get(to)
            .and_then(|p| p.ip)
            .ok_or_else(|| SimError::Config(format!("{to} is not running")))?;
        let sunk = |c: &SimCluster| c.stack(to).map_or(0, |s| s.stats.udp_discarded);
        let (start, base) = (self.now(), sunk(self));
        let mut sent = 0u64;
        while sunk(self) - base < count && self.now() - start < bound {
            if sent < count {
                let n = (count - sent).min(64) as usize;
                sent += self.with_pod(from, |p| p.send_udp_stream(ip, n))? as u64;
            }
            self.step()?;
        }
        Ok((sunk(self) - base, self.now() - start))
    }

    /// Pod `from` pings `to`, as `udp_reach`.
    pub fn ping(
        &mut self,
        from: &str,
        to: Ipv4Addr,
        bound: Duration,
    ) -> Result<Duration, SimError> {
        self.probe(
            from,
            bound,
            "ping",
            |pod, token| {
                pod.send_ping(to, token as u16);
            },
            move |pod, token| pod.ping_answered(to, token as u16),
        )
    }

    /// Pod `from` asks `to`'s TCP service once and waits for the answer line.
    pub fn tcp_request(
        &mut self,
        from: &str,
        to: Ipv4Addr,
        bound: Duration,
    ) -> Result<String, SimError> {
        let token = self.token();
        self.with_pod(from, |p| p.tcp_request(to, token))?;
        let name = from.to_string();
        self.run_until(&format!("{from} -> {to} TCP"), bound, |c| {
            c.stack(&name)
                .is_some_and(|s| s.tcp_answer(token).is_some())
        })?;
        Ok(self
            .stack(from)
            .and_then(|s| s.tcp_answer(token))
            .unwrap_or_default()
            .to_string())
    }

    /// The stack of pod `name`, while it runs.
    fn stack(&self, name: &str) -> Option<&SimPod> {
        self.pods.get(name).and_then(|p| p.stack.as_ref())
    }

    fn with_pod<T>(&mut self, name: &str, f: impl FnOnce(&mut SimPod) -> T) -> Result<T, SimError> {
        self.pods
            .get_mut(name)
            .and_then(|p| p.stack.as_mut())
            .map(f)
            .ok_or_else(|| SimError::Config(format!("{name} is not running")))
    }

    fn probe(
        &mut self,
        from: &str,
        bound: Duration,
        kind: &str,
        send: impl Fn(&mut SimPod, u64),
        answered: impl Fn(&SimPod, u64) -> bool,
    ) -> Result<Duration, SimError> {
        const RESEND: Duration = Duration::from_millis(500);
        let mut tokens = Vec::new();
        let mut next_send = self.now();
        let mut gone = None;
        let took = self.run_until(&format!("{kind} from {from}"), bound, |c| {
            if c.stack(from)
                .is_some_and(|s| tokens.iter().any(|&t| answered(s, t)))
            {
                return true;
            }
            if c.now() >= next_send {
                let t = c.token();
                if let Err(e) = c.with_pod(from, |p| send(p, t)) {
                    gone = Some(e);
                    return true;
                }
                tokens.push(t);
                next_send = c.now() + RESEND;
            }
            false
        })?;
        gone.map_or(Ok(took), Err)
    }

    /// The agent's dump of node `index` (desired against applied), asked over its event
    /// loop as `/dump` does.
    pub fn dump(&mut self, index: usize) -> Result<AgentDump, SimError> {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let sent = lock(&self.nodes[index].requests)
            .as_ref()
            .is_some_and(|r| r.try_send(Request::Dump(tx)).is_ok());
        if !sent {
            return Err(SimError::Config(format!(
                "{} has no agent",
                node_name(index)
            )));
        }
        let mut got = None;
        self.run_until(
            &format!("{}'s dump", node_name(index)),
            Duration::from_secs(5),
            |_| match rx.try_recv() {
                Ok(d) => {
                    got = Some(d);
                    true
                }
                Err(_) => false,
            },
        )?;
        got.ok_or_else(|| SimError::Config("no dump".into()))
    }

    /// Store keys under the cluster's prefix and `rest`, as the store holds them.
    pub fn store_keys(&self, rest: &str) -> Vec<String> {
        lock(&self.store)
            .as_ref()
            .map(|s| s.peek(&format!("/contiv/{rest}")))
            .unwrap_or_default()
    }

    /// Interfaces left in namespaces of node `index`.
    pub fn interfaces_on(&self, index: usize) -> Vec<String> {
        self.namespaces
            .interfaces_under(&PathBuf::from(format!("/sim/{}", node_name(index))))
    }

    pub fn api(&self) -> Option<ApiServer> {
        lock(&self.api).clone()
    }

    pub fn node_up(&self, index: usize) -> bool {
        !self.down.contains(&index)
    }

    /// Packets and drops of node `index`'s engine.
    pub fn engine_counts(&self, index: usize) -> Option<EngineCounts> {
        let e = lock(&self.nodes[index].engine).clone()?;
        let e = lock(&e);
        Some(EngineCounts {
            received: e.packets_received(),
            transmitted: e.packets_transmitted(),
            drops: e.counters().total_drops(),
            errors: e.show_errors(),
        })
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// The pods placed on node `index`.
    fn pods_on(&self, index: usize) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| p.node == index)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn host_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Stops node `index`'s agent and dataplane; with `with_pods`, its pods' sandboxes
    /// too (a node crash).
    fn take_down(&mut self, index: usize, with_pods: bool) {
        let name = node_name(index);
        self.sim.crash(name.as_str());
        let n = &self.nodes[index];
        *lock(&n.engine) = None;
        *lock(&n.requests) = None;
        *lock(&n.metrics) = None;
        self.fabric.detach(index, &mut self.pool);
        if with_pods {
            for pod in self.pods_on(index) {
                if let Some(p) = self.pods.get_mut(&pod) {
                    self.namespaces.remove(&p.netns.clone());
                    p.stack = None;
                    p.ip = None;
                    if p.phase == PodPhase::Deleting {
                        // The sandbox is gone: nothing is left to delete on the node.
                        self.pods.remove(&pod);
                        self.api_commands.push(ApiCommand::DeletePod { name: pod });
                    } else {
                        p.phase = PodPhase::AwaitingNode;
                    }
                }
            }
            // What the kubelet had not done yet is moot: the pods get new sandboxes.
            self.nodes[index].kubelet.clear();
        }
        self.down.insert(index);
    }

    /// Boots node `index` again on a fresh uplink.
    fn bring_up(&mut self, index: usize) {
        self.boots[index] += 1;
        let uplink = self.fabric.attach(
            index,
            self.spec.seed ^ ((index as u64) << 32) ^ self.boots[index],
        );
        *lock(&self.nodes[index].uplink) = Some(Box::new(uplink));
        self.sim.bounce(node_name(index).as_str());
        self.down.remove(&index);
        // Pods that lost their sandbox in a crash get new ones.
        let waiting: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.node == index && p.phase == PodPhase::AwaitingNode)
            .map(|(n, _)| n.clone())
            .collect();
        for pod in waiting {
            self.sandbox(&pod);
        }
    }

    /// Node `index` leaves the cluster: it stops, its pods are deleted and its Node
    /// object is removed (as `kubectl delete node` after a drain).
    pub fn node_leave(&mut self, index: usize) {
        self.log(format!("{} leaves the cluster", node_name(index)));
        self.take_down(index, true);
        for pod in self.pods_on(index) {
            self.pods.remove(&pod);
            self.api_commands.push(ApiCommand::DeletePod { name: pod });
        }
        self.api_commands.push(ApiCommand::DeleteNode {
            name: node_name(index),
        });
        self.departed.insert(index);
    }

    /// Node `index` joins again (its Node object made again) and boots.
    pub fn node_rejoin(&mut self, index: usize) {
        self.log(format!("{} joins the cluster again", node_name(index)));
        self.departed.remove(&index);
        *lock(&self.nodes[index].node_id) = None;
        self.api_commands.push(ApiCommand::CreateNode {
            name: node_name(index),
        });
        self.bring_up(index);
    }

    /// The node ID node `index`'s agent took at its last start.
    pub fn node_id(&self, index: usize) -> Option<u32> {
        *lock(&self.nodes[index].node_id)
    }

    /// Injects `fault` now; it heals by itself.
    pub fn inject(&mut self, fault: Fault) {
        self.log(format!("fault: {fault}"));
        let now = self.now();
        let heals_at = match &fault {
            Fault::NodeCrash { node, down } => {
                self.take_down(*node, true);
                now + *down
            }
            Fault::AgentRestart { node } => {
                self.take_down(*node, false);
                now
            }
            Fault::KsrRestart => {
                self.sim.crash(hosts::KSR_HOST);
                now
            }
            Fault::StoreOutage { duration } => {
                if let Some(s) = lock(&self.store).as_ref() {
                    s.set_available(false);
                }
                now + *duration
            }
            Fault::Partition { a, b, duration } => {
                self.sim.partition(a.as_str(), b.as_str());
                if let (Some(x), Some(y)) = (self.host_of(a), self.host_of(b)) {
                    self.fabric.partition(x, y);
                }
                now + *duration
            }
            Fault::LinkLoss {
                node,
                loss,
                duration,
            } => {
                self.fabric.set_impairments(
                    *node,
                    Impairments {
                        loss: *loss,
                        ..Default::default()
                    },
                );
                now + *duration
            }
            Fault::LinkLatency {
                node,
                delay,
                duration,
            } => {
                self.fabric.set_impairments(
                    *node,
                    Impairments {
                        delay_ns: delay.as_nanos() as u64,
                        ..Default::default()
                    },
                );
                now + *duration
            }
            Fault::Corruption {
                node,
                rate,
                duration,
            } => {
                self.fabric.set_impairments(
                    *node,
                    Impairments {
                        corrupt: *rate,
                        ..Default::default()
                    },
                );
                now + *duration
            }
        };
        self.faults.push(ActiveFault { fault, heals_at });
    }

    fn heal_faults(&mut self) {
        let now = self.now();
        let due: Vec<ActiveFault> = {
            let (due, keep) = std::mem::take(&mut self.faults)
                .into_iter()
                .partition(|f| f.heals_at <= now);
            self.faults = keep;
            due
        };
        for f in due {
            match &f.fault {
                Fault::NodeCrash { node, .. } | Fault::AgentRestart { node } => {
                    self.bring_up(*node);
                }
                Fault::KsrRestart => self.sim.bounce(hosts::KSR_HOST),
                Fault::StoreOutage { .. } => {
                    if let Some(s) = lock(&self.store).as_ref() {
                        s.set_available(true);
                    }
                }
                Fault::Partition { a, b, .. } => {
                    self.sim.repair(a.as_str(), b.as_str());
                    if let (Some(x), Some(y)) = (self.host_of(a), self.host_of(b)) {
                        self.fabric.repair(x, y);
                    }
                }
                Fault::LinkLoss { node, .. }
                | Fault::LinkLatency { node, .. }
                | Fault::Corruption { node, .. } => {
                    self.fabric.set_impairments(*node, Impairments::default());
                }
            }
            self.log(format!("healed: {}", f.fault));
        }
    }

    /// Every check that must hold once the cluster is quiet.
    pub fn invariants(&mut self) -> Vec<Check> {
        let mut checks = Vec::new();
        let running = self.running_pods();
        // Pod IPs are unique.
        let mut seen = BTreeMap::new();
        let mut dupes = Vec::new();
        for (name, _, ip) in &running {
            if let Some(other) = seen.insert(*ip, name.clone()) {
                dupes.push(format!("{ip}: {other} and {name}"));
            }
        }
        checks.push(Check {
            name: "pod IPs unique".into(),
            passed: dupes.is_empty(),
            detail: if dupes.is_empty() {
                format!("{} pods, {} addresses", running.len(), seen.len())
            } else {
                dupes.join("; ")
            },
        });
        // The store's allocations are exactly the running pods'.
        let allocated: BTreeSet<String> = self
            .store_keys("ipam/")
            .into_iter()
            .filter_map(|k| k.rsplit('/').next().map(str::to_string))
            .collect();
        let wanted: BTreeSet<String> = running.iter().map(|(_, _, ip)| ip.to_string()).collect();
        let leaked: Vec<&String> = allocated.difference(&wanted).collect();
        let missing: Vec<&String> = wanted.difference(&allocated).collect();
        checks.push(Check {
            name: "no leaked or missing IP allocations".into(),
            passed: leaked.is_empty() && missing.is_empty(),
            detail: format!(
                "{} allocated; leaked {leaked:?}; missing {missing:?}",
                allocated.len()
            ),
        });
        // Every node holds one node ID and one directory record, nobody else does.
        let members = self.nodes.len() - self.departed.len();
        let ids = self.store_keys("node-id/").len();
        let infos = self.store_keys("node-info/").len();
        checks.push(Check {
            name: "one node ID and one node record per node".into(),
            passed: ids == members && infos == members,
            detail: format!("{ids} node IDs, {infos} node records for {members} nodes"),
        });
        // Interfaces in namespaces belong to running pods only.
        let mut stray = Vec::new();
        for i in 0..self.nodes.len() {
            let want: BTreeSet<String> = self
                .pods
                .values()
                .filter(|p| p.node == i && p.phase == PodPhase::Running)
                .map(|p| format!("{}/eth0", p.netns.display()))
                .collect();
            for iface in self.interfaces_on(i) {
                if !want.contains(&iface) {
                    stray.push(iface);
                }
            }
        }
        checks.push(Check {
            name: "no leaked interfaces".into(),
            passed: stray.is_empty(),
            detail: if stray.is_empty() {
                "every interface belongs to a running pod".into()
            } else {
                stray.join(", ")
            },
        });
        // Each agent: converged, a route per local pod, one per other node's subnets.
        for i in 0..self.nodes.len() {
            if self.down.contains(&i) {
                continue;
            }
            let name = node_name(i);
            match self.dump(i) {
                Ok(d) => {
                    let local: BTreeSet<String> = running
                        .iter()
                        .filter(|(_, n, _)| *n == i)
                        .map(|(_, _, ip)| format!("{ip}/32"))
                        .collect();
                    // A pod's route is a /32 via the pod itself, on its port.
                    let host_routes: BTreeSet<String> = d
                        .routes
                        .iter()
                        .filter(|r| r.contains("/32 -> via "))
                        .filter_map(|r| r.split(' ').next())
                        .map(str::to_string)
                        .collect();
                    let remote = d
                        .items
                        .iter()
                        .filter(|e| e.key.starts_with("remote/") && e.key.ends_with("/routes"))
                        .count();
                    let others = members - 1;
                    let ok = d.converged && host_routes == local && remote == others;
                    checks.push(Check {
                        name: format!("{name}: applied equals desired, routes match pods"),
                        passed: ok,
                        detail: format!(
                            "converged {}, {} pod routes for {} pods, routes to {remote} of {others} other nodes",
                            d.converged,
                            host_routes.len(),
                            local.len()
                        ),
                    });
                }
                Err(e) => checks.push(Check {
                    name: format!("{name}: applied equals desired, routes match pods"),
                    passed: false,
                    detail: e.to_string(),
                }),
            }
        }
        for c in &checks {
            self.trace.text(&c.name);
            self.trace.value(u64::from(c.passed));
        }
        checks
    }

    /// UDP between sampled pairs of running pods (all pairs when `sample` covers them),
    /// each within `bound`: the connectivity matrix as (from, to, reached).
    pub fn connectivity(
        &mut self,
        sample: usize,
        bound: Duration,
    ) -> Result<Vec<(String, String, bool)>, SimError> {
        let running = self.running_pods();
        let mut pairs = Vec::new();
        for (a, _, _) in &running {
            for (b, _, ip) in &running {
                if a != b {
                    pairs.push((a.clone(), b.clone(), *ip));
                }
            }
        }
        if pairs.len() > sample {
            // A seeded sample, in a stable order.
            for i in 0..sample {
                let j = self.rng.random_range(i..pairs.len());
                pairs.swap(i, j);
            }
            pairs.truncate(sample);
            pairs.sort();
        }
        let mut out = Vec::new();
        for (a, b, ip) in pairs {
            let ok = self.udp_reach(&a, ip, bound).is_ok();
            self.trace.text(&a);
            self.trace.text(&b);
            self.trace.value(u64::from(ok));
            out.push((a, b, ok));
        }
        Ok(out)
    }
}
