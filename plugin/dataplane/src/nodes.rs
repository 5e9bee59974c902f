//! The graph nodes of the IPv4 path, in dispatch order.
//!
//! ```text
//!  rx -> ethernet-input -> arp ------------------------------------> interface-output -> tx
//!                      \-> ip4-input -> ip4-lookup -> ip4-rewrite --/
//!                                            |   \         |
//!                                            |    \-> icmp-error <-/  (ttl, mtu)
//!                                            v          |  ^
//!                                        ip4-local -----+--/  (echo reply, unreachable)
//!                                            \---> ip4-lookup (replies are routed)
//! ```

use std::net::Ipv4Addr;

use contiv_hw::{MacAddr, PacketBuf, PacketVec, Timestamp, VECTOR_SIZE};

use crate::counters::Counter;
use crate::fib::Fib;
use crate::graph::{drop_verdict, GraphNode, NeighbourCache, Next, NodeCx, Verdict};
use crate::headers::*;
use crate::tables::{Adjacency, Interface, Tables};

pub const ETHERNET_INPUT: &str = "ethernet-input";
pub const ARP: &str = "arp";
pub const IP4_INPUT: &str = "ip4-input";
pub const IP4_LOOKUP: &str = "ip4-lookup";
pub const IP4_LOCAL: &str = "ip4-local";
pub const IP4_REWRITE: &str = "ip4-rewrite";
pub const ICMP_ERROR: &str = "icmp-error";
pub const INTERFACE_OUTPUT: &str = "interface-output";

/// The standard IPv4 graph, in dispatch order.
pub fn ip4_graph_nodes(icmp: IcmpErrorConfig) -> Vec<Box<dyn GraphNode>> {
    vec![
        Box::new(EthernetInput),
        Box::new(ArpNode),
        Box::new(Ip4Input),
        Box::new(Ip4Lookup::default()),
        Box::new(Ip4Local),
        Box::new(Ip4Rewrite),
        Box::new(IcmpError::new(icmp)),
        Box::new(InterfaceOutput),
        Box::new(crate::vxlan::VxlanEncap),
        Box::new(crate::vxlan::VxlanDecap),
        Box::new(crate::nat44::Nat44Out),
        Box::new(crate::nat44::Nat44In),
        Box::new(crate::gso::Ip4Gso),
    ]
}

/// The ICMP error to build, carried in `meta.scratch` to icmp-error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorSpec {
    pub icmp_type: u8,
    pub code: u8,
    /// The next-hop MTU, for "fragmentation needed".
    pub mtu: u16,
}

impl IcmpErrorSpec {
    pub const NET_UNREACHABLE: IcmpErrorSpec = IcmpErrorSpec {
        icmp_type: ICMP_DEST_UNREACHABLE,
        code: 0,
        mtu: 0,
    };
    pub const PROTOCOL_UNREACHABLE: IcmpErrorSpec = IcmpErrorSpec {
        icmp_type: ICMP_DEST_UNREACHABLE,
        code: 2,
        mtu: 0,
    };
    pub const PORT_UNREACHABLE: IcmpErrorSpec = IcmpErrorSpec {
        icmp_type: ICMP_DEST_UNREACHABLE,
        code: 3,
        mtu: 0,
    };
    pub const TTL_EXCEEDED: IcmpErrorSpec = IcmpErrorSpec {
        icmp_type: ICMP_TIME_EXCEEDED,
        code: 0,
        mtu: 0,
    };

    pub fn fragmentation_needed(mtu: u16) -> Self {
        IcmpErrorSpec {
            icmp_type: ICMP_DEST_UNREACHABLE,
            code: 4,
            mtu,
        }
    }

    pub(crate) fn encode(self) -> u32 {
        (u32::from(self.icmp_type) << 24) | (u32::from(self.code) << 16) | u32::from(self.mtu)
    }

    fn decode(v: u32) -> Self {
        IcmpErrorSpec {
            icmp_type: (v >> 24) as u8,
            code: (v >> 16) as u8,
            mtu: v as u16,
        }
    }
}

#[inline]
fn to_icmp_error(next: &mut Next<'_>, edge: usize, mut pkt: PacketBuf, spec: IcmpErrorSpec) {
    pkt.meta.scratch = spec.encode();
    next.enqueue(edge, pkt);
}

fn describe_ip4(d: &[u8]) -> String {
    if d.len() < ETH_HDR_LEN + IP4_MIN_HDR_LEN {
        return format!("{} bytes", d.len());
    }
    let ip = &d[ETH_HDR_LEN..];
    format!(
        "{} -> {} proto {} ttl {} len {}",
        read_ip(ip, IP4_SRC),
        read_ip(ip, IP4_DST),
        ip[IP4_PROTO],
        ip[IP4_TTL],
        read_u16(ip, IP4_TOTAL_LEN)
    )
}

// ---------------------------------------------------------------------------------------

/// Classifies frames by ethertype after checking they are addressed to the interface.
pub struct EthernetInput;

impl GraphNode for EthernetInput {
    fn name(&self) -> &'static str {
        ETHERNET_INPUT
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[ARP, IP4_INPUT]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        // A vector usually comes from one port: its interface is looked up once.
        let mut rx = RxInterface::of(tables, input.first().map_or(0, |p| p.meta.rx_port));
        let verdicts = next.verdicts(input.len());
        let mut traced = 0;
        for (pkt, verdict) in input.iter_mut().zip(verdicts.iter_mut()) {
            if pkt.meta.rx_port != rx.port {
                rx = RxInterface::of(tables, pkt.meta.rx_port);
            }
            *verdict = Self::classify(&rx, pkt);
            traced |= pkt.meta.trace;
        }
        // Traces are written in a pass of their own, so that the loop above stays free
        // of the formatting code (and the registers it needs).
        if traced != 0 {
            for pkt in input.iter().filter(|p| p.meta.trace != 0) {
                let note = Self::describe(tables, pkt);
                cx.trace(pkt, ETHERNET_INPUT, || note);
            }
        }
        next.dispatch(cx, input);
    }
}

