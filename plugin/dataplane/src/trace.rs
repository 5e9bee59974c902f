//! Packet trace: follow the next N packets through the graph (VPP's `trace add` and
//! `show trace`). Tracing allocates, for the traced packets only; untraced packets pay a
//! single branch per node.

use std::fmt::Write;

use contiv_hw::Timestamp;

/// What one node did with one traced packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    pub node: &'static str,
    pub note: String,
}

/// One traced packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedPacket {
    pub id: u16,
    pub rx_port: u16,
    pub received: Timestamp,
    pub records: Vec<TraceRecord>,
}

/// The trace buffer of one worker.
#[derive(Debug, Default)]
pub struct TraceBuffer {
    remaining: usize,
    packets: Vec<TracedPacket>,
}

impl TraceBuffer {
    /// Traces the next `n` packets received (added to any still pending).
    pub fn add(&mut self, n: usize) {
        self.remaining += n;
    }

    pub fn clear(&mut self) {
        self.remaining = 0;
        self.packets.clear();
    }

    /// Whether the packet now entering the graph is to be traced: returns its trace id.
    #[inline]
    pub fn admit(&mut self, rx_port: u16, now: Timestamp) -> u16 {
        if self.remaining == 0 || self.packets.len() >= usize::from(u16::MAX) {
            return 0;
        }
        self.remaining -= 1;
        let id = self.packets.len() as u16 + 1;
        self.packets.push(TracedPacket {
            id,
            rx_port,
            received: now,
            records: Vec::new(),
        });
        id
    }

    pub fn record(&mut self, id: u16, node: &'static str, note: String) {
        if let Some(p) = id
            .checked_sub(1)
            .and_then(|i| self.packets.get_mut(i as usize))
        {
            p.records.push(TraceRecord { node, note });
        }
    }

    pub fn packets(&self) -> &[TracedPacket] {
        &self.packets
    }

    /// The trace as text, one block per packet.
    pub fn show(&self) -> String {
        let mut out = String::new();
        for p in &self.packets {
            let _ = writeln!(
                out,
                "Packet {} (rx port {}, t={}ns)",
                p.id,
                p.rx_port,
                p.received.nanos()
            );
            for r in &p.records {
                let _ = writeln!(out, "  {:<18} {}", r.node, r.note);
            }
            out.push('\n');
        }
        out
    }
}
