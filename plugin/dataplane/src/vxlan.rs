//! The VXLAN overlay (RFC 7348): vxlan-encap wraps packets routed into a tunnel, and
//! vxlan-decap unwraps what other nodes send to this node's UDP port 4789.
//!
//! ```text
//!  ip4-lookup --(tunnel adjacency)--> vxlan-encap --> ip4-lookup (outer) --> ip4-rewrite
//!  ip4-local  --(udp 4789)----------> vxlan-decap --> ip4-input (inner)
//! ```
//!
//! The overlay is routed, not bridged: a route to another node's pod subnet points into
//! the tunnel to that node; the inner Ethernet header carries the two nodes' VXLAN MACs.
//! The outer UDP source port comes from a hash of the inner flow, so that an underlay
//! with ECMP spreads flows and keeps each one on one path.

use std::net::Ipv4Addr;

use contiv_hw::PacketVec;

use crate::counters::Counter;
use crate::graph::{GraphNode, Next, NodeCx};
use crate::headers::*;
use crate::nodes::{IcmpErrorSpec, ICMP_ERROR, IP4_INPUT, IP4_LOOKUP};
use crate::tables::{Adjacency, VXLAN_PORT};

pub const VXLAN_ENCAP: &str = "vxlan-encap";
pub const VXLAN_DECAP: &str = "vxlan-decap";

pub const UDP_HDR_LEN: usize = 8;
pub const VXLAN_HDR_LEN: usize = 8;
/// Outer Ethernet, IPv4, UDP and VXLAN headers.
pub const VXLAN_OVERHEAD: usize = ETH_HDR_LEN + IP4_MIN_HDR_LEN + UDP_HDR_LEN + VXLAN_HDR_LEN;
/// The "I" flag: the VNI is valid.
const VXLAN_FLAG_VNI: u8 = 0x08;

/// The outer UDP source port for an inner packet: from its addresses, protocol and (for
/// TCP and UDP) ports, in the dynamic range 49152..=65535.
pub fn flow_source_port(inner_ip: &[u8]) -> u16 {
    let mut h = u64::from(read_u32(inner_ip, IP4_SRC));
    h = (h << 32) | u64::from(read_u32(inner_ip, IP4_DST));
    let proto = inner_ip[IP4_PROTO];
    let ihl = usize::from(inner_ip[0] & 0x0f) * 4;
    let first_fragment = read_u16(inner_ip, IP4_FRAG) & IP4_OFFSET_MASK == 0;
    let mut ports = 0u64;
    if first_fragment && (proto == PROTO_TCP || proto == PROTO_UDP) && inner_ip.len() >= ihl + 4 {
        ports = u64::from(read_u32(inner_ip, ihl));
    }
    // Two rounds of a multiply-xorshift mix: cheap, and every input bit reaches the
    // low bits the port is taken from.
    let mut x = h ^ (ports << 8) ^ u64::from(proto);
    for _ in 0..2 {
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
    }
    0xc000 | (x as u16 & 0x3fff)
}

/// Wraps packets routed into a tunnel.
pub struct VxlanEncap;

