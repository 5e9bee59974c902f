//! nat44-out and nat44-in through the engine. Port 0 faces the inside (pod A,
//! 10.0.1.2); port 1 is the uplink with the node address 10.0.2.1, where B (10.0.2.2)
//! stands for a host outside the cluster. Frames are built and checked with etherparse,
//! including every checksum after translation.

mod common;

use std::net::Ipv4Addr;

use common::*;
use contiv_dataplane::{Counter, EngineConfig, NatConfig, NatTimeouts, SnatConfig, TableChange};
use contiv_hw::{MacAddr, Timestamp};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice};
use proptest::prelude::*;

/// Another inside host on port 0's subnet.
const A2_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
const A2_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc]);

fn snat_config() -> SnatConfig {
    SnatConfig {
        uplink: 1,
        external: R1_IP,
        inside: vec![net("10.0.1.0/24")],
        // B's /32 stands for another node: never translated towards.
        exempt: vec![net("10.0.2.9/32")],
    }
}

fn nat_router(nat: NatConfig) -> Router {
    let r = Router::with_config(
        false,
        &EngineConfig {
            nat,
            ..Default::default()
        },
    );
    r.tables
        .commit(&[
            TableChange::SetNeighbour {
                port: 0,
                ip: A2_IP,
                mac: A2_MAC,
            },
            TableChange::SetNeighbour {
                port: 1,
                ip: Ipv4Addr::new(10, 0, 2, 9),
                mac: B_MAC,
            },
            TableChange::SetSnat(Some(snat_config())),
        ])
        .unwrap();
    r
}

fn udp_ports(
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let dst_mac = if src_mac == B_MAC { R1_MAC } else { R0_MAC };
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

const SYN: u8 = 1;
const ACK: u8 = 2;
const RST: u8 = 4;

/// A TCP segment with the `SYN`, `ACK` and `RST` bits of `flags`.
fn tcp(
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (sport, dport): (u16, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let (syn, ack) = (flags & SYN != 0, flags & ACK != 0);
    let dst_mac = if src_mac == B_MAC { R1_MAC } else { R0_MAC };
    let mut b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 65535);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn echo(src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, id: u16, reply: bool) -> Vec<u8> {
    let dst_mac = if src_mac == B_MAC { R1_MAC } else { R0_MAC };
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(src.octets(), dst.octets(), 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"nat ping").unwrap();
    v
}

/// Source, destination, their ports (ICMP: the echo identifier as both), and whether
/// every checksum in the frame is right.
fn inspect(frame: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16), bool) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not ipv4")
    };
    let h = ip.header().to_header();
    let ip_ok = h.calc_header_checksum() == h.header_checksum;
    let (src, dst) = (h.source.into(), h.destination.into());
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let ok = u.checksum() == 0
                || u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum();
            (
                (src, u.source_port()),
                (dst, u.destination_port()),
                ip_ok && ok,
            )
        }
        Some(TransportSlice::Tcp(t)) => {
            let th: TcpHeader = t.to_header();
            let ok = th.calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum();
            (
                (src, t.source_port()),
                (dst, t.destination_port()),
                ip_ok && ok,
            )
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let id = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
            let ok = etherparse::Icmpv4Header::from_slice(i.slice())
                .map(|(hd, _)| hd.icmp_type.calc_checksum(i.payload()) == hd.checksum)
                .unwrap();
            ((src, id), (dst, id), ip_ok && ok)
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

#[test]
fn udp_is_translated_out_and_back_with_valid_checksums() {
    let mut r = nat_router(NatConfig::default());
    let (_, at_b) = r.send_from_a(&[udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"query")]);
    assert_eq!(at_b.len(), 1);
    let (src, dst, ok) = inspect(&at_b[0]);
    assert!(ok, "checksums after translation");
    // The source keeps its port where it is free.
    assert_eq!(src, (R1_IP, 4000));
    assert_eq!(dst, (B_IP, 53));
    assert_eq!(r.engine.counter(Counter::NatSessionsCreated), 1);

    let (at_a, _) = r.send_from_b(&[udp_ports(B_MAC, B_IP, R1_IP, 53, 4000, b"answer")]);
    assert_eq!(at_a.len(), 1);
    let (src, dst, ok) = inspect(&at_a[0]);
    assert!(ok);
    assert_eq!((src, dst), ((B_IP, 53), (A_IP, 4000)));
    assert_eq!(r.engine.counter(Counter::NatInTranslated), 1);
    let sessions = r.engine.nat_sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].inside, (A_IP, 4000));
    assert_eq!(sessions[0].external, (R1_IP, 4000));
    assert_eq!(sessions[0].remote, (B_IP, 53));
}