/// What ethernet-input needs of the interface a frame came in on, in the form its
/// per-frame checks compare against.
struct RxInterface {
    port: u16,
    /// The interface's MAC in the low 48 bits of a little-endian word.
    mac: u64,
    vrf: u16,
    /// Why every frame from this port is dropped: no interface, or one that is down.
    refused: Option<Verdict>,
}

impl RxInterface {
    /// The broadcast MAC, read as [`mac_word`] reads a destination.
    const BROADCAST: u64 = 0xffff_ffff_ffff;

    fn of(tables: &Tables, port: u16) -> Self {
        let iface = tables.interface(port);
        RxInterface {
            port,
            mac: iface.map_or(0, |i| mac_word(&i.mac.0)),
            vrf: iface.map_or(0, |i| i.vrf),
            refused: match iface {
                None => Some(drop_verdict(Counter::EthNoInterface)),
                Some(i) if !i.up => Some(drop_verdict(Counter::EthInterfaceDown)),
                Some(_) => None,
            },
        }
    }
}

/// Six MAC bytes as one word, so a destination is checked with one comparison.
#[inline]
fn mac_word(m: &[u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}

impl EthernetInput {
    /// IPv4 to us, the common case, decided with one branch; the rest in full.
    #[inline]
    fn classify(rx: &RxInterface, pkt: &mut PacketBuf) -> Verdict {
        if let Some(h) = pkt.data().first_chunk::<ETH_HDR_LEN>() {
            let dst = mac_word(h[..6].try_into().unwrap_or(&[0; 6]));
            let ip4 = h[ETH_TYPE..] == ETHERTYPE_IP4.to_be_bytes();
            // `&` and `|`, not `&&` and `||`: every test is cheap, and one branch on the
            // result costs less than a branch on each.
            if ip4 & ((dst == rx.mac) | (dst == RxInterface::BROADCAST)) & rx.refused.is_none() {
                pkt.meta.vrf = rx.vrf;
                return 1;
            }
        }
        Self::classify_other(rx, pkt)
    }

    #[inline(never)]
    fn classify_other(rx: &RxInterface, pkt: &mut PacketBuf) -> Verdict {
        let Some(h) = pkt.data().first_chunk::<ETH_HDR_LEN>() else {
            return drop_verdict(Counter::EthTooShort);
        };
        if let Some(refused) = rx.refused {
            return refused;
        }
        let dst = mac_word(h[..6].try_into().unwrap_or(&[0; 6]));
        if dst != rx.mac && dst != RxInterface::BROADCAST {
            return drop_verdict(Counter::EthNotForUs);
        }
        let ethertype = u16::from_be_bytes([h[ETH_TYPE], h[ETH_TYPE + 1]]);
        pkt.meta.vrf = rx.vrf;
        match ethertype {
            ETHERTYPE_IP4 => 1,
            ETHERTYPE_ARP => 0,
            ETHERTYPE_IP6 => drop_verdict(Counter::EthIp6Unsupported),
            ETHERTYPE_VLAN => drop_verdict(Counter::EthVlanUnsupported),
            _ => drop_verdict(Counter::EthUnknownEthertype),
        }
    }

    fn describe(tables: &Tables, pkt: &PacketBuf) -> String {
        let d = pkt.data();
        if d.len() < ETH_HDR_LEN {
            return format!("{} bytes", d.len());
        }
        let name = tables
            .interface(pkt.meta.rx_port)
            .map_or("?", |i| i.name.as_str());
        format!(
            "{} -> {} type 0x{:04x} on {name}",
            MacAddr(d[6..12].try_into().unwrap_or_default()),
            MacAddr(d[0..6].try_into().unwrap_or_default()),
            read_u16(d, ETH_TYPE)
        )
    }
}

// ---------------------------------------------------------------------------------------

/// Answers ARP for our addresses and proxied prefixes, and learns neighbours.
pub struct ArpNode;

impl ArpNode {
    fn should_answer(iface: &Interface, target: Ipv4Addr, sender: Ipv4Addr) -> Option<bool> {
        if iface.owns(target) {
            return Some(false);
        }
        // A host probing for its own address (sender == target) must get no proxy answer,
        // or it would think its address is taken.
        if target != sender && iface.proxy_arp.iter().any(|n| n.contains(target)) {
            return Some(true);
        }
        None
    }
}

impl GraphNode for ArpNode {
    fn name(&self) -> &'static str {
        ARP
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[INTERFACE_OUTPUT]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        for mut pkt in input.drain(..) {
            let d = pkt.data();
            if d.len() < ETH_HDR_LEN + ARP_LEN {
                cx.drop_packet(pkt, Counter::ArpMalformed);
                continue;
            }
            let a = &d[ETH_HDR_LEN..];
            // Ethernet (1), IPv4 (0x0800), 6-byte MACs, 4-byte addresses.
            if read_u16(a, 0) != 1 || read_u16(a, 2) != ETHERTYPE_IP4 || a[4] != 6 || a[5] != 4 {
                cx.drop_packet(pkt, Counter::ArpMalformed);
                continue;
            }
            let op = read_u16(a, ARP_OP);
            let sha = MacAddr(a[ARP_SHA..ARP_SHA + 6].try_into().unwrap_or_default());
            let spa = read_ip(a, ARP_SPA);
            let tpa = read_ip(a, ARP_TPA);
            let port = pkt.meta.rx_port;
            let Some(iface) = tables.interface(port) else {
                cx.drop_packet(pkt, Counter::EthNoInterface);
                continue;
            };
            if op != ARP_OP_REQUEST && op != ARP_OP_REPLY {
                cx.drop_packet(pkt, Counter::ArpUnsupportedOp);
                continue;
            }
            // Learn the sender when it is on one of our subnets and a real unicast host.
            if iface.on_link(spa)
                && is_unicast_source(spa)
                && !sha.is_multicast()
                && !iface.owns(spa)
            {
                if cx.w.neighbours.learn(port, u32::from(spa), sha) {
                    cx.count(Counter::ArpLearned);
                } else {
                    cx.count(Counter::ArpNeighbourTableFull);
                }
            }
            if op == ARP_OP_REPLY {
                cx.trace(&pkt, ARP, || format!("reply {spa} is-at {sha}"));
                cx.drop_packet(pkt, Counter::ArpReplyConsumed);
                continue;
            }
            let Some(proxy) = Self::should_answer(iface, tpa, spa) else {
                cx.trace(&pkt, ARP, || format!("who-has {tpa} tell {spa}: not ours"));
                cx.drop_packet(pkt, Counter::ArpNotForUs);
                continue;
            };
            let our_mac = iface.mac;
            // Turn the request into the reply, in place.
            pkt.truncate(ETH_HDR_LEN + ARP_LEN);
            let d = pkt.data_mut();
            write_eth_header(d, sha, our_mac, ETHERTYPE_ARP);
            let a = &mut d[ETH_HDR_LEN..];
            write_u16(a, ARP_OP, ARP_OP_REPLY);
            a[ARP_THA..ARP_THA + 6].copy_from_slice(&sha.0);
            write_u32(a, ARP_TPA, u32::from(spa));
            a[ARP_SHA..ARP_SHA + 6].copy_from_slice(&our_mac.0);
            write_u32(a, ARP_SPA, u32::from(tpa));
            pkt.meta.tx_port = port;
            cx.count(if proxy {
                Counter::ArpProxyRepliesSent
            } else {
                Counter::ArpRepliesSent
            });
            cx.trace(&pkt, ARP, || {
                format!(
                    "who-has {tpa} tell {spa}: {}reply {tpa} is-at {our_mac}",
                    if proxy { "proxy " } else { "" }
                )
            });
            next.enqueue(0, pkt);
        }
    }
}

