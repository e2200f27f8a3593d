//! Conversions between the Raft crate's messages and the peer wire format.
//!
//! Decoding never trusts the wire: a frame whose body is missing or whose
//! enum value is unknown is reported as an error (the transport drops that
//! message, as Raft tolerates lost messages), never a panic.

use proto::peer as wire;
use raft::{
    ConfState, Entry, EntryKind, Message, MessageBody, RejectHint, Snapshot, SnapshotMetadata,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("raft message from {from} has no body (or one this member does not know)")]
    MissingBody { from: u64 },
    #[error("entry {index} has unknown kind {kind}")]
    UnknownEntryKind { index: u64, kind: i32 },
    #[error("snapshot message without metadata")]
    MissingSnapshotMetadata,
}

pub fn entry_to_wire(entry: &Entry) -> wire::Entry {
    wire::Entry {
        term: entry.term,
        index: entry.index,
        kind: match entry.kind {
            EntryKind::Normal => wire::EntryKind::Normal as i32,
            EntryKind::ConfChange => wire::EntryKind::ConfChange as i32,
        },
        data: entry.data.clone(),
    }
}

pub fn entry_from_wire(entry: wire::Entry) -> Result<Entry, DecodeError> {
    let kind = match wire::EntryKind::try_from(entry.kind) {
        Ok(wire::EntryKind::Normal) => EntryKind::Normal,
        Ok(wire::EntryKind::ConfChange) => EntryKind::ConfChange,
        Err(_) => {
            return Err(DecodeError::UnknownEntryKind {
                index: entry.index,
                kind: entry.kind,
            })
        }
    };
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        kind,
        // Its own buffer, not a slice of the received frame: the state
        // machine keeps slices of entry data (values) for as long as they
        // live, and a slice of a frame would pin the whole frame.
        data: bytes::Bytes::copy_from_slice(&entry.data),
    })
}

pub fn metadata_to_wire(metadata: &SnapshotMetadata) -> wire::SnapshotMetadata {
    wire::SnapshotMetadata {
        index: metadata.index,
        term: metadata.term,
        conf_state: Some(wire::ConfState {
            voters: metadata.conf_state.voters.clone(),
            learners: metadata.conf_state.learners.clone(),
        }),
    }
}

pub fn metadata_from_wire(metadata: wire::SnapshotMetadata) -> SnapshotMetadata {
    let conf_state = metadata.conf_state.unwrap_or_default();
    let mut voters = conf_state.voters;
    let mut learners = conf_state.learners;
    // The invariant of ConfState: sorted and disjoint.
    voters.sort_unstable();
    voters.dedup();
    learners.sort_unstable();
    learners.dedup();
    learners.retain(|learner| !voters.contains(learner));
    SnapshotMetadata {
        index: metadata.index,
        term: metadata.term,
        conf_state: ConfState { voters, learners },
    }
}

/// Encodes a message for the Raft stream. An InstallSnapshot message keeps
/// only its metadata: the data travels on its own stream.
pub fn message_to_wire(message: &Message) -> wire::RaftMessage {
    use wire::raft_message::Body;
    let body = match &message.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => Body::AppendEntries(wire::AppendEntries {
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(entry_to_wire).collect(),
            commit: *commit,
        }),
        MessageBody::AppendResponse { index, reject } => {
            Body::AppendResponse(wire::AppendResponse {
                index: *index,
                reject: reject.map(|hint| wire::RejectHint {
                    index: hint.index,
                    term: hint.term,
                }),
            })
        }
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => Body::RequestVote(wire::RequestVote {
            pre_vote: *pre_vote,
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            leadership_transfer: *leadership_transfer,
        }),
        MessageBody::VoteResponse { pre_vote, granted } => Body::VoteResponse(wire::VoteResponse {
            pre_vote: *pre_vote,
            granted: *granted,
        }),
        MessageBody::Heartbeat { commit, read_round } => Body::Heartbeat(wire::Heartbeat {
            commit: *commit,
            read_round: *read_round,
        }),
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(wire::HeartbeatResponse {
                read_round: *read_round,
            })
        }
        MessageBody::InstallSnapshot { snapshot } => Body::InstallSnapshot(wire::InstallSnapshot {
            metadata: Some(metadata_to_wire(&snapshot.metadata)),
        }),
        MessageBody::TimeoutNow => Body::TimeoutNow(wire::TimeoutNow {}),
        MessageBody::ReadIndex { request_id } => Body::ReadIndex(wire::ReadIndex {
            request_id: *request_id,
        }),
        MessageBody::ReadIndexResponse { request_id, index } => {
            Body::ReadIndexResponse(wire::ReadIndexResponse {
                request_id: *request_id,
                index: *index,
            })
        }
    };
    wire::RaftMessage {
        from: message.from,
        to: message.to,
        term: message.term,
        body: Some(body),
    }
}

