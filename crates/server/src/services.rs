//! The etcd v3 client services: KV, Maintenance and Cluster answer; Watch,
//! Lease and Auth answer `Unimplemented` with a message saying so until
//! their issues land.
//!
//! A write is validated, encoded as an `InternalRequest`, proposed (the
//! node forwards it to the leader when this member follows) and answered
//! with the result of applying its entry here. A linearizable read first passes a
//! ReadIndex barrier; a serializable one reads the local state at once.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use proto::etcdserverpb as pb;
use proto::internal::{internal_request, internal_response, InternalRequest, InternalResponse};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::errors;
use crate::node::{NodeError, NodeHandle};
use crate::peer::Transport;
use crate::state::{SharedState, WeakState};

/// Everything the client services share.
#[derive(Clone)]
pub struct ServiceContext {
    pub cluster_id: u64,
    pub member_id: u64,
    pub node: NodeHandle,
    /// Weak: connections can outlive the member that accepted them, and
    /// its engine must close when it stops.
    pub state: WeakState,
    pub transport: Transport,
    pub request_timeout: Duration,
    pub max_request_bytes: u64,
    pub max_txn_ops: usize,
    pub version: &'static str,
    /// Test-only fault (debug builds, `RAFTKV_TEST_UNSAFE_LOCAL_READS=1`):
    /// serve linearizable reads from local state once it has applied the
    /// local commit index, without ReadIndex's leadership check, so that
    /// the nemesis tests can show their checker catches a deposed leader's
    /// stale reads.
    pub unsafe_local_reads: bool,
    /// Writes that add data are refused once the store holds this many
    /// bytes (etcd's --quota-backend-bytes).
    pub quota_backend_bytes: u64,
}

fn apply_error_status(error: &mvcc::ApplyError) -> Status {
    Status::new(Code::from_i32(error.grpc_code), error.message)
}

/// A read refused with etcd's error, or failed in the engine (internal: the
/// data on disk could not be read).
fn read_error_status(error: &mvcc::ReadError) -> Status {
    match error {
        mvcc::ReadError::Refused(refusal) => apply_error_status(refusal),
        mvcc::ReadError::Engine(engine) => {
            tracing::error!(error = %engine, "reading the engine failed");
            Status::internal(format!("reading the state: {engine}"))
        }
    }
}

impl ServiceContext {
    /// The member's state, unless it stopped.
    fn state(&self) -> Result<SharedState, Status> {
        self.state.upgrade().ok_or_else(|| errors::STOPPED.status())
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.status().term,
        }
    }

    fn check_size(&self, encoded_len: usize) -> Result<(), Status> {
        if encoded_len as u64 > self.max_request_bytes {
            return Err(errors::REQUEST_TOO_LARGE.status());
        }
        Ok(())
    }

    /// Proposes a write here if this member leads, else at the leader; waits
    /// for it to apply.
    async fn write(
        &self,
        request: internal_request::Request,
    ) -> Result<internal_response::Response, Status> {
        let request = InternalRequest {
            request: Some(request),
        };
        mvcc::validate_request(&request, self.max_txn_ops)
            .map_err(|error| apply_error_status(&error))?;
        let payload = Bytes::from(request.encode_to_vec());
        let result = self
            .node
            .propose(&payload, self.request_timeout)
            .await
            .map_err(Status::from)?;
        let response = InternalResponse::decode(result.as_ref())
            .map_err(|error| Status::internal(format!("undecodable apply result: {error}")))?;
        match response.response {
            Some(internal_response::Response::Error(error)) => {
                Err(Status::new(Code::from_i32(error.grpc_code), error.message))
            }
            Some(response) => Ok(response),
            None => Err(Status::internal("empty apply result")),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn not_yet<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "raftkv does not implement {what} yet"
    )))
}

