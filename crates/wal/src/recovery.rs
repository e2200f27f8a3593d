//! Opening a log directory: reading every segment, deciding what a sequence
//! of records means, and telling a torn tail (cut off, with a warning) from
//! damage (an error naming the file and byte offset).
//!
//! The meaning of the record stream, in order:
//! - an entry at index `i` replaces every entry at `i` or above (that is how
//!   a truncation of conflicting entries is made durable: by the entry that
//!   replaces them);
//! - a `Compacted` snapshot marker at `s` drops entries up to `s` and keeps
//!   the rest; an `Installed` marker drops every entry;
//! - the last hard state wins.
//!
//! Purged segments (a prefix, wholly at or below the snapshot) mean the first
//! remaining segment may start past its own prelude's snapshot; what must hold
//! at the end is that the surviving entries start right after the final
//! snapshot. This module must never drop a whole record silently except the
//! torn one at the very end of the last segment.

use std::path::{Path, PathBuf};

use raft::{Entry, HardState, SnapshotMetadata};

use crate::fs::FileSystem;
use crate::record::{self, Decoded, Record, SnapshotMarkerKind};
use crate::WalError;

pub(crate) const SEGMENT_SUFFIX: &str = ".wal";

pub(crate) fn segment_name(sequence: u64) -> String {
    format!("{sequence:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// The smallest unit a disk writes whole: a write torn by a crash leaves
/// each such sector either written or as it was.
const SECTOR_BYTES: u64 = 512;

/// Whether the record position `file_offset` (with `rest` the bytes from
/// there on) holds zeros to the end of the sector its header ends in: the
/// start of a write that never reached the disk while later sectors of it
/// did. No record that was written begins with a zero header.
fn starts_unwritten(file_offset: u64, rest: &[u8]) -> bool {
    let header_end = file_offset + record::HEADER_BYTES as u64;
    let sector_end = header_end.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    let span = ((sector_end - file_offset) as usize).min(rest.len());
    rest[..span].iter().all(|&byte| byte == 0)
}

/// What a restarting member finds in its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    pub hard_state: HardState,
    /// The latest snapshot the log knows of (its data lives elsewhere).
    pub snapshot: Option<SnapshotMetadata>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

impl RecoveredLog {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.index)
    }

    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }
}

/// One segment as recovery found it.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub sequence: u64,
    pub path: PathBuf,
    /// Bytes of whole, valid records; the file is cut here if shorter.
    pub valid_len: u64,
    /// Whether what follows `valid_len` holds a torn record (rather than
    /// nothing, or only the zeros the segment was extended with).
    pub torn_tail: bool,
    pub file_len: u64,
    /// Highest entry index written in this segment (0 if none).
    pub max_entry_index: u64,
}

#[derive(Default)]
struct Replay {
    log: RecoveredLog,
}

impl Replay {
    fn apply(&mut self, record: Record, path: &Path, offset: u64) -> Result<(), WalError> {
        let corrupt = |reason: String| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        match record {
            Record::Entry(entry) => {
                let snapshot_index = self.log.snapshot_index();
                if entry.index <= snapshot_index {
                    return Err(corrupt(format!(
                        "entry {} is at or below the snapshot index {snapshot_index}",
                        entry.index
                    )));
                }
                let entries = &mut self.log.entries;
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    if entry.index > last.index + 1 {
                        return Err(corrupt(format!(
                            "entry {} follows entry {}: entries are missing",
                            entry.index, last.index
                        )));
                    }
                    if entry.index < first.index {
                        entries.clear();
                    } else {
                        entries.truncate((entry.index - first.index) as usize);
                    }
                }
                if let Some(previous) = entries.last() {
                    if entry.term < previous.term {
                        return Err(corrupt(format!(
                            "entry {} has term {} below its predecessor's {}",
                            entry.index, entry.term, previous.term
                        )));
                    }
                }
                entries.push(entry);
            }
            Record::HardState(hard_state) => self.log.hard_state = hard_state,
            Record::Snapshot(metadata, kind) => {
                let previous = self.log.snapshot_index();
                if metadata.index < previous {
                    return Err(corrupt(format!(
                        "snapshot marker at {} is behind the earlier one at {previous}",
                        metadata.index
                    )));
                }
                match kind {
                    SnapshotMarkerKind::Installed => self.log.entries.clear(),
                    SnapshotMarkerKind::Compacted => {
                        let entries = &mut self.log.entries;
                        if let Some(first) = entries.first().map(|entry| entry.index) {
                            if let Some(entry) = metadata
                                .index
                                .checked_sub(first)
                                .and_then(|position| entries.get(position as usize))
                            {
                                if entry.term != metadata.term {
                                    return Err(corrupt(format!(
                                        "snapshot marker at {} has term {}, the entry there {}",
                                        metadata.index, metadata.term, entry.term
                                    )));
                                }
                            }
                            let drop = metadata.index.saturating_sub(first - 1) as usize;
                            entries.drain(..drop.min(entries.len()));
                        }
                    }
                }
                self.log.snapshot = Some(metadata);
            }
            Record::SegmentStart { .. } => {
                return Err(corrupt("segment start record inside a segment".into()));
            }
        }
        Ok(())
    }
}

