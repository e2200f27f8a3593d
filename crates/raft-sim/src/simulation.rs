//! Randomized simulation: one seed decides every fault, proposal and
//! membership change. A safety phase with faults is followed by a liveness
//! phase on a healed network.

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind, NodeId};

use crate::checker::Violation;
use crate::cluster::{Cluster, ClusterOptions};
use crate::network::NetworkFaults;

#[derive(Clone, Debug)]
pub struct SimulationOptions {
    pub voters: usize,
    /// Ticks of the faulty phase.
    pub ticks: u64,
    pub unreliable_network: bool,
    pub crashes: bool,
    pub partitions: bool,
    pub membership_changes: bool,
    pub snapshots: bool,
    /// Bound on the liveness phase, in ticks.
    pub liveness_ticks: u64,
    /// Cap on one append's payload; a tiny cap sends one entry per message,
    /// so acknowledgements of consecutive entries arrive separately.
    pub max_message_bytes: u64,
    #[cfg(debug_assertions)]
    pub faults_switches: raft::FaultSwitches,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        SimulationOptions {
            voters: 5,
            ticks: 3000,
            unreliable_network: true,
            crashes: true,
            partitions: true,
            membership_changes: true,
            snapshots: true,
            liveness_ticks: 400,
            max_message_bytes: 64 * 1024,
            #[cfg(debug_assertions)]
            faults_switches: raft::FaultSwitches::default(),
        }
    }
}

/// What a seed did, for reports.
#[derive(Clone, Debug, Default)]
pub struct SimulationStats {
    pub ticks: u64,
    pub committed_index: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub membership_changes: u64,
    pub snapshots: u64,
    pub reads_answered: u64,
    pub liveness_ticks: u64,
}

#[derive(Clone, Debug)]
pub struct SimulationFailure {
    pub seed: u64,
    pub tick: u64,
    pub violation: Violation,
}

impl std::fmt::Display for SimulationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at tick {}: {}\nreplay: RAFTKV_SIM_SEED={} cargo test -p raftkv-raft-sim --test simulation -- --nocapture",
            self.seed, self.tick, self.violation, self.seed
        )
    }
}

/// Runs one seed: a faulty phase, then heal and check liveness.
pub fn run_simulation(
    seed: u64,
    options: &SimulationOptions,
) -> Result<SimulationStats, SimulationFailure> {
    let mut cluster_options = ClusterOptions::new(options.voters, seed);
    cluster_options.max_message_bytes = options.max_message_bytes;
    if options.unreliable_network {
        cluster_options.faults = NetworkFaults::UNRELIABLE;
    }
    if options.crashes {
        cluster_options.crash_in_ready_per_mille = 2;
    }
    #[cfg(debug_assertions)]
    {
        cluster_options.faults_switches = options.faults_switches;
    }
    let mut cluster = Cluster::new(cluster_options);
    let mut stats = SimulationStats::default();
    let mut proposal_counter: u64 = 0;

    let fail = |cluster: &Cluster, violation: Violation| SimulationFailure {
        seed,
        tick: cluster.now_tick,
        violation,
    };

    for _ in 0..options.ticks {
        random_actions(&mut cluster, options, &mut stats, &mut proposal_counter);
        cluster.tick();
        if let Some(violation) = cluster.violation() {
            return Err(fail(&cluster, violation.clone()));
        }
    }

    // Liveness: heal everything, bring back every member, and demand progress.
    cluster.heal();
    cluster.network.faults = NetworkFaults::RELIABLE;
    cluster.options.crash_in_ready_per_mille = 0;
    for id in cluster.all_ids() {
        cluster.restart(id);
    }
    match cluster.check_liveness(options.liveness_ticks) {
        Ok(ticks) => stats.liveness_ticks = ticks,
        Err(violation) => return Err(fail(&cluster, violation)),
    }
    if let Some(violation) = cluster.violation() {
        return Err(fail(&cluster, violation.clone()));
    }
    stats.ticks = cluster.now_tick;
    stats.crashes = cluster.crashes;
    stats.committed_index = cluster.max_applied_index();
    stats.reads_answered = cluster.completed_reads.len() as u64;
    Ok(stats)
}

fn chance(cluster: &mut Cluster, per_mille: u64) -> bool {
    cluster.rng().range(0, 1000) < per_mille
}

fn pick(cluster: &mut Cluster, ids: &[NodeId]) -> Option<NodeId> {
    if ids.is_empty() {
        return None;
    }
    let at = cluster.rng().range(0, ids.len() as u64) as usize;
    Some(ids[at])
}

