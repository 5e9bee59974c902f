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

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::Offload;

/// Bytes kept free in front of a received frame for encapsulation headers.
pub const BUF_HEADROOM: usize = 128;
/// Bytes available for the frame itself (a standard 1500-byte MTU frame and then some).
pub const BUF_DATA_ROOM: usize = 2048;
/// Total size of one buffer.
pub const BUF_SIZE: usize = BUF_HEADROOM + BUF_DATA_ROOM;
/// Total size of a large buffer, for TCP super-frames from ports with offloads (up to
/// 64 KiB of IP packet; the frame length is a `u16`).
pub const LARGE_BUF_SIZE: usize = u16::MAX as usize;
/// Bytes available for a frame in a large buffer.
pub const LARGE_BUF_DATA_ROOM: usize = LARGE_BUF_SIZE - BUF_HEADROOM;
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

/// Where a buffer's bytes live, and so where it goes back to when it is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Backing {
    /// A heap block of [`BUF_SIZE`] bytes, made when its [`BufferPool`] was.
    Heap = 0,
    /// A heap block of [`LARGE_BUF_SIZE`] bytes from the pool's large ring.
    Large = 1,
    /// The data room of a DPDK mbuf (the `rte_mbuf` header sits just before `base`).
    #[cfg(feature = "dpdk")]
    Mbuf = 2,
}

impl Backing {
    const fn attrs(self) -> u32 {
        (self as u32) << 24
    }

    #[inline]
    fn from_attrs(attrs: u32) -> Backing {
        match attrs >> 24 {
            0 => Backing::Heap,
            1 => Backing::Large,
            #[cfg(feature = "dpdk")]
            _ => Backing::Mbuf,
            #[cfg(not(feature = "dpdk"))]
            _ => Backing::Heap,
        }
    }
}

/// One packet buffer. See the module documentation for the layout.
///
/// Invariant, kept by every method: `start + len <= capacity`, and `base` points at
/// `capacity` bytes that this value owns alone (`BUF_SIZE`, or `LARGE_BUF_SIZE` for a
/// large buffer).
// Aligned to its size: vectors and rings then move it as two aligned 16-byte words. Left
// to itself the compiler built moved values at odd stack offsets with overlapping
// stores, and the store-forwarding stalls cost 60% of the I/O bound (measured with
// `ci/bench.sh`).
#[repr(C, align(32))]
pub struct PacketBuf {
    // A thin pointer: with the 16-byte metadata a `PacketBuf` is 32 bytes, and every node
    // and ring moves it by value.
    base: NonNull<u8>,
    start: u16,
    len: u16,
    /// The offload's segment size (bits 0-15) and flags (16-23), and the backing (24-31),
    /// in one word, so that the only niche of `Option<PacketBuf>` is the null `base`.
    attrs: u32,
    /// Metadata the graph nodes read and write.
    pub meta: PacketMeta,
}

// SAFETY: a `PacketBuf` owns its bytes exclusively (the heap block or the mbuf); no other
// value points into them while it lives, so it moves between threads and is shared
// read-only exactly as a `Box<[u8]>` would be.
unsafe impl Send for PacketBuf {}
// SAFETY: as above; `&PacketBuf` only reads.
unsafe impl Sync for PacketBuf {}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("backing", &self.backing())
            .field("start", &self.start)
            .field("len", &self.len)
            .field("offload", &self.offload())
            .field("meta", &self.meta)
            .finish()
    }
}

impl Drop for PacketBuf {
    fn drop(&mut self) {
        match self.backing() {
            // SAFETY: a heap-backed `base` came from `Box::into_raw` of a `[u8; N]` in
            // `new_block`, N being the `capacity` of its backing, and this value owned it
            // alone; a `[u8]` of that length has the same layout.
            Backing::Heap | Backing::Large => unsafe {
                let block = std::ptr::slice_from_raw_parts_mut(self.base.as_ptr(), self.capacity());
                drop(Box::from_raw(block));
            },
            #[cfg(feature = "dpdk")]
            Backing::Mbuf => crate::dpdk::free_mbuf_data(self.base),
        }
    }
}