pub struct KvService(pub ServiceContext);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        let context = &self.0;
        context.check_size(request.encoded_len())?;
        mvcc::validate_range(&request).map_err(|error| apply_error_status(&error))?;
        if !request.serializable && context.unsafe_local_reads {
            // The test-only broken read: everything this member knows to be
            // committed, without asking whether it still leads. A current
            // leader answers correctly (any acknowledged write is within
            // its commit index); a deposed one answers stale.
            let deadline = std::time::Instant::now() + context.request_timeout;
            let commit = context.node.status().commit_index;
            context
                .node
                .wait_applied(commit, deadline)
                .await
                .map_err(Status::from)?;
        } else if !request.serializable {
            context
                .node
                .linearizable_read_barrier(context.request_timeout)
                .await
                .map_err(Status::from)?;
        }
        let shared = context.state()?;
        let state = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?;
        let mut response = state
            .store
            .range(&request)
            .map_err(|error| read_error_status(&error))?;
        let revision = response.header.as_ref().map_or(0, |header| header.revision);
        response.header = Some(context.header(revision));
        Ok(Response::new(response))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.0.check_size(request.encoded_len())?;
        self.0.check_quota()?;
        self.0
            .write_answer(
                internal_request::Request::Put(request),
                |response| match response {
                    internal_response::Response::Put(put) => Some(put),
                    _ => None,
                },
            )
            .await
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        self.0.check_size(request.encoded_len())?;
        self.0
            .write_answer(
                internal_request::Request::DeleteRange(request),
                |response| match response {
                    internal_response::Response::DeleteRange(delete) => Some(delete),
                    _ => None,
                },
            )
            .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        self.0.check_size(request.encoded_len())?;
        if txn_writes_data(&request) {
            self.0.check_quota()?;
        }
        self.0
            .write_answer(
                internal_request::Request::Txn(request),
                |response| match response {
                    internal_response::Response::Txn(txn) => Some(txn),
                    _ => None,
                },
            )
            .await
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        self.0
            .write_answer(
                internal_request::Request::Compaction(request),
                |response| match response {
                    internal_response::Response::Compaction(compaction) => Some(compaction),
                    _ => None,
                },
            )
            .await
    }
}

/// Whether any branch of the transaction (nested ones too) puts a value.
fn txn_writes_data(request: &pb::TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| match &op.request {
            Some(pb::request_op::Request::RequestPut(_)) => true,
            Some(pb::request_op::Request::RequestTxn(nested)) => txn_writes_data(nested),
            _ => false,
        })
}

/// A write's answer, whose header the member fills in (the applier knows
/// only the revision; cluster, member and term are this member's).
trait Stamped {
    fn revision(&self) -> i64;
    fn stamp(&mut self, header: pb::ResponseHeader);
}

macro_rules! stamped {
    ($($response:ty),*) => {$(
        impl Stamped for $response {
            fn revision(&self) -> i64 {
                self.header.as_ref().map_or(0, |header| header.revision)
            }
            fn stamp(&mut self, header: pb::ResponseHeader) {
                self.header = Some(header);
            }
        }
    )*};
}

// A transaction's own header only: the ops inside carry the revision each
// saw and nothing else, as etcd leaves them (the store fills them).
stamped!(
    pb::PutResponse,
    pb::DeleteRangeResponse,
    pb::TxnResponse,
    pb::CompactionResponse
);

impl ServiceContext {
    /// Refuses a write that adds data once the engine's data on disk is at
    /// the quota (`mvcc::Store::quota_bytes`), as etcd does with its
    /// database file (ResourceExhausted, `etcdserver: mvcc: database space
    /// exceeded`). Deletes and compaction still go through; as with etcd,
    /// what they free comes back once the engine's files are compacted
    /// (`Defragment`, or fjall's own compactions). Unlike etcd there is no
    /// alarm to disarm: the refusal ends as soon as the engine is below its
    /// quota again.
    fn check_quota(&self) -> Result<(), Status> {
        let on_disk = self
            .state()?
            .read()
            .map_err(|error| Status::internal(error.to_string()))?
            .store
            .quota_bytes();
        if on_disk >= self.quota_backend_bytes {
            return Err(errors::NO_SPACE.status());
        }
        Ok(())
    }

