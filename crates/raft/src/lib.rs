//! The Raft consensus algorithm as a pure, deterministic state machine.
//!
//! This crate owns the algorithm: elections (with PreVote and CheckQuorum),
//! log replication with flow control, commitment, linearizable reads
//! (ReadIndex), leadership transfer, snapshots and membership changes. It
//! must never do I/O: no file system, network, clock, threads or OS
//! randomness. Time is [`Raft::tick`]; randomness comes from
//! [`Config::seed`]. That is what lets a test run a whole cluster in one
//! thread from one seed and replay any failure exactly.
//!
//! # Layout
//! * `types` — entries, hard state, snapshots, membership (plain data).
//! * `message` — what nodes send each other.
//! * `raft` — the state machine and its `Ready` contract.
//! * `log` — the in-memory log and its positions (committed, applied,
//!   persisted).
//! * `progress` — a leader's per-follower replication state and in-flight
//!   window; `quorum` — majority arithmetic; `read_index` — batched
//!   linearizable reads.
//!
//! # Driving a node: the Ready contract
//! The driver feeds inputs (`tick`, `step`, `propose`, `read_index`,
//! `transfer_leadership`, `propose_conf_change`), then whenever
//! [`Raft::has_ready`] is true:
//!
//! 1. takes a [`Ready`] with [`Raft::ready`];
//! 2. sends `ready.messages` at once — these may leave before anything is
//!    durable (a leader's AppendEntries and heartbeats: the leader writes its
//!    own log in parallel with replicating it, and counts itself toward
//!    commitment only once `advance` says its entries are durable);
//! 3. durably stores `ready.snapshot`, `ready.entries` (replacing any stored
//!    suffix they overlap) and `ready.hard_state`, with one sync;
//! 4. only then sends `ready.persisted_messages` — votes and append
//!    acknowledgements, which promise that state is on disk;
//! 5. installs `ready.snapshot` into the state machine, applies
//!    `ready.committed_entries` in order, serves `ready.read_states` once the
//!    applied index reaches theirs;
//! 6. calls [`Raft::advance`] with the Ready.
//!
//! Inputs may be fed between `ready` and `advance`; a second `ready` may not
//! be taken before `advance`.
//!
//! Log compaction is the driver's call: it snapshots its state machine at an
//! applied index, hands the snapshot to [`Raft::create_snapshot`] (so lagging
//! followers can be sent it), persists it, then calls [`Raft::compact_log`].

pub mod config;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raft;
pub mod read_index;
pub mod rng;
pub mod types;

#[cfg(debug_assertions)]
pub use config::FaultSwitches;
pub use config::{Config, ConfigError};
pub use message::{Message, MessageBody, RejectHint};
pub use raft::{InitialState, LogPosition, Raft, RaftError, ReadState, Ready, Role, SoftState};
pub use types::*;
