//! DPDK ports (feature `dpdk`): the EAL, mempools whose mbufs are the engine's buffers,
//! and [`DpdkPort`], a `Port` over any ethdev (a PCI NIC, or a vdev: `net_ring`,
//! `net_null`, `net_tap`, `net_af_packet`, `net_pcap`, ...).
//!
//! Buffers are mbufs used in place: a received mbuf becomes a [`crate::PacketBuf`] whose
//! bytes are the mbuf's data room (no copy), and a `PacketBuf` that is an mbuf goes out by
//! handing the mbuf itself to `rte_eth_tx_burst` (no copy). The layout matches by
//! construction: our mempools have no private area and `RTE_MBUF_DEFAULT_BUF_SIZE` data
//! rooms, whose headroom (`RTE_PKTMBUF_HEADROOM`) is the engine's [`crate::BUF_HEADROOM`];
//! the checks below refuse to build or to run otherwise. Only a heap buffer (from a
//! heap-backed engine pool) leaving through a DPDK port is copied into an mbuf, and counted.

mod eal;
mod mempool;
mod port;

use std::ffi::CStr;
use std::ptr::NonNull;

use contiv_dpdk_sys as sys;

pub use eal::{Eal, EalConfig, RuntimeDirGuard};
pub use mempool::Mempool;
pub use port::{DpdkPort, DpdkPortConfig};

/// What went wrong in DPDK, with the cause DPDK gave.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation with arguments {args:?} failed: {cause}")]
    EalInit { args: Vec<String>, cause: String },
    #[error(
        "the EAL is already initialised in this process with arguments {running:?}; \
         it cannot be initialised again with {requested:?}"
    )]
    EalAlreadyInitialised {
        running: Vec<String>,
        requested: Vec<String>,
    },
    #[error("an EAL argument has a NUL byte: {0:?}")]
    NulInArgument(String),
    #[error("cannot create mempool {name} of {mbufs} mbufs: {cause}")]
    Mempool {
        name: String,
        mbufs: u32,
        cause: String,
    },
    #[error("mempool {name} has mbufs laid out unlike the engine's buffers: {what}")]
    MbufLayout { name: String, what: String },
    #[error("cannot probe device {devargs:?}: {cause}")]
    Probe { devargs: String, cause: String },
    #[error("device {devargs:?} was probed but no ethdev is named {name:?}")]
    NoEthdev { devargs: String, name: String },
    #[error("cannot set up port {name} ({step}): {cause}")]
    PortSetup {
        name: String,
        step: &'static str,
        cause: String,
    },
}

/// DPDK's text for an error number (its own codes and errno values alike).
fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string, valid until the next call on this thread; it is copied at once.
    let text = unsafe { CStr::from_ptr(sys::rte_strerror(errnum.abs())) };
    format!("{} (errno {})", text.to_string_lossy(), errnum.abs())
}

/// The cause of the last failed DPDK call on this thread, from `rte_errno`.
fn last_error() -> String {
    // SAFETY: reads this thread's rte_errno; no preconditions.
    strerror(unsafe { sys::contiv_rte_errno() })
}

const MBUF_HEADER: usize = std::mem::size_of::<sys::rte_mbuf>();

// The engine's buffer layout is DPDK's default mbuf layout; if a DPDK build changes it,
// fail here rather than corrupt packets.
const _: () = assert!(sys::RTE_PKTMBUF_HEADROOM as usize == crate::BUF_HEADROOM);
const _: () = assert!(sys::RTE_MBUF_DEFAULT_BUF_SIZE as usize == crate::BUF_SIZE);

/// The mbuf whose data room starts at `base`.
#[inline]
fn mbuf_of(base: NonNull<u8>) -> *mut sys::rte_mbuf {
    // Our mempools have no private area, so the header sits right before the data room
    // (`Mempool::create` checks this on a real mbuf).
    base.as_ptr().wrapping_sub(MBUF_HEADER) as *mut sys::rte_mbuf
}

/// Frees the mbuf whose data room starts at `base` (a `PacketBuf` being dropped).
pub(crate) fn free_mbuf_data(base: NonNull<u8>) {
    // SAFETY: only called for `Backing::Mbuf` buffers, whose `base` is the data room of an
    // mbuf of one of our mempools that the dropped PacketBuf owned alone.
    unsafe { sys::rte_pktmbuf_free(mbuf_of(base)) }
}

pub use port::ring_pair;
