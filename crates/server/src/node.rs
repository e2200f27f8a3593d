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
    /// durable, with one sync, before returning. A hard state that differs
    /// from the last one only in its commit index may be left for the next
    /// sync: Raft never relies on a durable commit index (a restarted member
    /// counts what it applied as committed and learns the rest again).
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
    /// `payload` shares the entry's buffer, so what the state machine keeps
    /// of it (values) costs no copy and no second copy in memory while the
    /// entry is still in the Raft log.
    fn apply(&mut self, index: u64, term: u64, payload: Bytes) -> Result<Bytes, StorageError>;
    /// Records a configuration change entry as applied.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError>;
    /// Replaces the whole state by the snapshot `snapshot` describes, whose
    /// data the transport has already made durable where the state machine
    /// finds it.
    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
    /// Returns the job that makes an image of the state as of the applied
    /// index, which `snapshot` describes, durable. The job runs on a thread
    /// of its own; the applier applies nothing until the job calls its
    /// `ImageFixed` (the image no longer depends on the live state), then
    /// goes on while the job writes (writing and syncing a whole-state image
    /// of 100+ MB stalled every write behind it).
    fn snapshot_job(&mut self, snapshot: &SnapshotMetadata) -> Result<SnapshotJob, StorageError>;
    fn applied_index(&self) -> u64;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Writes one snapshot image durably; see [`StateMachine::snapshot_job`].
pub type SnapshotJob = Box<dyn FnOnce(ImageFixed) -> Result<(), StorageError> + Send>;

/// Called by a snapshot job once its image is fixed: applying resumes.
/// (Dropping it without a call resumes applying too.)
pub struct ImageFixed(std::sync::mpsc::SyncSender<()>);

impl ImageFixed {
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

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

/// Identifies a proposal on the member that made it, so its applier can
/// find who waits for it. Ids come from a counter started at a random-ish
/// point (time at start) so an entry from an earlier run of this member
/// never matches a waiter of this run.
pub type RequestId = u64;

/// Every normal entry the node proposes starts with the proposing member's
/// id and its request id (8 bytes each, big-endian); the rest is the payload
/// the state machine sees. Every member applies every entry, and only the
/// origin has a waiter for it: that is how a follower answers a write it
/// forwarded to the leader, without a reply from the leader.
const PROPOSAL_HEADER_BYTES: usize = 16;

fn frame_proposal(origin: NodeId, id: RequestId, payload: &[u8]) -> Bytes {
    let mut data = Vec::with_capacity(PROPOSAL_HEADER_BYTES + payload.len());
    data.extend_from_slice(&origin.to_be_bytes());
    data.extend_from_slice(&id.to_be_bytes());
    data.extend_from_slice(payload);
    Bytes::from(data)
}

/// The header of a framed proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProposalOrigin {
    member: NodeId,
    request: RequestId,
}

