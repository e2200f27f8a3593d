//! The peer side of a member: everything that crosses the wire between
//! members.
//!
//! - [`transport`]: outbound. One pipelined `Peer.Raft` stream per peer,
//!   carrying what the raft thread hands its [`Outbox`](crate::node::Outbox)
//!   (Raft messages, forwarded writes, refusals), and snapshot sends.
//! - [`service`]: inbound. The `Peer` gRPC service: admits streams, turns
//!   frames into [`PeerEvent`](crate::node::PeerEvent)s for the node.
//! - [`snapshot_transfer`]: the state machine's engine, streamed in
//!   checksummed chunks, in both directions.
//!
//! Dependencies point one way: `transport` and `service` use
//! `snapshot_transfer`, all three use this module's identity and limits, and
//! the node knows none of them (it sees only its `Outbox` trait and the
//! events it receives). This module must never block the raft thread, hand
//! Raft a message from a stream whose handshake was not admitted, or hand it
//! a snapshot message before the snapshot's data is stored whole.

pub mod service;
pub mod snapshot_transfer;
pub mod transport;

use proto::peer as wire;
use raft::NodeId;
use tonic::Status;

pub use service::PeerService;
pub use transport::Transport;

/// Largest gRPC message accepted from a peer (a frame of entries).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

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
    pub(crate) fn admit(&self, handshake: Option<&wire::Handshake>) -> Result<NodeId, Status> {
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
