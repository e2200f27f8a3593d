//! Outbound peer traffic: what the raft thread hands its [`Outbox`].
//!
//! Each peer has one long-lived `Peer.Raft` stream fed from a bounded queue:
//! every batch of messages one Ready produced for that peer becomes one
//! frame, pipelined, never waiting for an answer. When the queue is full the
//! messages are dropped (Raft retransmits what matters) and the raft thread
//! hears at once that the peer is unreachable; when the stream breaks it
//! hears it as a [`PeerEvent::Unreachable`]. Either way the leader falls back
//! to probing instead of streaming into the void.
//!
//! The same streams carry the node's forwarded writes (a follower's client
//! writes, for the leader to propose) and refusals of them, as fields of the
//! frame beside the Raft messages: one frame, many writes. Forwarded writes
//! whose frame never left come back as [`PeerEvent::NotDelivered`].
//!
//! This module never blocks the raft thread: every `Outbox` call only
//! enqueues or spawns.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{SharedState, WeakState};
use bytes::Bytes;
use proto::peer as wire;
use proto::peer::peer_client::PeerClient;
use raft::{Message, MessageBody, NodeId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Request;

use super::snapshot_transfer::send_snapshot;
use super::{LocalIdentity, PEER_MESSAGE_BYTES_MAX};
use crate::convert::message_to_wire;
use crate::node::{Outbox, PeerEvent, PeerEvents, RequestId, SnapshotSend};

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Wait before reconnecting to a peer whose stream failed; doubles up to
/// `RECONNECT_BACKOFF_MAX`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Frames handed from a peer's queue to its gRPC call: small, the queue
/// above is the buffer that matters.
const STREAM_FRAMES_MAX: usize = 16;
struct PeerQueue {
    /// Frames without handshake: the stream task adds that.
    frames: mpsc::Sender<wire::RaftFrame>,
    urls: Vec<String>,
    /// For snapshot transfers; connects on first use.
    channel: Option<tonic::transport::Channel>,
}

/// The outbound half of the peer side: one stream per peer.
#[derive(Clone)]
pub struct Transport {
    identity: LocalIdentity,
    events: PeerEvents,
    /// std Mutex: held only to look up or replace a queue, never across an
    /// await.
    peers: Arc<Mutex<HashMap<NodeId, PeerQueue>>>,
    /// The state snapshots are streamed from; without it a snapshot send is
    /// reported as failed at once.
    snapshots: Option<WeakState>,
    /// Snapshot transfers run as tasks started from the (non-async) Raft
    /// thread, on the runtime the transport was created in.
    runtime: Option<tokio::runtime::Handle>,
    /// Peers a snapshot is being sent to: one transfer per peer at a time.
    sending_snapshots: Arc<Mutex<HashSet<NodeId>>>,
    /// Source address of outbound peer connections: the address this member
    /// listens on for peers, so that peers (and firewalls between them) see
    /// its traffic come from where it says it is.
    local_address: Option<std::net::IpAddr>,
}

impl Transport {
    pub fn new(identity: LocalIdentity, events: PeerEvents) -> Self {
        Transport {
            identity,
            events,
            peers: Arc::new(Mutex::new(HashMap::new())),
            snapshots: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
            sending_snapshots: Arc::new(Mutex::new(HashSet::new())),
            local_address: None,
        }
    }

    /// Outbound peer connections leave from `address` (an address this
    /// member listens on; unspecified addresses are ignored).
    pub fn with_local_address(mut self, address: std::net::IpAddr) -> Self {
        if !address.is_unspecified() {
            self.local_address = Some(address);
        }
        self
    }

    /// Snapshots Raft asks to send are streamed from `files`.
    pub fn with_state(mut self, state: &SharedState) -> Self {
        self.snapshots = Some(state.downgrade());
        self
    }

    /// Starts streaming the snapshot in `message` to its addressee, unless a
    /// transfer to that peer is already running. The outcome of a started
    /// transfer comes back as [`PeerEvent::SnapshotSent`].
    pub fn send_snapshot(&self, message: &Message) -> SnapshotSend {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return SnapshotSend::Failed;
        };
        let peer = message.to;
        let channel = self
            .lock_peers()
            .get(&peer)
            .and_then(|queue| queue.channel.clone());
        let state = self.snapshots.as_ref().and_then(WeakState::upgrade);
        let (Some(state), Some(runtime), Some(channel)) = (state, self.runtime.clone(), channel)
        else {
            tracing::warn!(
                peer,
                "cannot send a snapshot: no state to stream or no route to the peer"
            );
            return SnapshotSend::Failed;
        };
        {
            let mut sending = self
                .sending_snapshots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !sending.insert(peer) {
                return SnapshotSend::InProgress;
            }
        }
        let events = self.events.clone();
        let sending = self.sending_snapshots.clone();
        let identity = self.identity;
        let wire_message = message_to_wire(message);
        let metadata = snapshot.metadata.clone();
        runtime.spawn(async move {
            tracing::info!(peer = format!("{peer:x}"), index = metadata.index, "sending a snapshot");
            let index = metadata.index;
            let result =
                send_snapshot(identity, peer, channel, state, wire_message, metadata).await;
            sending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&peer);
            let delivered = match result {
                Ok(bytes) => {
                    tracing::info!(peer = format!("{peer:x}"), index, bytes, "snapshot sent");
                    true
                }
                Err(error) => {
                    tracing::warn!(peer = format!("{peer:x}"), index, %error, "sending a snapshot failed");
                    false
                }
            };
            let _ = events
                .deliver(PeerEvent::SnapshotSent { peer, delivered })
                .await;
        });
        SnapshotSend::Started
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, PeerQueue>> {
        // A panic while holding this lock leaves only a map of queues behind,
        // which stays consistent: recover it.
        self.peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or re-addresses a peer. Its stream starts at once and reconnects
    /// with backoff for as long as the peer is known.
    pub fn set_peer(&self, id: NodeId, urls: Vec<String>) {
        if id == self.identity.member_id {
            return;
        }
        let mut peers = self.lock_peers();
        if peers.get(&id).is_some_and(|peer| peer.urls == urls) {
            return;
        }
        let (frames, receiver) = mpsc::channel(PEER_QUEUE_FRAMES_MAX);
        tokio::spawn(run_peer_stream(
            self.identity,
            id,
            urls.clone(),
            receiver,
            self.events.clone(),
            self.local_address,
        ));
        let local_address = self.local_address;
        let channel = urls
            .first()
            .and_then(|url| tonic::transport::Endpoint::from_shared(url.clone()).ok())
            .map(|endpoint| {
                endpoint
                    .local_address(local_address)
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .connect_lazy()
            });
        // Replacing the queue drops the old sender, which ends the old task.
        peers.insert(
            id,
            PeerQueue {
                frames,
                urls,
                channel,
            },
        );
    }

    pub fn remove_peer(&self, id: NodeId) {
        self.lock_peers().remove(&id);
    }

    /// Asks `leader` to propose `proposals` (entry data, framed by the
    /// node). Returns false if they were not queued (unknown peer, full
    /// queue): then they can never reach it.
    pub fn forward(&self, leader: NodeId, proposals: Vec<Bytes>) -> bool {
        self.enqueue(
            leader,
            wire::RaftFrame {
                forwarded_proposals: proposals,
                ..Default::default()
            },
        )
    }

    /// Tells `origin` that its forwarded proposals `request_ids` were not
    /// proposed. Best effort: if this is lost, they time out there.
    pub fn refuse(&self, origin: NodeId, request_ids: Vec<RequestId>) {
        self.enqueue(
            origin,
            wire::RaftFrame {
                refused_proposals: request_ids,
                ..Default::default()
            },
        );
    }

    fn enqueue(&self, to: NodeId, frame: wire::RaftFrame) -> bool {
        match self.lock_peers().get(&to) {
            Some(peer) => peer.frames.try_send(frame).is_ok(),
            None => false,
        }
    }

    /// Enqueues messages, one frame per destination; adds to `unreachable`
    /// the peers whose queue was full. Never blocks.
    pub fn send(&self, messages: Vec<Message>, unreachable: &mut Vec<NodeId>) {
        let mut by_peer: HashMap<NodeId, Vec<wire::RaftMessage>> = HashMap::new();
        for message in &messages {
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                // Snapshots travel on their own call, data and all.
                debug_assert!(false, "the node hands snapshots to send_snapshot");
                continue;
            }
            by_peer
                .entry(message.to)
                .or_default()
                .push(message_to_wire(message));
        }
        let peers = self.lock_peers();
        for (to, frame) in by_peer {
            match peers.get(&to) {
                Some(peer) => {
                    let frame = wire::RaftFrame {
                        messages: frame,
                        ..Default::default()
                    };
                    if peer.frames.try_send(frame).is_err() {
                        unreachable.push(to);
                    }
                }
                None => tracing::debug!(to, "dropping messages for an unknown peer"),
            }
        }
    }
}

