//! Safety checkers, kept apart from the system they check: they see only
//! what a node exposes (roles, terms, what it persisted and applied) and
//! never reach into the algorithm's decisions.
//!
//! Checked properties (Raft paper, Figure 3):
//! * Election Safety: at most one leader per term.
//! * Log Matching: two logs holding an entry with the same index and term are
//!   identical up to it. Checked inductively on every persisted entry: an
//!   (index, term) pair always has the same contents and the same
//!   predecessor term.
//! * Leader Completeness: a leader's log holds every entry committed in an
//!   earlier term (checked on election and whenever an entry is applied).
//!   The commit term is bounded from above by the terms of the nodes that
//!   applied the entry, so the check never blames a leader elected before a
//!   later-term leader committed an old-term entry.
//! * State Machine Safety: no two nodes apply different entries at an index;
//!   each node applies in order without gaps, so committed entries are never
//!   lost or reordered.
//! * Linearizable reads: a read's index covers every entry applied anywhere
//!   before the read was asked.

use std::collections::{BTreeMap, HashMap};

use raft::{Entry, EntryKind, NodeId};

/// A broken property, with enough context to start debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, enough to fingerprint entry contents deterministically.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Fingerprint of an entry's contents (term and index excluded).
pub fn entry_fingerprint(entry: &Entry) -> u64 {
    fingerprint(&entry.data) ^ u64::from(entry.kind == EntryKind::ConfChange)
}

/// The state digest after applying `entry` on top of `previous`.
pub fn chain_digest(previous: u64, entry: &Entry) -> u64 {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&previous.to_be_bytes());
    bytes.extend_from_slice(&entry.term.to_be_bytes());
    bytes.extend_from_slice(&entry.index.to_be_bytes());
    bytes.extend_from_slice(&entry_fingerprint(entry).to_be_bytes());
    fingerprint(&bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AppliedRecord {
    term: u64,
    /// An upper bound on the term in which the entry was committed: the
    /// lowest current term of any node when it applied the entry (a node
    /// learns of a commit from a leader of a term no higher than its own).
    /// Leader Completeness binds leaders of later terms only.
    commit_term_bound: u64,
    fingerprint: u64,
    digest: u64,
    first_applied_by: NodeId,
}

#[derive(Debug, Default)]
pub struct SafetyChecker {
    leader_by_term: BTreeMap<u64, NodeId>,
    /// (index, term) → (contents fingerprint, predecessor term).
    persisted: HashMap<(u64, u64), (u64, u64)>,
    applied: BTreeMap<u64, AppliedRecord>,
    max_applied_index: u64,
}

impl SafetyChecker {
    pub fn max_applied_index(&self) -> u64 {
        self.max_applied_index
    }

    /// The state digest after applying up to `index`, if anyone has.
    pub fn digest_at(&self, index: u64) -> Option<u64> {
        self.applied.get(&index).map(|record| record.digest)
    }

    pub fn applied_term(&self, index: u64) -> Option<u64> {
        self.applied.get(&index).map(|record| record.term)
    }

    pub fn observe_leader(&mut self, node: NodeId, term: u64) -> Result<(), Violation> {
        match self.leader_by_term.insert(term, node) {
            Some(other) if other != node => Err(Violation(format!(
                "Election Safety: nodes {other} and {node} both led term {term}"
            ))),
            _ => Ok(()),
        }
    }

    /// `predecessor_term` is the term of the entry before `entry` in the same
    /// node's durable log.
    pub fn observe_persisted(
        &mut self,
        node: NodeId,
        entry: &Entry,
        predecessor_term: u64,
    ) -> Result<(), Violation> {
        let record = (entry_fingerprint(entry), predecessor_term);
        match self.persisted.insert((entry.index, entry.term), record) {
            Some(existing) if existing != record => Err(Violation(format!(
                "Log Matching: node {node} persisted entry (index {}, term {}) with contents/predecessor \
                 {record:?}, another log has {existing:?}",
                entry.index, entry.term
            ))),
            _ => Ok(()),
        }
    }

    /// A node at term `node_term` applied `entry`, with state digest `digest`
    /// after it.
    pub fn observe_applied(
        &mut self,
        node: NodeId,
        node_term: u64,
        entry: &Entry,
        digest: u64,
    ) -> Result<(), Violation> {
        let record = AppliedRecord {
            term: entry.term,
            commit_term_bound: node_term,
            fingerprint: entry_fingerprint(entry),
            digest,
            first_applied_by: node,
        };
        match self.applied.get(&entry.index) {
            Some(existing)
                if (existing.term, existing.fingerprint, existing.digest)
                    != (record.term, record.fingerprint, record.digest) =>
            {
                return Err(Violation(format!(
                    "State Machine Safety: node {node} applied (index {}, term {}) but node {} applied \
                     (index {}, term {}) there, or the states before differ",
                    entry.index, entry.term, existing.first_applied_by, entry.index, existing.term
                )));
            }
            Some(existing) => {
                let bound = existing.commit_term_bound.min(node_term);
                if let Some(existing) = self.applied.get_mut(&entry.index) {
                    existing.commit_term_bound = bound;
                }
            }
            None => {
                self.applied.insert(entry.index, record);
            }
        }
        self.max_applied_index = self.max_applied_index.max(entry.index);
        Ok(())
    }

    /// Leader Completeness for a node that leads `term`, whose log answers
    /// `log_term` for indexes at or above `first_index`.
    pub fn check_leader_log(
        &self,
        node: NodeId,
        term: u64,
        first_index: u64,
        log_term: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), Violation> {
        for (&index, record) in self.applied.range(first_index..) {
            if record.commit_term_bound >= term {
                continue;
            }
            if log_term(index) != Some(record.term) {
                return Err(Violation(format!(
                    "Leader Completeness (at election): leader {node} of term {term} lacks committed entry \
                     (index {index}, term {}); its log has term {:?} there",
                    record.term,
                    log_term(index)
                )));
            }
        }
        Ok(())
    }

    /// Leader Completeness for one newly applied entry against a live leader.
    pub fn check_leader_has(
        &self,
        leader: NodeId,
        leader_term: u64,
        first_index: u64,
        entry_index: u64,
        log_term: Option<u64>,
    ) -> Result<(), Violation> {
        let Some(record) = self.applied.get(&entry_index) else {
            return Ok(());
        };
        if record.commit_term_bound < leader_term
            && entry_index >= first_index
            && log_term != Some(record.term)
        {
            return Err(Violation(format!(
                "Leader Completeness (on apply): leader {leader} of term {leader_term} lacks committed entry \
                 (index {entry_index}, term {}); its log has term {log_term:?} there",
                record.term
            )));
        }
        Ok(())
    }
}