impl GraphNode for VxlanEncap {
    fn name(&self) -> &'static str {
        VXLAN_ENCAP
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP, ICMP_ERROR]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        for mut pkt in input.drain(..) {
            let Some(cfg) = tables.vxlan else {
                cx.drop_packet(pkt, Counter::VxlanNotConfigured);
                continue;
            };
            let tunnel = match tables.adjacencies[pkt.meta.adjacency as usize] {
                Adjacency::Tunnel { tunnel } => {
                    tables.tunnels.get(usize::from(tunnel)).copied().flatten()
                }
                _ => None,
            };
            let Some(tunnel) = tunnel else {
                cx.drop_packet(pkt, Counter::VxlanNoTunnel);
                continue;
            };
            // ip4-input checked the inner header; ip4-lookup read its destination.
            let Some(h) = eth_ip4(pkt.data()) else {
                cx.drop_packet(pkt, Counter::Ip4TooShort);
                continue;
            };
            let inner_len = usize::from(read_u16(h, ETH_HDR_LEN + IP4_TOTAL_LEN));
            if h[ETH_HDR_LEN + IP4_TTL] <= 1 {
                cx.count(Counter::VxlanTtlExpired);
                pkt.meta.scratch = IcmpErrorSpec::TTL_EXCEEDED.encode();
                next.enqueue(1, pkt);
                continue;
            }
            if inner_len > usize::from(cfg.mtu) {
                if read_u16(h, ETH_HDR_LEN + IP4_FRAG) & IP4_DF == 0 {
                    cx.drop_packet(pkt, Counter::VxlanTooBig);
                } else {
                    cx.count(Counter::VxlanMtuExceeded);
                    pkt.meta.scratch = IcmpErrorSpec::fragmentation_needed(cfg.mtu).encode();
                    next.enqueue(1, pkt);
                }
                continue;
            }
            // The inner packet is routed: TTL down, and the frame addressed node to node.
            pkt.truncate(ETH_HDR_LEN + inner_len);
            let sport = flow_source_port(&pkt.data()[ETH_HDR_LEN..]);
            {
                let Some(h) = eth_ip4_mut(pkt.data_mut()) else {
                    cx.drop_packet(pkt, Counter::Ip4TooShort);
                    continue;
                };
                decrement_ttl(h);
                write_eth_header(h, tunnel.remote_mac, cfg.mac, ETHERTYPE_IP4);
            }
            let frame_len = pkt.len();
            let Some(o) = pkt.prepend(VXLAN_OVERHEAD) else {
                cx.drop_packet(pkt, Counter::VxlanNoHeadroom);
                continue;
            };
            // Outer Ethernet: ip4-rewrite fills the addresses for the underlay next hop.
            o[..12].fill(0);
            write_u16(o, ETH_TYPE, ETHERTYPE_IP4);
            let ip = &mut o[ETH_HDR_LEN..];
            let udp_len = UDP_HDR_LEN + VXLAN_HDR_LEN + frame_len;
            ip[0] = 0x45;
            ip[1] = 0;
            write_u16(ip, IP4_TOTAL_LEN, (IP4_MIN_HDR_LEN + udp_len) as u16);
            write_u32(ip, 4, 0); // id 0, no flags: the underlay MTU fits (pod MTU)
            ip[IP4_TTL] = 64;
            ip[IP4_PROTO] = PROTO_UDP;
            write_u16(ip, IP4_CSUM, 0);
            write_u32(ip, IP4_SRC, u32::from(cfg.local));
            write_u32(ip, IP4_DST, u32::from(tunnel.remote));
            ip4_set_header_checksum(&mut ip[..IP4_MIN_HDR_LEN]);
            let udp = &mut ip[IP4_MIN_HDR_LEN..];
            write_u16(udp, 0, sport);
            write_u16(udp, 2, VXLAN_PORT);
            write_u16(udp, 4, udp_len as u16);
            write_u16(udp, 6, 0); // no UDP checksum over IPv4 (RFC 7348 allows it)
            let vx = &mut udp[UDP_HDR_LEN..];
            write_u32(vx, 0, u32::from(VXLAN_FLAG_VNI) << 24);
            write_u32(vx, 4, cfg.vni << 8);
            pkt.meta.vrf = 0;
            cx.count(Counter::VxlanEncapsulated);
            cx.trace(&pkt, VXLAN_ENCAP, || {
                format!(
                    "vni {} {} -> {} sport {sport}",
                    cfg.vni, cfg.local, tunnel.remote
                )
            });
            next.enqueue(0, pkt);
        }
    }
}

/// Unwraps VXLAN from known nodes with the configured VNI.
pub struct VxlanDecap;

impl GraphNode for VxlanDecap {
    fn name(&self) -> &'static str {
        VXLAN_DECAP
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_INPUT]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        for mut pkt in input.drain(..) {
            let Some(cfg) = tables.vxlan else {
                cx.drop_packet(pkt, Counter::VxlanNotConfigured);
                continue;
            };
            let d = pkt.data();
            // ip4-input checked the outer header and that the frame holds its total
            // length; ip4-local that it is UDP to our port.
            let ip = &d[ETH_HDR_LEN..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let ip_len = usize::from(read_u16(ip, IP4_TOTAL_LEN)).min(ip.len());
            let src = read_u32(ip, IP4_SRC);
            if !tables.tunnel_by_remote.contains_key(&src) {
                cx.trace(&pkt, VXLAN_DECAP, || {
                    format!("from unknown node {}", Ipv4Addr::from(src))
                });
                cx.drop_packet(pkt, Counter::VxlanUnknownSource);
                continue;
            }
            let headers = ihl + UDP_HDR_LEN + VXLAN_HDR_LEN;
            if ip_len < headers + ETH_HDR_LEN + IP4_MIN_HDR_LEN {
                cx.drop_packet(pkt, Counter::VxlanTruncated);
                continue;
            }
            let udp_len = usize::from(read_u16(ip, ihl + 4));
            if udp_len < UDP_HDR_LEN + VXLAN_HDR_LEN || udp_len > ip_len - ihl {
                cx.drop_packet(pkt, Counter::VxlanTruncated);
                continue;
            }
            let vx = &ip[ihl + UDP_HDR_LEN..];
            if vx[0] & VXLAN_FLAG_VNI == 0 {
                cx.drop_packet(pkt, Counter::VxlanBadHeader);
                continue;
            }
            let vni = read_u32(vx, 4) >> 8;
            if vni != cfg.vni {
                cx.trace(&pkt, VXLAN_DECAP, || format!("vni {vni}, not {}", cfg.vni));
                cx.drop_packet(pkt, Counter::VxlanWrongVni);
                continue;
            }
            let inner = &vx[VXLAN_HDR_LEN..];
            if read_u16(inner, ETH_TYPE) != ETHERTYPE_IP4 {
                cx.drop_packet(pkt, Counter::VxlanInnerNotIp4);
                continue;
            }
            let inner_len = udp_len - UDP_HDR_LEN - VXLAN_HDR_LEN;
            pkt.advance(ETH_HDR_LEN + headers);
            pkt.truncate(inner_len);
            pkt.meta.vrf = 0;
            cx.count(Counter::VxlanDecapsulated);
            cx.trace(&pkt, VXLAN_DECAP, || {
                format!("vni {vni} from {}", Ipv4Addr::from(src))
            });
            next.enqueue(0, pkt);
        }
    }
}
