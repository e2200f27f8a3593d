//! etcd's server-level errors, with the gRPC code beside each text: the one
//! place this crate spells them (from etcd 3.4's
//! `etcdserver/api/v3rpc/rpctypes/error.go`). Clients, etcdctl included,
//! match on code and text, so both must be exactly etcd's. Errors of the
//! key-value semantics (compacted, key not found, ...) belong to `kv`.
//!
//! This module must never invent a text etcd does not use for the same
//! condition, and nothing else in this crate may spell one of these.

use tonic::{Code, Status};

use crate::node::NodeError;

/// One of etcd's server errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdError {
    pub code: Code,
    pub text: &'static str,
}

impl EtcdError {
    pub fn status(self) -> Status {
        Status::new(self.code, self.text)
    }
}

/// No leader is known: nothing was proposed, a client may retry.
pub const NO_LEADER: EtcdError = EtcdError {
    code: Code::Unavailable,
    text: "etcdserver: no leader",
};
/// A leader-only request (MoveLeader) reached a member that does not lead.
pub const NOT_LEADER: EtcdError = EtcdError {
    code: Code::FailedPrecondition,
    text: "etcdserver: not leader",
};
/// The leader changed while the request waited: a read was dropped, or a
/// write's entry was replaced by a new leader's (or leadership is moving).
pub const LEADER_CHANGED: EtcdError = EtcdError {
    code: Code::Unavailable,
    text: "etcdserver: leader changed",
};
pub const STOPPED: EtcdError = EtcdError {
    code: Code::Unavailable,
    text: "etcdserver: server stopped",
};
/// The request's deadline passed: a write's outcome is unknown.
pub const TIMEOUT: EtcdError = EtcdError {
    code: Code::Unavailable,
    text: "etcdserver: request timed out",
};
/// A write's entry went into a snapshot this member received from a new
/// leader: whether it applied is unknown here.
pub const TIMEOUT_DUE_TO_LEADER_FAIL: EtcdError = EtcdError {
    code: Code::Unavailable,
    text: "etcdserver: request timed out, possibly due to previous leader failure",
};
/// Refused before queueing because the member is overloaded (etcd: applied
/// index more than 5,000 behind the commit index). Nothing was proposed.
pub const TOO_MANY_REQUESTS: EtcdError = EtcdError {
    code: Code::ResourceExhausted,
    text: "etcdserver: too many requests",
};
pub const REQUEST_TOO_LARGE: EtcdError = EtcdError {
    code: Code::InvalidArgument,
    text: "etcdserver: request is too large",
};
/// The space quota is used up.
pub const NO_SPACE: EtcdError = EtcdError {
    code: Code::ResourceExhausted,
    text: "etcdserver: mvcc: database space exceeded",
};

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Status {
        match error {
            NodeError::NoLeader => NO_LEADER.status(),
            NodeError::NotLeader { .. } => NOT_LEADER.status(),
            NodeError::LeaderChanged => LEADER_CHANGED.status(),
            NodeError::Timeout => TIMEOUT.status(),
            NodeError::LeaderFailed => TIMEOUT_DUE_TO_LEADER_FAIL.status(),
            NodeError::Stopped => STOPPED.status(),
            NodeError::TooManyRequests => TOO_MANY_REQUESTS.status(),
            NodeError::Rejected(message) => Status::failed_precondition(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_answer_etcds_code_and_text() {
        let cases = [
            (
                NodeError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                NodeError::NotLeader { leader: 2 },
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                NodeError::LeaderChanged,
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                NodeError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                NodeError::Stopped,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
            (
                NodeError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
        ];
        for (error, code, text) in cases {
            assert_eq!(error.to_string(), text, "{error:?}'s Display");
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, text));
        }
    }
}
