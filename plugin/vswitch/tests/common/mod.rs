//! A node under test: a real etcd, the contiv-vswitch binary (its host interconnect in
//! a namespace of the test's own), and contiv-cni executed as a runtime executes it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use contiv_hw::netns::NamedNetns;
use contiv_store::etcd_server::EtcdServer;
use serde_json::Value;

pub const CNI: &str = env!("CARGO_BIN_EXE_contiv-cni");
pub const AGENT: &str = env!("CARGO_BIN_EXE_contiv-vswitch");

/// Whether this machine can run the test (root, etcd); under `ci/test.sh` it must.
pub fn can_run() -> bool {
    let etcd = Command::new("etcd").arg("--version").output().is_ok();
    if contiv_hw::netns::is_root() && etcd {
        return true;
    }
    assert!(
        std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
        "ci/test.sh runs as root with etcd installed; this test needs both"
    );
    eprintln!("skipped: needs root (namespaces, TAP devices) and etcd");
    false
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (namespace names, directories).
pub fn unique(tag: &str) -> String {
    format!(
        "cv{tag}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// What one execution of contiv-cni returned.
#[derive(Debug)]
pub struct CniOut {
    pub code: i32,
    pub stdout: String,
    pub took: Duration,
}

impl CniOut {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.stdout))
    }

    /// The CNI error code of a failed call.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure: {}", self.stdout);
        self.json()["code"].as_u64().expect("an error code")
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "contiv-cni failed: {}", self.stdout);
        self
    }
}

/// Executes `plugin` as a runtime does.
pub fn exec_plugin(plugin: &str, env: &[(&str, &str)], stdin: &str) -> CniOut {
    let start = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin runs");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("plugin exits");
    CniOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        took: start.elapsed(),
    }
}

pub struct Node {
    pub tag: String,
    pub etcd: EtcdServer,
    /// The node's host stack (where the host interconnect ends).
    pub host: NamedNetns,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub http: Option<SocketAddr>,
    agent: Option<Child>,
    extra_config: String,
}

impl Node {
    pub fn start(tag: &str) -> Node {
        Self::start_with(tag, "")
    }

    /// A node whose agent config has `extra` appended (YAML lines).
    pub fn start_with(tag: &str, extra: &str) -> Node {
        let name = unique(tag);
        let etcd = EtcdServer::start(&name).expect("etcd starts");
        let host = NamedNetns::create(&format!("{name}-host")).expect("host namespace");
        let _ = host.exec(&["ip", "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("cni.sock");
        let mut node = Node {
            tag: name,
            etcd,
            host,
            dir,
            socket,
            http: None,
            agent: None,
            extra_config: extra.to_string(),
        };
        node.start_agent();
        node
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("contiv-vswitch.yaml")
    }

    pub fn start_agent(&mut self) {
        let cfg = format!(
            "nodeName: {}\nstore:\n  endpoints: [\"{}\"]\n  timeoutMs: 2000\ncniSocket: {}\nhttpListen: 127.0.0.1:0\nhostNetns: {}\n{}",
            self.tag,
            self.etcd.endpoint(),
            self.socket.display(),
            self.host.path().display(),
            self.extra_config
        );
        std::fs::write(self.config_path(), cfg).expect("config written");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log file");
        let mut child = Command::new(AGENT)
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("contiv-vswitch starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        });
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut http = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "the agent did not come up; its log:\n{}",
                    std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
                )
            });
            if let Some(a) = line.split("on http://").nth(1) {
                http = a.trim().parse().ok();
            }
            if line.contains(", CNI on ") {
                break;
            }
        }
        self.http = http;
        // Keep draining stderr (the thread does) so the agent never blocks on a full pipe.
        std::mem::forget(rx);
    }

    /// `kill -9`.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The network configuration for our plugin alone.
    pub fn conf(&self, version: &str) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"contiv-test","type":"contiv-cni","grpcServer":"{}","timeoutMs":10000}}"#,
            self.socket.display()
        )
    }

    /// Executes contiv-cni `command` for (container, ifname) in `netns`.
    pub fn cni(&self, command: &str, container: &str, netns: Option<&Path>, conf: &str) -> CniOut {
        let ns = netns.map(|p| p.display().to_string());
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME=pod",
            ),
        ];
        if let Some(ns) = &ns {
            env.push(("CNI_NETNS", ns));
        }
        exec_plugin(CNI, &env, conf)
    }

    pub fn add(&self, container: &str, netns: &NamedNetns) -> CniOut {
        self.cni("ADD", container, Some(&netns.path()), &self.conf("1.0.0"))
    }

    pub fn del(&self, container: &str, netns: &NamedNetns) -> CniOut {
        self.cni("DEL", container, Some(&netns.path()), &self.conf("1.0.0"))
    }

    pub fn check(&self, container: &str, netns: &NamedNetns) -> CniOut {
        self.cni("CHECK", container, Some(&netns.path()), &self.conf("1.0.0"))
    }

    /// GET on the agent's HTTP server.
    pub fn http_get(&self, path: &str) -> String {
        let addr = self.http.expect("the agent printed its HTTP address");
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").expect("request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("response");
        body.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    pub fn dump(&self) -> Value {
        serde_json::from_str(&self.http_get("/dump")).expect("the dump is JSON")
    }

    /// Keys in the store under the agent's prefix and `sub` (e.g. `ipam/`).
    pub fn store_keys(&self, sub: &str) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            use contiv_store::Store;
            let store = self.etcd.connect().await.expect("etcd client");
            let (kvs, _) = store
                .list(&format!("/contiv/{sub}"))
                .await
                .expect("store list");
            kvs.into_iter().map(|kv| kv.key).collect()
        })
    }

    /// A namespace for a pod, named after this node.
    pub fn pod_netns(&self, i: usize) -> NamedNetns {
        NamedNetns::create(&format!("{}-p{i}", self.tag)).expect("pod namespace")
    }

    /// Asserts nothing of any pod is left: no pod items, no pod ports, no /32 routes to
    /// pods, no allocations in the store.
    pub fn assert_no_pod_state(&self) {
        let d = self.dump();
        let items: Vec<&str> = d["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["key"].as_str())
            .filter(|k| k.starts_with("pod/"))
            .collect();
        assert!(items.is_empty(), "pod items left: {items:?}");
        let ports: Vec<String> = d["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_str().unwrap_or_default().to_string())
            .filter(|n| n != "contiv-host")
            .collect();
        assert!(ports.is_empty(), "dataplane ports left: {ports:?}");
        let pod_routes: Vec<&str> = d["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .filter(|r| r.starts_with("10.1.") && r.contains("/32 -> via"))
            .collect();
        assert!(pod_routes.is_empty(), "pod routes left: {pod_routes:?}");
        assert_eq!(d["static_neighbours"], 1, "only the host's neighbour entry");
        let keys = self.store_keys("ipam/");
        assert!(keys.is_empty(), "allocations left in the store: {keys:?}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pod's IPv4 address as the result gives it (without the length).
pub fn result_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"].as_str().expect("an address");
    a.split('/').next().unwrap_or_default().to_string()
}

pub fn ping(from: &NamedNetns, to: &str) -> bool {
    from.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", to])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether the namespace has an interface `name`.
pub fn has_link(ns: &NamedNetns, name: &str) -> bool {
    ns.exec(&["ip", "link", "show", name])
        .map(|o| o.status.success())
        .unwrap_or(false)
}
