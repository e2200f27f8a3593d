//! The gRPC paths a client puts on the wire, checked by a real round trip.
//!
//! The generated servers run in-process on a loopback listener. Two kinds of
//! client call them:
//! * a raw `tonic::client::Grpc` given the literal path etcdctl 3.4 sends
//!   (e.g. `/etcdserverpb.KV/Range`): proves the servers answer exactly
//!   etcd's paths, so an etcd client reaches the right handler;
//! * the generated clients: proves our own stubs speak the same paths, for
//!   unary, client-streaming and bidirectional-streaming methods.

mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::peer;
use support::{TestServer, CLUSTER_ID, MEMBER_ID, PEER_MESSAGES_RECEIVED};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Calls a unary method by its literal path, as any gRPC client would.
async fn call_unary<Req, Resp>(
    channel: Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let response = grpc
        .unary(
            Request::new(request),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    Ok(response.into_inner())
}

/// Calls a bidirectional-streaming method by its literal path with a fixed
/// list of requests and collects every response.
async fn call_streaming<Req, Resp>(
    channel: Channel,
    path: &'static str,
    requests: Vec<Req>,
) -> Result<Vec<Resp>, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let response = grpc
        .streaming(
            Request::new(tokio_stream::iter(requests)),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    let mut responses = Vec::new();
    let mut stream = response.into_inner();
    while let Some(response) = stream.message().await? {
        responses.push(response);
    }
    Ok(responses)
}

#[test]
fn service_names_match_etcd() {
    // The `SERVICE_NAME` consts are what the generated servers route on.
    assert_eq!(pb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(pb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(pb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(pb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(
        pb::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(pb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(peer::peer_server::SERVICE_NAME, "raftkvpb.peer.Peer");
}

#[tokio::test]
async fn etcd_paths_reach_the_generated_servers() {
    let server = TestServer::start().await;
    let channel = server.channel().await;

    let range: pb::RangeResponse = call_unary(
        channel.clone(),
        "/etcdserverpb.KV/Range",
        pb::RangeRequest {
            key: Bytes::from_static(b"health"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(range.kvs[0].key, Bytes::from_static(b"health"));
    assert_eq!(range.header.unwrap().member_id, MEMBER_ID);

    let status: pb::StatusResponse = call_unary(
        channel.clone(),
        "/etcdserverpb.Maintenance/Status",
        pb::StatusRequest {},
    )
    .await
    .unwrap();
    assert_eq!(status.version, "3.4.0");
    assert_eq!(status.raft_applied_index, 99);

    let members: pb::MemberListResponse = call_unary(
        channel.clone(),
        "/etcdserverpb.Cluster/MemberList",
        pb::MemberListRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(members.members[0].peer_ur_ls, ["http://127.0.0.1:2380"]);

    let watch: Vec<pb::WatchResponse> = call_streaming(
        channel.clone(),
        "/etcdserverpb.Watch/Watch",
        vec![pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: Bytes::from_static(b"k"),
                    watch_id: 5,
                    ..Default::default()
                },
            )),
        }],
    )
    .await
    .unwrap();
    assert_eq!(watch.len(), 2);
    assert!(watch[0].created);
    assert_eq!(watch[0].watch_id, 5);
    assert_eq!(watch[1].watch_id, 5);
    assert_eq!(watch[1].events[0].kv.as_ref().unwrap().key, b"k"[..]);

    let keep_alive: Vec<pb::LeaseKeepAliveResponse> = call_streaming(
        channel.clone(),
        "/etcdserverpb.Lease/LeaseKeepAlive",
        vec![
            pb::LeaseKeepAliveRequest { id: 11 },
            pb::LeaseKeepAliveRequest { id: 12 },
        ],
    )
    .await
    .unwrap();
    let renewed: Vec<(i64, i64)> = keep_alive.iter().map(|r| (r.id, r.ttl)).collect();
    assert_eq!(renewed, [(11, 10), (12, 10)]);

    // Routing is by exact path: a near miss is not served.
    let wrong_case: Result<pb::RangeResponse, Status> = call_unary(
        channel.clone(),
        "/etcdserverpb.Kv/Range",
        pb::RangeRequest::default(),
    )
    .await;
    assert_eq!(wrong_case.unwrap_err().code(), Code::Unimplemented);

    // A method the double does not implement answers UNIMPLEMENTED, as a
    // missing feature of the real server should.
    let put: Result<pb::PutResponse, Status> =
        call_unary(channel, "/etcdserverpb.KV/Put", pb::PutRequest::default()).await;
    assert_eq!(put.unwrap_err().code(), Code::Unimplemented);

    server.stop().await;
}

#[tokio::test]
async fn generated_clients_round_trip() {
    let server = TestServer::start().await;
    let channel = server.channel().await;

    let mut kv = pb::kv_client::KvClient::new(channel.clone());
    let range = kv
        .range(pb::RangeRequest {
            key: Bytes::from_static(b"a"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.count, 1);

    let mut maintenance = pb::maintenance_client::MaintenanceClient::new(channel.clone());
    let status = maintenance
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leader, MEMBER_ID);

    let mut cluster = pb::cluster_client::ClusterClient::new(channel.clone());
    let members = cluster
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 1);

    let mut lease = pb::lease_client::LeaseClient::new(channel.clone());
    let mut renewals = lease
        .lease_keep_alive(tokio_stream::iter([pb::LeaseKeepAliveRequest { id: 3 }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewals.message().await.unwrap().unwrap().id, 3);

    let mut watch = pb::watch_client::WatchClient::new(channel.clone());
    let mut watch_responses = watch
        .watch(tokio_stream::iter([pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    watch_id: 9,
                    ..Default::default()
                },
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch_responses.message().await.unwrap().unwrap().watch_id,
        9
    );

    server.stop().await;
}

fn handshake(cluster_id: u64) -> Option<peer::Handshake> {
    Some(peer::Handshake {
        cluster_id,
        from: 1,
        to: MEMBER_ID,
        protocol_version: peer::ProtocolVersion::ProtocolVersion1 as i32,
    })
}

fn heartbeat(commit: u64) -> peer::RaftMessage {
    peer::RaftMessage {
        from: 1,
        to: MEMBER_ID,
        term: 2,
        body: Some(peer::raft_message::Body::Heartbeat(peer::Heartbeat {
            commit,
            read_round: 0,
        })),
    }
}

#[tokio::test]
async fn peer_streams_round_trip() {
    let server = TestServer::start().await;
    let mut client = peer::peer_client::PeerClient::new(server.channel().await);

    // Raft stream: handshake, pipelined batches, one acceptance back, and the
    // callee saw every message.
    let frames = vec![
        peer::RaftFrame {
            handshake: handshake(CLUSTER_ID),
            messages: vec![heartbeat(1)],
            ..Default::default()
        },
        peer::RaftFrame {
            handshake: None,
            messages: vec![heartbeat(2), heartbeat(3)],
            ..Default::default()
        },
    ];
    let mut accepted = client
        .raft(tokio_stream::iter(frames))
        .await
        .unwrap()
        .into_inner();
    let first = accepted.message().await.unwrap().unwrap();
    assert_eq!(first.member_id, MEMBER_ID);
    assert!(accepted.message().await.unwrap().is_none());
    assert_eq!(PEER_MESSAGES_RECEIVED.load(Ordering::SeqCst), 3);

    // A stream from another cluster is refused.
    let refused = client
        .raft(tokio_stream::iter([peer::RaftFrame {
            handshake: handshake(CLUSTER_ID + 1),
            messages: vec![heartbeat(1)],
            ..Default::default()
        }]))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);

    // Snapshot stream: header, data, trailer; the ack counts the bytes.
    use peer::snapshot_chunk::Part;
    let chunks = vec![
        peer::SnapshotChunk {
            part: Some(Part::Header(peer::SnapshotHeader {
                handshake: handshake(CLUSTER_ID),
                message: Some(peer::RaftMessage {
                    from: 1,
                    to: MEMBER_ID,
                    term: 2,
                    body: Some(peer::raft_message::Body::InstallSnapshot(
                        peer::InstallSnapshot {
                            metadata: Some(peer::SnapshotMetadata {
                                index: 10,
                                term: 2,
                                conf_state: Some(peer::ConfState {
                                    voters: vec![1, MEMBER_ID],
                                    learners: vec![9],
                                }),
                            }),
                        },
                    )),
                }),
            })),
        },
        peer::SnapshotChunk {
            part: Some(Part::Data(Bytes::from_static(b"0123456789"))),
        },
        peer::SnapshotChunk {
            part: Some(Part::Data(Bytes::from_static(b"abcdef"))),
        },
        peer::SnapshotChunk {
            part: Some(Part::Trailer(peer::SnapshotTrailer {
                size_bytes: 16,
                crc32c: 0,
            })),
        },
    ];
    let ack = client
        .install_snapshot(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.size_bytes, 16);

    server.stop().await;
}
