//! The peer transport: carries Raft messages between members over gRPC.
//!
//! Outbound, each peer has one long-lived `Peer.Raft` stream fed from a
//! bounded queue: every batch of messages one Ready produced for that peer
//! becomes one frame, pipelined, never waiting for an answer. When the queue
//! is full or the stream breaks, messages are dropped (Raft retransmits what
//! matters) and the Raft task is told the peer is unreachable, so the leader
//! falls back to probing instead of streaming into the void. Inbound, the
//! `Peer` service checks each stream's handshake (cluster, addressee,
//! protocol version) before any of its messages reach Raft.
//!
//! The same streams carry the node's forwarded writes (a follower's client
//! writes, for the leader to propose) and the leader's refusals of them, as
//! fields of the frame beside the Raft messages: one frame, many writes.
//!
//! This module never blocks the Raft task: `send` only enqueues.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::peer as wire;
use proto::peer::peer_client::PeerClient;
use raft::{Message, MessageBody, NodeId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use wal::SnapshotFiles;

use crate::convert::{message_from_wire, message_to_wire};
use crate::snapshot_transfer::{receive_snapshot, send_snapshot};

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Wait before reconnecting to a peer whose stream failed; doubles up to
/// `RECONNECT_BACKOFF_MAX`.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Largest gRPC message accepted from a peer (a frame of entries).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What the transport tells the Raft task.
#[derive(Debug)]
pub enum TransportEvent {
    /// A message from a peer, already admitted.
    Received(Message),
    /// Messages to this peer were lost (queue full, stream broken).
    Unreachable(NodeId),
    /// A snapshot transfer to `peer` ended: the peer stored it durably
    /// (`delivered`), or the transfer failed.
    SnapshotSent { peer: NodeId, delivered: bool },
    /// `from` asks this member, as its leader, to propose these entry datas.
    Forwarded {
        from: NodeId,
        proposals: Vec<bytes::Bytes>,
    },
    /// A peer did not propose these forwarded requests (by request id).
    Refused { request_ids: Vec<u64> },
    /// Forwarded proposals this member never sent (the stream to the peer
    /// was down or broke before they left): never proposed anywhere.
    NotDelivered { proposals: Vec<bytes::Bytes> },
}

/// Identity checked on every stream.
#[derive(Clone, Copy, Debug)]
pub struct LocalIdentity {
    pub cluster_id: u64,
    pub member_id: NodeId,
}

impl LocalIdentity {
    pub(crate) fn handshake_to(&self, to: NodeId) -> wire::Handshake {
        wire::Handshake {
            cluster_id: self.cluster_id,
            from: self.member_id,
            to,
            protocol_version: wire::ProtocolVersion::ProtocolVersion1 as i32,
        }
    }

    /// Admission rules of `peer.proto`.
    fn admit(&self, handshake: Option<&wire::Handshake>) -> Result<NodeId, Status> {
        let Some(handshake) = handshake else {
            return Err(Status::invalid_argument(
                "first frame must carry a handshake",
            ));
        };
        if handshake.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "peer {:x} belongs to cluster {:x}, this member to cluster {:x}",
                handshake.from, handshake.cluster_id, self.cluster_id
            )));
        }
        if handshake.to != self.member_id {
            return Err(Status::failed_precondition(format!(
                "stream addressed to member {:x}, this is member {:x}",
                handshake.to, self.member_id
            )));
        }
        if handshake.protocol_version != wire::ProtocolVersion::ProtocolVersion1 as i32 {
            return Err(Status::unimplemented(format!(
                "peer protocol version {} is not supported",
                handshake.protocol_version
            )));
        }
        Ok(handshake.from)
    }
}

struct PeerQueue {
    /// Frames without handshake: the stream task adds that.
    frames: mpsc::Sender<wire::RaftFrame>,
    urls: Vec<String>,
    /// For snapshot transfers; connects on first use.
    channel: Option<tonic::transport::Channel>,
}

