//! Packet buffers and the pool they come from.
//!
//! A [`PacketBuf`] is one fixed-size buffer with [`BUF_HEADROOM`] bytes kept free in front
//! of the frame so that encapsulations (VXLAN: 50 bytes) are prepended in place. Buffers are
//! allocated once, when the pool is made, and recycled: the fast path never touches the
//! heap.
//!
//! The engine only sees the accessors (`data`, `data_mut`, `prepend`, `advance`,
//! `truncate`, `meta`), never the storage. That is the seam for DPDK: the `dpdk` port kind
//! wraps an `rte_mbuf` behind the same accessors (data offset = mbuf `data_off`, length =
//! `data_len`), so mbufs pass through the graph in place, with no copy on rx or tx.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

/// Bytes kept free in front of a received frame for encapsulation headers.
pub const BUF_HEADROOM: usize = 128;
/// Bytes available for the frame itself (a standard 1500-byte MTU frame and then some).
pub const BUF_DATA_ROOM: usize = 2048;
/// Total size of one buffer.
pub const BUF_SIZE: usize = BUF_HEADROOM + BUF_DATA_ROOM;
/// The largest vector of packets moved through the graph at once (VPP's frame size).
pub const VECTOR_SIZE: usize = 256;

/// A vector of packets. Callers create it with `Vec::with_capacity(VECTOR_SIZE)` and clear
/// it between uses, so it never reallocates in steady state.
pub type PacketVec = Vec<PacketBuf>;

/// Per-packet metadata that travels with the buffer through the graph (VPP's `vnet_buffer`
/// opaque). Kept small and `Copy` so moving a packet is moving a few words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// The port the packet came in on.
    pub rx_port: u16,
    /// The port the packet goes out of, once decided.
    pub tx_port: u16,
    /// The routing table (VRF) the packet is looked up in.
    pub vrf: u16,
    /// The adjacency ip4-lookup chose.
    pub adjacency: u32,
    /// Non-zero when the packet is traced: an index into the engine's trace buffer.
    pub trace: u16,
    /// Scratch for the node that is processing the packet (e.g. the ICMP error to build).
    pub scratch: u32,
}

/// One packet buffer. See the module documentation for the layout.
pub struct PacketBuf {
    // A thin pointer: with the 16-byte metadata a `PacketBuf` is 32 bytes, and every node
    // and ring moves it by value.
    storage: Box<[u8; BUF_SIZE]>,
    start: u16,
    len: u16,
    /// Metadata the graph nodes read and write.
    pub meta: PacketMeta,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl PacketBuf {
    fn new_storage() -> Box<[u8; BUF_SIZE]> {
        // Made on the heap directly: a 2 KiB array on the stack first would be wasteful.
        vec![0u8; BUF_SIZE]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("the vector has BUF_SIZE bytes"))
    }

    fn from_storage(storage: Box<[u8; BUF_SIZE]>) -> Self {
        PacketBuf {
            storage,
            start: BUF_HEADROOM as u16,
            len: 0,
            meta: PacketMeta::default(),
        }
    }

    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let start = self.start as usize;
        &self.storage[start..start + self.len as usize]
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let start = self.start as usize;
        &mut self.storage[start..start + self.len as usize]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start as usize
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.storage.len() - self.start as usize - self.len as usize
    }

    /// Grows the frame at the front by `n` bytes (for a new header) and returns them.
    /// `None` when the headroom is too small; the buffer is then unchanged.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start as usize {
            return None;
        }
        self.start -= n as u16;
        self.len += n as u16;
        let start = self.start as usize;
        Some(&mut self.storage[start..start + n])
    }

    /// Removes `n` bytes from the front of the frame (to strip a header). `false`, and no
    /// change, when the frame is shorter than `n`.
    #[inline]
    pub fn advance(&mut self, n: usize) -> bool {
        if n > self.len as usize {
            return false;
        }
        self.start += n as u16;
        self.len -= n as u16;
        true
    }

    /// Shortens the frame to `len` bytes (no-op when it is already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len as usize {
            self.len = len as u16;
        }
    }

    /// Sets the frame length, growing into the tailroom (new bytes are whatever the buffer
    /// held). `false`, and no change, when it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.start as usize + len > self.storage.len() {
            return false;
        }
        self.len = len as u16;
        true
    }

    /// Replaces the frame with `bytes`, starting after the standard headroom. `false`, and
    /// no change, when `bytes` is larger than [`BUF_DATA_ROOM`].
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > BUF_DATA_ROOM {
            return false;
        }
        self.start = BUF_HEADROOM as u16;
        self.len = bytes.len() as u16;
        self.storage[BUF_HEADROOM..BUF_HEADROOM + bytes.len()].copy_from_slice(bytes);
        true
    }

    /// Resets the layout and metadata as for a freshly allocated buffer.
    #[inline]
    pub fn reset(&mut self) {
        self.start = BUF_HEADROOM as u16;
        self.len = 0;
        self.meta = PacketMeta::default();
    }
}

struct PoolShared {
    name: String,
    capacity: usize,
    free: ArrayQueue<Box<[u8; BUF_SIZE]>>,
}

