//! What runs on the simulated cluster's hosts, each a turmoil host with its own runtime
//! on simulated time: the store, the API server with the scheduler's hands, contiv-ksr,
//! and on every node the production agent (over [`SimNodeHost`]) with its kubelet.
//!
//! The driver talks to the hosts only through [`Mailbox`]es and shared slots, which
//! survive a host's crash: a command queued while a node is down is done when it is back,
//! as a kubelet catches up after a restart.

use std::collections::VecDeque;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use contiv_cni::client::{connect_with, ClientError};
use contiv_cni::plugin::{run_in, Invocation};
use contiv_cni::proto::remote_cni_client::RemoteCniClient;
use contiv_dataplane::{Engine, EngineConfig, TableHandle};
use contiv_hw::BufferPool;
use contiv_store::{MemoryStore, RemoteStore};
use contiv_vswitch::node::run_agent;
use contiv_vswitch::server::serve_cni_incoming;
use contiv_vswitch::wiring::NodeApplier;
use contiv_vswitch::worker::DataplaneWorker;
use contiv_vswitch::{AgentConfig, AgentMetrics, Request};
use tokio::sync::{mpsc, Notify};

use super::net;
use super::node_host::{Namespaces, SimNodeHost, UplinkSlot};
use crate::apiserver::{serve_connection, ApiServer, Kind};

pub const STORE_HOST: &str = "store";
pub const STORE_PORT: u16 = 2379;
pub const API_HOST: &str = "api";
pub const API_PORT: u16 = 6443;
pub const KSR_HOST: &str = "ksr";
pub const CNI_PORT: u16 = 9111;
/// The bound on one store request, as the agents' and KSR's configuration gives it.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// The bound on one CNI call (the runtime's).
pub const CNI_TIMEOUT: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn std::error::Error>;

/// One run of a host, from its (re)start until it stops.
pub type HostRun = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>>>>;

/// Locks simulation state; a panic while held aborts the run, so poisoning is moot.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A queue from the driver to a host's task that outlives the host's restarts.
pub struct Mailbox<T> {
    queue: Mutex<VecDeque<T>>,
    wake: Notify,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        }
    }
}

impl<T> Mailbox<T> {
    pub fn push(&self, item: T) {
        lock(&self.queue).push_back(item);
        self.wake.notify_one();
    }

    pub async fn recv(&self) -> T {
        loop {
            if let Some(item) = lock(&self.queue).pop_front() {
                return item;
            }
            self.wake.notified().await;
        }
    }

    /// Drops everything queued.
    pub fn clear(&self) {
        lock(&self.queue).clear();
    }

    pub fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A client of the store host, as every component has one.
pub fn store_client() -> RemoteStore {
    RemoteStore::connect_lazy(STORE_TIMEOUT, || net::dial(STORE_HOST, STORE_PORT))
}

/// The store host: one in-memory store (made on the host, so leases run on its clock)
/// served over gRPC.
pub fn store_host(slot: Arc<Mutex<Option<MemoryStore>>>) -> impl Fn() -> HostRun {
    move || {
        let slot = slot.clone();
        Box::pin(async move {
            let store = lock(&slot).get_or_insert_with(MemoryStore::new).clone();
            let incoming = net::listen(STORE_PORT).await?;
            contiv_store::serve_store(store, incoming, std::future::pending()).await?;
            Ok(())
        })
    }
}

/// What the scheduler and kubelets ask of the API server.
pub enum ApiCommand {
    CreatePod { name: String, node: String },
    PodRunning { name: String, ip: Ipv4Addr },
    DeletePod { name: String },
    DeleteNode { name: String },
    CreateNode { name: String },
}

/// The API server host: the simulated API server on the network, and the hands that
/// apply the driver's commands to it on the host's clock.
pub fn api_host(
    slot: Arc<Mutex<Option<ApiServer>>>,
    commands: Arc<Mailbox<ApiCommand>>,
) -> impl Fn() -> HostRun {
    move || {
        let (slot, commands) = (slot.clone(), commands.clone());
        Box::pin(async move {
            let api = lock(&slot).get_or_insert_with(ApiServer::new).clone();
            let hands = api.clone();
            tokio::spawn(async move {
                loop {
                    let cmd = commands.recv().await;
                    if let Err(e) = apply_api(&hands, cmd) {
                        tracing::warn!(error = %e, "API command failed");
                    }
                }
            });
            let mut incoming = net::listen(API_PORT).await?;
            use tokio_stream::StreamExt;
            while let Some(conn) = incoming.next().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(conn?, api).await;
                    Ok::<_, std::io::Error>(())
                });
            }
            Ok(())
        })
    }
}

fn apply_api(api: &ApiServer, cmd: ApiCommand) -> Result<(), crate::apiserver::ApiError> {
    use serde_json::json;
    match cmd {
        ApiCommand::CreatePod { name, node } => {
            api.create(
                Kind::Pod,
                Some("default"),
                json!({"metadata": {"name": name, "labels": {"app": "sim"}},
                       "spec": {"nodeName": node, "containers": [{"name": "c", "image": "sim"}]}}),
            )?;
        }
        ApiCommand::PodRunning { name, ip } => {
            api.set_pod_status("default", &name, Some(ip), "Running")?;
        }
        ApiCommand::DeletePod { name } => {
            api.delete(Kind::Pod, Some("default"), &name)?;
        }
        ApiCommand::CreateNode { name } => {
            api.create(Kind::Node, None, json!({"metadata": {"name": name}}))?;
        }
        ApiCommand::DeleteNode { name } => {
            api.delete(Kind::Node, None, &name)?;
        }
    }
    Ok(())
}

