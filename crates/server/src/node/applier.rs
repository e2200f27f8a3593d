//! The apply thread: feeds committed entries to the state machine in log
//! order, commits each batch as one step of the stored state, answers the
//! proposers waiting on them, and every `snapshot_count` applied entries
//! makes the state durable so the raft thread can drop the log before it.
//! It never decides what is committed and never answers a waiter for an
//! entry it did not apply.

use std::sync::Arc;

use bytes::Bytes;
use raft::{ConfState, Entry, Message, MessageBody, NodeId, Snapshot, SnapshotMetadata};
use tokio::sync::watch;

use super::inbox::{Input, InputSender};
use super::load::Load;
use super::ports::{PeerEvent, StateMachine, StorageError};
use super::proposal::{unframe_proposal, Waiters, PROPOSAL_HEADER_BYTES};
use super::NodeError;

/// Committed work for the applier, in log order.
#[derive(Default)]
pub(crate) struct ApplyBatch {
    /// An `InstallSnapshot` whose data the peer side stored aside: install
    /// it, then hand the message to Raft.
    pub(crate) received: Option<Message>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) entries: Vec<Entry>,
    /// Membership as of the last entry of the batch (Raft applies a
    /// configuration change when it hands the entry out).
    pub(crate) conf_state: ConfState,
}

pub(crate) struct Applier {
    pub(crate) batches: std::sync::mpsc::Receiver<ApplyBatch>,
    pub(crate) applied: watch::Sender<u64>,
    pub(crate) waiters: Arc<Waiters>,
    /// Only entries this member proposed have waiters here.
    pub(crate) member_id: NodeId,
    pub(crate) raft_input: InputSender,
    pub(crate) snapshot_count: u64,
    pub(crate) last_snapshot_index: u64,
    /// Index and term of the last entry Raft handed out (applied or
    /// skipped), or of the snapshot it recorded.
    pub(crate) handed_out: (u64, u64),
    pub(crate) load: Arc<Load>,
}

impl Applier {
    pub(crate) fn run<S: StateMachine>(mut self, mut state_machine: S) {
        while let Ok(batch) = self.batches.recv() {
            if let Err(error) = self.apply_batch(&mut state_machine, batch) {
                // The state machine could not record committed work:
                // continuing would diverge from the other members.
                tracing::error!(%error, "the state machine failed; stopping");
                break;
            }
        }
    }

    /// Every `snapshot_count` entries handed out: the state is made durable
    /// (an fsync of the engine, a few milliseconds: no image is copied),
    /// then the raft thread may compact the log up to the last entry
    /// handed out, which the state reflects.
    fn maybe_snapshot<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        conf_state: &ConfState,
    ) -> Result<(), StorageError> {
        let (index, term) = self.handed_out;
        if index < self.last_snapshot_index.saturating_add(self.snapshot_count) {
            return Ok(());
        }
        state_machine.persist()?;
        self.last_snapshot_index = index;
        let snapshot = SnapshotMetadata {
            index,
            term,
            conf_state: conf_state.clone(),
        };
        self.tell_raft(Input::SnapshotTaken(snapshot))
    }

    /// Queues `input` for the raft thread. That thread may itself be
    /// waiting for room in the apply queue, so this one never blocks on a
    /// full input queue: a thread of its own waits for room instead.
    fn tell_raft(&self, input: Input) -> Result<(), StorageError> {
        match self.raft_input.try_send(input) {
            Ok(()) => Ok(()),
            // The node is stopping: nothing more to tell.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(input)) => {
                let raft_input = self.raft_input.clone();
                std::thread::Builder::new()
                    .name("raftkv-apply-report".to_string())
                    .spawn(move || {
                        let _ = raft_input.blocking_send(input);
                    })
                    .map(|_| ())
                    .map_err(|error| {
                        StorageError(format!("spawning a thread to report to Raft: {error}"))
                    })
            }
        }
    }

    /// Installs a snapshot the peer side received, then lets Raft see its
    /// message (see [`StateMachine::install_received`]).
    fn install_received<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        message: Message,
    ) -> Result<(), StorageError> {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return Ok(());
        };
        if !state_machine.install_received(&snapshot.metadata)? {
            return Ok(());
        }
        self.applied.send_replace(state_machine.applied_index());
        self.load.set_applied(state_machine.applied_index());
        self.tell_raft(Input::Peer(PeerEvent::Received(message)))
    }

    pub(crate) fn apply_batch<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        batch: ApplyBatch,
    ) -> Result<(), StorageError> {
        if let Some(message) = batch.received {
            self.install_received(state_machine, message)?;
        }
        if let Some(snapshot) = &batch.snapshot {
            state_machine.install_snapshot(&snapshot.metadata)?;
            tracing::info!(
                index = snapshot.metadata.index,
                term = snapshot.metadata.term,
                "recorded a snapshot from the leader"
            );
            self.handed_out = (snapshot.metadata.index, snapshot.metadata.term);
            self.last_snapshot_index = snapshot.metadata.index;
            self.applied.send_replace(state_machine.applied_index());
            self.load.set_applied(state_machine.applied_index());
        }
        let mut answers = Vec::new();
        for entry in &batch.entries {
            let framed = match entry.kind {
                raft::EntryKind::Normal => unframe_proposal(&entry.data),
                raft::EntryKind::ConfChange => None,
            };
            self.handed_out = (entry.index, entry.term);
            let own = framed
                .filter(|(origin, _)| origin.member == self.member_id)
                .map(|(origin, _)| origin.request);
            if state_machine.reflects(entry.index) {
                // Applied before this run, or by a snapshot installed ahead
                // of the log: its result is not known here.
                if let Some(request) = own {
                    self.waiters.answer(request, Err(NodeError::LeaderFailed));
                }
                continue;
            }
            let result = match (entry.kind, framed) {
                (raft::EntryKind::Normal, Some(_)) => state_machine.apply(
                    entry.index,
                    entry.term,
                    entry.data.slice(PROPOSAL_HEADER_BYTES..),
                )?,
                // A new leader's empty entry changes nothing but the index.
                (raft::EntryKind::Normal, None) => {
                    state_machine.apply(entry.index, entry.term, Bytes::new())?
                }
                (raft::EntryKind::ConfChange, _) => {
                    state_machine.apply_conf_change(entry)?;
                    Bytes::new()
                }
            };
            if let Some(request) = own {
                answers.push((request, result));
            }
        }
        if batch.entries.is_empty() {
            return Ok(());
        }
        // One atomic step of the stored state per batch, before anyone
        // hears of an entry in it.
        state_machine.commit()?;
        for (request, result) in answers {
            self.waiters.answer(request, Ok(result));
        }
        // Once per batch: every send wakes every reader waiting on it.
        let applied = state_machine.applied_index().max(self.handed_out.0);
        self.applied.send_replace(applied);
        self.load.set_applied(applied);
        self.maybe_snapshot(state_machine, &batch.conf_state)
    }
}
