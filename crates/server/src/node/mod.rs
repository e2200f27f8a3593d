//! The Raft driver: one thread owns the Raft state machine and runs its
//! Ready loop; everything else talks to it through one input queue.
//!
//! ```text
//!  gRPC handlers ──Propose/Read──┐
//!  peer side ──────PeerEvent─────┼──> [input queue] ──> raft thread ──> log storage (sync)
//!  ticker ───────────Tick────────┘                          │   │
//!                                     Outbox <── messages ──┘   └──> applier thread ──> state machine
//! ```
//!
//! Why a plain thread: the loop's one blocking step is the log sync, and
//! while it runs every input keeps queueing; the next iteration drains the
//! queue into one batch, so one sync carries every proposal that arrived
//! during the previous one (group commit). No lock is held around Raft state.
//!
//! Layout: [`ports`] is the node's boundary (log storage, state machine,
//! outbox, peer events); `driver` is the raft thread's loop, written against
//! those traits only; `applier` is the apply thread; `proposal` frames
//! proposals and keeps their waiters; `inbox` is the input queue; `load`
//! holds every queue's bound and decides `too many requests`. This module
//! assembles them and is what the rest of the server sees. The node
//! never imports the peer side: the transport implements [`Outbox`] and
//! delivers [`PeerEvent`]s.

mod applier;
mod driver;
mod inbox;
mod load;
pub mod ports;
mod proposal;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::{ConfChange, Config, LogPosition, NodeId, Raft};
use tokio::sync::{oneshot, watch};

use crate::errors;

use applier::{Applier, ApplyBatch};
use driver::Driver;
use inbox::{try_queue, Input, InputSender};
use load::{Load, ReadSlot};
use proposal::{frame_proposal, Waiters};

pub use inbox::{inbox, NodeGone, NodeInbox, PeerEvents};
pub use load::{
    LoadReport, APPLY_GAP_MAX, APPLY_QUEUE_BATCHES_MAX, INPUT_QUEUE_MAX, PEER_EVENTS_HEADROOM,
    PENDING_PROPOSALS_MAX, PENDING_READS_MAX,
};
pub use ports::{LogStorage, Outbox, PeerEvent, SnapshotSend, StateMachine, StorageError};
pub use proposal::RequestId;

/// Why a request could not be served. Texts and gRPC codes are etcd's, from
/// [`crate::errors`].
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// Never proposed: no leader is known (or it could not be reached).
    #[error("{}", errors::NO_LEADER.text)]
    NoLeader,
    #[error("{}", errors::NOT_LEADER.text)]
    NotLeader { leader: NodeId },
    /// The request's deadline passed; a write's outcome is unknown.
    #[error("{}", errors::TIMEOUT.text)]
    Timeout,
    #[error("{}", errors::STOPPED.text)]
    Stopped,
    /// Lost to a change of leader: a read dropped by a deposed leader, a
    /// local write whose entry a new leader replaced, or a proposal refused
    /// while leadership moves.
    #[error("{}", errors::LEADER_CHANGED.text)]
    LeaderChanged,
    /// A write of this member whose entry a snapshot from a new leader
    /// covered: it may or may not have applied (outcome unknown).
    #[error("{}", errors::TIMEOUT_DUE_TO_LEADER_FAIL.text)]
    LeaderFailed,
    /// Refused before it was queued: the member holds as much as its bounds
    /// allow (see `load`). Never proposed; retry after a backoff.
    #[error("{}", errors::TOO_MANY_REQUESTS.text)]
    TooManyRequests,
    #[error("{0}")]
    Rejected(String),
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
    input: InputSender,
    status: watch::Receiver<NodeStatus>,
    applied: watch::Receiver<u64>,
    /// Results of applied entries proposed here, by request id.
    waiters: Arc<Waiters>,
    load: Arc<Load>,
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

/// A node's three parts before any thread runs them: the raft thread's
/// driver, the apply thread's applier, and the handle the server uses.
pub(crate) struct Parts<L: LogStorage, O: Outbox> {
    pub(crate) driver: Driver<L, O>,
    pub(crate) applier: Applier,
    pub(crate) handle: NodeHandle,
}