// ---------------------------------------------------------------------------------------

/// Validates the IPv4 header: version, header length, total length, checksum, TTL, source.
pub struct Ip4Input;

impl Ip4Input {
    /// The common case, a valid 20-byte header, with one branch; the rest in full.
    #[inline]
    fn check(d: &[u8]) -> Result<usize, Counter> {
        if let Some(h) = eth_ip4(d) {
            let ip: &[u8; IP4_MIN_HDR_LEN] =
                h[ETH_HDR_LEN..].try_into().unwrap_or(&[0; IP4_MIN_HDR_LEN]);
            let total = usize::from(u16::from_be_bytes([
                ip[IP4_TOTAL_LEN],
                ip[IP4_TOTAL_LEN + 1],
            ]));
            // As in ethernet-input: cheap tests combined, one branch on the result.
            let plain = (ip[0] == 0x45)
                & (total >= IP4_MIN_HDR_LEN)
                & (total <= d.len() - ETH_HDR_LEN)
                & (ip[IP4_TTL] != 0)
                & (ip[IP4_SRC] < 224);
            if plain && ip4_plain_header_checksum_ok(ip) {
                return Ok(total);
            }
        }
        Self::check_in_full(d)
    }

    /// Every test, in order, naming the first that fails.
    #[inline(never)]
    fn check_in_full(d: &[u8]) -> Result<usize, Counter> {
        let Some(h) = eth_ip4(d) else {
            return Err(Counter::Ip4TooShort);
        };
        let ip: &[u8; IP4_MIN_HDR_LEN] =
            h[ETH_HDR_LEN..].try_into().unwrap_or(&[0; IP4_MIN_HDR_LEN]);
        if ip[0] >> 4 != 4 {
            return Err(Counter::Ip4BadVersion);
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let l3_len = d.len() - ETH_HDR_LEN;
        if ihl < IP4_MIN_HDR_LEN || ihl > l3_len {
            return Err(Counter::Ip4BadHeaderLength);
        }
        let total = usize::from(u16::from_be_bytes([
            ip[IP4_TOTAL_LEN],
            ip[IP4_TOTAL_LEN + 1],
        ]));
        if total < ihl || total > l3_len {
            return Err(Counter::Ip4BadTotalLength);
        }
        let checksum_ok = if ihl == IP4_MIN_HDR_LEN {
            ip4_plain_header_checksum_ok(ip)
        } else {
            ip4_header_checksum_ok(&d[ETH_HDR_LEN..ETH_HDR_LEN + ihl])
        };
        if !checksum_ok {
            return Err(Counter::Ip4BadChecksum);
        }
        if ip[IP4_TTL] == 0 {
            return Err(Counter::Ip4TtlZero);
        }
        // Multicast, reserved and the limited broadcast (255.255.255.255) all start at
        // 224 or above.
        if ip[IP4_SRC] >= 224 {
            return Err(Counter::Ip4BadSource);
        }
        Ok(total)
    }
}

impl GraphNode for Ip4Input {
    fn name(&self) -> &'static str {
        IP4_INPUT
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let verdicts = next.verdicts(input.len());
        let mut traced = 0;
        for (pkt, verdict) in input.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = match Self::check(pkt.data()) {
                Ok(total) => {
                    // Ethernet padding after the IP packet is not part of it.
                    pkt.truncate(ETH_HDR_LEN + total);
                    0
                }
                Err(reason) => drop_verdict(reason),
            };
            traced |= pkt.meta.trace;
        }
        // In a pass of their own, as in ethernet-input; drops are traced by dispatch.
        if traced != 0 {
            for (pkt, _) in input
                .iter()
                .zip(verdicts.iter())
                .filter(|(p, &v)| p.meta.trace != 0 && v == 0)
            {
                cx.trace(pkt, IP4_INPUT, || describe_ip4(pkt.data()));
            }
        }
        next.dispatch(cx, input);
    }
}

