//! The agent's event loop: one queue, one thread of decisions (DESIGN.md section 6).
//!
//! CNI calls, dumps, retries and periodic resyncs all arrive here and are handled one at
//! a time, so no two decisions race. A CNI ADD allocates the pod's address in the store
//! (persisted before anything else), sets the pod's items as desired, runs the
//! reconciler, and either answers with the result or undoes everything it did: an ADD
//! succeeds fully or leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contiv_cni::proto::{self, CniReply, CniRequest, GcRequest};
use contiv_cni::spec::{code, valid_ifname};
use contiv_dataplane::{Adjacency, Ipv4Net};
use contiv_store::Store;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
// tokio's clock, not the OS's: under a simulation (paused tokio time, turmoil) retries
// and resyncs follow simulated time.
use tokio::time::Instant;

use crate::config::{AgentConfig, NodeToNodeTransport};
use crate::ipam::{Allocation, Ipam, IpamConfig, IpamError};
use crate::nodeid::{NodeIdAllocator, NodeIdError};
use crate::nodes::{vxlan_mac, NodeDirectory, NodeInfo};
use crate::reconciler::{DumpEntry, Reconciler};
use crate::wiring::{
    pod_interface_key, pod_route_key, remote_routes_key, tunnel_key, NodeApplier, NodeItem,
    PodAttachment, RemoteVia, HOST_INTERCONNECT_KEY, OWN_NETNS, SNAT_KEY, UPLINK_KEY, VXLAN_KEY,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("node ID: {0}")]
    NodeId(#[from] NodeIdError),
    #[error("IPAM: {0}")]
    Ipam(#[from] IpamError),
    #[error("node ID {id} is beyond the pod subnet's room for {max} nodes")]
    NodeIdOutOfRange { id: u32, max: u32 },
    #[error("the uplink: {0}")]
    Uplink(String),
}

/// What the event loop is asked.
pub enum Request {
    Add(CniRequest, oneshot::Sender<CniReply>),
    Del(CniRequest, oneshot::Sender<CniReply>),
    Check(CniRequest, oneshot::Sender<CniReply>),
    Status(oneshot::Sender<CniReply>),
    Gc(GcRequest, oneshot::Sender<CniReply>),
    Dump(oneshot::Sender<AgentDump>),
    /// The running engine's view (its counters for `/metrics`), or why there is none.
    Dataplane(oneshot::Sender<Result<crate::worker::EngineView, String>>),
    /// Every node's record, after any change (from [`crate::nodes::NodeDirectory::follow`]).
    Nodes(Vec<NodeInfo>),
}

/// The agent's counters, shared with the HTTP server.
#[derive(Default)]
pub struct AgentMetrics {
    pub ready: AtomicBool,
    pub cni_add: AtomicU64,
    pub cni_del: AtomicU64,
    pub cni_check: AtomicU64,
    pub cni_gc: AtomicU64,
    pub cni_errors: AtomicU64,
    pub add_rollbacks: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub released_departed: AtomicU64,
    pub pods: AtomicU64,
    pub store_errors: AtomicU64,
}

impl AgentMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, v) in [
            (
                "contiv_vswitch_cni_add_total",
                "counter",
                "CNI ADD calls",
                g(&self.cni_add),
            ),
            (
                "contiv_vswitch_cni_del_total",
                "counter",
                "CNI DEL calls",
                g(&self.cni_del),
            ),
            (
                "contiv_vswitch_cni_check_total",
                "counter",
                "CNI CHECK calls",
                g(&self.cni_check),
            ),
            (
                "contiv_vswitch_cni_gc_total",
                "counter",
                "CNI GC calls",
                g(&self.cni_gc),
            ),
            (
                "contiv_vswitch_cni_errors_total",
                "counter",
                "CNI calls answered with an error",
                g(&self.cni_errors),
            ),
            (
                "contiv_vswitch_add_rollbacks_total",
                "counter",
                "ADDs undone because wiring failed",
                g(&self.add_rollbacks),
            ),
            (
                "contiv_vswitch_reconcile_failures_total",
                "counter",
                "failed reconciler operations",
                g(&self.reconcile_failures),
            ),
            (
                "contiv_vswitch_released_departed_total",
                "counter",
                "addresses released for pods whose namespace was gone",
                g(&self.released_departed),
            ),
            (
                "contiv_vswitch_store_errors_total",
                "counter",
                "store requests that failed",
                g(&self.store_errors),
            ),
            (
                "contiv_vswitch_pods",
                "gauge",
                "pods wired on this node",
                g(&self.pods),
            ),
            (
                "contiv_vswitch_ready",
                "gauge",
                "whether the agent is serving",
                u64::from(self.ready.load(Ordering::Relaxed)),
            ),
        ] {
            crate::prometheus::header(&mut out, name, kind, help);
            crate::prometheus::sample(&mut out, name, &[], v);
        }
        out
    }
}

