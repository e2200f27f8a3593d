//! The gRPC paths a client puts on the wire, checked by a real round trip.
//!
//! The generated servers run in-process on a loopback listener. Two kinds of
//! client call them:
//! * a raw `tonic::client::Grpc` given the literal path etcdctl 3.4 sends
//!   (e.g. `/etcdserverpb.KV/Range`): proves the servers answer exactly
//!   etcd's paths, so an etcd client reaches the right handler;
//! * the generated clients: proves our own stubs speak the same paths, for
//!   unary, client-streaming and bidirectional-streaming methods.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use proto::etcdserverpb::kv_server::{Kv, KvServer};
use proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use proto::etcdserverpb::watch_server::{Watch, WatchServer};
use proto::peer;
use proto::peer::peer_server::{Peer, PeerServer};
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Test double: answers the methods under test with recognisable values and
/// everything else with UNIMPLEMENTED.
#[derive(Clone, Copy, Default)]
struct FakeMember;

const MEMBER_ID: u64 = 7;
const CLUSTER_ID: u64 = 0xc1;

/// Raft messages the fake peer server has received (only
/// `peer_streams_round_trip` sends any).
static PEER_MESSAGES_RECEIVED: AtomicUsize = AtomicUsize::new(0);

fn header() -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision: 42,
        raft_term: 3,
    })
}

fn not_under_test<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not under test"))
}

#[tonic::async_trait]
impl Kv for FakeMember {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let key = request.into_inner().key;
        Ok(Response::new(pb::RangeResponse {
            header: header(),
            kvs: vec![proto::mvccpb::KeyValue {
                key,
                value: Bytes::from_static(b"value"),
                create_revision: 1,
                mod_revision: 2,
                version: 1,
                lease: 0,
            }],
            more: false,
            count: 1,
        }))
    }
    async fn put(&self, _: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        not_under_test()
    }
    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        not_under_test()
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        not_under_test()
    }
    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl Watch for FakeMember {
    type WatchStream = ResponseStream<pb::WatchResponse>;

    /// Answers every create request with `created` and the requested id.
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let responses = request.into_inner().map(|request| {
            let request = request?;
            match request.request_union {
                Some(pb::watch_request::RequestUnion::CreateRequest(create)) => {
                    Ok(pb::WatchResponse {
                        header: header(),
                        watch_id: create.watch_id,
                        created: true,
                        ..Default::default()
                    })
                }
                _ => Err(Status::invalid_argument("only create is under test")),
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}

#[tonic::async_trait]
impl Lease for FakeMember {
    type LeaseKeepAliveStream = ResponseStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        _: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        not_under_test()
    }
    async fn lease_revoke(
        &self,
        _: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        not_under_test()
    }
    /// Renews every lease to a TTL of 10 s.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let responses = request.into_inner().map(|request| {
            Ok(pb::LeaseKeepAliveResponse {
                header: header(),
                id: request?.id,
                ttl: 10,
            })
        });
        Ok(Response::new(Box::pin(responses)))
    }
    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        not_under_test()
    }
    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl Cluster for FakeMember {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        not_under_test()
    }
    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        not_under_test()
    }
    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        not_under_test()
    }
    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: header(),
            members: vec![pb::Member {
                id: MEMBER_ID,
                name: "fake".into(),
                peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                client_ur_ls: vec!["http://127.0.0.1:2379".into()],
                is_learner: false,
            }],
        }))
    }
    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl Maintenance for FakeMember {
    type SnapshotStream = ResponseStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        not_under_test()
    }
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            header: header(),
            version: "3.4.0".into(),
            leader: MEMBER_ID,
            raft_index: 100,
            raft_term: 3,
            raft_applied_index: 99,
            ..Default::default()
        }))
    }
    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        not_under_test()
    }
    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        not_under_test()
    }
    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        not_under_test()
    }
    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        not_under_test()
    }
    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        not_under_test()
    }
}

#[tonic::async_trait]
impl Peer for FakeMember {
    type RaftStream = ResponseStream<peer::RaftStreamAccepted>;

    /// Accepts the handshake, then drains the stream into
    /// `PEER_MESSAGES_RECEIVED` until the caller closes it.
    async fn raft(
        &self,
        request: Request<Streaming<peer::RaftFrame>>,
    ) -> Result<Response<Self::RaftStream>, Status> {
        let mut frames = request.into_inner();
        let first = frames
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let handshake = first
            .handshake
            .ok_or_else(|| Status::invalid_argument("first frame has no handshake"))?;
        if handshake.cluster_id != CLUSTER_ID {
            return Err(Status::failed_precondition("cluster id mismatch"));
        }
        let accepted = peer::RaftStreamAccepted {
            member_id: handshake.to,
        };
        PEER_MESSAGES_RECEIVED.fetch_add(first.messages.len(), Ordering::SeqCst);
        let rest = frames.filter_map(|frame| match frame {
            Ok(frame) => {
                PEER_MESSAGES_RECEIVED.fetch_add(frame.messages.len(), Ordering::SeqCst);
                None
            }
            Err(status) => Some(Err(status)),
        });
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(accepted)).chain(rest),
        )))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<peer::SnapshotChunk>>,
    ) -> Result<Response<peer::SnapshotAck>, Status> {
        use peer::snapshot_chunk::Part;
        let mut chunks = request.into_inner();
        let mut size_bytes = 0;
        while let Some(chunk) = chunks.message().await? {
            match chunk.part {
                Some(Part::Data(data)) => size_bytes += data.len() as u64,
                Some(Part::Trailer(trailer)) if trailer.size_bytes != size_bytes => {
                    return Err(Status::data_loss("size mismatch"));
                }
                _ => {}
            }
        }
        Ok(Response::new(peer::SnapshotAck { size_bytes }))
    }
}

struct TestServer {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(KvServer::new(FakeMember))
            .add_service(WatchServer::new(FakeMember))
            .add_service(LeaseServer::new(FakeMember))
            .add_service(ClusterServer::new(FakeMember))
            .add_service(MaintenanceServer::new(FakeMember))
            .add_service(PeerServer::new(FakeMember));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = shutdown_signal.await;
            },
        ));
        TestServer {
            address,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

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
    assert_eq!(watch.len(), 1);
    assert!(watch[0].created);
    assert_eq!(watch[0].watch_id, 5);

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
        },
        peer::RaftFrame {
            handshake: None,
            messages: vec![heartbeat(2), heartbeat(3)],
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
