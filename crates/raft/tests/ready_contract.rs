//! The Ready contract: which messages may leave before persistence.
//!
//! A leader's AppendEntries and heartbeats may be sent at once (the leader
//! writes its log in parallel with replicating it); a vote and an append
//! acknowledgement promise durable state and must wait for it.

use bytes::Bytes;
use raft::{Config, Message, MessageBody, Raft, Role};

fn node(id: u64) -> Raft {
    Raft::bootstrap(Config::new(id), &[1, 2, 3]).expect("bootstrap")
}

/// Runs Readys until quiet, delivering every message at once; returns what
/// was sent, tagged with whether it went out before persistence.
fn settle(nodes: &mut [Raft]) -> Vec<(bool, Message)> {
    let mut sent = Vec::new();
    loop {
        let mut queue = Vec::new();
        for raft in nodes.iter_mut() {
            while raft.has_ready() {
                let ready = raft.ready();
                for message in &ready.messages {
                    sent.push((true, message.clone()));
                }
                for message in &ready.persisted_messages {
                    sent.push((false, message.clone()));
                }
                queue.extend(ready.messages.iter().cloned());
                queue.extend(ready.persisted_messages.iter().cloned());
                raft.advance(ready);
            }
        }
        if queue.is_empty() {
            return sent;
        }
        for message in queue {
            let to = message.to;
            nodes[(to - 1) as usize].step(message);
        }
    }
}

#[test]
fn only_leader_traffic_leaves_before_persistence() {
    let mut nodes: Vec<Raft> = (1..=3).map(node).collect();
    settle(&mut nodes);
    nodes[0].campaign_now();
    let mut sent = settle(&mut nodes);
    assert_eq!(nodes[0].role(), Role::Leader);
    nodes[0]
        .propose(Bytes::from_static(b"x"))
        .expect("leader accepts");
    sent.extend(settle(&mut nodes));

    for (immediate, message) in &sent {
        match &message.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::RequestVote { .. } => {
                assert!(immediate, "{message:?} may leave before persistence")
            }
            MessageBody::AppendResponse { .. } | MessageBody::VoteResponse { .. } => {
                assert!(
                    !immediate,
                    "{message:?} promises durable state; it must wait for persistence"
                )
            }
            _ => {}
        }
    }
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m.body, MessageBody::AppendEntries { .. })));
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m.body, MessageBody::VoteResponse { .. })));
    assert!(sent
        .iter()
        .any(|(_, m)| matches!(m.body, MessageBody::AppendResponse { .. })));
}

#[test]
fn a_candidate_does_not_win_on_its_own_vote_before_it_is_durable() {
    let mut config = Config::new(1);
    config.pre_vote = false;
    let mut single = Raft::bootstrap(config, &[1]).expect("bootstrap");
    let ready = single.ready();
    single.advance(ready);
    single.campaign_now();
    assert_eq!(
        single.role(),
        Role::Candidate,
        "the self-vote is not durable yet"
    );
    let ready = single.ready();
    assert_eq!(ready.hard_state.map(|hs| hs.vote), Some(1));
    single.advance(ready);
    assert_eq!(
        single.role(),
        Role::Leader,
        "once durable, the self-vote wins a one-voter election"
    );
}
