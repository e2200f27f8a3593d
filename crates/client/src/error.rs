//! The client's errors, and which server answers prove a write was not
//! applied.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The server answered with an error (etcd's code and text).
    #[error("{message}")]
    Server {
        endpoint: String,
        code: Code,
        message: String,
    },
    /// A write failed in a way that does not say whether it was applied.
    #[error("outcome unknown (the write may or may not have been applied): {source}")]
    Unknown { source: Box<ClientError> },
    #[error("request timed out{}", last.as_ref().map(|error| format!(" (last error: {error})")).unwrap_or_default())]
    Timeout { last: Option<Box<ClientError>> },
}

impl ClientError {
    pub(crate) fn from_status(endpoint: String, status: &tonic::Status) -> Self {
        ClientError::Server {
            endpoint,
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Unknown { source } => source.code(),
            _ => None,
        }
    }

    /// Whether a write that failed with this error may have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Unknown { .. } | ClientError::Timeout { .. }
        )
    }
}

pub(crate) enum Class {
    /// The answer stands: bad request, compacted revision, ... Another
    /// endpoint would say the same.
    Final,
    /// Refused before anything was proposed: another endpoint may serve it
    /// and a write is still safe to send.
    NotApplied,
    /// The member could not serve it, and a write may have been proposed.
    Unknown,
}

/// etcd's texts for refusals that happen before a request is proposed.
const NOT_APPLIED_TEXTS: &[&str] = &["etcdserver: no leader", "etcdserver: not capable"];

/// etcd's overload refusal (ResourceExhausted): the member did not queue
/// the request, so it was not applied; another endpoint, or the same one
/// after a backoff, may take it.
const TOO_MANY_REQUESTS: &str = "etcdserver: too many requests";

/// Transport texts for a connection that could not be made: the request
/// never left.
const NOT_CONNECTED_TEXTS: &[&str] = &[
    "tcp connect error",
    "error trying to connect",
    "Connection refused",
];

pub(crate) fn classify(status: &tonic::Status) -> Class {
    let message = status.message();
    match status.code() {
        Code::Unavailable if NOT_APPLIED_TEXTS.contains(&message) => Class::NotApplied,
        Code::ResourceExhausted if message == TOO_MANY_REQUESTS => Class::NotApplied,
        Code::Unavailable
            if NOT_CONNECTED_TEXTS
                .iter()
                .any(|text| message.contains(text)) =>
        {
            Class::NotApplied
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted => {
            Class::Unknown
        }
        Code::Cancelled | Code::Internal => Class::Unknown,
        _ => Class::Final,
    }
}

/// A transport failure (not an answer from the server): the channel is
/// reconnected before the next use.
pub(crate) fn is_connection_error(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && !status.message().starts_with("etcdserver:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: Code, message: &str) -> &'static str {
        match classify(&tonic::Status::new(code, message)) {
            Class::Final => "final",
            Class::NotApplied => "not applied",
            Class::Unknown => "unknown",
        }
    }

    #[test]
    fn etcds_overload_and_leader_answers_are_classified() {
        assert_eq!(
            class(Code::ResourceExhausted, "etcdserver: too many requests"),
            "not applied"
        );
        // The space quota is not overload: retrying will not help.
        assert_eq!(
            class(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            ),
            "final"
        );
        // A write lost to a leader change may still have been applied.
        assert_eq!(
            class(Code::Unavailable, "etcdserver: leader changed"),
            "unknown"
        );
        assert_eq!(
            class(Code::Unavailable, "etcdserver: no leader"),
            "not applied"
        );
    }
}
