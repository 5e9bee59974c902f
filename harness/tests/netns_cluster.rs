//! The cluster of `contiv-harness netns up`, in both transports: 3 nodes with 2 pods
//! each, real etcd, contiv-ksr, one contiv-vswitch per node with an AF_PACKET uplink,
//! pods made through contiv-cni. Checks pod to pod across nodes (ping, and TCP checked
//! by content), host to pod and pod to host on the same and other nodes, pods to the
//! outside with their source translated to the node address (seen from the outside),
//! the outside to pods by route (not translated), and the VXLAN on the underlay as
//! tcpdump decodes it. Then `netns down` leaves nothing. Needs root and the workspace's
//! binaries built with `--all-features` (ci/test.sh builds them).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use contiv_harness::cluster::{
    down, exec_in, up, ClusterSpec, ClusterState, Transport, OUTSIDE_IP,
};
use contiv_hw::netns::in_netns;

/// Removes the cluster however the test ends.
struct Up {
    state: ClusterState,
    root: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = down(&self.root, &self.state.name);
    }
}

fn start(tag: char, transport: Transport, dpdk_uplink: bool) -> Option<Up> {
    if !contiv_hw::netns::is_root() {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "ci/test.sh runs as root; this test needs root for network namespaces"
        );
        eprintln!("skipped: needs root");
        return None;
    }
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_contiv-harness"));
    let root = std::env::temp_dir().join(format!("contiv-netns-test-{}", std::process::id()));
    let spec = ClusterSpec {
        // Short and unique per run: interface names are at most 15 bytes.
        name: format!("{tag}{}", std::process::id() % 100_000),
        nodes: 3,
        pods_per_node: 2,
        transport,
        dpdk_uplink,
        bin_dir: harness.parent().expect("target dir").to_path_buf(),
        harness,
        state_root: root.clone(),
    };
    let state = up(&spec).unwrap_or_else(|e| panic!("netns up: {e}"));
    Some(Up { state, root })
}

impl Up {
    fn pod(&self, node: usize, j: usize) -> (&str, Ipv4Addr) {
        let n = &self.state.nodes[node - 1];
        let p = self
            .state
            .pods
            .iter()
            .filter(|p| p.node == n.name)
            .nth(j - 1)
            .expect("pod");
        (&p.netns, p.ip)
    }

    fn node_ns(&self, node: usize) -> &str {
        &self.state.nodes[node - 1].netns
    }

    fn outside(&self) -> &str {
        self.state.outside.as_deref().expect("outside host")
    }
}

/// Pings `to` from `ns`: one ping first (the first packet to an unresolved next hop
/// becomes the ARP request, as in VPP), then 3 that must all come back.
/// The inside source port of the one TCP session of `inside` to port 7003 in a dump's
/// list (the port the pod's kernel chose).
fn peer_port_inside(sessions: &[&str], inside: Ipv4Addr) -> u16 {
    let prefix = format!("tcp {inside}:");
    let ports: Vec<u16> = sessions
        .iter()
        .filter(|s| s.contains(&format!("-> {OUTSIDE_IP}:7003 ")))
        .filter_map(|s| s.strip_prefix(&prefix)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "one connection from {inside} in {sessions:#?}"
    );
    ports[0]
}

