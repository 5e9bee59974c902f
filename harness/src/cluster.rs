//! `contiv-harness netns up` / `netns down`: a real cluster in network namespaces.
//!
//! ```text
//!   root namespace: etcd, the simulated API server, contiv-ksr, one contiv-vswitch per
//!                   node (each with its node's namespace as its host), bridge NAME-br
//!       |  NAME-v1 ... NAME-vN, NAME-vo (veth pairs; the far ends are eth0 inside)
//!   NAME-n1 ... NAME-nN   node namespaces: eth0 is the uplink, taken by the node's
//!                         dataplane (AF_PACKET) and owning the node address
//!                         192.168.16.<node ID>; contiv-host is the host interconnect
//!   NAME-n1-p1 ...        pods, created through contiv-cni against their node's agent
//!   NAME-out              an outside host, 192.168.16.200, with a route to the pod
//!                         network via node 1
//! ```
//!
//! Everything made is recorded in `/run/contiv-netns/NAME/state.json` as it is made, so
//! `netns down` (and a failed `up`) removes exactly that, processes first.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::agent_dump::{fetch_dump, http_request};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("needs root (network namespaces, TAP devices, AF_PACKET)")]
    NotRoot,
    #[error("{0} not found in {1}; build it first: cargo build --release -p contiv-vswitch -p contiv-ksr --features contiv-vswitch/etcd,contiv-ksr/etcd (or pass --bin-dir)")]
    MissingBinary(String, String),
    #[error(
        "cluster name {0:?}: use 1 to 6 lowercase letters and digits (interface names are short)"
    )]
    BadName(String),
    #[error("a cluster named {0} is up already (state in {1}); run netns down first")]
    Exists(String, String),
    #[error("no cluster named {0} (no {1})")]
    NoSuchCluster(String, String),
    #[error("{what}: {reason}")]
    Step { what: String, reason: String },
    #[error("etcd: {0}")]
    Etcd(#[from] contiv_store::etcd_server::EtcdServerError),
    #[error("state file {0}: {1}")]
    State(String, String),
}

fn step(what: impl Into<String>, reason: impl ToString) -> ClusterError {
    ClusterError::Step {
        what: what.into(),
        reason: reason.to_string(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transport {
    Vxlan,
    Nooverlay,
}

impl Transport {
    fn config_value(self) -> &'static str {
        match self {
            Transport::Vxlan => "vxlan",
            Transport::Nooverlay => "nooverlay",
        }
    }
}

/// What `netns up` builds.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub nodes: u32,
    pub pods_per_node: u32,
    pub transport: Transport,
    /// Each node's uplink through DPDK's `net_af_packet` (a contiv-vswitch built with
    /// the `dpdk` feature) instead of the agent's own AF_PACKET port.
    pub dpdk_uplink: bool,
    /// Where contiv-vswitch, contiv-cni and contiv-ksr are.
    pub bin_dir: PathBuf,
    /// Where the harness itself is (it serves the simulated API server).
    pub harness: PathBuf,
    /// Parent of the cluster's state directory.
    pub state_root: PathBuf,
}

pub const DEFAULT_STATE_ROOT: &str = "/run/contiv-netns";
/// The outside host's address on the underlay.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 16, 200);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub id: u32,
    /// The node address on the underlay (the dataplane's, on eth0).
    pub address: Ipv4Addr,
    /// The host stack's address on the host interconnect.
    pub host_ip: Ipv4Addr,
    pub agent_http: String,
    pub cni_socket: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub netns: String,
    pub node: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
}

/// Everything one cluster is, as made so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub dir: PathBuf,
    pub transport: Option<Transport>,
    pub bridge: Option<String>,
    /// Namespaces, in the order made (removed in reverse).
    pub namespaces: Vec<String>,
    /// Root-namespace veth ends (their peers go with the namespaces).
    pub links: Vec<String>,
    /// (what, pid) of the processes started, in order.
    pub processes: Vec<(String, u32)>,
    pub etcd_endpoint: String,
    pub etcd_dir: Option<PathBuf>,
    pub apiserver: String,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
    pub outside: Option<String>,
}

