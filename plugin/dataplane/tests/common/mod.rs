//! A router with two subnets for the graph tests. Frames are built and parsed with
//! etherparse, independent of the engine's own header code.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use contiv_dataplane::{
    Engine, EngineConfig, IcmpErrorConfig, Interface, Ipv4Net, TableChange, TableHandle,
};
use contiv_hw::{
    virtual_wire, BufferPool, MacAddr, PacketBuf, Port, Timestamp, VirtualPort, WireConfig,
};
use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, PacketBuilder};

pub const R0_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
pub const R1_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
pub const A_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xa]);
pub const B_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xb]);
pub const R0_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const R1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
pub const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// Host A on port 0 (10.0.1.0/24), host B on port 1 (10.0.2.0/24), the engine between.
pub struct Router {
    pub engine: Engine,
    pub tables: TableHandle,
    pub pool: BufferPool,
    /// The far ends of the router's wires: what A and B send and receive on.
    pub a: VirtualPort,
    pub b: VirtualPort,
    pub now: Timestamp,
}

pub fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

impl Router {
    /// With static neighbours for A and B unless `learn` is set.
    pub fn new(learn: bool) -> Router {
        Self::with_icmp(learn, IcmpErrorConfig::default())
    }

    pub fn with_icmp(learn: bool, icmp: IcmpErrorConfig) -> Router {
        Self::with_config(
            learn,
            &EngineConfig {
                icmp_errors: icmp,
                ..Default::default()
            },
        )
    }

    pub fn with_config(learn: bool, config: &EngineConfig) -> Router {
        Self::with_engine(learn, |tables, pool| {
            Engine::new(tables, pool, config).unwrap()
        })
    }

    /// With an engine of the caller's making (a graph of other nodes, say).
    pub fn with_engine(
        learn: bool,
        make: impl FnOnce(&TableHandle, BufferPool) -> Engine,
    ) -> Router {
        let pool = BufferPool::new("test", 4096);
        let tables = TableHandle::new();
        let mut engine = make(&tables, pool.handle());
        let cfg = WireConfig {
            capacity: 1024,
            mtu: 1500,
        };
        let (r0, a, _) = virtual_wire(("r0", R0_MAC), ("a", A_MAC), &cfg);
        let (r1, b, _) = virtual_wire(("r1", R1_MAC), ("b", B_MAC), &cfg);
        assert_eq!(engine.add_port(Box::new(r0)).unwrap(), 0);
        assert_eq!(engine.add_port(Box::new(r1)).unwrap(), 1);
        let mut changes = vec![
            TableChange::SetInterface(
                Interface::new(0, "r0", R0_MAC)
                    .with_address(net("10.0.1.1/24"))
                    .with_proxy_arp(net("10.0.3.0/24")),
            ),
            TableChange::SetInterface(
                Interface::new(1, "r1", R1_MAC).with_address(net("10.0.2.1/24")),
            ),
        ];
        if !learn {
            changes.push(TableChange::SetNeighbour {
                port: 0,
                ip: A_IP,
                mac: A_MAC,
            });
            changes.push(TableChange::SetNeighbour {
                port: 1,
                ip: B_IP,
                mac: B_MAC,
            });
        }
        tables.commit(&changes).unwrap();
        Router {
            engine,
            tables,
            pool,
            a,
            b,
            now: Timestamp::from_millis(1),
        }
    }

    fn send(port: &mut VirtualPort, pool: &mut BufferPool, frames: &[Vec<u8>], now: Timestamp) {
        let mut v: Vec<PacketBuf> = frames
            .iter()
            .map(|f| {
                let mut p = pool.alloc().expect("pool has buffers");
                assert!(p.fill(f));
                p
            })
            .collect();
        assert_eq!(
            port.tx_burst(&mut v, pool, now),
            frames.len(),
            "wire accepted every frame"
        );
    }

    /// A sends frames, the engine polls, returns what A and B received.
    pub fn send_from_a(&mut self, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        Self::send(&mut self.a, &mut self.pool, frames, self.now);
        self.run()
    }

    pub fn send_from_b(&mut self, frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        Self::send(&mut self.b, &mut self.pool, frames, self.now);
        self.run()
    }

    fn run(&mut self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        while self.engine.poll(self.now) > 0 {}
        (self.drain_a(), self.drain_b())
    }

    fn drain(port: &mut VirtualPort, pool: &mut BufferPool, now: Timestamp) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while port.rx_burst(pool, &mut out, 256, now) > 0 {}
        let frames = out.iter().map(|p| p.data().to_vec()).collect();
        pool.free_all(&mut out);
        frames
    }

    pub fn drain_a(&mut self) -> Vec<Vec<u8>> {
        Self::drain(&mut self.a, &mut self.pool, self.now)
    }

    pub fn drain_b(&mut self) -> Vec<Vec<u8>> {
        Self::drain(&mut self.b, &mut self.pool, self.now)
    }
}

pub fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(4000, 5000);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

pub fn echo_request(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    seq: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .icmpv4_echo_request(7, seq);
    let payload = b"ping payload";
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

pub fn arp(
    op: ArpOperation,
    src_mac: MacAddr,
    dst_mac: MacAddr,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: src_mac.0,
        destination: dst_mac.0,
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

pub fn parse_arp(frame: &[u8]) -> (Ethernet2Header, ArpEthIpv4Packet) {
    let (eth, rest) = Ethernet2Header::from_slice(frame).unwrap();
    assert_eq!(eth.ether_type, EtherType::ARP);
    let arp = etherparse::ArpPacket::from_slice(rest)
        .unwrap()
        .try_eth_ipv4()
        .unwrap();
    (eth, arp)
}

/// The ICMP part of a parsed frame (the test fails if it has none).
pub fn icmp_of<'a>(p: &'a etherparse::SlicedPacket<'a>) -> &'a etherparse::Icmpv4Slice<'a> {
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!("not icmp: {:?}", p.transport)
    };
    icmp
}

/// The frame with the IPv4 don't-fragment flag set (header checksum updated).
pub fn with_df(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 6] = 0x40;
    frame[14 + 10..14 + 12].fill(0);
    let c = contiv_dataplane::headers::internet_checksum(&frame[14..34]);
    frame[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    frame
}
