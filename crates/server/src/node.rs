//! The Raft driver: one thread owns the Raft state machine and runs its
//! Ready loop; everything else talks to it through one input channel.
//!
//! ```text
//!  gRPC handlers ──Propose/Read──┐
//!  peer transport ──Received─────┼──> [input channel] ──> raft thread ──> log storage (sync)
//!  ticker ───────────Tick────────┘                          │   │
//!                                   transport <── messages ─┘   └──> applier thread ──> state machine
//! ```
//!
//! Why a plain thread: the loop's one blocking step is the log sync, and
//! while it runs every input keeps queueing; the next iteration drains the
//! queue into one batch, so one sync carries every proposal that arrived
//! during the previous one (group commit). No lock is held around Raft state.
//!
//! Order of a Ready, as the raft crate's contract requires: send `messages`
//! (a leader replicates while it writes its own log), persist, send
//! `persisted_messages`, hand committed entries to the applier, `advance`.
//! A failed persist stops the node: nothing is acknowledged after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{
    ConfChange, ConfState, Config, Entry, HardState, LogPosition, NodeId, Raft, RaftError, Ready,
    Role, Snapshot, SnapshotMetadata,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::transport::{Transport, TransportEvent};

/// Durable storage for the Raft log. Implemented by the WAL in production
/// and by memory in tests.
pub trait LogStorage: Send + 'static {
    /// Makes `installed_snapshot` (a marker: a snapshot from the leader
    /// replaced the whole log; its data is already in a snapshot file),
    /// `entries` (replacing any stored suffix they overlap) and `hard_state`
    /// durable, with one sync, before returning.
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        installed_snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError>;

    /// Records, durably, that the state machine's snapshot at `snapshot` is
    /// on disk, so the log up to it is no longer needed; may drop it.
    fn compacted(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
}

/// The replicated state machine, applied in log order on its own thread.
pub trait StateMachine: Send + 'static {
    /// Applies the payload of one committed normal entry (at `index`, of
    /// `term`); returns what the proposer waits for (if it is on this member).
    fn apply(&mut self, index: u64, term: u64, payload: &[u8]) -> Result<Bytes, StorageError>;
    /// Records a configuration change entry as applied.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError>;
    /// Replaces the whole state by the snapshot `snapshot` describes, whose
    /// data the transport has already made durable where the state machine
    /// finds it.
    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
    /// Makes a durable image of the state as of the applied index, which
    /// `snapshot` describes, before returning.
    fn take_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
    fn applied_index(&self) -> u64;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Why a request could not be served.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("not the leader; the leader is {leader:x}")]
    NotLeader { leader: NodeId },
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("{0}")]
    Rejected(String),
}

/// Identifies a proposal so the applier can find who waits for it. Carried
/// as the first 8 bytes (big-endian) of every normal entry the node
/// proposes; the rest is the payload the state machine sees. Ids come from a
/// counter started at a random-ish point (time at start) so an entry from an
/// earlier run of this member never matches a waiter of this run.
pub type RequestId = u64;

const REQUEST_ID_BYTES: usize = 8;

fn frame_proposal(id: RequestId, payload: &[u8]) -> Bytes {
    let mut data = Vec::with_capacity(REQUEST_ID_BYTES + payload.len());
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(payload);
    Bytes::from(data)
}

/// Splits an entry's data into request id and payload; `None` for the empty
/// entry a new leader appends.
fn unframe_proposal(data: &[u8]) -> Option<(RequestId, &[u8])> {
    if data.len() < REQUEST_ID_BYTES {
        return None;
    }
    let mut id = [0u8; REQUEST_ID_BYTES];
    id.copy_from_slice(&data[..REQUEST_ID_BYTES]);
    Some((u64::from_be_bytes(id), &data[REQUEST_ID_BYTES..]))
}

enum Input {
    Tick,
    Transport(TransportEvent),
    Propose {
        data: Bytes,
        done: oneshot::Sender<Result<LogPosition, NodeError>>,
    },
    ProposeConfChange {
        change: ConfChange,
        done: oneshot::Sender<Result<LogPosition, NodeError>>,
    },
    ReadIndex {
        done: oneshot::Sender<Result<u64, NodeError>>,
    },
    TransferLeadership {
        target: NodeId,
        done: oneshot::Sender<Result<(), NodeError>>,
    },
    /// The applier made a durable snapshot; the log up to it may go.
    SnapshotTaken(SnapshotMetadata),
    Stop,
}

/// What the rest of the server sees of the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: NodeId,
    pub term: u64,
    pub role_is_leader: bool,
    pub commit_index: u64,
    pub applied_index: u64,
}

