//! Pods (network namespaces) on one engine through TAP ports, built by the lab module
//! that `contiv-harness netns pods` uses: ARP for the gateway, ping both ways, 100 MB over
//! TCP checked at both ends, the host interconnect, and bad input. Needs root (CI runs as
//! root).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use contiv_dataplane::{Counter, Engine, EngineConfig, TableHandle};
use contiv_harness::lab::{
    wire_host_interconnect, wire_pod, Netns, Pod, PodOptions, Worker, POD_GATEWAY,
};
use contiv_hw::netns::{in_netns, move_to_netns};
use contiv_hw::{BufferPool, MacAddr, TapPort};

fn needs_root() -> bool {
    if contiv_hw::netns::is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
        "ci/test.sh runs as root; this test needs root for network namespaces and TAP devices"
    );
    eprintln!("skipped: needs root (network namespaces and TAP devices)");
    false
}

fn names(tag: &str) -> (String, String) {
    let pid = std::process::id() % 100_000;
    (format!("ct-{tag}-{pid}"), format!("t{tag}{pid}"))
}

fn pod(
    engine: &mut Engine,
    tables: &TableHandle,
    tag: &str,
    ip: Ipv4Addr,
    opts: PodOptions,
) -> Pod {
    let (ns, tap) = names(tag);
    wire_pod(engine, tables, &ns, &tap, ip, opts).expect("pod wired")
}

fn ping(from: &Netns, to: Ipv4Addr) -> std::process::Output {
    from.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
        .expect("ping runs")
}

