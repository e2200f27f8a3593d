//! Scenario tests: each drives one situation from the Raft paper or from
//! production experience and checks its outcome. Every cluster also runs the
//! safety checker on every step; `assert_safe` fails the test on any
//! violation. One tick stands for 100 ms: the election timeout is 10 ticks
//! (one second) and leaders heartbeat every tick.

use bytes::Bytes;
use raft::{ConfChange, ConfChangeKind, NodeId, RaftError, Role};
use raft_sim::{Cluster, ClusterOptions, NetworkFaults};

const ELECTION: u64 = 10;

fn cluster(voters: usize, seed: u64) -> Cluster {
    Cluster::new(ClusterOptions::new(voters, seed))
}

fn elect(cluster: &mut Cluster) -> NodeId {
    match cluster.elect(20 * ELECTION) {
        Some(leader) => leader,
        None => panic!("no leader elected\n{}", cluster.describe()),
    }
}

fn others(cluster: &Cluster, id: NodeId) -> Vec<NodeId> {
    cluster
        .all_ids()
        .into_iter()
        .filter(|&other| other != id)
        .collect()
}

fn terms_agree(cluster: &Cluster) -> bool {
    let up = cluster.up_nodes();
    up.windows(2)
        .all(|pair| cluster.raft(pair[0]).term() == cluster.raft(pair[1]).term())
}

fn change(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
    ConfChange {
        change: kind,
        node_id,
        context: Bytes::new(),
    }
}

// ----- Elections -----------------------------------------------------------

#[test]
fn initial_election_elects_one_leader_that_stays() {
    let mut cluster = cluster(3, 1);
    let leader = elect(&mut cluster);
    let term = cluster.raft(leader).term();
    assert!(cluster.run_until(ELECTION, |c| c
        .up_nodes()
        .iter()
        .all(|&id| c.raft(id).leader() == leader)));
    assert!(terms_agree(&cluster));
    // With a healthy network the leader keeps its term.
    cluster.run_ticks(20 * ELECTION);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.raft(leader).term(), term, "no spurious elections");
    cluster.assert_safe();
}

#[test]
fn re_election_after_leader_loss_and_old_leader_rejoins_as_follower() {
    let mut cluster = cluster(3, 2);
    let old = elect(&mut cluster);
    cluster.isolate(old);
    let new = cluster.run_until(30 * ELECTION, |c| c.leader().is_some_and(|l| l != old));
    assert!(
        new,
        "a new leader among the connected majority\n{}",
        cluster.describe()
    );
    let new_leader = cluster.leader().expect("checked above");
    cluster.heal();
    assert!(cluster.run_until(10 * ELECTION, |c| c.raft(old).role() == Role::Follower));
    cluster.run_ticks(5 * ELECTION);
    assert_eq!(
        cluster.leader(),
        Some(new_leader),
        "the rejoining node must not disrupt the new leader"
    );
    cluster.assert_safe();
}

#[test]
fn no_leader_without_a_quorum() {
    let mut cluster = cluster(3, 3);
    let leader = elect(&mut cluster);
    let followers = others(&cluster, leader);
    cluster.crash(followers[0]);
    cluster.crash(followers[1]);
    cluster.run_ticks(30 * ELECTION);
    assert_eq!(
        cluster.leader(),
        None,
        "CheckQuorum makes the lone leader step down; nobody wins alone"
    );
    cluster.restart(followers[0]);
    assert!(
        cluster.elect(30 * ELECTION).is_some(),
        "a quorum again elects a leader"
    );
    cluster.assert_safe();
}

