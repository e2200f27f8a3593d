//! An in-process test double of a raftkv member: the generated servers of
//! the services under test, hosted by tonic on a loopback listener.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

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
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Test double: answers the methods under test with recognisable values and
/// everything else with UNIMPLEMENTED.
#[derive(Clone, Copy, Default)]
pub struct FakeMember;

pub const MEMBER_ID: u64 = 7;
pub const CLUSTER_ID: u64 = 0xc1;

/// Raft messages the fake peer server has received (only
/// `peer_streams_round_trip` sends any).
pub static PEER_MESSAGES_RECEIVED: AtomicUsize = AtomicUsize::new(0);

pub fn header() -> Option<pb::ResponseHeader> {
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

    /// Answers every create request with `created` and the requested id,
    /// then with one PUT event of the watched key: value "v1", revision 43.
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut requests = request.into_inner();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                for response in watch_responses(request) {
                    if sender.send(response).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        });
        let responses = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(responses)))
    }
}

fn watch_responses(
    request: Result<pb::WatchRequest, Status>,
) -> Vec<Result<pb::WatchResponse, Status>> {
    match request.map(|request| request.request_union) {
        Ok(Some(pb::watch_request::RequestUnion::CreateRequest(create))) => {
            let created = pb::WatchResponse {
                header: header(),
                watch_id: create.watch_id,
                created: true,
                ..Default::default()
            };
            let event = proto::mvccpb::Event {
                r#type: proto::mvccpb::event::EventType::Put as i32,
                kv: Some(proto::mvccpb::KeyValue {
                    key: create.key,
                    create_revision: 43,
                    mod_revision: 43,
                    version: 1,
                    value: Bytes::from_static(b"v1"),
                    lease: 0,
                }),
                prev_kv: None,
            };
            let events = pb::WatchResponse {
                header: header(),
                watch_id: create.watch_id,
                events: vec![event],
                ..Default::default()
            };
            vec![Ok(created), Ok(events)]
        }
        Ok(_) => vec![Err(Status::invalid_argument("only create is under test"))],
        Err(status) => vec![Err(status)],
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

pub struct TestServer {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
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

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}
