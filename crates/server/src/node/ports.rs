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
pub struct ImageFixed(pub(super) std::sync::mpsc::SyncSender<()>);

impl ImageFixed {
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

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
