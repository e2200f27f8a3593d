//! The leader's queue of linearizable read requests (ReadIndex, Raft thesis
//! §6.4).
//!
//! At most one confirmation round is in flight. Requests that arrive while it
//! is out wait and all share the next round, so a burst of reads costs one
//! heartbeat round trip, not one per read.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// A read waiting for its index: `from` is the member that asked (the leader
/// itself, or a follower that forwarded it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub from: NodeId,
    pub request_id: u64,
}

#[derive(Debug)]
struct ReadRound {
    id: u64,
    /// The leader's commit index when the round started: every read in the
    /// round may be served once the state machine has applied this far.
    index: u64,
    acks: BTreeSet<NodeId>,
    requests: Vec<ReadRequest>,
}

#[derive(Debug, Default)]
pub struct ReadIndexQueue {
    in_flight: Option<ReadRound>,
    waiting: Vec<ReadRequest>,
    /// Round ids only grow, across terms too, so a late heartbeat answer from
    /// an earlier round can never confirm a later one.
    last_round_id: u64,
}

impl ReadIndexQueue {
    pub fn push(&mut self, request: ReadRequest) {
        self.waiting.push(request);
    }

    /// Starts a round for every waiting request if none is in flight.
    /// Returns the new round's id.
    pub fn start_round(&mut self, commit_index: u64, leader: NodeId) -> Option<u64> {
        if self.in_flight.is_some() || self.waiting.is_empty() {
            return None;
        }
        self.last_round_id += 1;
        let mut acks = BTreeSet::new();
        acks.insert(leader);
        self.in_flight = Some(ReadRound {
            id: self.last_round_id,
            index: commit_index,
            acks,
            requests: std::mem::take(&mut self.waiting),
        });
        Some(self.last_round_id)
    }

    /// The round heartbeats should confirm, or 0.
    pub fn in_flight_round(&self) -> u64 {
        self.in_flight.as_ref().map_or(0, |round| round.id)
    }

    /// Records `from`'s confirmation of `round_id`; returns whether it counted.
    pub fn ack(&mut self, round_id: u64, from: NodeId) -> bool {
        match &mut self.in_flight {
            Some(round) if round.id == round_id => round.acks.insert(from),
            _ => false,
        }
    }

    /// Completes the in-flight round if `is_quorum` accepts its
    /// confirmations, returning its index and requests.
    pub fn complete_if(
        &mut self,
        is_quorum: impl Fn(&BTreeSet<NodeId>) -> bool,
    ) -> Option<(u64, Vec<ReadRequest>)> {
        let round = self.in_flight.as_ref()?;
        if !is_quorum(&round.acks) {
            return None;
        }
        let round = self.in_flight.take()?;
        Some((round.index, round.requests))
    }

    /// Drops every request: the leader lost leadership, and a deposed leader
    /// must never answer a read.
    pub fn clear(&mut self) {
        self.in_flight = None;
        self.waiting.clear();
    }

    pub fn pending_count(&self) -> usize {
        self.waiting.len()
            + self
                .in_flight
                .as_ref()
                .map_or(0, |round| round.requests.len())
    }
}
