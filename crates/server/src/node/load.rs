//! How much work a member holds, and (with its bounds) when it refuses
//! more: the one place that decides `too many requests`.
//!
//! Every queue between a client and the state machine has a named bound:
//!
//! | queue | bound | when full |
//! |---|---|---|
//! | proposals waiting for their entry (waiters) | [`PENDING_PROPOSALS_MAX`] | the write is refused |
//! | linearizable reads in flight | [`PENDING_READS_MAX`] | the read is refused |
//! | client inputs in the raft thread's input queue | [`CLIENT_INPUTS_MAX`] | the request is refused |
//! | the raft thread's input queue | [`INPUT_QUEUE_MAX`] | peer events, ticks and snapshot reports wait for room |
//! | a leader's entries appended but not committed | [`UNCOMMITTED_ENTRIES_MAX`] | the round's writes are refused (forwarded ones back to their origin) |
//! | committed entries not yet applied | [`APPLY_GAP_MAX`] (etcd's 5,000) | writes are refused until the applier catches up |
//! | batches handed to the applier | [`APPLY_QUEUE_BATCHES_MAX`] | the raft thread waits (the member slows down rather than buffer) |
//!
//! A refused request was never queued, so never proposed: `too many
//! requests` (ResourceExhausted) tells the client it may retry after a
//! backoff. Writes other members forward to a leader are bounded by those
//! members' own limits. The peer side's queues have their bounds in `peer/`.
//!
//! This module must never make the write path wait: admission is two
//! atomic loads for a write (plus the waiter map's existing lock) and one
//! atomic add for a read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::NodeError;

/// Writes are refused while the state machine trails the commit index by
/// more than this many entries (etcd's `maxGapBetweenApplyAndCommitIndex`):
/// a member that cannot apply as fast as it commits must not take more.
pub const APPLY_GAP_MAX: u64 = 5_000;

/// Proposals of this member waiting for their entry to apply. Each holds a
/// waiter (and its client's request) until then.
pub const PENDING_PROPOSALS_MAX: usize = 10_000;

/// Linearizable reads of this member waiting for their ReadIndex and for
/// the state machine to reach it.
pub const PENDING_READS_MAX: usize = 10_000;

/// Room in the input queue beyond what clients can fill, for peer events,
/// ticks and snapshot reports: those wait for room (peer streams then slow
/// down under HTTP/2 flow control) and are never refused.
pub const PEER_EVENTS_HEADROOM: usize = 1_024;

/// Client inputs (proposals, reads, conf changes, leadership transfers)
/// queued for the raft thread at once. Counted from queueing until the raft
/// thread takes them, whatever their clients do meanwhile: a client that
/// gives up gives back its waiter, not its place in the queue.
pub const CLIENT_INPUTS_MAX: usize = PENDING_PROPOSALS_MAX + PENDING_READS_MAX;

/// The raft thread's input queue: client inputs never take the headroom.
pub const INPUT_QUEUE_MAX: usize = CLIENT_INPUTS_MAX + PEER_EVENTS_HEADROOM;

/// Entries a leader holds appended but not yet committed (its own writes
/// and those forwarded to it). Past this, a round's writes are refused
/// rather than appended: followers that do not keep up, or clients that
/// give up and send more, must not grow the log without bound. (Bytes are
/// bounded through it: each entry is at most the request size limit.)
pub const UNCOMMITTED_ENTRIES_MAX: u64 = PENDING_PROPOSALS_MAX as u64;

/// Batches of committed entries the raft thread may hand the applier ahead
/// of it; past this the raft thread waits for the applier (what `etcd`'s
/// raft loop does on its apply channel). The apply gap above normally
/// refuses writes long before.
pub const APPLY_QUEUE_BATCHES_MAX: usize = 1_024;

/// Counters the raft thread, the applier and the handles share.
#[derive(Default)]
pub(crate) struct Load {
    /// Raft's commit index as of the raft thread's last round.
    committed: AtomicU64,
    /// The state machine's applied index as of the applier's last batch.
    applied: AtomicU64,
    /// Linearizable reads in flight (held by [`ReadSlot`]s).
    reads: AtomicUsize,
    /// Client inputs in the raft thread's queue.
    client_inputs: AtomicUsize,
    /// Set by `Node::stop`: the raft thread ends after its current round.
    stopping: std::sync::atomic::AtomicBool,
    /// High-water marks, for tests and operators.
    most_reads: AtomicUsize,
    most_input: AtomicUsize,
    most_apply_gap: AtomicU64,
}

/// What a member holds now, and the most it held since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub pending_proposals: usize,
    pub most_pending_proposals: usize,
    pub pending_reads: usize,
    pub most_pending_reads: usize,
    /// Inputs the raft thread took in one round (what had queued).
    pub most_input_queued: usize,
    pub apply_gap: u64,
    pub most_apply_gap: u64,
}