/// A pool of packet buffers, all allocated when the pool is made.
///
/// Shaped like a DPDK mempool: a lock-free shared ring of free buffers plus a per-handle
/// cache, refilled and flushed in bulk, so that a worker usually allocates and frees
/// without touching the shared ring at all. Each worker thread holds its own handle
/// ([`BufferPool::handle`]); handles are `Send` but not shared.
pub struct BufferPool {
    shared: Arc<PoolShared>,
    // Each box is a buffer that is handed out and taken back whole; a Vec of arrays
    // would copy 2 KiB per alloc and free.
    #[allow(clippy::vec_box)]
    cache: Vec<Box<[u8; BUF_SIZE]>>,
    cache_target: usize,
}

impl BufferPool {
    /// Makes a pool of `capacity` buffers and returns the first handle to it.
    pub fn new(name: &str, capacity: usize) -> Self {
        let free = ArrayQueue::new(capacity.max(1));
        for _ in 0..capacity {
            // Cannot fail: the ring was sized for exactly these buffers.
            let _ = free.push(PacketBuf::new_storage());
        }
        let shared = Arc::new(PoolShared {
            name: name.to_string(),
            capacity,
            free,
        });
        Self::with_shared(shared)
    }

    fn with_shared(shared: Arc<PoolShared>) -> Self {
        let cache_target = (shared.capacity / 8).clamp(1, 2 * VECTOR_SIZE);
        BufferPool {
            shared,
            cache: Vec::with_capacity(2 * cache_target + VECTOR_SIZE),
            cache_target,
        }
    }

    /// Another handle to the same pool, with its own cache, for another worker.
    pub fn handle(&self) -> BufferPool {
        Self::with_shared(Arc::clone(&self.shared))
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many buffers the pool was made with.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Free buffers in the shared ring plus this handle's cache (other handles' caches are
    /// not counted).
    pub fn available(&self) -> usize {
        self.shared.free.len() + self.cache.len()
    }

    /// One buffer, reset; `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PacketBuf> {
        if self.cache.is_empty() {
            self.refill();
        }
        self.cache.pop().map(PacketBuf::from_storage)
    }

    /// Up to `n` buffers appended to `out`; returns how many.
    pub fn alloc_bulk(&mut self, n: usize, out: &mut PacketVec) -> usize {
        let mut got = 0;
        while got < n {
            match self.alloc() {
                Some(p) => {
                    out.push(p);
                    got += 1;
                }
                None => break,
            }
        }
        got
    }

    fn refill(&mut self) {
        for _ in 0..self.cache_target {
            match self.shared.free.pop() {
                Some(b) => self.cache.push(b),
                None => break,
            }
        }
    }

    /// Returns a buffer to the pool.
    #[inline]
    pub fn free(&mut self, pkt: PacketBuf) {
        self.cache.push(pkt.storage);
        if self.cache.len() >= 2 * self.cache_target {
            self.flush(self.cache_target);
        }
    }

    /// Returns every buffer of `pkts` to the pool, leaving `pkts` empty.
    pub fn free_all(&mut self, pkts: &mut PacketVec) {
        for p in pkts.drain(..) {
            self.free(p);
        }
    }

    fn flush(&mut self, keep: usize) {
        while self.cache.len() > keep {
            let Some(b) = self.cache.pop() else { break };
            // A buffer that came from another pool (across a virtual wire between two
            // worlds) may find this ring full: it is then simply released.
            let _ = self.shared.free.push(b);
        }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // Give the cached buffers back so other handles of the pool can use them.
        self.flush(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_four_words() {
        // Moved by value through every node and ring: keep it small.
        assert_eq!(std::mem::size_of::<PacketBuf>(), 32);
    }

    #[test]
    fn prepend_and_advance_respect_headroom() {
        let mut pool = BufferPool::new("t", 4);
        let mut p = pool.alloc().expect("buffer");
        assert!(p.fill(&[1, 2, 3, 4]));
        assert_eq!(p.headroom(), BUF_HEADROOM);
        let hdr = p.prepend(64).expect("64 bytes of headroom");
        hdr.fill(9);
        assert_eq!(p.len(), 68);
        assert_eq!(&p.data()[64..], &[1, 2, 3, 4]);
        assert!(p.prepend(BUF_HEADROOM).is_none(), "only 64 bytes left");
        assert!(p.advance(64));
        assert_eq!(p.data(), &[1, 2, 3, 4]);
        assert!(!p.advance(5));
        assert_eq!(p.len(), 4);
        pool.free(p);
    }

    #[test]
    fn pool_recycles_without_growing() {
        let mut pool = BufferPool::new("t", 300);
        let mut v = Vec::with_capacity(VECTOR_SIZE * 2);
        assert_eq!(pool.alloc_bulk(300, &mut v), 300);
        assert!(pool.alloc().is_none(), "exhausted pool says so");
        pool.free_all(&mut v);
        assert_eq!(pool.available(), 300);
        for _ in 0..10 {
            assert_eq!(pool.alloc_bulk(256, &mut v), 256);
            pool.free_all(&mut v);
        }
        assert_eq!(pool.available(), 300);
    }

    #[test]
    fn handles_share_one_pool() {
        let mut a = BufferPool::new("t", 64);
        let mut b = a.handle();
        let p = a.alloc().expect("buffer");
        b.free(p);
        drop(b);
        assert_eq!(a.available(), 64);
    }

    #[test]
    fn fill_rejects_oversize_and_keeps_buffer() {
        let mut pool = BufferPool::new("t", 1);
        let mut p = pool.alloc().expect("buffer");
        assert!(p.fill(&[7; 10]));
        assert!(!p.fill(&vec![0; BUF_DATA_ROOM + 1]));
        assert_eq!(p.data(), &[7; 10]);
    }
}
