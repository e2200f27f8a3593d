//! The storage of raftkv's replicated state machine.
//!
//! # Layout
//!
//! - [`keys`]: how an MVCC version (user key, revision) becomes an engine key
//!   whose byte order is `(user key, revision)` order, and how a version's
//!   value (a put or a tombstone) is encoded.
//! - [`backend`]: the fjall database: keyspaces for versions, leases and
//!   metadata; atomic batches that carry the applied index with the data;
//!   consistent read views with the "latest version of each key at revision
//!   ≤ R" scan; snapshots streamed out in checksummed chunks; crash-safe
//!   installation of a received snapshot.
//! - [`error`]: the crate's error type.
//!
//! # What this crate owns, and what it must never do
//!
//! It owns the bytes of the state machine on disk: their layout, their
//! atomicity (the applied index is never ahead of the data it describes,
//! after any crash) and their snapshots.
//!
//! It must never decide what is committed or in which order entries apply
//! (that is Raft's, and the applier's), never treat its own unsynced writes
//! as durable (the Raft WAL is the durable source; [`backend::Backend::persist`]
//! is the only fsync of applied data), never read a clock or anything else
//! that could differ between members, and never panic on bad input from
//! disk or from the network: corrupt data is an [`Error`].

// Run-time failures are errors, never panics (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod error;
pub mod keys;

pub use backend::{AppliedIndex, Backend, KeyspaceId, PendingVersion, ReadView, WriteBatch};
pub use error::{Error, Result};
pub use keys::{KeyRange, Revision, Version, VersionRecord};

#[cfg(test)]
mod tests {
    /// The server streams snapshots and reads from other threads than the
    /// applier's.
    #[test]
    fn handles_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<crate::Backend>();
        send::<crate::ReadView>();
        send::<crate::backend::SnapshotStream>();
        send::<crate::backend::SnapshotInstaller>();
        send::<crate::backend::LatestVersions>();
    }
}
