//! Assembles a member: its data dir and identity ([`open_member`]), then
//! listeners, transport, node, services; runs until the shutdown future
//! resolves, then stops accepting, lets in-flight requests finish and stops
//! the node.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use proto::etcdserverpb as pb;
use proto::internal::{internal_request, InternalRequest, MemberAttributes};
use proto::peer::peer_server::PeerServer;
use raft::Raft;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use wal::fs::{FileSystem, StdFs};

use tokio_stream::StreamExt as _;

use crate::authority::AuthorityFix;
use crate::config::{InitialClusterState, ResolvedConfig};
use crate::identity::{establish, IdentityError};
use crate::node::{inbox, raft_config, LogStorage, Node, NodeOptions};
use crate::peer::{LocalIdentity, PeerService, Transport, PEER_MESSAGE_BYTES_MAX};
use crate::services::{
    ClusterService, KvService, LeaseService, MaintenanceService, ServiceContext, WatchService,
};
use crate::state::{KvStateMachine, SharedState};
use crate::storage::{engine_dir, open_member_storage_on, MemberStorage, StorageOpenError};

/// How long in-flight client requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The version `Maintenance.Status` reports: etcd's API level, then ours.
pub const VERSION: &str = concat!("3.4.0-raftkv.", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(#[from] raft::RaftError),
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the node stopped after a storage failure (see the log above); nothing more is acknowledged")]
    NodeFailed,
    #[error("storage: {0}")]
    Storage(String),
    #[error("opening the data dir {}: {source}", data_dir.display())]
    Open {
        data_dir: PathBuf,
        source: StorageOpenError,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "--initial-cluster-state=existing with an empty data dir {}: joining a running cluster \
         (member add) is not supported yet; start with --initial-cluster-state=new",
        data_dir.display()
    )]
    JoinUnsupported { data_dir: PathBuf },
}

/// A member's data dir, opened, with the identity it runs under.
pub struct OpenedMember {
    /// The configuration with the member's recorded ids (see
    /// [`crate::identity`]): hand this one, not the flags' own, to [`run`].
    pub config: ResolvedConfig,
    pub storage: MemberStorage,
    pub raft: Raft,
}

/// [`open_member_on`] on the real file system.
pub fn open_member(
    config: ResolvedConfig,
    segment_bytes: u64,
) -> Result<OpenedMember, ServerError> {
    let engine = engine_dir(&config.data_dir);
    open_member_on(Arc::new(StdFs), &engine, config, segment_bytes)
}

/// Opens the member's data dir (its engine in `engine_dir`, which is
/// `<data-dir>/member/engine` but for tests whose log is on a simulated
/// file system), settles its identity, and builds its Raft:
/// restarted from the log and snapshot if the data dir holds any (the
/// bootstrap flags are then ignored), else a new cluster bootstrapped from
/// `--initial-cluster`.
///
/// The identity is settled before anything uses an id: on a fresh data dir
/// the ids the flags derive are recorded durably first; on a restart the
/// recorded ones replace the flags' (`identity::establish`).
pub fn open_member_on(
    fs: Arc<dyn FileSystem>,
    engine_dir: &std::path::Path,
    config: ResolvedConfig,
    segment_bytes: u64,
) -> Result<OpenedMember, ServerError> {
    let options = mvcc::StoreOptions {
        cache_bytes: config.backend_cache_bytes,
    };
    let mut storage = open_member_storage_on(
        fs.clone(),
        &config.data_dir,
        engine_dir,
        segment_bytes,
        &options,
    )
    .map_err(|source| ServerError::Open {
        data_dir: config.data_dir.clone(),
        source,
    })?;
    // Refused before anything is recorded: a corrected restart must get the
    // ids its own flags derive.
    if storage.initial.is_none() && config.initial_cluster_state == InitialClusterState::Existing {
        return Err(ServerError::JoinUnsupported {
            data_dir: config.data_dir.clone(),
        });
    }
    let established = establish(fs.as_ref(), &config, storage.initial.as_ref())?;
    let config = established.identity.apply_to(config);
    let raft = match storage.initial.take() {
        Some(initial) => {
            tracing::info!(
                data_dir = %config.data_dir.display(),
                snapshot_index = initial.applied,
                entries = initial.entries.len(),
                term = initial.hard_state.term,
                "restarting from the existing data dir"
            );
            Raft::new(
                raft_config(
                    config.member_id,
                    config.heartbeat_interval_ms,
                    config.election_timeout_ms,
                    config.member_id ^ 0x5eed,
                ),
                initial,
            )?
        }
        None => match config.initial_cluster_state {
            InitialClusterState::New => bootstrap_raft(&config)?,
            InitialClusterState::Existing => {
                return Err(ServerError::JoinUnsupported {
                    data_dir: config.data_dir.clone(),
                })
            }
        },
    };
    Ok(OpenedMember {
        config,
        storage,
        raft,
    })
}