/// Desired against applied, and what the dataplane and the store hold.
#[derive(Clone, Debug, Serialize)]
pub struct AgentDump {
    pub node: String,
    pub node_id: u32,
    pub pod_subnet: String,
    pub converged: bool,
    pub items: Vec<DumpEntry>,
    /// Dataplane ports: index and name.
    pub ports: Vec<(u16, String)>,
    /// Dataplane routes of VRF 0 as `prefix -> adjacency`.
    pub routes: Vec<String>,
    pub static_neighbours: usize,
    /// IP allocations in the store: address, container, interface.
    pub allocations: Vec<(String, String, String)>,
    pub engine_errors: String,
    pub engine_interfaces: String,
    /// Source NAT sessions (`tcp inside -> remote as node:port, idle`), the first
    /// thousand, and how many there are in all.
    pub nat_sessions: Vec<String>,
    pub nat_session_count: usize,
}

/// What [`Agent::prepare`] got from the store.
pub struct NodeSetup<S> {
    cfg: AgentConfig,
    store: S,
    ipam: Ipam<S>,
    node_id: u32,
    pod_subnet: Ipv4Net,
}

pub struct Agent<S: Store + Clone> {
    cfg: AgentConfig,
    store: S,
    ipam: Ipam<S>,
    node_id: u32,
    pod_subnet: Ipv4Net,
    gateway: Ipv4Addr,
    reconciler: Reconciler<NodeItem>,
    applier: NodeApplier,
    clock: Instant,
    metrics: Arc<AgentMetrics>,
}

const RESYNC_EVERY: Duration = Duration::from_secs(30);

