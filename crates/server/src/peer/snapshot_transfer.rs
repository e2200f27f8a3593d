//! Moving the state machine from the leader to a follower over
//! `Peer.InstallSnapshot`: a header (handshake and the leader's Raft
//! message), the engine's snapshot stream in chunks (each self-describing
//! and CRC-32C checked: `mvcc`'s chunk format), a trailer with the byte
//! count and a CRC-32C of the whole stream.
//!
//! The sender streams a consistent view of its engine as of when the
//! transfer starts, which is at or after the snapshot the Raft message
//! names (the log up to that index was compacted only once the engine held
//! it); applying goes on while it streams. The receiver builds a new engine
//! generation beside the live one, chunk by chunk, and hands the message to
//! its node only once the stream is whole: the applier installs it before
//! Raft sees the message. Neither side holds more than a few chunks in
//! memory. This module moves bytes; deciding whether to take them is
//! Raft's, installing them is the state machine's.

use std::time::Duration;

use bytes::Bytes;
use proto::peer as wire;
use proto::peer::peer_client::PeerClient;
use raft::{MessageBody, SnapshotMetadata};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::{LocalIdentity, PEER_MESSAGE_BYTES_MAX};
use crate::convert::message_from_wire;
use crate::errors;
use crate::node::{PeerEvent, PeerEvents};
use crate::state::{SharedState, WeakState};

/// Chunks read ahead of the network on the sending side.
const CHUNKS_AHEAD_MAX: usize = 4;
/// Bound on one transfer; a stalled receiver must not pin the sender's
/// progress state forever (Raft retries after a failure report).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Streams this member's engine to `peer` for the snapshot `metadata`
/// names; returns the bytes the peer stored.
pub async fn send_snapshot(
    identity: LocalIdentity,
    peer: raft::NodeId,
    channel: tonic::transport::Channel,
    state: SharedState,
    message: wire::RaftMessage,
    metadata: SnapshotMetadata,
) -> Result<u64, String> {
    let (chunks_tx, chunks_rx) = mpsc::channel::<wire::SnapshotChunk>(CHUNKS_AHEAD_MAX);
    let header = wire::SnapshotChunk {
        part: Some(wire::snapshot_chunk::Part::Header(wire::SnapshotHeader {
            handshake: Some(identity.handshake_to(peer)),
            message: Some(message),
        })),
    };
    // Engine reads happen on a blocking thread; the channel bounds how far
    // they run ahead of the network.
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let stream = state.snapshot_stream().map_err(|error| error.to_string())?;
        // The stream reads its own view; the member may stop meanwhile.
        drop(state);
        if stream.metadata().index < metadata.index {
            // Raft compacts its log only up to what the engine persisted.
            return Err(format!(
                "the engine is at index {}, behind the snapshot at index {} Raft sends",
                stream.metadata().index,
                metadata.index
            ));
        }
        let send = |chunk| {
            chunks_tx
                .blocking_send(chunk)
                .map_err(|_| "the transfer was cut off".to_string())
        };
        send(header)?;
        let mut size = 0u64;
        let mut checksum = 0u32;
        for chunk in stream {
            let chunk = chunk.map_err(|error| format!("reading the engine: {error}"))?;
            checksum = crc32c::crc32c_append(checksum, &chunk);
            size += chunk.len() as u64;
            send(wire::SnapshotChunk {
                part: Some(wire::snapshot_chunk::Part::Data(Bytes::from(chunk))),
            })?;
        }
        send(wire::SnapshotChunk {
            part: Some(wire::snapshot_chunk::Part::Trailer(wire::SnapshotTrailer {
                size_bytes: size,
                crc32c: checksum,
            })),
        })?;
        Ok(size)
    });
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let call = client.install_snapshot(Request::new(ReceiverStream::new(chunks_rx)));
    let answer = tokio::time::timeout(TRANSFER_TIMEOUT, call).await;
    let read = reader
        .await
        .map_err(|error| format!("snapshot reader failed: {error}"))?;
    let sent = read?;
    match answer {
        Ok(Ok(ack)) if ack.get_ref().size_bytes == sent => Ok(sent),
        Ok(Ok(ack)) => Err(format!(
            "peer acknowledged {} bytes of {sent}",
            ack.get_ref().size_bytes
        )),
        Ok(Err(status)) => Err(format!("peer refused the snapshot: {status}")),
        Err(_) => Err("snapshot transfer timed out".to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Status::internal(format!("storing the snapshot: {error}"))),
        Err(error) => Err(Status::internal(format!("storing the snapshot: {error}"))),
    }
}