// ---------------------------------------------------------------------------------------

/// Longest-prefix match in the packet's VRF.
pub struct Ip4Lookup {
    /// Destinations of the vector being looked up (sized once, never grows).
    addrs: Box<[u32; 2 * VECTOR_SIZE]>,
}

impl Default for Ip4Lookup {
    fn default() -> Self {
        Ip4Lookup {
            addrs: Box::new([0; 2 * VECTOR_SIZE]),
        }
    }
}

const NO_ROUTE: u32 = u32::MAX;

/// The chunks (of 1 KiB) from which a FIB is too big to stay in cache, and ip4-lookup
/// prefetches the chunk line of every destination of a vector before looking them up.
/// Below it (a node's own subnets and pods) the lines are in cache anyway and the extra
/// pass only costs: without it the 1-route `ip4_forward` case is 3% faster. A gather pass
/// that prefetched every first-level slot too was no faster at any size (`profile_ip4`
/// with 1M routes: 41.5 ns per packet with it, 41.4 without at 4096 flows, 38.6 and 36.6
/// at 1024): the first-level reads of one vector overlap well enough by themselves.
const PREFETCH_CHUNKS_FROM: usize = 512;

impl GraphNode for Ip4Lookup {
    fn name(&self) -> &'static str {
        IP4_LOOKUP
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[
            IP4_LOCAL,
            IP4_REWRITE,
            ICMP_ERROR,
            crate::vxlan::VXLAN_ENCAP,
            crate::nat44::NAT44_OUT,
            crate::nat44::NAT44_IN,
            crate::gso::IP4_GSO,
        ]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        let snat_uplink = tables.snat.as_ref().map(|s| s.uplink);
        let verdicts = next.verdicts(input.len());
        // The destinations of the whole vector are gathered first, so that the cache
        // misses of their lookups overlap (see `FibReader::prefetch_chunks`).
        // A frame can hold more than one vector (several nodes feed this one): it is
        // looked up in pieces the size of the scratch array.
        let scratch = self.addrs.len();
        for (piece, verdicts) in input.chunks_mut(scratch).zip(verdicts.chunks_mut(scratch)) {
            let addrs = &mut self.addrs[..piece.len()];
            let first_vrf = piece[0].meta.vrf;
            let mut vrfs_differ = 0;
            for (a, pkt) in addrs.iter_mut().zip(piece.iter()) {
                *a = read_u32(pkt.data(), ETH_HDR_LEN + IP4_DST);
                vrfs_differ |= pkt.meta.vrf ^ first_vrf;
            }
            // In runs of packets that share a VRF: the whole piece, almost always.
            let mut start = 0;
            while start < piece.len() {
                let vrf = piece[start].meta.vrf;
                let end = if vrfs_differ == 0 {
                    piece.len()
                } else {
                    start
                        + piece[start..]
                            .iter()
                            .take_while(|p| p.meta.vrf == vrf)
                            .count()
                };
                let dsts = &addrs[start..end];
                let fib = tables.fib(vrf);
                // The chunk lines of a large table are set on their way first, so that
                // the lookups' misses overlap.
                if let Some(f) = fib.filter(|f| f.live_chunks() >= PREFETCH_CHUNKS_FROM) {
                    f.reader().prefetch_chunks(dsts);
                }
                let (run, run_verdicts) = (&mut piece[start..end], &mut verdicts[start..end]);
                match fib.map(Fib::reader) {
                    Some(f) => {
                        Self::look_up_run(cx, snat_uplink, run, run_verdicts, dsts, |d| f.lookup(d))
                    }
                    None => Self::look_up_run(cx, snat_uplink, run, run_verdicts, dsts, |_| None),
                }
                start = end;
            }
        }
        next.dispatch(cx, input);
    }
}

impl Ip4Lookup {
    /// Looks up and decides each packet of a run that shares one VRF, with that VRF's
    /// `lookup` (one instance per kind of table, so that the loop tests nothing else).
    #[inline(always)]
    fn look_up_run(
        cx: &mut NodeCx<'_>,
        snat_uplink: Option<u16>,
        run: &mut [PacketBuf],
        verdicts: &mut [Verdict],
        dsts: &[u32],
        lookup: impl Fn(u32) -> Option<u32>,
    ) {
        for ((pkt, verdict), &dst) in run.iter_mut().zip(verdicts.iter_mut()).zip(dsts) {
            pkt.meta.adjacency = lookup(dst).unwrap_or(NO_ROUTE);
            *verdict = Self::decide(cx, snat_uplink, pkt, dst);
        }
    }