impl<L: LogStorage, O: Outbox> Parts<L, O> {
    /// Wires a driver, an applier and a handle around `raft`. `applied` is
    /// the state machine's applied index at start.
    pub(crate) fn new(
        raft: Raft,
        log: L,
        outbox: O,
        input: InputSender,
        applied: u64,
        options: &NodeOptions,
    ) -> Self {
        let (status_tx, status_rx) = watch::channel(NodeStatus::default());
        let (applied_tx, applied_rx) = watch::channel(applied);
        let waiters = Arc::new(Waiters::new());
        let load = Load::new(applied);
        let (apply_tx, apply_rx) =
            std::sync::mpsc::sync_channel::<ApplyBatch>(APPLY_QUEUE_BATCHES_MAX);
        let member_id = raft.id();
        let (running_tx, running_rx) = watch::channel(());
        let applier = Applier {
            batches: apply_rx,
            applied: applied_tx,
            waiters: waiters.clone(),
            member_id,
            raft_input: input.clone(),
            snapshot_count: options.snapshot_count,
            last_snapshot_index: applied,
            handed_out: (applied, 0),
            load: load.clone(),
        };
        let driver = Driver {
            raft,
            _running: running_tx,
            waiters: waiters.clone(),
            log,
            outbox,
            apply: apply_tx,
            status: status_tx,
            pending_reads: HashMap::new(),
            // Like request ids: a random start for every run, so a late
            // answer to an earlier run's read never releases one of this run.
            next_read_id: proposal::run_nonce(),
            snapshot_catchup_entries: options.snapshot_catchup_entries,
            unreachable: Vec::new(),
            proposed: VecDeque::new(),
            proposed_conf_changes: Vec::new(),
            load: load.clone(),
        };
        Parts {
            driver,
            applier,
            handle: NodeHandle {
                member_id,
                running: running_rx,
                input,
                status: status_rx,
                applied: applied_rx,
                waiters,
                load,
            },
        }
    }
}

