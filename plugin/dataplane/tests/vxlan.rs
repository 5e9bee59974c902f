//! vxlan-encap and vxlan-decap through the engine. Port 0 faces pod A; port 1 is the
//! underlay, where B stands for the other node (10.0.2.2) and its VXLAN endpoint.
//! Frames are built and checked with etherparse, the VXLAN header by hand (RFC 7348).

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::*;
use contiv_dataplane::{Adjacency, Counter, TableChange, Tunnel, VxlanConfig};
use contiv_hw::MacAddr;
use etherparse::{Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const VNI: u32 = 10;
const OUR_VXLAN_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 1]);
const REMOTE_VXLAN_MAC: MacAddr = MacAddr([0x02, 0xfe, 0, 0, 0, 2]);
/// A pod on the other node.
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 5);

fn overlay_router() -> Router {
    let r = Router::new(false);
    r.tables
        .commit(&[
            TableChange::SetVxlan(Some(VxlanConfig {
                local: R1_IP,
                vni: VNI,
                mac: OUR_VXLAN_MAC,
                mtu: 1450,
            })),
            TableChange::SetTunnel {
                index: 0,
                tunnel: Tunnel {
                    remote: B_IP,
                    remote_mac: REMOTE_VXLAN_MAC,
                },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("10.1.2.0/24"),
                target: Adjacency::Tunnel { tunnel: 0 },
            },
        ])
        .unwrap();
    r
}

/// A VXLAN frame from `outer_src` on the underlay to us, carrying `inner`.
fn vxlan_frame(outer_src: Ipv4Addr, vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![flags, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let b = PacketBuilder::ethernet2(B_MAC.0, R1_MAC.0)
        .ipv4(outer_src.octets(), R1_IP.octets(), 64)
        .udp(50_000, 4789);
    let mut v = Vec::new();
    b.write(&mut v, &payload).unwrap();
    v
}

/// The outer UDP source port, VNI and inner frame of a VXLAN frame.
fn parse_vxlan(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u32, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).expect("a valid outer frame");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("outer not ipv4")
    };
    assert!(
        ip.header().to_header().calc_header_checksum() == ip.header().header_checksum(),
        "outer checksum"
    );
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("outer not udp")
    };
    assert_eq!(udp.destination_port(), 4789);
    let vx = udp.payload();
    assert_eq!(vx[0], 0x08, "I flag");
    let vni = u32::from_be_bytes([vx[4], vx[5], vx[6], vx[7]]) >> 8;
    (src, dst, udp.source_port(), vni, vx[8..].to_vec())
}

#[test]
fn routed_into_a_tunnel_is_encapsulated_to_the_remote_node() {
    let mut r = overlay_router();
    let (to_a, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, REMOTE_POD, 64, b"over")]);
    assert!(to_a.is_empty());
    assert_eq!(to_b.len(), 1);
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(&to_b[0]).unwrap();
    assert_eq!(eth.destination(), B_MAC.0, "underlay next hop");
    assert_eq!(eth.source(), R1_MAC.0);
    let (src, dst, sport, vni, inner) = parse_vxlan(&to_b[0]);
    assert_eq!((src, dst, vni), (R1_IP, B_IP, VNI));
    assert!(sport >= 49152, "{sport}");
    let inner_p = SlicedPacket::from_ethernet(&inner).expect("inner frame");
    let ie = etherparse::Ethernet2HeaderSlice::from_slice(&inner).unwrap();
    assert_eq!(ie.destination(), REMOTE_VXLAN_MAC.0);
    assert_eq!(ie.source(), OUR_VXLAN_MAC.0);
    let Some(NetSlice::Ipv4(iip)) = &inner_p.net else {
        panic!("inner not ipv4")
    };
    assert_eq!(iip.header().destination_addr(), REMOTE_POD);
    assert_eq!(iip.header().ttl(), 63, "the inner packet was routed");
    assert_eq!(
        iip.header().to_header().calc_header_checksum(),
        iip.header().header_checksum()
    );
    let Some(TransportSlice::Udp(u)) = &inner_p.transport else {
        panic!("inner udp")
    };
    assert_eq!(u.payload(), b"over");
    assert_eq!(r.engine.counter(Counter::VxlanEncapsulated), 1);
}

#[test]
fn vxlan_from_a_known_node_is_decapsulated_and_delivered() {
    let mut r = overlay_router();
    let inner = udp(
        REMOTE_VXLAN_MAC,
        OUR_VXLAN_MAC,
        REMOTE_POD,
        A_IP,
        63,
        b"back",
    );
    let (to_a, to_b) = r.send_from_b(&[vxlan_frame(B_IP, VNI, 0x08, &inner)]);
    assert!(to_b.is_empty());
    assert_eq!(to_a.len(), 1);
    let p = SlicedPacket::from_ethernet(&to_a[0]).unwrap();
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(&to_a[0]).unwrap();
    assert_eq!(eth.destination(), A_MAC.0);
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), REMOTE_POD);
    assert_eq!(ip.header().ttl(), 62);
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!()
    };
    assert_eq!(u.payload(), b"back");
    assert_eq!(r.engine.counter(Counter::VxlanDecapsulated), 1);
}

