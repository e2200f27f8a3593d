//! Record framing and the payloads of each record type.
//!
//! Owns the bytes on disk: `length: u32 LE | crc32c(type ‖ payload): u32 LE |
//! type: u8 | payload`. It knows nothing of files or of what a sequence of
//! records means (that is `recovery`); it must never accept a record whose
//! checksum does not match.

use bytes::Bytes;
use raft::{ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMetadata};

pub(crate) const HEADER_BYTES: usize = 9;

/// Bound on one record's payload. A larger length can only be damage, and
/// refusing it keeps a flipped bit in a length from asking for gigabytes.
pub(crate) const PAYLOAD_BYTES_MAX: u32 = 512 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    /// One log entry: `term u64 | index u64 | kind u8 | data`.
    Entry = 1,
    /// `term u64 | vote u64 | commit u64`.
    HardState = 2,
    /// `flags u8 | snapshot metadata`; flag bit 0: the log was reset (a
    /// snapshot received from the leader replaced every entry).
    Snapshot = 3,
    /// First record of every segment: `format u8 | sequence u64`. Guards
    /// against a segment renamed or copied into the wrong place.
    SegmentStart = 4,
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordType::Entry),
            2 => Some(RecordType::HardState),
            3 => Some(RecordType::Snapshot),
            4 => Some(RecordType::SegmentStart),
            _ => None,
        }
    }
}

pub(crate) const SEGMENT_FORMAT: u8 = 1;
const SNAPSHOT_FLAG_RESET: u8 = 1;

/// What the log says about a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMarkerKind {
    /// The state machine took a snapshot at this index; entries after it
    /// stay (local log compaction).
    Compacted,
    /// A snapshot from the leader replaced the whole log: every entry before
    /// this record is void, whatever its index.
    Installed,
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Entry(Entry),
    HardState(HardState),
    Snapshot(SnapshotMetadata, SnapshotMarkerKind),
    SegmentStart { sequence: u64 },
}

pub(crate) fn push_record(out: &mut Vec<u8>, record_type: RecordType, payload: &[u8]) {
    let type_byte = record_type as u8;
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&[type_byte]), payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum.to_le_bytes());
    out.push(type_byte);
    out.extend_from_slice(payload);
}

/// Appends the framed record for `entry` to `out` without an intermediate
/// payload buffer: entries are the hot path.
pub(crate) fn push_entry(out: &mut Vec<u8>, entry: &Entry) {
    let payload_len = 17 + entry.data.len();
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(RecordType::Entry as u8);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.push(entry.kind.to_byte());
    out.extend_from_slice(&entry.data);
    let checksum = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

pub(crate) fn push_hard_state(out: &mut Vec<u8>, hard_state: &HardState) {
    let mut payload = [0u8; 24];
    payload[0..8].copy_from_slice(&hard_state.term.to_le_bytes());
    payload[8..16].copy_from_slice(&hard_state.vote.to_le_bytes());
    payload[16..24].copy_from_slice(&hard_state.commit.to_le_bytes());
    push_record(out, RecordType::HardState, &payload);
}

pub(crate) fn push_snapshot(
    out: &mut Vec<u8>,
    metadata: &SnapshotMetadata,
    kind: SnapshotMarkerKind,
) {
    let mut payload = Vec::with_capacity(32);
    payload.push(match kind {
        SnapshotMarkerKind::Compacted => 0,
        SnapshotMarkerKind::Installed => SNAPSHOT_FLAG_RESET,
    });
    encode_snapshot_metadata(&mut payload, metadata);
    push_record(out, RecordType::Snapshot, &payload);
}

pub(crate) fn push_segment_start(out: &mut Vec<u8>, sequence: u64) {
    let mut payload = [0u8; 9];
    payload[0] = SEGMENT_FORMAT;
    payload[1..9].copy_from_slice(&sequence.to_le_bytes());
    push_record(out, RecordType::SegmentStart, &payload);
}

/// `index u64 | term u64 | voters u32 | voter ids u64… | learners u32 | learner ids u64…`
pub(crate) fn encode_snapshot_metadata(out: &mut Vec<u8>, metadata: &SnapshotMetadata) {
    out.extend_from_slice(&metadata.index.to_le_bytes());
    out.extend_from_slice(&metadata.term.to_le_bytes());
    for ids in [&metadata.conf_state.voters, &metadata.conf_state.learners] {
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
}

/// Reads little-endian integers off the front of a slice; `None` when it is
/// too short (a malformed record, reported by the caller with its offset).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|bytes| bytes[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn ids(&mut self) -> Option<Vec<NodeId>> {
        let count = self.u32()? as usize;
        if count > self.0.len() / 8 {
            return None;
        }
        (0..count).map(|_| self.u64()).collect()
    }
}

pub(crate) fn decode_snapshot_metadata(bytes: &[u8]) -> Option<(SnapshotMetadata, usize)> {
    let mut cursor = Cursor(bytes);
    let index = cursor.u64()?;
    let term = cursor.u64()?;
    let voters = cursor.ids()?;
    let learners = cursor.ids()?;
    let used = bytes.len() - cursor.0.len();
    Some((
        SnapshotMetadata {
            index,
            term,
            conf_state: ConfState { voters, learners },
        },
        used,
    ))
}

