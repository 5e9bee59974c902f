//! Two pods (network namespaces) on one engine through TAP ports: ARP for the gateway,
//! ping both ways, and 100 MB over TCP checked at both ends. Needs root (CI runs as root).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contiv_dataplane::{
    Adjacency, Engine, EngineConfig, Interface, Ipv4Net, TableChange, TableHandle,
};
use contiv_hw::netns::{configure_pod_interface, in_netns, move_to_netns, PodInterface};
use contiv_hw::{BufferPool, MacAddr, Port, TapPort, Timestamp};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A network namespace made for the test, deleted when dropped (also on failure).
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.0))
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

struct Pod {
    ns: Netns,
    ip: Ipv4Addr,
}

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

/// A pod: namespace, TAP moved into it and configured, and the engine's tables for it.
fn wire_pod(
    engine: &mut Engine,
    tables: &TableHandle,
    tag: &str,
    ip: Ipv4Addr,
    static_gateway: bool,
) -> Pod {
    let pid = std::process::id() % 100_000;
    let ns = Netns::new(format!("ct-{tag}-{pid}"));
    let port_mac = MacAddr::local(u32::from(ip));
    let tap = TapPort::create(&format!("t{tag}{pid}"), port_mac, 1500).expect("TAP created");
    let pod_mac = tap.device_mac().expect("pod MAC");
    let tap_name = tap.name().to_string();
    move_to_netns(&tap_name, &ns.path()).expect("TAP moved into the pod");
    configure_pod_interface(
        &ns.path(),
        &PodInterface {
            name: tap_name.clone(),
            address: ip,
            gateway: GATEWAY,
            gateway_mac: static_gateway.then_some(port_mac),
            mtu: 1500,
        },
    )
    .expect("pod interface configured");
    let port = engine.add_port(Box::new(tap)).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(port, &tap_name, port_mac).with_address(Ipv4Net::new(GATEWAY, 32)),
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
        ])
        .expect("tables");
    Pod { ns, ip }
}

fn fnv(h: &mut u64, data: &[u8]) {
    for b in data {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

#[test]
fn two_pods_on_tap_ports_ping_and_move_100_mb() {
    if !is_root() {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "ci/test.sh runs as root; this test needs root for network namespaces and TAP devices"
        );
        eprintln!("skipped: needs root (network namespaces and TAP devices)");
        return;
    }
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("tap-test", 4096),
        &EngineConfig::default(),
    )
    .unwrap();
    let a = wire_pod(&mut engine, &tables, "a", Ipv4Addr::new(10, 1, 1, 2), true);
    let b = wire_pod(&mut engine, &tables, "b", Ipv4Addr::new(10, 1, 1, 3), false);
    let b_port_mac = MacAddr::local(u32::from(b.ip)).to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if engine.poll(Timestamp(start.elapsed().as_nanos() as u64)) == 0 {
                    std::thread::yield_now();
                }
            }
            engine
        })
    };
    // Whatever happens below, the worker stops (the namespaces go when `a`/`b` drop).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let guard = StopOnDrop(stop.clone());

    let ping = |from: &Pod, to: Ipv4Addr| {
        from.ns
            .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
    };
    let out = ping(&a, b.ip);
    assert!(
        out.status.success(),
        "a pings b: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ping(&b, a.ip);
    assert!(
        out.status.success(),
        "b pings a: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = ping(&a, GATEWAY);
    assert!(out.status.success(), "a pings its gateway (the engine)");
    // B had no static entry: its gateway's MAC came from the engine's ARP reply.
    let neigh = String::from_utf8_lossy(
        &b.ns
            .exec(&["ip", "neigh", "show", &GATEWAY.to_string()])
            .stdout,
    )
    .to_string();
    assert!(
        neigh.contains(&b_port_mac),
        "b learned the gateway from the engine by ARP: {neigh:?}"
    );

    // 100 MB from a to b over TCP, hashed on both sides.
    const TOTAL: usize = 100 * 1024 * 1024;
    let listen: SocketAddr = (b.ip, 5001).into();
    let server = {
        let path = b.ns.path();
        std::thread::spawn(move || {
            in_netns(&path, move || {
                let l = TcpListener::bind(listen).expect("listen in b");
                let (mut s, _) = l.accept().expect("accept");
                let (mut h, mut n, mut buf) = (0xcbf2_9ce4_8422_2325u64, 0usize, vec![0u8; 65536]);
                loop {
                    let r = s.read(&mut buf).expect("read");
                    if r == 0 {
                        break;
                    }
                    fnv(&mut h, &buf[..r]);
                    n += r;
                }
                (n, h)
            })
            .expect("server in b")
        })
    };
    let (sent, sent_hash) = in_netns(&a.ns.path(), move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect_timeout(&listen, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "connect to b: {e}");
                    std::thread::yield_now();
                }
            }
        };
        let (mut h, mut x, mut chunk) = (
            0xcbf2_9ce4_8422_2325u64,
            0x2545_f491_4f6c_dd1du64,
            vec![0u8; 65536],
        );
        let mut n = 0;
        while n < TOTAL {
            for c in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            s.write_all(&chunk).expect("write");
            fnv(&mut h, &chunk);
            n += chunk.len();
        }
        (n, h)
    })
    .expect("client in a");
    let (received, received_hash) = server.join().expect("server thread");
    assert_eq!(received, sent, "every byte arrived");
    assert_eq!(received_hash, sent_hash, "and the same bytes");
    drop(guard);
    let engine = worker.join().unwrap();
    assert!(
        engine.interface_counters(1).tx_packets > 50_000,
        "the transfer went through the engine"
    );
}
