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

use super::load::PENDING_PROPOSALS_MAX;
use super::NodeError;

/// Identifies a proposal on the member that made it, so its applier can
/// find who waits for it. Ids come from a counter started at a random
/// 64-bit point for every run of the member (`run_nonce`), never from the
/// clock: entries of an earlier run can still be in the log, and an id of
/// this run equal to one of theirs would answer a client with another
/// request's result. Two runs meet only if their ranges overlap: with n ids
/// drawn per run, a chance of about 2n / 2^64.
pub type RequestId = u64;

/// A random 64-bit number, fresh for every call and every run of the
/// process, from the OS's random source. (std seeds every `RandomState`'s
/// SipHash keys from the OS, `getrandom(2)` on Linux, once per thread and
/// distinct per instance; the hash of nothing under fresh keys is a random
/// number. No crate, no file to open, nothing that can fail at start.)
pub(crate) fn run_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

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
    waiting: std::sync::Mutex<Waiting>,
    next_request_id: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Waiting {
    by_request: HashMap<RequestId, ResultSender>,
    /// The most waiters there ever were at once.
    most: usize,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Waiters {
            waiting: std::sync::Mutex::new(Waiting::default()),
            next_request_id: std::sync::atomic::AtomicU64::new(run_nonce()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        // Wraps at 2^64, like the read ids: only distinctness matters.
        self.next_request_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A waiter for a new proposal, or `TooManyRequests` if
    /// [`PENDING_PROPOSALS_MAX`] already wait.
    pub(crate) fn register(
        &self,
    ) -> Result<(RequestId, oneshot::Receiver<ProposalResult>), NodeError> {
        let id = self.next_request_id();
        let (sender, receiver) = oneshot::channel();
        let mut waiting = self.lock();
        if waiting.by_request.len() >= PENDING_PROPOSALS_MAX {
            return Err(NodeError::TooManyRequests);
        }
        waiting.by_request.insert(id, sender);
        waiting.most = waiting.most.max(waiting.by_request.len());
        Ok((id, receiver))
    }

    /// Answers the waiter of `id`, if it still waits.
    pub(crate) fn answer(&self, id: RequestId, result: ProposalResult) {
        let waiter = self.lock().by_request.remove(&id);
        if let Some(done) = waiter {
            let _ = done.send(result);
        }
    }

    /// Forgets the waiter of `id` (its proposer gave up).
    pub(crate) fn forget(&self, id: RequestId) {
        self.lock().by_request.remove(&id);
    }

    /// Fails the waiters of `ids` (those still waiting) with `error`.
    pub(crate) fn fail(&self, ids: impl IntoIterator<Item = RequestId>, error: &NodeError) {
        let mut waiting = self.lock();
        for id in ids {
            if let Some(done) = waiting.by_request.remove(&id) {
                let _ = done.send(Err(error.clone()));
            }
        }
    }

    /// Fails every waiter with `error` (the node stops: whatever was
    /// proposed may still apply elsewhere, so the error must not say "not
    /// applied").
    pub(crate) fn fail_all(&self, error: &NodeError) {
        let waiting = std::mem::take(&mut self.lock().by_request);
        for (_, done) in waiting {
            let _ = done.send(Err(error.clone()));
        }
    }

    /// Waiting now, and the most there ever were.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let waiting = self.lock();
        (waiting.by_request.len(), waiting.most)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Entries of an earlier run of a member can still be in the log when
    /// it restarts; a request id of the new run that equals one of theirs
    /// would answer a client with another request's result. Nothing about
    /// the wall clock may matter: here the later run draws its ids first, as
    /// if its clock had been stepped back behind the earlier run's.
    #[test]
    fn request_ids_of_two_runs_never_meet_whichever_clock_reads_earlier() {
        const IDS: usize = 1_000_000;
        let later_run = Waiters::new();
        let earlier_run = Waiters::new();
        let earlier: HashSet<RequestId> = (0..IDS).map(|_| earlier_run.next_request_id()).collect();
        let collisions = (0..IDS)
            .filter(|_| earlier.contains(&later_run.next_request_id()))
            .count();
        assert_eq!(collisions, 0, "request ids repeat across runs");
    }
}
