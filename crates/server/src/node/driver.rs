//! The raft thread's loop: owns the `Raft` state machine, drains the input
//! queue into one batch per round, and handles each Ready in the order the
//! raft crate's contract requires: send `messages` (a leader replicates
//! while it writes its own log), persist, send `persisted_messages`, hand
//! committed entries to the applier, `advance`.
//!
//! It talks to the world only through its [`LogStorage`], its [`Outbox`],
//! the apply channel, the waiters and the status it publishes, so a test can
//! drive it round by round in one thread. It never blocks on the network,
//! and it stops (failing what waits) after a failed persist: nothing is
//! acknowledged after it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use raft::{
    LogPosition, Message, MessageBody, NodeId, Raft, RaftError, Ready, Role, SnapshotMetadata,
};
use tokio::sync::{oneshot, watch};

use super::applier::ApplyBatch;
use super::inbox::{Input, InputReceiver};
use super::load::{Load, INPUT_QUEUE_MAX, UNCOMMITTED_ENTRIES_MAX};
use super::ports::{LogStorage, Outbox, PeerEvent, SnapshotSend, StorageError};
use super::proposal::{unframe_proposal, RequestId, Waiters};
use super::{NodeError, NodeStatus};

/// Whether the loop goes on after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

type ReadSender = oneshot::Sender<Result<u64, NodeError>>;

pub(crate) struct Driver<L: LogStorage, O: Outbox> {
    pub(crate) raft: Raft,
    /// Dropped with the driver, which tells `NodeHandle::stopped`.
    pub(crate) _running: watch::Sender<()>,
    /// Local proposals wait here; the driver fails those it cannot propose.
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) log: L,
    pub(crate) outbox: O,
    /// Bounded (`APPLY_QUEUE_BATCHES_MAX`): when the applier is that far
    /// behind, the raft thread waits for it.
    pub(crate) apply: std::sync::mpsc::SyncSender<ApplyBatch>,
    pub(crate) status: watch::Sender<NodeStatus>,
    /// ReadIndex batches in flight: request id → everyone waiting on it.
    pub(crate) pending_reads: HashMap<u64, Vec<ReadSender>>,
    /// Started at a random point for every run (see `RequestId`): Raft
    /// answers a read by its id alone, and an answer meant for an earlier
    /// run of this member can arrive after a restart.
    pub(crate) next_read_id: u64,
    /// Entries kept in the log after compaction for lagging followers.
    pub(crate) snapshot_catchup_entries: u64,
    /// Peers the outbox could not queue for in the current Ready (kept to
    /// reuse its allocation).
    pub(crate) unreachable: Vec<NodeId>,
    /// This member's own writes it appended as leader whose entries are not
    /// yet handed out for apply, oldest first. Bounded by
    /// `TRACKED_BATCHES_MAX`.
    pub(crate) proposed: VecDeque<ProposedBatch>,
    /// Membership changes appended as leader, answered once their index is
    /// handed out for apply: applied if the entry there is still theirs
    /// (same term), else lost like a write (`resolve_proposed`). Raft takes
    /// one change at a time, so this holds at most a few.
    pub(crate) proposed_conf_changes: Vec<(LogPosition, ConfChangeSender)>,
    pub(crate) load: Arc<Load>,
}

pub(crate) type ConfChangeSender = oneshot::Sender<Result<LogPosition, NodeError>>;

/// Local writes appended, as leader, in one round. Each took effect iff the
/// entry committed at its index has `term` (Raft's `LogPosition` rule): a
/// new leader may replace the suffix a deposed leader did not replicate.
pub(crate) struct ProposedBatch {
    term: u64,
    first_index: u64,
    /// Request ids at `first_index`, `first_index + 1`, ...
    ids: Vec<RequestId>,
}

/// Rounds of local writes tracked for `leader changed`. Batches resolve when
/// the commit index passes them; only a member whose log a new leader cut
/// short, with no new entries since, holds some longer. Past this bound the
/// oldest is dropped: its writes, if still waiting, time out instead
/// (outcome unknown, which is still true).
const TRACKED_BATCHES_MAX: usize = 4096;

