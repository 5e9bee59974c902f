//! [`DpdkPort`]: one ethdev, one rx and one tx queue, mbufs in place.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use contiv_dpdk_sys as sys;
use tracing::{info, warn};

use super::{mbuf_of, strerror, DpdkError, Eal, Mempool, MBUF_HEADER};
use crate::buffer::Backing;
use crate::{
    BufferPool, MacAddr, PacketBuf, PacketVec, Port, PortDropReason, PortStats, Timestamp,
    BUF_DATA_ROOM, VECTOR_SIZE,
};

/// How to open a DPDK port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkPortConfig {
    /// The device: a vdev with its arguments (`net_af_packet0,iface=eth1`,
    /// `net_ring0`), or a PCI address the EAL was allowed (`0000:00:08.0`). A device the
    /// EAL already probed (from `--vdev` or `-a`) is used as it is.
    pub devargs: String,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Mbufs in the port's receive pool: the rx ring plus what the engine holds in flight.
    pub mbufs: u32,
}

impl DpdkPortConfig {
    pub fn new(devargs: &str) -> Self {
        DpdkPortConfig {
            devargs: devargs.into(),
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mbufs: 8191,
        }
    }
}

/// Mempool names must be unique in the process (and short: 25 characters).
static POOL_SEQ: AtomicU32 = AtomicU32::new(0);

/// A DPDK ethdev as a [`Port`].
pub struct DpdkPort {
    name: String,
    port_id: u16,
    mac: MacAddr,
    mtu: u16,
    /// Receive buffers; also where heap buffers are copied to on the way out.
    mempool: Mempool,
    /// The device, to remove when we probed it ourselves.
    probed: Option<NonNull<sys::rte_device>>,
    rx_scratch: [*mut sys::rte_mbuf; VECTOR_SIZE],
    tx_scratch: [*mut sys::rte_mbuf; VECTOR_SIZE],
    drops: PortStats,
    tx_copies: u64,
}