impl PacketBuf {
    /// A new heap buffer of `N` bytes (only when a pool or its large ring is made: the
    /// fast path recycles).
    fn new_block<const N: usize>(backing: Backing) -> Self {
        // Made on the heap directly: the array on the stack first would be wasteful.
        let block: Box<[u8; N]> = vec![0u8; N]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("the vector has N bytes"));
        let base = NonNull::new(Box::into_raw(block) as *mut u8)
            .unwrap_or_else(|| unreachable!("Box::into_raw is never null"));
        PacketBuf {
            base,
            start: BUF_HEADROOM as u16,
            len: 0,
            attrs: backing.attrs(),
            meta: PacketMeta::default(),
        }
    }

    fn new_heap() -> Self {
        Self::new_block::<BUF_SIZE>(Backing::Heap)
    }

    fn new_large() -> Self {
        Self::new_block::<LARGE_BUF_SIZE>(Backing::Large)
    }

    /// Bytes of storage behind this buffer, headroom included.
    #[inline]
    pub fn capacity(&self) -> usize {
        match self.backing() {
            Backing::Large => LARGE_BUF_SIZE,
            _ => BUF_SIZE,
        }
    }

    /// Whether this is a large buffer (a TCP super-frame's).
    #[inline]
    pub fn is_large(&self) -> bool {
        self.backing() == Backing::Large
    }

    /// What is left to do to the frame before it can go on a wire (see [`Offload`]).
    #[inline]
    pub fn offload(&self) -> Offload {
        Offload {
            gso_size: self.attrs as u16,
            flags: (self.attrs >> 16) as u8,
        }
    }

    #[inline]
    pub fn set_offload(&mut self, o: Offload) {
        self.attrs = (self.attrs & 0xff00_0000) | u32::from(o.flags) << 16 | u32::from(o.gso_size);
    }

    /// Wraps the data room of an mbuf: `base` is its `buf_addr`, `start` its `data_off`,
    /// `len` its `data_len`.
    ///
    /// # Safety
    /// `base` must be the `buf_addr` of a single-segment mbuf from one of this crate's
    /// mempools (`BUF_SIZE` bytes, header right before it) that the caller owns and hands
    /// over, and `start + len <= BUF_SIZE`.
    #[cfg(feature = "dpdk")]
    pub(crate) unsafe fn from_mbuf(base: NonNull<u8>, start: u16, len: u16) -> Self {
        PacketBuf {
            base,
            start,
            len,
            attrs: Backing::Mbuf.attrs(),
            meta: PacketMeta::default(),
        }
    }

    /// Gives up ownership of the bytes: `(base, start, len)`. The caller must release
    /// them as their backing requires.
    #[cfg(feature = "dpdk")]
    pub(crate) fn into_raw(self) -> (NonNull<u8>, u16, u16) {
        let parts = (self.base, self.start, self.len);
        std::mem::forget(self);
        parts
    }

    #[inline]
    pub(crate) fn backing(&self) -> Backing {
        Backing::from_attrs(self.attrs)
    }

    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: `base` points at `capacity` owned bytes and `start + len <= capacity`
        // (the type's invariant); `&self` keeps them borrowed.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(self.start as usize),
                self.len as usize,
            )
        }
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the borrow exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(self.start as usize),
                self.len as usize,
            )
        }
    }

    /// The whole buffer, headroom and tailroom included.
    #[inline]
    fn storage_mut(&mut self) -> &mut [u8] {
        let capacity = self.capacity();
        // SAFETY: `base` points at `capacity` bytes this value owns; `&mut self` makes
        // the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), capacity) }
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
        self.capacity() - self.start as usize - self.len as usize
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
        Some(&mut self.storage_mut()[start..start + n])
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
        if self.start as usize + len > self.capacity() {
            return false;
        }
        self.len = len as u16;
        true
    }

    /// Replaces the frame with `bytes`, starting after the standard headroom. `false`, and
    /// no change, when `bytes` does not fit ([`BUF_DATA_ROOM`]; more in a large buffer).
    pub fn fill(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.capacity() - BUF_HEADROOM {
            return false;
        }
        self.start = BUF_HEADROOM as u16;
        self.len = bytes.len() as u16;
        self.storage_mut()[BUF_HEADROOM..BUF_HEADROOM + bytes.len()].copy_from_slice(bytes);
        true
    }

    /// Resets the layout and metadata as for a freshly allocated buffer.
    #[inline]
    pub fn reset(&mut self) {
        self.start = BUF_HEADROOM as u16;
        self.len = 0;
        self.attrs &= 0xff00_0000;
        self.meta = PacketMeta::default();
    }
}

