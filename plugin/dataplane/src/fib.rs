//! The IPv4 forwarding table of one VRF: longest-prefix match in at most three memory
//! reads, whatever the number of prefixes.
//!
//! A multibit trie with strides 16, 8 and 8 (DIR-16-8-8): a 65,536-slot first level
//! indexed by the top 16 bits, and 256-slot chunks for the next 8 and the last 8 bits,
//! made only where a prefix longer than /16 (or /24) needs them. It is sized by what it
//! holds: an empty table is 256 KiB, a million /24 routes about 64 MiB. Prefixes are
//! expanded into the slots they cover ("leaf pushing"); each slot remembers the length of
//! the prefix that owns it, so an insert overwrites only shorter owners and a delete
//! hands its slots to the next covering prefix. Chunks that become uniform are folded
//! back into their parent slot.
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
    level1: Box<[u32; 1 << 16]>,
    chunks: Vec<[u32; 256]>,
    free_chunks: Vec<u32>,
    /// The authoritative set of prefixes: (masked address, length) -> adjacency.
    prefixes: HashMap<(u32, u8), u32>,
}

impl Clone for Fib {
    /// The copy's chunk array is advised onto huge pages before it is written (see
    /// `grow_chunks`).
    fn clone(&self) -> Self {
        let mut chunks = Vec::with_capacity(self.chunks.capacity());
        contiv_hw::memory::advise_huge_pages(chunks.spare_capacity_mut());
        chunks.extend_from_slice(&self.chunks);
        Fib {
            level1: self.level1.clone(),
            chunks,
            free_chunks: self.free_chunks.clone(),
            prefixes: self.prefixes.clone(),
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
            .field("chunks", &self.live_chunks())
            .finish()
    }
}

impl Fib {
    pub fn new() -> Self {
        let level1: Box<[u32; 1 << 16]> = vec![EMPTY; 1 << 16]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("the vector has exactly 65536 slots"));
        Fib {
            level1,
            chunks: Vec::new(),
            free_chunks: Vec::new(),
            prefixes: HashMap::new(),
        }
    }