    /// Where a packet goes once its adjacency is known. The common case is decided here,
    /// in line: out of an interface with a complete rewrite, not the uplink that source
    /// NAT watches, nothing offloaded, not traced. The rest out of line.
    #[inline(always)]
    fn decide(
        cx: &mut NodeCx<'_>,
        snat_uplink: Option<u16>,
        pkt: &mut PacketBuf,
        dst: u32,
    ) -> Verdict {
        if let Some(Some(r)) = cx.tables.rewrites.get(pkt.meta.adjacency as usize) {
            if dst < 0xe000_0000
                && snat_uplink != Some(r.port)
                && pkt.offload().is_none()
                && pkt.meta.trace == 0
            {
                return 1;
            }
        }
        Self::decide_in_full(cx, snat_uplink, pkt, dst)
    }

    #[inline(never)]
    fn decide_in_full(
        cx: &mut NodeCx<'_>,
        snat_uplink: Option<u16>,
        pkt: &mut PacketBuf,
        dst: u32,
    ) -> Verdict {
        let tables = cx.tables;
        // 224.0.0.0/4 and 255.255.255.255 are never forwarded.
        if dst >= 0xe000_0000 {
            return drop_verdict(Counter::Ip4NotForwardable);
        }
        if pkt.meta.adjacency == NO_ROUTE {
            cx.count(Counter::Ip4NoRoute);
            cx.trace(pkt, IP4_LOOKUP, || {
                format!("vrf {} {}: no route", pkt.meta.vrf, Ipv4Addr::from(dst))
            });
            pkt.meta.scratch = IcmpErrorSpec::NET_UNREACHABLE.encode();
            return 2;
        }
        let adj = tables.adjacencies[pkt.meta.adjacency as usize];
        cx.trace(pkt, IP4_LOOKUP, || {
            format!(
                "vrf {} {}: adjacency {} ({adj})",
                pkt.meta.vrf,
                Ipv4Addr::from(dst),
                pkt.meta.adjacency
            )
        });
        let verdict = match adj {
            // What arrives on the uplink for the node may be the reply of a NATed
            // session; what leaves by it may need translating.
            Adjacency::Local if snat_uplink == Some(pkt.meta.rx_port) => 5,
            Adjacency::Local => 0,
            Adjacency::Drop => return drop_verdict(Counter::Ip4NullRoute),
            Adjacency::Connected { port } | Adjacency::Via { port, .. }
                if snat_uplink == Some(port) =>
            {
                4
            }
            Adjacency::Connected { .. } | Adjacency::Via { .. } => 1,
            Adjacency::Tunnel { .. } => 3,
        };
        // Offloaded work (a TCP super-frame, a partial checksum) is finished in
        // software unless the frame leaves, as it is, by a port that takes it.
        if !pkt.offload().is_none() {
            let passes_whole = match adj {
                Adjacency::Connected { port } | Adjacency::Via { port, .. } => {
                    verdict == 1 && cx.w.port_tx_offloads.get(usize::from(port)) == Some(&true)
                }
                // ip4-local answers with packets of its own.
                Adjacency::Local | Adjacency::Drop => true,
                Adjacency::Tunnel { .. } => false,
            };
            if !passes_whole {
                return 6;
            }
        }
        verdict
    }
}

// ---------------------------------------------------------------------------------------

/// Packets for the dataplane's own addresses: answers pings, refuses the rest.
pub struct Ip4Local;

impl GraphNode for Ip4Local {
    fn name(&self) -> &'static str {
        IP4_LOCAL
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP, ICMP_ERROR, crate::vxlan::VXLAN_DECAP]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let vxlan = cx.tables.vxlan.is_some();
        for mut pkt in input.drain(..) {
            let ip = &pkt.data()[ETH_HDR_LEN..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let frag = read_u16(ip, IP4_FRAG);
            if frag & (IP4_MF | IP4_OFFSET_MASK) != 0 {
                cx.drop_packet(pkt, Counter::LocalFragment);
                continue;
            }
            match ip[IP4_PROTO] {
                PROTO_ICMP => {
                    let icmp = &ip[ihl..];
                    if icmp.len() < ICMP_HDR_LEN || ones_complement_sum(icmp, 0) != 0xffff {
                        cx.drop_packet(pkt, Counter::LocalBadIcmp);
                        continue;
                    }
                    if icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0 {
                        cx.drop_packet(pkt, Counter::LocalIcmpIgnored);
                        continue;
                    }
                    echo_reply_in_place(&mut pkt, ihl);
                    cx.count(Counter::LocalEchoReplies);
                    cx.trace(&pkt, IP4_LOCAL, || {
                        format!("echo reply: {}", describe_ip4(pkt.data()))
                    });
                    next.enqueue(0, pkt);
                }
                PROTO_UDP
                    if vxlan
                        && ip.len() >= ihl + 4
                        && read_u16(ip, ihl + 2) == crate::tables::VXLAN_PORT =>
                {
                    next.enqueue(2, pkt);
                }
                PROTO_UDP => {
                    cx.count(Counter::LocalUdpNoListener);
                    cx.trace(&pkt, IP4_LOCAL, || "udp, no listener".to_string());
                    to_icmp_error(next, 1, pkt, IcmpErrorSpec::PORT_UNREACHABLE);
                }
                PROTO_TCP => cx.drop_packet(pkt, Counter::LocalTcpNoListener),
                _ => {
                    cx.count(Counter::LocalUnknownProtocol);
                    to_icmp_error(next, 1, pkt, IcmpErrorSpec::PROTOCOL_UNREACHABLE);
                }
            }
        }
    }
}