/// The outcome of reading one record at the front of `bytes`.
#[derive(Debug)]
pub(crate) enum Decoded {
    Record {
        record: Record,
        length: usize,
    },
    /// The bytes end inside this record: what a write cut short leaves.
    Incomplete,
    /// The record is whole but wrong; `reason` says how.
    Damaged {
        reason: String,
        length: usize,
    },
}

pub(crate) fn decode(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let stored = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if length > PAYLOAD_BYTES_MAX {
        return Decoded::Damaged {
            reason: format!("record length {length} is impossible"),
            length: bytes.len(),
        };
    }
    let total = HEADER_BYTES + length as usize;
    if bytes.len() < total {
        return Decoded::Incomplete;
    }
    let computed = crc32c::crc32c(&bytes[8..total]);
    if computed != stored {
        return Decoded::Damaged {
            reason: format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"),
            length: total,
        };
    }
    let payload = &bytes[HEADER_BYTES..total];
    let damaged = |reason: &str| Decoded::Damaged {
        reason: reason.to_string(),
        length: total,
    };
    let Some(record_type) = RecordType::from_byte(bytes[8]) else {
        return damaged(&format!("unknown record type {}", bytes[8]));
    };
    let record = match record_type {
        RecordType::Entry => {
            let mut cursor = Cursor(payload);
            let parsed = (|| {
                let term = cursor.u64()?;
                let index = cursor.u64()?;
                let kind = EntryKind::from_byte(cursor.u8()?)?;
                Some(Entry {
                    term,
                    index,
                    kind,
                    data: Bytes::copy_from_slice(cursor.0),
                })
            })();
            match parsed {
                Some(entry) => Record::Entry(entry),
                None => return damaged("malformed entry record"),
            }
        }
        RecordType::HardState => {
            let mut cursor = Cursor(payload);
            match (
                cursor.u64(),
                cursor.u64(),
                cursor.u64(),
                cursor.0.is_empty(),
            ) {
                (Some(term), Some(vote), Some(commit), true) => {
                    Record::HardState(HardState { term, vote, commit })
                }
                _ => return damaged("malformed hard state record"),
            }
        }
        RecordType::Snapshot => {
            let parsed = payload.split_first().and_then(|(&flags, rest)| {
                let (metadata, used) = decode_snapshot_metadata(rest)?;
                let kind = match flags {
                    0 => SnapshotMarkerKind::Compacted,
                    SNAPSHOT_FLAG_RESET => SnapshotMarkerKind::Installed,
                    _ => return None,
                };
                (used == rest.len()).then_some((metadata, kind))
            });
            match parsed {
                Some((metadata, kind)) => Record::Snapshot(metadata, kind),
                None => return damaged("malformed snapshot record"),
            }
        }
        RecordType::SegmentStart => {
            let mut cursor = Cursor(payload);
            match (cursor.u8(), cursor.u64(), cursor.0.is_empty()) {
                (Some(SEGMENT_FORMAT), Some(sequence), true) => Record::SegmentStart { sequence },
                (Some(format), _, _) if format != SEGMENT_FORMAT => {
                    return damaged(&format!("unknown segment format {format}"))
                }
                _ => return damaged("malformed segment start record"),
            }
        }
    };
    Decoded::Record {
        record,
        length: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> Record {
        match decode(bytes) {
            Decoded::Record { record, length } => {
                assert_eq!(length, bytes.len());
                record
            }
            other => panic!("expected a record, got {other:?}"),
        }
    }

    #[test]
    fn every_record_type_round_trips() {
        let entry = Entry {
            term: 3,
            index: 9,
            kind: EntryKind::ConfChange,
            data: Bytes::from_static(b"abc"),
        };
        let mut out = Vec::new();
        push_entry(&mut out, &entry);
        assert_eq!(round_trip(&out), Record::Entry(entry));

        let hard_state = HardState {
            term: 4,
            vote: 2,
            commit: 7,
        };
        out.clear();
        push_hard_state(&mut out, &hard_state);
        assert_eq!(round_trip(&out), Record::HardState(hard_state));

        let metadata = SnapshotMetadata {
            index: 10,
            term: 2,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![9],
            },
        };
        for kind in [SnapshotMarkerKind::Compacted, SnapshotMarkerKind::Installed] {
            out.clear();
            push_snapshot(&mut out, &metadata, kind);
            assert_eq!(round_trip(&out), Record::Snapshot(metadata.clone(), kind));
        }

        out.clear();
        push_segment_start(&mut out, 77);
        assert_eq!(round_trip(&out), Record::SegmentStart { sequence: 77 });
    }

    #[test]
    fn a_cut_record_is_incomplete_and_a_flipped_bit_is_damage() {
        let mut out = Vec::new();
        push_entry(&mut out, &Entry::normal(1, 1, Bytes::from_static(b"hello")));
        for cut in 0..out.len() {
            assert!(
                matches!(decode(&out[..cut]), Decoded::Incomplete),
                "cut {cut}"
            );
        }
        for byte in 4..out.len() {
            let mut damaged = out.clone();
            damaged[byte] ^= 0x10;
            assert!(
                matches!(decode(&damaged), Decoded::Damaged { .. }),
                "flip at {byte}"
            );
        }
    }
}
