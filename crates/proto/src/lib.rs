//! Wire definitions for raftkv: the protobuf messages and gRPC service stubs
//! that clients and members exchange.
//!
//! # What this crate owns
//!
//! * The etcd v3 client API, written from etcd 3.4's field list so that
//!   `etcdctl` and etcd's client libraries work against raftkv unchanged:
//!   [`etcdserverpb`] (services `KV`, `Watch`, `Lease`, `Cluster`,
//!   `Maintenance`, `Auth` and their messages), [`mvccpb`] (`KeyValue`,
//!   `Event`) and [`authpb`] (`User`, `Permission`, `Role`).
//! * The member-to-member transport, our own design: [`peer`] (package
//!   `raftkvpb.peer`): one pipelined stream per peer pair for ordinary Raft
//!   messages and a chunked stream per snapshot. `proto/raftkvpb/peer.proto`
//!   documents the protocol (handshake, admission checks, ordering).
//! * [`FILE_DESCRIPTOR_SET`]: the compiled descriptors, for gRPC reflection
//!   and for tests that inspect field numbers.
//!
//! Everything here is generated at build time from `proto/*.proto` by
//! `build.rs` (protox + tonic-prost-build; no `protoc` needed). Each module
//! holds the prost message types, a `*_client` module with a tonic client per
//! service and a `*_server` module with the service trait and its tonic
//! server (e.g. [`etcdserverpb::kv_server::Kv`],
//! [`peer::peer_client::PeerClient`]). `bytes` fields are [`bytes::Bytes`].
//!
//! # Notes for implementers
//!
//! * prost renames etcd's fields to snake case: `TTL` is `ttl`, `ID` is `id`,
//!   `grantedTTL` is `granted_ttl`, `peerURLs` is `peer_ur_ls`, `isLearner`
//!   is `is_learner`; `HashKVRequest` is `HashKvRequest`, service `KV` is
//!   [`etcdserverpb::kv_server::Kv`]. The wire keeps etcd's numbers.
//! * No default method stubs are generated: a server implements every method
//!   of a service it hosts, answering `Status::unimplemented` explicitly for
//!   what raftkv does not support, so a forgotten method cannot compile.
//! * etcdctl 3.4 sends the HTTP/2 `:authority` `http://host:port` on calls it
//!   dials per endpoint (`endpoint status`, `move-leader`, `--cluster`) when
//!   given endpoints with a scheme; the `h2` crate under tonic rejects that
//!   before any handler runs. The fix belongs to the server's transport; see
//!   `tests/etcdctl.rs` (`endpoint_with_scheme_breaks_per_endpoint_calls`).
//!
//! # What this crate must never do
//!
//! * Hold behaviour. No validation, no defaults beyond protobuf's, no
//!   conversions to the Raft crate's types, no service implementations:
//!   those live in `server`, which may change without touching the wire.
//! * Change the etcd wire. In `etcdserverpb`, `mvccpb` and `authpb` a field's
//!   number, type and name, a message's or service's name, an enum value, or
//!   a package name is fixed by etcd; changing one breaks every etcd client.
//!   The tests in `tests/` pin them: hand-worked wire bytes, the compiled
//!   descriptors against etcd 3.4's field table, gRPC paths over a real
//!   connection, and the real `etcdctl` against the generated servers.
//! * Break older raftkv members. In `raftkvpb.peer` add fields and oneof
//!   members only; never renumber, retype or reuse a number.
//! * Depend on other raftkv crates. Everyone depends on the wire; the wire
//!   depends on nobody.

/// Keys, values and watch events (etcd package `mvccpb`).
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Users, roles and permissions (etcd package `authpb`).
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// The etcd v3 client API: services and their requests and responses
/// (etcd package `etcdserverpb`).
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// The raftkv member-to-member transport (package `raftkvpb.peer`).
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/raftkvpb.peer.rs"));
}

/// What a member writes into a Raft log entry and what applying it returns
/// (package `raftkvpb.internal`).
pub mod internal {
    pub use crate::raftkvpb_nesting::internal::*;
}

/// Generated code names other packages by relative paths
/// (`super::super::super::etcdserverpb`), so `raftkvpb.internal` must sit
/// two levels below the crate root.
mod raftkvpb_nesting {
    pub mod internal {
        include!(concat!(env!("OUT_DIR"), "/raftkvpb.internal.rs"));
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of every file above
/// (without source comments), e.g. for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
