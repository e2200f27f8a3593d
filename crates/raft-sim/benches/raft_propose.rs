//! Raft core throughput: three nodes in one process, in-memory logs, no
//! network, committing empty proposals from 1, 64 and 256 concurrent
//! proposers. Each proposer has one proposal outstanding at a time and
//! proposes again as soon as its previous one commits.
//!
//! Measures the algorithm's own cost per committed proposal (Ready handling,
//! message construction, commit bookkeeping); durability and transport are
//! measured elsewhere.
//!
//! Run: `cargo bench -p raftkv-raft-sim --bench raft_propose`
//! (`RAFTKV_BENCH_PROPOSALS=N` sets proposals per run, default 300000).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use raft::{Config, Message, Raft, Role};

const VOTERS: [u64; 3] = [1, 2, 3];
const COMPACT_EVERY: u64 = 10_000;

struct Bench {
    nodes: Vec<Raft>,
    queue: VecDeque<Message>,
    committed_proposals: u64,
    first_proposal_index: u64,
}

impl Bench {
    fn new() -> Self {
        let nodes = VOTERS
            .iter()
            .map(|&id| {
                let mut config = Config::new(id);
                config.max_inflight_messages = 4096;
                match Raft::bootstrap(config, &VOTERS) {
                    Ok(raft) => raft,
                    Err(error) => panic!("bootstrap: {error}"),
                }
            })
            .collect();
        Bench {
            nodes,
            queue: VecDeque::new(),
            committed_proposals: 0,
            first_proposal_index: u64::MAX,
        }
    }

    fn node(&mut self, id: u64) -> &mut Raft {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Handles every node's Ready (persistence is the in-memory log itself)
    /// and delivers every message, until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for position in 0..self.nodes.len() {
                while self.nodes[position].has_ready() {
                    moved = true;
                    let mut ready = self.nodes[position].ready();
                    self.queue.extend(ready.messages.drain(..));
                    self.queue.extend(ready.persisted_messages.drain(..));
                    if self.nodes[position].role() == Role::Leader {
                        for entry in &ready.committed_entries {
                            if entry.index >= self.first_proposal_index {
                                self.committed_proposals += 1;
                            }
                        }
                    }
                    let applied = ready.committed_entries.last().map(|entry| entry.index);
                    self.nodes[position].advance(ready);
                    if let Some(applied) = applied {
                        if applied % COMPACT_EVERY == 0 {
                            let raft = &mut self.nodes[position];
                            if raft.create_snapshot(applied, Bytes::new()).is_ok() {
                                let _ = raft.compact_log(applied.saturating_sub(1000));
                            }
                        }
                    }
                }
            }
            while let Some(message) = self.queue.pop_front() {
                moved = true;
                let to = message.to;
                self.node(to).step(message);
            }
            if !moved {
                return;
            }
        }
    }
}

fn run(proposers: u64, total: u64) -> f64 {
    let mut bench = Bench::new();
    bench.settle();
    bench.node(1).campaign_now();
    bench.settle();
    assert_eq!(
        bench.node(1).role(),
        Role::Leader,
        "node 1 must win the first election"
    );
    bench.first_proposal_index = bench.node(1).last_index() + 1;

    let started = Instant::now();
    let mut proposed = 0;
    while bench.committed_proposals < total {
        // Every proposer whose proposal committed proposes again.
        let outstanding = proposed - bench.committed_proposals;
        let wanted = (proposers - outstanding).min(total - proposed);
        for _ in 0..wanted {
            if bench.node(1).propose(Bytes::new()).is_ok() {
                proposed += 1;
            }
        }
        bench.settle();
    }
    bench.committed_proposals as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let total: u64 = std::env::var("RAFTKV_BENCH_PROPOSALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(300_000);
    println!("raft core: 3 voters in one process, in-memory log, no network; {total} empty proposals per run");
    println!("{:>10} {:>16}", "proposers", "proposals/s");
    for proposers in [1, 64, 256] {
        let rate = run(proposers, total);
        println!("{proposers:>10} {rate:>16.0}");
    }
}