/// The KSR host: contiv-ksr with a kube-rs client and a store client on the network.
pub fn ksr_host(metrics: Arc<Mutex<Arc<contiv_ksr::Metrics>>>) -> impl Fn() -> HostRun {
    move || {
        let metrics_slot = metrics.clone();
        Box::pin(async move {
            let metrics = Arc::new(contiv_ksr::Metrics::default());
            *lock(&metrics_slot) = metrics.clone();
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            contiv_ksr::run(
                net::kube_client(API_HOST, API_PORT),
                store_client(),
                contiv_ksr::KsrConfig::new(KSR_HOST),
                metrics,
                shutdown,
            )
            .await?;
            Ok(())
        })
    }
}

/// What a node's kubelet is asked to do.
pub enum KubeletCommand {
    Add {
        pod: String,
        container: String,
        netns: PathBuf,
    },
    Del {
        pod: String,
        container: String,
        netns: PathBuf,
    },
}

/// What came of a kubelet command: the CNI result's address, or the error.
pub struct KubeletResult {
    pub pod: String,
    pub container: String,
    pub add: bool,
    pub outcome: Result<Option<Ipv4Addr>, String>,
}

/// What a node shares with the driver; it outlives the node's crashes.
pub struct NodeShared {
    pub name: String,
    pub config: AgentConfig,
    pub namespaces: Namespaces,
    pub pool: Arc<BufferPool>,
    /// The node's engine while it runs, for the driver to poll.
    pub engine: Mutex<Option<Arc<Mutex<Engine>>>>,
    /// The node's uplink for the next boot.
    pub uplink: UplinkSlot,
    pub requests: Mutex<Option<mpsc::Sender<Request>>>,
    pub metrics: Mutex<Option<Arc<AgentMetrics>>>,
    pub node_id: Mutex<Option<u32>>,
    pub kubelet: Mailbox<KubeletCommand>,
    pub results: Mutex<Vec<KubeletResult>>,
}

/// A CNI invocation by the simulated kubelet: its environment, simulated namespaces,
/// and the agent's server on this host's loopback.
struct SimInvocation<'a> {
    env: Vec<(&'static str, String)>,
    namespaces: &'a Namespaces,
}

impl Invocation for SimInvocation<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    fn netns_exists(&self, netns: &str) -> bool {
        self.namespaces.exists(std::path::Path::new(netns))
    }

    async fn connect(
        &self,
        server: &str,
        timeout: Duration,
    ) -> Result<RemoteCniClient<tonic::transport::Channel>, ClientError> {
        connect_with(server, timeout, || net::dial("127.0.0.1", CNI_PORT)).await
    }
}

/// The network configuration the kubelet hands the plugin.
fn cni_config() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "contiv",
        "type": "contiv-cni",
        "grpcServer": format!("127.0.0.1:{CNI_PORT}"),
        "timeoutMs": CNI_TIMEOUT.as_millis() as u64,
    })
    .to_string()
}

/// Runs one kubelet command through the CNI plugin's own code path.
async fn kubelet_call(shared: &NodeShared, cmd: KubeletCommand) -> KubeletResult {
    let (add, pod, container, netns) = match cmd {
        KubeletCommand::Add {
            pod,
            container,
            netns,
        } => (true, pod, container, netns),
        KubeletCommand::Del {
            pod,
            container,
            netns,
        } => (false, pod, container, netns),
    };
    let inv = SimInvocation {
        env: vec![
            ("CNI_COMMAND", if add { "ADD" } else { "DEL" }.to_string()),
            ("CNI_CONTAINERID", container.clone()),
            ("CNI_NETNS", netns.display().to_string()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            ),
        ],
        namespaces: &shared.namespaces,
    };
    let out = run_in(&inv, cni_config().as_bytes()).await;
    let outcome = if out.exit_code == 0 {
        Ok(if add { result_ip(&out.stdout) } else { None })
    } else {
        Err(out.stdout)
    };
    KubeletResult {
        pod,
        container,
        add,
        outcome,
    }
}

/// The pod's address from a CNI ADD result.
fn result_ip(stdout: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(stdout).ok()?;
    let cidr = v["ips"][0]["address"].as_str()?;
    cidr.split('/').next()?.parse().ok()
}

/// A node host: the agent with its engine (polled by the driver), the CNI server on the
/// network, and the kubelet.
pub fn node_host(shared: Arc<NodeShared>) -> impl Fn() -> HostRun {
    move || {
        let shared = shared.clone();
        Box::pin(async move {
            let tables = TableHandle::new();
            let engine = Engine::new(&tables, shared.pool.handle(), &EngineConfig::default())?;
            let engine = Arc::new(Mutex::new(engine));
            *lock(&shared.engine) = Some(engine.clone());
            let host = SimNodeHost::new(shared.namespaces.clone(), shared.uplink.clone());
            let applier = NodeApplier::new(Box::new(host), DataplaneWorker::inline(engine), tables);
            let metrics = Arc::new(AgentMetrics::default());
            *lock(&shared.metrics) = Some(metrics.clone());
            let (tx, rx) = mpsc::channel(256);
            *lock(&shared.requests) = Some(tx.clone());
            let incoming = net::listen(CNI_PORT).await?;
            tokio::spawn(serve_cni_incoming(
                incoming,
                tx.clone(),
                std::future::pending(),
            ));
            let kubelet = shared.clone();
            tokio::spawn(async move {
                loop {
                    let cmd = kubelet.kubelet.recv().await;
                    let result = kubelet_call(&kubelet, cmd).await;
                    lock(&kubelet.results).push(result);
                }
            });
            let ready = shared.clone();
            run_agent(
                shared.config.clone(),
                store_client(),
                applier,
                metrics,
                (tx, rx),
                move |id| *lock(&ready.node_id) = Some(id),
                std::future::pending(),
            )
            .await?;
            Ok(())
        })
    }
}
