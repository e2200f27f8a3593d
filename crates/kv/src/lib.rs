//! etcd's MVCC key-value semantics: revisions, versions, ranges (with every
//! RangeRequest option), puts, deletes, transactions (every compare target,
//! nested), compaction, and etcd's error codes and texts.
//!
//! This crate owns *what* a request does to the store and what it answers.
//! It must never decide what is committed (that is Raft's), never depend on
//! wall-clock time or anything else that could differ between members (every
//! member must reach the same state from the same log), and never do I/O:
//! persistence of the state lives below it.

pub mod index;
pub mod snapshot;
pub mod store;

pub use index::{KeyIndex, Revision};
pub use snapshot::SnapshotDecodeError;
pub use store::{validate_range, validate_request, ApplyError, Store};
