//! AF_PACKET ports with TPACKET_V3 memory-mapped rings: an uplink NIC that stays with the
//! kernel, for machines where DPDK cannot take the NIC.
//!
//! The receive ring is made of blocks the kernel fills with many frames and hands over
//! whole (status `TP_STATUS_USER`); the transmit ring is made of fixed-size frames we
//! fill and mark `TP_STATUS_SEND_REQUEST`, then one `send()` flushes the burst. Frames
//! are copied between the rings and packet buffers (AF_PACKET cannot use our buffers).
//! Outgoing frames of the host stack are not looped back to us
//! (`PACKET_IGNORE_OUTGOING`), and transmit bypasses the qdisc layer.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{
    BufferPool, MacAddr, PacketVec, Port, PortDropReason, PortStats, Timestamp, BUF_DATA_ROOM,
};

const TPACKET_V3: libc::c_int = 2;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;

// Offsets in `struct tpacket_block_desc` (the block header) ...
const BLOCK_STATUS: usize = 8;
const BLOCK_NUM_PKTS: usize = 12;
const BLOCK_FIRST_PKT: usize = 16;
// ... and in `struct tpacket3_hdr` (a frame header, 48 bytes).
const HDR_NEXT_OFFSET: usize = 0;
const HDR_SNAPLEN: usize = 12;
const HDR_LEN: usize = 16;
const HDR_STATUS: usize = 20;
const HDR_MAC: usize = 24;
/// Where a transmitted frame's data starts: the aligned `tpacket3_hdr`.
const TX_DATA_OFFSET: usize = 48;

#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// Ring geometry.
#[derive(Clone, Copy, Debug)]
pub struct AfPacketConfig {
    pub block_size: u32,
    pub block_count: u32,
    pub frame_size: u32,
    /// How long the kernel waits before handing over a partly filled receive block, in
    /// milliseconds (latency at low rates).
    pub block_timeout_ms: u32,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            block_size: 1 << 18,
            block_count: 16,
            frame_size: 2048,
            block_timeout_ms: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("no interface {0:?}")]
    NoSuchInterface(String),
    #[error("AF_PACKET on {interface}: {what}: {source}")]
    Sys {
        interface: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("bad ring geometry: {0}")]
    Geometry(String),
}

/// An AF_PACKET port on a kernel interface.
pub struct AfPacketPort {
    name: String,
    mac: MacAddr,
    mtu: u16,
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    cfg: AfPacketConfig,
    rx_block: u32,
    /// Frames of the current receive block already taken, and where the next one is.
    rx_taken: u32,
    rx_offset: usize,
    tx_frame: u32,
    stats: PortStats,
}

// SAFETY: the ring mapping is owned by this port alone (no other handle to it exists);
// moving the port to another thread moves that ownership with it.
unsafe impl Send for AfPacketPort {}

