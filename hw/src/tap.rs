//! TAP ports: a pod's interface, or the host interconnect, as a Linux TAP device whose
//! file descriptor the dataplane keeps.
//!
//! Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: every frame is preceded by a 10-byte
//! virtio-net header. No offloads are enabled yet, so the kernel hands over only complete,
//! checksummed, MTU-sized frames and the header is all zeroes both ways.
//! One read or write system call per frame: TAP has no batch interface.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::{
    BufferPool, MacAddr, PacketVec, Port, PortDropReason, PortStats, Timestamp, BUF_DATA_ROOM,
};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `struct virtio_net_hdr` without `num_buffers`.
const VNET_HDR_LEN: usize = 10;

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
            stats: PortStats::default(),
        })
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
            let Some(mut pkt) = pool.alloc() else { break };
            pkt.set_len(BUF_DATA_ROOM);
            let data = pkt.data_mut();
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: data.as_mut_ptr().cast(),
                    iov_len: data.len(),
                },
            ];
            // SAFETY: both iovecs point into live, writable buffers of the stated lengths
            // (`hdr` on the stack, `data` in the packet buffer) that outlive the call.
            let r = unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr(), 2) };
            if r <= VNET_HDR_LEN as isize {
                pool.free(pkt);
                break; // EAGAIN (nothing more), or a frame with no payload
            }
            let len = r as usize - VNET_HDR_LEN;
            pkt.truncate(len);
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
            out.push(pkt);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, _now: Timestamp) -> usize {
        let mut sent = 0;
        let hdr = [0u8; VNET_HDR_LEN];
        for pkt in pkts.drain(..) {
            if pkt.len() > usize::from(self.mtu) + 14 {
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
