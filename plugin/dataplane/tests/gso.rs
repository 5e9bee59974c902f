//! Offloaded frames (TCP super-frames, partial checksums, as a TAP with offloads hands
//! them over) through the engine: whole to a port that takes them, cut and checksummed
//! in software for any other. Frames are built and checked with etherparse.

use std::net::Ipv4Addr;

use contiv_dataplane::{
    Adjacency, Counter, Engine, Interface, Ipv4Net, TableChange, TableHandle, Tunnel, VxlanConfig,
};
use contiv_hw::{
    virtual_wire, BufferPool, MacAddr, Offload, PacketBuf, PacketVec, Port, PortStats, Timestamp,
    VirtualPort, WireConfig,
};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const A_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
const C_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc]);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 3);
const C_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 5);
const MSS: u16 = 1448;

/// A virtual port that says it takes offloaded frames (as a TAP with offloads does).
struct OffloadingPort(VirtualPort);

impl Port for OffloadingPort {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn mac(&self) -> MacAddr {
        self.0.mac()
    }
    fn mtu(&self) -> u16 {
        self.0.mtu()
    }
    fn link_up(&self) -> bool {
        self.0.link_up()
    }
    fn tx_offloads(&self) -> bool {
        true
    }
    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        now: Timestamp,
    ) -> usize {
        self.0.rx_burst(pool, out, max, now)
    }
    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, now: Timestamp) -> usize {
        self.0.tx_burst(pkts, pool, now)
    }
    fn stats(&self) -> PortStats {
        self.0.stats()
    }
}

/// Pod A (port 0) and pod B (port 1, takes offloads) on one node, an uplink (port 2) to
/// C and to a VXLAN peer.
struct Node {
    engine: Engine,
    pool: BufferPool,
    a: VirtualPort,
    b: VirtualPort,
    c: VirtualPort,
}

fn node() -> Node {
    let pool = BufferPool::new("gso", 4096).with_large_buffers(8);
    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, pool.handle(), &Default::default()).unwrap();
    // The wires carry whole super-frames; the engine's interfaces keep a 1500 MTU.
    let big = WireConfig {
        capacity: 1024,
        mtu: 65_000,
    };
    let (pa, a, _) = virtual_wire(("pa", MacAddr::local(1)), ("a", A_MAC), &big);
    let (pb, b, _) = virtual_wire(("pb", MacAddr::local(2)), ("b", B_MAC), &big);
    let (up, c, _) = virtual_wire(("up", MacAddr::local(3)), ("c", C_MAC), &big);
    assert_eq!(engine.add_port(Box::new(pa)).unwrap(), 0);
    assert_eq!(engine.add_port(Box::new(OffloadingPort(pb))).unwrap(), 1);
    assert_eq!(engine.add_port(Box::new(up)).unwrap(), 2);
    let net = |s: &str| -> Ipv4Net { s.parse().unwrap() };
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(0, "pa", MacAddr::local(1)).with_address(net("10.1.1.1/32")),
            ),
            TableChange::SetInterface(
                Interface::new(1, "pb", MacAddr::local(2)).with_address(net("10.1.1.1/32")),
            ),
            TableChange::SetInterface(
                Interface::new(2, "up", MacAddr::local(3)).with_address(net("192.168.0.1/24")),
            ),
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("10.1.1.2/32"),
                target: Adjacency::Via {
                    port: 0,
                    next_hop: A_IP,
                },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("10.1.1.3/32"),
                target: Adjacency::Via {
                    port: 1,
                    next_hop: B_IP,
                },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("192.168.0.0/24"),
                target: Adjacency::Connected { port: 2 },
            },
            TableChange::SetNeighbour {
                port: 0,
                ip: A_IP,
                mac: A_MAC,
            },
            TableChange::SetNeighbour {
                port: 1,
                ip: B_IP,
                mac: B_MAC,
            },
            TableChange::SetNeighbour {
                port: 2,
                ip: C_IP,
                mac: C_MAC,
            },
            TableChange::SetVxlan(Some(VxlanConfig {
                local: Ipv4Addr::new(192, 168, 0, 1),
                vni: 10,
                mac: MacAddr::local(9),
                mtu: 1450,
            })),
            TableChange::SetTunnel {
                index: 0,
                tunnel: Tunnel {
                    remote: C_IP,
                    remote_mac: MacAddr::local(10),
                },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("10.1.2.0/24"),
                target: Adjacency::Tunnel { tunnel: 0 },
            },
        ])
        .unwrap();
    Node {
        engine,
        pool,
        a,
        b,
        c,
    }
}