impl AfPacketPort {
    /// Opens `interface` (in the current network namespace). `mac` is the dataplane's
    /// MAC on the port: the interface's own, normally.
    pub fn open(
        interface: &str,
        mac: MacAddr,
        mtu: u16,
        cfg: AfPacketConfig,
    ) -> Result<AfPacketPort, AfPacketError> {
        if cfg.frame_size < 256
            || !cfg.block_size.is_multiple_of(cfg.frame_size)
            || !cfg.block_size.is_multiple_of(4096)
        {
            return Err(AfPacketError::Geometry(format!(
                "{cfg:?}: frames must divide blocks, blocks must be pages"
            )));
        }
        let sys = |what: &'static str| AfPacketError::Sys {
            interface: interface.into(),
            what,
            source: std::io::Error::last_os_error(),
        };
        let cname = CString::new(interface)
            .map_err(|_| AfPacketError::NoSuchInterface(interface.into()))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(AfPacketError::NoSuchInterface(interface.into()));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the result is checked and owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(sys("socket"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let setopt =
            |opt: libc::c_int, val: *const libc::c_void, len: usize, what: &'static str| {
                // SAFETY: `val` points to `len` readable bytes of the option's type, alive for
                // the call (every caller passes a reference to a local).
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_PACKET,
                        opt,
                        val,
                        len as libc::socklen_t,
                    )
                };
                if rc < 0 {
                    Err(sys(what))
                } else {
                    Ok(())
                }
            };
        let one: libc::c_int = 1;
        let v3: libc::c_int = TPACKET_V3;
        setopt(
            PACKET_VERSION,
            (&v3 as *const libc::c_int).cast(),
            4,
            "PACKET_VERSION",
        )?;
        setopt(
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            4,
            "PACKET_IGNORE_OUTGOING",
        )?;
        setopt(
            PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            4,
            "PACKET_QDISC_BYPASS",
        )?;
        let frames = cfg.block_size / cfg.frame_size * cfg.block_count;
        let rx = TpacketReq3 {
            block_size: cfg.block_size,
            block_nr: cfg.block_count,
            frame_size: cfg.frame_size,
            frame_nr: frames,
            retire_blk_tov: cfg.block_timeout_ms,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        let tx = TpacketReq3 {
            retire_blk_tov: 0,
            ..rx
        };
        let req_len = std::mem::size_of::<TpacketReq3>();
        setopt(
            PACKET_RX_RING,
            (&rx as *const TpacketReq3).cast(),
            req_len,
            "PACKET_RX_RING",
        )?;
        setopt(
            PACKET_TX_RING,
            (&tx as *const TpacketReq3).cast(),
            req_len,
            "PACKET_TX_RING",
        )?;
        let ring_len = 2 * (cfg.block_size as usize) * (cfg.block_count as usize);
        // SAFETY: maps the two rings just configured on this socket (rx then tx, as the
        // kernel lays them out); the result is checked, and unmapped in Drop.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                fd.as_raw_fd(),
                0,
            )
        };
        let ring = if ring == libc::MAP_FAILED {
            // Locking may be refused (RLIMIT_MEMLOCK): map without it.
            // SAFETY: as above, without MAP_LOCKED.
            let r = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    ring_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(sys("mmap"));
            }
            r
        } else {
            ring
        };
        let port = AfPacketPort {
            name: interface.into(),
            mac,
            mtu,
            fd,
            ring: ring.cast(),
            ring_len,
            cfg,
            rx_block: 0,
            rx_taken: 0,
            rx_offset: 0,
            tx_frame: 0,
            stats: PortStats::default(),
        };
        // SAFETY: an all-zero `sockaddr_ll` is valid; the fields we need are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the given length, alive for the call.
        let rc = unsafe {
            libc::bind(
                port.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys("bind"));
        }
        Ok(port)
    }

    fn rx_block_ptr(&self, block: u32) -> *mut u8 {
        // SAFETY (of the arithmetic): `block < block_count`, so the offset stays inside
        // the receive half of the mapping.
        unsafe { self.ring.add(block as usize * self.cfg.block_size as usize) }
    }

    fn tx_frame_ptr(&self, frame: u32) -> *mut u8 {
        let rx_len = self.cfg.block_size as usize * self.cfg.block_count as usize;
        // SAFETY (of the arithmetic): `frame < frames`, so the offset stays inside the
        // transmit half of the mapping.
        unsafe {
            self.ring
                .add(rx_len + frame as usize * self.cfg.frame_size as usize)
        }
    }

    fn tx_frames(&self) -> u32 {
        self.cfg.block_size / self.cfg.frame_size * self.cfg.block_count
    }
}

/// The status word at `p` (shared with the kernel).
///
/// # Safety
/// `p` must point to a 4-byte-aligned status word inside the live ring mapping.
unsafe fn status<'a>(p: *mut u8) -> &'a AtomicU32 {
    // SAFETY: per this function's contract the word is aligned and mapped for as long as
    // the port (and so the returned reference's use) lives.
    unsafe { &*(p as *const AtomicU32) }
}