impl ClusterState {
    fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    fn save(&self) -> Result<(), ClusterError> {
        let p = Self::path(&self.dir);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ClusterError::State(p.display().to_string(), e.to_string()))?;
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| ClusterError::State(p.display().to_string(), e.to_string()))
    }

    pub fn load(state_root: &Path, name: &str) -> Result<ClusterState, ClusterError> {
        let p = Self::path(&state_root.join(name));
        let text = std::fs::read_to_string(&p)
            .map_err(|_| ClusterError::NoSuchCluster(name.into(), p.display().to_string()))?;
        serde_json::from_str(&text)
            .map_err(|e| ClusterError::State(p.display().to_string(), e.to_string()))
    }

    /// A summary for people: how to reach what was made.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "cluster {} ({}): etcd {}, API server {}\n",
            self.name,
            self.transport.map_or("?", |t| t.config_value()),
            self.etcd_endpoint,
            self.apiserver
        );
        for n in &self.nodes {
            out += &format!(
                "  node {} (id {}): ip netns exec {} ...  address {}, host {}, agent http://{} (contiv-harness dump --agent http://{})\n",
                n.name, n.id, n.netns, n.address, n.host_ip, n.agent_http, n.agent_http
            );
            for p in self.pods.iter().filter(|p| p.node == n.name) {
                out += &format!(
                    "    pod {}: ip netns exec {} ping {}\n",
                    p.ip, p.netns, p.ip
                );
            }
        }
        if let Some(o) = &self.outside {
            out += &format!(
                "  outside host {OUTSIDE_IP}: ip netns exec {o} ...  (route to the pods via node 1)\n"
            );
        }
        out += &format!(
            "remove it all with: contiv-harness netns down --name {}\n",
            self.name
        );
        out
    }
}