fn fnv(h: &mut u64, data: &[u8]) {
    for b in data {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

#[test]
fn two_pods_on_tap_ports_ping_and_move_100_mb() {
    if !needs_root() {
        return;
    }
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("tap-test", 4096).with_large_buffers(64),
        &EngineConfig::default(),
    )
    .unwrap();
    let a = pod(
        &mut engine,
        &tables,
        "a",
        Ipv4Addr::new(10, 1, 1, 2),
        PodOptions::default(),
    );
    // B has no static gateway entry: it must ARP, and the engine must answer.
    let b = pod(
        &mut engine,
        &tables,
        "b",
        Ipv4Addr::new(10, 1, 1, 3),
        PodOptions {
            arp_for_gateway: true,
            ..Default::default()
        },
    );
    let worker = Worker::start(engine);

    let out = ping(&a.ns, b.ip);
    assert!(
        out.status.success(),
        "a pings b: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ping(&b.ns, a.ip).status.success(), "b pings a");
    assert!(
        ping(&a.ns, POD_GATEWAY).status.success(),
        "a pings its gateway (the engine)"
    );
    let neigh =
        b.ns.exec(&["ip", "neigh", "show", &POD_GATEWAY.to_string()])
            .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        neigh.contains(&b.port_mac.to_string()),
        "b learned the gateway from the engine by ARP: {neigh:?}"
    );

    // 100 MB from a to b over TCP, hashed on both sides.
    const TOTAL: usize = 100 * 1024 * 1024;
    transfer(&a, &b, 5001, TOTAL);
    let engine = worker.stop().expect("engine back");
    let to_b = engine.interface_counters(b.port);
    assert!(
        to_b.tx_bytes >= TOTAL as u64,
        "the transfer went through the engine: {to_b:?}"
    );
    // With offloads both ways, the pods' TCP crosses as super-frames, passed whole: the
    // average frame to b is larger than any MTU-sized one, and nothing was cut.
    assert!(
        to_b.tx_bytes / to_b.tx_packets > 1514,
        "super-frames passed whole: {to_b:?}"
    );
    assert_eq!(engine.counter(Counter::GsoSegments), 0);
}

/// `total` bytes from `from` to `to` over TCP on `port`, hashed at both ends; panics
/// unless every byte arrives, the same.
fn transfer(from: &Pod, to: &Pod, port: u16, total: usize) {
    let listen: SocketAddr = (to.ip, port).into();
    let server = {
        let path = to.ns.path();
        std::thread::spawn(move || {
            in_netns(&path, move || {
                let l = TcpListener::bind(listen).expect("listen");
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
            .expect("server in its namespace")
        })
    };
    let (sent, sent_hash) = in_netns(&from.ns.path(), move || {
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
        let (mut h, mut x, mut chunk) = (
            0xcbf2_9ce4_8422_2325u64,
            0x2545_f491_4f6c_dd1du64,
            vec![0u8; 65536],
        );
        let mut n = 0;
        while n < total {
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
    .expect("client in its namespace");
    let (received, received_hash) = server.join().expect("server thread");
    assert_eq!(received, sent, "every byte arrived");
    assert_eq!(received_hash, sent_hash, "and the same bytes");
}

#[test]
fn super_frames_to_a_pod_without_offloads_are_cut_by_the_engine() {
    if !needs_root() {
        return;
    }
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("gso-test", 4096).with_large_buffers(64),
        &EngineConfig::default(),
    )
    .unwrap();
    let a = pod(
        &mut engine,
        &tables,
        "ga",
        Ipv4Addr::new(10, 1, 1, 2),
        PodOptions::default(),
    );
    let c = pod(
        &mut engine,
        &tables,
        "gc",
        Ipv4Addr::new(10, 1, 1, 4),
        PodOptions {
            offloads: false,
            ..Default::default()
        },
    );
    let worker = Worker::start(engine);
    // C's kernel checks every segment's TCP checksum itself (nothing tells it otherwise):
    // a wrong one would be dropped, retransmitted, and dropped again, and the transfer
    // would not complete.
    const TOTAL: usize = 20 * 1024 * 1024;
    transfer(&a, &c, 5002, TOTAL);
    transfer(&c, &a, 5003, TOTAL / 4);
    let engine = worker.stop().expect("engine back");
    let to_c = engine.interface_counters(c.port);
    assert!(to_c.tx_bytes >= TOTAL as u64, "{to_c:?}");
    assert!(
        engine.counter(Counter::GsoSuperFrames) > 0 && engine.counter(Counter::GsoSegments) > 0,
        "a's super-frames were cut"
    );
    assert_eq!(
        engine.port_stats(c.port).expect("c's port").total_drops(),
        0,
        "c's TAP took every segment as it was"
    );
}

#[test]
fn host_and_pod_reach_each_other_through_the_interconnect() {
    if !needs_root() {
        return;
    }
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("vpp1-test", 2048).with_large_buffers(16),
        &EngineConfig::default(),
    )
    .unwrap();
    let p = pod(
        &mut engine,
        &tables,
        "p",
        Ipv4Addr::new(10, 1, 1, 5),
        PodOptions::default(),
    );
    // The node's host stack, in a namespace of its own so the test leaves the machine's
    // routing alone.
    let (host_ns, tap) = names("h");
    let host = Netns::create(&host_ns).expect("host namespace");
    wire_host_interconnect(
        &mut engine,
        &tables,
        &host,
        &tap,
        Ipv4Addr::new(172, 30, 1, 0),
        (Ipv4Addr::new(10, 1, 1, 0), 24),
    )
    .expect("interconnect");
    let worker = Worker::start(engine);
    let out = ping(&host, p.ip);
    assert!(
        out.status.success(),
        "the host pings the pod: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        ping(&p.ns, Ipv4Addr::new(172, 30, 1, 2)).status.success(),
        "the pod pings the host"
    );
    drop(worker);
}

#[test]
fn bad_names_and_missing_namespaces_are_clear_errors_that_leave_nothing_behind() {
    let long = TapPort::create("a-name-far-too-long", MacAddr::local(1), 1500)
        .err()
        .expect("refused");
    assert_eq!(
        long.to_string(),
        "TAP name \"a-name-far-too-long\" is longer than 15 bytes (IFNAMSIZ)"
    );
    assert!(matches!(
        TapPort::create("bad/name", MacAddr::local(1), 1500),
        Err(contiv_hw::TapError::BadName(_))
    ));
    if !needs_root() {
        return;
    }
    let (_, name) = names("z");
    let tap = TapPort::create(&name, MacAddr::local(1), 1500).expect("TAP");
    let err = move_to_netns(
        &name,
        std::path::Path::new("/var/run/netns/contiv-no-such-ns"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/var/run/netns/contiv-no-such-ns"),
        "the error names the namespace: {err}"
    );
    drop(tap);
    let still = Command::new("ip")
        .args(["link", "show", &name])
        .output()
        .unwrap();
    assert!(!still.status.success(), "the TAP went with its descriptor");
    // A failed pod wiring leaves no namespace behind.
    let tables = TableHandle::new();
    let mut engine = Engine::new(
        &tables,
        BufferPool::new("bad", 64),
        &EngineConfig::default(),
    )
    .unwrap();
    let (ns, _) = names("y");
    assert!(wire_pod(
        &mut engine,
        &tables,
        &ns,
        "far-too-long-tap-name",
        Ipv4Addr::new(10, 1, 1, 9),
        PodOptions::default()
    )
    .is_err());
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&ns),
        "no namespace left half-made"
    );
}
