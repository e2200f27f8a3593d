//! A deterministic simulator for the `raft` crate, and the checkers that
//! judge it (test support; never linked into the server).
//!
//! It owns: a simulated network ([`network`]) that drops, duplicates, delays,
//! reorders and partitions; simulated nodes ([`node`]) with durable storage
//! that survives crashes and volatile state that does not; a cluster driver
//! ([`cluster`]) that follows the Ready contract for every node, in one
//! thread, in virtual time; the safety checker ([`checker`]); and randomized
//! runs ([`simulation`]). Everything is decided by one seed, so any failure
//! replays exactly.
//!
//! It must never use wall-clock time, threads or unseeded randomness.

pub mod checker;
pub mod cluster;
pub mod network;
pub mod node;
pub mod simulation;

pub use checker::Violation;
pub use cluster::{Cluster, ClusterOptions};
pub use network::NetworkFaults;
pub use simulation::{run_simulation, SimulationFailure, SimulationOptions, SimulationStats};