#[test]
fn many_elections_under_random_disconnects_with_seven_nodes() {
    let mut cluster = cluster(7, 4);
    elect(&mut cluster);
    for _round in 0..30 {
        // Disconnect three random nodes: four remain, still a majority.
        cluster.heal();
        let ids = cluster.all_ids();
        let mut cut = Vec::new();
        while cut.len() < 3 {
            let at = cluster.rng().range(0, ids.len() as u64) as usize;
            if !cut.contains(&ids[at]) {
                cut.push(ids[at]);
            }
        }
        for &id in &cut {
            cluster.isolate(id);
        }
        let connected_leader = cluster.run_until(30 * ELECTION, |c| {
            c.leaders()
                .iter()
                .any(|l| !cut.contains(l) && c.raft(*l).role() == Role::Leader)
        });
        assert!(
            connected_leader,
            "the connected majority elects a leader\n{}",
            cluster.describe()
        );
    }
    cluster.heal();
    elect(&mut cluster);
    cluster.assert_safe();
}

// ----- Agreement -----------------------------------------------------------

#[test]
fn basic_agreement() {
    let mut cluster = cluster(3, 5);
    let first = cluster.commit_entries(1, 30 * ELECTION);
    let last = cluster.commit_entries(3, 30 * ELECTION);
    assert_eq!(last.index, first.index + 3);
    let digests: Vec<u64> = cluster
        .all_ids()
        .iter()
        .map(|&id| cluster.state_digest(id))
        .collect();
    assert!(
        digests.windows(2).all(|pair| pair[0] == pair[1]),
        "every node applied the same entries"
    );
    cluster.assert_safe();
}

#[test]
fn agreement_with_a_failed_follower() {
    let mut cluster = cluster(3, 6);
    let leader = elect(&mut cluster);
    let follower = others(&cluster, leader)[0];
    cluster.isolate(follower);
    let position = cluster
        .propose(leader, Bytes::from_static(b"x"))
        .expect("leader accepts");
    let connected: Vec<NodeId> = others(&cluster, follower);
    assert!(
        cluster.wait_applied(&connected, position.index, 10 * ELECTION),
        "two of three commit"
    );
    assert!(cluster.applied_index(follower) < position.index);
    cluster.heal();
    assert!(
        cluster.wait_applied(&[follower], position.index, 20 * ELECTION),
        "the follower catches up"
    );
    cluster.assert_safe();
}

#[test]
fn no_agreement_without_a_majority_then_recovery() {
    let mut cluster = cluster(5, 7);
    let leader = elect(&mut cluster);
    let followers = others(&cluster, leader);
    for &follower in &followers[..3] {
        cluster.isolate(follower);
    }
    let position = cluster
        .propose(leader, Bytes::from_static(b"lonely"))
        .expect("leader accepts");
    cluster.run_ticks(ELECTION / 2);
    assert!(
        cluster.raft(leader).commit_index() < position.index,
        "two of five cannot commit"
    );
    cluster.heal();
    let fresh = cluster.commit_entries(1, 40 * ELECTION);
    assert!(fresh.index > 0);
    cluster.assert_safe();
}

#[test]
fn concurrent_proposals_in_one_term_get_consecutive_indexes() {
    let mut cluster = cluster(3, 8);
    let leader = elect(&mut cluster);
    let term = cluster.raft(leader).term();
    let positions: Vec<_> = (0..50)
        .map(|n| {
            cluster
                .propose(leader, Bytes::from(format!("c{n}")))
                .expect("leader accepts")
        })
        .collect();
    assert!(positions
        .windows(2)
        .all(|pair| pair[1].index == pair[0].index + 1));
    assert!(positions.iter().all(|position| position.term == term));
    let last = positions.last().expect("fifty positions").index;
    assert!(cluster.wait_applied(&cluster.all_ids(), last, 10 * ELECTION));
    assert_eq!(cluster.raft(leader).term(), term, "one term throughout");
    cluster.assert_safe();
}

