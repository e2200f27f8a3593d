//! The Raft consensus algorithm as a pure, deterministic state machine.
pub mod types;
pub use types::*;
