//! The driver without threads or sockets: members wired by hand, each round
//! run by the test, everything the raft threads send recorded and delivered
//! (or dropped) by the test. Deterministic: Raft's randomness is seeded and
//! nothing waits on a clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft::{Entry, HardState, Message, MessageBody, NodeId, Raft, SnapshotMetadata};

use super::applier::Applier;
use super::driver::{Driver, Flow};
use super::inbox::{Input, InputReceiver, InputSender};
use super::load::{INPUT_QUEUE_MAX, PENDING_PROPOSALS_MAX};
use super::ports::{LogStorage, Outbox, PeerEvent, SnapshotSend, StateMachine, StorageError};
use super::proposal::{unframe_proposal, ProposalResult, RequestId};
use super::{inbox, raft_config, NodeError, NodeHandle, NodeOptions, Parts, PendingProposal};

/// Counts persists; keeps nothing (no test here restarts from it).
#[derive(Clone, Default)]
struct MemoryLog {
    /// Entries of each persist that wrote any.
    persisted_batches: Arc<Mutex<Vec<usize>>>,
}

impl LogStorage for MemoryLog {
    fn persist(
        &mut self,
        _hard_state: Option<HardState>,
        entries: &[Entry],
        _snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        if !entries.is_empty() {
            self.persisted_batches
                .lock()
                .expect("test lock")
                .push(entries.len());
        }
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
    /// Set when Raft recorded a snapshot.
    installed: Option<u64>,
    /// The newest snapshot handed to `install_received`.
    installed_before_raft_knew: u64,
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

    fn reflects(&self, index: u64) -> bool {
        index <= self.applied_index
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn persist(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn install_received(&mut self, snapshot: &SnapshotMetadata) -> Result<bool, StorageError> {
        self.installed_before_raft_knew = self.installed_before_raft_knew.max(snapshot.index);
        if snapshot.index > self.applied_index {
            self.applied_index = snapshot.index;
        }
        Ok(true)
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        assert!(
            self.installed_before_raft_knew >= snapshot.index,
            "Raft recorded snapshot {} before the state machine installed it",
            snapshot.index
        );
        self.installed = Some(snapshot.index);
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// Everything a driver handed its outbox, in order.
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
    /// When set, forwarded writes cannot be queued (the stream to the
    /// leader is full or gone).
    forwards_fail: Arc<Mutex<bool>>,
}

impl Outbox for RecordingOutbox {
    fn send(&mut self, messages: Vec<Message>, _unreachable: &mut Vec<NodeId>) {
        self.sent
            .lock()
            .expect("test lock")
            .messages
            .extend(messages);
    }

    /// Snapshots are handed over: `Cluster::step` delivers them like any
    /// message (the data is already "durable" at the receiver).
    fn send_snapshot(&mut self, message: &Message) -> SnapshotSend {
        self.sent
            .lock()
            .expect("test lock")
            .snapshots
            .push(message.clone());
        SnapshotSend::Started
    }

    fn forward(&mut self, leader: NodeId, proposals: Vec<Bytes>) -> bool {
        if *self.forwards_fail.lock().expect("test lock") {
            return false;
        }
        self.sent
            .lock()
            .expect("test lock")
            .forwards
            .push((leader, proposals));
        true
    }

    fn refuse(&mut self, origin: NodeId, request_ids: Vec<RequestId>) {
        self.sent
            .lock()
            .expect("test lock")
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
    log: MemoryLog,
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
        Member::with_raft(raft)
    }

    fn with_raft(raft: Raft) -> Member {
        let id = raft.id();
        let (_peer_events, inbox) = inbox();
        let log = MemoryLog::default();
        let outbox = RecordingOutbox::default();
        let input = inbox.sender.clone();
        let Parts {
            driver,
            applier,
            handle,
        } = Parts::new(
            raft,
            log.clone(),
            outbox.clone(),
            inbox.sender,
            0,
            &options(),
        );
        Member {
            id,
            driver,
            applier,
            state_machine: Recorder::default(),
            handle,
            input,
            inbox: inbox.receiver,
            log,
            outbox,
            stopped: false,
        }
    }

    /// One round of the raft loop over everything queued, then every batch
    /// it handed the applier.
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
                .apply_batch(&mut self.state_machine, batch)
                .expect("apply");
        }
    }

    fn deliver(&self, event: PeerEvent) {
        self.input
            .try_send(Input::Peer(event))
            .unwrap_or_else(|_| panic!("member {} stopped or full", self.id));
    }

    fn take_sent(&self) -> Sent {
        std::mem::take(&mut *self.outbox.sent.lock().expect("test lock"))
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

/// Members wired by hand: each `step` runs one round on every member and
/// delivers what they sent, except over cut links.
struct Cluster {
    members: Vec<Member>,
    /// Directed links that drop everything: (from, to).
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

    /// Runs a round on every member and delivers its traffic; returns
    /// whether anything was sent.
    fn step(&mut self) -> bool {
        let mut traffic = false;
        for position in 0..self.members.len() {
            self.members[position].pump();
            let from = self.members[position].id;
            let sent = self.members[position].take_sent();
            for message in sent.messages {
                traffic = true;
                if !self.cut.contains(&(from, message.to)) {
                    self.member(message.to)
                        .deliver(PeerEvent::Received(message));
                }
            }
            // As the transport delivers a snapshot whose data arrived whole.
            for message in sent.snapshots {
                traffic = true;
                if !self.cut.contains(&(from, message.to)) {
                    self.member(message.to)
                        .deliver(PeerEvent::SnapshotReceived(message));
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

    /// Steps until nothing is sent any more.
    fn settle(&mut self) {
        for _ in 0..200 {
            if !self.step() {
                return;
            }
        }
        panic!("the cluster did not settle in 200 rounds");
    }

    /// Ticks every member (in rounds of their own) until `id` leads.
    fn elect(&mut self, id: NodeId) {
        self.member(id).driver.raft.campaign_now();
        self.settle();
        assert!(self.member(id).is_leader(), "member {id} did not win");
        // The leader's first entry commits and is applied everywhere.
        self.settle();
    }

    /// One tick on every member, then settle.
    fn tick(&mut self) {
        for member in &self.members {
            if !member.stopped {
                member.input.try_send(Input::Tick).expect("room for a tick");
            }
        }
        self.settle();
    }

    /// Ticks every member until one of `candidates` leads.
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

#[test]
fn a_leader_proposes_what_one_round_drained_with_one_persist() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let batches_before = cluster
        .member(1)
        .log
        .persisted_batches
        .lock()
        .expect("lock")
        .len();
    let mut pending: Vec<PendingProposal> = (0..10)
        .map(|n| cluster.member(1).propose(&format!("w{n}")))
        .collect();
    cluster.member(1).pump();
    let batches = cluster
        .member(1)
        .log
        .persisted_batches
        .lock()
        .expect("lock")
        .clone();
    assert_eq!(
        batches[batches_before..],
        [10],
        "ten proposals drained in one round go to the log in one persist"
    );
    cluster.settle();
    let indexes: Vec<u64> = pending
        .iter_mut()
        .map(|proposal| answered_index(proposal.try_result()))
        .collect();
    let first = indexes[0];
    assert_eq!(indexes, (first..first + 10).collect::<Vec<_>>());
}

#[test]
fn a_follower_forwards_the_writes_it_drained_to_the_leader_in_one_frame() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let mut pending: Vec<PendingProposal> = ["a", "b", "c"]
        .iter()
        .map(|payload| cluster.member(2).propose(payload))
        .collect();
    cluster.member(2).pump();
    let sent = cluster.member(2).take_sent();
    assert_eq!(sent.forwards.len(), 1, "one frame for the round's writes");
    let (to, proposals) = &sent.forwards[0];
    assert_eq!(*to, 1, "forwarded to the leader");
    let payloads: Vec<&[u8]> = proposals
        .iter()
        .map(|data| unframe_proposal(data).expect("framed").1)
        .collect();
    assert_eq!(payloads, [&b"a"[..], b"b", b"c"]);
    assert!(pending.iter_mut().all(|p| p.try_result().is_none()));

    cluster.member(1).deliver(PeerEvent::Forwarded {
        from: 2,
        proposals: proposals.clone(),
    });
    cluster.settle();
    // The follower answers from its own apply, in order.
    let indexes: Vec<u64> = pending
        .iter_mut()
        .map(|proposal| answered_index(proposal.try_result()))
        .collect();
    assert_eq!(indexes, [indexes[0], indexes[0] + 1, indexes[0] + 2]);
    let leader_applied = &cluster.member(1).state_machine.applied;
    assert_eq!(leader_applied.len(), 3);
    assert_eq!(&leader_applied[0][..], b"a");
}

#[test]
fn a_member_that_cannot_propose_refuses_forwarded_writes_and_the_origin_fails_them() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let mut pending = cluster.member(2).propose("to a stale leader");
    cluster.member(2).pump();
    let Sent { forwards, .. } = cluster.member(2).take_sent();
    assert_eq!(forwards.len(), 1);
    // Member 3 follows: it cannot propose what reaches it.
    let (_, proposals) = forwards.into_iter().next().expect("one frame");
    cluster
        .member(3)
        .deliver(PeerEvent::Forwarded { from: 2, proposals });
    cluster.member(3).pump();
    let refused = cluster.member(3).take_sent().refusals;
    assert_eq!(refused.len(), 1, "member 3 refuses: {refused:?}");
    assert_eq!(refused[0].0, 2, "the refusal goes back to the origin");
    let (_, request_ids) = refused.into_iter().next().expect("one refusal");
    assert!(pending.try_result().is_none());
    cluster
        .member(2)
        .deliver(PeerEvent::Refused { request_ids });
    cluster.member(2).pump();
    assert_eq!(
        pending.try_result(),
        Some(Err(NodeError::NoLeader)),
        "never proposed: the client may retry"
    );
    assert!(
        cluster.member(3).state_machine.applied.is_empty(),
        "nothing of it was proposed"
    );
}

#[test]
fn forwarded_writes_that_never_left_fail_at_once() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);

    // The outbox could not queue the frame.
    *cluster.member(2).outbox.forwards_fail.lock().expect("lock") = true;
    let mut unqueued = cluster.member(2).propose("never queued");
    cluster.member(2).pump();
    assert_eq!(unqueued.try_result(), Some(Err(NodeError::NoLeader)));

    // The frame was queued, then the stream broke before it left.
    *cluster.member(2).outbox.forwards_fail.lock().expect("lock") = false;
    let mut unsent = cluster.member(2).propose("queued, never sent");
    cluster.member(2).pump();
    let (_, proposals) = cluster
        .member(2)
        .take_sent()
        .forwards
        .into_iter()
        .next()
        .expect("forwarded");
    cluster
        .member(2)
        .deliver(PeerEvent::NotDelivered { proposals });
    cluster.member(2).pump();
    assert_eq!(unsent.try_result(), Some(Err(NodeError::NoLeader)));

    // A write whose frame did leave is answered when it applies.
    let mut delivered = cluster.member(2).propose("delivered");
    cluster.settle();
    answered_index(delivered.try_result());
}

#[test]
fn a_read_at_a_follower_waits_for_the_leaders_answer() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let mut read = cluster.member(2).handle.start_read().expect("queued");
    cluster.member(2).pump();
    assert!(read.try_recv().is_err(), "not before the leader answers");
    cluster.settle();
    let index = read.try_recv().expect("answered").expect("a read index");
    assert_eq!(index, cluster.member(1).driver.raft.commit_index());
}

#[test]
fn a_partitioned_leaders_messages_can_be_dropped_and_a_new_leader_elected() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.isolate(1);
    let leader = cluster.tick_until_leader(&[2, 3]);
    cluster.heal();
    // The new leader's next heartbeat tells member 1.
    cluster.tick();
    assert!(!cluster.member(1).is_leader());
    let term = cluster.member(leader).driver.raft.term();
    assert_eq!(cluster.member(1).driver.raft.term(), term);
}

/// A read of an earlier run of member 2 whose answer comes late must not
/// release a read of its next run: that would serve the new read at an
/// index older than its own request (a stale linearizable read).
#[test]
fn a_late_read_answer_for_an_earlier_run_is_not_taken_for_this_runs_read() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);

