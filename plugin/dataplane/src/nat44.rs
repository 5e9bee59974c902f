//! Source NAT of pods' traffic to the outside (NAT44, endpoint-dependent).
//!
//! A packet from an *inside* source (the node's pods, its host interconnect) that leaves
//! by the uplink towards an address outside the cluster gets the node's address as its
//! source, and a port (for ICMP echo: an identifier) chosen from the node's pool; the
//! session remembers the mapping so that the replies arriving on the uplink for the node
//! address are translated back and routed to the pod. Traffic towards the cluster
//! (the `exempt` prefixes: pod and host subnets, the nodes' addresses) is never
//! translated.
//!
//! ```text
//!  ip4-lookup --(via uplink)--> nat44-out --> ip4-rewrite
//!  ip4-lookup --(local, from uplink)--> nat44-in --(session)--> ip4-lookup
//!                                              \--(none)-----> ip4-local
//! ```
//!
//! Sessions live in the worker ([`Nat44Sessions`]): one slab sized at start, two hash
//! indexes with twice the slab's capacity (so they never grow or reallocate), and a port
//! bitmap per protocol. Nothing is allocated per packet. Idle sessions expire by
//! protocol and TCP state; a sweep examines a few slots per vector, and a session found
//! expired on lookup is replaced.
//!
//! What a new session needs: TCP only from a SYN (a pod answering a connection the
//! outside opened to it by route is not translated), ICMP only from an echo request,
//! UDP from any datagram.

use std::net::Ipv4Addr;

use contiv_hw::{PacketBuf, PacketVec, Timestamp};
use rustc_hash::FxHashMap;

use crate::counters::Counter;
use crate::graph::{drop_verdict, GraphNode, Next, NodeCx};
use crate::headers::*;
use crate::nodes::{IP4_LOCAL, IP4_LOOKUP, IP4_REWRITE};
use crate::tables::Ipv4Net;

pub const NAT44_OUT: &str = "nat44-out";
pub const NAT44_IN: &str = "nat44-in";

/// What the node translates, from the control plane (see [`crate::TableChange::SetSnat`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatConfig {
    /// The uplink's port: translation happens on traffic leaving and entering by it.
    pub uplink: u16,
    /// The address sources are translated to (the node's address).
    pub external: Ipv4Addr,
    /// Sources that are translated.
    pub inside: Vec<Ipv4Net>,
    /// Destinations never translated towards (the cluster).
    pub exempt: Vec<Ipv4Net>,
}

impl SnatConfig {
    #[inline]
    fn translates(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.inside.iter().any(|n| n.contains(src)) && !self.exempt.iter().any(|n| n.contains(dst))
    }
}

/// Idle timeouts, in nanoseconds of the engine's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    pub tcp_established: u64,
    /// TCP before the reply is seen, and after FIN or RST.
    pub tcp_transitory: u64,
    pub udp: u64,
    pub icmp: u64,
}

const SECOND: u64 = 1_000_000_000;

impl Default for NatTimeouts {
    /// VPP's NAT44 defaults: 7440 s, 240 s, 300 s, 60 s.
    fn default() -> Self {
        NatTimeouts {
            tcp_established: 7440 * SECOND,
            tcp_transitory: 240 * SECOND,
            udp: 300 * SECOND,
            icmp: 60 * SECOND,
        }
    }
}

/// Size and timeouts of a worker's session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    pub max_sessions: usize,
    pub timeouts: NatTimeouts,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            max_sessions: 65_536,
            timeouts: NatTimeouts::default(),
        }
    }
}

/// One direction of a flow as seen on the wire. For ICMP echo the identifier stands in
/// for the port on the side that chose it (the requester) and the other port is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpState {
    /// SYN seen from inside, no answer yet.
    Opening,
    Established,
    /// FIN or RST seen.
    Closing,
}