/// What one round of the loop collected before proposing and reading.
#[derive(Default)]
pub(crate) struct Round {
    proposals: Proposals,
    reads: Vec<ReadSender>,
    /// Inputs taken: what had queued since the previous round.
    inputs: usize,
}

impl<L: LogStorage, O: Outbox> Driver<L, O> {
    pub(crate) fn run(mut self, mut input: InputReceiver) {
        self.publish_status();
        while let Some(first) = input.blocking_recv() {
            // Drain everything queued: one batch, one sync.
            let mut round = Round::default();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                if self.take(item, &mut round) == Flow::Stop {
                    return;
                }
                // At most one queue's worth per round: under a steady stream
                // of inputs the Ready must still come.
                if round.inputs < INPUT_QUEUE_MAX {
                    next = input.try_recv().ok();
                }
            }
            if self.finish(round) == Flow::Stop || self.load.stopping() {
                self.fail_pending(NodeError::Stopped);
                return;
            }
        }
    }

    /// One round over `inputs`, as `run` does for what it drained: tests
    /// drive the loop with it.
    #[cfg(test)]
    pub(crate) fn round(&mut self, inputs: impl IntoIterator<Item = Input>) -> Flow {
        let mut round = Round::default();
        for item in inputs {
            if self.take(item, &mut round) == Flow::Stop {
                return Flow::Stop;
            }
        }
        self.finish(round)
    }

    /// Takes one input into the round (or acts on it at once).
    fn take(&mut self, item: Input, round: &mut Round) -> Flow {
        round.inputs += 1;
        if item.is_client_input() {
            self.load.client_input_taken();
        }
        match item {
            Input::Tick => {
                self.raft.tick();
                self.forget_abandoned_reads();
            }
            Input::Peer(PeerEvent::Received(message)) => self.raft.step(message),
            Input::Peer(PeerEvent::Unreachable(peer)) => self.raft.report_unreachable(peer),
            Input::Peer(PeerEvent::SnapshotReceived(message)) => {
                // Behind every batch already handed out, so the applier
                // installs it in log order; it hands the message back to
                // this thread once the state holds the snapshot.
                let batch = ApplyBatch {
                    received: Some(message),
                    ..ApplyBatch::default()
                };
                if self.apply.send(batch).is_err() {
                    tracing::error!("the apply thread stopped; stopping the node");
                    self.fail_pending(NodeError::Stopped);
                    return Flow::Stop;
                }
            }
            Input::Propose { request_id, data } => round.proposals.add_local(request_id, data),
            Input::Peer(PeerEvent::Forwarded { from, proposals }) => {
                round.proposals.add_forwarded(from, proposals)
            }
            Input::Peer(PeerEvent::Refused { request_ids }) => {
                // Never proposed, so never applied: safe to retry.
                self.waiters.fail(request_ids, &NodeError::NoLeader);
            }
            Input::Peer(PeerEvent::NotDelivered { proposals }) => {
                let own = self.raft.id();
                let request_ids = proposals.iter().filter_map(|data| {
                    unframe_proposal(data)
                        .filter(|(origin, _)| origin.member == own)
                        .map(|(origin, _)| origin.request)
                });
                self.waiters.fail(request_ids, &NodeError::NoLeader);
            }
            Input::ReadIndex { done } => round.reads.push(done),
            Input::ProposeConfChange { change, done } => {
                match self.raft.propose_conf_change(change) {
                    Ok(position) => self.proposed_conf_changes.push((position, done)),
                    Err(error) => {
                        let _ = done.send(Err(node_error(error)));
                    }
                }
            }
            Input::TransferLeadership { target, done } => {
                let _ = done.send(self.raft.transfer_leadership(target).map_err(node_error));
            }
            Input::Peer(PeerEvent::SnapshotSent { peer, delivered }) => {
                self.raft.report_snapshot(peer, delivered)
            }
            Input::SnapshotTaken(snapshot) => {
                if let Err(error) = self.compact_to_snapshot(snapshot) {
                    tracing::error!(%error, "recording a snapshot failed; stopping the node");
                    self.fail_pending(NodeError::Stopped);
                    return Flow::Stop;
                }
            }
            Input::Stop => {
                self.fail_pending(NodeError::Stopped);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Proposes and reads what the round collected, then handles every
    /// Ready.
    fn finish(&mut self, round: Round) -> Flow {
        let inputs = round.inputs;
        self.propose_all(round.proposals);
        self.read_all(round.reads);
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            if let Err(error) = self.handle_ready(ready) {
                tracing::error!(%error, "log storage failed; stopping the node");
                self.fail_pending(NodeError::Stopped);
                return Flow::Stop;
            }
        }
        self.publish_status();
        self.load.set_committed(self.raft.commit_index(), inputs);
        Flow::Continue
    }

    /// Proposes this round's writes if this member leads; a follower
    /// forwards its own to the leader in one frame and refuses those
    /// forwarded to it (they were sent to a stale leader).
    fn propose_all(&mut self, proposals: Proposals) {
        let Proposals {
            local_ids,
            local,
            forwarded,
            forwarded_ids,
        } = proposals;
        if self.raft.role() != Role::Leader {
            for (origin, ids) in forwarded_ids {
                self.outbox.refuse(origin, ids);
            }
            if local.is_empty() {
                return;
            }
            let leader = self.raft.leader();
            if leader == 0 || leader == self.raft.id() {
                self.waiters.fail(local_ids, &NodeError::NoLeader);
            } else if !self.outbox.forward(leader, local) {
                self.raft.report_unreachable(leader);
                self.waiters.fail(local_ids, &NodeError::NoLeader);
            }
            return;
        }
        // This member's writes first: they take the batch's first indexes.
        let total = (local.len() + forwarded.len()) as u64;
        let uncommitted = self.raft.last_index() - self.raft.commit_index();
        if total > 0 && uncommitted + total > UNCOMMITTED_ENTRIES_MAX {
            // Never appended: the clients may retry (forwarded writes are
            // refused back to their origin, which answers `no leader`).
            self.waiters.fail(local_ids, &NodeError::TooManyRequests);
            for (origin, ids) in forwarded_ids {
                self.outbox.refuse(origin, ids);
            }
            return;
        }
        let mut data = local;
        data.extend(forwarded);
        if data.is_empty() {
            return;
        }
        match self.raft.propose_batch(data) {
            Ok(last) if !local_ids.is_empty() => {
                debug_assert!(last.index >= total, "a batch fits below its last index");
                self.track(ProposedBatch {
                    term: last.term,
                    first_index: last.index + 1 - total,
                    ids: local_ids,
                });
            }
            Ok(_) => {}
            Err(error) => {
                self.waiters.fail(local_ids, &node_error(error));
                for (origin, ids) in forwarded_ids {
                    self.outbox.refuse(origin, ids);
                }
            }
        }
    }

    fn track(&mut self, batch: ProposedBatch) {
        if self.proposed.len() == TRACKED_BATCHES_MAX {
            self.proposed.pop_front();
        }
        self.proposed.push_back(batch);
    }

    /// Entries up to `handed_out` have gone to the applier: writes of this
    /// member at those indexes whose entry is not theirs (another term)
    /// will never apply. Their clients hear `leader changed` now; those
    /// whose entry is theirs are answered by the applier.
    fn resolve_proposed(&mut self, handed_out: u64) {
        let raft = &self.raft;
        let mut lost = Vec::new();
        let mut unknown = Vec::new();
        self.proposed.retain(|batch| {
            let last = batch.first_index + batch.ids.len() as u64 - 1;
            if last > handed_out {
                return true;
            }
            for (index, &id) in (batch.first_index..).zip(&batch.ids) {
                if index < raft.first_index() {
                    // A snapshot from the leader covered it: its effect, if
                    // it had one, is in the snapshot, and the applier never
                    // sees the entry. Outcome unknown, not lost.
                    unknown.push(id);
                } else if raft.log_term(index) != Some(batch.term) {
                    lost.push(id);
                }
            }
            false
        });
        if !lost.is_empty() {
            tracing::debug!(
                writes = lost.len(),
                "writes lost to a change of leader (their entries were replaced)"
            );
            self.waiters.fail(lost, &NodeError::LeaderChanged);
        }
        if !unknown.is_empty() {
            self.waiters.fail(unknown, &NodeError::LeaderFailed);
        }
        let (resolved, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.proposed_conf_changes)
            .into_iter()
            .partition(|(position, _)| position.index <= handed_out);
        self.proposed_conf_changes = waiting;
        for (position, done) in resolved {
            let outcome = if position.index < self.raft.first_index() {
                Err(NodeError::LeaderFailed)
            } else if self.raft.log_term(position.index) == Some(position.term) {
                Ok(position)
            } else {
                Err(NodeError::LeaderChanged)
            };
            let _ = done.send(outcome);
        }
    }

    fn read_all(&mut self, reads: Vec<ReadSender>) {
        if reads.is_empty() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id = self.next_read_id.wrapping_add(1);
        match self.raft.read_index(id) {
            Ok(()) => {
                self.pending_reads.insert(id, reads);
            }
            Err(error) => {
                let error = node_error(error);
                for done in reads {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }

    fn handle_ready(&mut self, mut ready: Ready) -> Result<(), StorageError> {
        if let Some(soft) = ready.soft_state {
            if soft.role != Role::Leader {
                // A deposed leader's reads will never be answered; fail them
                // now rather than at their timeout.
                for (_, waiting) in self.pending_reads.drain() {
                    for done in waiting {
                        let _ = done.send(Err(NodeError::LeaderChanged));
                    }
                }
            }
        }
        // Published before any message leaves: a peer that learns a commit
        // index from us (and acknowledges a write at it) must never be ahead
        // of what this member's own status says it has committed.
        self.publish_status();
        self.send(std::mem::take(&mut ready.messages));
        self.log.persist(
            ready.hard_state,
            &ready.entries,
            ready.snapshot.as_ref().map(|snapshot| &snapshot.metadata),
        )?;
        self.send(std::mem::take(&mut ready.persisted_messages));
        for read in ready.read_states.drain(..) {
            if let Some(waiting) = self.pending_reads.remove(&read.request_id) {
                for done in waiting {
                    let _ = done.send(Ok(read.index));
                }
            }
        }
        if ready.snapshot.is_some() || !ready.committed_entries.is_empty() {
            let batch = ApplyBatch {
                received: None,
                snapshot: ready.snapshot.take(),
                entries: std::mem::take(&mut ready.committed_entries),
                conf_state: self.raft.conf_state().clone(),
            };
            if self.apply.send(batch).is_err() {
                return Err(StorageError("the apply thread stopped".to_string()));
            }
            if !self.proposed.is_empty() || !self.proposed_conf_changes.is_empty() {
                self.resolve_proposed(self.raft.applied_index());
            }
        }
        self.raft.advance(ready);
        Ok(())
    }

    /// Hands `messages` to the outbox: snapshots one by one (their data
    /// travels on a call of its own), the rest as one batch. Tells Raft at
    /// once about peers the outbox could not reach.
    fn send(&mut self, mut messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        if messages.iter().any(is_snapshot) {
            let mut snapshots = Vec::new();
            messages.retain(|message| {
                if is_snapshot(message) {
                    snapshots.push(message.clone());
                    false
                } else {
                    true
                }
            });
            for message in snapshots {
                if self.outbox.send_snapshot(&message) == SnapshotSend::Failed {
                    self.raft.report_snapshot(message.to, false);
                }
            }
        }
        let mut unreachable = std::mem::take(&mut self.unreachable);
        self.outbox.send(messages, &mut unreachable);
        for peer in unreachable.drain(..) {
            self.raft.report_unreachable(peer);
        }
        self.unreachable = unreachable;
    }

    /// The state machine's state at `snapshot` is durable: tell Raft (so it
    /// can send it to followers too far behind), mark it in the log, and
    /// drop the log before it but for `snapshot_catchup_entries`, which a
    /// slow follower can still be sent instead of the whole snapshot.
    fn compact_to_snapshot(&mut self, snapshot: SnapshotMetadata) -> Result<(), StorageError> {
        if snapshot.index < self.raft.first_index().saturating_sub(1) {
            // A snapshot from the leader overtook it; nothing to do.
            return Ok(());
        }
        let created = match self.raft.create_snapshot(snapshot.index, Bytes::new()) {
            Ok(created) => created,
            Err(error) => {
                tracing::debug!(%error, index = snapshot.index, "not recording a snapshot Raft has passed");
                return Ok(());
            }
        };
        debug_assert_eq!(
            created.metadata, snapshot,
            "the applier's snapshot metadata must match Raft's view of the same index"
        );
        self.log.compacted(&created.metadata)?;
        let compact_to = snapshot.index.saturating_sub(self.snapshot_catchup_entries);
        if compact_to > 0 {
            self.raft
                .compact_log(compact_to)
                .map_err(|error| StorageError(error.to_string()))?;
        }
        tracing::info!(
            index = snapshot.index,
            term = snapshot.term,
            log_first_index = self.raft.first_index(),
            "snapshot taken; log compacted"
        );
        Ok(())
    }

    /// Drops ReadIndex batches nobody waits for any more (their handlers
    /// timed out or went away): an answer that never comes (a follower's
    /// request lost on the way to the leader) must not keep them forever.
    fn forget_abandoned_reads(&mut self) {
        self.pending_reads
            .retain(|_, waiting| waiting.iter().any(|done| !done.is_closed()));
    }

    fn fail_pending(&mut self, error: NodeError) {
        for (_, waiting) in self.pending_reads.drain() {
            for done in waiting {
                let _ = done.send(Err(error.clone()));
            }
        }
        // Writes too: their clients hear `server stopped` now rather than a
        // timeout later (both leave the outcome unknown).
        self.waiters.fail_all(&error);
        for (_, done) in self.proposed_conf_changes.drain(..) {
            let _ = done.send(Err(error.clone()));
        }
    }

    fn publish_status(&self) {
        let status = NodeStatus {
            leader: self.raft.leader(),
            term: self.raft.term(),
            role_is_leader: self.raft.role() == Role::Leader,
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

fn is_snapshot(message: &Message) -> bool {
    matches!(message.body, MessageBody::InstallSnapshot { .. })
}

pub(crate) fn node_error(error: RaftError) -> NodeError {
    match error {
        RaftError::NoLeader => NodeError::NoLeader,
        RaftError::NotLeader { leader } => NodeError::NotLeader { leader },
        RaftError::TransferInProgress { .. } => NodeError::LeaderChanged,
        other => NodeError::Rejected(other.to_string()),
    }
}

/// The writes one round of the raft loop proposes: this member's, then
/// those peers forwarded to it.
#[derive(Default)]
struct Proposals {
    /// Request ids of `local`, in the same order.
    local_ids: Vec<RequestId>,
    /// Framed entry data of this member's proposals.
    local: Vec<Bytes>,
    /// Framed entry data peers forwarded.
    forwarded: Vec<Bytes>,
    /// Forwarded request ids by origin, to refuse them if they cannot be
    /// proposed.
    forwarded_ids: Vec<(NodeId, Vec<RequestId>)>,
}

impl Proposals {
    fn add_local(&mut self, request_id: RequestId, data: Bytes) {
        self.local_ids.push(request_id);
        self.local.push(data);
    }

    fn add_forwarded(&mut self, from: NodeId, proposals: Vec<Bytes>) {
        let mut ids = Vec::with_capacity(proposals.len());
        for data in proposals {
            match unframe_proposal(&data) {
                Some((origin, _)) if origin.member == from => {
                    ids.push(origin.request);
                    self.forwarded.push(data);
                }
                // Only the origin could ever claim the result; an entry
                // claiming another origin would wake nobody, or the wrong
                // waiter.
                _ => tracing::warn!(
                    from = format!("{from:x}"),
                    "dropping a forwarded proposal that does not name its sender as origin"
                ),
            }
        }
        if !ids.is_empty() {
            self.forwarded_ids.push((from, ids));
        }
    }
}