    let _first_run_read = cluster.member(2).handle.start_read().expect("queued");
    cluster.member(2).pump();
    let first_run_request = read_index_request(cluster.member(2).take_sent());

    // Member 2 restarts: a new run of the same member, same id.
    cluster.members[1] = Member::new(2, &[1, 2, 3]);
    cluster.tick();
    assert_eq!(cluster.member(2).driver.raft.leader(), 1);
    let mut second_run_read = cluster.member(2).handle.start_read().expect("queued");
    cluster.member(2).pump();
    let second_run_request = read_index_request(cluster.member(2).take_sent());
    assert_ne!(
        first_run_request, second_run_request,
        "read ids repeat across runs"
    );

    // The leader's late answer to the first run's read arrives.
    let term = cluster.member(1).driver.raft.term();
    cluster.member(2).deliver(PeerEvent::Received(Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::ReadIndexResponse {
            request_id: first_run_request,
            index: 1,
        },
    }));
    cluster.member(2).pump();
    assert!(
        second_run_read.try_recv().is_err(),
        "the second run's read was released by an answer to the first run's"
    );
}

/// The id of the one ReadIndex request among what a member sent.
fn read_index_request(sent: Sent) -> u64 {
    let ids: Vec<u64> = sent
        .messages
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::ReadIndex { request_id } => Some(request_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "one ReadIndex request: {:?}", sent.messages);
    ids[0]
}