/// Reads the whole directory. Returns the log and every segment in order.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
) -> Result<(RecoveredLog, Vec<ScannedSegment>), WalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WalError::Io { path, source }
    };
    let mut sequences = Vec::new();
    for name in fs.list_dir(dir).map_err(io(dir))? {
        if let Some(sequence) = parse_segment_name(&name) {
            sequences.push(sequence);
        } else if name.ends_with(SEGMENT_SUFFIX) {
            return Err(WalError::Corrupt {
                path: dir.join(&name),
                offset: 0,
                reason: "not a segment name this log writes".into(),
            });
        }
    }
    sequences.sort_unstable();
    for pair in sequences.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(WalError::MissingSegment {
                path: dir.join(segment_name(pair[0] + 1)),
                before: dir.join(segment_name(pair[0])),
                after: dir.join(segment_name(pair[1])),
            });
        }
    }

    let mut replay = Replay::default();
    let mut scanned = Vec::with_capacity(sequences.len());
    let count = sequences.len();
    for (position, sequence) in sequences.into_iter().enumerate() {
        let is_last = position + 1 == count;
        let path = dir.join(segment_name(sequence));
        let bytes = fs.read(&path).map_err(io(&path))?;
        let mut offset = 0usize;
        let mut max_entry_index = 0;
        let mut torn_tail = false;
        while offset < bytes.len() {
            let rest = &bytes[offset..];
            let corrupt = |reason: String| WalError::Corrupt {
                path: path.clone(),
                offset: offset as u64,
                reason,
            };
            match record::decode(rest) {
                Decoded::Record { record, length } => {
                    if offset == 0 {
                        match record {
                            Record::SegmentStart { sequence: found } if found == sequence => {}
                            Record::SegmentStart { sequence: found } => {
                                return Err(corrupt(format!(
                                    "segment says it is number {found:016x}, its name {sequence:016x}"
                                )))
                            }
                            _ => return Err(corrupt("segment does not begin with its start record".into())),
                        }
                    } else {
                        if let Record::Entry(entry) = &record {
                            max_entry_index = max_entry_index.max(entry.index);
                        }
                        replay.apply(record, &path, offset as u64)?;
                    }
                    offset += length;
                }
                Decoded::Incomplete if is_last => {
                    torn_tail = true;
                    break;
                }
                Decoded::Incomplete => {
                    return Err(corrupt(
                        "record cut short in a segment that is not the last".into(),
                    ))
                }
                Decoded::Damaged { reason, length } => {
                    // Only the writes after the last sync can be torn, and
                    // only in the last segment. A crash cuts them short (the
                    // damaged record is the last thing in the file: nothing
                    // or only zeros after it, as segments are extended with
                    // zeros ahead of their appends, `fs::ZeroExtension`),
                    // or writes later pages of them but not the first (the
                    // record starts with a sector of zeros). Anything else
                    // is damage to data that was durable, and must not be
                    // papered over.
                    let torn = is_last
                        && (rest
                            .get(length..)
                            .is_none_or(|after| after.iter().all(|&byte| byte == 0))
                            || starts_unwritten(offset as u64, rest));
                    if torn {
                        torn_tail = rest.iter().any(|&byte| byte != 0);
                        break;
                    }
                    return Err(corrupt(reason));
                }
            }
        }
        if !is_last && bytes.is_empty() {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: "segment is empty but is not the last".into(),
            });
        }
        scanned.push(ScannedSegment {
            sequence,
            path,
            valid_len: offset as u64,
            torn_tail,
            file_len: bytes.len() as u64,
            max_entry_index,
        });
    }

    let log = replay.log;
    let expected_first = log.snapshot_index() + 1;
    if let Some(first) = log.entries.first() {
        if first.index != expected_first {
            let path = scanned
                .first()
                .map_or_else(|| dir.to_path_buf(), |segment| segment.path.clone());
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "entries {expected_first}..{} are missing (the log resumes at {})",
                    first.index - 1,
                    first.index
                ),
            });
        }
    }
    Ok((log, scanned))
}