/// Decodes a message. An InstallSnapshot decodes with empty data; the
/// transport attaches what it received on the snapshot stream.
pub fn message_from_wire(message: wire::RaftMessage) -> Result<Message, DecodeError> {
    use wire::raft_message::Body;
    let Some(body) = message.body else {
        return Err(DecodeError::MissingBody { from: message.from });
    };
    let body = match body {
        Body::AppendEntries(append) => MessageBody::AppendEntries {
            prev_log_index: append.prev_log_index,
            prev_log_term: append.prev_log_term,
            entries: append
                .entries
                .into_iter()
                .map(entry_from_wire)
                .collect::<Result<Vec<_>, _>>()?,
            commit: append.commit,
        },
        Body::AppendResponse(response) => MessageBody::AppendResponse {
            index: response.index,
            reject: response.reject.map(|hint| RejectHint {
                index: hint.index,
                term: hint.term,
            }),
        },
        Body::RequestVote(request) => MessageBody::RequestVote {
            pre_vote: request.pre_vote,
            last_log_index: request.last_log_index,
            last_log_term: request.last_log_term,
            leadership_transfer: request.leadership_transfer,
        },
        Body::VoteResponse(response) => MessageBody::VoteResponse {
            pre_vote: response.pre_vote,
            granted: response.granted,
        },
        Body::Heartbeat(heartbeat) => MessageBody::Heartbeat {
            commit: heartbeat.commit,
            read_round: heartbeat.read_round,
        },
        Body::HeartbeatResponse(response) => MessageBody::HeartbeatResponse {
            read_round: response.read_round,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
        Body::ReadIndex(read) => MessageBody::ReadIndex {
            request_id: read.request_id,
        },
        Body::ReadIndexResponse(response) => MessageBody::ReadIndexResponse {
            request_id: response.request_id,
            index: response.index,
        },
        Body::InstallSnapshot(install) => MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                metadata: metadata_from_wire(
                    install
                        .metadata
                        .ok_or(DecodeError::MissingSnapshotMetadata)?,
                ),
                data: bytes::Bytes::new(),
            },
        },
    };
    Ok(Message {
        from: message.from,
        to: message.to,
        term: message.term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn round_trip(message: Message) {
        let decoded = message_from_wire(message_to_wire(&message));
        assert_eq!(decoded, Ok(message));
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = vec![
            MessageBody::AppendEntries {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![
                    Entry::normal(3, 5, Bytes::from_static(b"x")),
                    Entry {
                        term: 3,
                        index: 6,
                        kind: EntryKind::ConfChange,
                        data: Bytes::from_static(b"cc"),
                    },
                ],
                commit: 4,
            },
            MessageBody::AppendResponse {
                index: 9,
                reject: None,
            },
            MessageBody::AppendResponse {
                index: 9,
                reject: Some(RejectHint { index: 3, term: 1 }),
            },
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 7,
                last_log_term: 3,
                leadership_transfer: true,
            },
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::Heartbeat {
                commit: 5,
                read_round: 8,
            },
            MessageBody::HeartbeatResponse { read_round: 8 },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex { request_id: 77 },
            MessageBody::ReadIndexResponse {
                request_id: 77,
                index: 12,
            },
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    metadata: SnapshotMetadata {
                        index: 100,
                        term: 4,
                        conf_state: ConfState {
                            voters: vec![1, 2, 3],
                            learners: vec![4],
                        },
                    },
                    data: Bytes::new(),
                },
            },
        ];
        for body in bodies {
            round_trip(Message {
                from: 1,
                to: 2,
                term: 3,
                body,
            });
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let empty = wire::RaftMessage {
            from: 5,
            to: 1,
            term: 1,
            body: None,
        };
        assert_eq!(
            message_from_wire(empty),
            Err(DecodeError::MissingBody { from: 5 })
        );
        let bad_entry = wire::Entry {
            term: 1,
            index: 1,
            kind: 42,
            data: Bytes::new(),
        };
        assert!(entry_from_wire(bad_entry).is_err());
        let no_metadata = wire::RaftMessage {
            from: 5,
            to: 1,
            term: 1,
            body: Some(wire::raft_message::Body::InstallSnapshot(
                wire::InstallSnapshot { metadata: None },
            )),
        };
        assert_eq!(
            message_from_wire(no_metadata),
            Err(DecodeError::MissingSnapshotMetadata)
        );
    }

    #[test]
    fn conf_state_from_the_wire_is_normalized() {
        let metadata = metadata_from_wire(wire::SnapshotMetadata {
            index: 1,
            term: 1,
            conf_state: Some(wire::ConfState {
                voters: vec![3, 1, 3],
                learners: vec![1, 9],
            }),
        });
        assert_eq!(metadata.conf_state.voters, vec![1, 3]);
        assert_eq!(metadata.conf_state.learners, vec![9]);
    }
}
