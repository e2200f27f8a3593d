//! The apply thread: feeds committed entries to the state machine in log
//! order, answers the proposers waiting on them, and every `snapshot_count`
//! applied entries has the state machine write a snapshot. It never decides
//! what is committed and never answers a waiter for an entry it did not
//! apply.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use raft::{ConfState, Entry, NodeId, Snapshot, SnapshotMetadata};
use tokio::sync::watch;

use super::inbox::{Input, InputSender};
use super::load::Load;
use super::ports::{ImageFixed, StateMachine, StorageError};
use super::proposal::{unframe_proposal, Waiters, PROPOSAL_HEADER_BYTES};

/// Committed work for the applier, in log order.
pub(crate) struct ApplyBatch {
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
    /// Term of the last applied entry (or installed snapshot).
    pub(crate) applied_term: u64,
    /// The snapshot being written, if any: one at a time.
    pub(crate) snapshot_writer: Option<JoinHandle<()>>,
    pub(crate) load: Arc<Load>,
}

impl Applier {
    pub(crate) fn run<S: StateMachine>(mut self, mut state_machine: S) {
        while let Ok(batch) = self.batches.recv() {
            if let Err(error) = self.apply_batch(&mut state_machine, &batch) {
                // The state machine could not record committed work:
                // continuing would diverge from the other members.
                tracing::error!(%error, "the state machine failed; stopping");
                break;
            }
            let applied = state_machine.applied_index();
            let writing = self
                .snapshot_writer
                .as_ref()
                .is_some_and(|writer| !writer.is_finished());
            if !writing && applied >= self.last_snapshot_index.saturating_add(self.snapshot_count) {
                let snapshot = SnapshotMetadata {
                    index: applied,
                    term: self.applied_term,
                    conf_state: batch.conf_state.clone(),
                };
                if let Err(error) = self.start_snapshot(&mut state_machine, snapshot) {
                    tracing::error!(%error, index = applied, "starting a snapshot failed; stopping");
                    break;
                }
                self.last_snapshot_index = applied;
            }
        }
        // A snapshot being written finishes before the member stops.
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
    }

    /// Fixes the image now and writes it on a thread of its own; the raft
    /// thread hears of it once it is durable (or failed).
    fn start_snapshot<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        snapshot: SnapshotMetadata,
    ) -> Result<(), StorageError> {
        if let Some(previous) = self.snapshot_writer.take() {
            let _ = previous.join();
        }
        let job = state_machine.snapshot_job(&snapshot)?;
        let (fixed_tx, fixed_rx) = std::sync::mpsc::sync_channel(1);
        let raft_input = self.raft_input.clone();
        let writer = std::thread::Builder::new()
            .name("raftkv-snapshot".to_string())
            .spawn(move || {
                let started = Instant::now();
                let outcome = match job(ImageFixed(fixed_tx)) {
                    Ok(()) => {
                        tracing::debug!(
                            index = snapshot.index,
                            millis = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                        Input::SnapshotTaken(snapshot)
                    }
                    Err(error) => Input::SnapshotFailed(error.to_string()),
                };
                // A plain thread: it may wait for room in the queue.
                let _ = raft_input.blocking_send(outcome);
            })
            .map_err(|error| StorageError(format!("spawning the snapshot writer: {error}")))?;
        self.snapshot_writer = Some(writer);
        // The job copies the state on its own thread, so the copy's memory
        // is that thread's and goes back to the system when it ends (freed
        // from another thread, the allocator kept it: ~35 MB per 100,000
        // keys stayed resident).
        let _ = fixed_rx.recv();
        Ok(())
    }

    pub(crate) fn apply_batch<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        batch: &ApplyBatch,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = &batch.snapshot {
            state_machine.install_snapshot(&snapshot.metadata)?;
            tracing::info!(
                index = snapshot.metadata.index,
                term = snapshot.metadata.term,
                "installed a snapshot from the leader"
            );
            self.applied_term = snapshot.metadata.term;
            self.last_snapshot_index = snapshot.metadata.index;
            self.applied.send_replace(state_machine.applied_index());
            self.load.set_applied(state_machine.applied_index());
        }
        for entry in &batch.entries {
            let framed = match entry.kind {
                raft::EntryKind::Normal => unframe_proposal(&entry.data),
                raft::EntryKind::ConfChange => None,
            };
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
            self.applied_term = entry.term;
            if let Some((origin, _)) = framed {
                if origin.member == self.member_id {
                    self.waiters.answer(origin.request, Ok(result));
                }
            }
        }
        // Once per batch: every send wakes every reader waiting on it.
        if let Some(last) = batch.entries.last() {
            self.applied.send_replace(last.index);
            self.load.set_applied(last.index);
        }
        Ok(())
    }
}
