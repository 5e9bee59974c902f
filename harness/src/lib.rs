//! The library behind `contiv-harness`: what its commands build, shared with its tests.

pub mod agent_dump;
pub mod cluster;
pub mod lab;