#[test]
fn deposed_leaders_uncommitted_entries_are_overwritten_when_it_rejoins() {
    let mut cluster = cluster(3, 9);
    let old = elect(&mut cluster);
    cluster.isolate(old);
    let doomed = cluster
        .propose(old, Bytes::from_static(b"never committed"))
        .expect("still thinks it leads");
    assert!(cluster.run_until(30 * ELECTION, |c| c.leader().is_some_and(|l| l != old)));
    let new = cluster.leader().expect("checked above");
    let kept = cluster
        .propose(new, Bytes::from_static(b"committed"))
        .expect("new leader accepts");
    let majority = others(&cluster, old);
    assert!(cluster.wait_applied(&majority, kept.index, 10 * ELECTION));
    cluster.heal();
    assert!(cluster.wait_applied(&[old], kept.index, 20 * ELECTION));
    assert_ne!(
        cluster.raft(old).log_term(doomed.index),
        Some(doomed.term),
        "the deposed leader's uncommitted entry was replaced"
    );
    assert_eq!(cluster.state_digest(old), cluster.state_digest(new));
    cluster.assert_safe();
}

#[test]
fn fast_backup_across_fifty_entry_divergent_tails() {
    let mut cluster = cluster(5, 10);
    let old = elect(&mut cluster);
    cluster.commit_entries(1, 30 * ELECTION);
    // The old leader and one follower are cut off; the leader piles up 50
    // entries that can never commit.
    let buddy = others(&cluster, old)[0];
    let rest: Vec<NodeId> = cluster
        .all_ids()
        .into_iter()
        .filter(|&id| id != old && id != buddy)
        .collect();
    cluster.partition(&[old, buddy], &rest);
    for n in 0..50 {
        let _ = cluster.propose(old, Bytes::from(format!("stale-{n}")));
    }
    cluster.run_ticks(2);
    // The majority elects a leader and commits 50 entries of its own.
    assert!(cluster.run_until(30 * ELECTION, |c| c
        .leader()
        .is_some_and(|l| rest.contains(&l))));
    let new = cluster.leader().expect("checked above");
    let mut last = None;
    for n in 0..50 {
        last = cluster.propose(new, Bytes::from(format!("fresh-{n}"))).ok();
    }
    let last = last.expect("new leader accepts");
    assert!(cluster.wait_applied(&rest, last.index, 20 * ELECTION));
    cluster.reset_message_counts();
    cluster.heal();
    assert!(cluster.wait_applied(&cluster.all_ids(), last.index, 20 * ELECTION));
    let rejections = cluster.count_messages("AppendReject");
    assert!(
        rejections <= 8,
        "two divergent 50-entry tails must be resolved in a few round trips, not one per entry: {rejections} rejections"
    );
    cluster.assert_safe();
}

#[test]
fn message_counts_are_bounded_for_an_election_and_an_idle_second() {
    let mut cluster = cluster(3, 11);
    cluster.reset_message_counts();
    let leader = elect(&mut cluster);
    // Let the no-op commit, then count from a quiet state.
    cluster.run_ticks(3);
    let election_messages = cluster.total_messages();
    assert!(
        election_messages <= 40,
        "an election among 3 nodes should take a few dozen messages, took {election_messages}: {:?}",
        cluster.message_counts
    );
    cluster.reset_message_counts();
    cluster.run_ticks(ELECTION); // one second
    let idle = cluster.total_messages();
    // One heartbeat and one answer per follower per tick.
    assert!(
        idle <= 2 * 2 * ELECTION,
        "idle second took {idle} messages: {:?}",
        cluster.message_counts
    );
    assert_eq!(cluster.leader(), Some(leader));
    cluster.assert_safe();
}

// ----- Restarts and crashes ------------------------------------------------

fn restart_keeps_committed(
    voters: usize,
    seed: u64,
    which: impl Fn(&Cluster, NodeId) -> Vec<NodeId>,
) {
    let mut cluster = cluster(voters, seed);
    let before = cluster.commit_entries(10, 30 * ELECTION);
    let leader = cluster.leader().expect("just committed");
    let digest = cluster.state_digest(leader);
    let victims = which(&cluster, leader);
    for &id in &victims {
        cluster.crash(id);
    }
    cluster.run_ticks(ELECTION);
    for &id in &victims {
        cluster.restart(id);
    }
    // Restarted nodes re-apply what they had from their durable log.
    assert!(
        cluster.wait_applied(&cluster.all_ids(), before.index, 40 * ELECTION),
        "{}",
        cluster.describe()
    );
    let after = cluster.commit_entries(5, 40 * ELECTION);
    assert!(after.index > before.index);
    let _ = digest;
    let digests: Vec<u64> = cluster
        .all_ids()
        .iter()
        .map(|&id| cluster.state_digest(id))
        .collect();
    assert!(digests.windows(2).all(|pair| pair[0] == pair[1]));
    cluster.assert_safe();
}