/// The receiving side of `Peer.InstallSnapshot`, after the header was read
/// and its handshake admitted (`from` is the admitted sender).
pub async fn receive_snapshot(
    identity: LocalIdentity,
    from: raft::NodeId,
    header: wire::SnapshotHeader,
    mut chunks: Streaming<wire::SnapshotChunk>,
    state: WeakState,
    events: PeerEvents,
) -> Result<wire::SnapshotAck, Status> {
    let Some(wire_message) = header.message else {
        return Err(Status::invalid_argument(
            "snapshot header carries no raft message",
        ));
    };
    if wire_message.from != from || wire_message.to != identity.member_id {
        return Err(Status::invalid_argument(format!(
            "snapshot message from {:x} to {:x} on a stream from {from:x} to {:x}",
            wire_message.from, wire_message.to, identity.member_id
        )));
    }
    let message = message_from_wire(wire_message).map_err(|error| {
        Status::invalid_argument(format!("malformed snapshot message: {error}"))
    })?;
    let metadata = match &message.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.metadata.clone(),
        _ => {
            return Err(Status::invalid_argument(
                "the snapshot header's message is not an InstallSnapshot",
            ))
        }
    };
    let create_state = state.clone();
    let mut installer = blocking(move || {
        create_state
            .upgrade()
            .ok_or_else(|| "the member stopped".to_string())?
            .snapshot_installer()
            .map_err(|error| error.to_string())
    })
    .await?;
    let mut size = 0u64;
    let mut checksum = 0u32;
    loop {
        let chunk = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("snapshot stream ended before its trailer"))?;
        match chunk.part {
            Some(wire::snapshot_chunk::Part::Data(data)) => {
                checksum = crc32c::crc32c_append(checksum, &data);
                size += data.len() as u64;
                // A chunk that fails its own checks fails the transfer; the
                // installer's directory goes with it.
                installer =
                    tokio::task::spawn_blocking(move || installer.push(&data).map(|()| installer))
                        .await
                        .map_err(|error| {
                            Status::internal(format!("storing the snapshot: {error}"))
                        })?
                        .map_err(|error| {
                            Status::data_loss(format!(
                                "snapshot at {} arrived damaged: {error}",
                                metadata.index
                            ))
                        })?;
            }
            Some(wire::snapshot_chunk::Part::Trailer(trailer)) => {
                if trailer.size_bytes != size || trailer.crc32c != checksum {
                    return Err(Status::data_loss(format!(
                        "snapshot at {} arrived damaged: {size} bytes with CRC {checksum:#010x}, \
                         the sender says {} bytes with CRC {:#010x}",
                        metadata.index, trailer.size_bytes, trailer.crc32c
                    )));
                }
                if !installer.is_complete() {
                    return Err(Status::data_loss(format!(
                        "snapshot at {} ended before its last chunk",
                        metadata.index
                    )));
                }
                break;
            }
            _ => {
                return Err(Status::invalid_argument(
                    "snapshot stream: expected data or a trailer",
                ))
            }
        }
    }
    tracing::info!(
        from = format!("{from:x}"),
        index = metadata.index,
        term = metadata.term,
        bytes = size,
        "received a snapshot"
    );
    let Some(state) = state.upgrade() else {
        return Err(errors::STOPPED.status());
    };
    state.stage_received(metadata, installer);
    drop(state);
    events
        .deliver(PeerEvent::SnapshotReceived(message))
        .await
        .map_err(|_| errors::STOPPED.status())?;
    Ok(wire::SnapshotAck { size_bytes: size })
}