fn read_u32(p: *const u8, off: usize) -> u32 {
    // SAFETY: callers pass header pointers inside the mapping with `off` within the header.
    unsafe { std::ptr::read_unaligned(p.add(off) as *const u32) }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn mtu(&self) -> u16 {
        self.mtu
    }

    fn link_up(&self) -> bool {
        true
    }

    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        _now: Timestamp,
    ) -> usize {
        let mut n = 0;
        while n < max {
            let block = self.rx_block_ptr(self.rx_block);
            // SAFETY: the block header's status word is aligned and inside the mapping.
            let st = unsafe { status(block.wrapping_add(BLOCK_STATUS)) };
            if st.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break; // the kernel still owns this block
            }
            let num = read_u32(block, BLOCK_NUM_PKTS);
            if self.rx_taken == 0 {
                self.rx_offset = read_u32(block, BLOCK_FIRST_PKT) as usize;
            }
            while self.rx_taken < num && n < max {
                let hdr = block.wrapping_add(self.rx_offset);
                let snap = read_u32(hdr, HDR_SNAPLEN) as usize;
                // SAFETY: tp_mac is a u16 at a fixed offset inside the frame header.
                let mac_off = usize::from(unsafe {
                    std::ptr::read_unaligned(hdr.add(HDR_MAC) as *const u16)
                });
                // A frame larger than a buffer (a GRO or GSO super-packet, when the
                // interface merges segments) is dropped and counted, never truncated.
                let wire_len = read_u32(hdr, HDR_LEN) as usize;
                if wire_len > BUF_DATA_ROOM || snap < wire_len {
                    self.stats.count_drop(PortDropReason::TooBig, 1);
                } else if let Some(mut pkt) = pool.alloc() {
                    let len = snap;
                    // SAFETY: the kernel wrote `snap` bytes at `hdr + tp_mac`, inside
                    // this block, which we own until we hand it back.
                    let frame = unsafe { std::slice::from_raw_parts(hdr.add(mac_off), len) };
                    pkt.fill(frame);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += len as u64;
                    out.push(pkt);
                    n += 1;
                } else {
                    self.stats.count_drop(PortDropReason::RxNoBuffer, 1);
                }
                self.rx_offset += read_u32(hdr, HDR_NEXT_OFFSET) as usize;
                self.rx_taken += 1;
            }
            if self.rx_taken < num {
                break; // `max` reached mid-block: go on from here next time
            }
            st.store(TP_STATUS_KERNEL, Ordering::Release);
            self.rx_block = (self.rx_block + 1) % self.cfg.block_count;
            self.rx_taken = 0;
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, _now: Timestamp) -> usize {
        let mut queued = 0;
        let room = self.cfg.frame_size as usize - TX_DATA_OFFSET;
        for pkt in pkts.drain(..) {
            let frame = self.tx_frame_ptr(self.tx_frame);
            // SAFETY: the frame header's status word is aligned and inside the mapping.
            let st = unsafe { status(frame.wrapping_add(HDR_STATUS)) };
            let s = st.load(Ordering::Acquire);
            if s == TP_STATUS_WRONG_FORMAT {
                self.stats.count_drop(PortDropReason::TooBig, 1);
                st.store(TP_STATUS_AVAILABLE, Ordering::Release);
            } else if s != TP_STATUS_AVAILABLE {
                self.stats.count_drop(PortDropReason::TxQueueFull, 1);
                pool.free(pkt);
                continue;
            }
            if pkt.len() > room || pkt.len() > usize::from(self.mtu) + 14 {
                self.stats.count_drop(PortDropReason::TooBig, 1);
                pool.free(pkt);
                continue;
            }
            // SAFETY: the frame is ours (status AVAILABLE) and has `room` bytes after
            // its header; the packet is at most that long.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    pkt.data().as_ptr(),
                    frame.add(TX_DATA_OFFSET),
                    pkt.len(),
                );
                std::ptr::write_unaligned(frame.add(HDR_LEN) as *mut u32, pkt.len() as u32);
                std::ptr::write_unaligned(frame.add(HDR_SNAPLEN) as *mut u32, pkt.len() as u32);
            }
            st.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.tx_frame = (self.tx_frame + 1) % self.tx_frames();
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += pkt.len() as u64;
            queued += 1;
            pool.free(pkt);
        }
        if queued > 0 {
            // SAFETY: a zero-length send on our own socket: the kernel transmits every
            // frame marked SEND_REQUEST; no user memory is passed.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::debug!(port = %self.name, error = %e, "AF_PACKET send");
                }
            }
        }
        queued
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        // SAFETY: `ring`/`ring_len` are exactly the mapping made in `open`, unmapped once.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}