fn reply_error(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniReply {
    CniReply {
        error_code: code,
        error_msg: msg.into(),
        error_details: details.into(),
        ..Default::default()
    }
}

fn store_reply(e: &IpamError) -> CniReply {
    match e {
        IpamError::Store(s) if s.is_transient() => reply_error(
            code::TRY_AGAIN_LATER,
            "the store is unavailable",
            s.to_string(),
        ),
        IpamError::Exhausted { .. } => reply_error(code::IPAM_FAILED, e.to_string(), ""),
        other => reply_error(code::INTERNAL, "IPAM failed", other.to_string()),
    }
}

impl<S: Store + Clone> Agent<S> {
    /// Takes the node's ID and sets up IPAM: the part of starting that needs the store
    /// and may be retried.
    pub async fn prepare(cfg: AgentConfig, store: S) -> Result<NodeSetup<S>, AgentError> {
        #[cfg(not(feature = "dpdk"))]
        if let Some(dev) = &cfg.uplink.dpdk {
            return Err(AgentError::Uplink(format!(
                "DPDK device {dev}: this build has no DPDK support (build with --features dpdk)"
            )));
        }
        let max = cfg.ipam.max_node_id().min(u32::from(u16::MAX));
        let node_id = NodeIdAllocator::new(store.clone(), &cfg.store.prefix, max)
            .allocate(&cfg.node_name)
            .await?;
        if node_id > max {
            return Err(AgentError::NodeIdOutOfRange { id: node_id, max });
        }
        let pod_subnet = cfg.ipam.node_pod_subnet(node_id);
        let ipam = Ipam::new(
            store.clone(),
            &cfg.store.prefix,
            IpamConfig {
                node: cfg.node_name.clone(),
                subnet: pod_subnet.network(),
                prefix_len: pod_subnet.len,
            },
        )?;
        tracing::info!(node = %cfg.node_name, node_id, %pod_subnet, "node ID taken");
        Ok(NodeSetup {
            cfg,
            store,
            ipam,
            node_id,
            pod_subnet,
        })
    }

    /// Rebuilds desired state from the store (re-adopting every pod whose namespace
    /// still exists, releasing the addresses of those that are gone) and converges.
    pub async fn start(
        setup: NodeSetup<S>,
        applier: NodeApplier,
        metrics: Arc<AgentMetrics>,
    ) -> Agent<S> {
        let NodeSetup {
            cfg,
            store,
            ipam,
            node_id,
            pod_subnet,
        } = setup;
        let gateway = ipam.config().gateway();
        let mut agent = Agent {
            cfg,
            store,
            ipam,
            node_id,
            pod_subnet,
            gateway,
            reconciler: Reconciler::default(),
            applier,
            clock: Instant::now(),
            metrics,
        };
        if agent.cfg.host_interconnect {
            let netns = agent.host_netns();
            agent.reconciler.set(
                HOST_INTERCONNECT_KEY,
                NodeItem::HostInterconnect {
                    name: "contiv-host".into(),
                    netns,
                    subnet: agent.cfg.ipam.node_host_subnet(node_id),
                    host_routes: vec![agent.cfg.ipam.pod_subnet_cidr],
                    mtu: 1500,
                },
            );
        }
        if agent.cfg.node_to_node_transport == NodeToNodeTransport::Vxlan {
            agent.reconciler.set(
                VXLAN_KEY,
                NodeItem::Vxlan(contiv_dataplane::VxlanConfig {
                    local: agent.own_address(),
                    vni: agent.cfg.vxlan_vni,
                    mac: vxlan_mac(node_id),
                    mtu: agent.cfg.pod_mtu,
                }),
            );
        }
        agent.publish_self().await;
        if let Some(device) = agent.cfg.uplink.device() {
            let address = Ipv4Net::new(
                agent.own_address(),
                agent.cfg.ipam.node_interconnect_cidr.len,
            );
            agent.reconciler.set(
                UPLINK_KEY,
                NodeItem::Uplink {
                    device,
                    netns: agent.host_netns(),
                    address,
                    gateway: agent.cfg.uplink.gateway,
                    mtu: 1500,
                },
            );
            agent.set_snat(&[]);
        }
        if let Err(e) = agent.sweep_pods().await {
            tracing::warn!(error = %e, "startup resync could not read the store; the periodic resync will");
        }
        agent.reconcile();
        agent.metrics.ready.store(true, Ordering::Relaxed);
        agent
    }

    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The host stack's namespace (the agent's own unless configured).
    fn host_netns(&self) -> PathBuf {
        self.cfg
            .host_netns
            .clone()
            .unwrap_or_else(|| PathBuf::from(OWN_NETNS))
    }

    /// Source NAT to the outside on the uplink, never towards the cluster: the pod and
    /// host subnets of all nodes and the addresses of the `nodes` known.
    fn set_snat(&mut self, nodes: &[NodeInfo]) {
        if !self.cfg.nat_external_traffic
            || (self.cfg.uplink.af_packet.is_none() && self.cfg.uplink.dpdk.is_none())
        {
            return;
        }
        let ipam = &self.cfg.ipam;
        let mut exempt = vec![ipam.pod_subnet_cidr, ipam.vpp_host_subnet_cidr];
        let mut addresses: BTreeSet<Ipv4Addr> = nodes.iter().map(|n| n.address).collect();
        addresses.insert(self.own_address());
        exempt.extend(addresses.into_iter().map(|a| Ipv4Net::new(a, 32)));
        let item = NodeItem::Snat {
            external: self.own_address(),
            inside: vec![
                ipam.node_pod_subnet(self.node_id),
                ipam.node_host_subnet(self.node_id),
            ],
            exempt,
        };
        self.reconciler.set(SNAT_KEY, item);
    }

    /// This node's underlay address: node N is .N of the node interconnect subnet.
    fn own_address(&self) -> Ipv4Addr {
        let net = self.cfg.ipam.node_interconnect_cidr;
        Ipv4Addr::from(u32::from(net.network()) | self.node_id)
    }

    /// Publishes this node's record unless the store already has it as it should be.
    async fn publish_self(&mut self) {
        let me = NodeInfo {
            name: self.cfg.node_name.clone(),
            id: self.node_id,
            address: self.own_address(),
        };
        let dir = NodeDirectory::new(self.store.clone(), &self.cfg.store.prefix);
        match dir.get(&me.name).await {
            Ok(Some(held)) if held == me => {}
            _ => {
                if let Err(e) = dir.publish(&me).await {
                    tracing::warn!(error = %e, "cannot publish this node's record yet");
                }
            }
        }
    }

    /// Tunnels and routes to every other node, from the directory.
    fn set_nodes(&mut self, nodes: &[NodeInfo]) {
        let mut wanted = BTreeSet::new();
        for n in nodes {
            if n.name == self.cfg.node_name || n.id == self.node_id {
                continue;
            }
            let Ok(index) = u16::try_from(n.id) else {
                tracing::warn!(node = %n.name, id = n.id, "node ID out of tunnel range");
                continue;
            };
            let prefixes = vec![
                self.cfg.ipam.node_pod_subnet(n.id),
                self.cfg.ipam.node_host_subnet(n.id),
            ];
            let via = match self.cfg.node_to_node_transport {
                NodeToNodeTransport::Vxlan => {
                    self.reconciler.set(
                        tunnel_key(index),
                        NodeItem::Tunnel {
                            index,
                            tunnel: contiv_dataplane::Tunnel {
                                remote: n.address,
                                remote_mac: vxlan_mac(n.id),
                            },
                        },
                    );
                    wanted.insert(tunnel_key(index));
                    RemoteVia::Tunnel(index)
                }
                NodeToNodeTransport::Nooverlay => RemoteVia::Uplink(n.address),
            };
            self.reconciler.set(
                remote_routes_key(index),
                NodeItem::RemoteRoutes { prefixes, via },
            );
            wanted.insert(remote_routes_key(index));
        }
        let stale: Vec<String> = self
            .reconciler
            .desired()
            .keys()
            .filter(|k| k.starts_with("remote/") && !wanted.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            self.reconciler.unset(&k);
        }
        self.set_snat(nodes);
        self.reconcile();
    }

    fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    fn reconcile(&mut self) {
        let now = self.now();
        let round = self.reconciler.run(&mut self.applier, now);
        for (op, e) in &round.failed {
            tracing::warn!(?op, error = %e, "reconciler operation failed; will retry");
        }
        self.metrics
            .reconcile_failures
            .fetch_add(round.failed.len() as u64, Ordering::Relaxed);
        let pods = self
            .reconciler
            .applied()
            .keys()
            .filter(|k| k.starts_with("pod/") && k.ends_with("/interface"))
            .count();
        self.metrics.pods.store(pods as u64, Ordering::Relaxed);
    }

    /// Makes desired state match the store's allocations: every pod whose namespace
    /// exists is desired; the address of a pod whose namespace is gone (deleted while the
    /// agent was down, or without a DEL) is released.
    async fn sweep_pods(&mut self) -> Result<(), AgentError> {
        let allocations = self.ipam.allocations().await?;
        let mut live = BTreeSet::new();
        for (ip, a, _) in allocations {
            if a.netns.is_empty() || !self.applier.host().netns_exists(Path::new(&a.netns)) {
                tracing::info!(%ip, container = %a.container_id, netns = %a.netns,
                    "the pod's namespace is gone: releasing its address");
                self.ipam.release(&a.container_id, &a.ifname).await?;
                self.metrics
                    .released_departed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            live.insert(pod_interface_key(&a.container_id, &a.ifname));
            self.desire_pod(&a, ip);
        }
        let stale: Vec<String> = self
            .reconciler
            .desired()
            .iter()
            .filter_map(|(k, item)| match item {
                NodeItem::PodInterface(p)
                    if !live.contains(&pod_interface_key(&p.container_id, &p.ifname)) =>
                {
                    Some(k.clone())
                }
                _ => None,
            })
            .collect();
        for k in stale {
            self.unset_pod_by_interface_key(&k);
        }
        Ok(())
    }

    fn attachment(&self, a: &Allocation, ip: Ipv4Addr) -> PodAttachment {
        PodAttachment {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            netns: PathBuf::from(&a.netns),
            ip,
            gateway: self.gateway,
            mtu: self.cfg.pod_mtu,
        }
    }

    fn desire_pod(&mut self, a: &Allocation, ip: Ipv4Addr) {
        let ikey = pod_interface_key(&a.container_id, &a.ifname);
        self.reconciler
            .set(ikey.clone(), NodeItem::PodInterface(self.attachment(a, ip)));
        self.reconciler.set(
            pod_route_key(&a.container_id, &a.ifname),
            NodeItem::PodRoute {
                ip,
                interface: ikey,
            },
        );
    }

    fn unset_pod(&mut self, container_id: &str, ifname: &str) {
        self.reconciler.unset(&pod_route_key(container_id, ifname));
        self.reconciler
            .unset(&pod_interface_key(container_id, ifname));
    }

    fn unset_pod_by_interface_key(&mut self, ikey: &str) {
        if let Some(NodeItem::PodInterface(p)) = self.reconciler.desired().get(ikey).cloned() {
            self.unset_pod(&p.container_id, &p.ifname);
        }
    }

    fn pod_applied(&self, container_id: &str, ifname: &str) -> bool {
        self.reconciler
            .is_applied(&pod_interface_key(container_id, ifname))
            && self
                .reconciler
                .is_applied(&pod_route_key(container_id, ifname))
    }

    fn pod_gone(&self, container_id: &str, ifname: &str) -> bool {
        let applied = self.reconciler.applied();
        !applied.contains_key(&pod_interface_key(container_id, ifname))
            && !applied.contains_key(&pod_route_key(container_id, ifname))
    }

    async fn add(&mut self, r: CniRequest) -> CniReply {
        if r.container_id.is_empty() || !valid_ifname(&r.ifname) {
            return reply_error(
                code::INVALID_ENVIRONMENT,
                "a container ID and a valid interface name are needed",
                "",
            );
        }
        if !self.applier.host().netns_exists(Path::new(&r.netns)) {
            return reply_error(
                code::INVALID_ENVIRONMENT,
                format!("CNI_NETNS {} does not exist", r.netns),
                "",
            );
        }
        let owner = Allocation {
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
            pod: if r.pod_namespace.is_empty() && r.pod_name.is_empty() {
                String::new()
            } else {
                format!("{}/{}", r.pod_namespace, r.pod_name)
            },
            netns: r.netns.clone(),
        };
        let ip = match self.ipam.allocate_for(&owner).await {
            Ok(ip) => ip,
            Err(e) => {
                self.metrics.store_errors.fetch_add(
                    u64::from(matches!(e, IpamError::Store(_))),
                    Ordering::Relaxed,
                );
                return store_reply(&e);
            }
        };
        self.desire_pod(&owner, ip);
        self.reconcile();
        let ikey = pod_interface_key(&r.container_id, &r.ifname);
        if !self.pod_applied(&r.container_id, &r.ifname) {
            let why = self
                .reconciler
                .error(&ikey)
                .or_else(|| {
                    self.reconciler
                        .error(&pod_route_key(&r.container_id, &r.ifname))
                })
                .unwrap_or("not applied")
                .to_string();
            // Never half: take back what was done, then the address.
            self.unset_pod(&r.container_id, &r.ifname);
            self.reconcile();
            self.metrics.add_rollbacks.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.ipam.release(&r.container_id, &r.ifname).await {
                tracing::warn!(container = %r.container_id, error = %e,
                    "could not release the address of a failed ADD; DEL, GC or the next resync will");
            }
            return reply_error(code::WIRING_FAILED, "cannot wire the pod", why);
        }
        let info = self.applier.port(&ikey);
        CniReply {
            interfaces: vec![proto::Interface {
                name: r.ifname.clone(),
                mac: info.map(|i| i.peer_mac.to_string()).unwrap_or_default(),
                sandbox: r.netns.clone(),
                mtu: u32::from(self.cfg.pod_mtu),
            }],
            ips: vec![proto::IpConfig {
                address: format!("{ip}/32"),
                gateway: self.gateway.to_string(),
                interface: 0,
            }],
            routes: vec![proto::Route {
                dst: "0.0.0.0/0".into(),
                gw: self.gateway.to_string(),
            }],
            ..Default::default()
        }
    }

    async fn del(&mut self, r: CniRequest) -> CniReply {
        self.unset_pod(&r.container_id, &r.ifname);
        self.reconcile();
        if !self.pod_gone(&r.container_id, &r.ifname) {
            let why = self
                .reconciler
                .error(&pod_interface_key(&r.container_id, &r.ifname))
                .unwrap_or("still applied")
                .to_string();
            return reply_error(
                code::WIRING_FAILED,
                "cannot remove the pod's interface",
                why,
            );
        }
        match self.ipam.release(&r.container_id, &r.ifname).await {
            Ok(_) => CniReply::default(),
            Err(e) => {
                self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                store_reply(&e)
            }
        }
    }

    async fn check(&mut self, r: CniRequest) -> CniReply {
        let allocations = match self.ipam.allocations().await {
            Ok(a) => a,
            Err(e) => return store_reply(&e),
        };
        let Some((ip, _, _)) = allocations
            .iter()
            .find(|(_, a, _)| a.container_id == r.container_id && a.ifname == r.ifname)
        else {
            return reply_error(
                code::UNKNOWN_CONTAINER,
                format!("no attachment {}/{} on this node", r.container_id, r.ifname),
                "",
            );
        };
        let ip = *ip;
        let mut problems = Vec::new();
        let want = format!("{ip}/32");
        if !r.expected_ips.is_empty() && r.expected_ips != [want.clone()] {
            problems.push(format!(
                "prevResult has {:?}, the node allocated {want}",
                r.expected_ips
            ));
        }
        let ikey = pod_interface_key(&r.container_id, &r.ifname);
        for key in [ikey.clone(), pod_route_key(&r.container_id, &r.ifname)] {
            if !self.reconciler.is_applied(&key) {
                problems.push(format!(
                    "{key} is not applied ({})",
                    self.reconciler.error(&key).unwrap_or("pending")
                ));
            }
        }
        let gw_mac = crate::wiring::gateway_mac_for(ip);
        match self
            .applier
            .host()
            .inspect_interface(Path::new(&r.netns), &r.ifname)
        {
            Ok(None) => problems.push(format!("no interface {} in {}", r.ifname, r.netns)),
            Err(e) => problems.push(format!("cannot inspect {}: {e}", r.netns)),
            Ok(Some(st)) => {
                if !st.up {
                    problems.push(format!("{} is down", r.ifname));
                }
                if !st.addresses.contains(&(ip, 32)) {
                    problems.push(format!(
                        "{} lacks {want} (has {:?})",
                        r.ifname, st.addresses
                    ));
                }
                if !st
                    .routes
                    .iter()
                    .any(|(d, l, g)| d.is_unspecified() && *l == 0 && *g == Some(self.gateway))
                {
                    problems.push(format!("no default route via {}", self.gateway));
                }
                if !st.permanent_neighbours.contains(&(self.gateway, gw_mac)) {
                    problems.push(format!("no static neighbour {} at {gw_mac}", self.gateway));
                }
                if st.mtu != u32::from(self.cfg.pod_mtu) {
                    problems.push(format!("mtu {} instead of {}", st.mtu, self.cfg.pod_mtu));
                }
            }
        }
        if let Some(info) = self.applier.port(&ikey) {
            let tables = self.applier.tables().snapshot();
            match tables.route(0, ip) {
                Some((_, Adjacency::Via { port, .. })) if port == info.port => {}
                other => problems.push(format!(
                    "the dataplane routes {ip} to {:?}, not port {}",
                    other.map(|o| o.1),
                    info.port
                )),
            }
        }
        if problems.is_empty() {
            CniReply::default()
        } else {
            reply_error(
                code::CHECK_FAILED,
                format!("{}/{} is not as ADD left it", r.container_id, r.ifname),
                problems.join("; "),
            )
        }
    }

    async fn status(&mut self) -> CniReply {
        let probe = format!("{}node-id/{}", self.cfg.store.prefix, self.node_id);
        match self.store.get(&probe).await {
            Ok(_) => CniReply::default(),
            Err(e) => reply_error(
                code::NOT_AVAILABLE,
                "the agent cannot reach the store",
                e.to_string(),
            ),
        }
    }

    async fn gc(&mut self, r: GcRequest) -> CniReply {
        let valid: BTreeSet<(String, String)> = r
            .valid
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let stale_items: Vec<(String, String)> = self
            .reconciler
            .desired()
            .values()
            .filter_map(|i| match i {
                NodeItem::PodInterface(p) => Some((p.container_id.clone(), p.ifname.clone())),
                _ => None,
            })
            .filter(|k| !valid.contains(k))
            .collect();
        for (c, i) in &stale_items {
            self.unset_pod(c, i);
        }
        self.reconcile();
        match self.ipam.release_all_except(&valid).await {
            Ok(freed) => {
                tracing::info!(released = freed.len(), interfaces = stale_items.len(), "GC");
                CniReply::default()
            }
            Err(e) => store_reply(&e),
        }
    }

    pub async fn dump(&mut self) -> AgentDump {
        let tables = self.applier.tables().snapshot();
        let routes = tables
            .fib(0)
            .map(|f| {
                f.routes()
                    .into_iter()
                    .map(|(a, l, adj)| format!("{a}/{l} -> {}", tables.adjacencies[adj as usize]))
                    .collect()
            })
            .unwrap_or_default();
        let view = self.applier.worker().view().unwrap_or_default();
        let allocations = self
            .ipam
            .allocations()
            .await
            .map(|v| {
                v.into_iter()
                    .map(|(ip, a, _)| (ip.to_string(), a.container_id, a.ifname))
                    .collect()
            })
            .unwrap_or_default();
        AgentDump {
            node: self.cfg.node_name.clone(),
            node_id: self.node_id,
            pod_subnet: self.pod_subnet.to_string(),
            converged: self.reconciler.converged(),
            items: self.reconciler.dump(self.now()),
            ports: view.ports.into_iter().map(|p| (p.index, p.name)).collect(),
            routes,
            static_neighbours: tables.neighbours.len(),
            allocations,
            engine_errors: view.errors,
            engine_interfaces: view.interfaces,
            nat_sessions: view.nat_sessions,
            nat_session_count: view.nat_session_count,
        }
    }

    /// Forgets applied items that are no longer really there, and pods whose namespace
    /// is gone; the next round re-creates or removes them.
    async fn resync(&mut self) {
        let actual: BTreeMap<String, NodeItem> = self
            .reconciler
            .applied()
            .iter()
            .filter(|(k, item)| self.applier.still_there(k, item))
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        let lost = self.reconciler.applied().len() - actual.len();
        if lost > 0 {
            tracing::warn!(
                lost,
                "resync: items vanished from the node; re-creating them"
            );
            // Ports of vanished interfaces are released before they are re-created.
            for (k, item) in self.reconciler.applied().clone() {
                if !actual.contains_key(&k) {
                    use crate::reconciler::Applier;
                    let _ = self.applier.delete(&k, &item);
                }
            }
            self.reconciler.resync(actual);
        }
        if let Err(e) = self.sweep_pods().await {
            tracing::warn!(error = %e, "resync could not read the store");
        }
        self.publish_self().await;
        self.reconcile();
    }

    async fn handle(&mut self, req: Request) {
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let (reply, tx) = match req {
            Request::Add(r, tx) => {
                count(&self.metrics.cni_add);
                (self.add(r).await, tx)
            }
            Request::Del(r, tx) => {
                count(&self.metrics.cni_del);
                (self.del(r).await, tx)
            }
            Request::Check(r, tx) => {
                count(&self.metrics.cni_check);
                (self.check(r).await, tx)
            }
            Request::Status(tx) => (self.status().await, tx),
            Request::Gc(r, tx) => {
                count(&self.metrics.cni_gc);
                (self.gc(r).await, tx)
            }
            Request::Dump(tx) => {
                let _ = tx.send(self.dump().await);
                return;
            }
            Request::Dataplane(tx) => {
                let _ = tx.send(self.applier.worker().view().map_err(|e| e.to_string()));
                return;
            }
            Request::Nodes(nodes) => {
                self.set_nodes(&nodes);
                return;
            }
        };
        if reply.error_code != 0 {
            count(&self.metrics.cni_errors);
            tracing::info!(code = reply.error_code, msg = %reply.error_msg,
                details = %reply.error_details, "CNI call failed");
        }
        let _ = tx.send(reply);
    }

    /// Serves requests until the queue closes or `shutdown` resolves.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            let retry = self
                .reconciler
                .next_retry()
                .map(|t| t.saturating_sub(self.now()))
                .unwrap_or(RESYNC_EVERY);
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                req = requests.recv() => match req {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                _ = tokio::time::sleep(retry) => self.reconcile(),
                _ = resync.tick() => self.resync().await,
            }
        }
        self.metrics.ready.store(false, Ordering::Relaxed);
    }
}
