//! contiv-vswitch: the node agent plus the dataplane.
//!
//! - [`nodeid`] and [`ipam`]: the node's ID and its pods' addresses, kept in the store so
//!   that any restart finds them again.
//! - [`reconciler`]: desired state as keyed items with dependencies, applied by an
//!   [`reconciler::Applier`] with retries and a dump.
//! - [`host`]: the node's operating system behind one trait (Linux, or the simulation's).
//! - [`wiring`]: the node's items (pod TAPs, dataplane ports, routes, host interconnect,
//!   uplink) and the applier that makes them real.
//! - [`worker`]: the dataplane thread and the handle that adds and removes its ports.
//! - [`node`]: one node's agent from start to stop (the binary's and the simulation's).
//! - [`nodes`]: node discovery (every agent publishes its ID and underlay address).
//! - [`agent`]: the event loop that serves CNI calls and keeps the node converged.
//! - [`server`]: CNI over gRPC on a unix socket; health, metrics and the dump over HTTP.
//! - [`prometheus`]: the text format `/metrics` is written in.
//! - [`config`]: the YAML configuration.

pub mod agent;
pub mod config;
pub mod host;
pub mod ipam;
pub mod node;
pub mod nodeid;
pub mod nodes;
pub mod prometheus;
pub mod reconciler;
pub mod server;
pub mod wiring;
pub mod worker;

pub use agent::{Agent, AgentDump, AgentError, AgentMetrics, Request};
pub use config::{AgentConfig, ConfigError};
pub use ipam::{Allocation, Ipam, IpamConfig, IpamError};
pub use nodeid::{NodeIdAllocator, NodeIdError};
