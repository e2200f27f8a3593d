//! Inbound peer traffic: the `Peer` gRPC service.
//!
//! Each `Peer.Raft` stream is admitted by its handshake (cluster, addressee,
//! protocol version) before any of its frames reach the node; every message
//! must then name the admitted sender and this member. A frame's Raft
//! messages reach the node before its forwarded writes, in stream order.
//! `Peer.InstallSnapshot` is handed to [`snapshot_transfer`](super::snapshot_transfer).
//! This module never proposes or decides anything: it translates frames into
//! [`PeerEvent`]s, waiting for room in the node's input queue (so a member
//! that falls behind slows its peers' streams instead of buffering them).

use std::pin::Pin;

use crate::state::{SharedState, WeakState};
use proto::peer as wire;
use raft::MessageBody;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot_transfer::receive_snapshot;
use super::LocalIdentity;
use crate::convert::message_from_wire;
use crate::node::{PeerEvent, PeerEvents};

/// Answers queued on a `Peer.Raft` stream: its acceptance, then at most an
/// error that ends it.
const ANSWERS_MAX: usize = 1;

/// The `Peer` gRPC service of one member.
#[derive(Clone)]
pub struct PeerService {
    identity: LocalIdentity,
    events: PeerEvents,
    /// Where received snapshots are stored; without it they are refused.
    snapshots: Option<WeakState>,
}

impl PeerService {
    pub fn new(identity: LocalIdentity, events: PeerEvents) -> Self {
        PeerService {
            identity,
            events,
            snapshots: None,
        }
    }

    /// Received snapshots are stored aside in `state`'s engine directory.
    pub fn with_state(mut self, state: &SharedState) -> Self {
        self.snapshots = Some(state.downgrade());
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
        let (accepted_tx, accepted_rx) = mpsc::channel(ANSWERS_MAX);
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
                        .deliver(PeerEvent::Refused { request_ids })
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
                            if events.deliver(PeerEvent::Received(message)).await.is_err() {
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
                        .deliver(PeerEvent::Forwarded { from, proposals })
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
        let Some(state) = self.snapshots.clone() else {
            return Err(Status::unimplemented(
                "this member does not accept snapshots",
            ));
        };
        let ack = receive_snapshot(
            self.identity,
            from,
            header,
            chunks,
            state,
            self.events.clone(),
        )
        .await?;
        Ok(Response::new(ack))
    }
}