impl Session {
    /// A packet of the session went by: it is alive, and its TCP flags move the state
    /// (the first answer from outside establishes it; RST, or FIN both ways, closes it).
    fn touch(&mut self, now: Timestamp, flags: u8, outbound: bool) {
        self.last_seen = now;
        if flags & TCP_RST != 0 {
            self.tcp = TcpState::Closing;
        } else if flags & TCP_FIN != 0 {
            if outbound {
                self.fin_out = true;
            } else {
                self.fin_in = true;
            }
            if self.fin_out && self.fin_in {
                self.tcp = TcpState::Closing;
            }
        } else if !outbound && self.inside.proto == PROTO_TCP && self.tcp == TcpState::Opening {
            self.tcp = TcpState::Established;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Session {
    /// As the inside sends it.
    inside: FlowKey,
    /// As the outside sends the replies.
    outside: FlowKey,
    last_seen: Timestamp,
    tcp: TcpState,
    fin_out: bool,
    fin_in: bool,
}

/// A session as [`Nat44Sessions::sessions`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub proto: u8,
    pub inside: (Ipv4Addr, u16),
    pub external: (Ipv4Addr, u16),
    pub remote: (Ipv4Addr, u16),
    pub idle_ns: u64,
}

impl std::fmt::Display for SessionInfo {
    /// `tcp 10.1.1.2:40000 -> 192.0.2.1:80 as 192.168.16.1:1024, idle 1.5 s`: inside
    /// source, remote, and the node's address and port the remote sees (for ICMP, the
    /// echo identifiers in place of ports).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            PROTO_ICMP => "icmp",
            _ => "ip",
        };
        write!(
            f,
            "{proto} {}:{} -> {}:{} as {}:{}, idle {:.1} s",
            self.inside.0,
            self.inside.1,
            self.remote.0,
            self.remote.1,
            self.external.0,
            self.external.1,
            self.idle_ns as f64 / SECOND as f64
        )
    }
}

/// Ports (or ICMP identifiers) 1024..=65535 of one protocol, as a bitmap.
struct PortPool {
    used: Box<[u64; 1024]>,
    cursor: usize,
}

const FIRST_PORT: u16 = 1024;

impl PortPool {
    fn new() -> Self {
        let mut used = Box::new([0u64; 1024]);
        // Ports below 1024 are never handed out.
        for w in used.iter_mut().take(usize::from(FIRST_PORT) / 64) {
            *w = u64::MAX;
        }
        PortPool {
            used,
            cursor: usize::from(FIRST_PORT) / 64,
        }
    }

    fn is_free(&self, port: u16) -> bool {
        self.used[usize::from(port) / 64] & (1 << (port % 64)) == 0
    }

    fn take(&mut self, port: u16) {
        self.used[usize::from(port) / 64] |= 1 << (port % 64);
    }

    fn release(&mut self, port: u16) {
        self.used[usize::from(port) / 64] &= !(1 << (port % 64));
    }

    /// The preferred port when it is free (sources keep their port where they can),
    /// else the next free one after the last handed out.
    fn allocate(&mut self, preferred: u16) -> Option<u16> {
        if preferred >= FIRST_PORT && self.is_free(preferred) {
            self.take(preferred);
            return Some(preferred);
        }
        let words = self.used.len();
        for i in 0..words {
            let w = (self.cursor + i) % words;
            let bits = self.used[w];
            if bits != u64::MAX {
                let port = (w * 64) as u16 + (!bits).trailing_zeros() as u16;
                self.take(port);
                self.cursor = w;
                return Some(port);
            }
        }
        None
    }
}

/// The worker's NAT sessions. See the module documentation.
pub struct Nat44Sessions {
    cfg: NatConfig,
    slab: Vec<Option<Session>>,
    free: Vec<u32>,
    by_inside: FxHashMap<FlowKey, u32>,
    by_outside: FxHashMap<FlowKey, u32>,
    /// TCP, UDP, ICMP.
    ports: [PortPool; 3],
    sweep_at: usize,
}

/// Slots the sweep examines per vector.
const SWEEP_PER_VECTOR: usize = 32;

fn pool_index(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        _ => 2,
    }
}

/// Why a session could not be made.
enum NewSessionError {
    TableFull,
    NoPorts,
}

impl Nat44Sessions {
    /// An empty table; its memory is taken when SNAT first translates (see
    /// [`Nat44Sessions::reserve`]), so engines that never translate pay nothing.
    pub fn new(cfg: NatConfig) -> Self {
        Nat44Sessions {
            cfg,
            slab: Vec::new(),
            free: Vec::new(),
            by_inside: FxHashMap::default(),
            by_outside: FxHashMap::default(),
            ports: [PortPool::new(), PortPool::new(), PortPool::new()],
            sweep_at: 0,
        }
    }