#[derive(Clone)]
pub struct NodeHandle {
    input: mpsc::UnboundedSender<Input>,
    status: watch::Receiver<NodeStatus>,
    applied: watch::Receiver<u64>,
    /// Results of applied entries proposed here, by log position.
    waiters: Arc<Waiters>,
}

type ResultSender = oneshot::Sender<Result<Bytes, NodeError>>;

/// Proposals waiting for their entry to apply, by request id. Registered
/// before the proposal leaves, so the applier can never pass it unseen.
struct Waiters {
    /// std Mutex: held only to insert or take, never across an await.
    by_request: std::sync::Mutex<HashMap<RequestId, ResultSender>>,
    next_request_id: std::sync::atomic::AtomicU64,
}

impl Waiters {
    fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64);
        Waiters {
            by_request: std::sync::Mutex::new(HashMap::new()),
            next_request_id: std::sync::atomic::AtomicU64::new(start),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, ResultSender>> {
        self.by_request
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self) -> (RequestId, oneshot::Receiver<Result<Bytes, NodeError>>) {
        let id = self
            .next_request_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        (id, receiver)
    }
}

pub struct NodeOptions {
    pub tick_interval: Duration,
    pub request_timeout: Duration,
    /// Applied entries between snapshots of the state machine.
    pub snapshot_count: u64,
    /// Entries kept in the log after compaction for lagging followers.
    pub snapshot_catchup_entries: u64,
}

pub struct Node {
    pub handle: NodeHandle,
    raft_thread: Option<JoinHandle<()>>,
    apply_thread: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts the raft and apply threads and the ticker. `events` is the
    /// transport's inbound channel.
    pub fn start<L: LogStorage, S: StateMachine>(
        raft: Raft,
        log: L,
        state_machine: S,
        transport: Transport,
        mut events: mpsc::Receiver<TransportEvent>,
        options: NodeOptions,
    ) -> Node {
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(NodeStatus::default());
        let (applied_tx, applied_rx) = watch::channel(state_machine.applied_index());
        let waiters = Arc::new(Waiters::new());
        let (apply_tx, apply_rx) = std::sync::mpsc::channel::<ApplyBatch>();

        // Ticker and transport bridge: async tasks feeding the one channel.
        let tick_input = input_tx.clone();
        let tick_interval = options.tick_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if tick_input.send(Input::Tick).is_err() {
                    return;
                }
            }
        });
        let event_input = input_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if event_input.send(Input::Transport(event)).is_err() {
                    return;
                }
            }
        });

        let apply_waiters = waiters.clone();
        let applier = Applier {
            batches: apply_rx,
            applied: applied_tx,
            waiters: apply_waiters,
            raft_input: input_tx.clone(),
            snapshot_count: options.snapshot_count,
            last_snapshot_index: state_machine.applied_index(),
            applied_term: 0,
        };
        let apply_thread = std::thread::Builder::new()
            .name("raftkv-apply".to_string())
            .spawn(move || applier.run(state_machine))
            .ok();
        let raft_thread = std::thread::Builder::new()
            .name("raftkv-raft".to_string())
            .spawn(move || {
                let mut driver = Driver {
                    raft,
                    log,
                    transport,
                    apply: apply_tx,
                    status: status_tx,
                    pending_reads: HashMap::new(),
                    next_read_id: 1,
                    options,
                };
                driver.run(input_rx);
            })
            .ok();
        if raft_thread.is_none() || apply_thread.is_none() {
            // Without its threads the node cannot run at all; the caller
            // sees every request fail with Stopped.
            tracing::error!("could not spawn the raft or apply thread");
        }
        Node {
            handle: NodeHandle {
                input: input_tx,
                status: status_rx,
                applied: applied_rx,
                waiters,
            },
            raft_thread,
            apply_thread,
        }
    }

    /// Stops the threads after they finish what is in flight.
    pub fn stop(mut self) {
        let _ = self.handle.input.send(Input::Stop);
        if let Some(thread) = self.raft_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.apply_thread.take() {
            let _ = thread.join();
        }
    }
}

impl NodeHandle {
    pub fn status(&self) -> NodeStatus {
        *self.status.borrow()
    }

