//! What a leader knows about each follower's log, and how fast it may send.

use std::collections::VecDeque;

/// How the leader is currently replicating to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The leader does not know where the follower's log matches. It sends one
    /// append at a time and waits for the answer before the next.
    Probe,
    /// The follower's log is known to match; appends stream optimistically,
    /// bounded by the in-flight window.
    Replicate,
    /// The follower needs a snapshot; nothing else is sent until it is
    /// acknowledged or reported failed.
    Snapshot,
}

/// Appends sent and not yet acknowledged, bounded by count and by bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index of the message, payload bytes), oldest first.
    messages: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        assert!(max_count > 0, "in-flight window must allow one message");
        Inflights {
            messages: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn is_full(&self) -> bool {
        self.messages.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub fn add(&mut self, last_index: u64, bytes: u64) {
        debug_assert!(
            self.messages
                .back()
                .is_none_or(|&(last, _)| last < last_index),
            "in-flight appends must have increasing last indexes"
        );
        self.messages.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Forgets every message acknowledged by an ack of `index`.
    pub fn free_up_to(&mut self, index: u64) {
        while let Some(&(last, bytes)) = self.messages.front() {
            if last > index {
                break;
            }
            self.messages.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Forgets the oldest message. A heartbeat answer from a follower whose
    /// window is full means it is alive but the appends filling the window
    /// may all have been lost: freeing one slot lets an append through, whose
    /// answer (or rejection) resynchronizes the follower.
    pub fn free_first_one(&mut self) {
        if let Some((_, bytes)) = self.messages.pop_front() {
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }

    pub fn count(&self) -> usize {
        self.messages.len()
    }
}

/// A leader's view of one member.
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (and durable) on the member.
    pub match_index: u64,
    /// Index of the next entry to send.
    pub next_index: u64,
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot sent.
    pub pending_snapshot: u64,
    /// Ticks spent in `Snapshot` state; past a bound the leader gives up
    /// waiting for an acknowledgement that may have been lost and probes.
    pub snapshot_elapsed_ticks: u64,
    /// In `Probe` state: an append is out and unanswered.
    pub probe_sent: bool,
    /// The member answered something since the last CheckQuorum round.
    pub recent_active: bool,
    pub is_learner: bool,
    pub inflights: Inflights,
}

impl Progress {
    pub fn new(next_index: u64, inflights: Inflights, is_learner: bool) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            snapshot_elapsed_ticks: 0,
            probe_sent: false,
            recent_active: false,
            is_learner,
            inflights,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.snapshot_elapsed_ticks = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        // Coming back from a snapshot, the follower has at least the snapshot.
        let resume_from = if self.state == ProgressState::Snapshot {
            (self.match_index + 1).max(self.pending_snapshot + 1)
        } else {
            self.match_index + 1
        };
        self.reset_state(ProgressState::Probe);
        self.next_index = resume_from;
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Records an acknowledgement of `index`. Returns false for a stale one.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        debug_assert!(
            self.match_index < self.next_index,
            "match must stay below next"
        );
        updated
    }

    /// Handles a rejected append of `rejected` (its `prev_log_index`), moving
    /// `next_index` back to just after `hint_index`. Returns false if the
    /// rejection is stale and must be ignored.
    pub fn maybe_decrease_to(&mut self, rejected: u64, hint_index: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        // In probe state only the answer to the last probe counts.
        if self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = (rejected.min(hint_index + 1)).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold further appends to this member.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_by_count_and_bytes() {
        let mut by_count = Inflights::new(2, u64::MAX);
        by_count.add(1, 10);
        assert!(!by_count.is_full());
        by_count.add(2, 10);
        assert!(by_count.is_full());
        by_count.free_up_to(1);
        assert!(!by_count.is_full());

        let mut by_bytes = Inflights::new(100, 25);
        by_bytes.add(1, 20);
        assert!(!by_bytes.is_full());
        by_bytes.add(5, 10);
        assert!(by_bytes.is_full());
        by_bytes.free_up_to(5);
        assert_eq!(by_bytes.count(), 0);
    }

    #[test]
    fn probe_rejection_jumps_to_the_hint() {
        let mut progress = Progress::new(51, Inflights::new(4, u64::MAX), false);
        assert!(progress.maybe_decrease_to(50, 10));
        assert_eq!(progress.next_index, 11);
        assert!(
            !progress.maybe_decrease_to(50, 3),
            "a second answer to the same probe is stale"
        );
    }

    #[test]
    fn replicate_rejection_falls_back_to_match() {
        let mut progress = Progress::new(1, Inflights::new(4, u64::MAX), false);
        progress.maybe_update(5);
        progress.become_replicate();
        progress.next_index = 9;
        assert!(
            !progress.maybe_decrease_to(4, 0),
            "rejection below match is stale"
        );
        assert!(progress.maybe_decrease_to(7, 0));
        assert_eq!(progress.next_index, 6);
    }
}