/// A leader appends a client's write, is cut off before replicating it, and
/// the new leader's entry takes that index: the write can never apply. Its
/// client hears etcd's `leader changed` as soon as the old leader learns
/// it, not a timeout later.
#[test]
fn a_write_whose_entry_a_new_leader_replaced_answers_leader_changed() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let old_term = cluster.member(1).driver.raft.term();
    cluster.isolate(1);
    let mut lost = cluster.member(1).propose("never committed");
    cluster.step();
    let lost_index = cluster.member(1).driver.raft.last_index();
    assert_eq!(
        cluster.member(1).driver.raft.log_term(lost_index),
        Some(old_term)
    );

    let new_leader = cluster.tick_until_leader(&[2, 3]);
    cluster.heal();
    cluster.tick();
    cluster.tick();
    assert!(cluster.member(1).driver.raft.commit_index() >= lost_index);
    assert_ne!(
        cluster.member(1).driver.raft.log_term(lost_index),
        Some(old_term),
        "member {new_leader}'s entry replaced it"
    );
    assert_eq!(lost.try_result(), Some(Err(NodeError::LeaderChanged)));
    let status = tonic::Status::from(NodeError::LeaderChanged);
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "etcdserver: leader changed")
    );
    assert!(cluster.member(1).state_machine.applied.is_empty());

    // The same member, leading again, answers its next write normally.
    let mut next = cluster.member(new_leader).propose("after the change");
    cluster.settle();
    answered_index(next.try_result());
}

