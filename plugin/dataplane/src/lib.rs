//! The dataplane: this project's vector packet processor.
//!
//! Packets move in vectors of up to 256 through a graph of nodes ([`graph`]), each node
//! doing one job for the whole vector, as in VPP. The control plane changes the tables
//! ([`tables`]) in atomic batches; the fast path reads them without locks. One [`Engine`]
//! runs per worker core over a set of [`contiv_hw::Port`]s.
//!
//! Where things are:
//! - the graph runtime and dispatcher: [`graph`]
//! - the IPv4 nodes (ethernet-input, arp, ip4-input, ip4-lookup, ip4-local, ip4-rewrite,
//!   icmp-error, interface-output): [`nodes`]
//! - longest-prefix match: [`fib`]
//! - interfaces, routes, adjacencies, neighbours and their commit: [`tables`]
//! - source NAT to the node's address for traffic to the outside: [`nat44`]
//! - TCP segmentation and checksums in software for offloaded frames: [`gso`]
//! - counters and drop reasons: [`counters`]; packet trace: [`trace`]

pub mod counters;
pub mod engine;
pub mod fib;
pub mod graph;
pub mod gso;
pub mod headers;
pub mod nat44;
pub mod nodes;
pub mod tables;
pub mod trace;
pub mod vxlan;

pub use counters::{Counter, Counters, InterfaceCounters};
pub use engine::{Engine, EngineConfig, EngineError};
pub use fib::{Fib, FibError};
pub use graph::{GraphError, GraphNode, Next, NodeCx};
pub use nat44::{NatConfig, NatTimeouts, SessionInfo, SnatConfig};
pub use nodes::IcmpErrorConfig;
pub use tables::{
    Adjacency, Interface, Ipv4Net, TableChange, TableError, TableHandle, Tables, Tunnel,
    VxlanConfig, MAX_PORTS, MAX_TUNNELS, VXLAN_PORT,
};
