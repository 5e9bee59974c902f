//! The IPv4 forwarding table of one VRF: longest-prefix match in at most three memory
//! reads, whatever the number of prefixes.
//!
//! A multibit trie whose first level is indexed by the top 16 bits of the address, and
//! whose 256-slot chunks take 8 more bits each (DIR-16-8-8), made only where a longer
//! prefix needs them: an empty table is 256 KiB. A VRF with Internet-sized tables (at
//! least [`WIDEN_AT`] prefixes longer than /16) is rebuilt with a first level of 24 bits
//! (DIR-24-8, 64 MiB), where most lookups read one slot instead of two or three; it goes
//! back to 16 bits below [`NARROW_AT`]. Prefixes are expanded into the slots they cover
//! ("leaf pushing"); each slot remembers the length of the prefix that owns it, so an
//! insert overwrites only shorter owners and a delete hands its slots to the next
//! covering prefix. Chunks that become uniform are folded back into their parent slot.
//!
//! Slot encoding (u32): bit 31 set = index of a child chunk; otherwise bits 24..30 hold
//! the owning prefix length and bits 0..23 the adjacency index + 1 (0 = no route).

use std::collections::HashMap;
use std::net::Ipv4Addr;

const CHUNK: u32 = 1 << 31;
const LEN_SHIFT: u32 = 24;
const VALUE_MASK: u32 = (1 << LEN_SHIFT) - 1;
const EMPTY: u32 = 0;

/// The largest adjacency index a route can point at.
pub const MAX_ADJACENCY: u32 = VALUE_MASK - 1;

/// Prefixes longer than /16 at which a VRF's first level widens to 24 bits. Below it the
/// 16-bit level's chunks cost at most as much memory as the wide level (64 MiB) would,
/// and usually far less; past it the table is Internet-sized, misses the caches on most
/// lookups, and a read less per lookup is worth more than the memory: with a million
/// routes and 4096 flows, the `ip4_forward` bench forwards about 6% faster.
pub const WIDEN_AT: usize = 65_536;
/// Prefixes longer than /16 below which a wide first level narrows back to 16 bits. Half
/// of [`WIDEN_AT`], so a table that hovers around the mark is not rebuilt back and forth.
pub const NARROW_AT: usize = WIDEN_AT / 2;

/// The first level's widths: 16 bits for most tables, 24 for Internet-sized ones.
const NARROW_BITS: u8 = 16;
const WIDE_BITS: u8 = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FibError {
    #[error("prefix length {0} is longer than 32")]
    PrefixLength(u8),
    #[error("adjacency index {0} is out of range")]
    AdjacencyRange(u32),
    #[error("no route {0}/{1}")]
    NoSuchRoute(Ipv4Addr, u8),
}

#[inline]
fn leaf(adj: u32, len: u8) -> u32 {
    (u32::from(len) << LEN_SHIFT) | (adj + 1)
}

#[inline]
fn is_chunk(slot: u32) -> bool {
    slot & CHUNK != 0
}

#[inline]
fn slot_len(slot: u32) -> u8 {
    ((slot >> LEN_SHIFT) & 0x7f) as u8
}

#[inline]
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// One VRF's table. Cloning it copies the arrays: the control plane clones, edits and
/// publishes a new version while workers keep reading the old one.
pub struct Fib {
    /// How many top bits of the address index `level1`: 16 or 24.
    level1_bits: u8,
    level1: Box<[u32]>,
    chunks: Vec<[u32; 256]>,
    free_chunks: Vec<u32>,
    /// The authoritative set of prefixes: (masked address, length) -> adjacency.
    prefixes: HashMap<(u32, u8), u32>,
    /// How many of `prefixes` are longer than /16: what decides `level1_bits`.
    long_prefixes: usize,
    /// The widening and narrowing marks ([`WIDEN_AT`], [`NARROW_AT`]; smaller in tests).
    widen_at: usize,
    narrow_at: usize,
}

/// A copy of `items` in a new allocation of room for `capacity`, advised onto huge pages
/// before it is written: the wide first level (64 MiB) and the chunks of a million routes
/// (hundreds of megabytes) are read at random, and on 4 KiB pages nearly every lookup
/// also missed the TLB.
fn on_huge_pages<T: Clone>(items: &[T], capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity.max(items.len()));
    contiv_hw::memory::advise_huge_pages(v.spare_capacity_mut());
    v.extend_from_slice(items);
    v
}