fn assert_ping(ns: &str, to: Ipv4Addr) {
    let to = to.to_string();
    let _ = exec_in(ns, &["ping", "-c", "1", "-W", "1", &to]);
    let out = exec_in(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", &to]);
    assert!(
        out.as_ref()
            .is_ok_and(|o| o.contains("3 packets transmitted, 3 received")),
        "ping {ns} -> {to}: {out:?}"
    );
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// A listener in `ns` on `ip:port`.
fn listen(ns: &str, ip: Ipv4Addr, port: u16) -> TcpListener {
    in_netns(&netns_path(ns), move || TcpListener::bind((ip, port)))
        .expect("netns")
        .expect("bind")
}

fn connect(ns: &str, to: SocketAddr) -> TcpStream {
    in_netns(&netns_path(ns), move || {
        // The first SYN may be the one turned into an ARP request: TCP retries it.
        TcpStream::connect_timeout(&to, Duration::from_secs(10))
    })
    .expect("netns")
    .unwrap_or_else(|e| panic!("connect to {to}: {e}"))
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// Sends `len` bytes of a pattern from `from` to a listener in `to`; the receiver checks
/// every byte, and reports the peer address it saw.
fn tcp_transfer(from: &str, to: &str, to_ip: Ipv4Addr, port: u16, len: usize) -> SocketAddr {
    let listener = listen(to, to_ip, port);
    listener.set_nonblocking(false).expect("blocking listener");
    let receiver = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        while got < len {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "connection closed after {got} of {len} bytes");
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(got + k), "byte {} differs", got + k);
            }
            got += n;
        }
        s.write_all(b"ok").unwrap();
        peer
    });
    let mut c = connect(from, SocketAddr::from((to_ip, port)));
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let data: Vec<u8> = (0..len).map(pattern).collect();
    c.write_all(&data).expect("send");
    let mut ack = [0u8; 2];
    c.read_exact(&mut ack).expect("receiver's ack");
    assert_eq!(&ack, b"ok");
    receiver.join().expect("receiver")
}