#[test]
fn two_inside_hosts_with_one_source_port_get_distinct_external_ports() {
    let mut r = nat_router(NatConfig::default());
    let (_, at_b) = r.send_from_a(&[
        udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"1"),
        udp_ports(A2_MAC, A2_IP, B_IP, 4000, 53, b"2"),
    ]);
    assert_eq!(at_b.len(), 2);
    let p0 = inspect(&at_b[0]).0;
    let p1 = inspect(&at_b[1]).0;
    assert_eq!(p0.0, R1_IP);
    assert_eq!(p1.0, R1_IP);
    assert_ne!(p0.1, p1.1);
    // Each reply finds its own host.
    let (at_a, _) = r.send_from_b(&[
        udp_ports(B_MAC, B_IP, R1_IP, 53, p1.1, b"to a2"),
        udp_ports(B_MAC, B_IP, R1_IP, 53, p0.1, b"to a"),
    ]);
    let dsts: Vec<_> = at_a.iter().map(|f| inspect(f).1).collect();
    assert_eq!(dsts, vec![(A2_IP, 4000), (A_IP, 4000)]);
}

#[test]
fn tcp_sessions_open_only_with_a_syn() {
    let mut r = nat_router(NatConfig::default());
    let (_, at_b) = r.send_from_a(&[tcp(A_MAC, A_IP, B_IP, (40000, 80), SYN, b"")]);
    let (src, _, ok) = inspect(&at_b[0]);
    assert!(ok);
    assert_eq!(src, (R1_IP, 40000));
    let (at_a, _) = r.send_from_b(&[tcp(B_MAC, B_IP, R1_IP, (80, 40000), SYN | ACK, b"")]);
    let (_, dst, ok) = inspect(&at_a[0]);
    assert!(ok);
    assert_eq!(dst, (A_IP, 40000));
    let (_, at_b) = r.send_from_a(&[tcp(
        A_MAC,
        A_IP,
        B_IP,
        (40000, 80),
        ACK,
        b"GET / HTTP/1.0\r\n\r\n",
    )]);
    let (src, _, ok) = inspect(&at_b[0]);
    assert!(ok, "data segment checksum");
    assert_eq!(src, (R1_IP, 40000));

    // A segment of a connection the outside opened to A (A answers it): not a SYN, no
    // session, so it leaves with A's own address.
    let (_, at_b) = r.send_from_a(&[tcp(A_MAC, A_IP, B_IP, (8080, 50000), SYN | ACK, b"")]);
    assert_eq!(inspect(&at_b[0]).0, (A_IP, 8080));
    assert_eq!(r.engine.counter(Counter::NatPassedUntranslated), 1);
    assert_eq!(r.engine.counter(Counter::NatSessionsCreated), 1);
}

#[test]
fn tcp_state_sets_the_idle_timeout() {
    // Transitory 2 s, established 100 s.
    let mut r = nat_router(NatConfig {
        max_sessions: 16,
        timeouts: NatTimeouts {
            tcp_transitory: 2_000_000_000,
            tcp_established: 100_000_000_000,
            ..Default::default()
        },
    });
    let at = |r: &mut Router, ms: u64| r.now = Timestamp::from_millis(ms);
    // A SYN nobody answers lives as long as the transitory timeout.
    r.send_from_a(&[tcp(A_MAC, A_IP, B_IP, (40001, 80), SYN, b"")]);
    at(&mut r, 3_000);
    r.send_from_a(&[udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"sweep")]);
    assert_eq!(r.engine.counter(Counter::NatSessionsExpired), 1);

    // Answered, it is established and outlives the transitory timeout.
    r.send_from_a(&[tcp(A_MAC, A_IP, B_IP, (40002, 80), SYN, b"")]);
    r.send_from_b(&[tcp(B_MAC, B_IP, R1_IP, (80, 40002), SYN | ACK, b"")]);
    at(&mut r, 10_000);
    let (at_a, _) = r.send_from_b(&[tcp(B_MAC, B_IP, R1_IP, (80, 40002), ACK, b"data")]);
    assert_eq!(
        at_a.len(),
        1,
        "established session still there after 7 s idle"
    );
    // A reset makes it transitory again: gone 2 s later.
    r.send_from_a(&[tcp(A_MAC, A_IP, B_IP, (40002, 80), RST | ACK, b"")]);
    at(&mut r, 12_500);
    let (at_a, _) = r.send_from_b(&[tcp(B_MAC, B_IP, R1_IP, (80, 40002), ACK, b"late")]);
    assert!(at_a.is_empty(), "reset session expired");
    assert!(r.engine.counter(Counter::NatSessionsExpired) >= 2);
}

