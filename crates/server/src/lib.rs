//! The raftkv node: configuration, the peer side, the Raft driver and the
//! etcd-compatible client services.
//!
//! This crate owns everything that turns the pure `raft` state machine into
//! a member of a running cluster. It must never make a write visible to a
//! client before the write's entry is committed and applied, and never
//! acknowledge one that a quorum has not made durable.
//!
//! Layering: `node` (the raft and apply threads) knows only its own traits;
//! `peer` (transport, inbound service, snapshot transfer) implements them;
//! `services` (client API) talks to the node through its handle; `server`
//! assembles a member; `identity` fixes its member and cluster id in the
//! data dir at the first start.

pub mod authority;
pub mod config;
pub mod convert;
pub mod errors;
pub mod identity;
pub mod node;
pub mod peer;
pub mod server;
pub mod services;
pub mod state;
pub mod storage;