    /// The adjacency of the longest prefix that covers `addr`.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let mut slot = self.level1[(addr >> 16) as usize];
        if is_chunk(slot) {
            slot = self.chunks[(slot & !CHUNK) as usize][((addr >> 8) & 0xff) as usize];
            if is_chunk(slot) {
                slot = self.chunks[(slot & !CHUNK) as usize][(addr & 0xff) as usize];
            }
        }
        (slot & VALUE_MASK).checked_sub(1)
    }

    /// Starts bringing the first-level slot of `addr` into cache, for a lookup soon after.
    #[inline]
    pub fn prefetch(&self, addr: u32) {
        contiv_hw::prefetch_read(&self.level1[(addr >> 16) as usize]);
    }

    /// Looks up many addresses at once, replacing each with its adjacency or `miss`.
    ///
    /// In stages, so that the cache misses of a whole vector overlap: first every
    /// first-level slot is read and the chunk line each address will need is prefetched,
    /// then the lookups finish on lines that are (mostly) already in cache.
    #[inline]
    pub fn lookup_bulk(&self, addrs: &mut [u32], miss: u32) {
        for &a in addrs.iter() {
            let slot = self.level1[(a >> 16) as usize];
            if is_chunk(slot) {
                if let Some(chunk) = self.chunks.get((slot & !CHUNK) as usize) {
                    contiv_hw::prefetch_read(&chunk[((a >> 8) & 0xff) as usize]);
                }
            }
        }
        for a in addrs.iter_mut() {
            *a = self.lookup(*a).unwrap_or(miss);
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
        (1 << 16) * 4 + self.live_chunks() * 256 * 4
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
        self.prefixes.insert((base, len), adj);
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
        let replacement = (0..len)
            .rev()
            .find_map(|l| self.prefixes.get(&(base & mask(l), l)).map(|&a| leaf(a, l)))
            .unwrap_or(EMPTY);
        self.write(base, len, replacement, |old_len| old_len == len);
        Ok(adj)
    }

    /// Writes `value` into every slot the prefix covers whose current owner's length
    /// passes `replace`, descending into chunks.
    fn write(&mut self, base: u32, len: u8, value: u32, replace: impl Fn(u8) -> bool + Copy) {
        if len <= 16 {
            let first = (base >> 16) as usize;
            let count = 1usize << (16 - len);
            for i in first..first + count {
                let slot = self.level1[i];
                let new = self.write_slot(slot, value, replace);
                self.level1[i] = new;
            }
            return;
        }
        let i1 = (base >> 16) as usize;
        let c1 = self.ensure_chunk_level1(i1);
        if len <= 24 {
            let first = ((base >> 8) & 0xff) as usize;
            let count = 1usize << (24 - len);
            for i in first..first + count {
                let slot = self.chunks[c1][i];
                let new = self.write_slot(slot, value, replace);
                self.chunks[c1][i] = new;
            }
        } else {
            let i2 = ((base >> 8) & 0xff) as usize;
            let c2 = self.ensure_chunk_in(c1, i2);
            let first = (base & 0xff) as usize;
            let count = 1usize << (32 - len);
            for i in first..first + count {
                let slot = self.chunks[c2][i];
                if replace(slot_len(slot)) {
                    self.chunks[c2][i] = value;
                }
            }
            if let Some(v) = self.uniform(c2) {
                self.free_chunk(c2);
                self.chunks[c1][i2] = v;
            }
        }
        if let Some(v) = self.uniform(c1) {
            self.free_chunk(c1);
            self.level1[i1] = v;
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

    fn ensure_chunk_level1(&mut self, i: usize) -> usize {
        let slot = self.level1[i];
        if is_chunk(slot) {
            return (slot & !CHUNK) as usize;
        }
        let c = self.alloc_chunk(slot);
        self.level1[i] = CHUNK | c as u32;
        c
    }

    fn ensure_chunk_in(&mut self, parent: usize, i: usize) -> usize {
        let slot = self.chunks[parent][i];
        if is_chunk(slot) {
            return (slot & !CHUNK) as usize;
        }
        let c = self.alloc_chunk(slot);
        self.chunks[parent][i] = CHUNK | c as u32;
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

    /// Doubles the chunk array into a new allocation advised onto huge pages before it
    /// is written: with a million routes the chunks take hundreds of megabytes, looked up
    /// at random, and on 4 KiB pages nearly every lookup also missed the TLB.
    fn grow_chunks(&mut self) {
        let mut grown = Vec::with_capacity((self.chunks.capacity() * 2).max(64));
        contiv_hw::memory::advise_huge_pages(grown.spare_capacity_mut());
        grown.extend_from_slice(&self.chunks);
        self.chunks = grown;
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

    #[test]
    fn random_prefixes_match_the_naive_reference() {
        for seed in 0..8u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut f = Fib::new();
            let mut reference = HashMap::new();
            // A few /8 .. /32 prefixes clustered in a small space so that they overlap.
            for step in 0..3000 {
                let len = rng.random_range(0..=32u8);
                let addr = (rng.random::<u32>() & 0x0f0f_ffff) | 0x0a00_0000;
                let base = addr & mask(len);
                if step % 3 == 2 && !reference.is_empty() {
                    // Remove an existing prefix.
                    let keys: Vec<_> = {
                        let mut k: Vec<_> = reference.keys().copied().collect();
                        k.sort_unstable();
                        k
                    };
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
                if step % 100 == 0 {
                    for _ in 0..200 {
                        let probe = (rng.random::<u32>() & 0x0f0f_ffff) | 0x0a00_0000;
                        assert_eq!(
                            f.lookup(probe),
                            naive(&reference, probe),
                            "seed {seed} probe {}",
                            ip(probe)
                        );
                    }
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
            let mut bulk = probes.clone();
            f.lookup_bulk(&mut bulk, u32::MAX);
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
        }
    }
}