struct PoolShared {
    name: String,
    capacity: usize,
    free: ArrayQueue<PacketBuf>,
}

/// What a pool hands out.
#[derive(Clone)]
enum PoolSource {
    /// Heap blocks made with the pool, recycled through a shared lock-free ring.
    Heap(Arc<PoolShared>),
    /// Mbufs of a DPDK mempool, so that every packet the engine makes or receives can go
    /// out of a DPDK port without a copy.
    #[cfg(feature = "dpdk")]
    Mempool(crate::dpdk::Mempool),
}

/// A pool of packet buffers, all allocated when the pool is made.
///
/// Shaped like a DPDK mempool: a lock-free shared ring of free buffers plus a per-handle
/// cache, refilled and flushed in bulk, so that a worker usually allocates and frees
/// without touching the shared ring at all. Each worker thread holds its own handle
/// ([`BufferPool::handle`]); handles are `Send` but not shared. With the `dpdk` feature a
/// pool can also be a DPDK mempool ([`BufferPool::from_mempool`]); the engine cannot tell.
pub struct BufferPool {
    source: PoolSource,
    cache: PacketVec,
    cache_target: usize,
    /// Large buffers for TCP super-frames, shared by every handle; none unless
    /// [`BufferPool::with_large_buffers`] made them. Taken one at a time (a super-frame
    /// carries 64 KiB, so the ring is touched a thousand times less often than the small
    /// buffers' per packet).
    large: Option<Arc<ArrayQueue<PacketBuf>>>,
}

impl BufferPool {
    /// Makes a pool of `capacity` buffers and returns the first handle to it.
    pub fn new(name: &str, capacity: usize) -> Self {
        let free = ArrayQueue::new(capacity.max(1));
        for _ in 0..capacity {
            // Cannot fail: the ring was sized for exactly these buffers.
            let _ = free.push(PacketBuf::new_heap());
        }
        let shared = Arc::new(PoolShared {
            name: name.to_string(),
            capacity,
            free,
        });
        Self::with_source(PoolSource::Heap(shared))
    }

    /// A pool whose buffers are the mbufs of `mempool`.
    #[cfg(feature = "dpdk")]
    pub fn from_mempool(mempool: crate::dpdk::Mempool) -> Self {
        Self::with_source(PoolSource::Mempool(mempool))
    }

    fn with_source(source: PoolSource) -> Self {
        let capacity = match &source {
            PoolSource::Heap(shared) => shared.capacity,
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(m) => m.capacity(),
        };
        let cache_target = (capacity / 8).clamp(1, 2 * VECTOR_SIZE);
        BufferPool {
            source,
            cache: Vec::with_capacity(2 * cache_target + VECTOR_SIZE),
            cache_target,
            large: None,
        }
    }

    /// Adds `count` large buffers ([`LARGE_BUF_SIZE`] bytes each) to the pool, for ports
    /// that receive TCP super-frames. Call it before taking handles: handles share the
    /// large buffers that exist when they are taken.
    pub fn with_large_buffers(mut self, count: usize) -> Self {
        let ring = ArrayQueue::new(count.max(1));
        for _ in 0..count {
            let _ = ring.push(PacketBuf::new_large());
        }
        self.large = Some(Arc::new(ring));
        self
    }

    /// Another handle to the same pool, with its own cache, for another worker.
    pub fn handle(&self) -> BufferPool {
        let mut h = Self::with_source(self.source.clone());
        h.large = self.large.clone();
        h
    }

