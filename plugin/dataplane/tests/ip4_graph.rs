//! Each IPv4 node checked end to end through the engine: packets built by etherparse go in
//! on a virtual wire, what comes out is parsed back with etherparse.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use contiv_dataplane::{Adjacency, Counter, IcmpErrorConfig, TableChange};
use contiv_hw::{MacAddr, Port, Timestamp};
use etherparse::{ArpOperation, Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

fn ipv4(frame: &[u8]) -> (SlicedPacket<'_>, etherparse::Ipv4HeaderSlice<'_>) {
    let p = SlicedPacket::from_ethernet(frame).expect("a valid frame");
    assert!(matches!(p.net, Some(NetSlice::Ipv4(_))), "not ipv4");
    let h = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).expect("ipv4 header");
    (p, h)
}

fn header_checksum_valid(h: &etherparse::Ipv4HeaderSlice<'_>) -> bool {
    h.to_header().calc_header_checksum() == h.header_checksum()
}

#[test]
fn forwarded_packet_has_ttl_decremented_checksum_valid_and_macs_rewritten() {
    let mut r = Router::new(false);
    let (to_a, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"hello b")]);
    assert!(to_a.is_empty());
    assert_eq!(to_b.len(), 1);
    let (p, h) = ipv4(&to_b[0]);
    let eth = p.link.as_ref().unwrap().to_header().unwrap();
    let eth = eth.ethernet2().unwrap();
    assert_eq!(eth.destination, B_MAC.0);
    assert_eq!(eth.source, R1_MAC.0);
    assert_eq!(h.ttl(), 63);
    assert!(
        header_checksum_valid(&h),
        "header checksum valid after the ttl change"
    );
    assert_eq!(h.source_addr(), A_IP);
    assert_eq!(h.destination_addr(), B_IP);
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("udp")
    };
    assert_eq!(u.payload(), b"hello b");
    assert_eq!(r.engine.interface_counters(1).tx_packets, 1);
}

#[test]
fn ttl_one_yields_time_exceeded_to_the_sender() {
    let mut r = Router::new(false);
    let original = udp(A_MAC, R0_MAC, A_IP, B_IP, 1, b"expiring");
    let (to_a, to_b) = r.send_from_a(std::slice::from_ref(&original));
    assert!(to_b.is_empty());
    assert_eq!(to_a.len(), 1);
    let (p, h) = ipv4(&to_a[0]);
    assert_eq!(h.source_addr(), R0_IP);
    assert_eq!(h.destination_addr(), A_IP);
    assert!(header_checksum_valid(&h));
    let icmp = icmp_of(&p);
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
    assert_eq!(
        icmp.icmp_type().calc_checksum(icmp.payload()),
        icmp.checksum(),
        "icmp checksum"
    );
    // The quote: the original IP header and the first 8 bytes of its payload.
    assert_eq!(icmp.payload(), &original[14..14 + 28]);
    assert_eq!(r.engine.counter(Counter::IcmpTimeExceededSent), 1);
    assert_eq!(r.engine.counter(Counter::RewriteTtlExpired), 1);
}

#[test]
fn unknown_network_is_counted_and_answered_unreachable() {
    let mut r = Router::new(false);
    let (to_a, to_b) = r.send_from_a(&[udp(
        A_MAC,
        R0_MAC,
        A_IP,
        "192.0.2.9".parse().unwrap(),
        64,
        b"x",
    )]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::Ip4NoRoute), 1);
    let (p, h) = ipv4(&to_a[0]);
    assert_eq!(h.destination_addr(), A_IP);
    let icmp = icmp_of(&p);
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
    ));
}

#[test]
fn null_route_is_a_counted_drop() {
    let mut r = Router::new(false);
    r.tables
        .commit(&[TableChange::AddRoute {
            vrf: 0,
            prefix: net("198.51.100.0/24"),
            target: Adjacency::Drop,
        }])
        .unwrap();
    let (to_a, to_b) = r.send_from_a(&[udp(
        A_MAC,
        R0_MAC,
        A_IP,
        "198.51.100.1".parse().unwrap(),
        64,
        b"x",
    )]);
    assert!(to_a.is_empty() && to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::Ip4NullRoute), 1);
}