    /// Takes the table's whole memory, once: the slab, and indexes with twice its
    /// capacity so they never grow (a hash map at under half its capacity rehashes in
    /// place, if at all).
    pub fn reserve(&mut self) {
        let n = self.cfg.max_sessions;
        if self.slab.len() == n {
            return;
        }
        self.slab = vec![None; n];
        self.free = (0..n as u32).rev().collect();
        self.by_inside = FxHashMap::with_capacity_and_hasher(2 * n, Default::default());
        self.by_outside = FxHashMap::with_capacity_and_hasher(2 * n, Default::default());
        self.sweep_at = 0;
    }

    pub fn config(&self) -> NatConfig {
        self.cfg
    }

    pub fn len(&self) -> usize {
        self.by_inside.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inside.is_empty()
    }

    fn timeout(&self, s: &Session) -> u64 {
        let t = &self.cfg.timeouts;
        match s.inside.proto {
            PROTO_TCP => match s.tcp {
                TcpState::Established => t.tcp_established,
                TcpState::Opening | TcpState::Closing => t.tcp_transitory,
            },
            PROTO_UDP => t.udp,
            _ => t.icmp,
        }
    }

    fn expired(&self, s: &Session, now: Timestamp) -> bool {
        now.saturating_sub(s.last_seen) > self.timeout(s)
    }

    fn remove(&mut self, index: u32) {
        if let Some(s) = self.slab[index as usize].take() {
            self.by_inside.remove(&s.inside);
            self.by_outside.remove(&s.outside);
            // The external port is the outside key's destination port for every protocol.
            self.ports[pool_index(s.inside.proto)].release(s.outside.dport);
            self.free.push(index);
        }
    }

    /// Removes up to `SWEEP_PER_VECTOR` slots' worth of expired sessions; returns how
    /// many it removed.
    fn sweep(&mut self, now: Timestamp) -> u64 {
        let n = self.slab.len();
        if n == 0 || self.by_inside.is_empty() {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..SWEEP_PER_VECTOR.min(n) {
            let i = self.sweep_at;
            self.sweep_at = (self.sweep_at + 1) % n;
            if let Some(s) = &self.slab[i] {
                if self.expired(s, now) {
                    self.remove(i as u32);
                    removed += 1;
                }
            }
        }
        removed
    }

    fn create(
        &mut self,
        inside: FlowKey,
        external: Ipv4Addr,
        now: Timestamp,
    ) -> Result<u32, NewSessionError> {
        let Some(&index) = self.free.last() else {
            return Err(NewSessionError::TableFull);
        };
        let port = self.ports[pool_index(inside.proto)]
            .allocate(inside.sport)
            .ok_or(NewSessionError::NoPorts)?;
        self.free.pop();
        // Replies come from the remote end to the external port (for ICMP, the echo
        // reply with the identifier we chose; the inside key's dport is 0 then too).
        let outside = FlowKey {
            src: inside.dst,
            dst: u32::from(external),
            sport: inside.dport,
            dport: port,
            proto: inside.proto,
        };
        self.slab[index as usize] = Some(Session {
            inside,
            outside,
            last_seen: now,
            tcp: TcpState::Opening,
            fin_out: false,
            fin_in: false,
        });
        self.by_inside.insert(inside, index);
        self.by_outside.insert(outside, index);
        Ok(index)
    }

    /// The live session of `key`, as sent from the inside (`outbound`) or from the
    /// outside; one found idle past its timeout is removed first. Returns the session
    /// and whether one expired.
    fn live(&mut self, outbound: bool, key: &FlowKey, now: Timestamp) -> (Option<u32>, bool) {
        let index = if outbound {
            self.by_inside.get(key)
        } else {
            self.by_outside.get(key)
        };
        let Some(&index) = index else {
            return (None, false);
        };
        if self.slab[index as usize]
            .as_ref()
            .is_none_or(|s| self.expired(s, now))
        {
            self.remove(index);
            return (None, true);
        }
        (Some(index), false)
    }

    /// The sessions, sorted, for display.
    pub fn sessions(&self, now: Timestamp) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .slab
            .iter()
            .flatten()
            .map(|s| SessionInfo {
                proto: s.inside.proto,
                inside: (Ipv4Addr::from(s.inside.src), s.inside.sport),
                external: (Ipv4Addr::from(s.outside.dst), s.outside.dport),
                remote: (Ipv4Addr::from(s.inside.dst), s.inside.dport),
                idle_ns: now.saturating_sub(s.last_seen),
            })
            .collect();
        v.sort_by_key(|s| (s.proto, s.inside, s.remote));
        v
    }
}

/// TCP flags.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Why a packet has no flow key.
enum NoFlow {
    /// It cannot be translated: dropped for this reason.
    Drop(Counter),
    /// ICMP other than echo (errors, for one): never translated.
    NotEcho,
}

