//! A durable Raft log in one append-only file: the member's log storage
//! until the segmented WAL crate (group commit, segment purge) replaces it.
//!
//! Layout: a sequence of records, each
//! `length: u32 LE | crc32c(kind ‖ payload): u32 LE | kind: u8 | payload`.
//! Kinds: 1 = entry (`term u64 | index u64 | entry kind u8 | data`),
//! 2 = hard state (`term u64 | vote u64 | commit u64`), all integers LE.
//! An entry at index i replaces, on replay, every entry at i or above: that
//! is how a truncation of conflicting entries is made durable.
//!
//! Durability: `persist` writes all records of a Ready and then calls
//! `fdatasync` once; it returns only after that. A failed write or sync is
//! returned and the node stops (it never retries).
//!
//! Recovery: a record cut short at the very end of the file (a torn write)
//! is dropped and the file truncated there, with a warning naming the
//! offset; a bad checksum or an impossible record anywhere else fails with an
//! error naming the file and offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Entry, EntryKind, HardState, SnapshotMetadata};

use crate::node::{LogStorage, StorageError};

const RECORD_ENTRY: u8 = 1;
const RECORD_HARD_STATE: u8 = 2;
const HEADER_BYTES: usize = 9;
/// Bound on one record's payload; larger lengths can only be corruption.
const RECORD_BYTES_MAX: u32 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileLogError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} at byte {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// What a restarting member finds in its log.
#[derive(Debug, Default)]
pub struct RecoveredLog {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
}

pub struct FileLog {
    path: PathBuf,
    file: File,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> FileLogError + '_ {
    move |source| FileLogError::Io {
        file: path.to_path_buf(),
        source,
    }
}

impl FileLog {
    /// Opens (creating if needed) `dir/raft.log` and replays it.
    pub fn open(dir: &Path) -> Result<(FileLog, RecoveredLog), FileLogError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join("raft.log");
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error(&path))?;
        if !existed {
            // The new file's directory entry must be durable too.
            File::open(dir)
                .and_then(|directory| directory.sync_all())
                .map_err(io_error(dir))?;
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io_error(&path))?;
        file.read_to_end(&mut bytes).map_err(io_error(&path))?;
        let (recovered, valid_len) = replay(&path, &bytes)?;
        if valid_len < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                offset = valid_len,
                dropped_bytes = bytes.len() - valid_len,
                "cutting a torn record off the end of the log"
            );
            file.set_len(valid_len as u64).map_err(io_error(&path))?;
            file.sync_data().map_err(io_error(&path))?;
        }
        Ok((FileLog { path, file }, recovered))
    }
}

fn replay(path: &Path, bytes: &[u8]) -> Result<(RecoveredLog, usize), FileLogError> {
    let mut recovered = RecoveredLog::default();
    let mut offset = 0usize;
    let corrupt = |offset: usize, reason: String| FileLogError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    while offset < bytes.len() {
        if bytes.len() - offset < HEADER_BYTES {
            break; // torn header at the end
        }
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap_or([0; 4]));
        let checksum =
            u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap_or([0; 4]));
        if length > RECORD_BYTES_MAX {
            return Err(corrupt(
                offset,
                format!("record length {length} is impossible"),
            ));
        }
        let end = offset + HEADER_BYTES + length as usize;
        if end > bytes.len() {
            break; // torn payload at the end
        }
        let kind = bytes[offset + 8];
        let payload = &bytes[offset + HEADER_BYTES..end];
        let actual = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
        if actual != checksum {
            if end == bytes.len() {
                break; // the last record, written partially: torn
            }
            return Err(corrupt(
                offset,
                format!("checksum mismatch (stored {checksum:#010x}, computed {actual:#010x})"),
            ));
        }
        match kind {
            RECORD_ENTRY => {
                let entry = decode_entry(payload)
                    .ok_or_else(|| corrupt(offset, "malformed entry record".into()))?;
                let first = recovered.entries.first().map(|e| e.index);
                match first {
                    Some(first) if entry.index >= first => {
                        let keep = (entry.index - first) as usize;
                        if keep > recovered.entries.len() {
                            return Err(corrupt(
                                offset,
                                format!("entry {} leaves a gap", entry.index),
                            ));
                        }
                        recovered.entries.truncate(keep);
                    }
                    Some(_) => recovered.entries.clear(),
                    None => {}
                }
                recovered.entries.push(entry);
            }
            RECORD_HARD_STATE => {
                if payload.len() != 24 {
                    return Err(corrupt(offset, "malformed hard state record".into()));
                }
                let field = |at: usize| {
                    u64::from_le_bytes(payload[at..at + 8].try_into().unwrap_or([0; 8]))
                };
                recovered.hard_state = HardState {
                    term: field(0),
                    vote: field(8),
                    commit: field(16),
                };
            }
            other => return Err(corrupt(offset, format!("unknown record kind {other}"))),
        }
        offset = end;
    }
    Ok((recovered, offset))
}

