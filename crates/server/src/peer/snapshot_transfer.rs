//! Moving a snapshot file from the leader to a follower over
//! `Peer.InstallSnapshot`: a header (handshake and the leader's Raft
//! message), the file's data in chunks, a trailer with size and CRC-32C.
//!
//! The receiver writes the chunks into its own snapshot directory and makes
//! the file durable *before* it hands the Raft message to its node: by the
//! time Raft accepts the snapshot and the log records it, the data it
//! stands for is on disk. Neither side ever holds the whole snapshot in
//! memory. This module moves bytes; deciding whether to install them is
//! Raft's, installing them is the state machine's.

use std::time::Duration;

use bytes::Bytes;
use proto::peer as wire;
use proto::peer::peer_client::PeerClient;
use raft::{MessageBody, SnapshotMetadata};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use wal::{SnapshotFiles, SnapshotWriter};

use super::{LocalIdentity, PEER_MESSAGE_BYTES_MAX};
use crate::convert::message_from_wire;
use crate::errors;
use crate::node::{PeerEvent, PeerEvents};

/// Data bytes per chunk: well under gRPC's message limit.
const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks read ahead of the network on the sending side.
const CHUNKS_AHEAD_MAX: usize = 4;
/// Bound on one transfer; a stalled receiver must not pin the sender's
/// progress state forever (Raft retries after a failure report).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Streams the snapshot file `metadata` names to `peer`; returns the bytes
/// the peer made durable.
pub async fn send_snapshot(
    identity: LocalIdentity,
    peer: raft::NodeId,
    channel: tonic::transport::Channel,
    files: SnapshotFiles,
    message: wire::RaftMessage,
    metadata: SnapshotMetadata,
) -> Result<u64, String> {
    let path = files.path_for(&metadata);
    let (chunks_tx, chunks_rx) = mpsc::channel::<wire::SnapshotChunk>(CHUNKS_AHEAD_MAX);
    let header = wire::SnapshotChunk {
        part: Some(wire::snapshot_chunk::Part::Header(wire::SnapshotHeader {
            handshake: Some(identity.handshake_to(peer)),
            message: Some(message),
        })),
    };
    // File reads happen on a blocking thread; the channel bounds how far
    // they run ahead of the network.
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let send = |chunk| {
            chunks_tx
                .blocking_send(chunk)
                .map_err(|_| "the transfer was cut off".to_string())
        };
        send(header)?;
        let (_, mut data) = files.open_data(&path).map_err(|error| error.to_string())?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut size = 0u64;
        let mut checksum = 0u32;
        loop {
            // A damaged local file fails here, on its last chunk, before a
            // trailer could vouch for it.
            let read = data
                .read_chunk(&mut buffer)
                .map_err(|error| error.to_string())?;
            if read == 0 {
                break;
            }
            checksum = crc32c::crc32c_append(checksum, &buffer[..read]);
            size += read as u64;
            send(wire::SnapshotChunk {
                part: Some(wire::snapshot_chunk::Part::Data(Bytes::copy_from_slice(
                    &buffer[..read],
                ))),
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
    work: impl FnOnce() -> Result<T, wal::WalError> + Send + 'static,
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
    files: SnapshotFiles,
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
    let create_files = files.clone();
    let create_metadata = metadata.clone();
    let mut writer: SnapshotWriter =
        blocking(move || create_files.create(&create_metadata)).await?;
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
                writer = blocking(move || {
                    writer.write(&data)?;
                    Ok(writer)
                })
                .await?;
            }
            Some(wire::snapshot_chunk::Part::Trailer(trailer)) => {
                if trailer.size_bytes != size || trailer.crc32c != checksum {
                    return Err(Status::data_loss(format!(
                        "snapshot at {} arrived damaged: {size} bytes with CRC {checksum:#010x}, \
                         the sender says {} bytes with CRC {:#010x}",
                        metadata.index, trailer.size_bytes, trailer.crc32c
                    )));
                }
                blocking(move || writer.finish()).await?;
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
    events
        .deliver(PeerEvent::Received(message))
        .await
        .map_err(|_| errors::STOPPED.status())?;
    Ok(wire::SnapshotAck { size_bytes: size })
}