/// A client that goes away (its handler future dropped) must not keep its
/// place among the pending proposals: the bound would fill with ghosts.
#[test]
fn a_proposal_dropped_before_its_answer_gives_back_its_place() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let pending = cluster.member(1).propose("client went away");
    assert_eq!(cluster.member(1).handle.load().pending_proposals, 1);
    drop(pending);
    assert_eq!(cluster.member(1).handle.load().pending_proposals, 0);
    // Its entry still commits and applies; nobody is answered.
    cluster.settle();
    assert_eq!(cluster.member(1).state_machine.applied.len(), 1);
}

/// A node that stops answers its waiting writes `server stopped` at once
/// (outcome unknown, as a timeout would be) instead of leaving them to time
/// out.
#[test]
fn a_stopping_node_answers_its_waiting_writes_server_stopped() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    cluster.isolate(1);
    let mut pending = cluster.member(1).propose("never committed");
    cluster.member(1).pump();
    assert!(pending.try_result().is_none());
    cluster.member(1).input.try_send(Input::Stop).expect("room");
    cluster.member(1).pump();
    assert_eq!(pending.try_result(), Some(Err(NodeError::Stopped)));
}

/// A follower's ReadIndex request lost on the way to the leader is never
/// answered; once its reader left, the driver forgets it.
#[test]
fn a_read_nobody_waits_for_is_forgotten() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let read = cluster.member(2).handle.start_read().expect("queued");
    cluster.member(2).pump();
    let _lost = cluster.member(2).take_sent();
    assert_eq!(cluster.member(2).driver.pending_reads.len(), 1);
    cluster.member(2).input.try_send(Input::Tick).expect("room");
    cluster.member(2).pump();
    assert_eq!(
        cluster.member(2).driver.pending_reads.len(),
        1,
        "kept while its reader waits"
    );
    drop(read);
    cluster.member(2).input.try_send(Input::Tick).expect("room");
    cluster.member(2).pump();
    assert!(cluster.member(2).driver.pending_reads.is_empty());
}