// SAFETY: the raw pointers are mbufs in flight within one call and the device handle,
// only used in Drop; a port is used by one thread at a time (`&mut self` for bursts), as
// DPDK's queues require.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    /// Probes (if needed) and starts the device. On any failure, whatever this call made
    /// is undone before the error returns.
    pub fn open(eal: &Eal, config: &DpdkPortConfig) -> Result<DpdkPort, DpdkError> {
        let name = config
            .devargs
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string();
        let c_name = CString::new(name.as_str()).map_err(|_| DpdkError::Probe {
            devargs: config.devargs.clone(),
            cause: "the device name has a NUL byte".into(),
        })?;
        let mut port_id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let known =
            unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) } == 0;
        let mut probed_here = false;
        if !known {
            let c_devargs =
                CString::new(config.devargs.as_str()).map_err(|_| DpdkError::Probe {
                    devargs: config.devargs.clone(),
                    cause: "the device arguments have a NUL byte".into(),
                })?;
            let rc = probe(&name, &config.devargs, &c_devargs);
            if rc < 0 {
                return Err(DpdkError::Probe {
                    devargs: config.devargs.clone(),
                    cause: strerror(rc),
                });
            }
            probed_here = true;
            // SAFETY: as above.
            if unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) } != 0 {
                // The device is there but is no ethdev of that name: take it out again.
                remove_device(&name, None);
                return Err(DpdkError::NoEthdev {
                    devargs: config.devargs.clone(),
                    name,
                });
            }
        }
        // SAFETY: all zeroes is a valid rte_eth_dev_info (integers and null pointers).
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: a valid port id and out-pointer.
        unsafe { sys::rte_eth_dev_info_get(port_id, &mut info) };
        let device = NonNull::new(info.device);
        let half_made = |step: &'static str, rc: i32, started: bool| {
            // SAFETY: the port exists; stopping and closing it undoes configure/setup.
            unsafe {
                if started {
                    sys::rte_eth_dev_stop(port_id);
                }
                sys::rte_eth_dev_close(port_id);
            }
            if probed_here {
                remove_device(&name, device);
            }
            DpdkError::PortSetup {
                name: name.clone(),
                step,
                cause: strerror(rc),
            }
        };

        let seq = POOL_SEQ.fetch_add(1, Ordering::Relaxed);
        let mempool =
            match Mempool::create(eal, &format!("contiv_rx_{port_id}_{seq}"), config.mbufs) {
                Ok(m) => m,
                Err(e) => {
                    let _ = half_made("mempool", 0, false);
                    return Err(e);
                }
            };
        // SAFETY: all zeroes is rte_eth_conf's documented default (no offloads, no RSS).
        let conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        // SAFETY: a valid port and configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port_id, 1, 1, &conf) };
        if rc < 0 {
            return Err(half_made("configure", rc, false));
        }
        // SAFETY: a valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        // SAFETY: a configured port, queue 0, the mempool outlives the port (it is a field
        // of it and dropped after the port is closed).
        let rc = unsafe {
            sys::rte_eth_rx_queue_setup(
                port_id,
                0,
                config.rx_descriptors,
                socket,
                std::ptr::null(),
                mempool.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(half_made("rx queue", rc, false));
        }
        // SAFETY: a configured port, queue 0, default tx configuration.
        let rc = unsafe {
            sys::rte_eth_tx_queue_setup(port_id, 0, config.tx_descriptors, socket, std::ptr::null())
        };
        if rc < 0 {
            return Err(half_made("tx queue", rc, false));
        }
        // SAFETY: a configured port with its queues.
        let rc = unsafe { sys::rte_eth_dev_start(port_id) };
        if rc < 0 {
            return Err(half_made("start", rc, false));
        }
        // Not every vdev has a promiscuous mode (net_ring has none); a NIC that refuses it
        // still receives frames for its own MAC.
        // SAFETY: a started port.
        let _ = unsafe { sys::rte_eth_promiscuous_enable(port_id) };
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: a valid port and out-pointer.
        unsafe { sys::rte_eth_macaddr_get(port_id, &mut addr) };
        let mut mtu = 0u16;
        // SAFETY: a valid port and out-pointer.
        if unsafe { sys::rte_eth_dev_get_mtu(port_id, &mut mtu) } != 0 || mtu == 0 {
            mtu = 1500;
        }
        let mac = MacAddr(addr.addr_bytes);
        info!(%name, port_id, %mac, mtu, "DPDK port started");
        Ok(DpdkPort {
            name,
            port_id,
            mac,
            mtu,
            mempool,
            probed: if probed_here { device } else { None },
            rx_scratch: [std::ptr::null_mut(); VECTOR_SIZE],
            tx_scratch: [std::ptr::null_mut(); VECTOR_SIZE],
            drops: PortStats::default(),
            tx_copies: 0,
        })
    }

    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The port's receive pool (an engine pool over it makes every buffer an mbuf).
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Heap buffers copied into mbufs on the way out (zero when the engine's pool is a
    /// mempool).
    pub fn tx_copies(&self) -> u64 {
        self.tx_copies
    }

    /// Puts the mbufs `tx_scratch[..n]` on the wire; frees and counts what does not fit.
    fn flush_tx(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // SAFETY: tx_scratch[..n] are owned single-segment mbufs; the driver takes the
        // first `sent` of them.
        let sent = unsafe {
            sys::rte_eth_tx_burst(self.port_id, 0, self.tx_scratch.as_mut_ptr(), n as u16)
        } as usize;
        if sent < n {
            // SAFETY: the ones the driver did not take are still ours, freed once.
            unsafe {
                sys::rte_pktmbuf_free_bulk(self.tx_scratch[sent..n].as_mut_ptr(), (n - sent) as u32)
            };
            self.drops
                .count_drop(PortDropReason::TxQueueFull, (n - sent) as u64);
        }
        sent
    }

    /// An mbuf of the port's pool holding a copy of a heap buffer's frame.
    fn copy_to_mbuf(&mut self, pkt: &PacketBuf) -> Option<*mut sys::rte_mbuf> {
        // Only a large buffer can hold more; such a frame is too big for any MTU this
        // port has (the caller counts it).
        if pkt.len() > BUF_DATA_ROOM {
            return None;
        }
        // SAFETY: a live mempool.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.mempool.as_ptr()) };
        if m.is_null() {
            return None;
        }
        let data = pkt.data();
        // SAFETY: a fresh mbuf of our pool: BUF_DATA_ROOM bytes after the headroom, and the
        // frame is not longer than that (checked above).
        unsafe {
            let dst = ((*m).buf_addr as *mut u8).add((*m).data_off as usize);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
            (*m).data_len = data.len() as u16;
            (*m).pkt_len = data.len() as u32;
        }
        self.tx_copies += 1;
        Some(m)
    }
}

