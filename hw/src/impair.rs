//! A port wrapper that injects seeded faults: loss, corruption and delay.
//!
//! Every decision comes from one ChaCha RNG seeded by the caller, so a simulation with the
//! same seed drops and corrupts the same frames. Delay is a fixed latency applied on
//! transmit, measured in the `now` the caller passes (simulated time in the simulation).

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    BufferPool, MacAddr, PacketBuf, PacketVec, Port, PortDropReason, PortStats, Timestamp,
    VECTOR_SIZE,
};

/// The faults an [`ImpairedPort`] injects on transmit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Impairments {
    /// Probability (0..=1) that a frame is lost.
    pub loss: f64,
    /// Probability (0..=1) that one bit of a frame is flipped.
    pub corrupt: f64,
    /// Latency added to every frame, in nanoseconds.
    pub delay_ns: u64,
    /// Frames the delay line holds before it drops (0 means 4096).
    pub delay_capacity: usize,
}

/// Wraps any port and impairs what it transmits.
pub struct ImpairedPort<P: Port> {
    inner: P,
    cfg: Impairments,
    rng: ChaCha8Rng,
    delayed: VecDeque<(Timestamp, PacketBuf)>,
    staging: PacketVec,
    own: PortStats,
}

impl<P: Port> ImpairedPort<P> {
    pub fn new(inner: P, cfg: Impairments, seed: u64) -> Self {
        let cap = if cfg.delay_capacity == 0 {
            4096
        } else {
            cfg.delay_capacity
        };
        ImpairedPort {
            inner,
            cfg: Impairments {
                delay_capacity: cap,
                ..cfg
            },
            rng: ChaCha8Rng::seed_from_u64(seed),
            delayed: VecDeque::with_capacity(cap),
            staging: Vec::with_capacity(VECTOR_SIZE),
            own: PortStats::default(),
        }
    }

