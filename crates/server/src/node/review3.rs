//! Adversarial review of issue 11 items 2, 6, 8, 10 (branch review3). Each
//! test here states what the change claims and fails where the claim does
//! not hold. Same style as `tests.rs`: members wired by hand, one thread,
//! no sockets, no clocks; the harness is a copy of that module's, with an
//! outbox that also hands snapshots over and an applier that can be held.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft::{Entry, HardState, Message, MessageBody, NodeId, Raft, SnapshotMetadata};

use super::applier::Applier;
use super::driver::{Driver, Flow};
use super::inbox::{Input, InputReceiver, InputSender};
use super::load::{INPUT_QUEUE_MAX, PENDING_PROPOSALS_MAX};
use super::ports::{
    LogStorage, Outbox, PeerEvent, SnapshotJob, SnapshotSend, StateMachine, StorageError,
};
use super::proposal::{ProposalResult, RequestId};
use super::{inbox, raft_config, NodeError, NodeHandle, NodeOptions, Parts, PendingProposal};

#[derive(Clone, Default)]
struct MemoryLog;

impl LogStorage for MemoryLog {
    fn persist(
        &mut self,
        _hard_state: Option<HardState>,
        _entries: &[Entry],
        _snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    fn compacted(&mut self, _snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Answers every entry with its index; records the payloads.
#[derive(Default)]
struct Recorder {
    applied: Vec<Bytes>,
    applied_index: u64,
    /// Set when a snapshot replaced the state.
    installed: Option<u64>,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, _term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        if !payload.is_empty() {
            self.applied.push(payload);
        }
        self.applied_index = index;
        Ok(Bytes::from(index.to_string()))
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError> {
        self.applied_index = entry.index;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        self.applied_index = snapshot.index;
        self.installed = Some(snapshot.index);
        Ok(())
    }

    fn snapshot_job(&mut self, _snapshot: &SnapshotMetadata) -> Result<SnapshotJob, StorageError> {
        Ok(Box::new(|_| Ok(())))
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

#[derive(Default)]
struct Sent {
    messages: Vec<Message>,
    snapshots: Vec<Message>,
    forwards: Vec<(NodeId, Vec<Bytes>)>,
    refusals: Vec<(NodeId, Vec<RequestId>)>,
}

#[derive(Clone, Default)]
struct RecordingOutbox {
    sent: Arc<Mutex<Sent>>,
}

impl Outbox for RecordingOutbox {
    fn send(&mut self, messages: Vec<Message>, _unreachable: &mut Vec<NodeId>) {
        self.sent.lock().expect("lock").messages.extend(messages);
    }

    /// Unlike `tests.rs`, snapshots are handed over (the test delivers them
    /// like any message: the data is already "durable" at the receiver).
    fn send_snapshot(&mut self, message: &Message) -> SnapshotSend {
        self.sent
            .lock()
            .expect("lock")
            .snapshots
            .push(message.clone());
        SnapshotSend::Started
    }

    fn forward(&mut self, leader: NodeId, proposals: Vec<Bytes>) -> bool {
        self.sent
            .lock()
            .expect("lock")
            .forwards
            .push((leader, proposals));
        true
    }

    fn refuse(&mut self, origin: NodeId, request_ids: Vec<RequestId>) {
        self.sent
            .lock()
            .expect("lock")
            .refusals
            .push((origin, request_ids));
    }
}

struct Member {
    id: NodeId,
    driver: Driver<MemoryLog, RecordingOutbox>,
    applier: Applier,
    state_machine: Recorder,
    handle: NodeHandle,
    input: InputSender,
    inbox: InputReceiver,
    outbox: RecordingOutbox,
    stopped: bool,
}

fn options() -> NodeOptions {
    NodeOptions {
        tick_interval: Duration::from_millis(10),
        request_timeout: Duration::from_secs(5),
        snapshot_count: u64::MAX,
        snapshot_catchup_entries: 100,
    }
}

impl Member {
    fn new(id: NodeId, voters: &[NodeId]) -> Member {
        let raft = Raft::bootstrap(raft_config(id, 10, 100, id), voters).expect("bootstrap");
        let (_peer_events, inbox) = inbox();
        let outbox = RecordingOutbox::default();
        let input = inbox.sender.clone();
        let Parts {
            driver,
            applier,
            handle,
        } = Parts::new(raft, MemoryLog, outbox.clone(), inbox.sender, 0, &options());
        Member {
            id,
            driver,
            applier,
            state_machine: Recorder::default(),
            handle,
            input,
            inbox: inbox.receiver,
            outbox,
            stopped: false,
        }
    }

    fn pump(&mut self) {
        if self.stopped {
            return;
        }
        let mut inputs = Vec::new();
        while let Ok(input) = self.inbox.try_recv() {
            inputs.push(input);
        }
        if self.driver.round(inputs) == Flow::Stop {
            self.stopped = true;
        }
        while let Ok(batch) = self.applier.batches.try_recv() {
            self.applier
                .apply_batch(&mut self.state_machine, &batch)
                .expect("apply");
        }
    }

    fn deliver(&self, event: PeerEvent) {
        self.input
            .try_send(Input::Peer(event))
            .unwrap_or_else(|_| panic!("member {} stopped or full", self.id));
    }

    fn take_sent(&self) -> Sent {
        std::mem::take(&mut *self.outbox.sent.lock().expect("lock"))
    }

    fn propose(&self, payload: &str) -> PendingProposal {
        self.handle
            .start_proposal(payload.as_bytes())
            .expect("queued")
    }

    fn is_leader(&self) -> bool {
        self.driver.raft.role() == raft::Role::Leader
    }
}

struct Cluster {
    members: Vec<Member>,
    cut: Vec<(NodeId, NodeId)>,
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).collect();
        Cluster {
            members: voters.iter().map(|&id| Member::new(id, &voters)).collect(),
            cut: Vec::new(),
        }
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        &mut self.members[(id - 1) as usize]
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.members.iter().map(|member| member.id) {
            if other != id {
                self.cut.push((id, other));
                self.cut.push((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn step(&mut self) -> bool {
        let mut traffic = false;
        for position in 0..self.members.len() {
            self.members[position].pump();
            let from = self.members[position].id;
            let sent = self.members[position].take_sent();
            for message in sent.messages.into_iter().chain(sent.snapshots) {
                traffic = true;
                if !self.cut.contains(&(from, message.to)) {
                    self.member(message.to)
                        .deliver(PeerEvent::Received(message));
                }
            }
            for (to, proposals) in sent.forwards {
                traffic = true;
                if !self.cut.contains(&(from, to)) {
                    self.member(to)
                        .deliver(PeerEvent::Forwarded { from, proposals });
                }
            }
            for (to, request_ids) in sent.refusals {
                traffic = true;
                if !self.cut.contains(&(from, to)) {
                    self.member(to).deliver(PeerEvent::Refused { request_ids });
                }
            }
        }
        traffic
    }

    fn settle(&mut self) {
        for _ in 0..200 {
            if !self.step() {
                return;
            }
        }
        panic!("the cluster did not settle in 200 rounds");
    }

    fn elect(&mut self, id: NodeId) {
        self.member(id).driver.raft.campaign_now();
        self.settle();
        assert!(self.member(id).is_leader(), "member {id} did not win");
        self.settle();
    }

    fn tick(&mut self) {
        for member in &self.members {
            if !member.stopped {
                member.input.try_send(Input::Tick).expect("room for a tick");
            }
        }
        self.settle();
    }

    fn tick_until_leader(&mut self, candidates: &[NodeId]) -> NodeId {
        for _ in 0..1000 {
            for member in &self.members {
                if !member.stopped {
                    member.input.try_send(Input::Tick).expect("room for a tick");
                }
            }
            self.step();
            if let Some(leader) = candidates
                .iter()
                .copied()
                .find(|&id| self.members[(id - 1) as usize].is_leader())
            {
                self.settle();
                return leader;
            }
        }
        panic!("none of {candidates:?} became leader in 1000 ticks");
    }
}

fn answered_index(result: Option<ProposalResult>) -> u64 {
    let answer = result
        .expect("answered")
        .unwrap_or_else(|error| panic!("failed: {error}"));
    std::str::from_utf8(&answer)
        .expect("utf-8")
        .parse()
        .expect("an index")
}

/// Claim (architecture.md, `NodeHandle::propose`, `NodeError::LeaderChanged`):
/// a local write answered `leader changed` is one "whose index then holds
/// another term's entry ... can never apply".
///
/// Attack: leader 1 appends W and replicates it to member 2 only; the ack
/// is lost and 1 is cut off. Member 2 wins the election (its log is the most
/// up to date), commits W (its term-1 entry, under its own no-op) and
/// applies it. Member 2 then snapshots and compacts its log, so when 1
/// comes back it is caught up by an `InstallSnapshot` rather than entries.
/// The snapshot replaces 1's log, `log_term(W's index)` becomes `None`, and
/// `resolve_proposed` fails W with `leader changed`, although W committed
/// and is in the state every member now holds (1 included, via the
/// snapshot). The outcome is unknown at best (the code comment in
/// `resolve_proposed` admits it), never "replaced".
#[test]
fn a_committed_write_caught_up_by_snapshot_is_not_answered_leader_changed() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);

    // 1's appends reach 2 only; nothing comes back to 1.
    cluster.cut = vec![(1, 3), (2, 1), (3, 1)];
    let mut write = cluster.member(1).propose("W");
    cluster.step();
    let w_index = cluster.member(1).driver.raft.last_index();
    let w_term = cluster.member(1).driver.raft.log_term(w_index);
    assert_eq!(
        cluster.member(2).driver.raft.log_term(w_index),
        w_term,
        "member 2 holds W"
    );
    assert!(cluster.member(1).driver.raft.commit_index() < w_index);

    cluster.heal();
    cluster.isolate(1);
    let leader = cluster.tick_until_leader(&[2, 3]);
    assert_eq!(leader, 2, "only member 2's log is up to date");
    cluster.settle();
    assert!(cluster.member(2).driver.raft.commit_index() >= w_index);
    assert!(
        cluster
            .member(2)
            .state_machine
            .applied
            .iter()
            .any(|payload| &payload[..] == b"W"),
        "W committed and was applied by the new leader"
    );

    // Some more writes; then the leader snapshots and drops its log.
    let _later: Vec<PendingProposal> = (0..3)
        .map(|n| cluster.member(2).propose(&format!("later{n}")))
        .collect();
    cluster.settle();
    let applied = cluster.member(2).driver.raft.applied_index();
    cluster
        .member(2)
        .driver
        .raft
        .create_snapshot(applied, Bytes::new())
        .expect("snapshot");
    cluster
        .member(2)
        .driver
        .raft
        .compact_log(applied)
        .expect("compact");

    cluster.heal();
    for _ in 0..5 {
        cluster.tick();
    }
    assert!(
        cluster.member(1).state_machine.installed.is_some(),
        "member 1 was caught up by the snapshot"
    );
    assert_eq!(cluster.member(1).driver.raft.leader(), 2);

    let answer = write.try_result();
    assert_ne!(
        answer,
        Some(Err(NodeError::LeaderChanged)),
        "W committed at index {w_index} (applied on member 2, and in the \
         snapshot member 1 installed) but its client heard `leader changed`, \
         which the node documents as 'its entry was replaced, can never apply'"
    );
}

/// Claim (load.rs, architecture.md): "A write is refused ... while 10,000 of
/// this member's proposals wait for their entries", and the input queue
/// leaves 1,024 places that only peer events, ticks and snapshot reports
/// can use: "a client sees a full queue only if peer traffic also filled
/// the headroom".
///
/// Attack: a client that gives up at once (a gRPC deadline of a few
/// milliseconds, or a disconnect) drops its handler future, and
/// `PendingProposal::drop` gives back the waiter at once, while the
/// `Input::Propose` it queued stays queued and is proposed anyway. So
/// client inputs alone fill the whole queue, headroom included, and the
/// member holds far more than 10,000 proposals of its own in flight
/// (queued, appended, uncommitted), none refused.
#[test]
fn cancelled_writes_give_back_their_place_but_stay_in_flight_past_every_bound() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    // The followers are slow (their acks do not come): nothing commits. No
    // ticks, so CheckQuorum does not step in.
    cluster.isolate(1);

    // 1) Client inputs alone fill the headroom meant for peer events.
    let mut queued = 0usize;
    loop {
        match cluster.member(1).handle.start_proposal(b"gone") {
            Ok(pending) => {
                drop(pending); // the client went away
                queued += 1;
            }
            Err(NodeError::TooManyRequests) => break,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(queued <= INPUT_QUEUE_MAX, "queue bound broken");
    }
    let peer_event_fits = cluster
        .member(1)
        .input
        .try_send(Input::Peer(PeerEvent::Unreachable(2)))
        .is_ok();

    // 2) Three times the pending-proposals bound, in flight at once.
    cluster.member(1).pump();
    let mut accepted = queued;
    while accepted < 3 * PENDING_PROPOSALS_MAX {
        for _ in 0..1_000 {
            drop(cluster.member(1).propose("gone"));
            accepted += 1;
        }
        cluster.member(1).pump();
    }
    let raft = &cluster.member(1).driver.raft;
    let uncommitted = raft.last_index() - raft.commit_index();

    assert!(
        peer_event_fits && uncommitted <= PENDING_PROPOSALS_MAX as u64,
        "client inputs alone filled the input queue ({queued} of \
         {INPUT_QUEUE_MAX}; a peer event fits: {peer_event_fits}), and member \
         1 holds {uncommitted} of its own writes appended but uncommitted \
         (bound: {PENDING_PROPOSALS_MAX}) while reporting {} pending",
        cluster.member(1).handle.load().pending_proposals
    );
}

/// Claim (`NodeHandle::propose_conf_change`): waits until the change is
/// applied and returns its position. It waits only for the applied index to
/// reach the position's index, never checking that the entry there is the
/// change (same term): a change a new leader's entry replaced is reported
/// applied. (Not reachable from a client yet: MemberAdd/Remove are not
/// served; reported because the same "lost to a new leader" rule the
/// change added for writes is missing here.)
#[test]
fn a_conf_change_replaced_by_a_new_leaders_entry_is_not_reported_applied() {
    use futures_util::FutureExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _context = runtime.enter();
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.isolate(1);
    let handle = cluster.member(1).handle.clone();
    let mut change = Box::pin(handle.propose_conf_change(
        raft::ConfChange {
            change: raft::ConfChangeKind::AddLearner,
            node_id: 4,
            context: Bytes::new(),
        },
        Duration::from_secs(3600),
    ));
    assert!((&mut change).now_or_never().is_none());
    cluster.step();
    let index = cluster.member(1).driver.raft.last_index();
    let term = cluster.member(1).driver.raft.log_term(index);
    let leader = cluster.tick_until_leader(&[2, 3]);
    // The new leader writes past that index, so the replaced one commits.
    let _writes: Vec<PendingProposal> = (0..3)
        .map(|n| cluster.member(leader).propose(&format!("w{n}")))
        .collect();
    cluster.settle();
    cluster.heal();
    cluster.tick();
    cluster.tick();
    assert!(cluster.member(1).driver.raft.applied_index() >= index);
    assert_ne!(cluster.member(1).driver.raft.log_term(index), term);
    assert!(
        !cluster
            .member(1)
            .driver
            .raft
            .conf_state()
            .learners
            .contains(&4),
        "the change was not applied"
    );
    let outcome = change.now_or_never();
    assert!(
        !matches!(outcome, Some(Ok(_))),
        "a conf change whose entry was replaced is reported applied: {outcome:?}"
    );
}