/// The transport header of an IPv4 packet (`ip` starts at the IP header): the flow key
/// as sent, the TCP flags (0 for others), and whether the packet may open a session.
#[inline]
fn flow_of(ip: &[u8], outbound: bool) -> Result<(FlowKey, u8, bool), NoFlow> {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if read_u16(ip, IP4_FRAG) & (IP4_MF | IP4_OFFSET_MASK) != 0 {
        return Err(NoFlow::Drop(Counter::NatFragment));
    }
    let proto = ip[IP4_PROTO];
    let src = read_u32(ip, IP4_SRC);
    let dst = read_u32(ip, IP4_DST);
    let l4 = &ip[ihl..];
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let need = if proto == PROTO_TCP { 20 } else { 8 };
            if l4.len() < need {
                return Err(NoFlow::Drop(Counter::NatTruncated));
            }
            let flags = if proto == PROTO_TCP { l4[13] } else { 0 };
            let opens = proto == PROTO_UDP || flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
            Ok((
                FlowKey {
                    src,
                    dst,
                    sport: read_u16(l4, 0),
                    dport: read_u16(l4, 2),
                    proto,
                },
                flags,
                opens,
            ))
        }
        PROTO_ICMP => {
            if l4.len() < ICMP_HDR_LEN {
                return Err(NoFlow::Drop(Counter::NatTruncated));
            }
            let id = read_u16(l4, 4);
            let (want, opens) = if outbound {
                (ICMP_ECHO_REQUEST, true)
            } else {
                (ICMP_ECHO_REPLY, false)
            };
            if l4[0] != want || l4[1] != 0 {
                return Err(NoFlow::NotEcho);
            }
            let (sport, dport) = if outbound { (id, 0) } else { (0, id) };
            Ok((
                FlowKey {
                    src,
                    dst,
                    sport,
                    dport,
                    proto,
                },
                0,
                opens,
            ))
        }
        _ => Err(NoFlow::Drop(Counter::NatUnsupportedProtocol)),
    }
}

/// Rewrites an address at `addr_at` and a port (or ICMP identifier) at `l4 + port_at`,
/// updating the IP header checksum and the transport checksum.
#[inline]
fn rewrite(ip: &mut [u8], addr_at: usize, new_addr: u32, port_at: usize, new_port: u16) {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[IP4_PROTO];
    let old_addr = read_u32(ip, addr_at);
    write_u32(ip, addr_at, new_addr);
    let (oh, ol) = ((old_addr >> 16) as u16, old_addr as u16);
    let (nh, nl) = ((new_addr >> 16) as u16, new_addr as u16);
    let mut c = read_u16(ip, IP4_CSUM);
    c = checksum_update16(c, oh, nh);
    c = checksum_update16(c, ol, nl);
    write_u16(ip, IP4_CSUM, c);
    let l4 = &mut ip[ihl..];
    let old_port = read_u16(l4, port_at);
    write_u16(l4, port_at, new_port);
    let csum_at = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => 2,
    };
    let mut c = read_u16(l4, csum_at);
    if proto == PROTO_UDP && c == 0 {
        // No checksum was sent: none to update.
        return;
    }
    if proto != PROTO_ICMP {
        // The pseudo-header holds the address; ICMP's checksum does not cover it.
        c = checksum_update16(c, oh, nh);
        c = checksum_update16(c, ol, nl);
    }
    c = checksum_update16(c, old_port, new_port);
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    write_u16(l4, csum_at, c);
}

fn describe(key: &FlowKey) -> String {
    format!(
        "proto {} {}:{} -> {}:{}",
        key.proto,
        Ipv4Addr::from(key.src),
        key.sport,
        Ipv4Addr::from(key.dst),
        key.dport
    )
}

/// Translates the source of inside-to-outside packets leaving by the uplink.
pub struct Nat44Out;

impl GraphNode for Nat44Out {
    fn name(&self) -> &'static str {
        NAT44_OUT
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_REWRITE]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let Some(snat) = cx.tables.snat.as_deref() else {
            // ip4-lookup sends packets here only while SNAT is configured.
            for pkt in input.drain(..) {
                cx.drop_packet(pkt, Counter::NatNotConfigured);
            }
            return;
        };
        let now = cx.w.now;
        cx.w.nat.reserve();
        let expired = cx.w.nat.sweep(now);
        if expired > 0 {
            cx.w.counters.add(Counter::NatSessionsExpired, expired);
        }
        let verdicts = next.verdicts(input.len());
        for (pkt, verdict) in input.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = Self::translate(cx, snat, pkt, now);
        }
        next.dispatch(cx, input);
    }
}

