//! TAP ports: a pod's interface, or the host interconnect, as a Linux TAP device whose
//! file descriptor the dataplane keeps.
//!
//! Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: every frame is preceded by a 10-byte
//! virtio-net header. Without offloads the kernel hands over only complete, checksummed,
//! MTU-sized frames and the header is all zeroes both ways. With them
//! ([`TapPort::enable_offloads`]: partial checksums, TCPv4 segmentation, ECN) the pod's
//! kernel sends TCP super-frames of up to 64 KiB with the checksum left to finish, the
//! header says so, and the port turns it into the frame's [`Offload`]; on the way out a
//! frame's `Offload` becomes the header again, so the receiving kernel takes a super-frame
//! whole. Super-frames need the pool's large buffers ([`BufferPool::with_large_buffers`]).
//! One read or write system call per frame: TAP has no batch interface.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::offload::finish_checksum;
use crate::{
    BufferPool, MacAddr, Offload, PacketBuf, PacketVec, Port, PortDropReason, PortStats, Timestamp,
    BUF_DATA_ROOM, LARGE_BUF_DATA_ROOM,
};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `struct virtio_net_hdr` without `num_buffers`.
const VNET_HDR_LEN: usize = 10;
// TUNSETOFFLOAD flags (linux/if_tun.h).
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;
// virtio_net_hdr fields (linux/virtio_net.h), little-endian on a TAP.
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_ECN: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name {0:?} is longer than 15 bytes (IFNAMSIZ)")]
    NameTooLong(String),
    #[error("TAP name {0:?} is empty or has a '/', ':' or whitespace")]
    BadName(String),
    #[error("cannot open /dev/net/tun: {0}")]
    Open(std::io::Error),
    #[error("cannot create TAP {name}: {source}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot make TAP {name} persistent: {source}")]
    Persist {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot turn on offloads of TAP {name}: {source}")]
    Offloads {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot read the MAC of {name}: {source}")]
    Mac {
        name: String,
        source: std::io::Error,
    },
}

fn ifreq(name: &str) -> Result<libc::ifreq, TapError> {
    if name.len() > 15 {
        return Err(TapError::NameTooLong(name.into()));
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(TapError::BadName(name.into()));
    }
    // SAFETY: `ifreq` is a plain C struct of integers and arrays; all zeroes is a valid
    // (empty) value of it.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

/// A TAP device and the dataplane's side of it.
pub struct TapPort {
    name: String,
    file: File,
    /// The dataplane's MAC on this port (what the pod sees as its gateway's MAC).
    mac: MacAddr,
    mtu: u16,
    /// Partial checksums and TCP super-frames both ways (see the module documentation).
    offloads: bool,
    stats: PortStats,
}

impl TapPort {
    /// Creates the TAP device `name` in the current network namespace, or attaches to it
    /// when a persistent TAP of that name exists and nobody holds it (an agent restarting
    /// re-adopts its pods' interfaces this way, with their addresses and routes intact).
    pub fn create(name: &str, mac: MacAddr, mtu: u16) -> Result<TapPort, TapError> {
        let mut req = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes one `ifreq`, which `req` is and which lives
        // across the call; the descriptor is an open /dev/net/tun.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(TapError::Create {
                name: name.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        // No offloads: the kernel must not hand us GSO frames larger than a buffer.
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is a TAP.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD as _, 0 as libc::c_ulong) };
        if rc < 0 {
            return Err(TapError::Create {
                name: name.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(TapPort {
            name: name.into(),
            file,
            mac,
            mtu,
            offloads: false,
            stats: PortStats::default(),
        })
    }

    /// Lets the kernel hand over frames with partial checksums and TCPv4 super-frames, and
    /// lets this port send them (see the module documentation). The pool the port
    /// receives with must have large buffers: while it has none free, the port leaves
    /// frames in the kernel's queue rather than cut them.
    pub fn enable_offloads(&mut self) -> Result<(), TapError> {
        let flags = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is a TAP.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD as _, flags) };
        if rc < 0 {
            return Err(TapError::Offloads {
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        self.offloads = true;
        Ok(())
    }

    /// Keeps the device after this descriptor closes (`true`), so a crash of the process
    /// that holds it does not take the pod's interface away; `false` lets it go with the
    /// descriptor.
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        // SAFETY: TUNSETPERSIST takes its argument by value; the descriptor is a TAP.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETPERSIST as _,
                libc::c_ulong::from(persistent),
            )
        };
        if rc < 0 {
            return Err(TapError::Persist {
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The MAC the kernel gave the device (the pod's own MAC once it is in the pod).
    /// Read it before moving the device to another namespace.
    pub fn device_mac(&self) -> Result<MacAddr, TapError> {
        let mut req = ifreq(&self.name)?;
        // SAFETY: a plain datagram socket, used only for the ioctl below and closed by
        // `OwnedFd` on return.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(TapError::Mac {
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `sock` was just returned by socket() and is owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        // SAFETY: SIOCGIFHWADDR fills the `ifreq` we pass, which lives across the call.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) };
        if rc < 0 {
            return Err(TapError::Mac {
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(MacAddr(mac))
    }
}

/// The offload a received frame's virtio-net header describes, checked against the
/// frame's own headers. A partial checksum somewhere this engine would not look for it
/// (not Ethernet + IPv4 + TCP/UDP) is finished here instead; `None` for what cannot be
/// taken (a segmentation type not negotiated, fields outside the frame).
fn offload_from_vnet_hdr(hdr: &[u8; VNET_HDR_LEN], frame: &mut [u8]) -> Option<Offload> {
    let gso_type = hdr[1] & !VNET_GSO_ECN;
    let ecn = hdr[1] & VNET_GSO_ECN != 0;
    let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]);
    let csum_start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let csum_offset = usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if hdr[0] & VNET_F_NEEDS_CSUM == 0 {
        return (gso_type == VNET_GSO_NONE).then_some(Offload::NONE);
    }
    match Offload::checksum_layout(frame) {
        Some(l) if l.start == csum_start && l.offset == csum_offset => match gso_type {
            VNET_GSO_NONE => Some(Offload::partial_checksum()),
            VNET_GSO_TCPV4 if l.offset == 16 && gso_size > 0 => {
                Some(Offload::tcp_segments(gso_size, ecn))
            }
            _ => None,
        },
        _ if gso_type == VNET_GSO_NONE => {
            finish_checksum(frame, csum_start, csum_offset).then_some(Offload::NONE)
        }
        _ => None,
    }
}

/// The virtio-net header that tells the kernel what is left to do to `frame`; `None` when
/// its offload cannot be described (not Ethernet + IPv4 + TCP/UDP).
fn vnet_hdr_for(offload: Offload, frame: &[u8]) -> Option<[u8; VNET_HDR_LEN]> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    if offload.is_none() {
        return Some(hdr);
    }
    let l = Offload::checksum_layout(frame)?;
    hdr[0] = VNET_F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&(l.start as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&(l.offset as u16).to_le_bytes());
    if offload.segments() {
        if l.offset != 16 {
            return None;
        }
        hdr[1] = VNET_GSO_TCPV4 | if offload.ecn() { VNET_GSO_ECN } else { 0 };
        hdr[2..4].copy_from_slice(&((l.start + l.l4_header_len) as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&offload.gso_size.to_le_bytes());
    }
    Some(hdr)
}

impl TapPort {
    /// Reads one frame into `small`, or, when it is larger, into a large buffer (the
    /// read scatters: the first `BUF_DATA_ROOM` bytes to the small buffer, the rest to the
    /// large one, so small frames are never copied and a super-frame once by 2 KiB).
    /// `Err(())` when there is nothing to read (or no buffer to read into).
    fn read_frame(
        &mut self,
        pool: &mut BufferPool,
        hdr: &mut [u8; VNET_HDR_LEN],
    ) -> Result<Option<PacketBuf>, ()> {
        let mut small = pool.alloc().ok_or(())?;
        small.set_len(BUF_DATA_ROOM);
        // Without offloads the kernel sends nothing larger than the MTU. With them and a
        // pool made without large buffers, super-frames are cut by the read and counted
        // (RxTruncated) while everything else flows; with all large buffers in use, the
        // frame stays queued rather than risk being cut (they come back within the poll).
        let mut large = None;
        if self.offloads && pool.has_large_buffers() {
            match pool.alloc_large() {
                Some(l) => large = Some(l),
                None => {
                    pool.free(small);
                    return Err(());
                }
            }
        }
        let mut iov = [libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: VNET_HDR_LEN,
        }; 3];
        let data = small.data_mut();
        iov[1] = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut parts = 2;
        if let Some(l) = large.as_mut() {
            l.set_len(LARGE_BUF_DATA_ROOM);
            let rest = &mut l.data_mut()[BUF_DATA_ROOM..];
            iov[2] = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            parts = 3;
        }
        // SAFETY: every iovec points into a live, writable buffer of the stated length
        // (`hdr` borrowed from the caller, the packet buffers owned here) that outlives
        // the call.
        let r = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), parts) };
        let room = if large.is_some() {
            LARGE_BUF_DATA_ROOM
        } else {
            BUF_DATA_ROOM
        };
        let free = |pool: &mut BufferPool, small, large: Option<PacketBuf>| {
            pool.free(small);
            if let Some(l) = large {
                pool.free(l);
            }
        };
        if r <= VNET_HDR_LEN as isize {
            free(pool, small, large);
            return Err(()); // EAGAIN (nothing more), or a frame with no payload
        }
        // The kernel says how long the frame was even when it had to cut it.
        let len = r as usize - VNET_HDR_LEN;
        if len > room {
            free(pool, small, large);
            self.stats.count_drop(PortDropReason::RxTruncated, 1);
            return Ok(None);
        }
        let pkt = match large {
            Some(mut l) if len > BUF_DATA_ROOM => {
                l.data_mut()[..BUF_DATA_ROOM].copy_from_slice(small.data());
                pool.free(small);
                l.truncate(len);
                l
            }
            other => {
                if let Some(l) = other {
                    pool.free(l);
                }
                small.truncate(len);
                small
            }
        };
        Ok(Some(pkt))
    }
}

impl Port for TapPort {
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

    fn tx_offloads(&self) -> bool {
        self.offloads
    }

    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        _now: Timestamp,
    ) -> usize {
        let mut n = 0;
        let mut hdr = [0u8; VNET_HDR_LEN];
        while n < max {
            let Ok(frame) = self.read_frame(pool, &mut hdr) else {
                break;
            };
            let Some(mut pkt) = frame else { continue };
            match offload_from_vnet_hdr(&hdr, pkt.data_mut()) {
                Some(o) => pkt.set_offload(o),
                None => {
                    self.stats.count_drop(PortDropReason::RxBadOffload, 1);
                    pool.free(pkt);
                    continue;
                }
            }
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += pkt.len() as u64;
            out.push(pkt);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, _now: Timestamp) -> usize {
        let mut sent = 0;
        for pkt in pkts.drain(..) {
            let offload = pkt.offload();
            // The engine finishes offloaded work (ip4-gso) before any port without
            // offloads; what reaches one anyway is counted, not half-handled here.
            let hdr = match vnet_hdr_for(offload, pkt.data()) {
                Some(h) if self.offloads || offload.is_none() => h,
                _ => {
                    self.stats
                        .count_drop(PortDropReason::TxOffloadUnsupported, 1);
                    pool.free(pkt);
                    continue;
                }
            };
            // A super-frame goes out whole; what must fit the MTU is each of its segments.
            let wire_len = if offload.segments() {
                usize::from(u16::from_le_bytes([hdr[2], hdr[3]])) + usize::from(offload.gso_size)
            } else {
                pkt.len()
            };
            if wire_len > usize::from(self.mtu) + 14 {
                self.stats.count_drop(PortDropReason::TooBig, 1);
                pool.free(pkt);
                continue;
            }
            let data = pkt.data();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                },
            ];
            // SAFETY: both iovecs point into live buffers of the stated lengths that
            // outlive the call; writev only reads them.
            let r = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), 2) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                let reason = if e.raw_os_error() == Some(libc::EIO) {
                    PortDropReason::LinkDown
                } else {
                    PortDropReason::TxQueueFull
                };
                self.stats.count_drop(reason, 1);
            } else {
                sent += 1;
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += pkt.len() as u64;
            }
            pool.free(pkt);
        }
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::ones_complement_sum;

    /// Ethernet + IPv4 + TCP (20-byte header) + `payload` bytes, checksum field holding
    /// the pseudo-header sum as the kernel leaves it.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        let tot = (20 + 20 + payload) as u16;
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34 + 12] = 5 << 4;
        f
    }

    fn hdr(flags: u8, gso: u8, gso_size: u16, start: u16, offset: u16) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso;
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        h
    }

    #[test]
    fn vnet_headers_become_offloads_and_back() {
        let mut f = tcp_frame(9000);
        let h = hdr(
            VNET_F_NEEDS_CSUM,
            VNET_GSO_TCPV4 | VNET_GSO_ECN,
            1448,
            34,
            16,
        );
        let o = offload_from_vnet_hdr(&h, &mut f).expect("a TCPv4 super-frame");
        assert_eq!(o, Offload::tcp_segments(1448, true));
        let back = vnet_hdr_for(o, &f).expect("describable");
        assert_eq!(back[0], VNET_F_NEEDS_CSUM);
        assert_eq!(back[1], VNET_GSO_TCPV4 | VNET_GSO_ECN);
        assert_eq!(
            u16::from_le_bytes([back[2], back[3]]),
            54,
            "headers up to the payload"
        );
        assert_eq!(back[4..], h[4..]);

        let none = hdr(0, 0, 0, 0, 0);
        assert_eq!(offload_from_vnet_hdr(&none, &mut f), Some(Offload::NONE));
        assert_eq!(vnet_hdr_for(Offload::NONE, &f), Some(none));
        let partial = hdr(VNET_F_NEEDS_CSUM, 0, 0, 34, 16);
        assert_eq!(
            offload_from_vnet_hdr(&partial, &mut f),
            Some(Offload::partial_checksum())
        );
    }

    #[test]
    fn vnet_headers_the_engine_cannot_take_are_refused_or_finished() {
        let mut f = tcp_frame(100);
        // UDP fragmentation offload and TCPv6 segmentation were never negotiated.
        for gso in [3, 4] {
            let h = hdr(VNET_F_NEEDS_CSUM, gso, 1448, 34, 16);
            assert_eq!(offload_from_vnet_hdr(&h, &mut f), None, "gso type {gso}");
        }
        // Segmentation without a partial checksum is not something a kernel sends.
        assert_eq!(offload_from_vnet_hdr(&hdr(0, 1, 1448, 0, 0), &mut f), None);
        // A checksum field past the end of the frame.
        let h = hdr(VNET_F_NEEDS_CSUM, 0, 0, 150, 16);
        assert_eq!(offload_from_vnet_hdr(&h, &mut f), None);
        // A partial checksum where the engine would not look (here: as if the L4 header
        // started 4 bytes in): finished on the spot, and the frame then needs nothing.
        let before = f.clone();
        let h = hdr(VNET_F_NEEDS_CSUM, 0, 0, 38, 12);
        assert_eq!(offload_from_vnet_hdr(&h, &mut f), Some(Offload::NONE));
        assert_ne!(f, before, "checksum written");
        assert_eq!(ones_complement_sum(&f[38..], 0), 0xffff);
    }

    proptest::proptest! {
        /// Any header with any frame: never a panic; what is accepted is something the
        /// engine can carry (an offload only on a frame whose layout it knows).
        #[test]
        fn any_vnet_header_is_taken_refused_or_finished(
            hdr in proptest::array::uniform10(proptest::prelude::any::<u8>()),
            mut frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            tcp in proptest::prelude::any::<bool>(),
        ) {
            if tcp && frame.len() >= 54 {
                frame[12] = 0x08;
                frame[13] = 0x00;
                frame[14] = 0x45;
                frame[23] = 6;
                frame[46] = 5 << 4;
            }
            if let Some(o) = offload_from_vnet_hdr(&hdr, &mut frame) {
                if !o.is_none() {
                    proptest::prop_assert!(Offload::checksum_layout(&frame).is_some());
                    proptest::prop_assert!(vnet_hdr_for(o, &frame).is_some());
                }
            }
        }
    }
}