/// Turns an echo request into its reply: swap addresses, fresh TTL, type 0.
fn echo_reply_in_place(pkt: &mut PacketBuf, ihl: usize) {
    let d = pkt.data_mut();
    let ip = &mut d[ETH_HDR_LEN..];
    let src = read_u32(ip, IP4_SRC);
    let dst = read_u32(ip, IP4_DST);
    write_u32(ip, IP4_SRC, dst);
    write_u32(ip, IP4_DST, src);
    ip[IP4_TTL] = 64;
    ip4_set_header_checksum(&mut ip[..ihl]);
    let icmp = &mut ip[ihl..];
    let old = read_u16(icmp, 0);
    icmp[0] = ICMP_ECHO_REPLY;
    let c = checksum_update16(read_u16(icmp, 2), old, read_u16(icmp, 0));
    write_u16(icmp, 2, c);
    // The reply is routed like any packet, in the VRF it came from.
}

// ---------------------------------------------------------------------------------------

/// Rewrites the Ethernet header for the adjacency, decrements TTL, checks MTU.
pub struct Ip4Rewrite;

/// How often an unresolved next hop is asked for.
const ARP_RETRY_NS: u64 = 100_000_000;

impl Ip4Rewrite {
    /// Turns the packet into an ARP request for `target` out of `iface`.
    fn glean(pkt: &mut PacketBuf, iface: &Interface, source: Ipv4Addr, target: Ipv4Addr) {
        pkt.truncate(0);
        pkt.set_offload(contiv_hw::Offload::NONE);
        if !pkt.set_len(ETH_HDR_LEN + ARP_LEN) {
            return;
        }
        let d = pkt.data_mut();
        write_eth_header(d, MacAddr::BROADCAST, iface.mac, ETHERTYPE_ARP);
        let a = &mut d[ETH_HDR_LEN..];
        write_u16(a, 0, 1);
        write_u16(a, 2, ETHERTYPE_IP4);
        a[4] = 6;
        a[5] = 4;
        write_u16(a, ARP_OP, ARP_OP_REQUEST);
        a[ARP_SHA..ARP_SHA + 6].copy_from_slice(&iface.mac.0);
        write_u32(a, ARP_SPA, u32::from(source));
        a[ARP_THA..ARP_THA + 6].copy_from_slice(&[0; 6]);
        write_u32(a, ARP_TPA, u32::from(target));
        pkt.meta.tx_port = iface.port;
    }
}

impl GraphNode for Ip4Rewrite {
    fn name(&self) -> &'static str {
        IP4_REWRITE
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[INTERFACE_OUTPUT, ICMP_ERROR]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        let mut last = RewriteCache::default();
        let verdicts = next.verdicts(input.len());
        for (pkt, verdict) in input.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = match tables.rewrites.get(pkt.meta.adjacency as usize) {
                Some(Some(r)) if Self::rewrite_fast(cx, tables, r, pkt, &mut last) => 0,
                _ => Self::rewrite_the_long_way(cx, tables, pkt, &mut last),
            };
        }
        next.dispatch(cx, input);
    }
}

/// What ip4-rewrite resolved for the previous packet of the vector: packets of one
/// vector mostly leave by the same port to the same next hop, so each is looked up once
/// (saving an interface lookup and, on connected routes, a hash probe per packet).
#[derive(Default)]
struct RewriteCache<'t> {
    iface: Option<(u16, Option<&'t Interface>)>,
    next_hop: Option<(u16, u32, MacAddr)>,
}

impl RewriteCache<'_> {
    /// The MAC of `next_hop` on `port`: the previous packet's, a static neighbour, or one
    /// this worker learned by ARP (remembered for the next packet when found).
    #[inline]
    fn next_hop_mac(
        &mut self,
        tables: &Tables,
        learned: &NeighbourCache,
        port: u16,
        next_hop: u32,
    ) -> Option<MacAddr> {
        if let Some((p, nh, mac)) = self.next_hop {
            if p == port && nh == next_hop {
                return Some(mac);
            }
        }
        let mac = neighbour_mac(tables, learned, port, next_hop)?;
        self.next_hop = Some((port, next_hop, mac));
        Some(mac)
    }
}

/// A static neighbour's MAC, or one this worker learned by ARP. Out of line: most packets
/// find their next hop in the [`RewriteCache`].
#[inline(never)]
fn neighbour_mac(tables: &Tables, learned: &NeighbourCache, port: u16, ip: u32) -> Option<MacAddr> {
    tables
        .neighbours
        .get(&(port, ip))
        .copied()
        .or_else(|| learned.get(port, ip))
}

impl Ip4Rewrite {
    /// The common case in one go: an adjacency whose rewrite is complete, a packet that is
    /// not traced, has no offloaded work, has TTL to spare and fits the MTU. `false`
    /// (nothing changed) sends the packet the long way, which handles every exception.
    #[inline]
    fn rewrite_fast(
        cx: &NodeCx<'_>,
        tables: &Tables,
        r: &crate::tables::Rewrite,
        pkt: &mut PacketBuf,
        last: &mut RewriteCache<'_>,
    ) -> bool {
        if pkt.meta.trace != 0 || !pkt.offload().is_none() {
            return false;
        }
        let fits = pkt.len() - ETH_HDR_LEN <= usize::from(r.mtu);
        let Some(h) = eth_ip4_mut(pkt.data_mut()) else {
            return false;
        };
        let ttl_at = ETH_HDR_LEN + IP4_TTL;
        if h[ttl_at] <= 1 || !fits {
            return false;
        }
        if r.next_hop_known {
            h[..ETH_HDR_LEN].copy_from_slice(&r.header);
        } else {
            let dst = read_u32(h, ETH_HDR_LEN + IP4_DST);
            // Unresolved: the long way asks for it.
            let Some(mac) = last.next_hop_mac(tables, &cx.w.neighbours, r.port, dst) else {
                return false;
            };
            h[..ETH_HDR_LEN].copy_from_slice(&r.header);
            h[ETH_DST..ETH_DST + 6].copy_from_slice(&mac.0);
        }
        decrement_ttl(h);
        pkt.meta.tx_port = r.port;
        true
    }