#[test]
fn restart_of_all_nodes_keeps_committed_entries() {
    restart_keeps_committed(3, 12, |c, _| c.all_ids());
}

#[test]
fn restart_of_the_leader_keeps_committed_entries() {
    restart_keeps_committed(3, 13, |_, leader| vec![leader]);
}

#[test]
fn restart_of_a_majority_keeps_committed_entries() {
    restart_keeps_committed(5, 14, |c, leader| {
        let mut victims = vec![leader];
        victims.extend(others(c, leader).into_iter().take(2));
        victims
    });
}

/// The randomized Figure 8 test: leaders crash at awkward moments so that
/// entries of old terms sit replicated but uncommitted while new leaders
/// come and go.
fn figure_8(seed: u64, unreliable: bool) {
    let mut options = ClusterOptions::new(5, seed);
    if unreliable {
        options.faults = NetworkFaults::UNRELIABLE;
    }
    options.max_message_bytes = 1; // separate acknowledgements per entry
    let mut cluster = Cluster::new(options);
    let mut up = 5;
    for round in 0..300 {
        if let Some(leader) = cluster.leader() {
            let _ = cluster.propose(leader, Bytes::from(format!("f8-{round}")));
        }
        let pause = if cluster.rng().range(0, 10) == 0 {
            cluster.rng().range(0, 2 * ELECTION)
        } else {
            cluster.rng().range(0, 3)
        };
        cluster.run_ticks(pause);
        if let Some(leader) = cluster.leader() {
            if cluster.rng().range(0, 2) == 0 {
                cluster.crash(leader);
                up -= 1;
            }
        }
        if up < 3 {
            let down: Vec<NodeId> = cluster
                .all_ids()
                .into_iter()
                .filter(|&id| !cluster.is_up(id))
                .collect();
            let at = cluster.rng().range(0, down.len() as u64) as usize;
            cluster.restart(down[at]);
            up += 1;
        }
    }
    cluster.heal();
    cluster.network.faults = NetworkFaults::RELIABLE;
    for id in cluster.all_ids() {
        cluster.restart(id);
    }
    if let Err(violation) = cluster.check_liveness(40 * ELECTION) {
        panic!("{violation}");
    }
    cluster.commit_entries(1, 40 * ELECTION);
    cluster.assert_safe();
}

#[test]
fn figure_8_leader_crashes_with_old_term_entries() {
    for seed in 0..10 {
        figure_8(100 + seed, false);
    }
}

#[test]
fn figure_8_on_an_unreliable_network() {
    for seed in 0..10 {
        figure_8(200 + seed, true);
    }
}

#[test]
fn churn_with_crashes_converges() {
    let mut options = ClusterOptions::new(5, 15);
    options.faults = NetworkFaults::UNRELIABLE;
    let mut cluster = Cluster::new(options);
    for round in 0..400 {
        if let Some(leader) = cluster.leader() {
            let _ = cluster.propose(leader, Bytes::from(format!("churn-{round}")));
        }
        let ids = cluster.all_ids();
        let victim = ids[cluster.rng().range(0, ids.len() as u64) as usize];
        match cluster.rng().range(0, 10) {
            0 => cluster.crash(victim),
            1 | 2 => cluster.restart(victim),
            _ => {}
        }
        cluster.tick();
    }
    cluster.network.faults = NetworkFaults::RELIABLE;
    for id in cluster.all_ids() {
        cluster.restart(id);
    }
    let last = cluster.commit_entries(1, 40 * ELECTION);
    assert!(cluster.wait_applied(&cluster.all_ids(), last.index, 40 * ELECTION));
    cluster.assert_safe();
}