#[test]
fn arp_for_own_and_proxied_addresses_is_answered() {
    let mut r = Router::new(false);
    let own = arp(
        ArpOperation::REQUEST,
        A_MAC,
        MacAddr::BROADCAST,
        (A_MAC, A_IP),
        (MacAddr::ZERO, R0_IP),
    );
    let proxied = arp(
        ArpOperation::REQUEST,
        A_MAC,
        MacAddr::BROADCAST,
        (A_MAC, A_IP),
        (MacAddr::ZERO, "10.0.3.77".parse().unwrap()),
    );
    let foreign = arp(
        ArpOperation::REQUEST,
        A_MAC,
        MacAddr::BROADCAST,
        (A_MAC, A_IP),
        (MacAddr::ZERO, "10.0.1.99".parse().unwrap()),
    );
    let (to_a, _) = r.send_from_a(&[own, proxied, foreign]);
    assert_eq!(to_a.len(), 2, "own and proxied answered, foreign not");
    for (frame, asked) in to_a.iter().zip([R0_IP, "10.0.3.77".parse().unwrap()]) {
        let (eth, reply) = parse_arp(frame);
        assert_eq!(eth.destination, A_MAC.0);
        assert_eq!(eth.source, R0_MAC.0);
        assert_eq!(reply.operation, ArpOperation::REPLY);
        assert_eq!(reply.sender_mac, R0_MAC.0);
        assert_eq!(reply.sender_ipv4_addr(), asked);
        assert_eq!(reply.target_mac, A_MAC.0);
        assert_eq!(reply.target_ipv4_addr(), A_IP);
    }
    assert_eq!(r.engine.counter(Counter::ArpRepliesSent), 1);
    assert_eq!(r.engine.counter(Counter::ArpProxyRepliesSent), 1);
    assert_eq!(r.engine.counter(Counter::ArpNotForUs), 1);
}

#[test]
fn unresolved_next_hop_is_asked_for_then_learned_from_the_reply() {
    let mut r = Router::new(true);
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"first")]);
    assert_eq!(to_b.len(), 1);
    let (eth, req) = parse_arp(&to_b[0]);
    assert_eq!(eth.destination, MacAddr::BROADCAST.0);
    assert_eq!(req.operation, ArpOperation::REQUEST);
    assert_eq!(req.sender_ipv4_addr(), R1_IP);
    assert_eq!(req.target_ipv4_addr(), B_IP);
    // A second packet inside the retry interval is dropped, not asked again.
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"second")]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::RewriteNeighbourUnresolved), 1);
    r.send_from_b(&[arp(
        ArpOperation::REPLY,
        B_MAC,
        R1_MAC,
        (B_MAC, B_IP),
        (R1_MAC, R1_IP),
    )]);
    assert_eq!(r.engine.learned_neighbours(), vec![(1, B_IP, B_MAC)]);
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"third")]);
    let (p, _) = ipv4(&to_b[0]);
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("udp")
    };
    assert_eq!(u.payload(), b"third");
}

#[test]
fn ping_to_the_router_is_answered() {
    let mut r = Router::new(false);
    let (to_a, _) = r.send_from_a(&[echo_request(A_MAC, R0_MAC, A_IP, R0_IP, 64, 3)]);
    let (p, h) = ipv4(&to_a[0]);
    assert_eq!(h.source_addr(), R0_IP);
    assert_eq!(h.destination_addr(), A_IP);
    assert!(header_checksum_valid(&h));
    let icmp = icmp_of(&p);
    let Icmpv4Type::EchoReply(e) = icmp.icmp_type() else {
        panic!("echo reply")
    };
    assert_eq!((e.id, e.seq), (7, 3));
    assert_eq!(icmp.payload(), b"ping payload");
    assert_eq!(
        icmp.icmp_type().calc_checksum(icmp.payload()),
        icmp.checksum()
    );
}

#[test]
fn udp_to_the_router_gets_port_unreachable() {
    let mut r = Router::new(false);
    let (to_a, _) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, R0_IP, 64, b"anyone?")]);
    let (p, _) = ipv4(&to_a[0]);
    let icmp = icmp_of(&p);
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
    ));
}