/// A TCP frame from A to `dst` with `payload`, its checksum left partial (the
/// pseudo-header sum only, as the kernel leaves it), in a large buffer when it needs one.
fn tcp_from_a(
    pool: &mut BufferPool,
    dst: Ipv4Addr,
    payload: &[u8],
    flags_fin_psh: bool,
) -> PacketBuf {
    let mut b = PacketBuilder::ethernet2(A_MAC.0, MacAddr::local(1).0)
        .ipv4(A_IP.octets(), dst.octets(), 64)
        .tcp(40_000, 5201, 1_000_000, 64_000)
        .ack(77);
    if flags_fin_psh {
        b = b.psh().fin();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    // Replace the full checksum with the partial one.
    let tcp_len = (v.len() - 34) as u32;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&A_IP.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
    let sum = contiv_hw::offload::ones_complement_sum(&pseudo, 0);
    v[34 + 16..34 + 18].copy_from_slice(&sum.to_be_bytes());
    let mut p = if v.len() > contiv_hw::BUF_DATA_ROOM {
        pool.alloc_large().expect("a large buffer")
    } else {
        pool.alloc().expect("a buffer")
    };
    assert!(p.fill(&v));
    p
}

fn send(n: &mut Node, mut pkts: PacketVec) {
    let count = pkts.len();
    assert_eq!(n.a.tx_burst(&mut pkts, &mut n.pool, Timestamp(1)), count);
    while n.engine.poll(Timestamp(1)) > 0 {}
}

/// Frames received on `port`, with their offloads.
fn drain(port: &mut VirtualPort, pool: &mut BufferPool) -> Vec<(Vec<u8>, Offload)> {
    let mut out = Vec::new();
    while port.rx_burst(pool, &mut out, 256, Timestamp(1)) > 0 {}
    let frames = out
        .iter()
        .map(|p| (p.data().to_vec(), p.offload()))
        .collect();
    pool.free_all(&mut out);
    frames
}

/// (seq, flags, payload) of a TCP/IPv4 frame whose IP and TCP checksums are complete.
fn checked_tcp(frame: &[u8]) -> (u32, bool, bool, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).expect("valid frame");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("ipv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.calc_header_checksum(), h.header_checksum, "ip checksum");
    assert_eq!(usize::from(h.total_len), frame.len() - 14, "ip length");
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        panic!("tcp")
    };
    let want = tcp
        .to_header()
        .calc_checksum_ipv4(&h, tcp.payload())
        .unwrap();
    assert_eq!(tcp.checksum(), want, "tcp checksum");
    (
        tcp.sequence_number(),
        tcp.fin(),
        tcp.psh(),
        tcp.payload().to_vec(),
    )
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn super_frame_to_a_port_without_offloads_is_cut_into_checksummed_segments() {
    let mut n = node();
    let data = payload(20_000);
    let mut p = tcp_from_a(&mut n.pool, C_IP, &data, true);
    p.set_offload(Offload::tcp_segments(MSS, false));
    send(&mut n, vec![p]);
    let got = drain(&mut n.c, &mut n.pool);
    let count = data.len().div_ceil(usize::from(MSS));
    assert_eq!(got.len(), count);
    let mut joined = Vec::new();
    for (i, (frame, offload)) in got.iter().enumerate() {
        assert_eq!(*offload, Offload::NONE);
        assert!(frame.len() <= 1514, "segment {i} fits the mtu");
        let (seq, fin, psh, body) = checked_tcp(frame);
        assert_eq!(seq, 1_000_000 + (i * usize::from(MSS)) as u32);
        let last = i + 1 == count;
        assert_eq!((fin, psh), (last, last), "fin and psh only on the last");
        let ttl = frame[22];
        assert_eq!(ttl, 63, "each segment routed");
        joined.extend_from_slice(&body);
    }
    assert_eq!(joined, data, "the payload, in order, nothing lost");
    assert_eq!(n.engine.counter(Counter::GsoSuperFrames), 1);
    assert_eq!(n.engine.counter(Counter::GsoSegments), count as u64);
    assert_eq!(n.pool.large_available(), 8, "the large buffer went back");
}

#[test]
fn super_frame_to_a_port_with_offloads_passes_whole() {
    let mut n = node();
    let data = payload(30_000);
    let mut p = tcp_from_a(&mut n.pool, B_IP, &data, false);
    p.set_offload(Offload::tcp_segments(MSS, true));
    let sent = p.data().to_vec();
    send(&mut n, vec![p]);
    let got = drain(&mut n.b, &mut n.pool);
    assert_eq!(got.len(), 1);
    let (frame, offload) = &got[0];
    assert_eq!(*offload, Offload::tcp_segments(MSS, true), "offload kept");
    assert_eq!(frame.len(), sent.len());
    assert_eq!(frame[22], 63, "routed: ttl decremented");
    assert_eq!(
        frame[34..],
        sent[34..],
        "tcp untouched, checksum still partial"
    );
    assert_eq!(n.engine.counter(Counter::GsoSegments), 0);
}

#[test]
fn super_frame_whose_segments_exceed_the_mtu_gets_fragmentation_needed() {
    let mut n = node();
    let mut p = tcp_from_a(&mut n.pool, B_IP, &payload(10_000), false);
    // 1600-byte segments do not fit B's 1500 MTU, and the frame has DF set.
    p.set_offload(Offload::tcp_segments(1600, false));
    p.data_mut()[20] |= 0x40;
    let csum = contiv_dataplane::headers::internet_checksum(&{
        let mut h = p.data()[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    p.data_mut()[24..26].copy_from_slice(&csum.to_be_bytes());
    send(&mut n, vec![p]);
    assert!(drain(&mut n.b, &mut n.pool).is_empty());
    let back = drain(&mut n.a, &mut n.pool);
    assert_eq!(back.len(), 1, "an icmp error to the sender");
    assert_eq!(back[0].1, Offload::NONE);
    assert_eq!(back[0].0[23], 1, "icmp");
    assert_eq!(
        (back[0].0[34], back[0].0[35]),
        (3, 4),
        "fragmentation needed"
    );
    assert_eq!(n.engine.counter(Counter::RewriteMtuExceeded), 1);
}

#[test]
fn partial_checksum_is_finished_for_a_plain_port_and_kept_for_an_offload_port() {
    let mut n = node();
    let data = payload(300);
    let mut to_c = tcp_from_a(&mut n.pool, C_IP, &data, false);
    to_c.set_offload(Offload::partial_checksum());
    let mut to_b = tcp_from_a(&mut n.pool, B_IP, &data, false);
    to_b.set_offload(Offload::partial_checksum());
    send(&mut n, vec![to_c, to_b]);
    let c = drain(&mut n.c, &mut n.pool);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, Offload::NONE);
    assert_eq!(checked_tcp(&c[0].0).3, data);
    let b = drain(&mut n.b, &mut n.pool);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1, Offload::partial_checksum());
    assert_eq!(n.engine.counter(Counter::GsoChecksumsFinished), 1);
}

#[test]
fn super_frame_into_a_vxlan_tunnel_is_cut_before_encapsulation() {
    let mut n = node();
    let data = payload(5_000);
    let mut p = tcp_from_a(&mut n.pool, REMOTE_POD, &data, false);
    // Segments sized for the overlay MTU, as the pod's own MTU would make them.
    p.set_offload(Offload::tcp_segments(1398, false));
    send(&mut n, vec![p]);
    let got = drain(&mut n.c, &mut n.pool);
    assert_eq!(got.len(), data.len().div_ceil(1398));
    let mut joined = Vec::new();
    for (frame, offload) in &got {
        assert_eq!(*offload, Offload::NONE);
        assert!(frame.len() <= 1514);
        // Outer Ethernet + IPv4 + UDP + VXLAN = 50 bytes.
        joined.extend_from_slice(&checked_tcp(&frame[50..]).3);
    }
    assert_eq!(joined, data);
    assert_eq!(
        n.engine.counter(Counter::VxlanEncapsulated),
        got.len() as u64
    );
}

#[test]
fn malformed_super_frames_are_counted_drops() {
    let mut n = node();
    // A segment size that does not fit a buffer.
    let mut p = tcp_from_a(&mut n.pool, C_IP, &payload(9_000), false);
    p.set_offload(Offload::tcp_segments(4000, false));
    // Not TCP: a UDP frame marked as a TCP super-frame.
    let b = PacketBuilder::ethernet2(A_MAC.0, MacAddr::local(1).0)
        .ipv4(A_IP.octets(), C_IP.octets(), 64)
        .udp(1, 2);
    let mut v = Vec::new();
    b.write(&mut v, &payload(100)).unwrap();
    let mut u = n.pool.alloc().unwrap();
    assert!(u.fill(&v));
    u.set_offload(Offload::tcp_segments(50, false));
    send(&mut n, vec![p, u]);
    assert!(drain(&mut n.c, &mut n.pool).is_empty());
    assert_eq!(n.engine.counter(Counter::GsoMalformed), 2);
}

#[test]
fn running_out_of_buffers_mid_frame_is_counted() {
    // A pool with room for only a few segments.
    let mut pool = BufferPool::new("tiny", 16).with_large_buffers(1);
    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, pool.handle(), &Default::default()).unwrap();
    let big = WireConfig {
        capacity: 64,
        mtu: 65_000,
    };
    let (pa, mut a, _) = virtual_wire(("pa", MacAddr::local(1)), ("a", A_MAC), &big);
    let (up, mut c, _) = virtual_wire(("up", MacAddr::local(3)), ("c", C_MAC), &big);
    engine.add_port(Box::new(pa)).unwrap();
    engine.add_port(Box::new(up)).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(Interface::new(0, "pa", MacAddr::local(1))),
            TableChange::SetInterface(
                Interface::new(1, "up", MacAddr::local(3))
                    .with_address("192.168.0.1/24".parse().unwrap()),
            ),
            TableChange::AddRoute {
                vrf: 0,
                prefix: "192.168.0.0/24".parse().unwrap(),
                target: Adjacency::Connected { port: 1 },
            },
            TableChange::SetNeighbour {
                port: 1,
                ip: C_IP,
                mac: C_MAC,
            },
        ])
        .unwrap();
    let mut p = tcp_from_a(&mut pool, C_IP, &payload(60_000), false);
    p.set_offload(Offload::tcp_segments(MSS, false));
    let mut v = vec![p];
    assert_eq!(a.tx_burst(&mut v, &mut pool, Timestamp(1)), 1);
    while engine.poll(Timestamp(1)) > 0 {}
    let got = drain(&mut c, &mut pool);
    let made = engine.counter(Counter::GsoSegments);
    let lost = engine.counter(Counter::GsoNoBuffer);
    assert!(made > 0 && lost > 0, "made {made}, lost {lost}");
    assert_eq!(made + lost, 60_000u64.div_ceil(u64::from(MSS)));
    assert_eq!(got.len() as u64, made);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Any TCP frame, mangled, with any offload: never a panic; every packet is accounted
    /// for (a super-frame cut into segments counts as its segments); every buffer, small
    /// and large, comes back.
    #[test]
    fn any_offloaded_frame_is_forwarded_cut_or_dropped_with_a_reason(
        len in 0usize..9000,
        to in 0usize..4,
        gso_size in proptest::prelude::any::<u16>(),
        flags in 0u8..8,
        edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 0..4),
    ) {
        let mut n = node();
        let dst = [B_IP, C_IP, REMOTE_POD, Ipv4Addr::new(10, 1, 1, 1)][to];
        let mut p = tcp_from_a(&mut n.pool, dst, &payload(len), false);
        for (i, b) in edits {
            let at = i.index(p.len());
            p.data_mut()[at] = b;
        }
        p.set_offload(Offload { gso_size, flags });
        send(&mut n, vec![p]);
        let e = &n.engine;
        let made = e.counter(Counter::GsoSegments) + e.counter(Counter::GsoNoBuffer);
        proptest::prop_assert_eq!(
            e.packets_received() + made - e.counter(Counter::GsoSuperFrames),
            e.packets_transmitted() + e.counters().total_drops(),
            "{}", e.show_errors()
        );
        drain(&mut n.a, &mut n.pool);
        drain(&mut n.b, &mut n.pool);
        drain(&mut n.c, &mut n.pool);
        drop(n.engine);
        proptest::prop_assert_eq!(n.pool.available(), n.pool.capacity());
        proptest::prop_assert_eq!(n.pool.large_available(), 8);
    }
}