fn decode_entry(payload: &[u8]) -> Option<Entry> {
    if payload.len() < 17 {
        return None;
    }
    let term = u64::from_le_bytes(payload[0..8].try_into().ok()?);
    let index = u64::from_le_bytes(payload[8..16].try_into().ok()?);
    let kind = EntryKind::from_byte(payload[16])?;
    Some(Entry {
        term,
        index,
        kind,
        data: Bytes::copy_from_slice(&payload[17..]),
    })
}

fn push_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

impl LogStorage for FileLog {
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = snapshot {
            // The state machine is rebuilt from the log at start, so the log
            // must keep everything: a snapshot marker here would mean data
            // this log cannot restore.
            return Err(StorageError(format!(
                "{}: snapshots are not supported by this log (index {})",
                self.path.display(),
                snapshot.index
            )));
        }
        let mut buffer = Vec::new();
        let mut payload = Vec::new();
        for entry in entries {
            payload.clear();
            payload.extend_from_slice(&entry.term.to_le_bytes());
            payload.extend_from_slice(&entry.index.to_le_bytes());
            payload.push(entry.kind.to_byte());
            payload.extend_from_slice(&entry.data);
            push_record(&mut buffer, RECORD_ENTRY, &payload);
        }
        if let Some(hard_state) = hard_state {
            payload.clear();
            payload.extend_from_slice(&hard_state.term.to_le_bytes());
            payload.extend_from_slice(&hard_state.vote.to_le_bytes());
            payload.extend_from_slice(&hard_state.commit.to_le_bytes());
            push_record(&mut buffer, RECORD_HARD_STATE, &payload);
        }
        if buffer.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data())
            .map_err(|error| StorageError(format!("{}: {error}", self.path.display())))
    }

    fn compact(&mut self, _index: u64) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &str) -> Entry {
        Entry::normal(term, index, Bytes::copy_from_slice(data.as_bytes()))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("raftkv-file-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reopen_returns_what_was_persisted_with_truncations_applied() {
        let dir = temp_dir("reopen");
        {
            let (mut log, recovered) = FileLog::open(&dir).expect("open");
            assert!(recovered.entries.is_empty());
            let hard_state = HardState {
                term: 2,
                vote: 1,
                commit: 1,
            };
            log.persist(
                Some(hard_state),
                &[entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "c")],
                None,
            )
            .expect("persist");
            log.persist(None, &[entry(2, 2, "B")], None)
                .expect("persist");
        }
        let (_, recovered) = FileLog::open(&dir).expect("reopen");
        assert_eq!(
            recovered.hard_state,
            HardState {
                term: 2,
                vote: 1,
                commit: 1
            }
        );
        assert_eq!(recovered.entries, vec![entry(1, 1, "a"), entry(2, 2, "B")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_cut_and_mid_log_damage_is_an_error() {
        let dir = temp_dir("damage");
        {
            let (mut log, _) = FileLog::open(&dir).expect("open");
            log.persist(None, &[entry(1, 1, "first")], None)
                .expect("persist");
            log.persist(None, &[entry(1, 2, "second")], None)
                .expect("persist");
        }
        let path = dir.join("raft.log");
        let bytes = std::fs::read(&path).expect("read");
        // Chop the last record in half: recovered without it.
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let (_, recovered) = FileLog::open(&dir).expect("a torn tail recovers");
        assert_eq!(recovered.entries, vec![entry(1, 1, "first")]);
        // Flip a byte inside the first record, with a record after it.
        {
            let (mut log, _) = FileLog::open(&dir).expect("open");
            log.persist(None, &[entry(1, 2, "again")], None)
                .expect("persist");
        }
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[HEADER_BYTES + 3] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        match FileLog::open(&dir) {
            Err(FileLogError::Corrupt { offset, file, .. }) => {
                assert_eq!(offset, 0);
                assert_eq!(file, path);
            }
            other => panic!(
                "mid-log damage must fail with file and offset, got {:?}",
                other.map(|_| ())
            ),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
