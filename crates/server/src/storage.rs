//! A member's durable state on disk and how it is put back together at
//! start: the Raft log (the `wal` crate, in `<data-dir>/member/wal`, on a
//! [`FileSystem`]: the real one in a member, `CrashFs` in tests) and the
//! state machine's engine (`mvcc::Store`, in `<data-dir>/member/engine`).
//!
//! What recovery relies on: the engine holds every applied batch committed
//! before a process crash, and after a power loss at least everything up to
//! its last `persist` (fsync); the log is compacted (its `Compacted`
//! marker written, segments purged) only up to an index the engine had
//! persisted first; a snapshot from the leader is installed in the engine
//! before the log records it (`Installed`). So at start the engine is never
//! behind the log's snapshot marker, and the log holds every entry after
//! what the engine reflects. The cases [`open_member_storage_on`] tells
//! apart:
//! - fresh start: no log, empty engine: nothing to restore (bootstrap);
//! - restart: the engine at or after the log's marker; Raft restarts from
//!   the marker and hands out the entries after it again, and the applier
//!   skips those the engine already reflects (a process crash after a
//!   batch, or a crash between installing a received snapshot and
//!   recording it);
//! - the engine behind the log's marker (the entries between are in
//!   neither), an engine whose applied entry contradicts the committed log,
//!   an engine with state but no log, a log from an older raftkv: errors
//!   naming the directory or file at fault.
//!
//! This module must never start a member whose log and state disagree in a
//! way that could lose committed entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use mvcc::StoreOptions;
use raft::{Entry, HardState, InitialState, Snapshot, SnapshotMetadata};
use wal::fs::{FileSystem, StdFs};
use wal::{SnapshotMarkerKind, Wal, WalOptions, WriteBatch};

use crate::node::{LogStorage, StorageError};
use crate::state::SharedState;

#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The data dir is damaged or from elsewhere; `path` is the file (or
    /// directory) at fault.
    #[error("{}: {reason}", path.display())]
    Inconsistent { path: PathBuf, reason: String },
    /// The engine could not be opened (the message names what failed).
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
    /// `None`: nothing on disk yet; the member must bootstrap or join.
    pub initial: Option<InitialState>,
    /// The state machine, as the engine holds it.
    pub state: SharedState,
}

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

pub fn engine_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("engine")
}

/// Where raftkv before the engine kept whole-state snapshot files.
fn legacy_snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap")
}

/// Opens the log and the engine of the member in `data_dir` on the real
/// file system and reconciles them.
pub fn open_member_storage(
    data_dir: &Path,
    segment_bytes: u64,
    options: &StoreOptions,
) -> Result<MemberStorage, StorageOpenError> {
    open_member_storage_on(
        Arc::new(StdFs),
        data_dir,
        &engine_dir(data_dir),
        segment_bytes,
        options,
    )
}

/// [`open_member_storage`] with the log on any [`FileSystem`] and the
/// engine in `engine_dir` (always the real file system: tests put it in a
/// temporary directory); see the module comment for the cases.
pub fn open_member_storage_on(
    fs: Arc<dyn FileSystem>,
    data_dir: &Path,
    engine_dir: &Path,
    segment_bytes: u64,
    options: &StoreOptions,
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
    let legacy_snapshots = legacy_snapshot_dir(data_dir);
    if fs
        .list_dir(&legacy_snapshots)
        .is_ok_and(|names| !names.is_empty())
    {
        return Err(inconsistent(
            &legacy_snapshots,
            "holds whole-state snapshot files of an earlier raftkv, which kept its state in \
             memory; this version keeps it in member/engine and does not read them: move the \
             data dir away to start a new member",
        ));
    }
    let (wal, recovered) = Wal::open(
        &wal_dir(data_dir),
        WalOptions {
            segment_bytes,
            fs: fs.clone(),
            ..WalOptions::default()
        },
    )?;
    let state = SharedState::open(engine_dir, options)?;
    let engine_applied = state.read()?.store.applied();
    let has_log = recovered.hard_state.term > 0
        || !recovered.entries.is_empty()
        || recovered.snapshot.is_some();
    if !has_log && engine_applied.index > 0 {
        return Err(inconsistent(
            &wal_dir(data_dir),
            format!(
                "holds no log, but the engine in {} holds the state up to index {}: the log \
                 is missing; the data dir is damaged",
                engine_dir.display(),
                engine_applied.index
            ),
        ));
    }
    if let Some(marker) = &recovered.snapshot {
        if engine_applied.index < marker.index {
            return Err(inconsistent(
                engine_dir,
                format!(
                    "holds the state up to index {}, but the log in {} starts after index {}: \
                     the entries between are in neither; the data dir is damaged",
                    engine_applied.index,
                    wal_dir(data_dir).display(),
                    marker.index
                ),
            ));
        }
        if engine_applied.index == marker.index && engine_applied.term != marker.term {
            return Err(inconsistent(
                engine_dir,
                format!(
                    "holds the state at index {} of term {}, but the log in {} records that \
                     index at term {}; the data dir is damaged",
                    engine_applied.index,
                    engine_applied.term,
                    wal_dir(data_dir).display(),
                    marker.term
                ),
            ));
        }
    }
    if engine_applied.index <= recovered.hard_state.commit {
        let contradicting = recovered
            .entries
            .iter()
            .find(|entry| entry.index == engine_applied.index && entry.term != engine_applied.term);
        if let Some(entry) = contradicting {
            return Err(inconsistent(
                engine_dir,
                format!(
                    "holds the state at index {} of term {}, but the committed log in {} holds \
                     that index at term {}; the data dir is damaged",
                    engine_applied.index,
                    engine_applied.term,
                    wal_dir(data_dir).display(),
                    entry.term
                ),
            ));
        }
    }
    let log = WalLog {
        last_term_vote: (recovered.hard_state.term, recovered.hard_state.vote),
        wal,
    };
    let initial = has_log.then(|| InitialState {
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
        initial,
        state,
    })
}
