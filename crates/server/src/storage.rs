//! A member's durable state on disk and how it is put back together at
//! start: the Raft log (the `wal` crate, in `<data-dir>/member/wal`) and the
//! state machine's snapshot files (`<data-dir>/member/snap`), both on one
//! [`FileSystem`] (the real one in a member, `CrashFs` in tests).
//!
//! Ordering that recovery relies on: a snapshot file is durable before the
//! log records it (a local snapshot before its `Compacted` marker; a
//! received one before Raft even sees the message), and an older snapshot
//! file is removed only after a newer one is recorded in the log (here,
//! `WalLog::compacted`) or installed (the state machine). So at start the
//! newest snapshot file is never behind the log's marker. The cases
//! [`open_member_storage_on`] tells apart:
//! - fresh start: no log, no snapshot: nothing to restore (bootstrap);
//! - normal restart: the newest snapshot file is the log's marker (or there
//!   is neither) and the log's entries follow it;
//! - snapshot file ahead of the log: a crash between writing the file and
//!   the `Compacted` marker (the log holds the snapshot's last entry: it is
//!   recorded as `Compacted`, the entries after it stay), or a received
//!   snapshot not yet recorded (Raft declined it or the member crashed
//!   first; the log does not hold its last entry: recorded as `Installed`,
//!   replacing the log, as the leader's snapshot would). Either way it is
//!   recorded before anything else happens. A file that disagrees with the
//!   log at an index the log holds as committed is damage, not a received
//!   snapshot (Raft takes those only beyond its commit index): an error;
//! - snapshot file behind the log's marker, none when the log needs one, a
//!   file whose contents are not the state it is named for, a damaged
//!   file, a log from an older raftkv: errors naming the file.
//!
//! Temporaries of snapshot writers that a crash interrupted, and snapshot
//! files older than the newest, are removed at open (no writer exists yet,
//! nothing can need them). This module must never start a member whose log
//! and snapshot disagree in a way that could lose committed entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{Entry, HardState, InitialState, Snapshot, SnapshotMetadata};
use wal::fs::{FileSystem, StdFs};
use wal::{SnapshotFiles, SnapshotMarkerKind, Wal, WalOptions, WriteBatch};

use crate::node::{LogStorage, StorageError};
use crate::state::ReplicatedState;

#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The data dir is damaged or from elsewhere; `path` is the file (or
    /// directory) at fault.
    #[error("{}: {reason}", path.display())]
    Inconsistent { path: PathBuf, reason: String },
    /// The newest snapshot file could not be read as a state (the message
    /// names the file).
    #[error("{0}")]
    State(#[from] StorageError),
}

fn inconsistent(path: &Path, reason: impl Into<String>) -> StorageOpenError {
    StorageOpenError::Inconsistent {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The WAL as the node's log storage.
pub struct WalLog {
    wal: Wal,
    /// Older snapshot files are removed once a newer one is recorded here.
    snapshots: SnapshotFiles,
    /// Term and vote as last queued: a hard state that changes neither
    /// (only the commit index) needs no sync of its own.
    last_term_vote: (u64, u64),
}

impl LogStorage for WalLog {
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        installed_snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        if let Some(hard_state) = &hard_state {
            let term_vote = (hard_state.term, hard_state.vote);
            if entries.is_empty()
                && installed_snapshot.is_none()
                && term_vote == self.last_term_vote
            {
                // Only the commit index moved. Losing it in a crash is
                // harmless (the leader tells it again; what was applied
                // counts as committed at restart), so, as etcd does, it
                // rides along with the next sync instead of costing one
                // (~60 µs of CPU each on the machine of docs/bench.md; a
                // follower sees one per leader commit round).
                return self
                    .wal
                    .append_unsynced(WriteBatch {
                        hard_state: Some(hard_state),
                        ..WriteBatch::default()
                    })
                    .map_err(|error| StorageError(error.to_string()));
            }
            self.last_term_vote = term_vote;
        }
        self.wal
            .write(WriteBatch {
                snapshot: installed_snapshot
                    .map(|snapshot| (snapshot, SnapshotMarkerKind::Installed)),
                entries,
                hard_state: hard_state.as_ref(),
            })
            .map_err(|error| StorageError(error.to_string()))
    }

    fn compacted(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        self.wal
            .write(WriteBatch {
                snapshot: Some((snapshot, SnapshotMarkerKind::Compacted)),
                ..WriteBatch::default()
            })
            .map_err(|error| StorageError(error.to_string()))?;
        let removed = self
            .wal
            .purge()
            .map_err(|error| StorageError(error.to_string()))?;
        if removed > 0 {
            tracing::debug!(segments = removed, "purged log segments below the snapshot");
        }
        // The marker is durable: a restart starts from this snapshot, and
        // Raft, having recorded it, sends no older one. An install still
        // pending is of a newer snapshot (Raft takes one only beyond its
        // commit index, and this one was applied), so older files can go;
        // newer ones (received, not yet recorded) stay.
        self.snapshots
            .remove_older_than(snapshot)
            .map_err(|error| StorageError(error.to_string()))?;
        Ok(())
    }
}

/// What a member finds in its data dir.
pub struct MemberStorage {
    pub log: WalLog,
    pub snapshots: SnapshotFiles,
    /// `None`: nothing on disk yet; the member must bootstrap or join.
    pub initial: Option<InitialState>,
    /// The state machine restored from the newest snapshot, if there is one.
    pub restored: Option<ReplicatedState>,
}

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap")
}

