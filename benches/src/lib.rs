//! Rigs shared by the benchmarks: a traffic generator and a sink joined to the engine by
//! virtual wires, and route sets of a given size.
//!
//! Both `io_forward` and `ip4_forward` pay the same generator and sink costs (copying a
//! prepared 64-byte frame into each buffer, moving buffers over two wires), so their ratio
//! isolates what the graph costs.

use std::net::Ipv4Addr;

use contiv_dataplane::{
    Adjacency, Engine, EngineConfig, Interface, Ipv4Net, TableChange, TableHandle,
};
use contiv_hw::{
    virtual_wire, BufferPool, MacAddr, PacketVec, Port, Timestamp, VirtualPort, WireConfig,
    VECTOR_SIZE,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const GEN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
pub const SINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
pub const IN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
pub const OUT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// A 64-byte Ethernet frame (60 + FCS on a real wire) carrying UDP from 10.0.1.2 to `dst`.
pub fn frame64(dst: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&IN_MAC.0);
    f[6..12].copy_from_slice(&GEN_MAC.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 2, 0, 0, 0, 0,
    ]);
    ip[16..20].copy_from_slice(&dst.octets());
    let c = contiv_dataplane::headers::internet_checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5000u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// `n` random prefixes between /16 and /32, mostly /24 as in an Internet table, seeded.
pub fn random_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = match rng.random_range(0..100) {
                0..=59 => 24,
                60..=79 => rng.random_range(16..24),
                _ => rng.random_range(25..=32),
            };
            // Keep clear of 10.0.0.0/8 (the rig's own subnets) and multicast.
            let addr = loop {
                let a: u32 = rng.random();
                let first = a >> 24;
                if first != 10 && (1..224).contains(&first) {
                    break a;
                }
            };
            Ipv4Net::new(Ipv4Addr::from(addr), len)
        })
        .collect()
}

/// Generator -> [wire] -> engine or plain port -> [wire] -> sink.
pub struct Rig {
    pub pool: BufferPool,
    pub gen: VirtualPort,
    pub sink: VirtualPort,
    frames: Vec<Vec<u8>>,
    next_frame: usize,
    batch: PacketVec,
}

impl Rig {
    fn new(frames: Vec<Vec<u8>>) -> (Rig, VirtualPort, VirtualPort) {
        let pool = BufferPool::new("bench", 8 * VECTOR_SIZE);
        let cfg = WireConfig {
            capacity: 2 * VECTOR_SIZE,
            mtu: 1500,
        };
        let (gen, dut_in, _) = virtual_wire(("gen", GEN_MAC), ("in", IN_MAC), &cfg);
        let (dut_out, sink, _) = virtual_wire(("out", OUT_MAC), ("sink", SINK_MAC), &cfg);
        let mut batch = Vec::with_capacity(VECTOR_SIZE);
        let mut p = pool.handle();
        assert_eq!(p.alloc_bulk(VECTOR_SIZE, &mut batch), VECTOR_SIZE);
        drop(p);
        let rig = Rig {
            pool,
            gen,
            sink,
            frames,
            next_frame: 0,
            batch,
        };
        (rig, dut_in, dut_out)
    }

    /// Writes the next frames into the batch and sends it towards the device under test.
    #[inline]
    pub fn send(&mut self) {
        for p in self.batch.iter_mut() {
            let f = &self.frames[self.next_frame];
            self.next_frame = (self.next_frame + 1) % self.frames.len();
            p.reset();
            p.fill(f);
        }
        let n = self
            .gen
            .tx_burst(&mut self.batch, &mut self.pool, Timestamp::ZERO);
        debug_assert_eq!(n, VECTOR_SIZE);
    }

    /// Takes back what reached the sink; returns how many.
    #[inline]
    pub fn receive(&mut self) -> usize {
        let n = self.sink.rx_burst(
            &mut self.pool,
            &mut self.batch,
            VECTOR_SIZE,
            Timestamp::ZERO,
        );
        // Top up if anything was dropped on the way, so every round sends a full vector.
        let missing = VECTOR_SIZE - self.batch.len();
        if missing > 0 {
            self.pool.alloc_bulk(missing, &mut self.batch);
        }
        n
    }
}

/// The I/O upper bound: rx from one port, tx to the other, no processing.
pub struct IoForward {
    pub rig: Rig,
    dut_in: VirtualPort,
    dut_out: VirtualPort,
    pool: BufferPool,
    vec: PacketVec,
}

impl IoForward {
    pub fn new() -> Self {
        let (rig, dut_in, dut_out) = Rig::new(vec![frame64(SINK_IP).to_vec()]);
        let pool = rig.pool.handle();
        IoForward {
            rig,
            dut_in,
            dut_out,
            pool,
            vec: Vec::with_capacity(VECTOR_SIZE),
        }
    }