#[test]
fn icmp_echo_identifiers_are_translated() {
    let mut r = nat_router(NatConfig::default());
    let (_, at_b) = r.send_from_a(&[echo(A_MAC, A_IP, B_IP, 7, false)]);
    let (src, _, ok) = inspect(&at_b[0]);
    assert!(ok);
    assert_eq!(src.0, R1_IP);
    // Identifiers below 1024 are never handed out.
    assert!(src.1 >= 1024);
    let (at_a, _) = r.send_from_b(&[echo(B_MAC, B_IP, R1_IP, src.1, true)]);
    assert_eq!(at_a.len(), 1);
    let (_, dst, ok) = inspect(&at_a[0]);
    assert!(ok);
    assert_eq!(dst, (A_IP, 7));
    // A ping to the node's own address still gets the node's answer.
    let (at_b2, _) = {
        let (_, b) = r.send_from_b(&[echo(B_MAC, B_IP, R1_IP, 99, false)]);
        (b, ())
    };
    assert_eq!(at_b2.len(), 1);
    assert_eq!(inspect(&at_b2[0]).0, (R1_IP, 99));
    assert_eq!(r.engine.counter(Counter::LocalEchoReplies), 1);
}

#[test]
fn cluster_destinations_and_outside_sources_are_not_translated() {
    let mut r = nat_router(NatConfig::default());
    let exempt = Ipv4Addr::new(10, 0, 2, 9);
    let (_, at_b) = r.send_from_a(&[udp_ports(A_MAC, A_IP, exempt, 4000, 53, b"x")]);
    assert_eq!(inspect(&at_b[0]).0, (A_IP, 4000));
    // B routes to A directly: not translated either way.
    let (at_a, _) = r.send_from_b(&[udp_ports(B_MAC, B_IP, A_IP, 53, 4000, b"y")]);
    assert_eq!(inspect(&at_a[0]).1, (A_IP, 4000));
    assert_eq!(r.engine.counter(Counter::NatSessionsCreated), 0);
    // An unsolicited datagram to the node address is the node's: port unreachable.
    let (_, at_b) = r.send_from_b(&[udp_ports(B_MAC, B_IP, R1_IP, 53, 4000, b"z")]);
    assert_eq!(at_b.len(), 1);
    assert_eq!(r.engine.counter(Counter::LocalUdpNoListener), 1);
}

#[test]
fn idle_sessions_expire_and_their_ports_are_reused() {
    let timeouts = NatTimeouts {
        udp: 5_000_000_000,
        ..Default::default()
    };
    let mut r = nat_router(NatConfig {
        max_sessions: 16,
        timeouts,
    });
    r.send_from_a(&[udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"q")]);
    assert_eq!(r.engine.nat_sessions().len(), 1);
    // Still alive just inside the timeout.
    r.now = Timestamp::from_millis(1 + 4_000);
    let (at_a, _) = r.send_from_b(&[udp_ports(B_MAC, B_IP, R1_IP, 53, 4000, b"a")]);
    assert_eq!(at_a.len(), 1);
    // Idle past the timeout: the reply is no longer translated, the session goes.
    r.now = Timestamp::from_millis(1 + 4_000 + 5_001);
    let (at_a, at_b) = r.send_from_b(&[udp_ports(B_MAC, B_IP, R1_IP, 53, 4000, b"late")]);
    assert!(at_a.is_empty());
    assert_eq!(at_b.len(), 1, "port unreachable from the node");
    assert_eq!(r.engine.counter(Counter::NatSessionsExpired), 1);
    assert!(r.engine.nat_sessions().is_empty());
    // The sweep also finds idle sessions nobody asks about.
    r.send_from_a(&[udp_ports(A_MAC, A_IP, B_IP, 4001, 53, b"q")]);
    r.now = Timestamp::from_millis(1 + 4_000 + 5_001 + 6_000);
    r.send_from_a(&[udp_ports(A2_MAC, A2_IP, B_IP, 4001, 53, b"q")]);
    assert_eq!(r.engine.counter(Counter::NatSessionsExpired), 2);
    // A2 got port 4001, which A's expired session gave back.
    let s = r.engine.nat_sessions();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].inside, s[0].external), ((A2_IP, 4001), (R1_IP, 4001)));
}