/// When the raft thread is so far behind that its queue is full, a client's
/// write or read is refused at once, and the write leaves no waiter behind.
#[test]
fn a_full_input_queue_refuses_client_requests() {
    let mut cluster = Cluster::new(3);
    cluster.elect(1);
    let member = cluster.member(1);
    // Fillers that change nothing (thousands of ticks would depose it).
    let filler = || {
        Input::Peer(PeerEvent::Refused {
            request_ids: Vec::new(),
        })
    };
    while member.input.try_send(filler()).is_ok() {}
    assert!(matches!(
        member.handle.start_proposal(b"no room"),
        Err(NodeError::TooManyRequests)
    ));
    assert_eq!(member.handle.load().pending_proposals, 0);
    assert!(matches!(
        member.handle.start_read(),
        Err(NodeError::TooManyRequests)
    ));
    // One round drains the queue; requests are taken again.
    member.pump();
    let mut accepted = member.propose("room again");
    cluster.settle();
    answered_index(accepted.try_result());
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
/// The snapshot replaces 1's log and `log_term(W's index)` becomes `None`,
/// although W committed and is in the state every member now holds (1
/// included, via the snapshot). `resolve_proposed` must not fail W with
/// `leader changed` (it once did): the outcome is unknown at best (it
/// answers `LeaderFailed`), never "replaced".
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
/// `Input::Propose` it queued stays queued and is proposed anyway. Such
/// inputs once filled the whole queue, headroom included, and the member
/// held far more than 10,000 proposals of its own in flight (queued,
/// appended, uncommitted), none refused. Now a client input keeps its place
/// in the queue until the raft thread takes it (`CLIENT_INPUTS_MAX`), and a
/// leader refuses a round's writes past `UNCOMMITTED_ENTRIES_MAX` entries
/// appended but uncommitted.
#[test]
fn cancelled_writes_keep_their_place_in_the_queue_and_the_leader_bounds_uncommitted_entries() {
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
/// applied and returns its position. It once waited only for the applied
/// index to reach the position's index, never checking that the entry there
/// is the change (same term), so a change a new leader's entry replaced was
/// reported applied. Now it is answered only if the entry at its index is
/// still its own, else `leader changed` like a write. (Not reachable from a
/// client yet: MemberAdd/Remove are not served.)
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