/// A first level of `bits`, every slot empty.
fn empty_level1(bits: u8) -> Box<[u32]> {
    let n = 1 << bits;
    let mut v = on_huge_pages(&[], n);
    v.resize(n, EMPTY);
    v.into_boxed_slice()
}

impl Clone for Fib {
    fn clone(&self) -> Self {
        Fib {
            level1_bits: self.level1_bits,
            level1: on_huge_pages(&self.level1, self.level1.len()).into_boxed_slice(),
            chunks: on_huge_pages(&self.chunks, self.chunks.capacity()),
            free_chunks: self.free_chunks.clone(),
            prefixes: self.prefixes.clone(),
            long_prefixes: self.long_prefixes,
            widen_at: self.widen_at,
            narrow_at: self.narrow_at,
        }
    }
}

/// One level of the trie, as the write path walks it.
#[derive(Clone, Copy)]
enum Level {
    First,
    Chunk(usize),
}

/// The lookup side of a [`Fib`] ([`Fib::reader`]).
#[derive(Clone, Copy)]
pub struct FibReader<'a> {
    /// 32 less the first level's width.
    shift: u32,
    level1: &'a [u32],
    chunks: &'a [[u32; 256]],
}

impl FibReader<'_> {
    /// The adjacency of the longest prefix that covers `addr`.
    #[inline]
    pub fn lookup(self, addr: u32) -> Option<u32> {
        // One code path for both widths: the first level takes the top bits, each chunk
        // the next 8 (with a 24-bit first level there is at most one chunk level).
        let shift = self.shift;
        let mut slot = self.level1[(addr >> shift) as usize];
        if is_chunk(slot) {
            slot = self.chunks[(slot & !CHUNK) as usize][((addr >> (shift - 8)) & 0xff) as usize];
            if is_chunk(slot) {
                slot = self.chunks[(slot & !CHUNK) as usize][(addr & 0xff) as usize];
            }
        }
        (slot & VALUE_MASK).checked_sub(1)
    }

    /// Reads the first-level slot of every address and starts bringing the chunk line
    /// below it into cache.
    #[inline]
    pub fn prefetch_chunks(self, addrs: &[u32]) {
        let shift = self.shift;
        for &a in addrs {
            let slot = self.level1[(a >> shift) as usize];
            if is_chunk(slot) {
                if let Some(chunk) = self.chunks.get((slot & !CHUNK) as usize) {
                    contiv_hw::prefetch_read(&chunk[((a >> (shift - 8)) & 0xff) as usize]);
                }
            }
        }
    }
}

impl Default for Fib {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fib")
            .field("prefixes", &self.prefixes.len())
            .field("level1_bits", &self.level1_bits)
            .field("chunks", &self.live_chunks())
            .finish()
    }
}

impl Fib {
    pub fn new() -> Self {
        Self::with_marks(WIDEN_AT, NARROW_AT)
    }

    /// A table that widens and narrows at marks of the caller's (tests cross them with a
    /// few hundred prefixes).
    fn with_marks(widen_at: usize, narrow_at: usize) -> Self {
        Fib {
            level1_bits: NARROW_BITS,
            level1: empty_level1(NARROW_BITS),
            chunks: Vec::new(),
            free_chunks: Vec::new(),
            prefixes: HashMap::new(),
            long_prefixes: 0,
            widen_at,
            narrow_at,
        }
    }

    /// How many top bits of an address the first level is indexed by (16, or 24 for an
    /// Internet-sized table).
    pub fn level1_bits(&self) -> u8 {
        self.level1_bits
    }