    /// One vector through; returns packets that reached the sink.
    #[inline]
    pub fn round(&mut self) -> usize {
        self.rig.send();
        self.dut_in
            .rx_burst(&mut self.pool, &mut self.vec, VECTOR_SIZE, Timestamp::ZERO);
        self.dut_out
            .tx_burst(&mut self.vec, &mut self.pool, Timestamp::ZERO);
        self.rig.receive()
    }
}

impl Default for IoForward {
    fn default() -> Self {
        Self::new()
    }
}

/// The full IPv4 graph between generator and sink, with `extra_routes` random routes and
/// traffic spread over `flows` destinations drawn from those routes.
/// An engine between the generator and the sink of a [`Rig`]; [`Ip4Forward`] and
/// [`VxlanForward`] build it with their tables.
pub struct EngineForward {
    pub rig: Rig,
    pub engine: Engine,
    pub tables: TableHandle,
    now: u64,
}

impl EngineForward {
    /// The engine between the rig's two wires: port 0 "in" (10.0.1.1/24), port 1 "out"
    /// (10.0.2.1/24) with the sink as a static neighbour, then `changes`.
    pub fn build(frames: Vec<Vec<u8>>, rx_burst: usize, changes: Vec<TableChange>) -> Self {
        let config = EngineConfig {
            rx_burst,
            ..EngineConfig::default()
        };
        Self::build_with(frames, &config, changes)
    }

    /// As `build`, with an engine configuration of your own.
    pub fn build_with(
        frames: Vec<Vec<u8>>,
        config: &EngineConfig,
        changes: Vec<TableChange>,
    ) -> Self {
        let (rig, dut_in, dut_out) = Rig::new(frames);
        let tables = TableHandle::new();
        let mut engine = Engine::new(&tables, rig.pool.handle(), config).expect("standard graph");
        engine.add_port(Box::new(dut_in)).expect("port");
        engine.add_port(Box::new(dut_out)).expect("port");
        let mut all = vec![
            TableChange::SetInterface(
                Interface::new(0, "in", IN_MAC).with_address("10.0.1.1/24".parse().expect("net")),
            ),
            TableChange::SetInterface(
                Interface::new(1, "out", OUT_MAC).with_address("10.0.2.1/24".parse().expect("net")),
            ),
            TableChange::SetNeighbour {
                port: 1,
                ip: SINK_IP,
                mac: SINK_MAC,
            },
        ];
        all.extend(changes);
        tables.commit(&all).expect("tables commit");
        EngineForward {
            rig,
            engine,
            tables,
            now: 0,
        }
    }

    /// One vector from the generator through the engine; returns what reached the sink.
    #[inline]
    pub fn round(&mut self) -> usize {
        self.rig.send();
        self.now += 1_000;
        while self.engine.poll(Timestamp(self.now)) > 0 {}
        self.rig.receive()
    }
}

/// The IPv4 graph forwarding from the generator to the sink (`new`, `with_burst`).
pub type Ip4Forward = EngineForward;

/// The VXLAN overlay, one direction at a time: `encap` routes 64-byte packets from the
/// generator into a tunnel to the sink (the other node); `decap` takes VXLAN from the
/// generator (the other node) and routes the inner 64-byte packets to the sink.
pub type VxlanForward = EngineForward;

impl EngineForward {
    /// IPv4 forwarding with `extra_routes` random routes, traffic over `flows` of them.
    pub fn new(extra_routes: usize, flows: usize) -> EngineForward {
        Self::with_burst(
            extra_routes,
            flows,
            contiv_dataplane::engine::DEFAULT_RX_BURST,
        )
    }

    /// As `new`, with the engine taking `rx_burst` packets per poll (so a 256-packet
    /// round is several vectors when smaller).
    pub fn with_burst(extra_routes: usize, flows: usize, rx_burst: usize) -> EngineForward {
        let prefixes = random_prefixes(extra_routes, 42);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let frames: Vec<Vec<u8>> = if prefixes.is_empty() {
            vec![frame64(SINK_IP).to_vec()]
        } else {
            (0..flows)
                .map(|_| {
                    let p = prefixes[rng.random_range(0..prefixes.len())];
                    let host = rng.random::<u32>() & !contiv_dataplane::fib::mask(p.len);
                    let dst = Ipv4Addr::from(
                        (u32::from(p.addr) & contiv_dataplane::fib::mask(p.len)) | host,
                    );
                    frame64(dst).to_vec()
                })
                .collect()
        };
        let via = Adjacency::Via {
            port: 1,
            next_hop: SINK_IP,
        };
        let routes = prefixes
            .into_iter()
            .map(|prefix| TableChange::AddRoute {
                vrf: 0,
                prefix,
                target: via,
            })
            .collect();
        EngineForward::build(frames, rx_burst, routes)
    }
}