impl Port for DpdkPort {
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
        let mut link = sys::rte_eth_link::default();
        // SAFETY: a valid port and out-pointer.
        unsafe { sys::rte_eth_link_get_nowait(self.port_id, &mut link) };
        link.link_status() as u32 == sys::RTE_ETH_LINK_UP
    }

    fn rx_burst(
        &mut self,
        _pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        _now: Timestamp,
    ) -> usize {
        let want = max.min(VECTOR_SIZE) as u16;
        // SAFETY: rx_scratch has room for VECTOR_SIZE pointers; the driver fills `n`.
        let n =
            unsafe { sys::rte_eth_rx_burst(self.port_id, 0, self.rx_scratch.as_mut_ptr(), want) }
                as usize;
        // The buffers are written straight into the vector's spare room: a `push` would
        // build each one on the stack in pieces and then copy it in wider loads, which
        // the CPU cannot forward from the narrower stores (a stall of its own per packet).
        out.reserve(n);
        let spare = out.spare_capacity_mut();
        let mut got = 0;
        for i in 0..n {
            let m = self.rx_scratch[i];
            // SAFETY: the driver handed us `m`, a valid mbuf we now own.
            let (base, start, len, segs) = unsafe {
                (
                    (*m).buf_addr as *mut u8,
                    (*m).data_off,
                    (*m).data_len,
                    (*m).nb_segs,
                )
            };
            // Only single-segment mbufs of our own layout can be a PacketBuf; the port's
            // pool has 2 KiB rooms, so a chain means a frame larger than the engine takes.
            if segs != 1 || base as usize != m as usize + MBUF_HEADER {
                // SAFETY: ours to free, freed once.
                unsafe { sys::rte_pktmbuf_free(m) };
                self.drops.count_drop(PortDropReason::RxUnusableBuffer, 1);
                continue;
            }
            // SAFETY: checked just above: single segment, data room right after the
            // header in an mbuf of one of our pools; ownership passes to the PacketBuf.
            spare[got]
                .write(unsafe { PacketBuf::from_mbuf(NonNull::new_unchecked(base), start, len) });
            got += 1;
        }
        // SAFETY: the first `got` slots of the spare room were written just above, each
        // with a valid, owned PacketBuf (`got <= n`, and `n` slots were reserved).
        unsafe { out.set_len(out.len() + got) };
        got
    }

    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, _now: Timestamp) -> usize {
        let mut sent = 0;
        let mut n = 0;
        for pkt in pkts.drain(..) {
            let m = match pkt.backing() {
                Backing::Mbuf => {
                    let (base, start, len) = pkt.into_raw();
                    let m = mbuf_of(base);
                    // SAFETY: `m` is the owned mbuf behind the buffer; only the fields
                    // the engine may have moved (the frame's start and length) change.
                    unsafe {
                        (*m).data_off = start;
                        (*m).data_len = len;
                        (*m).pkt_len = len as u32;
                    }
                    m
                }
                Backing::Heap | Backing::Large => {
                    let too_big = pkt.len() > BUF_DATA_ROOM;
                    let copied = self.copy_to_mbuf(&pkt);
                    pool.free(pkt);
                    match copied {
                        Some(m) => m,
                        None => {
                            self.drops.count_drop(
                                if too_big {
                                    PortDropReason::TooBig
                                } else {
                                    PortDropReason::TxNoBuffer
                                },
                                1,
                            );
                            continue;
                        }
                    }
                }
            };
            self.tx_scratch[n] = m;
            n += 1;
            if n == VECTOR_SIZE {
                sent += self.flush_tx(n);
                n = 0;
            }
        }
        sent + self.flush_tx(n)
    }

    fn stats(&self) -> PortStats {
        let mut s = self.drops;
        let mut hw = sys::rte_eth_stats::default();
        // SAFETY: a valid port and out-pointer.
        if unsafe { sys::rte_eth_stats_get(self.port_id, &mut hw) } == 0 {
            s.rx_packets = hw.ipackets;
            s.rx_bytes = hw.ibytes;
            s.tx_packets = hw.opackets;
            s.tx_bytes = hw.obytes;
            s.count_drop(PortDropReason::RxNoBuffer, hw.rx_nombuf);
            s.count_drop(PortDropReason::RxMissed, hw.imissed);
        }
        s
    }
}

/// A vdev by its driver-prefixed name (`net_*`, DPDK's convention for virtual devices).
pub(super) fn is_vdev(name: &str) -> bool {
    name.starts_with("net_") || name.starts_with("eth_")
}

