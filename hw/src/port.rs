use std::fmt;

use crate::{BufferPool, PacketVec, Timestamp};

/// An Ethernet MAC address.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// A locally administered unicast address derived from a number (for virtual ports).
    pub fn local(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0xc0, b[0], b[1], b[2], b[3]])
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a port dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortDropReason {
    /// The transmit queue (or the wire's capacity) was full.
    TxQueueFull,
    /// The link was down.
    LinkDown,
    /// The frame was larger than the port's MTU allows.
    TooBig,
    /// Dropped on purpose by an [`crate::ImpairedPort`] (simulated loss).
    InjectedLoss,
    /// The delay line of an [`crate::ImpairedPort`] was full.
    DelayQueueFull,
    /// A frame arrived but the buffer pool was empty.
    RxNoBuffer,
    /// The NIC dropped frames its receive ring had no room for.
    RxMissed,
    /// A received buffer the engine cannot take (a chained mbuf: a frame over 2 KiB).
    RxUnusableBuffer,
    /// No buffer to copy an outgoing frame into.
    TxNoBuffer,
    /// A received frame was larger than the largest buffer (the kernel cut it).
    RxTruncated,
    /// A received frame's offload header asked for something this engine does not do
    /// (a segmentation type not negotiated, a checksum outside the frame).
    RxBadOffload,
    /// A frame with unfinished offload work (see [`crate::Offload`]) reached a port that
    /// cannot take it and could not be finished there.
    TxOffloadUnsupported,
}

impl PortDropReason {
    pub const ALL: [PortDropReason; 12] = [
        PortDropReason::TxQueueFull,
        PortDropReason::LinkDown,
        PortDropReason::TooBig,
        PortDropReason::InjectedLoss,
        PortDropReason::DelayQueueFull,
        PortDropReason::RxNoBuffer,
        PortDropReason::RxMissed,
        PortDropReason::RxUnusableBuffer,
        PortDropReason::TxNoBuffer,
        PortDropReason::RxTruncated,
        PortDropReason::RxBadOffload,
        PortDropReason::TxOffloadUnsupported,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PortDropReason::TxQueueFull => "tx queue full",
            PortDropReason::LinkDown => "link down",
            PortDropReason::TooBig => "frame exceeds mtu",
            PortDropReason::InjectedLoss => "injected loss",
            PortDropReason::DelayQueueFull => "delay line full",
            PortDropReason::RxNoBuffer => "rx: no buffer",
            PortDropReason::RxMissed => "rx: missed by the nic",
            PortDropReason::RxUnusableBuffer => "rx: chained or foreign mbuf",
            PortDropReason::TxNoBuffer => "tx: no buffer",
            PortDropReason::RxTruncated => "rx: frame larger than a buffer",
            PortDropReason::RxBadOffload => "rx: offload header not understood",
            PortDropReason::TxOffloadUnsupported => "tx: offload the port cannot take",
        }
    }
}

/// Counters of one port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames altered on purpose by an impairment wrapper (they are still delivered).
    pub corrupted: u64,
    drops: [u64; PortDropReason::ALL.len()],
}

impl PortStats {
    pub fn drops(&self, reason: PortDropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn count_drop(&mut self, reason: PortDropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every non-zero drop counter with its name.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (PortDropReason, u64)> + '_ {
        PortDropReason::ALL
            .into_iter()
            .map(|r| (r, self.drops(r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// A packet port: the one interface between the engine and a NIC, real or simulated.
///
/// Both directions work on vectors. `rx_burst` appends up to `max` received frames to
/// `out` (allocating from `pool` if the port needs buffers to receive into); `tx_burst`
/// takes every packet out of `pkts`: the ones it cannot send are freed to `pool` and
/// counted as drops with a reason, so the caller never has leftovers to handle.
pub trait Port: Send {
    fn name(&self) -> &str;
    fn mac(&self) -> MacAddr;
    /// The largest IP packet (Ethernet payload) the port carries.
    fn mtu(&self) -> u16;
    fn link_up(&self) -> bool;
    /// Whether frames may leave by this port with work left to do (see
    /// [`crate::Offload`]): partial checksums and TCP super-frames, finished by the
    /// receiver. The engine finishes that work in software before any other port.
    fn tx_offloads(&self) -> bool {
        false
    }
    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        now: Timestamp,
    ) -> usize;
    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, now: Timestamp) -> usize;
    fn stats(&self) -> PortStats;
}

impl<P: Port + ?Sized> Port for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn mac(&self) -> MacAddr {
        (**self).mac()
    }
    fn mtu(&self) -> u16 {
        (**self).mtu()
    }
    fn link_up(&self) -> bool {
        (**self).link_up()
    }
    fn tx_offloads(&self) -> bool {
        (**self).tx_offloads()
    }
    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        now: Timestamp,
    ) -> usize {
        (**self).rx_burst(pool, out, max, now)
    }
    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, now: Timestamp) -> usize {
        (**self).tx_burst(pkts, pool, now)
    }
    fn stats(&self) -> PortStats {
        (**self).stats()
    }
}