/// Runs tcpdump on the underlay bridge while `traffic` runs; returns its decoded text.
fn capture(bridge: &str, filter: &str, count: u32, traffic: impl FnOnce()) -> String {
    let mut td = Command::new("tcpdump")
        .args([
            "-nn",
            "-v",
            "-l",
            "-i",
            bridge,
            "-c",
            &count.to_string(),
            filter,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (ci/test.sh installs it)");
    // tcpdump says "listening on" once its capture is open.
    let mut err = td.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        assert!(Instant::now() < deadline, "tcpdump did not start");
        if err.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    traffic();
    // tcpdump ends after `count` packets; bounded: stopped (and what it has printed
    // kept) if they do not come.
    let pid = td.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(td.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            rx.recv().expect("tcpdump waiter")
        }
    };
    String::from_utf8_lossy(&out.expect("tcpdump").stdout).into_owned()
}

fn suite(tag: char, transport: Transport, dpdk_uplink: bool) {
    let Some(c) = start(tag, transport, dpdk_uplink) else {
        return;
    };
    let (p11, ip11) = c.pod(1, 1);
    let (p12, ip12) = c.pod(1, 2);
    let (p21, ip21) = c.pod(2, 1);
    let (p32, ip32) = c.pod(3, 2);
    let (p31, ip31) = c.pod(3, 1);
    let nodes = &c.state.nodes;
    assert_eq!(
        nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "node IDs in order"
    );

    // The uplink each agent wired is the kind asked for.
    for n in nodes {
        let dump = contiv_harness::agent_dump::fetch_dump(&format!("http://{}", n.agent_http))
            .unwrap_or_else(|e| panic!("dump of {}: {e}", n.name));
        let text = dump.to_string();
        let want = if dpdk_uplink {
            "net_af_packet0"
        } else {
            "\"eth0\""
        };
        assert!(
            text.contains(want),
            "{}: the uplink is {want}: {text}",
            n.name
        );
    }

    // Pods get the overlay's MTU.
    let link = exec_in(p11, &["ip", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1450"), "{link}");

    // Pod to pod: same node, across nodes.
    assert_ping(p11, ip12);
    assert_ping(p11, ip21);
    assert_ping(p21, ip32);
    assert_ping(p32, ip11);
    // TCP across nodes, 4 MB checked byte by byte; the receiver sees the pod's own
    // address (never translated inside the cluster).
    let peer = tcp_transfer(p11, p31, ip31, 7001, 4 << 20);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(ip11));

    // Host to pod and pod to host, same node and other nodes.
    assert_ping(c.node_ns(1), ip11);
    assert_ping(c.node_ns(2), ip11);
    assert_ping(p21, nodes[1].host_ip);
    assert_ping(p21, nodes[2].host_ip);
    let peer = tcp_transfer(c.node_ns(3), p12, ip12, 7002, 1 << 20);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(nodes[2].host_ip));

    // Pods to the outside: the outside sees the node's address.
    assert_ping(p21, OUTSIDE_IP);
    let peer = tcp_transfer(p21, c.outside(), OUTSIDE_IP, 7003, 1 << 20);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(nodes[1].address));
    // Node 2's agent lists the translations in its dump: the pings and the connection,
    // as the outside saw it (the node's address and port).
    let dump = contiv_harness::agent_dump::fetch_dump(&format!("http://{}", nodes[1].agent_http))
        .unwrap_or_else(|e| panic!("dump of {}: {e}", nodes[1].name));
    let sessions: Vec<&str> = dump["nat_sessions"]
        .as_array()
        .expect("nat_sessions")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let tcp = format!(
        "tcp {ip21}:{} -> {OUTSIDE_IP}:7003 as {}:{}, idle",
        peer_port_inside(&sessions, ip21),
        nodes[1].address,
        peer.port()
    );
    assert!(
        sessions.iter().any(|s| s.starts_with(&tcp)),
        "{tcp} in {sessions:#?}"
    );
    assert!(
        sessions
            .iter()
            .any(|s| s.starts_with(&format!("icmp {ip21}:"))
                && s.contains(&format!("-> {OUTSIDE_IP}:"))),
        "the pings in {sessions:#?}"
    );
    assert_eq!(
        dump["nat_session_count"].as_u64(),
        Some(sessions.len() as u64)
    );
    let peer = tcp_transfer(p32, c.outside(), OUTSIDE_IP, 7004, 1 << 20);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(nodes[2].address));

    // The outside to pods by its route via node 1: on node 1 and, through the
    // overlay (or the underlay), on node 3; not translated.
    assert_ping(c.outside(), ip11);
    assert_ping(c.outside(), ip31);
    let peer = tcp_transfer(c.outside(), p31, ip31, 7005, 1 << 20);
    assert_eq!(peer.ip(), std::net::IpAddr::V4(OUTSIDE_IP));

    let bridge = c.state.bridge.clone().expect("bridge");
    match transport {
        Transport::Vxlan => {
            // The underlay carries VXLAN that tcpdump decodes: VNI 10, the pods inside.
            let text = capture(&bridge, "udp port 4789", 2, || assert_ping(p12, ip32));
            assert!(text.contains("VXLAN"), "{text}");
            assert!(text.contains("vni 10"), "{text}");
            assert!(
                text.contains(&format!("{ip12} > {ip32}"))
                    || text.contains(&format!("{ip32} > {ip12}")),
                "inner addresses: {text}"
            );
        }
        Transport::Nooverlay => {
            // Routed: the pods' own packets on the underlay, no VXLAN.
            let text = capture(&bridge, "icmp", 2, || assert_ping(p12, ip32));
            assert!(!text.contains("VXLAN"), "{text}");
            assert!(text.contains(&format!("{ip12} > {ip32}")), "{text}");
        }
    }

    // Down: nothing left.
    let name = c.state.name.clone();
    let root = c.root.clone();
    let pids: Vec<u32> = c.state.processes.iter().map(|(_, p)| *p).collect();
    drop(c);
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "namespaces left: {netns}"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("{name}-")), "links left: {links}");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {pid} still runs"
        );
    }
    assert!(!root.join(&name).exists(), "state directory left");
}

#[test]
fn three_nodes_over_vxlan() {
    suite('v', Transport::Vxlan, false);
}

#[test]
fn three_nodes_routed_without_overlay() {
    suite('r', Transport::Nooverlay, false);
}

/// The same suite with every node's uplink on DPDK's net_af_packet (the agents run the
/// DPDK build: ci/test.sh builds all features).
#[cfg(feature = "dpdk")]
#[test]
fn three_nodes_over_vxlan_with_dpdk_uplinks() {
    suite('d', Transport::Vxlan, true);
}
