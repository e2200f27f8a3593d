//! Installing snapshots received from the leader: the leader's engine is
//! streamed in chunks into a new generation beside the follower's, staged
//! for the Raft message it came with, and installed by the state machine
//! (`install_received`) before Raft may record it (`install_snapshot`).
//! An install never rolls the state back, installs only what was staged
//! for that message, and a damaged stream never reaches the state.

mod common;

use bytes::Bytes;
use common::put_request;
use raft::{ConfState, SnapshotMetadata};
use server::node::StateMachine;
use server::state::{KvStateMachine, SharedState};

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1, 2, 3]),
    }
}

/// A member's state machine on an engine in a temporary directory.
struct Machine {
    _dir: tempfile::TempDir,
    state: SharedState,
    machine: KvStateMachine,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().expect("engine dir");
        let state =
            SharedState::open(dir.path(), &mvcc::StoreOptions::default()).expect("open engine");
        let machine = KvStateMachine::new(state.clone()).expect("state machine");
        Machine {
            _dir: dir,
            state,
            machine,
        }
    }

    /// Applies puts of `at` = the index at every index up to `index` (term
    /// `term`) and commits them.
    fn apply_to(&mut self, index: u64, term: u64) {
        let from = self.machine.applied_index() + 1;
        for at in from..=index {
            let request = put_request(b"at", at.to_string().as_bytes());
            self.machine
                .apply(at, term, Bytes::from(request))
                .expect("apply");
        }
        self.machine.commit().expect("commit");
    }

    fn value(&self, key: &[u8]) -> Option<String> {
        let state = self.state.read().expect("state");
        let response = state
            .store
            .range(&proto::etcdserverpb::RangeRequest {
                key: key.to_vec().into(),
                ..Default::default()
            })
            .expect("range");
        response
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    fn hash(&self) -> u32 {
        self.state
            .read()
            .expect("state")
            .store
            .hash_kv(0)
            .expect("hash")
            .0
    }

    /// Receives `leader`'s engine as a transfer does, and stages it for
    /// the Raft message `message`.
    fn receive_from(&self, leader: &Machine, message: &SnapshotMetadata) {
        let mut installer = self.state.snapshot_installer().expect("installer");
        for chunk in leader.state.snapshot_stream().expect("stream") {
            installer.push(&chunk.expect("chunk")).expect("push");
        }
        assert!(installer.is_complete());
        self.state.stage_received(message.clone(), installer);
    }
}

#[test]
fn a_received_snapshot_becomes_the_state_before_raft_records_it() {
    let mut leader = Machine::new();
    leader.apply_to(20, 3);
    let mut follower = Machine::new();
    follower.apply_to(4, 2);

    // Raft's message names index 15; the leader's engine is at 20.
    follower.receive_from(&leader, &meta(15, 3));
    assert!(follower
        .machine
        .install_received(&meta(15, 3))
        .expect("install"));
    assert_eq!(follower.machine.applied_index(), 20);
    assert_eq!(follower.value(b"at").as_deref(), Some("20"));
    assert_eq!(
        follower.hash(),
        leader.hash(),
        "the follower holds the leader's state"
    );
    follower
        .machine
        .install_snapshot(&meta(15, 3))
        .expect("Raft records what the state holds");
    // Entries 16..=20 come again from the log: the state reflects them.
    assert!((16..=20).all(|index| follower.machine.reflects(index)));
    assert!(!follower.machine.reflects(21));
    follower.apply_to(21, 3);
    assert_eq!(follower.value(b"at").as_deref(), Some("21"));
}

#[test]
fn an_install_never_rolls_the_state_back() {
    let mut leader = Machine::new();
    leader.apply_to(10, 2);
    let mut follower = Machine::new();
    follower.apply_to(12, 2);
    follower.receive_from(&leader, &meta(10, 2));
    assert!(follower
        .machine
        .install_received(&meta(10, 2))
        .expect("install"));
    assert_eq!(follower.machine.applied_index(), 12, "nothing was replaced");
    assert_eq!(follower.value(b"at").as_deref(), Some("12"));
}

#[test]
fn only_the_snapshot_staged_for_the_message_is_installed() {
    let mut leader = Machine::new();
    leader.apply_to(10, 2);
    let follower = Machine::new();
    follower.receive_from(&leader, &meta(8, 2));
    let mut follower = follower;
    // A newer transfer replaced it, or none was staged for this message.
    assert!(!follower
        .machine
        .install_received(&meta(9, 2))
        .expect("install"));
    assert_eq!(follower.machine.applied_index(), 0);
    assert!(
        follower.machine.install_snapshot(&meta(9, 2)).is_err(),
        "Raft may not record a snapshot the state does not hold"
    );
}

#[test]
fn a_stream_older_than_its_message_is_dropped() {
    let mut leader = Machine::new();
    leader.apply_to(5, 2);
    let mut follower = Machine::new();
    follower.receive_from(&leader, &meta(9, 2));
    assert!(!follower
        .machine
        .install_received(&meta(9, 2))
        .expect("install"));
    assert_eq!(follower.machine.applied_index(), 0);
}

#[test]
fn a_damaged_chunk_is_refused_and_leaves_the_state_untouched() {
    let mut leader = Machine::new();
    leader.apply_to(10, 2);
    let mut follower = Machine::new();
    follower.apply_to(3, 2);
    let mut installer = follower.state.snapshot_installer().expect("installer");
    let mut chunks: Vec<Vec<u8>> = leader
        .state
        .snapshot_stream()
        .expect("stream")
        .map(|chunk| chunk.expect("chunk"))
        .collect();
    let middle = chunks[0].len() / 2;
    chunks[0][middle] ^= 0x40;
    assert!(
        installer.push(&chunks[0]).is_err(),
        "a flipped bit is caught"
    );
    drop(installer);
    assert_eq!(follower.machine.applied_index(), 3);
    assert_eq!(follower.value(b"at").as_deref(), Some("3"));
}