impl Outbox for Transport {
    fn send(&mut self, messages: Vec<Message>, unreachable: &mut Vec<NodeId>) {
        Transport::send(self, messages, unreachable);
    }

    fn send_snapshot(&mut self, message: &Message) -> SnapshotSend {
        Transport::send_snapshot(self, message)
    }

    fn forward(&mut self, leader: NodeId, proposals: Vec<Bytes>) -> bool {
        Transport::forward(self, leader, proposals)
    }

    fn refuse(&mut self, origin: NodeId, request_ids: Vec<RequestId>) {
        Transport::refuse(self, origin, request_ids);
    }
}

/// Keeps one outbound stream to `peer` alive until its queue is dropped.
async fn run_peer_stream(
    identity: LocalIdentity,
    peer: NodeId,
    urls: Vec<String>,
    mut queue: mpsc::Receiver<wire::RaftFrame>,
    events: PeerEvents,
    local_address: Option<std::net::IpAddr>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut attempt: usize = 0;
    loop {
        let url = urls[attempt % urls.len().max(1)].clone();
        attempt += 1;
        let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
            Ok(endpoint) => endpoint
                .local_address(local_address)
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5)),
            Err(error) => {
                tracing::error!(peer, url, %error, "invalid peer URL");
                return;
            }
        };
        match endpoint.connect().await {
            Ok(channel) => {
                let mut client = PeerClient::new(channel)
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
                let (frames_tx, frames_rx) = mpsc::channel::<wire::RaftFrame>(STREAM_FRAMES_MAX);
                let handshake = wire::RaftFrame {
                    handshake: Some(identity.handshake_to(peer)),
                    ..Default::default()
                };
                if frames_tx.send(handshake).await.is_err() {
                    return;
                }
                // The peer answers the handshake at once; frames queued
                // meanwhile wait in `queue`.
                let call = client.raft(Request::new(ReceiverStream::new(frames_rx)));
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(Ok(response)) => {
                        // Only an admitted stream proves the peer is back: a
                        // TCP connect alone may be a proxy or load balancer
                        // answering for a dead member, and resetting on it
                        // retried such a peer every 50 ms.
                        backoff = RECONNECT_BACKOFF_MIN;
                        let mut accepted = response.into_inner();
                        loop {
                            tokio::select! {
                                frame = queue.recv() => {
                                    let Some(frame) = frame else { return; };
                                    if let Err(unsent) = frames_tx.send(frame).await {
                                        report_undelivered(unsent.0, &events).await;
                                        break;
                                    }
                                }
                                answer = accepted.next() => {
                                    // Nothing follows the acceptance: any
                                    // answer now is the end of the stream.
                                    match answer {
                                        Some(Ok(_)) => {}
                                        Some(Err(status)) => {
                                            tracing::warn!(peer, url, %status, "raft stream to peer closed");
                                            break;
                                        }
                                        None => break,
                                    }
                                }
                            }
                        }
                    }
                    Ok(Err(status)) => {
                        tracing::warn!(peer, url, %status, "peer refused the raft stream")
                    }
                    Err(_) => {
                        tracing::warn!(peer, url, "peer did not answer the raft stream handshake")
                    }
                }
            }
            Err(error) => {
                tracing::debug!(peer, url, %error, "cannot connect to peer");
            }
        }
        if events.deliver(PeerEvent::Unreachable(peer)).await.is_err() {
            return;
        }
        // Drop what queued up while disconnected, and what comes while
        // waiting to reconnect: Raft messages are stale by then, and
        // forwarded writes fail at once rather than at their timeout.
        while let Ok(frame) = queue.try_recv() {
            report_undelivered(frame, &events).await;
        }
        let reconnect_at = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(reconnect_at) => break,
                frame = queue.recv() => match frame {
                    Some(frame) => report_undelivered(frame, &events).await,
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// A frame that never left: its forwarded proposals go back to the node.
async fn report_undelivered(frame: wire::RaftFrame, events: &PeerEvents) {
    if !frame.forwarded_proposals.is_empty() {
        let _ = events
            .deliver(PeerEvent::NotDelivered {
                proposals: frame.forwarded_proposals,
            })
            .await;
    }
}