/// Runs a command; its standard output, or an error with its standard error.
pub fn run(args: &[&str]) -> Result<String, ClusterError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| step(args.join(" "), e))?;
    if !out.status.success() {
        return Err(step(
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `args` in namespace `ns`.
pub fn exec_in(ns: &str, args: &[&str]) -> Result<String, ClusterError> {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| step("free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| step("free port", e))
}

/// Waits for `ready` with a bound; `what` names it in the error.
fn wait_for(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(step(what, format!("not ready within {within:?} {last}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a process in its own process group (a Ctrl-C at the terminal that ran `up`
/// does not reach it), its output to `log`.
fn spawn(state: &mut ClusterState, what: &str, cmd: &mut Command) -> Result<u32, ClusterError> {
    use std::os::unix::process::CommandExt;
    let log = state.dir.join(format!("{what}.log"));
    let f = std::fs::File::create(&log).map_err(|e| step(format!("{}", log.display()), e))?;
    let f2 = f.try_clone().map_err(|e| step("log", e))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .process_group(0)
        .spawn()
        .map_err(|e| step(format!("start {what}"), e))?;
    state.processes.push((what.to_string(), child.id()));
    state.save()?;
    Ok(child.id())
}

fn http_ok(addr: &str, path: &str) -> Result<bool, String> {
    http_request(addr, "GET", path, None)
        .map(|(status, _)| status == 200)
        .map_err(|e| e.to_string())
}

fn post_json(addr: &str, path: &str, body: &str) -> Result<(), ClusterError> {
    let (status, answer) = http_request(addr, "POST", path, Some(body))
        .map_err(|e| step(format!("POST {path}"), e))?;
    if !(200..300).contains(&status) {
        return Err(step(format!("POST {path}"), format!("{status}: {answer}")));
    }
    Ok(())
}

/// Builds the cluster. On any failure, removes what it made and returns the error.
pub fn up(spec: &ClusterSpec) -> Result<ClusterState, ClusterError> {
    if !contiv_hw::netns::is_root() {
        return Err(ClusterError::NotRoot);
    }
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 6
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name_ok {
        return Err(ClusterError::BadName(spec.name.clone()));
    }
    if spec.nodes == 0 || spec.nodes > 99 || spec.pods_per_node > 99 {
        return Err(step("size", "1 to 99 nodes, at most 99 pods per node"));
    }
    for bin in ["contiv-vswitch", "contiv-cni", "contiv-ksr"] {
        if !spec.bin_dir.join(bin).is_file() {
            return Err(ClusterError::MissingBinary(
                bin.into(),
                spec.bin_dir.display().to_string(),
            ));
        }
    }
    let dir = spec.state_root.join(&spec.name);
    if ClusterState::path(&dir).exists() {
        return Err(ClusterError::Exists(
            spec.name.clone(),
            dir.display().to_string(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| step(format!("{}", dir.display()), e))?;
    let mut state = ClusterState {
        name: spec.name.clone(),
        dir,
        transport: Some(spec.transport),
        ..Default::default()
    };
    state.save()?;
    match build(spec, &mut state) {
        Ok(()) => Ok(state),
        Err(e) => {
            let logs = tail_logs(&state);
            teardown(&state);
            Err(step(format!("netns up ({e})"), logs))
        }
    }
}

/// The last lines of every process log, for a failed `up`.
fn tail_logs(state: &ClusterState) -> String {
    let mut out = String::new();
    for (what, _) in &state.processes {
        let log =
            std::fs::read_to_string(state.dir.join(format!("{what}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
        out += &format!("\n  {what}.log:\n    {tail}");
    }
    out
}

fn build(spec: &ClusterSpec, state: &mut ClusterState) -> Result<(), ClusterError> {
    let name = spec.name.clone();
    // The underlay.
    let bridge = format!("{name}-br");
    run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
    state.bridge = Some(bridge.clone());
    state.save()?;
    run(&["ip", "link", "set", &bridge, "up"])?;

    // The store and the Kubernetes side.
    let etcd = contiv_store::etcd_server::EtcdServer::start(&format!("netns-{name}"))?;
    state.etcd_endpoint = etcd.endpoint();
    let (pid, etcd_dir) = etcd.detach();
    if let Some(pid) = pid {
        state.processes.push(("etcd".into(), pid));
    }
    state.etcd_dir = Some(etcd_dir);
    state.save()?;
    let api = format!("127.0.0.1:{}", free_port()?);
    spawn(
        state,
        "apiserver",
        Command::new(&spec.harness).args(["apiserver", "--listen", &api]),
    )?;
    state.apiserver = format!("http://{api}");
    wait_for("the API server", Duration::from_secs(20), || {
        http_ok(&api, "/api/v1/nodes")
    })?;
    let ksr_http = format!("127.0.0.1:{}", free_port()?);
    spawn(
        state,
        "contiv-ksr",
        Command::new(spec.bin_dir.join("contiv-ksr")).args([
            "--etcd",
            &state.etcd_endpoint.clone(),
            "--server",
            &state.apiserver.clone(),
            "--http",
            &ksr_http,
        ]),
    )?;
    wait_for("contiv-ksr", Duration::from_secs(30), || {
        http_ok(&ksr_http, "/readyz")
    })?;

    // Nodes, one after another so that node IDs follow the names.
    for i in 1..=spec.nodes {
        add_node(spec, state, i, &bridge)?;
    }
    // Every agent must know every other node before pods talk across.
    let n = spec.nodes as usize;
    for node in state.nodes.clone() {
        wait_for(
            &format!("{} to learn the other nodes", node.name),
            Duration::from_secs(30),
            || {
                let d = fetch_dump(&format!("http://{}", node.agent_http))
                    .map_err(|e| e.to_string())?;
                let remote = d["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter(|i| {
                                i["key"].as_str().is_some_and(|k| k.ends_with("/routes"))
                                    && i["state"].as_str() == Some("applied")
                            })
                            .count()
                    })
                    .unwrap_or(0);
                Ok(remote + 1 == n && d["converged"].as_bool() == Some(true))
            },
        )?;
    }

    // The outside host.
    let out_ns = format!("{name}-out");
    add_namespace(state, &out_ns)?;
    let veth = format!("{name}-vo");
    plug(state, &veth, &out_ns, &bridge)?;
    exec_in(
        &out_ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/24"),
            "dev",
            "eth0",
        ],
    )?;
    exec_in(&out_ns, &["ip", "link", "set", "eth0", "up"])?;
    let first = state
        .nodes
        .first()
        .map(|n| n.address.to_string())
        .unwrap_or_default();
    exec_in(
        &out_ns,
        &["ip", "route", "add", "10.1.0.0/16", "via", &first],
    )?;
    state.outside = Some(out_ns);
    state.save()?;

    // Pods, through contiv-cni.
    for node in state.nodes.clone() {
        for j in 1..=spec.pods_per_node {
            add_pod(spec, state, &node, j)?;
        }
    }
    Ok(())
}

fn add_namespace(state: &mut ClusterState, ns: &str) -> Result<(), ClusterError> {
    run(&["ip", "netns", "add", ns])?;
    state.namespaces.push(ns.to_string());
    state.save()?;
    exec_in(ns, &["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

/// A veth from the bridge into `ns`, named eth0 there.
fn plug(
    state: &mut ClusterState,
    root_end: &str,
    ns: &str,
    bridge: &str,
) -> Result<(), ClusterError> {
    let tmp = format!("{root_end}x");
    run(&[
        "ip", "link", "add", root_end, "type", "veth", "peer", "name", &tmp,
    ])?;
    state.links.push(root_end.to_string());
    state.save()?;
    run(&["ip", "link", "set", &tmp, "netns", ns])?;
    exec_in(ns, &["ip", "link", "set", &tmp, "name", "eth0"])?;
    // A veth hands its peer frames with the checksum left to the hardware and TCP
    // segments merged up to 64 KB; frames on a wire are whole and at most the MTU.
    // The underlay is made to behave as a wire (the AF_PACKET uplink drops what is
    // larger than a buffer, counted, rather than read half of it).
    exec_in(
        ns,
        &[
            "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
        ],
    )?;
    run(&["ip", "link", "set", root_end, "master", bridge])?;
    run(&["ip", "link", "set", root_end, "up"])?;
    Ok(())
}

fn add_node(
    spec: &ClusterSpec,
    state: &mut ClusterState,
    i: u32,
    bridge: &str,
) -> Result<(), ClusterError> {
    let name = &spec.name;
    let node_name = format!("{name}-node{i}");
    let ns = format!("{name}-n{i}");
    add_namespace(state, &ns)?;
    plug(state, &format!("{name}-v{i}"), &ns, bridge)?;
    // The uplink carries no address in the host stack: the dataplane owns the node
    // address on it. It must be up for AF_PACKET to see frames.
    exec_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
    // The node object, as a kubelet would register it.
    post_json(
        state.apiserver.trim_start_matches("http://"),
        "/api/v1/nodes",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name},
        })
        .to_string(),
    )?;
    let http = format!("127.0.0.1:{}", free_port()?);
    let socket = state.dir.join(format!("n{i}-cni.sock"));
    let config = state.dir.join(format!("n{i}-vswitch.yaml"));
    let uplink = if spec.dpdk_uplink {
        // No hugepages (nothing global to set up or leak), one process: no shared files.
        format!(
            "  dpdk: \"net_af_packet0,iface=eth0\"\n  dpdkEal: [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"-l\", \"0\", \"--no-telemetry\", \"--no-shconf\", \"--file-prefix\", \"{}\"]\n",
            dpdk_file_prefix(&spec.name, i)
        )
    } else {
        "  afPacket: eth0\n".to_string()
    };
    let yaml = format!(
        "nodeName: {node_name}\nstore:\n  endpoints: [\"{}\"]\n  timeoutMs: 3000\nnodeToNodeTransport: {}\nuplink:\n{uplink}hostNetns: /run/netns/{ns}\ncniSocket: {}\nhttpListen: {http}\n",
        state.etcd_endpoint,
        spec.transport.config_value(),
        socket.display()
    );
    std::fs::write(&config, yaml).map_err(|e| step(format!("{}", config.display()), e))?;
    spawn(
        state,
        &format!("vswitch-n{i}"),
        Command::new(spec.bin_dir.join("contiv-vswitch"))
            .arg("--config")
            .arg(&config),
    )?;
    let mut id = 0;
    wait_for(
        &format!("contiv-vswitch of {node_name}"),
        Duration::from_secs(30),
        || {
            let d = fetch_dump(&format!("http://{http}")).map_err(|e| e.to_string())?;
            id = d["node_id"].as_u64().unwrap_or(0) as u32;
            Ok(d["converged"].as_bool() == Some(true))
        },
    )?;
    let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 16, 0)) | id);
    let host_ip = Ipv4Addr::new(172, 30, id as u8, 2);
    state.nodes.push(NodeRecord {
        name: node_name,
        netns: ns,
        id,
        address,
        host_ip,
        agent_http: http,
        cni_socket: socket,
    });
    state.save()
}

fn add_pod(
    spec: &ClusterSpec,
    state: &mut ClusterState,
    node: &NodeRecord,
    j: u32,
) -> Result<(), ClusterError> {
    let ns = format!("{}-p{j}", node.netns);
    add_namespace(state, &ns)?;
    let container_id = format!("{ns}-c");
    let pod_name = format!("pod{j}-{}", node.name);
    post_json(
        state.apiserver.trim_start_matches("http://"),
        "/api/v1/namespaces/default/pods",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": "default"},
            "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "none"}]},
        })
        .to_string(),
    )?;
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "contiv",
        "type": "contiv-cni",
        "grpcServer": node.cni_socket,
    })
    .to_string();
    let out = cni_add(spec, &container_id, &ns, &pod_name, &conf)?;
    let result: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| step(format!("CNI ADD of {ns}: {out}"), e))?;
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| step(format!("CNI ADD of {ns}"), format!("no address in {out}")))?;
    state.pods.push(PodRecord {
        netns: ns,
        node: node.name.clone(),
        container_id,
        ip,
    });
    state.save()
}

fn cni_add(
    spec: &ClusterSpec,
    container_id: &str,
    ns: &str,
    pod_name: &str,
    conf: &str,
) -> Result<String, ClusterError> {
    use std::io::Write;
    let mut child = Command::new(spec.bin_dir.join("contiv-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", format!("/run/netns/{ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &spec.bin_dir)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| step("contiv-cni", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.as_bytes())
            .map_err(|e| step("contiv-cni stdin", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| step("contiv-cni", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(step(format!("CNI ADD of {ns}"), stdout));
    }
    Ok(stdout)
}

/// Stops the processes (newest first: agents, KSR, API server, etcd) and removes the
/// namespaces, links, bridge and state; carries on past errors so nothing is left.
/// The start of the DPDK file prefixes (runtime directory names) of a cluster's agents.
fn dpdk_prefix_stem(cluster: &str) -> String {
    format!("contiv-{cluster}-n")
}

/// The DPDK file prefix of node `i`'s agent.
fn dpdk_file_prefix(cluster: &str, i: u32) -> String {
    format!("{}{i}", dpdk_prefix_stem(cluster))
}

fn teardown(state: &ClusterState) {
    for (what, pid) in state.processes.iter().rev() {
        stop_process(what, *pid);
    }
    for ns in state.namespaces.iter().rev() {
        let _ = run(&["ip", "netns", "del", ns]);
    }
    for link in &state.links {
        let _ = run(&["ip", "link", "del", link]);
    }
    if let Some(b) = &state.bridge {
        let _ = run(&["ip", "link", "del", b]);
    }
    if let Some(d) = &state.etcd_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_dir_all(&state.dir);
    // DPDK agents' runtime directories (none with --no-shconf, but an agent that was
    // killed may have left one).
    let prefix = dpdk_prefix_stem(&state.name);
    if let Ok(entries) = std::fs::read_dir("/var/run/dpdk") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL. Only a process that is still the one started
/// (its command line names `what`'s binary) is signalled, so a reused PID is left alone.
fn stop_process(what: &str, pid: u32) {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let ours = |p: &Path| {
        std::fs::read(p.join("cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c);
                let bin = match what {
                    "apiserver" => "contiv-harness",
                    w if w.starts_with("vswitch") => "contiv-vswitch",
                    w => w,
                };
                c.contains(bin)
            })
            .unwrap_or(false)
    };
    if !ours(&proc_dir) {
        return;
    }
    let _ = run(&["kill", "-TERM", &pid.to_string()]);
    let gone = wait_for("stop", Duration::from_secs(10), || {
        // A zombie (exited, parent gone or not reaping) counts as stopped.
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        Ok(stat.is_empty() || stat.contains(") Z "))
    });
    if gone.is_err() {
        let _ = run(&["kill", "-KILL", &pid.to_string()]);
    }
}

/// `netns down`: removes the cluster named `name`.
pub fn down(state_root: &Path, name: &str) -> Result<ClusterState, ClusterError> {
    if !contiv_hw::netns::is_root() {
        return Err(ClusterError::NotRoot);
    }
    let state = ClusterState::load(state_root, name)?;
    teardown(&state);
    Ok(state)
}