    /// Proposes `payload` and waits until its entry is applied here,
    /// returning the state machine's answer. A timeout leaves the outcome
    /// unknown: the entry may still commit.
    pub async fn propose(&self, payload: &[u8], timeout: Duration) -> Result<Bytes, NodeError> {
        let deadline = Instant::now() + timeout;
        let (request_id, result) = self.waiters.register();
        let (done_tx, done_rx) = oneshot::channel();
        let sent = self.input.send(Input::Propose {
            data: frame_proposal(request_id, payload),
            done: done_tx,
        });
        let outcome = async {
            sent.map_err(|_| NodeError::Stopped)?;
            answer_by(deadline, done_rx).await?;
            answer_by(deadline, result).await
        }
        .await;
        if outcome.is_err() {
            self.waiters.lock().remove(&request_id);
        }
        outcome
    }

    /// Waits until a linearizable read may be served locally: leadership was
    /// confirmed after this call, and the state machine has applied the
    /// commit index of that moment.
    pub async fn linearizable_read_barrier(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = oneshot::channel();
        self.input
            .send(Input::ReadIndex { done: done_tx })
            .map_err(|_| NodeError::Stopped)?;
        let index = answer_by(deadline, done_rx).await?;
        self.wait_applied(index, deadline).await
    }

    /// Resolves when the node has stopped (after `Node::stop`, or by itself
    /// after a storage failure: a failed sync must stop the member).
    pub async fn stopped(&self) {
        let mut status = self.status.clone();
        while status.changed().await.is_ok() {}
    }