/// Each drop reason counted exactly once: one frame was sent for each.
fn assert_each_counted_once(r: &Router, reasons: &[Counter]) {
    for &c in reasons {
        assert_eq!(r.engine.counter(c), 1, "{}", c.label());
    }
}

#[test]
fn malformed_headers_are_dropped_with_their_reason() {
    let mut r = Router::new(false);
    let good = udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"payload");
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut bad_total = good.clone();
    bad_total[14 + 2] = 0xff;
    let short = good[..20].to_vec();
    let mut not_for_us = good.clone();
    not_for_us[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    let mut ip6 = good.clone();
    ip6[12..14].copy_from_slice(&[0x86, 0xdd]);
    let (to_a, to_b) = r.send_from_a(&[
        bad_csum,
        bad_version,
        bad_ihl,
        bad_total,
        short,
        not_for_us,
        ip6,
        vec![1, 2, 3],
    ]);
    assert!(to_a.is_empty() && to_b.is_empty());
    assert_each_counted_once(
        &r,
        &[
            Counter::Ip4BadChecksum,
            Counter::Ip4BadVersion,
            Counter::Ip4BadHeaderLength,
            Counter::Ip4BadTotalLength,
            Counter::Ip4TooShort,
            Counter::EthNotForUs,
            Counter::EthIp6Unsupported,
            Counter::EthTooShort,
        ],
    );
    assert!(r.engine.show_errors().contains("ip4-input"));
}

/// Sets the IPv4 header checksum of a frame whose header was changed by hand.
fn with_valid_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24..26].fill(0);
    let c = contiv_dataplane::headers::internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

// ethernet-input and ip4-input decide the common case (IPv4 to us, a plain valid header)
// in one test and everything else in full: each other case must still get its own reason.
#[test]
fn every_other_frame_and_header_check_names_its_reason() {
    let mut r = Router::new(false);
    let good = udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"payload");
    let mut ttl_zero = good.clone();
    ttl_zero[14 + 8] = 0;
    let mut multicast_source = good.clone();
    multicast_source[14 + 12] = 224;
    let mut vlan = good.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    let mut unknown = good.clone();
    unknown[12..14].copy_from_slice(&[0x88, 0xb5]);
    let (to_a, to_b) = r.send_from_a(&[
        with_valid_checksum(ttl_zero),
        with_valid_checksum(multicast_source),
        vlan,
        unknown,
    ]);
    assert!(to_a.is_empty() && to_b.is_empty());
    assert_each_counted_once(
        &r,
        &[
            Counter::Ip4TtlZero,
            Counter::Ip4BadSource,
            Counter::EthVlanUnsupported,
            Counter::EthUnknownEthertype,
        ],
    );

    // Not the common case, yet valid: the broadcast MAC, and a header with options.
    let mut broadcast = good.clone();
    broadcast[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
    let mut options = good[..34].to_vec();
    options.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP END
    options.extend_from_slice(&good[34..]);
    options[14] = 0x46;
    let total = u16::from_be_bytes([options[16], options[17]]) + 4;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    let options = with_valid_checksum(options);
    let (_, to_b) = r.send_from_a(&[broadcast, options.clone()]);
    assert_eq!(to_b.len(), 2, "{}", r.engine.show_errors());
    let (p, h) = ipv4(&to_b[1]);
    assert_eq!(h.ihl(), 6);
    assert_eq!(h.options(), &[1, 1, 1, 0]);
    assert_eq!(h.ttl(), 63);
    assert!(header_checksum_valid(&h));
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("udp")
    };
    assert_eq!(u.payload(), b"payload");

    // An interface taken down drops what arrives on it.
    let mut down =
        contiv_dataplane::Interface::new(0, "r0", R0_MAC).with_address(net("10.0.1.1/24"));
    down.up = false;
    r.tables.commit(&[TableChange::SetInterface(down)]).unwrap();
    let (_, to_b) = r.send_from_a(&[good]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::EthInterfaceDown), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut r = Router::with_icmp(
        false,
        IcmpErrorConfig {
            per_second: 10,
            burst: 5,
        },
    );
    let frames: Vec<_> = (0..20)
        .map(|_| udp(A_MAC, R0_MAC, A_IP, B_IP, 1, b"x"))
        .collect();
    let (to_a, _) = r.send_from_a(&frames);
    assert_eq!(to_a.len(), 5, "the burst");
    assert_eq!(r.engine.counter(Counter::IcmpRateLimited), 15);
    // 100 ms later one more token per 100 ms has come back.
    r.now = Timestamp(r.now.nanos() + 100_000_000);
    let (to_a, _) = r.send_from_a(&frames[..3]);
    assert_eq!(to_a.len(), 1);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut r = Router::new(false);
    // A time-exceeded message with TTL 1 arriving for forwarding.
    let mut r2 = Router::new(false);
    let (err, _) = r2.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 1, b"x")]);
    let mut frame = err[0].clone();
    frame[0..6].copy_from_slice(&R0_MAC.0);
    frame[6..12].copy_from_slice(&A_MAC.0);
    frame[14 + 12..14 + 16].copy_from_slice(&A_IP.octets());
    frame[14 + 16..14 + 20].copy_from_slice(&B_IP.octets());
    frame[14 + 8] = 1;
    frame[14 + 10] = 0;
    frame[14 + 11] = 0;
    let c = contiv_dataplane::headers::internet_checksum(&frame[14..34]);
    frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let (to_a, to_b) = r.send_from_a(&[frame]);
    assert!(to_a.is_empty() && to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::IcmpSuppressed), 1);
}

