//! The node agent of contiv-vswitch. Today: node IDs and pod IP allocation, both kept in
//! the store so that any agent restart finds them again.

pub mod ipam;
pub mod nodeid;

pub use ipam::{Allocation, Ipam, IpamConfig, IpamError};
pub use nodeid::{NodeIdAllocator, NodeIdError};
