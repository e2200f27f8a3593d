//! A model of what the log must hold, shared by the WAL tests.
#![allow(dead_code)]

use bytes::Bytes;
use raft::{ConfState, Entry, HardState, SnapshotMetadata};
use wal::{RecoveredLog, SnapshotMarkerKind, WriteBatch};

/// The log as the writer intends it: what a correct recovery returns once
/// every write is durable.
#[derive(Clone, Debug, Default)]
pub struct ModelLog {
    pub snapshot: Option<SnapshotMetadata>,
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub term: u64,
}

pub fn entry(term: u64, index: u64, size: usize) -> Entry {
    let mut data = vec![0u8; size];
    for (position, byte) in data.iter_mut().enumerate() {
        *byte = (index as usize * 31 + position) as u8;
    }
    Entry::normal(term, index, Bytes::from(data))
}

pub fn metadata(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1, 2, 3]),
    }
}

impl ModelLog {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |snapshot| snapshot.index)
    }

    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return self.snapshot.as_ref().map(|snapshot| snapshot.term);
        }
        self.entries
            .iter()
            .find(|entry| entry.index == index)
            .map(|entry| entry.term)
    }

    /// Entries starting at `first` (clamped to the valid range), `count` of
    /// them, replacing the suffix.
    pub fn make_append(
        &mut self,
        back: u64,
        count: usize,
        bump_term: bool,
        size: usize,
    ) -> Vec<Entry> {
        if bump_term {
            self.term += 1;
        }
        let first = (self.last_index() + 1)
            .saturating_sub(back)
            .max(self.snapshot_index() + 1);
        // Terms never go down along the log: the replacement starts at the
        // current term (which is at least that of what it replaces).
        let floor = self.term_at(first - 1).unwrap_or(0);
        self.term = self.term.max(floor).max(1);
        let new: Vec<Entry> = (0..count as u64)
            .map(|offset| entry(self.term, first + offset, size))
            .collect();
        self.apply_entries(&new);
        new
    }

    pub fn apply_entries(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.entries.retain(|entry| entry.index < first.index);
        self.entries.extend_from_slice(new);
    }

    pub fn apply_batch(&mut self, batch: &WriteBatch<'_>) {
        if let Some((metadata, kind)) = batch.snapshot {
            match kind {
                SnapshotMarkerKind::Installed => self.entries.clear(),
                SnapshotMarkerKind::Compacted => {
                    self.entries.retain(|entry| entry.index > metadata.index)
                }
            }
            self.snapshot = Some(metadata.clone());
        }
        self.apply_entries(batch.entries);
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = *hard_state;
        }
    }

    pub fn assert_recovered(&self, recovered: &RecoveredLog) {
        assert_eq!(recovered.snapshot, self.snapshot, "snapshot");
        assert_eq!(recovered.hard_state, self.hard_state, "hard state");
        let indexes = |entries: &[Entry]| -> Vec<(u64, u64)> {
            entries
                .iter()
                .map(|entry| (entry.index, entry.term))
                .collect()
        };
        assert_eq!(
            indexes(&recovered.entries),
            indexes(&self.entries),
            "entries"
        );
        assert_eq!(recovered.entries, self.entries, "entry data");
    }
}