/// Opens the log and the snapshots of the member in `data_dir` on the real
/// file system and reconciles them.
pub fn open_member_storage(
    data_dir: &Path,
    segment_bytes: u64,
) -> Result<MemberStorage, StorageOpenError> {
    open_member_storage_on(Arc::new(StdFs), data_dir, segment_bytes)
}

/// [`open_member_storage`] on any [`FileSystem`]; see the module comment
/// for the cases.
pub fn open_member_storage_on(
    fs: Arc<dyn FileSystem>,
    data_dir: &Path,
    segment_bytes: u64,
) -> Result<MemberStorage, StorageOpenError> {
    let legacy = data_dir.join("member").join("raft.log");
    match fs.file_len(&legacy) {
        Ok(_) => {
            return Err(inconsistent(
                &legacy,
                "written by an earlier raftkv (single-file log) that this version does not \
                 read; move the data dir away to start a new member",
            ))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(wal::WalError::Io {
                path: legacy,
                source,
            }
            .into())
        }
    }
    let snapshots = SnapshotFiles::open(&snapshot_dir(data_dir), fs.clone())?;
    let (wal, mut recovered) = Wal::open(
        &wal_dir(data_dir),
        WalOptions {
            segment_bytes,
            fs,
            ..WalOptions::default()
        },
    )?;
    let newest = snapshots.latest()?;
    match (&newest, &recovered.snapshot) {
        (None, Some(marker)) => {
            return Err(inconsistent(
                &snapshots.path_for(marker),
                format!(
                    "is missing: the log in {} starts after the snapshot at index {} (term {}), \
                     but no snapshot file holds it; the data dir is damaged",
                    wal_dir(data_dir).display(),
                    marker.index,
                    marker.term
                ),
            ))
        }
        (Some((metadata, path)), Some(marker)) if metadata.index < marker.index => {
            return Err(inconsistent(
                path,
                format!(
                    "is the newest snapshot file (index {}), but the log in {} already starts \
                     after the snapshot at index {}; the data dir is damaged",
                    metadata.index,
                    wal_dir(data_dir).display(),
                    marker.index
                ),
            ))
        }
        (Some((metadata, path)), Some(marker))
            if metadata.index == marker.index && metadata.term != marker.term =>
        {
            return Err(inconsistent(
                path,
                format!(
                    "holds the snapshot at index {} of term {}, but the log in {} records that \
                     index at term {}; the data dir is damaged",
                    metadata.index,
                    metadata.term,
                    wal_dir(data_dir).display(),
                    marker.term
                ),
            ))
        }
        _ => {}
    }

    let restored = match &newest {
        Some((metadata, path)) => Some(ReplicatedState::load(&snapshots, path, metadata)?),
        None => None,
    };

    if let Some((metadata, newest_path)) = &newest {
        if metadata.index > recovered.snapshot_index() {
            // The snapshot file is ahead of the log: record it as Raft would
            // have. Entries that agree with it at its index stay; otherwise
            // the log is replaced, as a snapshot from the leader does.
            let agrees = recovered
                .entries
                .iter()
                .any(|entry| entry.index == metadata.index && entry.term == metadata.term);
            if !agrees && metadata.index <= recovered.hard_state.commit {
                // Raft takes a snapshot from the leader only beyond its
                // commit index, and a local one always agrees with the log:
                // replacing the log here would drop entries this member
                // knows are committed.
                return Err(inconsistent(
                    newest_path,
                    format!(
                        "holds the snapshot at index {} of term {}, which contradicts the \
                         committed log in {} (commit index {}); the data dir is damaged",
                        metadata.index,
                        metadata.term,
                        wal_dir(data_dir).display(),
                        recovered.hard_state.commit
                    ),
                ));
            }
            let kind = if agrees {
                recovered
                    .entries
                    .retain(|entry| entry.index > metadata.index);
                SnapshotMarkerKind::Compacted
            } else {
                recovered.entries.clear();
                SnapshotMarkerKind::Installed
            };
            // The snapshot holds only committed state.
            recovered.hard_state.commit = recovered.hard_state.commit.max(metadata.index);
            if recovered.hard_state.term < metadata.term {
                // A received snapshot the member never got to hand to Raft
                // (which would have moved to the leader's term first). Its
                // term is at least the one the entry was written in; no vote
                // was ever cast in it here.
                recovered.hard_state.term = metadata.term;
                recovered.hard_state.vote = 0;
            }
            wal.write(WriteBatch {
                snapshot: Some((metadata, kind)),
                hard_state: Some(&recovered.hard_state),
                ..WriteBatch::default()
            })?;
            recovered.snapshot = Some(metadata.clone());
            tracing::info!(
                index = metadata.index,
                term = metadata.term,
                ?kind,
                "recorded a snapshot file the log did not know of yet"
            );
        }
        // The newest snapshot is now the log's: older files serve nothing.
        snapshots.remove_older_than(metadata)?;
    }
    let log = WalLog {
        last_term_vote: (recovered.hard_state.term, recovered.hard_state.vote),
        wal,
        snapshots: snapshots.clone(),
    };

    let has_state = recovered.hard_state.term > 0
        || !recovered.entries.is_empty()
        || recovered.snapshot.is_some();
    let initial = has_state.then(|| InitialState {
        hard_state: recovered.hard_state,
        snapshot: recovered.snapshot.clone().map(|metadata| Snapshot {
            metadata,
            data: Bytes::new(),
        }),
        applied: recovered.snapshot_index(),
        entries: recovered.entries,
    });
    Ok(MemberStorage {
        log,
        snapshots,
        initial,
        restored,
    })
}