/// Listeners bound before anything else, so a port conflict is reported at
/// once and tests can bind port 0 and learn the port.
pub struct Listeners {
    pub client: Vec<TcpListener>,
    pub peer: Vec<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &ResolvedConfig) -> Result<Self, ServerError> {
        let mut client = Vec::new();
        for &addr in &config.listen_client_addrs {
            client.push(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Listen { addr, source })?,
            );
        }
        let mut peer = Vec::new();
        for &addr in &config.listen_peer_addrs {
            peer.push(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::Listen { addr, source })?,
            );
        }
        Ok(Listeners { client, peer })
    }
}

/// Runs a member until `shutdown` resolves. `state` is the state machine as
/// its engine holds it.
pub async fn run<L: LogStorage>(
    config: ResolvedConfig,
    listeners: Listeners,
    log: L,
    state: SharedState,
    raft: Raft,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let identity = LocalIdentity {
        cluster_id: config.cluster_id,
        member_id: config.member_id,
    };
    let (peer_events, node_inbox) = inbox();
    let peer_service = PeerService::new(identity, peer_events.clone()).with_state(&state);
    let mut transport = Transport::new(identity, peer_events).with_state(&state);
    if let Some(address) = config.listen_peer_addrs.first() {
        transport = transport.with_local_address(address.ip());
    }
    // Configured peers give the transport addresses to dial, nothing more:
    // they never enter the registry, which is replicated state and changes
    // only through applied entries (bootstrap conf changes, publishes) or a
    // snapshot of them. Members with different configurations (or one
    // restarted with another `--initial-cluster`) must agree on it.
    for member in &config.initial_members {
        transport.set_peer(member.id, member.peer_urls.clone());
    }
    let state_machine = KvStateMachine::new(state.clone())
        .map_err(|error| ServerError::Storage(error.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut peer_servers = Vec::new();
    let mut client_servers = Vec::new();
    for listener in listeners.peer {
        let service = PeerServer::new(peer_service.clone())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        // Peer streams live as long as the members do, so a graceful wait
        // for them would never end (every member waits on the others):
        // the peer servers are aborted at shutdown instead.
        peer_servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(
                    TcpListenerStream::new(listener).map(|stream| stream.map(no_delay)),
                ),
        ));
    }

    let request_timeout =
        Duration::from_millis(config.election_timeout_ms * 5).max(Duration::from_secs(5));
    let node = Node::start(
        raft,
        log,
        state_machine,
        transport.clone(),
        node_inbox,
        NodeOptions {
            tick_interval: Duration::from_millis(config.heartbeat_interval_ms),
            request_timeout,
            snapshot_count: config.snapshot_count,
            snapshot_catchup_entries: config.snapshot_catchup_entries,
        },
    );

    let context = ServiceContext {
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        node: node.handle.clone(),
        state: state.downgrade(),
        transport: transport.clone(),
        request_timeout,
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops as usize,
        version: VERSION,
        unsafe_local_reads: unsafe_local_reads(),
        quota_backend_bytes: config.quota_backend_bytes,
    };
    // gRPC's own limit sits above ours so that an oversized request gets
    // etcd's "request is too large" rather than a transport error.
    let grpc_limit = config.max_request_bytes as usize + 512 * 1024;
    for listener in listeners.client {
        let mut stop = stop_rx.clone();
        let router = tonic::transport::Server::builder()
            .add_service(
                pb::kv_server::KvServer::new(KvService(context.clone()))
                    .max_decoding_message_size(grpc_limit),
            )
            .add_service(pb::maintenance_server::MaintenanceServer::new(
                MaintenanceService(context.clone()),
            ))
            .add_service(pb::cluster_server::ClusterServer::new(ClusterService(
                context.clone(),
            )))
            .add_service(pb::watch_server::WatchServer::new(WatchService))
            .add_service(pb::lease_server::LeaseServer::new(LeaseService));
        // Client connections go through AuthorityFix so that etcd clients
        // naming endpoints with a scheme are served (see authority.rs).
        let incoming = TcpListenerStream::new(listener)
            .map(|stream| stream.map(|stream| AuthorityFix::new(no_delay(stream))));
        client_servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        )));
    }

    // Announce our name, client and peer URLs through the log, retrying
    // until a leader accepts it (as etcd's publish does). This is how they
    // reach the replicated registry.
    let publish_context = context.clone();
    let publish = InternalRequest {
        request: Some(internal_request::Request::Publish(MemberAttributes {
            member_id: config.member_id,
            name: config.name.clone(),
            client_urls: config.advertise_client_urls.clone(),
            peer_urls: config.advertise_peer_urls.clone(),
        })),
    };
    let publisher = tokio::spawn(async move {
        let payload = publish.encode_to_vec();
        loop {
            let attempt = publish_context
                .node
                .propose(&payload, publish_context.request_timeout)
                .await;
            if attempt.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    tracing::info!(
        name = config.name,
        member_id = format!("{:x}", config.member_id),
        cluster_id = format!("{:x}", config.cluster_id),
        client_urls = ?config.advertise_client_urls,
        peer_urls = ?config.advertise_peer_urls,
        data_dir = %config.data_dir.display(),
        "raftkv member started"
    );
    let node_failed = tokio::select! {
        () = shutdown => false,
        () = node.handle.stopped() => true,
    };
    if node_failed {
        tracing::error!(
            name = config.name,
            "the node stopped by itself; shutting the member down"
        );
    }
    tracing::info!(
        name = config.name,
        "shutting down: no new requests; finishing those in flight"
    );
    publisher.abort();
    let _ = stop_tx.send(true);
    // In-flight client requests get a bounded time to finish; a client that
    // keeps its connection open does not hold the member hostage.
    for mut server in client_servers {
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
    }
    // Stop the node (syncing what it has) on a blocking thread: it joins the
    // raft and apply threads.
    let _ = tokio::task::spawn_blocking(move || node.stop()).await;
    // Awaiting an aborted task returns once it is dropped, so the
    // listeners are closed (their ports free to bind again) when this
    // returns.
    for server in peer_servers {
        server.abort();
        let _ = server.await;
    }
    // Requests and transfers still finishing hold the state for a moment;
    // once they let go the engine closes, and a member restarted in this
    // process can open it again.
    if !state.close_within(SHUTDOWN_GRACE).await {
        tracing::warn!(
            name = config.name,
            "the state machine's engine is still in use after the member stopped"
        );
    }
    tracing::info!(name = config.name, "raftkv member stopped");
    if node_failed {
        return Err(ServerError::NodeFailed);
    }
    Ok(())
}

/// The test-only switch that breaks linearizable reads (see
/// `ServiceContext::unsafe_local_reads`). Release builds ignore it.
fn unsafe_local_reads() -> bool {
    let requested = std::env::var("RAFTKV_TEST_UNSAFE_LOCAL_READS").as_deref() == Ok("1");
    if requested && cfg!(debug_assertions) {
        tracing::warn!(
            "RAFTKV_TEST_UNSAFE_LOCAL_READS=1: linearizable reads skip ReadIndex; \
             this member may serve stale reads (a test fault, never for real use)"
        );
        return true;
    }
    if requested {
        tracing::warn!("RAFTKV_TEST_UNSAFE_LOCAL_READS is ignored by release builds");
    }
    false
}

/// The initial Raft state of a member of a brand-new cluster.
pub fn bootstrap_raft(config: &ResolvedConfig) -> Result<Raft, ServerError> {
    let voters: Vec<u64> = config
        .initial_members
        .iter()
        .map(|member| member.id)
        .collect();
    let raft_config = raft_config(
        config.member_id,
        config.heartbeat_interval_ms,
        config.election_timeout_ms,
        config.member_id ^ 0x5eed,
    );
    Ok(Raft::bootstrap(raft_config, &voters)?)
}

/// Turns Nagle's algorithm off on an accepted connection. Both protocols are
/// request/response over small frames: with Nagle on, a reply written while
/// the peer's delayed ACK is pending waits ~40 ms for it (measured: a
/// serializable range at 256 clients ran at 44 ms p50 with the CPU idle).
/// A socket that refuses the option still serves, only slower.
fn no_delay(stream: tokio::net::TcpStream) -> tokio::net::TcpStream {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "could not set TCP_NODELAY on an accepted connection");
    }
    stream
}
