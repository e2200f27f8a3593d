//! The data Raft reads and writes: log entries, the durable hard state,
//! snapshots and configuration states.
//!
//! These types are plain data. They carry no behaviour beyond small
//! constructors and codecs, so that storage (`wal`) and transport (`server`)
//! can depend on them without pulling in the algorithm.

use bytes::Bytes;

/// A member's identity. `0` is reserved to mean "nobody" (no vote, no leader).
pub type NodeId = u64;

/// The reserved "nobody" id.
pub const NO_NODE: NodeId = 0;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data (possibly empty: a leader's no-op on election is an
    /// empty normal entry).
    Normal,
    /// An encoded [`ConfChange`]; takes effect when the entry is committed and
    /// handed out for apply.
    ConfChange,
}

impl EntryKind {
    /// The one-byte tag used by codecs that persist or ship entries.
    pub fn to_byte(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        }
    }

    /// Inverse of [`EntryKind::to_byte`]; `None` for an unknown tag.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Bytes,
}

impl Entry {
    pub fn normal(term: u64, index: u64, data: Bytes) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// Bytes this entry counts for in message-size and in-flight limits.
    /// A fixed per-entry overhead keeps empty entries from being free.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before a node sends a vote or an
/// acknowledgement that depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    /// Who this node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// Highest index known committed. Persisting it is an optimisation (fewer
    /// entries re-applied on restart), not a safety requirement.
    pub commit: u64,
}

/// Which members vote and which only follow.
///
/// Invariant: `voters` and `learners` are disjoint and sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl ConfState {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            learners: Vec::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }
}

/// Where a snapshot sits in the log and the configuration at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMetadata {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// A point-in-time image of the state machine, standing in for every entry up
/// to and including `metadata.index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub metadata: SnapshotMetadata,
    /// Opaque to Raft. A driver whose snapshots are too large to hold in memory
    /// may leave this empty and stream the data itself when it sees an
    /// [`crate::MessageBody::InstallSnapshot`] leave.
    pub data: Bytes,
}

/// A membership change, carried through the log in an entry of kind
/// [`EntryKind::ConfChange`]. One change at a time (see `raft.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfChange {
    pub change: ConfChangeKind,
    pub node_id: NodeId,
    /// Opaque to Raft (the server stores the member's URLs here).
    pub context: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    /// Add a voter, or promote an existing learner to voter.
    AddVoter,
    /// Add a learner. Refused (ignored) for a node that is already a voter:
    /// demotion is not supported.
    AddLearner,
    /// Remove a voter or learner. Removing the leader makes it step down.
    Remove,
}

/// A [`ConfChange`] that could not be decoded from an entry's data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed conf change: {0}")]
pub struct ConfChangeDecodeError(pub &'static str);

impl ConfChange {
    /// Layout: kind (1 byte) | node id (8 bytes BE) | context (rest).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(9 + self.context.len());
        out.push(match self.change {
            ConfChangeKind::AddVoter => 0,
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::Remove => 2,
        });
        out.extend_from_slice(&self.node_id.to_be_bytes());
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    pub fn decode(data: &Bytes) -> Result<Self, ConfChangeDecodeError> {
        if data.len() < 9 {
            return Err(ConfChangeDecodeError("shorter than 9 bytes"));
        }
        let change = match data[0] {
            0 => ConfChangeKind::AddVoter,
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::Remove,
            _ => return Err(ConfChangeDecodeError("unknown change kind")),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&data[1..9]);
        Ok(ConfChange {
            change,
            node_id: u64::from_be_bytes(id),
            context: data.slice(9..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips() {
        let change = ConfChange {
            change: ConfChangeKind::AddLearner,
            node_id: 42,
            context: Bytes::from_static(b"http://127.0.0.1:2380"),
        };
        assert_eq!(ConfChange::decode(&change.encode()), Ok(change));
    }

    #[test]
    fn conf_change_rejects_garbage() {
        assert!(ConfChange::decode(&Bytes::from_static(b"\x07123456789")).is_err());
        assert!(ConfChange::decode(&Bytes::from_static(b"\x00")).is_err());
    }
}