#[test]
fn oversized_df_packet_gets_fragmentation_needed() {
    let mut r = Router::new(false);
    let mut i = contiv_dataplane::Interface::new(1, "r1", R1_MAC).with_address(net("10.0.2.1/24"));
    i.mtu = 576;
    r.tables.commit(&[TableChange::SetInterface(i)]).unwrap();
    let big = with_df(udp(A_MAC, R0_MAC, A_IP, B_IP, 64, &[0u8; 1000]));
    let (to_a, to_b) = r.send_from_a(&[big]);
    assert!(to_b.is_empty());
    let (p, _) = ipv4(&to_a[0]);
    let icmp = icmp_of(&p);
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 576 }
        )
    ));
}

#[test]
fn vrfs_keep_their_routes_apart() {
    let mut r = Router::new(false);
    // Move port 1 into VRF 7: A (VRF 0) no longer has a route to B's subnet.
    let i = contiv_dataplane::Interface {
        vrf: 7,
        ..contiv_dataplane::Interface::new(1, "r1", R1_MAC).with_address(net("10.0.2.1/24"))
    };
    r.tables.commit(&[TableChange::SetInterface(i)]).unwrap();
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"x")]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::Ip4NoRoute), 1);
    // A cross-VRF route in VRF 0 brings it back.
    r.tables
        .commit(&[TableChange::AddRoute {
            vrf: 0,
            prefix: net("10.0.2.0/24"),
            target: Adjacency::Connected { port: 1 },
        }])
        .unwrap();
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"x")]);
    assert_eq!(to_b.len(), 1);
}

/// Stands in for ethernet-input: puts each packet in the VRF its UDP payload's first byte
/// names, so that one vector reaches ip4-lookup spread over several VRFs (which the
/// standard graph only does when several nodes feed ip4-lookup at once).
struct VrfFromPayload;

impl contiv_dataplane::GraphNode for VrfFromPayload {
    fn name(&self) -> &'static str {
        contiv_dataplane::nodes::ETHERNET_INPUT
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[contiv_dataplane::nodes::IP4_INPUT]
    }
    fn process(
        &mut self,
        _cx: &mut contiv_dataplane::NodeCx<'_>,
        input: &mut contiv_hw::PacketVec,
        next: &mut contiv_dataplane::Next<'_>,
    ) {
        for mut pkt in input.drain(..) {
            pkt.meta.vrf = u16::from(pkt.data()[42]);
            next.enqueue(0, pkt);
        }
    }
}

