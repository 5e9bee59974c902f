//! contiv-cni: the CNI plugin that the container runtime executes, and the gRPC API it
//! speaks to the node agent.
//!
//! The binary itself is a thin shell over [`plugin::run`] (it lives in the
//! `contiv-vswitch` package, next to the agent it talks to, so that tests can run both).
//! It validates what the runtime gave it, forwards ADD, DEL, CHECK, STATUS and GC to the
//! agent over a unix socket, and prints the result (or the spec's error object) in the
//! format of the configuration's `cniVersion`.

pub mod client;
pub mod install;
pub mod plugin;
pub mod spec;

/// The generated gRPC types and stubs (`proto/cni.proto`).
pub mod proto {
    tonic::include_proto!("contiv.cni.v1");
}

pub use client::{connect, ClientError};
pub use spec::{CniError, CniVersion, Command};