impl Node {
    /// Starts the raft and apply threads and the ticker. `inbox` is the
    /// input queue whose [`PeerEvents`] the peer side delivers to.
    pub fn start<L: LogStorage, S: StateMachine, O: Outbox>(
        raft: Raft,
        log: L,
        state_machine: S,
        outbox: O,
        inbox: NodeInbox,
        options: NodeOptions,
    ) -> Node {
        let NodeInbox { sender, receiver } = inbox;
        let Parts {
            driver,
            applier,
            handle,
        } = Parts::new(
            raft,
            log,
            outbox,
            sender.clone(),
            state_machine.applied_index(),
            &options,
        );

        let tick_input = sender;
        let tick_interval = options.tick_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                // Waits for room: a tick late is harmless, a lost one too,
                // but ticks must not pile up behind a stalled raft thread
                // (the interval skips what it missed).
                if tick_input.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        });

        let apply_thread = std::thread::Builder::new()
            .name("raftkv-apply".to_string())
            .spawn(move || applier.run(state_machine))
            .ok();
        let raft_thread = std::thread::Builder::new()
            .name("raftkv-raft".to_string())
            .spawn(move || driver.run(receiver))
            .ok();
        if raft_thread.is_none() || apply_thread.is_none() {
            // Without its threads the node cannot run at all; the caller
            // sees every request fail with Stopped.
            tracing::error!("could not spawn the raft or apply thread");
        }
        Node {
            handle,
            raft_thread,
            apply_thread,
        }
    }

    /// Stops the threads after they finish what is in flight.
    pub fn stop(mut self) {
        // The flag stops the raft thread after its current round even if
        // the queue is too full to take the message (which only wakes it).
        self.handle.load.stop();
        let _ = self.handle.input.try_send(Input::Stop);
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
    /// commit. `NoLeader` and `TooManyRequests` mean it was never proposed;
    /// `LeaderChanged`, that its entry was replaced (or leadership is
    /// moving).
    pub async fn propose(&self, payload: &[u8], timeout: Duration) -> Result<Bytes, NodeError> {
        let deadline = Instant::now() + timeout;
        self.start_proposal(payload)?.wait(deadline).await
    }

    /// What this member holds now, and the most it held.
    pub fn load(&self) -> LoadReport {
        let (pending, most) = self.waiters.counts();
        self.load.report(pending, most)
    }

    /// Registers a waiter for `payload` and queues it for the raft thread.
    pub(crate) fn start_proposal(&self, payload: &[u8]) -> Result<PendingProposal, NodeError> {
        self.load.admit_write()?;
        let (request_id, result) = self.waiters.register()?;
        let pending = PendingProposal {
            request_id,
            result,
            waiters: self.waiters.clone(),
            answered: false,
        };
        // On a refusal `pending` is dropped, which forgets its waiter.
        try_queue(
            &self.load,
            &self.input,
            Input::Propose {
                request_id,
                data: frame_proposal(self.member_id, request_id, payload),
            },
        )?;
        Ok(pending)
    }

    /// Waits until a linearizable read may be served locally: leadership was
    /// confirmed after this call, and the state machine has applied the
    /// commit index of that moment.
    pub async fn linearizable_read_barrier(&self, timeout: Duration) -> Result<(), NodeError> {
        let deadline = Instant::now() + timeout;
        // Held until the read may be served: the bound counts reads waiting
        // for their index and for the state machine to reach it.
        let _slot = ReadSlot::take(&self.load)?;
        let index = answer_by(deadline, self.start_read()?).await?;
        self.wait_applied(index, deadline).await
    }

    /// Queues a ReadIndex request; the answer is the index to wait for.
    pub(crate) fn start_read(
        &self,
    ) -> Result<oneshot::Receiver<Result<u64, NodeError>>, NodeError> {
        let (done_tx, done_rx) = oneshot::channel();
        try_queue(&self.load, &self.input, Input::ReadIndex { done: done_tx })?;
        Ok(done_rx)
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
        try_queue(
            &self.load,
            &self.input,
            Input::ProposeConfChange {
                change,
                done: done_tx,
            },
        )?;
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
        try_queue(
            &self.load,
            &self.input,
            Input::TransferLeadership {
                target,
                done: done_tx,
            },
        )?;
        answer_by(Instant::now() + timeout, done_rx).await
    }
}

/// A proposal registered and queued, not yet answered. Dropped before its
/// answer (timeout, refusal, or a client that went away), it forgets its
/// waiter: a cancelled request must not hold a place in the bound forever.
pub(crate) struct PendingProposal {
    request_id: RequestId,
    result: oneshot::Receiver<proposal::ProposalResult>,
    waiters: Arc<Waiters>,
    /// Set once the answer came: the applier or driver already removed the
    /// waiter, so dropping costs no second lock on the write path.
    answered: bool,
}

impl PendingProposal {
    /// The applier's answer, or `Timeout` at `deadline` (the outcome is
    /// then unknown).
    pub(crate) async fn wait(mut self, deadline: Instant) -> Result<Bytes, NodeError> {
        match tokio::time::timeout_at(deadline.into(), &mut self.result).await {
            Ok(Ok(result)) => {
                self.answered = true;
                result
            }
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// The answer if there is one yet: for tests that drive the node by hand.
    #[cfg(test)]
    pub(crate) fn try_result(&mut self) -> Option<proposal::ProposalResult> {
        let result = self.result.try_recv().ok();
        self.answered |= result.is_some();
        result
    }
}

impl Drop for PendingProposal {
    fn drop(&mut self) {
        if !self.answered {
            self.waiters.forget(self.request_id);
        }
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

/// The raft configuration for a node, from server settings.
pub fn raft_config(member_id: NodeId, heartbeat_ms: u64, election_ms: u64, seed: u64) -> Config {
    let mut config = Config::new(member_id);
    config.heartbeat_interval_ticks = 1;
    config.election_timeout_ticks = (election_ms / heartbeat_ms.max(1)).max(2);
    config.seed = seed;
    config
}
