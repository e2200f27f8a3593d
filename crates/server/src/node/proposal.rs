//! How a proposal names its origin, and where its proposer waits.
//!
//! Every normal entry the node proposes starts with the proposing member's
//! id and its request id (8 bytes each, big-endian); the rest is the payload
//! the state machine sees. Every member applies every entry, and only the
//! origin has a waiter for it: that is how a follower answers a write it
//! forwarded to the leader, without a reply from the leader.

use std::collections::HashMap;

use bytes::Bytes;
use raft::NodeId;
use tokio::sync::oneshot;

use super::NodeError;

/// Identifies a proposal on the member that made it, so its applier can
/// find who waits for it. Ids come from a counter started at a random-ish
/// point (time at start) so an entry from an earlier run of this member
/// never matches a waiter of this run.
pub type RequestId = u64;

pub(crate) const PROPOSAL_HEADER_BYTES: usize = 16;

pub(crate) fn frame_proposal(origin: NodeId, id: RequestId, payload: &[u8]) -> Bytes {
    let mut data = Vec::with_capacity(PROPOSAL_HEADER_BYTES + payload.len());
    data.extend_from_slice(&origin.to_be_bytes());
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(payload);
    Bytes::from(data)
}

/// The header of a framed proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProposalOrigin {
    pub(crate) member: NodeId,
    pub(crate) request: RequestId,
}

/// Splits an entry's data into origin and payload; `None` for the empty
/// entry a new leader appends.
pub(crate) fn unframe_proposal(data: &[u8]) -> Option<(ProposalOrigin, &[u8])> {
    if data.len() < PROPOSAL_HEADER_BYTES {
        return None;
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&data[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    Some((
        ProposalOrigin {
            member: word(0),
            request: word(8),
        },
        &data[PROPOSAL_HEADER_BYTES..],
    ))
}

pub(crate) type ProposalResult = Result<Bytes, NodeError>;
type ResultSender = oneshot::Sender<ProposalResult>;

/// Proposals waiting for their entry to apply, by request id. Registered
/// before the proposal leaves, so the applier can never pass it unseen.
pub(crate) struct Waiters {
    /// std Mutex: held only to insert or take, never across an await.
    by_request: std::sync::Mutex<HashMap<RequestId, ResultSender>>,
    next_request_id: std::sync::atomic::AtomicU64,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64);
        Waiters {
            by_request: std::sync::Mutex::new(HashMap::new()),
            next_request_id: std::sync::atomic::AtomicU64::new(start),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, ResultSender>> {
        self.by_request
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        self.next_request_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn register(&self) -> (RequestId, oneshot::Receiver<ProposalResult>) {
        let id = self.next_request_id();
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        (id, receiver)
    }

    /// Answers the waiter of `id`, if it still waits.
    pub(crate) fn answer(&self, id: RequestId, result: ProposalResult) {
        let waiter = self.lock().remove(&id);
        if let Some(done) = waiter {
            let _ = done.send(result);
        }
    }

    /// Forgets the waiter of `id` (its proposer gave up).
    pub(crate) fn forget(&self, id: RequestId) {
        self.lock().remove(&id);
    }

    /// Fails the waiters of `ids` (those still waiting) with `error`.
    pub(crate) fn fail(&self, ids: impl IntoIterator<Item = RequestId>, error: &NodeError) {
        let mut waiting = self.lock();
        for id in ids {
            if let Some(done) = waiting.remove(&id) {
                let _ = done.send(Err(error.clone()));
            }
        }
    }
}