    /// Changes the faults from now on (frames already delayed keep their release time).
    pub fn set_impairments(&mut self, cfg: Impairments) {
        let cap = if cfg.delay_capacity == 0 {
            self.cfg.delay_capacity
        } else {
            cfg.delay_capacity
        };
        self.cfg = Impairments {
            delay_capacity: cap,
            ..cfg
        };
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Frames held in the delay line.
    pub fn delayed(&self) -> usize {
        self.delayed.len()
    }

    /// Sends every delayed frame whose time has come.
    pub fn release_due(&mut self, pool: &mut BufferPool, now: Timestamp) -> usize {
        let mut sent = 0;
        while self.delayed.front().is_some_and(|(t, _)| *t <= now) {
            while self.staging.len() < VECTOR_SIZE {
                match self.delayed.front() {
                    Some((t, _)) if *t <= now => {
                        if let Some((_, p)) = self.delayed.pop_front() {
                            self.staging.push(p);
                        }
                    }
                    _ => break,
                }
            }
            sent += self.inner.tx_burst(&mut self.staging, pool, now);
        }
        sent
    }

    fn corrupt(&mut self, pkt: &mut PacketBuf) {
        let len = pkt.len();
        if len == 0 {
            return;
        }
        let byte = self.rng.random_range(0..len);
        let bit = self.rng.random_range(0..8u8);
        pkt.data_mut()[byte] ^= 1 << bit;
        self.own.corrupted += 1;
    }
}

impl<P: Port> Port for ImpairedPort<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }

    fn mtu(&self) -> u16 {
        self.inner.mtu()
    }

    fn link_up(&self) -> bool {
        self.inner.link_up()
    }
    fn tx_offloads(&self) -> bool {
        self.inner.tx_offloads()
    }

    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        now: Timestamp,
    ) -> usize {
        self.release_due(pool, now);
        self.inner.rx_burst(pool, out, max, now)
    }

    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, now: Timestamp) -> usize {
        self.release_due(pool, now);
        let release_at = now.saturating_add_nanos(self.cfg.delay_ns);
        let mut sent = 0;
        for mut pkt in pkts.drain(..) {
            if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss.min(1.0)) {
                self.own.count_drop(PortDropReason::InjectedLoss, 1);
                pool.free(pkt);
                continue;
            }
            if self.cfg.corrupt > 0.0 && self.rng.random_bool(self.cfg.corrupt.min(1.0)) {
                self.corrupt(&mut pkt);
            }
            if self.cfg.delay_ns == 0 {
                self.staging.push(pkt);
                if self.staging.len() == VECTOR_SIZE {
                    sent += self.inner.tx_burst(&mut self.staging, pool, now);
                }
            } else if self.delayed.len() >= self.cfg.delay_capacity {
                self.own.count_drop(PortDropReason::DelayQueueFull, 1);
                pool.free(pkt);
            } else {
                self.delayed.push_back((release_at, pkt));
            }
        }
        sent + self.inner.tx_burst(&mut self.staging, pool, now)
    }

    fn stats(&self) -> PortStats {
        let mut s = self.inner.stats();
        s.corrupted += self.own.corrupted;
        for (r, n) in self.own.nonzero_drops() {
            s.count_drop(r, n);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{virtual_wire, WireConfig};

    fn run(seed: u64, cfg: Impairments) -> (Vec<Vec<u8>>, PortStats) {
        let mut pool = BufferPool::new("t", 2048);
        let (a, mut b, _) = virtual_wire(
            ("a", MacAddr::local(1)),
            ("b", MacAddr::local(2)),
            &WireConfig {
                capacity: 2048,
                mtu: 1500,
            },
        );
        let mut a = ImpairedPort::new(a, cfg, seed);
        let mut v = Vec::new();
        for i in 0..1000u32 {
            let mut p = pool.alloc().expect("buffer");
            assert!(p.fill(&i.to_be_bytes().repeat(16)));
            v.push(p);
            if v.len() == 100 {
                a.tx_burst(&mut v, &mut pool, Timestamp(u64::from(i)));
            }
        }
        a.release_due(&mut pool, Timestamp(u64::MAX));
        let mut out = Vec::new();
        while b.rx_burst(&mut pool, &mut out, 256, Timestamp::ZERO) > 0 {}
        let got = out.iter().map(|p| p.data().to_vec()).collect();
        pool.free_all(&mut out);
        (got, a.stats())
    }

    #[test]
    fn loss_and_corruption_are_seeded_and_counted() {
        let cfg = Impairments {
            loss: 0.1,
            corrupt: 0.05,
            ..Default::default()
        };
        let (got1, s1) = run(7, cfg.clone());
        let (got2, s2) = run(7, cfg.clone());
        let (got3, _) = run(8, cfg);
        assert_eq!(got1, got2, "same seed, same frames");
        assert_ne!(got1, got3, "another seed, other frames");
        let lost = s1.drops(PortDropReason::InjectedLoss);
        assert_eq!(got1.len() as u64 + lost, 1000);
        assert!((50..150).contains(&lost), "about 10% lost, got {lost}");
        assert_eq!(s1, s2);
        assert!(
            s1.corrupted > 10,
            "about 5% corrupted, got {}",
            s1.corrupted
        );
    }

    #[test]
    fn delay_holds_frames_until_their_time() {
        let mut pool = BufferPool::new("t", 64);
        let (a, mut b, _) = virtual_wire(
            ("a", MacAddr::local(1)),
            ("b", MacAddr::local(2)),
            &WireConfig::default(),
        );
        let mut a = ImpairedPort::new(
            a,
            Impairments {
                delay_ns: 1_000,
                ..Default::default()
            },
            1,
        );
        let mut v = vec![pool.alloc().expect("buffer")];
        assert!(v[0].fill(&[1; 60]));
        a.tx_burst(&mut v, &mut pool, Timestamp(0));
        let mut out = Vec::new();
        assert_eq!(b.rx_burst(&mut pool, &mut out, 8, Timestamp(0)), 0);
        a.release_due(&mut pool, Timestamp(999));
        assert_eq!(b.rx_burst(&mut pool, &mut out, 8, Timestamp(999)), 0);
        a.release_due(&mut pool, Timestamp(1_000));
        assert_eq!(b.rx_burst(&mut pool, &mut out, 8, Timestamp(1_000)), 1);
    }
}
