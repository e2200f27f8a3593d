//! The in-memory view of the replicated log that the algorithm works on.
//!
//! `RaftLog` holds every entry after the last compaction point, and tracks
//! four positions over them:
//!
//! ```text
//!   offset ≤ applied ≤ committed ≤ last_index
//!   offset ≤ persisted ≤ last_index
//!   unstable_from ≤ last_index + 1
//! ```
//!
//! * `offset` is the index of the last compacted entry (the snapshot index);
//!   its term is remembered so that `term(offset)` stays answerable.
//! * `persisted` is the last index the driver has confirmed durable.
//! * `unstable_from` is the first index not yet handed to the driver for
//!   persistence.
//!
//! It owns no I/O: the driver persists what `Ready` hands out and reports back
//! through `advance`.

use std::collections::VecDeque;

use crate::types::{Entry, Snapshot};

#[derive(Debug)]
pub struct RaftLog {
    entries: VecDeque<Entry>,
    offset: u64,
    offset_term: u64,
    committed: u64,
    applied: u64,
    persisted: u64,
    unstable_from: u64,
    /// A snapshot received from the leader and not yet handed out.
    pending_snapshot: Option<Snapshot>,
}

impl RaftLog {
    /// A log whose first `offset` entries are covered by a snapshot and whose
    /// later `entries` are already durable.
    pub fn restore(offset: u64, offset_term: u64, entries: Vec<Entry>, committed: u64) -> Self {
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                offset + 1 + position as u64,
                "restored log entries must be contiguous after the snapshot index {offset}"
            );
        }
        let last_index = offset + entries.len() as u64;
        let committed = committed.clamp(offset, last_index);
        RaftLog {
            entries: entries.into(),
            offset,
            offset_term,
            committed,
            applied: offset,
            persisted: last_index,
            unstable_from: last_index + 1,
            pending_snapshot: None,
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn first_index(&self) -> u64 {
        self.offset + 1
    }

    pub fn last_index(&self) -> u64 {
        self.offset + self.entries.len() as u64
    }

    pub fn last_term(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.offset_term, |entry| entry.term)
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// The term of the entry at `index`, or `None` if it was compacted away or
    /// is beyond the end of the log.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.offset {
            return None;
        }
        self.entries.get((index - self.offset - 1) as usize)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft's election restriction (§5.4.1): a log is at least as up to date
    /// as ours if its last term is higher, or equal with an index as high.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries in `[from, last_index]`, at least one if any exist, and no more
    /// than `max_bytes` beyond the first. `None` if `from` was compacted.
    pub fn entries_from(&self, from: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        if from <= self.offset {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = from;
        while let Some(entry) = self.entry(index) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index += 1;
        }
        Some(out)
    }

    /// The largest index `≤ index` whose term is `≤ term`, or the compaction
    /// point if the search runs into it. Used on both sides of a rejected
    /// append to skip a divergent term at a time.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut index = index.min(self.last_index());
        while index > self.offset {
            match self.term(index) {
                Some(found) if found > term => index -= 1,
                _ => break,
            }
        }
        index
    }

    /// Appends entries that follow the last one. Entries may start at or
    /// before the last index: the suffix from there is replaced.
    ///
    /// # Panics
    /// If the entries would overwrite a committed entry or leave a gap; both
    /// mean the caller broke Raft's rules.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index > self.committed,
            "appending at index {} would overwrite committed entries (committed = {})",
            first.index,
            self.committed
        );
        assert!(
            first.index <= self.last_index() + 1,
            "appending at index {} leaves a gap after last index {}",
            first.index,
            self.last_index()
        );
        self.truncate_from(first.index);
        for entry in entries {
            debug_assert_eq!(
                entry.index,
                self.last_index() + 1,
                "entries must be contiguous"
            );
            self.entries.push_back(entry.clone());
        }
    }

    fn truncate_from(&mut self, index: u64) {
        if index > self.last_index() {
            return;
        }
        let keep = (index - self.offset - 1) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(index - 1);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// The follower side of AppendEntries. Returns the index of the last new
    /// entry if (`prev_index`, `prev_term`) matches our log.
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        entries: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        // Skip entries we already have with the same term: re-appending them
        // would needlessly truncate and re-persist.
        // Entries the snapshot covers are committed and match by definition.
        let first_new = entries.iter().position(|entry| {
            entry.index > self.offset && !self.match_term(entry.index, entry.term)
        });
        if let Some(position) = first_new {
            self.append(&entries[position..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// Raises the commit index; never lowers it.
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit index {index} is beyond the last log index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Entries to hand out for persistence, and marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from;
        let last = self.last_index();
        if from > last {
            return Vec::new();
        }
        let out: Vec<Entry> = (from..=last)
            .filter_map(|index| self.entry(index).cloned())
            .collect();
        self.unstable_from = last + 1;
        out
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index() || self.pending_snapshot.is_some()
    }

    /// Records that entries up to (`index`, `term`) are durable. Ignored if the
    /// entry at `index` was replaced meanwhile (a later Ready persists that).
    pub fn persisted_to(&mut self, index: u64, term: u64) {
        if self.match_term(index, term) && index > self.persisted && index < self.unstable_from {
            self.persisted = index;
        }
    }

    /// Committed entries not yet handed to the state machine, no further than
    /// `max_index` (the driver must have them durable before it applies
    /// them), and marks them handed out.
    pub fn take_committed(&mut self, max_index: u64) -> Vec<Entry> {
        let upto = self.committed.min(max_index);
        if upto <= self.applied {
            return Vec::new();
        }
        let out: Vec<Entry> = (self.applied + 1..=upto)
            .filter_map(|index| self.entry(index).cloned())
            .collect();
        debug_assert_eq!(
            out.len() as u64,
            upto - self.applied,
            "committed entries missing"
        );
        self.applied = upto;
        out
    }

    pub fn has_committed_to_apply(&self, max_index: u64) -> bool {
        self.committed.min(max_index) > self.applied
    }

    /// Replaces the whole log by a snapshot received from the leader.
    pub fn restore_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        assert!(
            index > self.committed,
            "restoring snapshot at {index} behind commit index {}",
            self.committed
        );
        self.entries.clear();
        self.offset = index;
        self.offset_term = snapshot.metadata.term;
        self.committed = index;
        self.applied = index;
        self.persisted = index;
        self.unstable_from = index + 1;
        self.pending_snapshot = Some(snapshot);
    }

    pub fn take_pending_snapshot(&mut self) -> Option<Snapshot> {
        self.pending_snapshot.take()
    }

    /// Drops entries up to and including `index` (which must be applied).
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.offset {
            return;
        }
        assert!(
            index <= self.applied,
            "compacting to {index} beyond the applied index {}",
            self.applied
        );
        let term = self
            .term(index)
            .unwrap_or_else(|| panic!("compacting to {index}: entry missing from the log"));
        let drop = (index - self.offset) as usize;
        self.entries.drain(..drop);
        self.offset = index;
        self.offset_term = term;
    }

    /// Marks entries up to `index` as applied without handing them out (used
    /// on restart, when the state machine already contains them).
    pub fn set_applied(&mut self, index: u64) {
        assert!(
            index <= self.committed.max(self.offset),
            "applied index {index} beyond commit index {}",
            self.committed
        );
        self.applied = index.max(self.offset);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entries(terms: &[(u64, u64)]) -> Vec<Entry> {
        terms
            .iter()
            .map(|&(index, term)| Entry::normal(term, index, Bytes::new()))
            .collect()
    }

    #[test]
    fn append_replaces_a_conflicting_suffix() {
        let mut log = RaftLog::restore(0, 0, entries(&[(1, 1), (2, 1), (3, 2)]), 1);
        assert_eq!(
            log.maybe_append(1, 1, 3, &entries(&[(2, 3), (3, 3)])),
            Some(3)
        );
        assert_eq!(log.term(2), Some(3));
        assert_eq!(log.committed(), 3);
        assert_eq!(log.persisted(), 1);
    }

    #[test]
    fn append_of_known_entries_truncates_nothing() {
        let mut log = RaftLog::restore(0, 0, entries(&[(1, 1), (2, 1), (3, 2)]), 0);
        assert_eq!(log.maybe_append(0, 0, 0, &entries(&[(1, 1)])), Some(1));
        assert_eq!(log.last_index(), 3, "a stale append must not cut the log");
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = RaftLog::restore(0, 0, entries(&[(1, 1), (2, 1), (3, 2), (4, 2), (5, 5)]), 0);
        assert_eq!(log.find_conflict_by_term(5, 3), 4);
        assert_eq!(log.find_conflict_by_term(5, 1), 2);
        assert_eq!(log.find_conflict_by_term(5, 0), 0);
        assert_eq!(log.find_conflict_by_term(9, 5), 5);
    }

    #[test]
    fn compaction_keeps_the_term_of_the_compaction_point() {
        let mut log = RaftLog::restore(0, 0, entries(&[(1, 1), (2, 2), (3, 3)]), 3);
        log.set_applied(3);
        log.compact_to(2);
        assert_eq!(log.term(2), Some(2));
        assert_eq!(log.term(1), None);
        assert_eq!(log.entries_from(2, u64::MAX), None);
        assert_eq!(log.entries_from(3, u64::MAX).map(|e| e.len()), Some(1));
    }

    #[test]
    #[should_panic(expected = "overwrite committed")]
    fn overwriting_a_committed_entry_panics() {
        let mut log = RaftLog::restore(0, 0, entries(&[(1, 1), (2, 1)]), 2);
        log.append(&entries(&[(2, 2)]));
    }
}
