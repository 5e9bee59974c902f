//! The packet I/O boundary of the dataplane.
//!
//! Everything the packet engine touches of the outside world goes through this crate:
//! packet buffers ([`PacketBuf`], drawn from a [`BufferPool`]) and ports ([`Port`]: batch
//! receive and batch transmit). Each port kind has a real implementation (DPDK with the
//! `dpdk` feature, TAP, AF_PACKET) and a simulated one ([`virtual_wire`]), so the engine above is
//! the same code in production and in the deterministic simulation.
//!
//! Wrappers stack on any port, as smoltcp's device wrappers do: [`ImpairedPort`] injects
//! seeded loss, corruption and delay; [`PcapPort`] writes every frame to a pcap file.

mod afpacket;
mod buffer;
#[cfg(feature = "dpdk")]
pub mod dpdk;
mod impair;
pub mod memory;
pub mod netns;
pub mod offload;
mod pcap;
mod port;
mod prefetch;
mod tap;
mod time;
mod virtual_nic;

pub use afpacket::{AfPacketConfig, AfPacketError, AfPacketPort};
pub use buffer::{
    BufferPool, PacketBuf, PacketMeta, PacketVec, BUF_DATA_ROOM, BUF_HEADROOM, BUF_SIZE,
    LARGE_BUF_DATA_ROOM, LARGE_BUF_SIZE, VECTOR_SIZE,
};
pub use impair::{ImpairedPort, Impairments};
pub use offload::Offload;
pub use pcap::{PcapError, PcapPort};
pub use port::{MacAddr, Port, PortDropReason, PortStats};
pub use prefetch::prefetch_read;
pub use tap::{TapError, TapPort};
pub use time::Timestamp;
pub use virtual_nic::{virtual_wire, LinkHandle, VirtualPort, WireConfig};