/// Splits an entry's data into origin and payload; `None` for the empty
/// entry a new leader appends.
fn unframe_proposal(data: &[u8]) -> Option<(ProposalOrigin, &[u8])> {
    if data.len() < PROPOSAL_HEADER_BYTES {
        return None;
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&data[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    Some((
        ProposalOrigin {
            member: word(0),
            request: word(8),
        },
        &data[PROPOSAL_HEADER_BYTES..],
    ))
}

enum Input {
    Tick,
    Transport(TransportEvent),
    /// Framed entry data; its waiter is registered under `request_id`.
    Propose {
        request_id: RequestId,
        data: Bytes,
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
    /// Writing a snapshot failed: the member stops (as for a failed sync).
    SnapshotFailed(String),
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
    member_id: NodeId,
    /// Closed when the raft thread ends.
    running: watch::Receiver<()>,
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

    /// Fails the waiters of `ids` (those still waiting) with `error`.
    fn fail(&self, ids: impl IntoIterator<Item = RequestId>, error: &NodeError) {
        let mut waiting = self.lock();
        for id in ids {
            if let Some(done) = waiting.remove(&id) {
                let _ = done.send(Err(error.clone()));
            }
        }
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
        let member_id = raft.id();
        let (running_tx, running_rx) = watch::channel(());

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
            member_id,
            raft_input: input_tx.clone(),
            snapshot_count: options.snapshot_count,
            last_snapshot_index: state_machine.applied_index(),
            applied_term: 0,
            snapshot_writer: None,
        };
        let apply_thread = std::thread::Builder::new()
            .name("raftkv-apply".to_string())
            .spawn(move || applier.run(state_machine))
            .ok();
        let driver_waiters = waiters.clone();
        let raft_thread = std::thread::Builder::new()
            .name("raftkv-raft".to_string())
            .spawn(move || {
                let mut driver = Driver {
                    raft,
                    _running: running_tx,
                    waiters: driver_waiters,
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
                member_id,
                running: running_rx,
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

    /// Proposes `payload` (at the leader: a follower forwards it) and waits
    /// until its entry is applied here, returning the state machine's
    /// answer. A timeout leaves the outcome unknown: the entry may still
    /// commit. `NoLeader` and `LeaderChanged` mean it was never proposed.
    pub async fn propose(&self, payload: &[u8], timeout: Duration) -> Result<Bytes, NodeError> {
        let deadline = Instant::now() + timeout;
        let (request_id, result) = self.waiters.register();
        let sent = self.input.send(Input::Propose {
            request_id,
            data: frame_proposal(self.member_id, request_id, payload),
        });
        let outcome = async {
            sent.map_err(|_| NodeError::Stopped)?;
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
        // `running` never changes; it closes when the raft thread ends.
        // (Waiting on `status` would wake at every commit.)
        let mut running = self.running.clone();
        while running.changed().await.is_ok() {}
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

/// The writes one round of the raft loop proposes: this member's, then
/// those peers forwarded to it.
#[derive(Default)]
struct Proposals {
    /// Request ids of `local`, in the same order.
    local_ids: Vec<RequestId>,
    /// Framed entry data of this member's proposals.
    local: Vec<Bytes>,
    /// Framed entry data peers forwarded.
    forwarded: Vec<Bytes>,
    /// Forwarded request ids by origin, to refuse them if they cannot be
    /// proposed.
    forwarded_ids: Vec<(NodeId, Vec<RequestId>)>,
}

impl Proposals {
    fn add_local(&mut self, request_id: RequestId, data: Bytes) {
        self.local_ids.push(request_id);
        self.local.push(data);
    }

    fn add_forwarded(&mut self, from: NodeId, proposals: Vec<Bytes>) {
        let mut ids = Vec::with_capacity(proposals.len());
        for data in proposals {
            match unframe_proposal(&data) {
                Some((origin, _)) if origin.member == from => {
                    ids.push(origin.request);
                    self.forwarded.push(data);
                }
                // Only the origin could ever claim the result; an entry
                // claiming another origin would wake nobody, or the wrong
                // waiter.
                _ => tracing::warn!(
                    from = format!("{from:x}"),
                    "dropping a forwarded proposal that does not name its sender as origin"
                ),
            }
        }
        if !ids.is_empty() {
            self.forwarded_ids.push((from, ids));
        }
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
    /// Dropped with the driver, which tells `NodeHandle::stopped`.
    _running: watch::Sender<()>,
    /// Local proposals wait here; the driver fails those it cannot propose.
    waiters: Arc<Waiters>,
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
            let mut proposals = Proposals::default();
            let mut reads = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Input::Tick => self.raft.tick(),
                    Input::Transport(TransportEvent::Received(message)) => self.raft.step(message),
                    Input::Transport(TransportEvent::Unreachable(peer)) => {
                        self.raft.report_unreachable(peer)
                    }
                    Input::Propose { request_id, data } => proposals.add_local(request_id, data),
                    Input::Transport(TransportEvent::Forwarded {
                        from,
                        proposals: forwarded,
                    }) => proposals.add_forwarded(from, forwarded),
                    Input::Transport(TransportEvent::Refused { request_ids }) => {
                        // Never proposed, so never applied: safe to retry.
                        self.waiters.fail(request_ids, &NodeError::NoLeader);
                    }
                    Input::Transport(TransportEvent::NotDelivered { proposals }) => {
                        let own = self.raft.id();
                        let request_ids = proposals.iter().filter_map(|data| {
                            unframe_proposal(data)
                                .filter(|(origin, _)| origin.member == own)
                                .map(|(origin, _)| origin.request)
                        });
                        self.waiters.fail(request_ids, &NodeError::NoLeader);
                    }
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
                    Input::SnapshotFailed(error) => {
                        tracing::error!(%error, "writing a snapshot failed; stopping the node");
                        self.fail_pending(NodeError::Stopped);
                        return;
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

    /// Proposes this round's writes if this member leads; a follower
    /// forwards its own to the leader in one frame and refuses those
    /// forwarded to it (they were sent to a stale leader).
    fn propose_all(&mut self, proposals: Proposals) {
        let Proposals {
            local_ids,
            local,
            forwarded,
            forwarded_ids,
        } = proposals;
        if self.raft.role() != Role::Leader {
            for (origin, ids) in forwarded_ids {
                self.transport.refuse(origin, ids);
            }
            if local.is_empty() {
                return;
            }
            let leader = self.raft.leader();
            if leader == 0 || leader == self.raft.id() || !self.transport.forward(leader, local) {
                self.waiters.fail(local_ids, &NodeError::NoLeader);
            }
            return;
        }
        let mut data = local;
        data.extend(forwarded);
        if data.is_empty() {
            return;
        }
        if let Err(error) = self.raft.propose_batch(data) {
            self.waiters.fail(local_ids, &node_error(error));
            for (origin, ids) in forwarded_ids {
                self.transport.refuse(origin, ids);
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
        // Published before any message leaves: a peer that learns a commit
        // index from us (and acknowledges a write at it) must never be ahead
        // of what this member's own status says it has committed.
        self.publish_status();
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
    /// Only entries this member proposed have waiters here.
    member_id: NodeId,
    raft_input: mpsc::UnboundedSender<Input>,
    snapshot_count: u64,
    last_snapshot_index: u64,
    /// Term of the last applied entry (or installed snapshot).
    applied_term: u64,
    /// The snapshot being written, if any: one at a time.
    snapshot_writer: Option<JoinHandle<()>>,
}

impl Applier {
    fn run<S: StateMachine>(mut self, mut state_machine: S) {
        while let Ok(batch) = self.batches.recv() {
            if let Err(error) = self.apply_batch(&mut state_machine, &batch) {
                // The state machine could not record committed work:
                // continuing would diverge from the other members.
                tracing::error!(%error, "the state machine failed; stopping");
                break;
            }
            let applied = state_machine.applied_index();
            let writing = self
                .snapshot_writer
                .as_ref()
                .is_some_and(|writer| !writer.is_finished());
            if !writing && applied >= self.last_snapshot_index.saturating_add(self.snapshot_count) {
                let snapshot = SnapshotMetadata {
                    index: applied,
                    term: self.applied_term,
                    conf_state: batch.conf_state.clone(),
                };
                if let Err(error) = self.start_snapshot(&mut state_machine, snapshot) {
                    tracing::error!(%error, index = applied, "starting a snapshot failed; stopping");
                    break;
                }
                self.last_snapshot_index = applied;
            }
        }
        // A snapshot being written finishes before the member stops.
        if let Some(writer) = self.snapshot_writer.take() {
            let _ = writer.join();
        }
    }

    /// Fixes the image now and writes it on a thread of its own; the raft
    /// thread hears of it once it is durable (or failed).
    fn start_snapshot<S: StateMachine>(
        &mut self,
        state_machine: &mut S,
        snapshot: SnapshotMetadata,
    ) -> Result<(), StorageError> {
        if let Some(previous) = self.snapshot_writer.take() {
            let _ = previous.join();
        }
        let job = state_machine.snapshot_job(&snapshot)?;
        let (fixed_tx, fixed_rx) = std::sync::mpsc::sync_channel(1);
        let raft_input = self.raft_input.clone();
        let writer = std::thread::Builder::new()
            .name("raftkv-snapshot".to_string())
            .spawn(move || {
                let started = Instant::now();
                let outcome = match job(ImageFixed(fixed_tx)) {
                    Ok(()) => {
                        tracing::debug!(
                            index = snapshot.index,
                            millis = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                        Input::SnapshotTaken(snapshot)
                    }
                    Err(error) => Input::SnapshotFailed(error.to_string()),
                };
                let _ = raft_input.send(outcome);
            })
            .map_err(|error| StorageError(format!("spawning the snapshot writer: {error}")))?;
        self.snapshot_writer = Some(writer);
        // The job copies the state on its own thread, so the copy's memory
        // is that thread's and goes back to the system when it ends (freed
        // from another thread, the allocator kept it: ~35 MB per 100,000
        // keys stayed resident).
        let _ = fixed_rx.recv();
        Ok(())
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
                (raft::EntryKind::Normal, Some(_)) => state_machine.apply(
                    entry.index,
                    entry.term,
                    entry.data.slice(PROPOSAL_HEADER_BYTES..),
                )?,
                // A new leader's empty entry changes nothing but the index.
                (raft::EntryKind::Normal, None) => {
                    state_machine.apply(entry.index, entry.term, Bytes::new())?
                }
                (raft::EntryKind::ConfChange, _) => {
                    state_machine.apply_conf_change(entry)?;
                    Bytes::new()
                }
            };
            self.applied_term = entry.term;
            if let Some((origin, _)) = framed {
                if origin.member == self.member_id {
                    let waiter = self.waiters.lock().remove(&origin.request);
                    if let Some(done) = waiter {
                        let _ = done.send(Ok(result));
                    }
                }
            }
        }
        // Once per batch: every send wakes every reader waiting on it.
        if let Some(last) = batch.entries.last() {
            self.applied.send_replace(last.index);
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
