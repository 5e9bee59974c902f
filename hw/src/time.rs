/// A point in time in nanoseconds since an arbitrary epoch.
///
/// Time is always an argument, never read from the OS inside this crate or the engine: the
/// simulation passes its simulated clock, a real worker passes a monotonic clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_micros(us: u64) -> Self {
        Timestamp(us.saturating_mul(1_000))
    }

    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    pub fn nanos(self) -> u64 {
        self.0
    }

    pub fn saturating_add_nanos(self, ns: u64) -> Self {
        Timestamp(self.0.saturating_add(ns))
    }

    pub fn saturating_sub(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
