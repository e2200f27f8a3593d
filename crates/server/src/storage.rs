//! A member's durable state on disk and how it is put back together at
//! start: the Raft log (the `wal` crate, in `<data-dir>/member/wal`) and the
//! state machine's snapshot files (`<data-dir>/member/snap`).
//!
//! Ordering that recovery relies on: a snapshot file is durable before the
//! log records it (a local snapshot before its `Compacted` marker; a
//! received one before Raft even sees the message). So at start the newest
//! snapshot file is never behind the log's marker; it may be ahead (a crash
//! between the two steps, or a received snapshot Raft then declined), and
//! then it is recorded in the log before anything else happens. This module
//! must never start a member whose log and snapshot disagree in a way that
//! could lose committed entries: that is an error naming what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raft::{Entry, HardState, InitialState, Snapshot, SnapshotMetadata};
use wal::fs::StdFs;
use wal::{SnapshotFiles, SnapshotMarkerKind, Wal, WalOptions, WriteBatch};

use crate::node::{LogStorage, StorageError};
use crate::state::{ChunkReader, ReplicatedState};

#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    State(#[from] StorageError),
}

/// The WAL as the node's log storage.
pub struct WalLog {
    wal: Wal,
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

/// Opens the log and the snapshots of the member in `data_dir` and
/// reconciles them.
pub fn open_member_storage(
    data_dir: &Path,
    segment_bytes: u64,
) -> Result<MemberStorage, StorageOpenError> {
    let legacy = data_dir.join("member").join("raft.log");
    if legacy.exists() {
        return Err(StorageOpenError::Inconsistent(format!(
            "{} was written by an earlier raftkv (single-file log) that this version does not read; \
             move the data dir away to start a new member",
            legacy.display()
        )));
    }
    let fs = Arc::new(StdFs);
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
    let log_snapshot_index = recovered.snapshot_index();
    match &newest {
        None if log_snapshot_index > 0 => {
            return Err(StorageOpenError::Inconsistent(format!(
                "the log in {} starts after a snapshot at index {log_snapshot_index}, \
                 but {} holds no snapshot file: the data dir is damaged",
                wal_dir(data_dir).display(),
                snapshots.dir().display()
            )))
        }
        Some((metadata, path)) if metadata.index < log_snapshot_index => {
            return Err(StorageOpenError::Inconsistent(format!(
                "the newest snapshot file {} (index {}) is behind the log's snapshot at index \
                 {log_snapshot_index}: the data dir is damaged",
                path.display(),
                metadata.index
            )))
        }
        _ => {}
    }

    let restored = match &newest {
        Some((metadata, path)) => {
            let (_, data) = snapshots.open_data(path)?;
            let state = ReplicatedState::read_image(&mut ChunkReader::new(data))?;
            if state.applied_index != metadata.index {
                return Err(StorageOpenError::Inconsistent(format!(
                    "{} is named for index {} but holds the state at {}",
                    path.display(),
                    metadata.index,
                    state.applied_index
                )));
            }
            Some(state)
        }
        None => None,
    };

    let log = WalLog {
        last_term_vote: (recovered.hard_state.term, recovered.hard_state.vote),
        wal,
    };
    if let Some((metadata, _)) = &newest {
        if metadata.index > log_snapshot_index {
            // The snapshot file is ahead of the log: record it as Raft would
            // have. Entries that agree with it at its index stay; otherwise
            // the log is replaced, as a snapshot from the leader does.
            let agrees = recovered
                .entries
                .iter()
                .any(|entry| entry.index == metadata.index && entry.term == metadata.term);
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
            log.wal.write(WriteBatch {
                snapshot: Some((metadata, kind)),
                hard_state: Some(&recovered.hard_state),
                ..WriteBatch::default()
            })?;
            recovered.snapshot = Some(metadata.clone());
        }
    }

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
