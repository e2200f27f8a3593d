//! A simulated network: messages in flight with delivery times, and the
//! faults a real network has — loss, duplication, delay, reordering and
//! partitions (symmetric or one-way).

use std::collections::BTreeSet;

use raft::rng::SplitMix64;
use raft::{Message, NodeId};

/// How unreliable the network is. Probabilities are per message, in parts
/// per thousand, so that everything stays integer and deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkFaults {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    /// Delivery delay is drawn from `[min_delay_ticks, max_delay_ticks]`;
    /// a range wider than zero reorders messages.
    pub min_delay_ticks: u64,
    pub max_delay_ticks: u64,
}

impl NetworkFaults {
    /// Every message arrives, once, one tick later, in order.
    pub const RELIABLE: NetworkFaults = NetworkFaults {
        drop_per_mille: 0,
        duplicate_per_mille: 0,
        min_delay_ticks: 0,
        max_delay_ticks: 0,
    };

    pub const UNRELIABLE: NetworkFaults = NetworkFaults {
        drop_per_mille: 100,
        duplicate_per_mille: 50,
        min_delay_ticks: 0,
        max_delay_ticks: 3,
    };
}

#[derive(Debug)]
struct InFlight {
    deliver_at_tick: u64,
    /// Tie-breaker among messages due in the same tick: random when the
    /// network reorders, send order when it does not (like a TCP stream).
    order: u64,
    message: Message,
}

#[derive(Debug)]
pub struct Network {
    pub faults: NetworkFaults,
    in_flight: Vec<InFlight>,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    sent_count: u64,
}

/// What became of a message handed to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    Dropped,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Self {
        Network {
            faults,
            in_flight: Vec::new(),
            blocked: BTreeSet::new(),
            sent_count: 0,
        }
    }

    pub fn send(&mut self, message: Message, now_tick: u64, rng: &mut SplitMix64) -> SendOutcome {
        if self.blocked.contains(&(message.from, message.to))
            || rng.range(0, 1000) < self.faults.drop_per_mille
        {
            return SendOutcome::Dropped;
        }
        let copies = if rng.range(0, 1000) < self.faults.duplicate_per_mille {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let delay = self.faults.min_delay_ticks
                + rng.range(
                    0,
                    self.faults.max_delay_ticks - self.faults.min_delay_ticks + 1,
                );
            let _ = copy;
            self.sent_count += 1;
            let reorders = self.faults.max_delay_ticks > self.faults.min_delay_ticks;
            self.in_flight.push(InFlight {
                deliver_at_tick: now_tick + delay,
                order: if reorders {
                    rng.next_u64()
                } else {
                    self.sent_count
                },
                message: message.clone(),
            });
        }
        SendOutcome::Queued
    }

    /// Removes and returns every message due by `now_tick`, in delivery
    /// order. A link blocked after a message was sent still drops it.
    pub fn take_due(&mut self, now_tick: u64) -> Vec<Message> {
        let mut due: Vec<InFlight> = Vec::new();
        let mut index = 0;
        while index < self.in_flight.len() {
            if self.in_flight[index].deliver_at_tick <= now_tick {
                due.push(self.in_flight.swap_remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by_key(|m| (m.deliver_at_tick, m.order));
        due.into_iter()
            .map(|m| m.message)
            .filter(|m| !self.blocked.contains(&(m.from, m.to)))
            .collect()
    }

    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    pub fn block_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn block_both_ways(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.block_both_ways(a, b);
            }
        }
    }

    /// Cuts `node` off from `others`, both ways.
    pub fn isolate(&mut self, node: NodeId, others: &[NodeId]) {
        for &other in others {
            if other != node {
                self.block_both_ways(node, other);
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Drops messages addressed to or sent by `node` (its process died: the
    /// connections carrying them are gone).
    pub fn drop_messages_of(&mut self, node: NodeId) {
        self.in_flight
            .retain(|m| m.message.to != node && m.message.from != node);
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }
}