/// Probes a device: a vdev through the vdev bus directly, anything else (a PCI NIC the
/// EAL did not take at start) through hotplug. The vdev path needs no multi-process
/// channel, so it works in processes that run with `--no-shconf`.
fn probe(name: &str, devargs: &str, c_devargs: &CString) -> i32 {
    if is_vdev(name) {
        let args = devargs.split_once(',').map(|(_, a)| a).unwrap_or("");
        let (Ok(c_name), Ok(c_args)) = (CString::new(name), CString::new(args)) else {
            return -libc::EINVAL;
        };
        // SAFETY: the EAL is initialised; valid C strings, copied by DPDK.
        unsafe { sys::rte_vdev_init(c_name.as_ptr(), c_args.as_ptr()) }
    } else {
        // SAFETY: the EAL is initialised; a valid C string.
        unsafe { sys::rte_dev_probe(c_devargs.as_ptr()) }
    }
}

/// Removes a device this process probed (its ports closed).
fn remove_device(name: &str, device: Option<NonNull<sys::rte_device>>) {
    let rc = if is_vdev(name) {
        let Ok(c_name) = CString::new(name) else {
            return;
        };
        // SAFETY: a valid C string; a name that is no vdev is an error return.
        unsafe { sys::rte_vdev_uninit(c_name.as_ptr()) }
    } else if let Some(dev) = device {
        // SAFETY: the device was probed by us and its ports are closed.
        unsafe { sys::rte_dev_remove(dev.as_ptr()) }
    } else {
        0
    };
    if rc < 0 {
        warn!(%name, cause = %strerror(rc), "cannot remove DPDK device");
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: the port was started by `open`; stopping frees its ring's mbufs back to
        // the mempool, which is dropped after this.
        unsafe {
            sys::rte_eth_dev_stop(self.port_id);
            sys::rte_eth_dev_close(self.port_id);
        }
        if let Some(dev) = self.probed {
            remove_device(&self.name, Some(dev));
        }
    }
}

/// Two ports joined back to back by a pair of DPDK rings (the ring PMD): what one
/// transmits the other receives. DPDK's own virtual wire, for tests and benchmarks; the
/// rings live as long as the process (a port may still hold the other's ring).
pub fn ring_pair(
    eal: &Eal,
    name: &str,
    config: &DpdkPortConfig,
) -> Result<(DpdkPort, DpdkPort), DpdkError> {
    let ring = |suffix: &str| -> Result<*mut sys::rte_ring, DpdkError> {
        let ring_name = CString::new(format!("{name}_{suffix}")).map_err(|_| DpdkError::Probe {
            devargs: name.into(),
            cause: "the name has a NUL byte".into(),
        })?;
        // SAFETY: the EAL is initialised; a valid name; single producer and consumer,
        // as each end of a pair is one port used by one thread.
        let r = unsafe {
            sys::rte_ring_create(
                ring_name.as_ptr(),
                u32::from(config.rx_descriptors).next_power_of_two(),
                sys::SOCKET_ID_ANY,
                sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ,
            )
        };
        if r.is_null() {
            return Err(DpdkError::Probe {
                devargs: name.into(),
                cause: super::last_error(),
            });
        }
        Ok(r)
    };
    let (a_to_b, b_to_a) = (ring("ab")?, ring("ba")?);
    let make = |end: &str, rx: *mut sys::rte_ring, tx: *mut sys::rte_ring| {
        let port_name = format!("{name}_{end}");
        let c = CString::new(port_name.as_str()).map_err(|_| DpdkError::Probe {
            devargs: port_name.clone(),
            cause: "the name has a NUL byte".into(),
        })?;
        // SAFETY: two live rings; DPDK copies the arrays.
        let rc = unsafe {
            sys::rte_eth_from_rings(c.as_ptr(), &rx, 1, &tx, 1, sys::SOCKET_ID_ANY as u32)
        };
        if rc < 0 {
            return Err(DpdkError::Probe {
                devargs: port_name,
                cause: super::last_error(),
            });
        }
        // The ring PMD names its ethdev after the driver.
        DpdkPort::open(
            eal,
            &DpdkPortConfig {
                devargs: format!("net_ring_{port_name}"),
                ..config.clone()
            },
        )
    };
    let a = make("a", b_to_a, a_to_b)?;
    let b = make("b", a_to_b, b_to_a)?;
    Ok((a, b))
}