const REMOTE_VXLAN_MAC: MacAddr = MacAddr([2, 0xfe, 0, 0, 0, 2]);
const OUR_VXLAN_MAC: MacAddr = MacAddr([2, 0xfe, 0, 0, 0, 1]);

impl EngineForward {
    pub fn encap(flows: u16) -> EngineForward {
        let frames = (0..flows.max(1))
            .map(|i| {
                let mut f = frame64(Ipv4Addr::new(10, 1, 2, 5)).to_vec();
                // Vary the source port: the flows hash to different outer ports.
                f[34..36].copy_from_slice(&(4000 + i).to_be_bytes());
                f
            })
            .collect();
        Self::vxlan(frames, Ipv4Addr::new(10, 0, 2, 1), SINK_IP)
    }

    pub fn decap() -> EngineForward {
        let inner = frame64(Ipv4Addr::new(10, 1, 1, 5));
        let mut f = Vec::with_capacity(110);
        f.extend_from_slice(&IN_MAC.0);
        f.extend_from_slice(&GEN_MAC.0);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let udp_len = 8 + 8 + inner.len();
        let mut ip = [
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 2, 10, 0, 1, 1,
        ];
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        let c = contiv_dataplane::headers::internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&50_000u16.to_be_bytes());
        f.extend_from_slice(&4789u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        // No UDP checksum; then VXLAN: the I flag, reserved bytes, VNI 10 in the top 24
        // bits of the second word.
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 10, 0]);
        let mut inner = inner.to_vec();
        inner[0..6].copy_from_slice(&OUR_VXLAN_MAC.0);
        inner[6..12].copy_from_slice(&REMOTE_VXLAN_MAC.0);
        f.extend_from_slice(&inner);
        Self::vxlan(
            vec![f],
            Ipv4Addr::new(10, 0, 1, 1),
            Ipv4Addr::new(10, 0, 1, 2),
        )
    }

    fn vxlan(frames: Vec<Vec<u8>>, local: Ipv4Addr, remote: Ipv4Addr) -> EngineForward {
        let changes = vec![
            TableChange::SetVxlan(Some(contiv_dataplane::VxlanConfig {
                local,
                vni: 10,
                mac: OUR_VXLAN_MAC,
                mtu: 1450,
            })),
            TableChange::SetTunnel {
                index: 0,
                tunnel: contiv_dataplane::Tunnel {
                    remote,
                    remote_mac: REMOTE_VXLAN_MAC,
                },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: "10.1.2.0/24".parse().expect("net"),
                target: Adjacency::Tunnel { tunnel: 0 },
            },
            TableChange::AddRoute {
                vrf: 0,
                prefix: "10.1.1.0/24".parse().expect("net"),
                target: Adjacency::Via {
                    port: 1,
                    next_hop: SINK_IP,
                },
            },
        ];
        EngineForward::build(frames, contiv_dataplane::engine::DEFAULT_RX_BURST, changes)
    }
}

/// Source NAT between the generator (the inside, 10.0.1.0/24) and the sink (outside,
/// behind the uplink "out" whose address 10.0.2.1 is the external one).
pub type SnatForward = EngineForward;

impl EngineForward {
    /// `flows` UDP flows that differ by source port. With `timeout_ns` shorter than the
    /// time the generator takes to come round to a flow again (a round is 1 µs of engine
    /// time, 256 packets), every packet finds its session expired and opens a new one:
    /// the new-connection rate. With the default timeouts, every packet after the first
    /// round finds its session: the established-flow rate.
    pub fn snat(flows: u16, timeout_ns: Option<u64>) -> SnatForward {
        let frames = (0..flows.max(1))
            .map(|i| {
                let mut f = frame64(SINK_IP).to_vec();
                f[34..36].copy_from_slice(&(1024 + i).to_be_bytes());
                f
            })
            .collect();
        let mut nat = contiv_dataplane::NatConfig::default();
        if let Some(t) = timeout_ns {
            nat.timeouts.udp = t;
        }
        let changes = vec![TableChange::SetSnat(Some(contiv_dataplane::SnatConfig {
            uplink: 1,
            external: Ipv4Addr::new(10, 0, 2, 1),
            inside: vec!["10.0.1.0/24".parse().expect("net")],
            exempt: Vec::new(),
        }))];
        let config = EngineConfig {
            nat,
            ..EngineConfig::default()
        };
        EngineForward::build_with(frames, &config, changes)
    }
}
