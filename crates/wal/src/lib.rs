//! The durable Raft log of a raftkv member.
//!
//! - [`Wal`] (`wal.rs`): segmented write-ahead log of entries, hard state and
//!   snapshot markers; group commit on a writer thread, one `fdatasync` per
//!   group; durable suffix truncation; purge of segments below the snapshot.
//! - `recovery.rs`: what a directory of segments means at open, and the
//!   line between a torn tail (cut off) and damage (an error naming file
//!   and offset).
//! - `record.rs`: the framing of one record (length, CRC32C, type).
//! - [`fs`]: the file operations all of the above use, so that
//!   [`crash_fs::CrashFs`] can stand in for the disk in crash tests.
//!
//! The log never interprets entry data, and never decides anything Raft
//! decides: a caller asks for a batch to be made durable and is told when it
//! is. It must never acknowledge a batch before the sync that covers it has
//! returned, and never carry on after a failed write or sync.

use std::path::PathBuf;
use std::sync::Arc;

pub mod crash_fs;
pub mod fs;
mod record;
mod recovery;
mod wal;

pub use record::SnapshotMarkerKind;
pub use recovery::RecoveredLog;
#[cfg(debug_assertions)]
pub use wal::WalFaults;
pub use wal::{SegmentInfo, Ticket, Wal, WalOptions, WalStats, WriteBatch, DEFAULT_SEGMENT_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{} is missing: the log jumps from {} to {}",
        path.display(),
        before.display(),
        after.display()
    )]
    MissingSegment {
        path: PathBuf,
        before: PathBuf,
        after: PathBuf,
    },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("the log failed earlier and takes no more writes: {0}")]
    Failed(Arc<WalError>),
    #[error("the log is closed")]
    Closed,
}
