//! Mbuf pools laid out as the engine's buffers.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use contiv_dpdk_sys as sys;
use tracing::warn;

use super::{last_error, DpdkError, Eal, MBUF_HEADER};
use crate::{PacketBuf, PacketVec, BUF_DATA_ROOM, BUF_HEADROOM, BUF_SIZE, VECTOR_SIZE};

struct MempoolInner {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    capacity: usize,
}

// SAFETY: a DPDK mempool is made for use from many threads (its rings are multi-producer,
// multi-consumer); the pointer is only passed to DPDK's mempool functions.
unsafe impl Send for MempoolInner {}
// SAFETY: as above.
unsafe impl Sync for MempoolInner {}

impl Drop for MempoolInner {
    fn drop(&mut self) {
        // SAFETY: the pointer is a live mempool made by rte_pktmbuf_pool_create.
        let in_use = unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) };
        if in_use != 0 {
            // Freeing the pool under mbufs still held elsewhere (a port's rx ring, a
            // packet in flight) would leave them dangling: keep it instead.
            warn!(pool = %self.name, in_use, "mempool kept: mbufs still in use");
            return;
        }
        // SAFETY: no mbuf of the pool is in use and no handle refers to it any more.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// A DPDK mbuf pool; cloning shares it.
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<MempoolInner>,
}

impl Mempool {
    /// Creates a pool of `mbufs` mbufs with the engine's buffer layout.
    pub fn create(_eal: &Eal, name: &str, mbufs: u32) -> Result<Self, DpdkError> {
        let err = |cause: String| DpdkError::Mempool {
            name: name.into(),
            mbufs,
            cause,
        };
        let cname = CString::new(name).map_err(|_| err("the name has a NUL byte".into()))?;
        // DPDK's per-lcore cache; 256 is at most 1.5 x cache <= pool as it requires.
        let cache = (mbufs / 4).min(256);
        // SAFETY: the EAL is initialised (we hold a reference to it) and the name is a
        // valid C string; DPDK copies it.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                mbufs,
                cache,
                0,
                (BUF_HEADROOM + BUF_DATA_ROOM) as u16,
                sys::SOCKET_ID_ANY,
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| err(last_error()))?;
        let pool = Mempool {
            inner: Arc::new(MempoolInner {
                ptr,
                name: name.into(),
                capacity: mbufs as usize,
            }),
        };
        pool.check_layout()?;
        Ok(pool)
    }

    /// Checks on a real mbuf that its data room is where the buffer code expects it.
    fn check_layout(&self) -> Result<(), DpdkError> {
        let layout_err = |what: String| DpdkError::MbufLayout {
            name: self.inner.name.clone(),
            what,
        };
        // SAFETY: a live mempool; the mbuf, if any, is freed again below.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.inner.ptr.as_ptr()) };
        if m.is_null() {
            return Err(layout_err("no mbuf to check (pool empty)".into()));
        }
        // SAFETY: m is a valid mbuf we own until the free below.
        let (buf_addr, buf_len, data_off) = unsafe {
            (
                (*m).buf_addr as usize,
                (*m).buf_len as usize,
                (*m).data_off as usize,
            )
        };
        // SAFETY: as above; freed exactly once.
        unsafe { sys::rte_pktmbuf_free(m) };
        if buf_addr != m as usize + MBUF_HEADER {
            return Err(layout_err(format!(
                "data room at mbuf + {}, expected + {MBUF_HEADER}",
                buf_addr.wrapping_sub(m as usize)
            )));
        }
        if buf_len != BUF_SIZE || data_off != BUF_HEADROOM {
            return Err(layout_err(format!(
                "buf_len {buf_len}, headroom {data_off}; expected {BUF_SIZE}, {BUF_HEADROOM}"
            )));
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Mbufs free in the pool (its shared ring and per-lcore caches).
    pub fn available(&self) -> usize {
        // SAFETY: a live mempool.
        unsafe { sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) as usize }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }

    /// Appends up to `n` fresh mbufs to `out` as buffers (fewer when the pool runs low).
    pub(crate) fn alloc_into(&self, n: usize, out: &mut PacketVec) {
        let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); VECTOR_SIZE];
        let mut want = n.min(VECTOR_SIZE);
        while want > 0 {
            // SAFETY: `raw` has room for `want` pointers; alloc_bulk fills all or none.
            let rc = unsafe {
                sys::rte_pktmbuf_alloc_bulk(self.as_ptr(), raw.as_mut_ptr(), want as u32)
            };
            if rc == 0 {
                break;
            }
            // The pool has fewer than asked: try for fewer.
            want /= 2;
        }
        for &m in &raw[..want] {
            // SAFETY: a freshly allocated, reset, single-segment mbuf of this pool (whose
            // layout `check_layout` verified); ownership passes to the PacketBuf.
            unsafe {
                let base = NonNull::new_unchecked((*m).buf_addr as *mut u8);
                out.push(PacketBuf::from_mbuf(base, BUF_HEADROOM as u16, 0));
            }
        }
    }
}
