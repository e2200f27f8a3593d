//! The raftkv node: configuration, the peer transport, the Raft driver and
//! the etcd-compatible client services.
//!
//! This crate owns everything that turns the pure `raft` state machine into
//! a member of a running cluster. It must never make a write visible to a
//! client before the write's entry is committed and applied, and never
//! acknowledge one that a quorum has not made durable.

pub mod authority;
pub mod config;
pub mod convert;
pub mod node;
pub mod server;
pub mod services;
pub mod snapshot_transfer;
pub mod state;
pub mod storage;
pub mod transport;