/// The outbound half: one stream per peer.
#[derive(Clone)]
pub struct Transport {
    identity: LocalIdentity,
    events: mpsc::Sender<TransportEvent>,
    /// std Mutex: held only to look up or replace a queue, never across an
    /// await.
    peers: Arc<Mutex<HashMap<NodeId, PeerQueue>>>,
    /// Where snapshots to send are read from; without it a snapshot send
    /// is reported as failed at once.
    snapshots: Option<SnapshotFiles>,
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
    pub fn new(identity: LocalIdentity, events: mpsc::Sender<TransportEvent>) -> Self {
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
    pub fn with_snapshot_files(mut self, files: SnapshotFiles) -> Self {
        self.snapshots = Some(files);
        self
    }

    /// Starts streaming the snapshot in `message` to its addressee, unless a
    /// transfer to that peer is already running. The outcome comes back as
    /// [`TransportEvent::SnapshotSent`].
    fn send_snapshot(&self, message: &Message) {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            return;
        };
        let peer = message.to;
        let channel = self
            .lock_peers()
            .get(&peer)
            .and_then(|queue| queue.channel.clone());
        let events = self.events.clone();
        let (Some(files), Some(runtime), Some(channel)) =
            (self.snapshots.clone(), self.runtime.clone(), channel)
        else {
            tracing::warn!(
                peer,
                "cannot send a snapshot: no snapshot files or no route to the peer"
            );
            let _ = events.try_send(TransportEvent::SnapshotSent {
                peer,
                delivered: false,
            });
            return;
        };
        {
            let mut sending = self
                .sending_snapshots
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !sending.insert(peer) {
                return;
            }
        }
        let sending = self.sending_snapshots.clone();
        let identity = self.identity;
        let wire_message = message_to_wire(message);
        let metadata = snapshot.metadata.clone();
        runtime.spawn(async move {
            tracing::info!(peer = format!("{peer:x}"), index = metadata.index, "sending a snapshot");
            let index = metadata.index;
            let result =
                send_snapshot(identity, peer, channel, files, wire_message, metadata).await;
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
                .send(TransportEvent::SnapshotSent { peer, delivered })
                .await;
        });
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
    pub fn forward(&self, leader: NodeId, proposals: Vec<bytes::Bytes>) -> bool {
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
    pub fn refuse(&self, origin: NodeId, request_ids: Vec<u64>) {
        self.enqueue(
            origin,
            wire::RaftFrame {
                refused_proposals: request_ids,
                ..Default::default()
            },
        );
    }

    fn enqueue(&self, to: NodeId, frame: wire::RaftFrame) -> bool {
        let queued = match self.lock_peers().get(&to) {
            Some(peer) => peer.frames.try_send(frame).is_ok(),
            None => false,
        };
        if !queued {
            let _ = self.events.try_send(TransportEvent::Unreachable(to));
        }
        queued
    }

    /// Enqueues messages, one frame per destination. Never blocks.
    pub fn send(&self, messages: Vec<Message>) {
        let mut by_peer: HashMap<NodeId, Vec<wire::RaftMessage>> = HashMap::new();
        for message in &messages {
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                // Snapshots travel on their own call, data and all.
                self.send_snapshot(message);
                continue;
            }
            by_peer
                .entry(message.to)
                .or_default()
                .push(message_to_wire(message));
        }
        let mut unreachable = Vec::new();
        {
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
        for id in unreachable {
            let _ = self.events.try_send(TransportEvent::Unreachable(id));
        }
    }
}

/// Keeps one outbound stream to `peer` alive until its queue is dropped.
async fn run_peer_stream(
    identity: LocalIdentity,
    peer: NodeId,
    urls: Vec<String>,
    mut queue: mpsc::Receiver<wire::RaftFrame>,
    events: mpsc::Sender<TransportEvent>,
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
                let (frames_tx, frames_rx) = mpsc::channel::<wire::RaftFrame>(16);
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
                                        report_undelivered(unsent.0, &events);
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
        let _ = events.try_send(TransportEvent::Unreachable(peer));
        // Drop what queued up while disconnected, and what comes while
        // waiting to reconnect: Raft messages are stale by then, and
        // forwarded writes fail at once rather than at their timeout.
        while let Ok(frame) = queue.try_recv() {
            report_undelivered(frame, &events);
        }
        let reconnect_at = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(reconnect_at) => break,
                frame = queue.recv() => match frame {
                    Some(frame) => report_undelivered(frame, &events),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// A frame that never left: its forwarded proposals go back to the node.
fn report_undelivered(frame: wire::RaftFrame, events: &mpsc::Sender<TransportEvent>) {
    if !frame.forwarded_proposals.is_empty() {
        let _ = events.try_send(TransportEvent::NotDelivered {
            proposals: frame.forwarded_proposals,
        });
    }
}

/// The inbound half: the `Peer` gRPC service.
#[derive(Clone)]
pub struct PeerService {
    identity: LocalIdentity,
    events: mpsc::Sender<TransportEvent>,
    /// Where received snapshots are stored; without it they are refused.
    snapshots: Option<SnapshotFiles>,
}

impl PeerService {
    pub fn new(identity: LocalIdentity, events: mpsc::Sender<TransportEvent>) -> Self {
        PeerService {
            identity,
            events,
            snapshots: None,
        }
    }

    /// Received snapshots are stored in `files`.
    pub fn with_snapshot_files(mut self, files: SnapshotFiles) -> Self {
        self.snapshots = Some(files);
        self
    }
}

type AcceptedStream = Pin<Box<dyn Stream<Item = Result<wire::RaftStreamAccepted, Status>> + Send>>;

#[tonic::async_trait]
impl wire::peer_server::Peer for PeerService {
    type RaftStream = AcceptedStream;

    async fn raft(
        &self,
        request: Request<Streaming<wire::RaftFrame>>,
    ) -> Result<Response<Self::RaftStream>, Status> {
        let mut frames = request.into_inner();
        let first = match frames.message().await? {
            Some(frame) => frame,
            None => {
                return Err(Status::invalid_argument(
                    "stream ended before its handshake",
                ))
            }
        };
        let from = self.identity.admit(first.handshake.as_ref())?;
        let expected_to = self.identity.member_id;
        let events = self.events.clone();
        let (accepted_tx, accepted_rx) = mpsc::channel(1);
        let _ = accepted_tx
            .send(Ok(wire::RaftStreamAccepted {
                member_id: expected_to,
            }))
            .await;
        tokio::spawn(async move {
            let mut pending = first;
            loop {
                if !pending.refused_proposals.is_empty() {
                    let request_ids = std::mem::take(&mut pending.refused_proposals);
                    if events
                        .send(TransportEvent::Refused { request_ids })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                for message in pending.messages.drain(..) {
                    if message.from != from || message.to != expected_to {
                        let _ = accepted_tx
                            .send(Err(Status::invalid_argument(format!(
                                "message from {:x} to {:x} on a stream from {from:x} to {expected_to:x}",
                                message.from, message.to
                            ))))
                            .await;
                        return;
                    }
                    match message_from_wire(message) {
                        Ok(message)
                            if matches!(message.body, MessageBody::InstallSnapshot { .. }) =>
                        {
                            // Snapshots arrive on `InstallSnapshot` with their
                            // data; one here has none and must not reach Raft.
                            tracing::warn!(
                                from,
                                "dropping a snapshot sent on the raft stream (it carries no data)"
                            );
                        }
                        Ok(message) => {
                            if events
                                .send(TransportEvent::Received(message))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(from, %error, "dropping malformed raft message")
                        }
                    }
                }
                // After the frame's Raft messages: a forwarded write then
                // meets a leader that has seen everything sent before it.
                if !pending.forwarded_proposals.is_empty() {
                    let proposals = std::mem::take(&mut pending.forwarded_proposals);
                    if events
                        .send(TransportEvent::Forwarded { from, proposals })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                match frames.message().await {
                    Ok(Some(frame)) => pending = frame,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(from, %status, "raft stream from peer ended");
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(accepted_rx))))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<wire::SnapshotChunk>>,
    ) -> Result<Response<wire::SnapshotAck>, Status> {
        let mut chunks = request.into_inner();
        let header = match chunks.message().await? {
            Some(wire::SnapshotChunk {
                part: Some(wire::snapshot_chunk::Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "snapshot stream must open with a header",
                ))
            }
        };
        let from = self.identity.admit(header.handshake.as_ref())?;
        let Some(files) = self.snapshots.clone() else {
            return Err(Status::unimplemented(
                "this member does not accept snapshots",
            ));
        };
        let ack = receive_snapshot(
            self.identity,
            from,
            header,
            chunks,
            files,
            self.events.clone(),
        )
        .await?;
        Ok(Response::new(ack))
    }
}
