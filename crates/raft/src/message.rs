//! The messages Raft nodes exchange.
//!
//! A message is addressed (`from`, `to`), stamped with the sender's term (for
//! a pre-vote request, the term the sender would campaign in), and carries one
//! [`MessageBody`]. The transport must deliver bodies intact but may drop,
//! duplicate, delay or reorder whole messages: Raft tolerates all of those.

use crate::types::{Entry, NodeId, Snapshot};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub body: MessageBody,
}

/// Where a follower's log diverges, sent back with a rejected append so the
/// leader can skip a whole divergent term in one round trip instead of
/// probing one index at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The largest index at or below the rejected `prev_log_index` whose term
    /// is no greater than the leader's `prev_log_term` (0 if none).
    pub index: u64,
    /// The follower's term at `index` (0 if unknown).
    pub term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: append `entries` after (`prev_log_index`,
    /// `prev_log_term`), and learn `commit`.
    AppendEntries {
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Follower → leader. Accepted: the follower's log matches the leader's up
    /// to `index` and that prefix is durable. Rejected: `index` is the
    /// `prev_log_index` that did not match.
    AppendResponse {
        index: u64,
        reject: Option<RejectHint>,
    },
    /// Candidate → voter. With `pre_vote`, `term` is the term the sender would
    /// campaign in; nobody's state changes. With `leadership_transfer`, the
    /// current leader asked for this election, so voters skip leader
    /// stickiness.
    RequestVote {
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
        leadership_transfer: bool,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// Leader → follower: "I am alive", plus a commit index the follower is
    /// known to have entries for. `read_round` is the ReadIndex round this
    /// heartbeat confirms (0 for none).
    Heartbeat {
        commit: u64,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// Leader → follower whose next entry the leader has compacted away.
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// Leader → transfer target: campaign now, the leader steps aside.
    TimeoutNow,
    /// Follower → leader: confirm leadership and tell me the commit index for
    /// my read `request_id`.
    ReadIndex {
        request_id: u64,
    },
    ReadIndexResponse {
        request_id: u64,
        index: u64,
    },
}

impl MessageBody {
    /// Short name for logs and message-count statistics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::RequestVote { pre_vote: true, .. } => "RequestPreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