    /// Runs a write and answers with the response `pick` finds in the apply
    /// result, stamped with this member's header.
    async fn write_answer<T: Stamped>(
        &self,
        request: internal_request::Request,
        pick: impl FnOnce(internal_response::Response) -> Option<T>,
    ) -> Result<Response<T>, Status> {
        let response = self.write(request).await?;
        let mut answer =
            pick(response).ok_or_else(|| Status::internal("mismatched apply result"))?;
        let revision = answer.revision();
        answer.stamp(self.header(revision));
        Ok(Response::new(answer))
    }
}

pub struct MaintenanceService(pub ServiceContext);

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        not_yet("Maintenance.Alarm")
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let context = &self.0;
        let status = context.node.status();
        let shared = context.state()?;
        let state = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?;
        // etcd: the database file's size, and the part of it holding data;
        // here the engine's files, and the bytes of the versions it keeps.
        let db_size = state.store.disk_bytes() as i64;
        let db_size_in_use = state.store.stored_bytes() as i64;
        Ok(Response::new(pb::StatusResponse {
            header: Some(context.header(state.store.current_revision())),
            version: context.version.to_string(),
            db_size,
            leader: status.leader,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: state.applied_index,
            errors: Vec::new(),
            db_size_in_use,
            is_learner: false,
        }))
    }

    /// Compacts this member's engine files fully (etcd defragments its
    /// database file); answers once done. Unlike etcd's, writes are not
    /// blocked meanwhile.
    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let context = &self.0;
        let state = context.state()?;
        tokio::task::spawn_blocking(move || state.defragment())
            .await
            .map_err(|error| Status::internal(format!("defragment: {error}")))?
            .map_err(|error| Status::internal(error.to_string()))?;
        let shared = context.state()?;
        let revision = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?
            .store
            .current_revision();
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(context.header(revision)),
        }))
    }

    /// The whole store's checksum at this member (local, not linearizable,
    /// as in etcd).
    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let context = &self.0;
        let shared = context.state()?;
        let state = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?;
        let (hash, _) = state
            .store
            .hash_kv(0)
            .map_err(|error| read_error_status(&error))?;
        Ok(Response::new(pb::HashResponse {
            header: Some(context.header(state.store.current_revision())),
            hash,
        }))
    }

    /// The checksum of the history up to a revision at this member; equal on
    /// members that applied the same log.
    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let context = &self.0;
        let revision = request.into_inner().revision;
        let shared = context.state()?;
        let state = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?;
        let (hash, compact_revision) = state
            .store
            .hash_kv(revision)
            .map_err(|error| read_error_status(&error))?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(context.header(state.store.current_revision())),
            hash,
            compact_revision,
        }))
    }

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        not_yet("Maintenance.Snapshot")
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let context = &self.0;
        let target = request.into_inner().target_id;
        context
            .node
            .transfer_leadership(target, context.request_timeout)
            .await
            .map_err(|error| match error {
                NodeError::NotLeader { .. } | NodeError::NoLeader => errors::NOT_LEADER.status(),
                other => Status::from(other),
            })?;
        let deadline = std::time::Instant::now() + context.request_timeout;
        context
            .node
            .wait_status(deadline, |status| status.leader == target)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(context.header(0)),
        }))
    }
}

pub struct ClusterService(pub ServiceContext);

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        not_yet("Cluster.MemberAdd")
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        not_yet("Cluster.MemberRemove")
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        not_yet("Cluster.MemberUpdate")
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let context = &self.0;
        let shared = context.state()?;
        let state = shared
            .read()
            .map_err(|error| Status::internal(error.to_string()))?;
        let members = state
            .members
            .iter()
            .map(|(&id, member)| pb::Member {
                id,
                name: member.name.clone(),
                peer_ur_ls: member.peer_urls.clone(),
                client_ur_ls: member.client_urls.clone(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(context.header(state.store.current_revision())),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        not_yet("Cluster.MemberPromote")
    }
}

pub struct WatchService;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        _: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        not_yet("Watch")
    }
}

pub struct LeaseService;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        _: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        not_yet("leases")
    }

    async fn lease_revoke(
        &self,
        _: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        not_yet("leases")
    }

    async fn lease_keep_alive(
        &self,
        _: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        not_yet("leases")
    }

    async fn lease_time_to_live(
        &self,
        _: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        not_yet("leases")
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        not_yet("leases")
    }
}