// ----- Snapshots -----------------------------------------------------------

#[test]
fn snapshot_install_to_a_lagging_follower() {
    let mut cluster = cluster(3, 16);
    let leader = elect(&mut cluster);
    let laggard = others(&cluster, leader)[0];
    cluster.crash(laggard);
    let last = cluster.commit_entries(100, 40 * ELECTION);
    for id in cluster.up_nodes() {
        cluster
            .compact(id, 0)
            .expect("compaction at the applied index");
    }
    assert!(cluster.raft(leader).first_index() > 100);
    cluster.reset_message_counts();
    cluster.restart(laggard);
    assert!(
        cluster.wait_applied(&[laggard], last.index, 20 * ELECTION),
        "{}",
        cluster.describe()
    );
    assert!(
        cluster.count_messages("InstallSnapshot") >= 1,
        "caught up through a snapshot"
    );
    assert_eq!(cluster.state_digest(laggard), cluster.state_digest(leader));
    cluster.commit_entries(5, 20 * ELECTION);
    cluster.assert_safe();
}

#[test]
fn snapshot_install_survives_crashes_of_the_receiver() {
    let mut options = ClusterOptions::new(3, 17);
    options.crash_in_ready_per_mille = 0;
    let mut cluster = Cluster::new(options);
    let leader = elect(&mut cluster);
    let laggard = others(&cluster, leader)[0];
    cluster.crash(laggard);
    let last = cluster.commit_entries(60, 40 * ELECTION);
    cluster.compact(leader, 0).expect("compaction");
    cluster.restart(laggard);
    // Crash the receiver right after it receives the snapshot, several times.
    for _ in 0..3 {
        cluster.reset_message_counts();
        cluster.run_until(10 * ELECTION, |c| c.count_messages("InstallSnapshot") > 0);
        cluster.tick();
        cluster.crash(laggard);
        cluster.run_ticks(2);
        cluster.restart(laggard);
    }
    assert!(
        cluster.wait_applied(&[laggard], last.index, 40 * ELECTION),
        "{}",
        cluster.describe()
    );
    assert_eq!(cluster.state_digest(laggard), cluster.state_digest(leader));
    cluster.assert_safe();
}

// ----- PreVote and CheckQuorum ---------------------------------------------

#[test]
fn pre_vote_stops_a_rejoining_partitioned_node_from_disturbing_the_leader() {
    let mut cluster = cluster(3, 18);
    let leader = elect(&mut cluster);
    let term = cluster.raft(leader).term();
    let loner = others(&cluster, leader)[0];
    cluster.isolate(loner);
    cluster.run_ticks(50 * ELECTION);
    assert_eq!(
        cluster.raft(loner).term(),
        term,
        "pre-votes never succeed, so the term does not grow"
    );
    cluster.heal();
    cluster.run_ticks(5 * ELECTION);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.raft(leader).term(), term);
    cluster.assert_safe();
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut cluster = cluster(3, 19);
    let leader = elect(&mut cluster);
    cluster.isolate(leader);
    assert!(
        cluster.run_until(2 * ELECTION + 1, |c| c.raft(leader).role() != Role::Leader),
        "an isolated leader must step down within two election timeouts"
    );
    cluster.assert_safe();
}

// ----- Reads ---------------------------------------------------------------

#[test]
fn read_index_at_leader_and_follower_covers_committed_writes() {
    let mut cluster = cluster(3, 20);
    let written = cluster.commit_entries(5, 30 * ELECTION);
    let leader = cluster.leader().expect("just committed");
    let follower = others(&cluster, leader)[0];
    let at_leader = cluster.read_index(leader).expect("leader reads");
    let at_follower = cluster.read_index(follower).expect("follower forwards");
    assert!(
        cluster.run_until(5 * ELECTION, |c| c.completed_reads.contains_key(&at_leader)
            && c.completed_reads.contains_key(&at_follower))
    );
    assert!(cluster.completed_reads[&at_leader] >= written.index);
    assert!(cluster.completed_reads[&at_follower] >= written.index);
    // A burst of reads shares heartbeat rounds.
    cluster.reset_message_counts();
    let burst: Vec<u64> = (0..100)
        .map(|_| cluster.read_index(leader).expect("leader reads"))
        .collect();
    assert!(cluster.run_until(5 * ELECTION, |c| burst
        .iter()
        .all(|id| c.completed_reads.contains_key(id))));
    assert!(
        cluster.count_messages("Heartbeat") <= 20,
        "100 reads batched: {:?}",
        cluster.message_counts
    );
    cluster.assert_safe();
}