#[test]
fn a_full_table_drops_new_flows_with_a_reason_and_keeps_the_old() {
    let mut r = nat_router(NatConfig {
        max_sessions: 2,
        ..Default::default()
    });
    let (_, at_b) = r.send_from_a(&[
        udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"1"),
        udp_ports(A_MAC, A_IP, B_IP, 4001, 53, b"2"),
        udp_ports(A_MAC, A_IP, B_IP, 4002, 53, b"3"),
    ]);
    assert_eq!(at_b.len(), 2);
    assert_eq!(r.engine.counter(Counter::NatTableFull), 1);
    let (at_a, _) = r.send_from_b(&[udp_ports(B_MAC, B_IP, R1_IP, 53, 4001, b"r")]);
    assert_eq!(at_a.len(), 1);
}

#[test]
fn untranslatable_packets_are_counted_drops() {
    let mut r = nat_router(NatConfig::default());
    // A fragment (MF set), a GRE packet, a truncated TCP header.
    let mut frag = udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"fragment");
    frag[14 + 6] = 0x20;
    let mut gre = udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"gre");
    gre[14 + 9] = 47;
    let mut short = tcp(A_MAC, A_IP, B_IP, (1, 2), SYN, b"");
    short.truncate(14 + 20 + 10);
    short[14 + 3] = 30;
    for f in [&mut frag, &mut gre, &mut short] {
        f[14 + 10..14 + 12].fill(0);
        let c = contiv_dataplane::headers::internet_checksum(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let (_, at_b) = r.send_from_a(&[frag, gre, short]);
    assert!(at_b.is_empty());
    assert_eq!(r.engine.counter(Counter::NatFragment), 1);
    assert_eq!(r.engine.counter(Counter::NatUnsupportedProtocol), 1);
    assert_eq!(r.engine.counter(Counter::NatTruncated), 1);
}

#[test]
fn without_snat_nothing_is_translated() {
    let mut r = nat_router(NatConfig::default());
    r.tables.commit(&[TableChange::SetSnat(None)]).unwrap();
    let (_, at_b) = r.send_from_a(&[udp_ports(A_MAC, A_IP, B_IP, 4000, 53, b"q")]);
    assert_eq!(inspect(&at_b[0]).0, (A_IP, 4000));
    // And SNAT on a port without an interface is refused.
    let bad = SnatConfig {
        uplink: 7,
        ..snat_config()
    };
    assert!(r.tables.commit(&[TableChange::SetSnat(Some(bad))]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any UDP or TCP flow: out and back, the inside sees exactly its own endpoints,
    /// and every checksum on both sides is right.
    #[test]
    fn round_trips_restore_the_inside_endpoints(
        sport in 1u16..,
        dport in 1u16..,
        is_tcp in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut r = nat_router(NatConfig { max_sessions: 8, ..Default::default() });
        let out = if is_tcp {
            tcp(A_MAC, A_IP, B_IP, (sport, dport), SYN, &payload)
        } else {
            udp_ports(A_MAC, A_IP, B_IP, sport, dport, &payload)
        };
        let (_, at_b) = r.send_from_a(&[out]);
        prop_assert_eq!(at_b.len(), 1);
        let (src, dst, ok) = inspect(&at_b[0]);
        prop_assert!(ok);
        prop_assert_eq!(src.0, R1_IP);
        prop_assert_eq!(dst, (B_IP, dport));
        let back = if is_tcp {
            tcp(B_MAC, B_IP, R1_IP, (dport, src.1), SYN | ACK, &payload)
        } else {
            udp_ports(B_MAC, B_IP, R1_IP, dport, src.1, &payload)
        };
        let (at_a, _) = r.send_from_b(&[back]);
        prop_assert_eq!(at_a.len(), 1);
        let (s2, d2, ok) = inspect(&at_a[0]);
        prop_assert!(ok);
        prop_assert_eq!(s2, (B_IP, dport));
        prop_assert_eq!(d2, (A_IP, sport));
    }
}
