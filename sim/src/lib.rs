//! Deterministic simulations of the dataplane on virtual NICs.
//!
//! Everything here is stepped by a simulated clock and seeded: the same seed gives the
//! same frames in the same order, summarised by a [`TraceHasher`]. No wall clock, no OS
//! randomness, no iteration over randomly seeded hash maps.
//!
//! Today: simulated hosts ([`host::SimHost`]) and a two-hosts-and-a-router scenario
//! ([`router_scenario`]) that the harness demo runs. The simulated cluster (API server,
//! store, agents, pods on smoltcp) grows here.

pub mod apiserver;
pub mod cluster;
pub mod host;
pub mod router_scenario;

use contiv_hw::Timestamp;

/// FNV-1a over every frame every simulated host receives, with its time: two runs with
/// the same seed must end with the same hash.
#[derive(Clone, Debug)]
pub struct TraceHasher {
    hash: u64,
    events: u64,
}

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }
}

impl TraceHasher {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.hash ^= u64::from(x);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Records one frame received by `who` at `now`.
    pub fn frame(&mut self, who: &str, now: Timestamp, data: &[u8]) {
        self.bytes(who.as_bytes());
        self.bytes(&now.nanos().to_le_bytes());
        self.bytes(data);
        self.events += 1;
    }

    /// Records a piece of text (an event, a check's name).
    pub fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
        self.events += 1;
    }

    /// Records any other value that must be the same across runs.
    pub fn value(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}