#[test]
fn read_index_on_a_deposed_leader_never_returns() {
    let mut cluster = cluster(3, 21);
    let old = elect(&mut cluster);
    cluster.commit_entries(1, 30 * ELECTION);
    cluster.isolate(old);
    let stale_read = cluster.read_index(old).expect("it still believes it leads");
    assert!(cluster.run_until(30 * ELECTION, |c| c.leader().is_some_and(|l| l != old)));
    let new = cluster.leader().expect("checked above");
    let _ = cluster.propose(new, Bytes::from_static(b"after the split"));
    cluster.run_ticks(30 * ELECTION);
    assert!(
        !cluster.completed_reads.contains_key(&stale_read),
        "a deposed leader answered a linearizable read"
    );
    cluster.assert_safe();
}

// ----- Leadership transfer -------------------------------------------------

#[test]
fn leadership_transfer_to_a_caught_up_and_to_a_lagging_follower() {
    let mut cluster = cluster(3, 22);
    let leader = elect(&mut cluster);
    cluster.commit_entries(3, 30 * ELECTION);
    let target = others(&cluster, leader)[0];
    cluster
        .transfer_leadership(leader, target)
        .expect("transfer accepted");
    assert!(
        cluster.run_until(ELECTION, |c| c.leader() == Some(target)),
        "{}",
        cluster.describe()
    );
    assert!(cluster.run_until(ELECTION, |c| c.raft(leader).leader() == target));
    assert_eq!(
        cluster.propose(leader, Bytes::new()),
        Err(RaftError::NotLeader { leader: target })
    );

    // A lagging target is caught up first.
    let lagging = others(&cluster, target)
        .into_iter()
        .find(|&id| id != leader)
        .expect("third node");
    cluster.network.block_one_way(target, lagging);
    let mut last = None;
    for n in 0..20 {
        last = cluster.propose(target, Bytes::from(format!("t{n}"))).ok();
    }
    let last = last.expect("the new leader accepts");
    assert!(
        cluster.wait_applied(&[target, leader], last.index, 10 * ELECTION),
        "{}",
        cluster.describe()
    );
    assert!(
        cluster.applied_index(lagging) < last.index,
        "the target lags"
    );
    cluster.heal();
    cluster
        .transfer_leadership(target, lagging)
        .expect("transfer accepted");
    assert!(
        cluster.run_until(2 * ELECTION, |c| c.leader() == Some(lagging)),
        "{}",
        cluster.describe()
    );
    cluster.commit_entries(1, 30 * ELECTION);
    cluster.assert_safe();
}

// ----- Membership ----------------------------------------------------------

#[test]
fn add_learner_promote_and_remove_a_follower() {
    let mut cluster = cluster(3, 23);
    let leader = elect(&mut cluster);
    let last = cluster.commit_entries(10, 30 * ELECTION);
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::AddLearner, 4))
        .expect("add learner");
    assert!(
        cluster.wait_applied(&[4], last.index + 1, 20 * ELECTION),
        "the learner catches up"
    );
    assert_eq!(cluster.raft(leader).conf_state().learners, vec![4]);
    // Another change waits until the first is applied.
    cluster.run_ticks(2);
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::AddVoter, 4))
        .expect("promote");
    assert!(
        cluster.run_until(20 * ELECTION, |c| c.raft(leader).conf_state().voters
            == vec![1, 2, 3, 4])
    );
    let follower = others(&cluster, leader)
        .into_iter()
        .find(|&id| id != 4)
        .expect("a follower");
    assert!(
        cluster.run_until(5 * ELECTION, |c| c.raft(leader).applied_index()
            >= c.raft(leader).commit_index())
    );
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::Remove, follower))
        .expect("remove");
    assert!(cluster.run_until(20 * ELECTION, |c| !c
        .raft(leader)
        .conf_state()
        .contains(follower)));
    cluster.crash(follower);
    cluster.commit_entries(3, 30 * ELECTION);
    cluster.assert_safe();
}

