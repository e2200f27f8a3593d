//! The raft thread's one input queue, and who may put what into it.
//!
//! Client handles, the ticker, the peer side and the snapshot writer all
//! feed the same channel; the raft thread drains it before each Ready, which
//! is what batches proposals (group commit). Peer events go straight into
//! it, with no bridge task between the peer streams and the raft thread.
//!
//! The queue is bounded ([`INPUT_QUEUE_MAX`]). Client inputs never wait for
//! room: a full queue refuses them (`too many requests`). Everything else
//! (peer events, ticks, snapshot reports, stop) waits for room, and waiting
//! senders get it before later client inputs, so an overloaded member slows
//! its peers' streams but never loses their messages.

use bytes::Bytes;
use raft::{ConfChange, LogPosition, NodeId, SnapshotMetadata};
use tokio::sync::{mpsc, oneshot};

use super::load::{Load, INPUT_QUEUE_MAX};
use super::ports::PeerEvent;
use super::{NodeError, RequestId};

pub(crate) enum Input {
    Tick,
    Peer(PeerEvent),
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
    /// The applier made the state durable up to this entry; the log up to
    /// it may go.
    SnapshotTaken(SnapshotMetadata),
    Stop,
}

pub(crate) type InputSender = mpsc::Sender<Input>;
pub(crate) type InputReceiver = mpsc::Receiver<Input>;

/// Queues a client's input (a handle's request), or refuses it when
/// [`CLIENT_INPUTS_MAX`](super::load::CLIENT_INPUTS_MAX) client inputs are
/// queued (the raft thread is that far behind) or the queue is full.
pub(crate) fn try_queue(load: &Load, input: &InputSender, item: Input) -> Result<(), NodeError> {
    debug_assert!(item.is_client_input(), "only client inputs are refused");
    load.admit_client_input()?;
    input.try_send(item).map_err(|error| {
        load.client_input_taken();
        match error {
            mpsc::error::TrySendError::Full(_) => NodeError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        }
    })
}

impl Input {
    /// Whether a client's request queued this (and holds a place counted
    /// by `Load::admit_client_input`).
    pub(crate) fn is_client_input(&self) -> bool {
        matches!(
            self,
            Input::Propose { .. }
                | Input::ProposeConfChange { .. }
                | Input::ReadIndex { .. }
                | Input::TransferLeadership { .. }
        )
    }
}

/// The node stopped: nothing more can be delivered to it.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the node stopped")]
pub struct NodeGone;

/// Where the peer side delivers what it hears (cheap to clone: one per
/// stream task).
#[derive(Clone)]
pub struct PeerEvents {
    input: InputSender,
}

impl PeerEvents {
    /// Hands `event` to the raft thread, waiting for room in its queue (a
    /// waiting sender is served before any client input that comes later).
    pub async fn deliver(&self, event: PeerEvent) -> Result<(), NodeGone> {
        self.input
            .send(Input::Peer(event))
            .await
            .map_err(|_| NodeGone)
    }
}

/// The receiving end of a node's input, created before the node so that the
/// peer side can be wired to it first; [`Node::start`](super::Node::start)
/// consumes it.
pub struct NodeInbox {
    pub(crate) sender: InputSender,
    pub(crate) receiver: InputReceiver,
}

impl NodeInbox {
    /// The next peer event, skipping anything else: for tests of the peer
    /// side that run without a node.
    pub async fn recv_peer_event(&mut self) -> Option<PeerEvent> {
        loop {
            match self.receiver.recv().await? {
                Input::Peer(event) => return Some(event),
                _ => continue,
            }
        }
    }

    /// A peer event already queued, if any (see [`NodeInbox::recv_peer_event`]).
    pub fn try_recv_peer_event(&mut self) -> Option<PeerEvent> {
        while let Ok(input) = self.receiver.try_recv() {
            if let Input::Peer(event) = input {
                return Some(event);
            }
        }
        None
    }
}

/// A node's input queue: the sender the peer side gets, and the inbox the
/// node starts with.
pub fn inbox() -> (PeerEvents, NodeInbox) {
    let (sender, receiver) = mpsc::channel(INPUT_QUEUE_MAX);
    (
        PeerEvents {
            input: sender.clone(),
        },
        NodeInbox { sender, receiver },
    )
}
