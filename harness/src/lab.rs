//! Real pods in network namespaces wired to an engine by TAP ports: what
//! `contiv-harness netns pods` builds for a person to try, and what the namespace tests
//! build. Namespaces are made with iproute2 (`ip netns`), everything inside them with
//! rtnetlink; all of it is removed when dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use contiv_dataplane::{
    Adjacency, Engine, Interface, Ipv4Net, TableChange, TableError, TableHandle,
};
use contiv_hw::netns::{
    configure_host_interconnect, configure_pod_interface, move_to_netns, HostInterconnect,
    NetnsError, PodInterface,
};
use contiv_hw::{MacAddr, TapError, TapPort, Timestamp};

/// The pods' gateway (Contiv's default: .1 of the node's pod subnet).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("ip netns {action} {name}: {reason}")]
    Ip {
        action: &'static str,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Tables(#[from] TableError),
    #[error("engine: {0}")]
    Engine(String),
}

/// A network namespace, deleted when dropped.
pub use contiv_hw::netns::NamedNetns as Netns;

/// A pod wired to the engine.
pub struct Pod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub interface: String,
    /// The engine's MAC on the pod's port (the pod's gateway MAC).
    pub port_mac: MacAddr,
}

/// How [`wire_pod`] wires a pod.
#[derive(Clone, Copy, Debug)]
pub struct PodOptions {
    /// No static entry for the gateway in the pod: it must ask by ARP.
    pub arp_for_gateway: bool,
    /// TAP offloads on (TCP super-frames, partial checksums), as the agent wires pods.
    pub offloads: bool,
}

impl Default for PodOptions {
    fn default() -> Self {
        PodOptions {
            arp_for_gateway: false,
            offloads: true,
        }
    }
}

/// Makes a namespace, a TAP for it (named `tap`), moves the TAP in, configures the pod's
/// side (address /32, routes via [`POD_GATEWAY`], a static gateway entry unless
/// `opts.arp_for_gateway`), and adds the port, the pod's /32 route and its neighbour entry
/// to the engine.
pub fn wire_pod(
    engine: &mut Engine,
    tables: &TableHandle,
    ns: &str,
    tap: &str,
    ip: Ipv4Addr,
    opts: PodOptions,
) -> Result<Pod, LabError> {
    let netns = Netns::create(ns)?;
    let port_mac = MacAddr::local(u32::from(ip));
    let mut tap_port = TapPort::create(tap, port_mac, 1500)?;
    if opts.offloads {
        tap_port.enable_offloads()?;
    }
    let pod_mac = tap_port.device_mac()?;
    move_to_netns(tap, &netns.path())?;
    configure_pod_interface(
        &netns.path(),
        &PodInterface {
            name: tap.into(),
            address: ip,
            gateway: POD_GATEWAY,
            gateway_mac: (!opts.arp_for_gateway).then_some(port_mac),
            mtu: 1500,
        },
    )?;
    let port = engine
        .add_port(Box::new(tap_port))
        .map_err(|e| LabError::Engine(e.to_string()))?;
    tables.commit(&[
        TableChange::SetInterface(
            Interface::new(port, tap, port_mac).with_address(Ipv4Net::new(POD_GATEWAY, 32)),
        ),
        TableChange::AddRoute {
            vrf: 0,
            prefix: Ipv4Net::new(ip, 32),
            target: Adjacency::Via { port, next_hop: ip },
        },
        TableChange::SetNeighbour {
            port,
            ip,
            mac: pod_mac,
        },
    ])?;
    Ok(Pod {
        ns: netns,
        ip,
        port,
        interface: tap.into(),
        port_mac,
    })
}

/// The host interconnect: a TAP from the engine into `host` (the node's host stack),
/// the engine at `.1` and the host at `.2` of `subnet` (a /24), and host routes to
/// `pod_subnet` through the engine.
pub fn wire_host_interconnect(
    engine: &mut Engine,
    tables: &TableHandle,
    host: &Netns,
    tap: &str,
    subnet: Ipv4Addr,
    pod_subnet: (Ipv4Addr, u8),
) -> Result<u16, LabError> {
    let base = u32::from(subnet) & 0xffff_ff00;
    let (dp_ip, host_ip) = (Ipv4Addr::from(base | 1), Ipv4Addr::from(base | 2));
    let dp_mac = MacAddr::local(u32::from(dp_ip));
    let mut tap_port = TapPort::create(tap, dp_mac, 1500)?;
    tap_port.enable_offloads()?;
    move_to_netns(tap, &host.path())?;
    configure_host_interconnect(
        &host.path(),
        &HostInterconnect {
            name: tap.into(),
            address: host_ip,
            prefix_len: 24,
            dataplane: dp_ip,
            routes: vec![pod_subnet],
            mtu: 1500,
        },
    )?;
    let port = engine
        .add_port(Box::new(tap_port))
        .map_err(|e| LabError::Engine(e.to_string()))?;
    tables.commit(&[TableChange::SetInterface(
        Interface::new(port, tap, dp_mac).with_address(Ipv4Net::new(dp_ip, 24)),
    )])?;
    Ok(port)
}

/// The engine polling its ports on a thread of its own until stopped (or dropped).
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Engine>>,
}

impl Worker {
    pub fn start(mut engine: Engine) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if engine.poll(Timestamp(start.elapsed().as_nanos() as u64)) == 0 {
                    // Nothing to do: let other threads run (TAP ports are kernel-bound
                    // anyway; a DPDK worker would own its core instead).
                    std::thread::yield_now();
                }
            }
            engine
        });
        Worker {
            stop,
            thread: Some(thread),
        }
    }

    /// A handle that stops the worker from another thread (a signal handler).
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops the worker and returns the engine (for its counters).
    pub fn stop(mut self) -> Option<Engine> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LabError::Ip {
            action: "run",
            name: args.join(" "),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Ip {
            action: "run",
            name: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(())
}

/// A veth pair between `node` (where the engine's AF_PACKET port will sit, at `node_mac`)
/// and an `outside` host with `outside_addr` and a default route via `gateway`.
/// Checksum and segmentation offloads are turned off on both ends: AF_PACKET sees frames
/// as the wire would, complete and at most MTU-sized.
pub fn veth_uplink(
    node: &Netns,
    outside: &Netns,
    node_if: &str,
    outside_if: &str,
    node_mac: MacAddr,
    outside_addr: (Ipv4Addr, u8),
    gateway: Ipv4Addr,
) -> Result<(), LabError> {
    ip(&[
        "link",
        "add",
        "name",
        node_if,
        "netns",
        &node.name,
        "type",
        "veth",
        "peer",
        "name",
        outside_if,
        "netns",
        &outside.name,
    ])?;
    ip(&[
        "-n",
        &node.name,
        "link",
        "set",
        node_if,
        "address",
        &node_mac.to_string(),
        "up",
    ])?;
    ip(&[
        "-n",
        &outside.name,
        "addr",
        "add",
        &format!("{}/{}", outside_addr.0, outside_addr.1),
        "dev",
        outside_if,
    ])?;
    ip(&["-n", &outside.name, "link", "set", outside_if, "up"])?;
    ip(&["-n", &outside.name, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        &outside.name,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])?;
    for (ns, dev) in [(node, node_if), (outside, outside_if)] {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso",
                "off", "gso", "off", "gro", "off",
            ])
            .output()
            .map_err(|e| LabError::Ip {
                action: "ethtool",
                name: dev.into(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(LabError::Ip {
                action: "ethtool",
                name: dev.into(),
                reason: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
    }
    Ok(())
}