#[test]
fn a_learner_never_votes_and_never_counts_toward_a_quorum() {
    let mut cluster = cluster(3, 24);
    cluster.commit_entries(1, 30 * ELECTION);
    let leader = cluster.leader().expect("just committed");
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::AddLearner, 4))
        .expect("add learner");
    let last = cluster.commit_entries(1, 30 * ELECTION);
    assert!(cluster.wait_applied(&[4], last.index, 20 * ELECTION));
    // Two voters down: the leader plus the learner are not a quorum.
    let followers = others(&cluster, leader)
        .into_iter()
        .filter(|&id| id != 4)
        .collect::<Vec<_>>();
    for &id in &followers {
        cluster.crash(id);
    }
    let position = cluster.propose(leader, Bytes::from_static(b"needs a voter quorum"));
    cluster.run_ticks(30 * ELECTION);
    if let Ok(position) = position {
        assert!(
            cluster.raft(4).commit_index() < position.index,
            "a learner's ack must not count"
        );
    }
    assert_eq!(
        cluster.raft(4).role(),
        Role::Follower,
        "a learner never campaigns"
    );
    assert_ne!(cluster.leader(), Some(4));
    cluster.assert_safe();
}

#[test]
fn removing_the_leader_hands_over_to_the_remaining_voters() {
    let mut cluster = cluster(3, 25);
    let leader = elect(&mut cluster);
    cluster.commit_entries(2, 30 * ELECTION);
    cluster.run_ticks(2);
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::Remove, leader))
        .expect("remove leader");
    assert!(
        // The removed leader hands over with TimeoutNow: a successor within an
        // election timeout, not after one.
        cluster.run_until(ELECTION, |c| c.leader().is_some_and(|l| l != leader)),
        "{}",
        cluster.describe()
    );
    let new = cluster.leader().expect("checked above");
    assert_eq!(
        cluster.raft(new).conf_state().voters,
        others(&cluster, leader)
    );
    assert_ne!(cluster.raft(leader).role(), Role::Leader);
    cluster.crash(leader);
    cluster.commit_entries(3, 30 * ELECTION);
    cluster.assert_safe();
}

#[test]
fn a_second_membership_change_waits_for_the_first() {
    let mut cluster = cluster(3, 26);
    let leader = elect(&mut cluster);
    cluster.commit_entries(1, 30 * ELECTION);
    cluster.run_ticks(2);
    cluster
        .propose_conf_change(leader, change(ConfChangeKind::AddLearner, 4))
        .expect("first change");
    assert_eq!(
        cluster.propose_conf_change(leader, change(ConfChangeKind::AddLearner, 5)),
        Err(RaftError::ConfChangeInProgress)
    );
    cluster.assert_safe();
}

#[test]
fn founding_members_that_crash_before_their_bootstrap_is_durable_bootstrap_again() {
    let mut options = ClusterOptions::new(3, 27);
    // Every member crashes while handling its very first Ready.
    options.crash_in_ready_per_mille = 1000;
    let mut cluster = Cluster::new(options);
    assert!(cluster.up_nodes().is_empty());
    cluster.options.crash_in_ready_per_mille = 0;
    for id in cluster.all_ids() {
        cluster.restart(id);
    }
    cluster.commit_entries(3, 30 * ELECTION);
    for id in cluster.all_ids() {
        assert_eq!(cluster.raft(id).conf_state().voters, vec![1, 2, 3]);
    }
    cluster.assert_safe();
}
