//! Two outside hosts forwarded through the engine whose ports are on the kernel's side of
//! the machine: AF_PACKET sockets on veth interfaces (the uplink that stays with the
//! kernel), and with the `dpdk` feature the same through DPDK's `net_af_packet` on the
//! veths and DPDK's `net_tap` as the hosts' own interfaces. Checked by ping both ways and a
//! TCP transfer compared by content. Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use contiv_dataplane::{Engine, EngineConfig, Interface, Ipv4Net, TableChange, TableHandle};
use contiv_harness::lab::{veth_uplink, Netns, Worker};
use contiv_hw::netns::in_netns;
use contiv_hw::{AfPacketConfig, AfPacketPort, BufferPool, MacAddr, Port};

fn needs_root() -> bool {
    let root = contiv_hw::netns::is_root();
    if !root {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "ci/test.sh runs as root; this test needs root"
        );
        eprintln!("skipped: needs root (network namespaces, veth, AF_PACKET)");
    }
    root
}

/// Two hosts in namespaces of their own, on two subnets the engine routes between.
struct TwoHosts {
    tag: String,
    a: Netns,
    b: Netns,
}

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 2);
const GW_A: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 1);

impl TwoHosts {
    fn new(kind: &str) -> TwoHosts {
        let tag = format!("{kind}{}", std::process::id() % 100_000);
        TwoHosts {
            a: Netns::create(&format!("ct-{tag}-a")).unwrap(),
            b: Netns::create(&format!("ct-{tag}-b")).unwrap(),
            tag,
        }
    }

    /// A node namespace joined to each host by a veth pair; returns the node and the
    /// names of its two veth ends.
    fn veths_from_node(&self, mac_a: MacAddr, mac_b: MacAddr) -> (Netns, String, String) {
        let node = Netns::create(&format!("ct-{}-n", self.tag)).unwrap();
        let (if_a, if_b) = (format!("{}a", self.tag), format!("{}b", self.tag));
        veth_uplink(
            &node,
            &self.a,
            &if_a,
            &format!("{}va", self.tag),
            mac_a,
            (A_IP, 24),
            GW_A,
        )
        .unwrap();
        veth_uplink(
            &node,
            &self.b,
            &if_b,
            &format!("{}vb", self.tag),
            mac_b,
            (B_IP, 24),
            GW_B,
        )
        .unwrap();
        (node, if_a, if_b)
    }
}

/// Runs an engine over `ports` (toward a, toward b, with the engine's MACs on them) and
/// checks that a and b reach each other through it: ping both ways, 20 MiB over TCP
/// compared byte for byte.
fn check_forwarding(hosts: &TwoHosts, pool: BufferPool, ports: [(Box<dyn Port>, MacAddr); 2]) {
    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, pool, &EngineConfig::default()).unwrap();
    let [(pa, mac_a), (pb, mac_b)] = ports;
    let port_a = engine.add_port(pa).unwrap();
    let port_b = engine.add_port(pb).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(port_a, "to-a", mac_a).with_address(Ipv4Net::new(GW_A, 24)),
            ),
            TableChange::SetInterface(
                Interface::new(port_b, "to-b", mac_b).with_address(Ipv4Net::new(GW_B, 24)),
            ),
        ])
        .unwrap();
    let worker = Worker::start(engine);
    // The engine learns the hosts by ARP: the first packet to each may go into a request.
    let ping = |from: &Netns, to: Ipv4Addr| {
        from.exec(&["ping", "-c", "4", "-i", "0.2", "-W", "2", &to.to_string()])
            .unwrap()
    };
    let out = ping(&hosts.a, B_IP);
    assert!(
        out.status.success(),
        "a pings b through the engine: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(ping(&hosts.b, A_IP).status.success(), "b pings a");

    const TOTAL: usize = 20 * 1024 * 1024;
    let listen: SocketAddr = (B_IP, 5002).into();
    let server = {
        let path = hosts.b.path();
        std::thread::spawn(move || {
            in_netns(&path, move || {
                let l = TcpListener::bind(listen).expect("listen in b");
                let (mut s, _) = l.accept().expect("accept");
                let mut got = Vec::with_capacity(TOTAL);
                s.read_to_end(&mut got).expect("read");
                got
            })
            .expect("server")
        })
    };
    let sent: Vec<u8> = (0..TOTAL)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let to_send = sent.clone();
    in_netns(&hosts.a.path(), move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect_timeout(&listen, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "connect: {e}");
                    std::thread::yield_now();
                }
            }
        };
        s.write_all(&to_send).expect("write");
    })
    .unwrap();
    let got = server.join().unwrap();
    assert_eq!(got.len(), sent.len(), "every byte arrived");
    assert!(got == sent, "the same bytes, in order");
    let engine = worker.stop().unwrap();
    assert!(engine.interface_counters(port_b).tx_packets > 10_000);
}

