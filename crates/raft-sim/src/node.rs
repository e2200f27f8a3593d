//! One simulated member: a Raft instance (absent while crashed), the storage
//! that survives a crash, and a tiny state machine.

use bytes::Bytes;
use raft::{Entry, HardState, InitialState, Raft, Snapshot};

use crate::checker::chain_digest;

/// What a node has made durable. A crash loses everything else.
#[derive(Clone, Debug, Default)]
pub struct DurableStorage {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Contiguous; may start before the snapshot index (entries kept after
    /// compaction for lagging followers) and may be empty.
    pub entries: Vec<Entry>,
}

impl DurableStorage {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.metadata.index)
    }

    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some(snapshot) = &self.snapshot {
            if snapshot.metadata.index == index {
                return Some(snapshot.metadata.term);
            }
        }
        if index == 0 {
            return Some(0);
        }
        let first = self.entries.first()?.index;
        if index < first {
            return None;
        }
        self.entries
            .get((index - first) as usize)
            .map(|entry| entry.term)
    }

    /// Appends, replacing the stored suffix the new entries overlap.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        if let Some(stored_first) = self.entries.first().map(|e| e.index) {
            if first.index <= stored_first {
                self.entries.clear();
            } else {
                self.entries.truncate((first.index - stored_first) as usize);
            }
        }
        assert!(
            self.entries.is_empty()
                || self.entries.last().map(|e| e.index + 1) == Some(first.index),
            "durable log would get a gap before index {}",
            first.index
        );
        self.entries.extend_from_slice(entries);
    }

    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        let keeps_entries = self.term(index) == Some(snapshot.metadata.term);
        if keeps_entries {
            self.entries.retain(|entry| entry.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot);
    }

    /// Records a locally taken snapshot and drops entries up to `compact_to`.
    pub fn save_local_snapshot(&mut self, snapshot: Snapshot, compact_to: u64) {
        self.snapshot = Some(snapshot);
        self.entries.retain(|entry| entry.index > compact_to);
    }

    pub fn initial_state(&self) -> InitialState {
        let snapshot_index = self.snapshot_index();
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .entries
                .iter()
                .filter(|entry| entry.index > snapshot_index)
                .cloned()
                .collect(),
            applied: snapshot_index,
        }
    }
}

/// The replicated state machine: a digest chained over every applied entry,
/// so two nodes agree on the digest iff they applied the same sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied_index: u64,
    pub digest: u64,
}

impl StateMachine {
    pub fn apply(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.applied_index + 1,
            "state machine applies in order without gaps"
        );
        self.digest = chain_digest(self.digest, entry);
        self.applied_index = entry.index;
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.applied_index.to_be_bytes());
        out.extend_from_slice(&self.digest.to_be_bytes());
        Bytes::from(out)
    }

    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != 16 {
            return None;
        }
        let mut index = [0u8; 8];
        let mut digest = [0u8; 8];
        index.copy_from_slice(&data[..8]);
        digest.copy_from_slice(&data[8..]);
        Some(StateMachine {
            applied_index: u64::from_be_bytes(index),
            digest: u64::from_be_bytes(digest),
        })
    }
}

pub struct SimNode {
    pub raft: Option<Raft>,
    pub storage: DurableStorage,
    pub state: StateMachine,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }
}