    /// The adjacency of the longest prefix that covers `addr`.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        self.reader().lookup(addr)
    }

    /// What lookups read, copied out: a loop over packets that holds it keeps the
    /// table's pointers in registers instead of reloading them after every store.
    #[inline]
    pub fn reader(&self) -> FibReader<'_> {
        FibReader {
            shift: 32 - u32::from(self.level1_bits),
            level1: &self.level1,
            chunks: &self.chunks,
        }
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Chunks in use (for memory accounting).
    pub fn live_chunks(&self) -> usize {
        self.chunks.len() - self.free_chunks.len()
    }

    /// Bytes of lookup structure in use.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.level1) + self.live_chunks() * 256 * 4
    }

    /// The adjacency of exactly this prefix, if present.
    pub fn get(&self, addr: Ipv4Addr, len: u8) -> Option<u32> {
        if len > 32 {
            return None;
        }
        self.prefixes
            .get(&(u32::from(addr) & mask(len), len))
            .copied()
    }

    /// Every prefix, sorted by address then length.
    pub fn routes(&self) -> Vec<(Ipv4Addr, u8, u32)> {
        let mut v: Vec<_> = self
            .prefixes
            .iter()
            .map(|(&(a, l), &adj)| (Ipv4Addr::from(a), l, adj))
            .collect();
        v.sort_unstable();
        v
    }

    /// Adds or replaces a prefix.
    pub fn insert(&mut self, addr: Ipv4Addr, len: u8, adj: u32) -> Result<(), FibError> {
        if len > 32 {
            return Err(FibError::PrefixLength(len));
        }
        if adj > MAX_ADJACENCY {
            return Err(FibError::AdjacencyRange(adj));
        }
        let base = u32::from(addr) & mask(len);
        let new = self.prefixes.insert((base, len), adj).is_none();
        if new && len > NARROW_BITS {
            self.long_prefixes += 1;
            if self.level1_bits == NARROW_BITS && self.long_prefixes >= self.widen_at {
                self.rebuild(WIDE_BITS);
                return Ok(());
            }
        }
        self.write(base, len, leaf(adj, len), |old_len| old_len <= len);
        Ok(())
    }

    /// Removes a prefix; its addresses fall back to the next covering prefix.
    pub fn remove(&mut self, addr: Ipv4Addr, len: u8) -> Result<u32, FibError> {
        if len > 32 {
            return Err(FibError::PrefixLength(len));
        }
        let base = u32::from(addr) & mask(len);
        let adj = self
            .prefixes
            .remove(&(base, len))
            .ok_or(FibError::NoSuchRoute(Ipv4Addr::from(base), len))?;
        if len > NARROW_BITS {
            self.long_prefixes -= 1;
            if self.level1_bits == WIDE_BITS && self.long_prefixes < self.narrow_at {
                self.rebuild(NARROW_BITS);
                return Ok(adj);
            }
        }
        let replacement = (0..len)
            .rev()
            .find_map(|l| self.prefixes.get(&(base & mask(l), l)).map(|&a| leaf(a, l)))
            .unwrap_or(EMPTY);
        self.write(base, len, replacement, |old_len| old_len == len);
        Ok(adj)
    }

    /// Rebuilds the lookup structure from `prefixes` with a first level of `bits`.
    fn rebuild(&mut self, bits: u8) {
        let mut routes: Vec<(u8, u32, u32)> = self
            .prefixes
            .iter()
            .map(|(&(base, len), &adj)| (len, base, adj))
            .collect();
        // Shortest first: each prefix then overwrites only what it owns.
        routes.sort_unstable();
        self.level1_bits = bits;
        self.level1 = empty_level1(bits);
        self.chunks = Vec::new();
        self.free_chunks.clear();
        for (len, base, adj) in routes {
            self.write(base, len, leaf(adj, len), |old_len| old_len <= len);
        }
    }

    /// Writes `value` into every slot the prefix covers whose current owner's length
    /// passes `replace`, descending into chunks.
    fn write(&mut self, base: u32, len: u8, value: u32, replace: impl Fn(u8) -> bool + Copy) {
        self.write_in(Level::First, self.level1_bits, base, len, value, replace);
    }

    /// `write` within one level: the first, or a chunk. Its slots are indexed by the
    /// address bits just above bit `32 - end` (the level resolves the first `end` bits).
    fn write_in(
        &mut self,
        level: Level,
        end: u8,
        base: u32,
        len: u8,
        value: u32,
        replace: impl Fn(u8) -> bool + Copy,
    ) {
        let i = ((base >> (32 - end)) as usize) & (self.slots(level).len() - 1);
        if len <= end {
            for i in i..i + (1usize << (end - len)) {
                let slot = self.slots(level)[i];
                let new = self.write_slot(slot, value, replace);
                self.slots_mut(level)[i] = new;
            }
            return;
        }
        let child = self.ensure_chunk(level, i);
        self.write_in(Level::Chunk(child), end + 8, base, len, value, replace);
        if let Some(v) = self.uniform(child) {
            self.free_chunk(child);
            self.slots_mut(level)[i] = v;
        }
    }

    fn slots(&self, level: Level) -> &[u32] {
        match level {
            Level::First => &self.level1,
            Level::Chunk(c) => &self.chunks[c],
        }
    }

    fn slots_mut(&mut self, level: Level) -> &mut [u32] {
        match level {
            Level::First => &mut self.level1,
            Level::Chunk(c) => &mut self.chunks[c],
        }
    }

    /// The new content of one slot: a leaf replaced (or kept), or a chunk whose every
    /// slot is written in turn (and folded if it became uniform).
    fn write_slot(&mut self, slot: u32, value: u32, replace: impl Fn(u8) -> bool + Copy) -> u32 {
        if !is_chunk(slot) {
            return if replace(slot_len(slot)) { value } else { slot };
        }
        let c = (slot & !CHUNK) as usize;
        for i in 0..256 {
            let inner = self.chunks[c][i];
            let new = self.write_slot(inner, value, replace);
            self.chunks[c][i] = new;
        }
        match self.uniform(c) {
            Some(v) => {
                self.free_chunk(c);
                v
            }
            None => slot,
        }
    }

    /// The chunk below slot `i` of `level`, made (inheriting the slot's leaf) if there is
    /// none yet.
    fn ensure_chunk(&mut self, level: Level, i: usize) -> usize {
        let slot = self.slots(level)[i];
        if is_chunk(slot) {
            return (slot & !CHUNK) as usize;
        }
        let c = self.alloc_chunk(slot);
        self.slots_mut(level)[i] = CHUNK | c as u32;
        c
    }

    /// A chunk whose slots all inherit `fill` (the leaf it replaces).
    fn alloc_chunk(&mut self, fill: u32) -> usize {
        match self.free_chunks.pop() {
            Some(c) => {
                self.chunks[c as usize] = [fill; 256];
                c as usize
            }
            None => {
                if self.chunks.len() == self.chunks.capacity() {
                    self.grow_chunks();
                }
                self.chunks.push([fill; 256]);
                self.chunks.len() - 1
            }
        }
    }

    /// Doubles the chunk array, into a new allocation on huge pages.
    fn grow_chunks(&mut self) {
        self.chunks = on_huge_pages(&self.chunks, (self.chunks.capacity() * 2).max(64));
    }

    fn free_chunk(&mut self, c: usize) {
        self.free_chunks.push(c as u32);
    }

    /// The leaf every slot of chunk `c` holds, if they all hold the same leaf.
    fn uniform(&self, c: usize) -> Option<u32> {
        let first = self.chunks[c][0];
        if is_chunk(first) {
            return None;
        }
        self.chunks[c].iter().all(|&s| s == first).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The obviously correct reference: scan every prefix, keep the longest match.
    fn naive(prefixes: &HashMap<(u32, u8), u32>, addr: u32) -> Option<u32> {
        prefixes
            .iter()
            .filter(|(&(base, len), _)| addr & mask(len) == base)
            .max_by_key(|(&(_, len), _)| len)
            .map(|(_, &adj)| adj)
    }

    fn ip(a: u32) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    #[test]
    fn longest_prefix_wins_and_delete_falls_back() {
        let mut f = Fib::new();
        f.insert("10.0.0.0".parse().unwrap(), 8, 1).unwrap();
        f.insert("10.1.0.0".parse().unwrap(), 16, 2).unwrap();
        f.insert("10.1.2.0".parse().unwrap(), 24, 3).unwrap();
        f.insert("10.1.2.3".parse().unwrap(), 32, 4).unwrap();
        let l = |s: &str| f.lookup(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        assert_eq!(l("10.1.2.3"), Some(4));
        assert_eq!(l("10.1.2.4"), Some(3));
        assert_eq!(l("10.1.3.4"), Some(2));
        assert_eq!(l("10.2.3.4"), Some(1));
        assert_eq!(l("11.0.0.0"), None);
        let mut f2 = f.clone();
        f2.remove("10.1.2.0".parse().unwrap(), 24).unwrap();
        assert_eq!(f2.lookup(u32::from(Ipv4Addr::new(10, 1, 2, 4))), Some(2));
        assert_eq!(f2.lookup(u32::from(Ipv4Addr::new(10, 1, 2, 3))), Some(4));
        assert_eq!(l("10.1.2.4"), Some(3), "the old version is untouched");
        assert_eq!(
            f2.remove("10.1.2.0".parse().unwrap(), 24),
            Err(FibError::NoSuchRoute("10.1.2.0".parse().unwrap(), 24))
        );
        assert_eq!(f2.insert(ip(0), 33, 1), Err(FibError::PrefixLength(33)));
    }

    #[test]
    fn chunks_are_folded_when_routes_leave() {
        let mut f = Fib::new();
        f.insert(ip(0), 0, 9).unwrap();
        for i in 0..50u32 {
            f.insert(ip(0x0a00_0000 | (i << 8) | 7), 32, i).unwrap();
            f.insert(ip(0x0b00_0000 | (i << 16)), 20, i).unwrap();
        }
        assert!(f.live_chunks() > 0);
        for i in 0..50u32 {
            f.remove(ip(0x0a00_0000 | (i << 8) | 7), 32).unwrap();
            f.remove(ip(0x0b00_0000 | (i << 16)), 20).unwrap();
        }
        assert_eq!(f.live_chunks(), 0, "every chunk was folded back");
        assert_eq!(f.lookup(0x0a00_0107), Some(9));
    }

    /// Probes `f` at 200 addresses in the clustered space where the chunks are.
    fn probe_clustered(
        f: &Fib,
        reference: &HashMap<(u32, u8), u32>,
        rng: &mut ChaCha8Rng,
        what: &str,
    ) {
        for _ in 0..200 {
            let probe = (rng.random::<u32>() & 0x0f0f_ffff) | 0x0a00_0000;
            assert_eq!(
                f.lookup(probe),
                naive(reference, probe),
                "{what} probe {}",
                ip(probe)
            );
        }
    }

    /// Random inserts and removes, clustered so that they overlap, checked against the
    /// naive reference as they go (`lookup`, and a reader after `prefetch_chunks`); then every prefix is
    /// removed again. Prefixes are `shortest` bits long or more. Returns the first-level
    /// widths the table went through.
    fn random_table_against_naive(seed: u64, mut f: Fib, shortest: u8) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut reference = HashMap::new();
        let mut widths = vec![f.level1_bits()];
        let mut note_width = |f: &Fib| {
            if widths.last() != Some(&f.level1_bits()) {
                widths.push(f.level1_bits());
            }
        };
        // Prefixes clustered in a small space so that they overlap.
        for step in 0..3000 {
            let len = rng.random_range(shortest..=32u8);
            let addr = (rng.random::<u32>() & 0x0f0f_ffff) | 0x0a00_0000;
            let base = addr & mask(len);
            if step % 3 == 2 && !reference.is_empty() {
                // Remove an existing prefix.
                let mut keys: Vec<_> = reference.keys().copied().collect();
                keys.sort_unstable();
                let (b, l) = keys[rng.random_range(0..keys.len())];
                assert_eq!(
                    f.remove(ip(b), l),
                    reference
                        .remove(&(b, l))
                        .ok_or(FibError::NoSuchRoute(ip(b), l))
                );
            } else {
                let adj = rng.random_range(0..1000);
                f.insert(ip(addr), len, adj).unwrap();
                reference.insert((base, len), adj);
            }
            note_width(&f);
            if step % 100 == 0 {
                probe_clustered(
                    &f,
                    &reference,
                    &mut rng,
                    &format!("seed {seed} step {step}"),
                );
            }
        }
        let probes: Vec<u32> = (0..5000)
            .map(|i| {
                // Half in the clustered space, where the chunks are.
                let r = rng.random::<u32>();
                if i % 2 == 0 {
                    (r & 0x0f0f_ffff) | 0x0a00_0000
                } else {
                    r
                }
            })
            .collect();
        // As ip4-lookup looks up a vector: the chunk lines prefetched, then each address.
        let reader = f.reader();
        reader.prefetch_chunks(&probes);
        let bulk: Vec<u32> = probes
            .iter()
            .map(|&a| reader.lookup(a).unwrap_or(u32::MAX))
            .collect();
        for (&probe, &got) in probes.iter().zip(&bulk) {
            let expected = naive(&reference, probe);
            assert_eq!(f.lookup(probe), expected, "seed {seed} probe {}", ip(probe));
            assert_eq!(
                got,
                expected.unwrap_or(u32::MAX),
                "seed {seed} bulk probe {}",
                ip(probe)
            );
        }
        assert_eq!(f.len(), reference.len());
        // Everything out again, in random order.
        let mut keys: Vec<_> = reference.keys().copied().collect();
        keys.sort_unstable();
        while !keys.is_empty() {
            let (b, l) = keys.swap_remove(rng.random_range(0..keys.len()));
            assert_eq!(f.remove(ip(b), l), Ok(reference.remove(&(b, l)).unwrap()));
            note_width(&f);
            if keys.len() % 50 == 0 {
                probe_clustered(&f, &reference, &mut rng, &format!("seed {seed} emptying"));
            }
        }
        assert_eq!(
            f.live_chunks(),
            0,
            "seed {seed}: every chunk was folded back"
        );
        assert_eq!(f.lookup(0x0a01_0203), None);
        widths
    }

    #[test]
    fn random_prefixes_match_the_naive_reference() {
        for seed in 0..8u64 {
            let widths = random_table_against_naive(seed, Fib::new(), 0);
            assert_eq!(widths, [16], "a few hundred prefixes never widen the table");
        }
    }

    #[test]
    fn widening_and_narrowing_keep_every_answer() {
        // The same random tables with marks low enough to cross both ways: about 500
        // prefixes longer than /16 are live at the peak. None shorter than /12: in a wide
        // table a /0 rewrites 16M slots, which a debug build takes seconds over (the
        // test below has short prefixes over a wide table).
        for seed in 0..8u64 {
            let widths = random_table_against_naive(seed, Fib::with_marks(250, 125), 12);
            assert_eq!(widths, [16, 24, 16], "seed {seed}: widened, then narrowed");
        }
    }

    #[test]
    fn a_wide_table_answers_like_a_narrow_one() {
        // Routes of every length around the 24-bit boundary, the default route under
        // them, looked up in both widths at every address of a /22 they cover.
        let mut narrow = Fib::new();
        let mut wide = Fib::with_marks(1, 0);
        let routes = [
            (0x0000_0000, 0, 1),
            (0x0a00_0000, 8, 2),
            (0x0a01_0000, 16, 3),
            (0x0a01_0000, 23, 4),
            (0x0a01_0200, 24, 5),
            (0x0a01_0280, 25, 6),
            (0x0a01_0204, 30, 7),
            (0x0a01_0207, 32, 8),
            (0x0a01_0300, 26, 9),
        ];
        for (a, l, adj) in routes {
            narrow.insert(ip(a), l, adj).unwrap();
            wide.insert(ip(a), l, adj).unwrap();
        }
        assert_eq!((narrow.level1_bits(), wide.level1_bits()), (16, 24));
        assert_eq!(
            wide.memory_bytes(),
            (1 << 24) * 4 + wide.live_chunks() * 1024
        );
        for a in 0x0a01_0000..0x0a01_0400u32 {
            assert_eq!(wide.lookup(a), narrow.lookup(a), "{}", ip(a));
        }
        assert_eq!(wide.lookup(0x0a01_0207), Some(8));
        assert_eq!(wide.lookup(0x0a01_0206), Some(7));
        assert_eq!(wide.lookup(0x0a01_0290), Some(6));
        assert_eq!(wide.lookup(0x0a01_0301), Some(9));
        assert_eq!(wide.lookup(0x0b00_0000), Some(1));
        // A clone is independent and reads the same.
        let mut copy = wide.clone();
        copy.remove(ip(0x0a01_0200), 24).unwrap();
        assert_eq!(copy.lookup(0x0a01_0201), Some(3));
        assert_eq!(wide.lookup(0x0a01_0201), Some(5));
    }
}
