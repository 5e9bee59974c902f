//! A simulated end host: one port, one address, a gateway, ARP, and enough ICMP and UDP to
//! ping and to send and count datagrams. Packets are built and parsed with etherparse, so
//! the host checks the engine with code that shares nothing with it.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use contiv_hw::{BufferPool, MacAddr, PacketVec, Port, Timestamp, VECTOR_SIZE};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, Icmpv4Type, NetSlice,
    PacketBuilder, SlicedPacket, TransportSlice,
};

use crate::TraceHasher;

/// Frames a host keeps while it waits for ARP; more are dropped and counted.
const PENDING_LIMIT: usize = 4096;

/// What a host saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_bytes_received: u64,
    pub echo_requests_sent: u64,
    pub echo_requests_answered: u64,
    pub echo_replies_received: u64,
    pub time_exceeded_received: u64,
    pub unreachable_received: u64,
    pub arp_requests_sent: u64,
    pub arp_replies_sent: u64,
    pub raw_sent: u64,
    pub pending_dropped: u64,
    pub malformed_received: u64,
    pub frames_received: u64,
}

pub struct SimHost {
    pub name: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    port: Box<dyn Port>,
    pool: BufferPool,
    arp: BTreeMap<Ipv4Addr, MacAddr>,
    /// Frames without their Ethernet header yet, by next hop.
    pending: VecDeque<(Ipv4Addr, Vec<u8>)>,
    out: PacketVec,
    rx: PacketVec,
    pub stats: HostStats,
}

impl SimHost {
    pub fn new(
        name: &str,
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
        port: Box<dyn Port>,
        pool: BufferPool,
    ) -> Self {
        SimHost {
            name: name.to_string(),
            mac: port.mac(),
            ip,
            prefix_len,
            gateway,
            port,
            pool,
            arp: BTreeMap::new(),
            pending: VecDeque::new(),
            out: Vec::with_capacity(VECTOR_SIZE),
            rx: Vec::with_capacity(VECTOR_SIZE),
            stats: HostStats::default(),
        }
    }

    fn on_link(&self, dst: Ipv4Addr) -> bool {
        let m = contiv_dataplane::fib::mask(self.prefix_len);
        u32::from(dst) & m == u32::from(self.ip) & m
    }

    fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        if self.on_link(dst) {
            dst
        } else {
            self.gateway
        }
    }

    fn queue_ip(&mut self, dst: Ipv4Addr, ip_packet: Vec<u8>) {
        let nh = self.next_hop(dst);
        if self.pending.len() >= PENDING_LIMIT {
            self.stats.pending_dropped += 1;
            return;
        }
        let needs_arp = !self.arp.contains_key(&nh) && !self.pending.iter().any(|(h, _)| *h == nh);
        self.pending.push_back((nh, ip_packet));
        if needs_arp {
            self.arp_request(nh);
        }
    }

    fn arp_request(&mut self, target: Ipv4Addr) {
        let frame = arp_frame(
            ArpOperation::REQUEST,
            self.mac,
            MacAddr::BROADCAST,
            (self.mac, self.ip),
            (MacAddr::ZERO, target),
        );
        self.stats.arp_requests_sent += 1;
        self.push_frame(&frame);
    }

    fn push_frame(&mut self, frame: &[u8]) {
        if let Some(mut p) = self.pool.alloc() {
            if p.fill(frame) {
                self.out.push(p);
            } else {
                self.pool.free(p);
            }
        }
    }

    /// Sends a UDP datagram.
    pub fn send_udp(&mut self, dst: Ipv4Addr, dst_port: u16, payload: &[u8], ttl: u8) {
        let b = PacketBuilder::ipv4(self.ip.octets(), dst.octets(), ttl).udp(40000, dst_port);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut v, payload).is_ok() {
            self.stats.udp_sent += 1;
            self.queue_ip(dst, v);
        }
    }

    /// Sends an ICMP echo request.
    pub fn ping(&mut self, dst: Ipv4Addr, seq: u16) {
        let b = PacketBuilder::ipv4(self.ip.octets(), dst.octets(), 64).icmpv4_echo_request(1, seq);
        let payload = [0x5a; 32];
        let mut v = Vec::with_capacity(b.size(payload.len()));
        if b.write(&mut v, &payload).is_ok() {
            self.stats.echo_requests_sent += 1;
            self.queue_ip(dst, v);
        }
    }

    /// Sends a frame exactly as given (for malformed traffic).
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.stats.raw_sent += 1;
        self.push_frame(frame);
    }

    /// The MAC this host resolved for `ip`, if any.
    pub fn resolved(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.arp.get(&ip).copied()
    }

    /// Receives and answers what arrived, sends what can be sent. Returns frames moved.
    pub fn poll(&mut self, now: Timestamp, trace: &mut TraceHasher) -> usize {
        let n = self
            .port
            .rx_burst(&mut self.pool, &mut self.rx, VECTOR_SIZE, now);
        let mut rx = std::mem::take(&mut self.rx);
        for p in rx.drain(..) {
            trace.frame(&self.name, now, p.data());
            self.stats.frames_received += 1;
            self.handle(p.data());
            self.pool.free(p);
        }
        self.rx = rx;
        // Release frames whose next hop is now known.
        let mut i = 0;
        while i < self.pending.len() && self.out.len() < VECTOR_SIZE {
            let nh = self.pending[i].0;
            if let Some(mac) = self.arp.get(&nh).copied() {
                if let Some((_, ip)) = self.pending.remove(i) {
                    let mut frame = Ethernet2Header {
                        source: self.mac.0,
                        destination: mac.0,
                        ether_type: EtherType::IPV4,
                    }
                    .to_bytes()
                    .to_vec();
                    frame.extend_from_slice(&ip);
                    self.push_frame(&frame);
                }
            } else {
                i += 1;
            }
        }
        let sent = self.out.len();
        if sent > 0 {
            self.port.tx_burst(&mut self.out, &mut self.pool, now);
        }
        n + sent
    }

    fn handle(&mut self, frame: &[u8]) {
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            self.stats.malformed_received += 1;
            return;
        };
        match &p.net {
            Some(NetSlice::Arp(a)) => {
                let Ok(a) = a.to_packet().try_eth_ipv4() else {
                    self.stats.malformed_received += 1;
                    return;
                };
                let sender = a.sender_ipv4_addr();
                self.arp.insert(sender, MacAddr(a.sender_mac));
                if a.operation == ArpOperation::REQUEST && a.target_ipv4_addr() == self.ip {
                    let reply = arp_frame(
                        ArpOperation::REPLY,
                        self.mac,
                        MacAddr(a.sender_mac),
                        (self.mac, self.ip),
                        (MacAddr(a.sender_mac), sender),
                    );
                    self.stats.arp_replies_sent += 1;
                    self.push_frame(&reply);
                }
            }
            Some(NetSlice::Ipv4(ip)) => {
                let src = ip.header().source_addr();
                if ip.header().destination_addr() != self.ip {
                    return;
                }
                match &p.transport {
                    Some(TransportSlice::Udp(u)) => {
                        self.stats.udp_received += 1;
                        self.stats.udp_bytes_received += u.payload().len() as u64;
                    }
                    Some(TransportSlice::Icmpv4(icmp)) => match icmp.icmp_type() {
                        Icmpv4Type::EchoRequest(e) => {
                            let b = PacketBuilder::ipv4(self.ip.octets(), src.octets(), 64)
                                .icmpv4_echo_reply(e.id, e.seq);
                            let mut v = Vec::with_capacity(b.size(icmp.payload().len()));
                            if b.write(&mut v, icmp.payload()).is_ok() {
                                self.stats.echo_requests_answered += 1;
                                self.queue_ip(src, v);
                            }
                        }
                        Icmpv4Type::EchoReply(_) => self.stats.echo_replies_received += 1,
                        Icmpv4Type::TimeExceeded(_) => self.stats.time_exceeded_received += 1,
                        Icmpv4Type::DestinationUnreachable(_) => {
                            self.stats.unreachable_received += 1
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

fn arp_frame(
    op: ArpOperation,
    src: MacAddr,
    dst: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: src.0,
        destination: dst.0,
        ether_type: EtherType::ARP,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(
        &ArpEthIpv4Packet {
            operation: op,
            sender_mac: sender.0 .0,
            sender_ipv4: sender.1.octets(),
            target_mac: target.0 .0,
            target_ipv4: target.1.octets(),
        }
        .to_bytes(),
    );
    v
}