#[test]
fn a_vector_spread_over_vrfs_is_looked_up_in_each() {
    let mut r = Router::with_engine(false, |tables, pool| {
        let mut nodes: Vec<Box<dyn contiv_dataplane::GraphNode>> = vec![Box::new(VrfFromPayload)];
        nodes.extend(
            contiv_dataplane::nodes::ip4_graph_nodes(IcmpErrorConfig::default())
                .into_iter()
                .filter(|n| n.name() != contiv_dataplane::nodes::ETHERNET_INPUT),
        );
        contiv_dataplane::Engine::with_nodes(tables, pool, nodes).unwrap()
    });
    // 10.9.0.0/16 goes to B in VRF 0, is a null route in VRF 7 and unknown in VRF 3,
    // which knows the way back to A.
    let dst: std::net::Ipv4Addr = "10.9.1.1".parse().unwrap();
    r.tables
        .commit(&[
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("10.9.0.0/16"),
                target: Adjacency::Via {
                    port: 1,
                    next_hop: B_IP,
                },
            },
            TableChange::AddRoute {
                vrf: 7,
                prefix: net("10.9.0.0/16"),
                target: Adjacency::Drop,
            },
            TableChange::AddRoute {
                vrf: 3,
                prefix: net("10.0.1.0/24"),
                target: Adjacency::Connected { port: 0 },
            },
        ])
        .unwrap();
    // Runs of different lengths in each VRF, in one vector.
    let vrfs = [0u8, 0, 7, 0, 7, 7, 3, 0, 0, 0, 7, 3];
    let frames: Vec<Vec<u8>> = vrfs
        .iter()
        .enumerate()
        .map(|(i, &vrf)| udp(A_MAC, R0_MAC, A_IP, dst, 64, &[vrf, i as u8]))
        .collect();
    let (to_a, to_b) = r.send_from_a(&frames);
    let forwarded: Vec<u8> = to_b.iter().map(|f| f[43]).collect();
    let expected: Vec<u8> = (0..vrfs.len() as u8)
        .filter(|&i| vrfs[usize::from(i)] == 0)
        .collect();
    assert_eq!(forwarded, expected, "VRF 0's packets, in order");
    assert_eq!(r.engine.counter(Counter::Ip4NullRoute), 4, "VRF 7's");
    assert_eq!(r.engine.counter(Counter::Ip4NoRoute), 2, "VRF 3's");
    // (the no-route packets are not drops: icmp-error turns them into the answers.)
    assert_eq!(r.engine.counters().total_drops(), 4);
    // VRF 3's two unreachables, routed back to A in VRF 3.
    assert_eq!(to_a.len(), 2);
    for f in &to_a {
        let (p, h) = ipv4(f);
        assert_eq!(h.destination_addr(), A_IP);
        assert!(matches!(
            icmp_of(&p).icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
        ));
    }
}

#[test]
fn trace_shows_the_path_of_a_packet() {
    let mut r = Router::new(false);
    r.engine.trace_add(1);
    r.send_from_a(&[
        udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"traced"),
        udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"not traced"),
    ]);
    let traced = r.engine.traced();
    assert_eq!(traced.len(), 1);
    let nodes: Vec<_> = traced[0].records.iter().map(|r| r.node).collect();
    assert_eq!(
        nodes,
        [
            "ethernet-input",
            "ip4-input",
            "ip4-lookup",
            "ip4-rewrite",
            "interface-output"
        ]
    );
    let text = r.engine.show_trace();
    assert!(text.contains("10.0.1.2 -> 10.0.2.2"), "{text}");
}

#[test]
fn table_changes_apply_to_the_next_vector() {
    let mut r = Router::new(false);
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"x")]);
    assert_eq!(to_b.len(), 1);
    r.tables
        .commit(&[TableChange::AddRoute {
            vrf: 0,
            prefix: net("10.0.2.2/32"),
            target: Adjacency::Drop,
        }])
        .unwrap();
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"x")]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::Ip4NullRoute), 1);
}

