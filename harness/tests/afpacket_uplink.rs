//! Two outside hosts forwarded through the engine whose ports are AF_PACKET sockets on
//! veth interfaces (the uplink that stays with the kernel). Checked by ping both ways and
//! a TCP transfer compared by content. Needs root.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use contiv_dataplane::{Engine, EngineConfig, Interface, Ipv4Net, TableChange, TableHandle};
use contiv_harness::lab::{veth_uplink, Netns, Worker};
use contiv_hw::netns::in_netns;
use contiv_hw::{AfPacketConfig, AfPacketPort, BufferPool, MacAddr};

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

#[test]
fn two_hosts_forwarded_over_af_packet_ports() {
    if !needs_root() {
        return;
    }
    let pid = std::process::id() % 100_000;
    let node = Netns::create(&format!("ct-un-{pid}")).unwrap();
    let a = Netns::create(&format!("ct-ua-{pid}")).unwrap();
    let b = Netns::create(&format!("ct-ub-{pid}")).unwrap();
    let (a_ip, b_ip) = (Ipv4Addr::new(10, 2, 0, 2), Ipv4Addr::new(10, 3, 0, 2));
    let (gw_a, gw_b) = (Ipv4Addr::new(10, 2, 0, 1), Ipv4Addr::new(10, 3, 0, 1));
    let (mac_a, mac_b) = (MacAddr::local(0x0a02_0001), MacAddr::local(0x0a03_0001));
    let (if_a, if_b) = (format!("ua{pid}"), format!("ub{pid}"));
    veth_uplink(
        &node,
        &a,
        &if_a,
        &format!("va{pid}"),
        mac_a,
        (a_ip, 24),
        gw_a,
    )
    .unwrap();
    veth_uplink(
        &node,
        &b,
        &if_b,
        &format!("vb{pid}"),
        mac_b,
        (b_ip, 24),
        gw_b,
    )
    .unwrap();
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
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("afp", 8192),
        &EngineConfig::default(),
    )
    .unwrap();
    let port_a = engine.add_port(Box::new(pa)).unwrap();
    let port_b = engine.add_port(Box::new(pb)).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(port_a, "uplink-a", mac_a).with_address(Ipv4Net::new(gw_a, 24)),
            ),
            TableChange::SetInterface(
                Interface::new(port_b, "uplink-b", mac_b).with_address(Ipv4Net::new(gw_b, 24)),
            ),
        ])
        .unwrap();
    let worker = Worker::start(engine);
    // The engine learns the hosts by ARP: the first packet to each may go into a request.
    let ping = |from: &Netns, to: Ipv4Addr| {
        from.exec(&["ping", "-c", "4", "-i", "0.2", "-W", "2", &to.to_string()])
            .unwrap()
    };
    let out = ping(&a, b_ip);
    assert!(
        out.status.success(),
        "a pings b through the engine: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(ping(&b, a_ip).status.success(), "b pings a");

    const TOTAL: usize = 20 * 1024 * 1024;
    let listen: SocketAddr = (b_ip, 5002).into();
    let server = {
        let path = b.path();
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
    in_netns(&a.path(), move || {
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