    /// One large buffer, reset; `None` when the pool has none (left or at all).
    #[inline]
    pub fn alloc_large(&mut self) -> Option<PacketBuf> {
        let mut p = self.large.as_ref()?.pop()?;
        p.reset();
        Some(p)
    }

    /// Large buffers free in the pool.
    pub fn large_available(&self) -> usize {
        self.large.as_ref().map_or(0, |r| r.len())
    }

    /// Whether the pool was made with large buffers at all.
    pub fn has_large_buffers(&self) -> bool {
        self.large.is_some()
    }

    pub fn name(&self) -> &str {
        match &self.source {
            PoolSource::Heap(shared) => &shared.name,
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(m) => m.name(),
        }
    }

    /// How many buffers the pool was made with.
    pub fn capacity(&self) -> usize {
        match &self.source {
            PoolSource::Heap(shared) => shared.capacity,
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(m) => m.capacity(),
        }
    }

    /// Free buffers in the shared ring plus this handle's cache (other handles' caches are
    /// not counted).
    pub fn available(&self) -> usize {
        let shared = match &self.source {
            PoolSource::Heap(shared) => shared.free.len(),
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(m) => m.available(),
        };
        shared + self.cache.len()
    }

    /// One buffer, reset; `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&mut self) -> Option<PacketBuf> {
        if self.cache.is_empty() {
            self.refill();
        }
        let mut p = self.cache.pop()?;
        p.reset();
        Some(p)
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
        match &self.source {
            PoolSource::Heap(shared) => {
                for _ in 0..self.cache_target {
                    match shared.free.pop() {
                        Some(b) => self.cache.push(b),
                        None => break,
                    }
                }
            }
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(m) => m.alloc_into(self.cache_target, &mut self.cache),
        }
    }

    /// Returns a buffer to the pool. A buffer from elsewhere (a heap block reaching a
    /// mempool-backed pool, or an mbuf reaching a heap pool) goes back to where it came
    /// from instead.
    #[inline]
    pub fn free(&mut self, pkt: PacketBuf) {
        if pkt.backing() == Backing::Large {
            // Back to the shared ring; one from another pool whose ring is full is
            // released instead.
            if let Some(ring) = &self.large {
                let _ = ring.push(pkt);
            }
            return;
        }
        if pkt.backing() != self.backing() {
            drop(pkt);
            return;
        }
        self.cache.push(pkt);
        if self.cache.len() >= 2 * self.cache_target {
            self.flush(self.cache_target);
        }
    }

    fn backing(&self) -> Backing {
        match &self.source {
            PoolSource::Heap(_) => Backing::Heap,
            #[cfg(feature = "dpdk")]
            PoolSource::Mempool(_) => Backing::Mbuf,
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
            match &self.source {
                // A buffer that came from another pool (across a virtual wire between two
                // worlds) may find this ring full: it is then simply released.
                PoolSource::Heap(shared) => {
                    let _ = shared.free.push(b);
                }
                // The mempool has its own per-lcore caches; dropping the buffer puts the
                // mbuf back.
                #[cfg(feature = "dpdk")]
                PoolSource::Mempool(_) => drop(b),
            }
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
    fn large_buffers_are_shared_by_handles_and_come_back() {
        let mut a = BufferPool::new("t", 8).with_large_buffers(2);
        let mut b = a.handle();
        let mut big = a.alloc_large().expect("a large buffer");
        assert!(big.is_large());
        assert!(big.fill(&vec![5u8; 60_000]), "holds a 64 KiB super-frame");
        big.set_offload(Offload::tcp_segments(1448, false));
        assert_eq!(b.large_available(), 1);
        let _second = b.alloc_large().expect("the other one");
        assert!(a.alloc_large().is_none(), "both in use");
        // Freed through a handle, even one whose small buffers are elsewhere, it goes
        // back to the large ring, reset when taken again.
        b.free(big);
        let again = a.alloc_large().expect("back");
        assert_eq!(again.offload(), Offload::NONE);
        assert!(again.is_empty());
        assert!(!BufferPool::new("none", 1).has_large_buffers());
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