#[test]
fn worker_thread_forwards_while_the_control_plane_commits() {
    let mut r = Router::new(false);
    let stop = Arc::new(AtomicBool::new(false));
    let mut engine = r.engine;
    let tables = r.tables.clone();
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut t = 0u64;
            engine.run(&stop, &mut || {
                t += 1_000;
                Timestamp(t)
            });
            engine
        })
    };
    // Keep committing unrelated routes while traffic flows.
    let committer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let prefix = contiv_dataplane::Ipv4Net::new(
                    std::net::Ipv4Addr::from(0xc000_0000 | (i << 8)),
                    24,
                );
                tables
                    .commit(&[TableChange::AddRoute {
                        vrf: 0,
                        prefix,
                        target: Adjacency::Drop,
                    }])
                    .unwrap();
                i = (i + 1) % 4096;
            }
        })
    };
    let mut received = 0usize;
    let mut out = Vec::new();
    for round in 0..50u8 {
        let mut v = Vec::new();
        for _ in 0..20 {
            let mut p = r.pool.alloc().unwrap();
            assert!(p.fill(&udp(A_MAC, R0_MAC, A_IP, B_IP, 64, &[round])));
            v.push(p);
        }
        r.a.tx_burst(&mut v, &mut r.pool, Timestamp::ZERO);
        // Wait, with a bound, for this round's packets to come out at B.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while received < (usize::from(round) + 1) * 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "worker stalled at round {round}"
            );
            received += r.b.rx_burst(&mut r.pool, &mut out, 256, Timestamp::ZERO);
            r.pool.free_all(&mut out);
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    committer.join().unwrap();
    let engine = worker.join().unwrap();
    assert_eq!(received, 1000);
    assert_eq!(engine.interface_counters(1).tx_packets, 1000);
}

/// ip4-rewrite writes a complete adjacency in one go, and takes the long way for anything
/// unusual, including every traced packet. Both must write the same bytes: the same mix of
/// packets is sent once untraced and once traced, through a connected next hop, a route
/// via a static neighbour, a route via a learned one, TTLs at the edge and a frame too
/// big for the MTU.
#[test]
fn the_rewrite_fast_path_and_the_long_way_write_the_same_bytes() {
    let run = |traced: bool| {
        let mut r = Router::new(false);
        let mut small =
            contiv_dataplane::Interface::new(1, "r1", R1_MAC).with_address(net("10.0.2.1/24"));
        small.mtu = 1000;
        let learned: std::net::Ipv4Addr = "10.0.2.77".parse().unwrap();
        r.tables
            .commit(&[
                TableChange::SetInterface(small),
                TableChange::SetNeighbour {
                    port: 1,
                    ip: B_IP,
                    mac: B_MAC,
                },
                TableChange::AddRoute {
                    vrf: 0,
                    prefix: net("192.0.2.0/24"),
                    target: Adjacency::Via {
                        port: 1,
                        next_hop: B_IP,
                    },
                },
                TableChange::AddRoute {
                    vrf: 0,
                    prefix: net("198.51.100.0/24"),
                    target: Adjacency::Via {
                        port: 1,
                        next_hop: learned,
                    },
                },
            ])
            .unwrap();
        // The learned neighbour announces itself first.
        let learned_mac = MacAddr([2, 0, 0, 0, 0, 0x77]);
        let announce = arp(
            ArpOperation::REQUEST,
            learned_mac,
            MacAddr::BROADCAST,
            (learned_mac, learned),
            (MacAddr::ZERO, R1_IP),
        );
        let (_, replies) = r.send_from_b(&[announce]);
        assert_eq!(replies.len(), 1, "the router answers the announcement");
        let mut frames = Vec::new();
        for dst in [
            B_IP,
            "192.0.2.9".parse().unwrap(),
            "198.51.100.3".parse().unwrap(),
        ] {
            for ttl in [1, 2, 64, 255] {
                frames.push(udp(A_MAC, R0_MAC, A_IP, dst, ttl, b"same bytes"));
            }
            frames.push(with_df(udp(A_MAC, R0_MAC, A_IP, dst, 64, &[7u8; 1200])));
            frames.push(udp(A_MAC, R0_MAC, A_IP, dst, 9, &[1u8; 972]));
        }
        if traced {
            r.engine.trace_add(frames.len());
        }
        let out = r.send_from_a(&frames);
        if traced {
            assert_eq!(r.engine.traced().len(), frames.len(), "every packet traced");
        }
        (out, r.engine.counter(Counter::IcmpTimeExceededSent))
    };
    let (fast, expired) = run(false);
    let (long, _) = run(true);
    assert_eq!(expired, 3, "one TTL-1 packet per destination");
    assert_eq!(
        fast.1.len(),
        12,
        "three destinations, four packets each reach B's wire"
    );
    assert_eq!(fast, long);
}