impl Load {
    pub(crate) fn new(applied: u64) -> Arc<Load> {
        let load = Load::default();
        load.applied.store(applied, Ordering::Relaxed);
        load.committed.store(applied, Ordering::Relaxed);
        Arc::new(load)
    }

    /// Called by the raft thread once per round.
    pub(crate) fn set_committed(&self, committed: u64, inputs_taken: usize) {
        self.committed.store(committed, Ordering::Relaxed);
        if inputs_taken > self.most_input.load(Ordering::Relaxed) {
            self.most_input.store(inputs_taken, Ordering::Relaxed);
        }
        let gap = self.apply_gap();
        if gap > self.most_apply_gap.load(Ordering::Relaxed) {
            self.most_apply_gap.store(gap, Ordering::Relaxed);
        }
    }

    /// Called by the applier once per batch.
    pub(crate) fn set_applied(&self, applied: u64) {
        self.applied.store(applied, Ordering::Relaxed);
    }

    fn apply_gap(&self) -> u64 {
        self.committed
            .load(Ordering::Relaxed)
            .saturating_sub(self.applied.load(Ordering::Relaxed))
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Takes a place for a client input about to be queued, or refuses it
    /// when [`CLIENT_INPUTS_MAX`] are queued; the raft thread gives it back
    /// ([`Load::client_input_taken`]) when it takes the input.
    pub(crate) fn admit_client_input(&self) -> Result<(), NodeError> {
        let queued = self.client_inputs.fetch_add(1, Ordering::Relaxed) + 1;
        if queued > CLIENT_INPUTS_MAX {
            self.client_inputs.fetch_sub(1, Ordering::Relaxed);
            return Err(NodeError::TooManyRequests);
        }
        Ok(())
    }

    pub(crate) fn client_input_taken(&self) {
        let before = self.client_inputs.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "a client input taken that was never admitted");
    }

    /// Whether a write may be queued now: not while the state machine
    /// trails the commit index by more than [`APPLY_GAP_MAX`].
    pub(crate) fn admit_write(&self) -> Result<(), NodeError> {
        if self.apply_gap() > APPLY_GAP_MAX {
            return Err(NodeError::TooManyRequests);
        }
        Ok(())
    }

    pub(crate) fn report(
        &self,
        pending_proposals: usize,
        most_pending_proposals: usize,
    ) -> LoadReport {
        LoadReport {
            pending_proposals,
            most_pending_proposals,
            pending_reads: self.reads.load(Ordering::Relaxed),
            most_pending_reads: self.most_reads.load(Ordering::Relaxed),
            most_input_queued: self.most_input.load(Ordering::Relaxed),
            apply_gap: self.apply_gap(),
            most_apply_gap: self.most_apply_gap.load(Ordering::Relaxed),
        }
    }
}

/// A linearizable read's place in the bound; given back when dropped.
pub(crate) struct ReadSlot(Arc<Load>);

impl ReadSlot {
    /// A slot, or `TooManyRequests` if [`PENDING_READS_MAX`] reads are in
    /// flight.
    pub(crate) fn take(load: &Arc<Load>) -> Result<ReadSlot, NodeError> {
        let reads = load.reads.fetch_add(1, Ordering::Relaxed) + 1;
        // Constructed first, so that a refusal gives the slot back too.
        let slot = ReadSlot(load.clone());
        if reads > PENDING_READS_MAX {
            return Err(NodeError::TooManyRequests);
        }
        load.most_reads.fetch_max(reads, Ordering::Relaxed);
        Ok(slot)
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        self.0.reads.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_while_the_applier_trails_by_more_than_the_gap() {
        let load = Load::new(100);
        load.set_committed(100 + APPLY_GAP_MAX, 1);
        assert_eq!(load.admit_write(), Ok(()));
        load.set_committed(100 + APPLY_GAP_MAX + 1, 1);
        assert_eq!(load.admit_write(), Err(NodeError::TooManyRequests));
        load.set_applied(101);
        assert_eq!(load.admit_write(), Ok(()));
        assert_eq!(load.report(0, 0).most_apply_gap, APPLY_GAP_MAX + 1);
    }

    #[test]
    fn reads_past_the_bound_are_refused_and_a_finished_read_frees_its_slot() {
        let load = Load::new(0);
        let mut slots: Vec<ReadSlot> = (0..PENDING_READS_MAX)
            .map(|_| ReadSlot::take(&load).expect("within the bound"))
            .collect();
        assert!(matches!(
            ReadSlot::take(&load),
            Err(NodeError::TooManyRequests)
        ));
        assert_eq!(load.report(0, 0).pending_reads, PENDING_READS_MAX);
        slots.pop();
        assert!(ReadSlot::take(&load).is_ok());
        drop(slots);
        assert_eq!(load.report(0, 0).pending_reads, 0);
        assert_eq!(load.report(0, 0).most_pending_reads, PENDING_READS_MAX);
    }
}