    /// Waits until the node's status satisfies `predicate`.
    pub async fn wait_status(
        &self,
        deadline: Instant,
        predicate: impl FnMut(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, NodeError> {
        let mut status = self.status.clone();
        let outcome = tokio::time::timeout_at(deadline.into(), status.wait_for(predicate)).await;
        match outcome {
            Ok(Ok(status)) => Ok(*status),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), NodeError> {
        let mut applied = self.applied.clone();
        let outcome = tokio::time::timeout_at(
            deadline.into(),
            applied.wait_for(|&applied| applied >= index),
        )
        .await;
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    pub async fn propose_conf_change(
        &self,
        change: ConfChange,
        timeout: Duration,
    ) -> Result<LogPosition, NodeError> {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = oneshot::channel();
        self.input
            .send(Input::ProposeConfChange {
                change,
                done: done_tx,
            })
            .map_err(|_| NodeError::Stopped)?;
        let position = answer_by(deadline, done_rx).await?;
        self.wait_applied(position.index, deadline).await?;
        Ok(position)
    }

    pub async fn transfer_leadership(
        &self,
        target: NodeId,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.input
            .send(Input::TransferLeadership {
                target,
                done: done_tx,
            })
            .map_err(|_| NodeError::Stopped)?;
        answer_by(Instant::now() + timeout, done_rx).await
    }
}

/// The raft or apply thread's answer, or Timeout at `deadline`, or Stopped
/// if the thread went away without answering.
async fn answer_by<T>(
    deadline: Instant,
    answer: oneshot::Receiver<Result<T, NodeError>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout_at(deadline.into(), answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(NodeError::Stopped),
        Err(_) => Err(NodeError::Timeout),
    }
}

fn node_error(error: RaftError) -> NodeError {
    match error {
        RaftError::NoLeader => NodeError::NoLeader,
        RaftError::NotLeader { leader } => NodeError::NotLeader { leader },
        RaftError::TransferInProgress { .. } => NodeError::LeaderChanged,
        other => NodeError::Rejected(other.to_string()),
    }
}

/// Committed work for the applier, in log order.
struct ApplyBatch {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    /// Membership as of the last entry of the batch (Raft applies a
    /// configuration change when it hands the entry out).
    conf_state: ConfState,
}

struct Driver<L: LogStorage> {
    raft: Raft,
    log: L,
    transport: Transport,
    apply: std::sync::mpsc::Sender<ApplyBatch>,
    status: watch::Sender<NodeStatus>,
    /// ReadIndex batches in flight: request id → everyone waiting on it.
    pending_reads: HashMap<u64, Vec<oneshot::Sender<Result<u64, NodeError>>>>,
    next_read_id: u64,
    options: NodeOptions,
}

impl<L: LogStorage> Driver<L> {
    fn run(&mut self, mut input: mpsc::UnboundedReceiver<Input>) {
        self.publish_status();
        loop {
            let Some(first) = input.blocking_recv() else {
                return;
            };
            // Drain everything queued: one batch, one sync.
            let mut proposals = Vec::new();
            let mut reads = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Input::Tick => self.raft.tick(),
                    Input::Transport(TransportEvent::Received(message)) => self.raft.step(message),
                    Input::Transport(TransportEvent::Unreachable(peer)) => {
                        self.raft.report_unreachable(peer)
                    }
                    Input::Propose { data, done } => proposals.push((data, done)),
                    Input::ReadIndex { done } => reads.push(done),
                    Input::ProposeConfChange { change, done } => {
                        let _ =
                            done.send(self.raft.propose_conf_change(change).map_err(node_error));
                    }
                    Input::TransferLeadership { target, done } => {
                        let _ =
                            done.send(self.raft.transfer_leadership(target).map_err(node_error));
                    }
                    Input::Transport(TransportEvent::SnapshotSent { peer, delivered }) => {
                        self.raft.report_snapshot(peer, delivered)
                    }
                    Input::SnapshotTaken(snapshot) => {
                        if let Err(error) = self.compact_to_snapshot(snapshot) {
                            tracing::error!(%error, "recording a snapshot failed; stopping the node");
                            self.fail_pending(NodeError::Stopped);
                            return;
                        }
                    }
                    Input::Stop => {
                        self.fail_pending(NodeError::Stopped);
                        return;
                    }
                }
                next = input.try_recv().ok();
            }
            self.propose_all(proposals);
            self.read_all(reads);
            while self.raft.has_ready() {
                let ready = self.raft.ready();
                if let Err(error) = self.handle_ready(ready) {
                    tracing::error!(%error, "log storage failed; stopping the node");
                    self.fail_pending(NodeError::Stopped);
                    return;
                }
            }
            self.publish_status();
        }
    }

    fn propose_all(
        &mut self,
        proposals: Vec<(Bytes, oneshot::Sender<Result<LogPosition, NodeError>>)>,
    ) {
        if proposals.is_empty() {
            return;
        }
        let (data, done): (Vec<Bytes>, Vec<_>) = proposals.into_iter().unzip();
        let count = data.len() as u64;
        match self.raft.propose_batch(data) {
            Ok(last) => {
                let first_index = last.index + 1 - count;
                for (offset, done) in done.into_iter().enumerate() {
                    let _ = done.send(Ok(LogPosition {
                        index: first_index + offset as u64,
                        term: last.term,
                    }));
                }
            }
            Err(error) => {
                let error = node_error(error);
                for done in done {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }

    fn read_all(&mut self, reads: Vec<oneshot::Sender<Result<u64, NodeError>>>) {
        if reads.is_empty() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        match self.raft.read_index(id) {
            Ok(()) => {
                self.pending_reads.insert(id, reads);
            }
            Err(error) => {
                let error = node_error(error);
                for done in reads {
                    let _ = done.send(Err(error.clone()));
                }
            }
        }
    }

    fn handle_ready(&mut self, mut ready: Ready) -> Result<(), StorageError> {
        if let Some(soft) = ready.soft_state {
            if soft.role != Role::Leader {
                // A deposed leader's reads will never be answered; fail them
                // now rather than at their timeout.
                for (_, waiting) in self.pending_reads.drain() {
                    for done in waiting {
                        let _ = done.send(Err(NodeError::LeaderChanged));
                    }
                }
            }
        }
        self.transport.send(std::mem::take(&mut ready.messages));
        self.log.persist(
            ready.hard_state,
            &ready.entries,
            ready.snapshot.as_ref().map(|snapshot| &snapshot.metadata),
        )?;
        self.transport
            .send(std::mem::take(&mut ready.persisted_messages));
        for read in ready.read_states.drain(..) {
            if let Some(waiting) = self.pending_reads.remove(&read.request_id) {
                for done in waiting {
                    let _ = done.send(Ok(read.index));
                }
            }
        }
        if ready.snapshot.is_some() || !ready.committed_entries.is_empty() {
            let batch = ApplyBatch {
                snapshot: ready.snapshot.take(),
                entries: std::mem::take(&mut ready.committed_entries),
                conf_state: self.raft.conf_state().clone(),
            };
            if self.apply.send(batch).is_err() {
                return Err(StorageError("the apply thread stopped".to_string()));
            }
        }
        self.raft.advance(ready);
        Ok(())
    }

    /// The state machine's image at `snapshot` is durable: tell Raft (so it
    /// can send it to followers too far behind), mark it in the log, and
    /// drop the log before it but for `snapshot_catchup_entries`, which a
    /// slow follower can still be sent instead of the whole snapshot.
    fn compact_to_snapshot(&mut self, snapshot: SnapshotMetadata) -> Result<(), StorageError> {
        if snapshot.index < self.raft.first_index().saturating_sub(1) {
            // A snapshot from the leader overtook it; nothing to do.
            return Ok(());
        }
        let created = match self.raft.create_snapshot(snapshot.index, Bytes::new()) {
            Ok(created) => created,
            Err(error) => {
                tracing::debug!(%error, index = snapshot.index, "not recording a snapshot Raft has passed");
                return Ok(());
            }
        };
        debug_assert_eq!(
            created.metadata, snapshot,
            "the applier's snapshot metadata must match Raft's view of the same index"
        );
        self.log.compacted(&created.metadata)?;
        let compact_to = snapshot
            .index
            .saturating_sub(self.options.snapshot_catchup_entries);
        if compact_to > 0 {
            self.raft
                .compact_log(compact_to)
                .map_err(|error| StorageError(error.to_string()))?;
        }
        tracing::info!(
            index = snapshot.index,
            term = snapshot.term,
            log_first_index = self.raft.first_index(),
            "snapshot taken; log compacted"
        );
        Ok(())
    }

    fn fail_pending(&mut self, error: NodeError) {
        for (_, waiting) in self.pending_reads.drain() {
            for done in waiting {
                let _ = done.send(Err(error.clone()));
            }
        }
    }

    fn publish_status(&self) {
        let status = NodeStatus {
            leader: self.raft.leader(),
            term: self.raft.term(),
            role_is_leader: self.raft.role() == Role::Leader,
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

/// The apply thread: feeds committed entries to the state machine in log
/// order, answers the proposers waiting on them, and every
/// `snapshot_count` applied entries has the state machine write a snapshot.
struct Applier {
    batches: std::sync::mpsc::Receiver<ApplyBatch>,
    applied: watch::Sender<u64>,
    waiters: Arc<Waiters>,
    raft_input: mpsc::UnboundedSender<Input>,
    snapshot_count: u64,
    last_snapshot_index: u64,
    /// Term of the last applied entry (or installed snapshot).
    applied_term: u64,
}

impl Applier {
    fn run<S: StateMachine>(mut self, mut state_machine: S) {
        while let Ok(batch) = self.batches.recv() {
            if let Err(error) = self.apply_batch(&mut state_machine, &batch) {
                // The state machine could not record committed work:
                // continuing would diverge from the other members.
                tracing::error!(%error, "the state machine failed; stopping");
                return;
            }
            let applied = state_machine.applied_index();
            if applied >= self.last_snapshot_index.saturating_add(self.snapshot_count) {
                let snapshot = SnapshotMetadata {
                    index: applied,
                    term: self.applied_term,
                    conf_state: batch.conf_state.clone(),
                };
                if let Err(error) = state_machine.take_snapshot(&snapshot) {
                    tracing::error!(%error, index = applied, "writing a snapshot failed; stopping");
                    return;
                }
                self.last_snapshot_index = applied;
                let _ = self.raft_input.send(Input::SnapshotTaken(snapshot));
            }
        }
    }

    fn apply_batch<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        batch: &ApplyBatch,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = &batch.snapshot {
            state_machine.install_snapshot(&snapshot.metadata)?;
            tracing::info!(
                index = snapshot.metadata.index,
                term = snapshot.metadata.term,
                "installed a snapshot from the leader"
            );
            self.applied_term = snapshot.metadata.term;
            self.last_snapshot_index = snapshot.metadata.index;
            self.applied.send_replace(state_machine.applied_index());
        }
        for entry in &batch.entries {
            let framed = match entry.kind {
                raft::EntryKind::Normal => unframe_proposal(&entry.data),
                raft::EntryKind::ConfChange => None,
            };
            let result = match (entry.kind, framed) {
                (raft::EntryKind::Normal, Some((_, payload))) => {
                    state_machine.apply(entry.index, entry.term, payload)?
                }
                // A new leader's empty entry changes nothing but the index.
                (raft::EntryKind::Normal, None) => {
                    state_machine.apply(entry.index, entry.term, &[])?
                }
                (raft::EntryKind::ConfChange, _) => {
                    state_machine.apply_conf_change(entry)?;
                    Bytes::new()
                }
            };
            self.applied_term = entry.term;
            if let Some((request_id, _)) = framed {
                let waiter = self.waiters.lock().remove(&request_id);
                if let Some(done) = waiter {
                    let _ = done.send(Ok(result));
                }
            }
            self.applied.send_replace(entry.index);
        }
        Ok(())
    }
}

/// The raft configuration for a node, from server settings.
pub fn raft_config(member_id: NodeId, heartbeat_ms: u64, election_ms: u64, seed: u64) -> Config {
    let mut config = Config::new(member_id);
    config.heartbeat_interval_ticks = 1;
    config.election_timeout_ticks = (election_ms / heartbeat_ms.max(1)).max(2);
    config.seed = seed;
    config
}