    /// Every case: traced, offloaded, TTL expiring, too big, next hop unresolved.
    #[inline(never)]
    fn rewrite_the_long_way<'t>(
        cx: &mut NodeCx<'_>,
        tables: &'t Tables,
        pkt: &mut PacketBuf,
        last: &mut RewriteCache<'t>,
    ) -> Verdict {
        let adj_index = pkt.meta.adjacency as usize;
        let (port, next_hop) = match tables.adjacencies[adj_index] {
            Adjacency::Via { port, next_hop } => (port, u32::from(next_hop)),
            Adjacency::Connected { port } => (port, read_u32(pkt.data(), ETH_HDR_LEN + IP4_DST)),
            // ip4-lookup sends only Via and Connected here.
            Adjacency::Drop | Adjacency::Local | Adjacency::Tunnel { .. } => {
                return drop_verdict(Counter::Ip4NullRoute)
            }
        };
        let iface = match last.iface {
            Some((p, i)) if p == port => i,
            _ => {
                let i = tables.interface(port).filter(|i| i.up);
                last.iface = Some((port, i));
                i
            }
        };
        let Some(iface) = iface else {
            return drop_verdict(Counter::RewriteInterfaceDown);
        };
        let len = pkt.len();
        // ip4-input let only frames with a whole IPv4 header through.
        let Some(h) = eth_ip4(pkt.data()) else {
            return drop_verdict(Counter::Ip4TooShort);
        };
        if h[ETH_HDR_LEN + IP4_TTL] <= 1 {
            cx.count(Counter::RewriteTtlExpired);
            cx.trace(pkt, IP4_REWRITE, || "ttl expired".to_string());
            pkt.meta.scratch = IcmpErrorSpec::TTL_EXCEEDED.encode();
            return 1;
        }
        // A super-frame passes whole (ip4-lookup sent it here only for a port that takes
        // it): each of its segments must fit.
        let offload = pkt.offload();
        let wire_len = if offload.segments() {
            contiv_hw::Offload::checksum_layout(pkt.data()).map_or(len, |l| {
                l.start + l.l4_header_len + usize::from(offload.gso_size)
            })
        } else {
            len
        };
        if wire_len - ETH_HDR_LEN > usize::from(iface.mtu) {
            if read_u16(h, ETH_HDR_LEN + IP4_FRAG) & IP4_DF == 0 {
                return drop_verdict(Counter::RewriteFragmentationUnsupported);
            }
            cx.count(Counter::RewriteMtuExceeded);
            pkt.meta.scratch = IcmpErrorSpec::fragmentation_needed(iface.mtu).encode();
            return 1;
        }
        let Some(mac) = last.next_hop_mac(tables, &cx.w.neighbours, port, next_hop) else {
            let target = Ipv4Addr::from(next_hop);
            let Some(source) = iface.source_for(target) else {
                return drop_verdict(Counter::RewriteNoSourceAddress);
            };
            if !cx
                .w
                .neighbours
                .may_ask(port, next_hop, cx.w.now, ARP_RETRY_NS)
            {
                return drop_verdict(Counter::RewriteNeighbourUnresolved);
            }
            Self::glean(pkt, iface, source, target);
            cx.count(Counter::RewriteArpRequestsSent);
            cx.trace(pkt, IP4_REWRITE, || {
                format!(
                    "{target} unresolved: arp who-has {target} tell {source} on {}",
                    iface.name
                )
            });
            return 0;
        };
        let Some(h) = eth_ip4_mut(pkt.data_mut()) else {
            return drop_verdict(Counter::Ip4TooShort);
        };
        write_eth_header(h, mac, iface.mac, ETHERTYPE_IP4);
        decrement_ttl(h);
        pkt.meta.tx_port = port;
        cx.trace(pkt, IP4_REWRITE, || {
            format!("tx {} dst {mac} ttl-1", iface.name)
        });
        0
    }
}

// ---------------------------------------------------------------------------------------

/// Rate limit of ICMP errors per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorConfig {
    /// Errors per second sustained.
    pub per_second: u32,
    /// Errors that may go out back to back.
    pub burst: u32,
}

impl Default for IcmpErrorConfig {
    fn default() -> Self {
        IcmpErrorConfig {
            per_second: 1000,
            burst: 100,
        }
    }
}

/// Builds ICMP errors (time exceeded, unreachable) about a packet, rate limited.
pub struct IcmpError {
    cfg: IcmpErrorConfig,
    /// Tokens in thousandths, refilled from the time the caller passes.
    milli_tokens: u64,
    last_refill: Timestamp,
}

impl IcmpError {
    pub fn new(cfg: IcmpErrorConfig) -> Self {
        IcmpError {
            cfg,
            milli_tokens: u64::from(cfg.burst) * 1000,
            last_refill: Timestamp::ZERO,
        }
    }

