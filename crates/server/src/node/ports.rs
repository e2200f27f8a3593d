//! The node's boundary: what it needs from the rest of the member (durable
//! log, state machine, a way to send to peers) and what the peer side tells
//! it. The driver is written against these traits only, so that a test can
//! run it on memory and a recording outbox, in one thread.

use bytes::Bytes;
use raft::{Entry, HardState, Message, NodeId, SnapshotMetadata};

use super::RequestId;

/// Durable storage for the Raft log. Implemented by the WAL in production
/// and by memory in tests.
pub trait LogStorage: Send + 'static {
    /// Makes `installed_snapshot` (a marker: a snapshot from the leader
    /// replaced the whole log; its data is already the state machine's),
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

    /// Records, durably, that the state machine's state at `snapshot` is
    /// on disk, so the log up to it is no longer needed; may drop it.
    fn compacted(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
}

/// The replicated state machine, applied in log order on its own thread.
///
/// Its state may be ahead of what Raft hands out (after a restart the
/// engine holds what was applied before the crash; a snapshot received from
/// the leader is installed before Raft records it): entries it already
/// reflects are skipped ([`StateMachine::reflects`]), never applied twice.
pub trait StateMachine: Send + 'static {
    /// Whether the state already reflects entry `index`: the applier then
    /// skips it (its result is not known here).
    fn reflects(&self, index: u64) -> bool;
    /// Applies the payload of one committed normal entry (at `index`, of
    /// `term`); returns what the proposer waits for (if it is on this member).
    /// `payload` shares the entry's buffer.
    fn apply(&mut self, index: u64, term: u64, payload: Bytes) -> Result<Bytes, StorageError>;
    /// Records a configuration change entry as applied.
    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError>;
    /// Makes everything applied since the last commit one atomic step of
    /// the stored state, together with the applied index. Called once per
    /// batch of entries, before any proposer of them is answered. Not
    /// durable by itself ([`StateMachine::persist`] is).
    fn commit(&mut self) -> Result<(), StorageError>;
    /// Makes every committed step durable, so the log up to the applied
    /// index may be dropped.
    fn persist(&mut self) -> Result<(), StorageError>;
    /// A snapshot from the leader was received and stored aside (by the
    /// peer side) for the Raft message `snapshot` describes: make it the
    /// state, before Raft sees the message, so that the log never records
    /// a snapshot the state does not hold. False if nothing matching was
    /// stored (a newer transfer replaced it): the message is then dropped.
    fn install_received(&mut self, snapshot: &SnapshotMetadata) -> Result<bool, StorageError>;
    /// Raft recorded the snapshot `snapshot` (the log before it is gone):
    /// the state must hold at least that index.
    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError>;
    fn applied_index(&self) -> u64;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Everything the raft thread sends to other members. The peer transport
/// implements it; tests record. Every method returns at once: the raft
/// thread never waits for the network.
pub trait Outbox: Send + 'static {
    /// Queues the Raft messages of one Ready (never an `InstallSnapshot`:
    /// those go to [`Outbox::send_snapshot`]). Peers whose messages were
    /// dropped at once (queue full) are added to `unreachable`.
    fn send(&mut self, messages: Vec<Message>, unreachable: &mut Vec<NodeId>);

    /// Starts streaming the snapshot of an `InstallSnapshot` message to its
    /// addressee. The outcome of a started transfer comes back as
    /// [`PeerEvent::SnapshotSent`].
    fn send_snapshot(&mut self, message: &Message) -> SnapshotSend;

    /// Asks `leader` to propose `proposals` (framed entry data). False if
    /// they were not queued: then they can never reach it.
    fn forward(&mut self, leader: NodeId, proposals: Vec<Bytes>) -> bool;

    /// Tells `origin` that its forwarded proposals `request_ids` were not
    /// proposed. Best effort: if this is lost, they time out there.
    fn refuse(&mut self, origin: NodeId, request_ids: Vec<RequestId>);
}

/// What became of [`Outbox::send_snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSend {
    /// A transfer started; its outcome will be reported.
    Started,
    /// A transfer to that peer is already running; its outcome will be
    /// reported.
    InProgress,
    /// Nothing was started (no route, no snapshot files): the snapshot did
    /// not reach the peer.
    Failed,
}

/// What the peer side tells the node.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message from a peer, already admitted.
    Received(Message),
    /// Messages to this peer were lost (stream broken).
    Unreachable(NodeId),
    /// An `InstallSnapshot` whose data the peer side has received whole and
    /// stored aside: the state machine installs it before Raft sees the
    /// message.
    SnapshotReceived(Message),
    /// A snapshot transfer to `peer` ended: the peer stored it durably
    /// (`delivered`), or the transfer failed.
    SnapshotSent { peer: NodeId, delivered: bool },
    /// `from` asks this member, as its leader, to propose these entry datas.
    Forwarded { from: NodeId, proposals: Vec<Bytes> },
    /// A peer did not propose these forwarded requests (by request id).
    Refused { request_ids: Vec<RequestId> },
    /// Forwarded proposals this member never sent (the stream to the peer
    /// was down or broke before they left): never proposed anywhere.
    NotDelivered { proposals: Vec<Bytes> },
}