impl Nat44Out {
    #[inline]
    fn translate(
        cx: &mut NodeCx<'_>,
        snat: &SnatConfig,
        pkt: &mut PacketBuf,
        now: Timestamp,
    ) -> crate::graph::Verdict {
        let ip = &pkt.data()[ETH_HDR_LEN..];
        let (src, dst) = (read_ip(ip, IP4_SRC), read_ip(ip, IP4_DST));
        if !snat.translates(src, dst) {
            return 0;
        }
        let (key, flags, opens) = match flow_of(ip, true) {
            Ok(f) => f,
            Err(NoFlow::NotEcho) => {
                // ICMP errors and the like from a pod pass untranslated.
                cx.count(Counter::NatPassedUntranslated);
                return 0;
            }
            Err(NoFlow::Drop(reason)) => return drop_verdict(reason),
        };
        let (found, expired) = cx.w.nat.live(true, &key, now);
        if expired {
            cx.count(Counter::NatSessionsExpired);
        }
        let nat = &mut cx.w.nat;
        let index = match found {
            Some(i) => i,
            None if !opens => {
                // A TCP segment with no session that is not a SYN: the pod answers a
                // connection opened towards it, which stays untranslated.
                cx.count(Counter::NatPassedUntranslated);
                return 0;
            }
            None => match nat.create(key, snat.external, now) {
                Ok(i) => {
                    cx.count(Counter::NatSessionsCreated);
                    i
                }
                Err(NewSessionError::TableFull) => return drop_verdict(Counter::NatTableFull),
                Err(NewSessionError::NoPorts) => return drop_verdict(Counter::NatNoPorts),
            },
        };
        let Some(s) = cx.w.nat.slab[index as usize].as_mut() else {
            return drop_verdict(Counter::NatTableFull);
        };
        s.touch(now, flags, true);
        let ext_port = s.outside.dport;
        let external = s.outside.dst;
        let port_at = if key.proto == PROTO_ICMP { 4 } else { 0 };
        let ip = &mut pkt.data_mut()[ETH_HDR_LEN..];
        rewrite(ip, IP4_SRC, external, port_at, ext_port);
        cx.count(Counter::NatOutTranslated);
        cx.trace(pkt, NAT44_OUT, || {
            format!(
                "{} as {}:{ext_port}",
                describe(&key),
                Ipv4Addr::from(external)
            )
        });
        0
    }
}

/// Translates the destination of replies arriving on the uplink for the node address.
pub struct Nat44In;

impl GraphNode for Nat44In {
    fn name(&self) -> &'static str {
        NAT44_IN
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP, IP4_LOCAL]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        let now = cx.w.now;
        let verdicts = next.verdicts(input.len());
        for (pkt, verdict) in input.iter_mut().zip(verdicts.iter_mut()) {
            *verdict = Self::translate(cx, pkt, now);
        }
        next.dispatch(cx, input);
    }
}

impl Nat44In {
    #[inline]
    fn translate(
        cx: &mut NodeCx<'_>,
        pkt: &mut PacketBuf,
        now: Timestamp,
    ) -> crate::graph::Verdict {
        let ip = &pkt.data()[ETH_HDR_LEN..];
        // What is not a reply of a session is for the node itself (VXLAN, pings).
        let Ok((key, flags, _)) = flow_of(ip, false) else {
            return 1;
        };
        let (found, expired) = cx.w.nat.live(false, &key, now);
        if expired {
            cx.count(Counter::NatSessionsExpired);
        }
        let Some(s) = found.and_then(|i| cx.w.nat.slab[i as usize].as_mut()) else {
            return 1;
        };
        s.touch(now, flags, false);
        let (inside_addr, inside_port) = (s.inside.src, s.inside.sport);
        let port_at = if key.proto == PROTO_ICMP { 4 } else { 2 };
        let ip = &mut pkt.data_mut()[ETH_HDR_LEN..];
        rewrite(ip, IP4_DST, inside_addr, port_at, inside_port);
        cx.count(Counter::NatInTranslated);
        cx.trace(pkt, NAT44_IN, || {
            format!(
                "{} to {}:{inside_port}",
                describe(&key),
                Ipv4Addr::from(inside_addr)
            )
        });
        0
    }
}