    fn take_token(&mut self, now: Timestamp) -> bool {
        let elapsed = now.saturating_sub(self.last_refill);
        if elapsed > 0 {
            // per_second tokens per 1e9 ns, in thousandths: elapsed * per_second / 1e6.
            let add = elapsed.saturating_mul(u64::from(self.cfg.per_second)) / 1_000_000;
            self.milli_tokens = (self.milli_tokens + add).min(u64::from(self.cfg.burst) * 1000);
            self.last_refill = now;
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// RFC 1122 3.2.2: no error about an ICMP error, a non-first fragment, or a packet
    /// whose source is not a unicast host.
    fn suppressed(ip: &[u8]) -> bool {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if !is_unicast_source(read_ip(ip, IP4_SRC)) {
            return true;
        }
        if read_u16(ip, IP4_FRAG) & IP4_OFFSET_MASK != 0 {
            return true;
        }
        if ip[IP4_PROTO] == PROTO_ICMP {
            // Truncated ICMP: cannot tell, so do not answer.
            let Some(&t) = ip.get(ihl) else { return true };
            return !matches!(t, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY | 13 | 14 | 15 | 16);
        }
        false
    }

    fn build(pkt: &mut PacketBuf, spec: IcmpErrorSpec, source: Ipv4Addr) -> bool {
        let l3_len = pkt.len() - ETH_HDR_LEN;
        let ip = &pkt.data()[ETH_HDR_LEN..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let quoted = l3_len.min(ihl + 8);
        let original_src = read_u32(ip, IP4_SRC);
        const EXTRA: usize = IP4_MIN_HDR_LEN + ICMP_HDR_LEN;
        if pkt.prepend(EXTRA).is_none() {
            return false;
        }
        pkt.truncate(ETH_HDR_LEN + EXTRA + quoted);
        pkt.set_offload(contiv_hw::Offload::NONE);
        let d = pkt.data_mut();
        write_u16(d, ETH_TYPE, ETHERTYPE_IP4);
        let total = (EXTRA + quoted) as u16;
        let ip = &mut d[ETH_HDR_LEN..];
        ip[..IP4_MIN_HDR_LEN].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, PROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        write_u16(ip, IP4_TOTAL_LEN, total);
        write_u32(ip, IP4_SRC, u32::from(source));
        write_u32(ip, IP4_DST, original_src);
        ip4_set_header_checksum(&mut ip[..IP4_MIN_HDR_LEN]);
        let icmp = &mut ip[IP4_MIN_HDR_LEN..];
        icmp[..ICMP_HDR_LEN].copy_from_slice(&[spec.icmp_type, spec.code, 0, 0, 0, 0, 0, 0]);
        write_u16(icmp, 6, spec.mtu);
        let c = internet_checksum(icmp);
        write_u16(icmp, 2, c);
        true
    }
}

impl GraphNode for IcmpError {
    fn name(&self) -> &'static str {
        ICMP_ERROR
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let tables = cx.tables;
        for mut pkt in input.drain(..) {
            let spec = IcmpErrorSpec::decode(pkt.meta.scratch);
            if Self::suppressed(&pkt.data()[ETH_HDR_LEN..]) {
                cx.drop_packet(pkt, Counter::IcmpSuppressed);
                continue;
            }
            let original_src = read_ip(pkt.data(), ETH_HDR_LEN + IP4_SRC);
            let Some(source) = tables
                .interface(pkt.meta.rx_port)
                .and_then(|i| i.source_for(original_src))
            else {
                cx.drop_packet(pkt, Counter::IcmpNoSourceAddress);
                continue;
            };
            if !self.take_token(cx.w.now) {
                cx.drop_packet(pkt, Counter::IcmpRateLimited);
                continue;
            }
            if !Self::build(&mut pkt, spec, source) {
                cx.drop_packet(pkt, Counter::IcmpNoHeadroom);
                continue;
            }
            cx.count(if spec.icmp_type == ICMP_TIME_EXCEEDED {
                Counter::IcmpTimeExceededSent
            } else {
                Counter::IcmpUnreachableSent
            });
            cx.trace(&pkt, ICMP_ERROR, || {
                format!(
                    "icmp type {} code {} from {source} to {original_src}",
                    spec.icmp_type, spec.code
                )
            });
            next.enqueue(0, pkt);
        }
    }
}

// ---------------------------------------------------------------------------------------

/// Queues packets on their output port; the engine transmits the queues in bursts.
pub struct InterfaceOutput;

impl GraphNode for InterfaceOutput {
    fn name(&self) -> &'static str {
        INTERFACE_OUTPUT
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, _next: &mut Next<'_>) {
        let Some(first) = input.first() else { return };
        let port = usize::from(first.meta.tx_port);
        // The whole vector to one port (the usual case) is moved as one block.
        // Branch-free over the vector (see `Next::dispatch`).
        let odd = input.iter().fold(0, |acc, p| {
            acc | (p.meta.tx_port ^ first.meta.tx_port) | p.meta.trace
        });
        if port < cx.w.tx.len() && odd == 0 {
            cx.w.tx[port].append(input);
            return;
        }
        for pkt in input.drain(..) {
            let port = usize::from(pkt.meta.tx_port);
            if port >= cx.w.tx.len() {
                cx.drop_packet(pkt, Counter::OutputNoSuchPort);
                continue;
            }
            cx.trace(&pkt, INTERFACE_OUTPUT, || {
                format!("port {port}, {} bytes", pkt.len())
            });
            cx.w.tx[port].push(pkt);
        }
    }
}