#[test]
fn bad_vxlan_is_dropped_with_its_reason() {
    let mut r = overlay_router();
    let inner = udp(REMOTE_VXLAN_MAC, OUR_VXLAN_MAC, REMOTE_POD, A_IP, 63, b"x");
    let unknown = vxlan_frame(Ipv4Addr::new(10, 0, 2, 9), VNI, 0x08, &inner);
    let wrong_vni = vxlan_frame(B_IP, 11, 0x08, &inner);
    let no_flag = vxlan_frame(B_IP, VNI, 0x00, &inner);
    let mut arp_inner = inner.clone();
    arp_inner[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let not_ip = vxlan_frame(B_IP, VNI, 0x08, &arp_inner);
    // A VXLAN header and 10 bytes of an inner frame: too short for Ethernet + IPv4.
    let truncated = vxlan_frame(B_IP, VNI, 0x08, &inner[..10]);
    let (to_a, to_b) = r.send_from_b(&[unknown, wrong_vni, no_flag, not_ip, truncated]);
    assert!(to_a.is_empty() && to_b.is_empty(), "nothing gets through");
    for c in [
        Counter::VxlanUnknownSource,
        Counter::VxlanWrongVni,
        Counter::VxlanBadHeader,
        Counter::VxlanInnerNotIp4,
        Counter::VxlanTruncated,
    ] {
        assert_eq!(r.engine.counter(c), 1, "{}", c.label());
    }
    assert_eq!(r.engine.counter(Counter::VxlanDecapsulated), 0);
}

#[test]
fn the_outer_source_port_follows_the_flow() {
    let mut r = overlay_router();
    let mut ports = BTreeSet::new();
    for flow in 0..256u16 {
        let b = PacketBuilder::ethernet2(A_MAC.0, R0_MAC.0)
            .ipv4(A_IP.octets(), REMOTE_POD.octets(), 64)
            .udp(10_000 + flow, 80);
        let mut f = Vec::new();
        b.write(&mut f, b"p").unwrap();
        // Each flow twice: both copies must leave with the same port.
        let (_, to_b) = r.send_from_a(&[f.clone(), f]);
        let p0 = parse_vxlan(&to_b[0]).2;
        assert_eq!(p0, parse_vxlan(&to_b[1]).2, "one flow, one port");
        ports.insert(p0);
    }
    assert!(
        ports.len() > 200,
        "256 flows spread over {} ports",
        ports.len()
    );
}

#[test]
fn too_big_for_the_overlay_with_df_gets_fragmentation_needed() {
    let mut r = overlay_router();
    let big = with_df(udp(A_MAC, R0_MAC, A_IP, REMOTE_POD, 64, &[0u8; 1440]));
    let (to_a, to_b) = r.send_from_a(&[big]);
    assert!(to_b.is_empty());
    let p = SlicedPacket::from_ethernet(&to_a[0]).unwrap();
    let icmp = icmp_of(&p);
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 }
        )
    ));
}

#[test]
fn a_removed_tunnel_stops_both_directions() {
    let mut r = overlay_router();
    r.tables
        .commit(&[TableChange::DelTunnel { index: 0 }])
        .unwrap();
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, REMOTE_POD, 64, b"x")]);
    assert!(to_b.is_empty());
    assert_eq!(r.engine.counter(Counter::VxlanNoTunnel), 1);
    let inner = udp(REMOTE_VXLAN_MAC, OUR_VXLAN_MAC, REMOTE_POD, A_IP, 63, b"x");
    let (to_a, _) = r.send_from_b(&[vxlan_frame(B_IP, VNI, 0x08, &inner)]);
    assert!(to_a.is_empty());
    assert_eq!(r.engine.counter(Counter::VxlanUnknownSource), 1);
    // Two tunnels to one node are refused as a batch.
    let t = Tunnel {
        remote: B_IP,
        remote_mac: REMOTE_VXLAN_MAC,
    };
    let err = r
        .tables
        .commit(&[
            TableChange::SetTunnel {
                index: 1,
                tunnel: t,
            },
            TableChange::SetTunnel {
                index: 2,
                tunnel: t,
            },
        ])
        .unwrap_err();
    assert!(err.to_string().contains("same remote"), "{err}");
}

/// The encapsulated frame as tcpdump (a decoder we did not write) reads it.
#[test]
fn tcpdump_decodes_our_vxlan() {
    if std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "tcpdump is required (ci/test.sh installs it)"
        );
        eprintln!("skipped: tcpdump is not installed");
        return;
    }
    let mut r = overlay_router();
    let (_, to_b) = r.send_from_a(&[udp(A_MAC, R0_MAC, A_IP, REMOTE_POD, 64, b"over")]);
    let path = std::env::temp_dir().join(format!("contiv-vxlan-{}.pcap", std::process::id()));
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::ZERO,
            to_b[0].len() as u32,
            &to_b[0],
        ))
        .unwrap();
    }
    let out = std::process::Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("10.0.2.1."), "outer source: {text}");
    assert!(
        text.contains("> 10.0.2.2.4789"),
        "outer destination: {text}"
    );
    assert!(text.contains("VXLAN, flags [I] (0x08), vni 10"), "{text}");
    assert!(
        text.contains("10.0.1.2.4000 > 10.1.2.5.5000"),
        "inner flow: {text}"
    );
}