fn random_actions(
    cluster: &mut Cluster,
    options: &SimulationOptions,
    stats: &mut SimulationStats,
    proposal_counter: &mut u64,
) {
    let leader = cluster.leader();

    // Client writes, often several per tick so batches form.
    if let Some(leader) = leader {
        let proposals = cluster.rng().range(0, 4);
        for _ in 0..proposals {
            if !cluster.is_up(leader) {
                break;
            }
            *proposal_counter += 1;
            let data = Bytes::from(format!("w{proposal_counter}"));
            let _ = cluster.propose(leader, data);
        }
    }
    // Linearizable reads at any member.
    let up = cluster.up_nodes();
    if chance(cluster, 150) {
        if let Some(node) = pick(cluster, &up) {
            let _ = cluster.read_index(node);
        }
    }
    let up = cluster.up_nodes();
    let leader = leader.filter(|&id| cluster.is_up(id));
    if options.crashes {
        if chance(cluster, 8) {
            if let Some(node) = pick(cluster, &up) {
                cluster.crash(node);
            }
        }
        // Aim some crashes at the leader: that is where bugs hide.
        if chance(cluster, 4) {
            if let Some(leader) = leader {
                cluster.crash(leader);
            }
        }
        let down: Vec<NodeId> = cluster
            .all_ids()
            .into_iter()
            .filter(|&id| !cluster.is_up(id))
            .collect();
        if chance(cluster, 60) {
            if let Some(node) = pick(cluster, &down) {
                cluster.restart(node);
            }
        }
    }
    if options.partitions && chance(cluster, 15) {
        stats.partitions += 1;
        random_partition(cluster);
    }
    let up = cluster.up_nodes();
    if options.snapshots && chance(cluster, 20) {
        if let Some(node) = pick(cluster, &up) {
            let keep = cluster.rng().range(0, 8);
            if cluster.compact(node, keep).is_ok() {
                stats.snapshots += 1;
            }
        }
    }
    // Anything above may have crashed the leader mid-Ready.
    let leader = leader.filter(|&id| cluster.is_up(id));
    if let Some(leader) = leader {
        if options.membership_changes
            && chance(cluster, 10)
            && random_membership_change(cluster, leader)
        {
            stats.membership_changes += 1;
        }
        if chance(cluster, 5) && cluster.is_up(leader) {
            let voters = cluster.raft(leader).conf_state().voters.clone();
            if let Some(target) = pick(cluster, &voters) {
                let _ = cluster.transfer_leadership(leader, target);
            }
        }
    }
}

fn random_partition(cluster: &mut Cluster) {
    let ids = cluster.all_ids();
    match cluster.rng().range(0, 5) {
        0 => cluster.heal(),
        1 => {
            // Split into two random sides.
            let mut side_a = Vec::new();
            let mut side_b = Vec::new();
            for &id in &ids {
                if cluster.rng().range(0, 2) == 0 {
                    side_a.push(id);
                } else {
                    side_b.push(id);
                }
            }
            cluster.heal();
            cluster.partition(&side_a, &side_b);
        }
        2 => {
            if let Some(node) = pick(cluster, &ids) {
                cluster.heal();
                cluster.isolate(node);
            }
        }
        3 => {
            // One-way: a node can send but not hear, or the reverse.
            if let (Some(a), Some(b)) = (pick(cluster, &ids), pick(cluster, &ids)) {
                if a != b {
                    cluster.network.block_one_way(a, b);
                }
            }
        }
        _ => {
            // Isolate the leader, the classic way to make a deposed leader.
            if let Some(leader) = cluster.leader() {
                cluster.heal();
                cluster.isolate(leader);
            }
        }
    }
}

/// Proposes one random change at the leader; returns whether it was accepted.
fn random_membership_change(cluster: &mut Cluster, leader: NodeId) -> bool {
    let conf = cluster.raft(leader).conf_state().clone();
    let change = match cluster.rng().range(0, 3) {
        0 if conf.voters.len() + conf.learners.len() < 7 => {
            // Ids are never reused: a removed member stays removed.
            let id = cluster.next_node_id;
            cluster.next_node_id += 1;
            ConfChange {
                change: ConfChangeKind::AddLearner,
                node_id: id,
                context: Bytes::new(),
            }
        }
        1 if !conf.learners.is_empty() => {
            let Some(learner) = pick(cluster, &conf.learners) else {
                return false;
            };
            ConfChange {
                change: ConfChangeKind::AddVoter,
                node_id: learner,
                context: Bytes::new(),
            }
        }
        2 if conf.voters.len() > 3 || !conf.learners.is_empty() => {
            let members: Vec<NodeId> = if conf.voters.len() > 3 {
                conf.voters
                    .iter()
                    .chain(conf.learners.iter())
                    .copied()
                    .collect()
            } else {
                conf.learners.clone()
            };
            let Some(member) = pick(cluster, &members) else {
                return false;
            };
            ConfChange {
                change: ConfChangeKind::Remove,
                node_id: member,
                context: Bytes::new(),
            }
        }
        _ => return false,
    };
    // A removed member keeps running (and restarting), as a real process
    // would until an operator stops it: Raft must cope with it.
    cluster.propose_conf_change(leader, change).is_ok()
}
