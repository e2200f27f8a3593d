//! The replicated state machine's key-value store: etcd's MVCC semantics
//! on a fjall database.
//!
//! # Layout
//!
//! - [`store`]: the [`Store`] the applier drives: etcd's semantics
//!   (revisions, Range options, Put, DeleteRange, Txn as etcd 3.4 applies
//!   it, Compact, HashKV) over the engine, writes gathered in a pending
//!   batch that [`Store::commit`] writes atomically with the applied index.
//! - [`validate`]: etcd's refusals (codes and texts) and the stateless
//!   checks made before a request enters the log.
//! - [`index`]: the in-memory key index (keys, generations, revisions; no
//!   values), rebuilt from the engine at open.
//! - `record`: what a put version holds in the engine (creation, version,
//!   lease, value), enough to rebuild the index.
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
//! It owns *what* a request does to the store and what it answers, and the
//! bytes of the state machine on disk: their layout, their atomicity (the
//! applied index is never ahead of the data it describes, after any crash)
//! and their snapshots. Values and history live in the engine; memory holds
//! only the key index (its size follows the number of keys and retained
//! versions) and the writes not yet committed.
//!
//! It must never decide what is committed or in which order entries apply
//! (that is Raft's, and the applier's), never treat its own unsynced writes
//! as durable (the Raft WAL is the durable source; [`Store::persist`] is the
//! only fsync of applied data), never read a clock or anything else that
//! could differ between members (every member must reach the same state
//! from the same log), and never panic on bad input from disk or from the
//! network: corrupt data is an [`Error`]. A request etcd refuses changes
//! nothing, down to what the next commit writes.

// Run-time failures are errors, never panics (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod backend;
pub mod error;
pub mod index;
pub mod keys;
mod record;
pub mod store;
pub mod validate;

pub use backend::{
    AppliedIndex, Backend, EngineCompactor, KeyspaceId, PendingVersion, ReadView,
    SnapshotInstaller, SnapshotStream, WriteBatch,
};
pub use error::{Error, Result};
pub use index::{KeyIndex, VersionInfo};
pub use keys::{KeyRange, Revision, Version, VersionRecord};
pub use raft::SnapshotMetadata;
pub use store::{ReadError, Store, StoreOptions};
pub use validate::{code, validate_range, validate_request, ApplyError, MAX_TXN_NESTING};

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
        send_sync::<crate::Store>();
    }
}