#[test]
fn two_hosts_forwarded_over_af_packet_ports() {
    if !needs_root() {
        return;
    }
    let hosts = TwoHosts::new("un");
    let (mac_a, mac_b) = (MacAddr::local(0x0a02_0001), MacAddr::local(0x0a03_0001));
    let (node, if_a, if_b) = hosts.veths_from_node(mac_a, mac_b);
    // The sockets are made inside the node's namespace (and stay bound to it).
    let (pa, pb) = in_netns(&node.path(), move || {
        let cfg = AfPacketConfig::default();
        (
            AfPacketPort::open(&if_a, mac_a, 1500, cfg),
            AfPacketPort::open(&if_b, mac_b, 1500, cfg),
        )
    })
    .unwrap();
    let (pa, pb) = (pa.expect("AF_PACKET on a"), pb.expect("AF_PACKET on b"));
    check_forwarding(
        &hosts,
        BufferPool::new("afp", 8192),
        [(Box::new(pa), mac_a), (Box::new(pb), mac_b)],
    );
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use super::*;
    use contiv_hw::dpdk::{DpdkPort, DpdkPortConfig, Eal, EalConfig, RuntimeDirGuard};

    fn eal() -> (&'static Eal, RuntimeDirGuard) {
        let prefix = format!("contiv-afp-{}", std::process::id());
        let eal = Eal::init(&EalConfig::no_huge(&prefix, 256)).expect("EAL");
        (eal, eal.runtime_dir_guard())
    }

    /// Opens a DPDK port with the calling thread in `ns`: vdevs that use kernel
    /// interfaces (net_af_packet, net_tap) find or make them in the caller's namespace.
    fn open_in(eal: &'static Eal, ns: &Netns, devargs: String) -> DpdkPort {
        in_netns(&ns.path(), move || {
            DpdkPort::open(eal, &DpdkPortConfig::new(&devargs))
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn two_hosts_forwarded_over_dpdk_af_packet_ports() {
        if !needs_root() {
            return;
        }
        let (eal, _cleanup) = eal();
        let hosts = TwoHosts::new("dp");
        let (mac_a, mac_b) = (MacAddr::local(0x0a02_0001), MacAddr::local(0x0a03_0001));
        let (node, if_a, if_b) = hosts.veths_from_node(mac_a, mac_b);
        let tag = &hosts.tag;
        let pa = open_in(
            eal,
            &node,
            format!(
                "net_af_packet_{tag}a,iface={if_a},blocksz=4096,framesz=2048,framecnt=512,qpairs=1"
            ),
        );
        let pb = open_in(
            eal,
            &node,
            format!(
                "net_af_packet_{tag}b,iface={if_b},blocksz=4096,framesz=2048,framecnt=512,qpairs=1"
            ),
        );
        let pool = BufferPool::from_mempool(pa.mempool().clone());
        check_forwarding(&hosts, pool, [(Box::new(pa), mac_a), (Box::new(pb), mac_b)]);
    }

    #[test]
    fn two_hosts_forwarded_over_dpdk_tap_ports() {
        if !needs_root() {
            return;
        }
        let (eal, _cleanup) = eal();
        let hosts = TwoHosts::new("dt");
        let tag = hosts.tag.clone();
        // net_tap makes the kernel interface in the namespace it is probed from: each host
        // gets its TAP directly, then an address and a route via the engine.
        let pa = open_in(eal, &hosts.a, format!("net_tap_{tag}a,iface={tag}ta"));
        let pb = open_in(eal, &hosts.b, format!("net_tap_{tag}b,iface={tag}tb"));
        for (ns, ifname, ip, gw) in [(&hosts.a, "ta", A_IP, GW_A), (&hosts.b, "tb", B_IP, GW_B)] {
            let ifname = format!("{tag}{ifname}");
            for cmd in [
                format!("ip addr add {ip}/24 dev {ifname}"),
                format!("ip link set {ifname} up"),
                "ip link set lo up".to_string(),
                format!("ip route add default via {gw}"),
            ] {
                let full: Vec<&str> = cmd.split(' ').collect();
                let out = ns.exec(&full).unwrap();
                assert!(
                    out.status.success(),
                    "{full:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let (mac_a, mac_b) = (pa.mac(), pb.mac());
        let pool = BufferPool::from_mempool(pa.mempool().clone());
        check_forwarding(&hosts, pool, [(Box::new(pa), mac_a), (Box::new(pb), mac_b)]);
    }
}
