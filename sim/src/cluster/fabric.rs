//! The simulated underlay: one learning switch joining every node's uplink, stepped on
//! simulated time. Each node's link carries seeded impairments (loss, corruption,
//! latency) on what the switch delivers to it, so every frame between two nodes crosses
//! exactly one impaired hop; a partition between two nodes drops what one sends the
//! other. Every frame the switch forwards goes into the trace.

use std::collections::{BTreeMap, BTreeSet};

use contiv_hw::{
    virtual_wire, BufferPool, ImpairedPort, Impairments, MacAddr, PacketVec, Port, Timestamp,
    VirtualPort, WireConfig,
};

use crate::TraceHasher;

/// Frames each direction of an uplink's wire holds.
const UPLINK_WIRE_FRAMES: usize = 4096;
const BURST: usize = 256;

/// What the switch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FabricStats {
    pub forwarded: u64,
    pub flooded: u64,
    pub partition_drops: u64,
}

struct FabricPort {
    port: ImpairedPort<VirtualPort>,
}

#[derive(Default)]
pub struct Fabric {
    ports: BTreeMap<usize, FabricPort>,
    macs: BTreeMap<MacAddr, usize>,
    partitions: BTreeSet<(usize, usize)>,
    impairments: BTreeMap<usize, Impairments>,
    pub stats: FabricStats,
    out: BTreeMap<usize, PacketVec>,
}

/// The MAC of node `index`'s uplink.
pub fn uplink_mac(index: usize) -> MacAddr {
    MacAddr::local(0x00ff_0000 | index as u32)
}

impl Fabric {
    /// Plugs node `index` in (again, after a crash) and returns the node's end of its
    /// uplink. `seed` seeds the link's impairments.
    pub fn attach(&mut self, index: usize, seed: u64) -> VirtualPort {
        let mac = uplink_mac(index);
        let (node_end, switch_end, _link) = virtual_wire(
            ("eth0", mac),
            (
                &format!("sw-{index}"),
                MacAddr::local(0x00fe_0000 | index as u32),
            ),
            &WireConfig {
                capacity: UPLINK_WIRE_FRAMES,
                mtu: 1500,
            },
        );
        let cfg = self.impairments.get(&index).cloned().unwrap_or_default();
        self.ports.insert(
            index,
            FabricPort {
                port: ImpairedPort::new(switch_end, cfg, seed),
            },
        );
        node_end
    }

    /// Unplugs node `index` (it crashed): what the switch held for it is lost.
    pub fn detach(&mut self, index: usize, pool: &mut BufferPool) {
        self.ports.remove(&index);
        self.macs.retain(|_, p| *p != index);
        if let Some(mut q) = self.out.remove(&index) {
            pool.free_all(&mut q);
        }
    }

    pub fn set_impairments(&mut self, index: usize, cfg: Impairments) {
        if let Some(p) = self.ports.get_mut(&index) {
            p.port.set_impairments(cfg.clone());
        }
        self.impairments.insert(index, cfg);
    }

    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    pub fn partition(&mut self, a: usize, b: usize) {
        self.partitions.insert(Self::pair(a, b));
    }

    pub fn repair(&mut self, a: usize, b: usize) {
        self.partitions.remove(&Self::pair(a, b));
    }

    pub fn injected_drops(&self) -> u64 {
        self.ports
            .values()
            .map(|p| p.port.stats().total_drops())
            .sum()
    }

    /// Moves what every uplink sent to where it goes; returns the frames moved.
    pub fn step(
        &mut self,
        pool: &mut BufferPool,
        now: Timestamp,
        trace: &mut TraceHasher,
    ) -> usize {
        let mut moved = 0;
        let indices: Vec<usize> = self.ports.keys().copied().collect();
        let mut got = PacketVec::new();
        for &from in &indices {
            if let Some(p) = self.ports.get_mut(&from) {
                p.port.rx_burst(pool, &mut got, BURST, now);
            }
            for pkt in got.drain(..) {
                moved += 1;
                trace.frame("fabric", now, pkt.data());
                let data = pkt.data();
                if data.len() < 14 {
                    pool.free(pkt);
                    continue;
                }
                let mut dst = [0u8; 6];
                let mut src = [0u8; 6];
                dst.copy_from_slice(&data[..6]);
                src.copy_from_slice(&data[6..12]);
                let (dst, src) = (MacAddr(dst), MacAddr(src));
                if !src.is_multicast() {
                    self.macs.insert(src, from);
                }
                let targets: Vec<usize> = match self.macs.get(&dst) {
                    Some(&to) if !dst.is_multicast() => vec![to],
                    _ => {
                        self.stats.flooded += 1;
                        indices.iter().copied().filter(|&i| i != from).collect()
                    }
                };
                let mut pkt = Some(pkt);
                for (n, &to) in targets.iter().enumerate() {
                    if to == from || self.partitions.contains(&Self::pair(from, to)) {
                        self.stats.partition_drops += u64::from(to != from);
                        continue;
                    }
                    // The last target takes the frame itself; the others get copies.
                    let frame = if n + 1 == targets.len() {
                        pkt.take()
                    } else {
                        pkt.as_ref().and_then(|p| {
                            let mut c = pool.alloc()?;
                            c.fill(p.data()).then_some(c)
                        })
                    };
                    if let Some(f) = frame {
                        self.out.entry(to).or_default().push(f);
                        self.stats.forwarded += 1;
                    }
                }
                if let Some(p) = pkt {
                    pool.free(p);
                }
            }
        }
        for (to, q) in &mut self.out {
            match self.ports.get_mut(to) {
                Some(p) if !q.is_empty() => {
                    p.port.tx_burst(q, pool, now);
                }
                Some(_) => {}
                None => pool.free_all(q),
            }
        }
        for p in self.ports.values_mut() {
            moved += p.port.release_due(pool, now);
        }
        moved
    }
}
