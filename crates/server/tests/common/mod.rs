//! What the server's integration tests share: whole members (`server::run`)
//! started as the binary starts them, their log on the WAL's `CrashFs` and
//! their engine in a directory of the test's, and the client calls that
//! read what they hold; requests and log entries built by hand for tests of
//! the state machine and storage.
// Each test crate uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::internal::{internal_request, InternalRequest};
use raft::{ConfChange, ConfChangeKind, Entry, EntryKind};
use server::config::{ResolvedConfig, ServerConfig};
use server::server::{open_member_on, run, Listeners, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wal::crash_fs::CrashFs;

/// A member's disks: its log on `CrashFs` (this dereferences to it) and its
/// engine in a temporary directory of the test's, which outlives every
/// restart of the member on this disk.
#[derive(Clone)]
pub struct Disk {
    pub fs: CrashFs,
    engine: Arc<tempfile::TempDir>,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            fs: CrashFs::new(),
            engine: Arc::new(tempfile::tempdir().expect("engine dir")),
        }
    }

    pub fn engine(&self) -> &Path {
        self.engine.path()
    }

    /// A power cut of the log's disk (see `CrashFs::crash`); the engine
    /// keeps every batch committed to it, as after a process crash (an
    /// engine at least as far as its last sync, which is what recovery
    /// needs).
    pub fn crash(&self, seed: Option<u64>) -> Disk {
        Disk {
            fs: self.fs.crash(seed),
            engine: self.engine.clone(),
        }
    }
}

impl std::ops::Deref for Disk {
    type Target = CrashFs;

    fn deref(&self) -> &CrashFs {
        &self.fs
    }
}

/// A member running in this process: sending on `stop` shuts it down, and
/// `task` ends with what `server::run` returned.
pub struct Member {
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<(), ServerError>>,
    /// The address of its first client listener.
    pub client: SocketAddr,
}

/// A listener on `addr` again once a stopped (or crashed) member let go of
/// it, waiting up to `within`: a port can stay busy for a while after its
/// owner is gone.
pub async fn rebind(addr: SocketAddr, within: std::time::Duration) -> TcpListener {
    let deadline = std::time::Instant::now() + within;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "rebind {addr}: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A listener on a free loopback port.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

pub fn url(listener: &TcpListener) -> String {
    addr_url(listener.local_addr().expect("addr"))
}

pub fn addr_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The settings of member `name` that do not depend on its addresses: its
/// data in `/data/<name>` (on the member's own `CrashFs`), Raft timers fast
/// enough for a test (20 ms heartbeat, 200 ms election timeout), and a
/// snapshot every `snapshot_count` applied entries keeping
/// `snapshot_catchup_entries` behind it, so that snapshots and compactions
/// happen within a few writes.
pub fn member_config(
    name: &str,
    snapshot_count: u64,
    snapshot_catchup_entries: u64,
) -> ServerConfig {
    ServerConfig {
        name: name.to_string(),
        data_dir: Some(Path::new("/data").join(name)),
        heartbeat_interval: 20,
        election_timeout: 200,
        snapshot_count,
        snapshot_catchup_entries,
        ..ServerConfig::default()
    }
}

/// Member `a` of a one-member cluster whose id comes from `peer_url`,
/// listening on the given listeners (a restart may listen elsewhere), with
/// a snapshot every 4 entries.
pub fn lone_member_config(
    client: &TcpListener,
    peer: &TcpListener,
    peer_url: &str,
) -> ResolvedConfig {
    ServerConfig {
        listen_client_urls: vec![url(client)],
        listen_peer_urls: vec![url(peer)],
        initial_advertise_peer_urls: vec![peer_url.to_string()],
        initial_cluster: Some(format!("a={peer_url}")),
        ..member_config("a", 4, 2)
    }
    .resolve()
    .expect("valid config")
}

/// A KV client of the member at `client`, once it accepts connections
/// (within 30 s).
pub async fn kv_client(client: SocketAddr) -> pb::kv_client::KvClient<tonic::transport::Channel> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match pb::kv_client::KvClient::connect(format!("http://{client}")).await {
            Ok(kv) => return kv,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "connect: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Member `name` of a cluster of several in one process: its client and
/// peer listeners at the given addresses, its peers told `advertised_peer`
/// (a proxy may stand there), a snapshot every 4 entries.
pub fn cluster_member_config(
    name: &str,
    client: SocketAddr,
    peer: SocketAddr,
    advertised_peer: SocketAddr,
    cluster: &str,
) -> ResolvedConfig {
    ServerConfig {
        listen_client_urls: vec![addr_url(client)],
        listen_peer_urls: vec![addr_url(peer)],
        initial_advertise_peer_urls: vec![addr_url(advertised_peer)],
        initial_cluster: Some(cluster.to_string()),
        ..member_config(name, 4, 2)
    }
    .resolve()
    .expect("valid config")
}

/// Starts (or restarts) a member on the addresses its config names, once
/// they are free again (within 40 s), with WAL segments of 2 KiB (purges
/// all the time).
pub async fn restart_on(config: ResolvedConfig, disk: &Disk) -> Member {
    let within = std::time::Duration::from_secs(40);
    let listeners = Listeners {
        client: vec![rebind(config.listen_client_addrs[0], within).await],
        peer: vec![rebind(config.listen_peer_addrs[0], within).await],
    };
    start(config, disk, 2048, listeners)
}

/// Stops a member; what its `run` returned, unless it took over 15 s.
pub async fn stop_within(member: Member) -> Option<Result<(), ServerError>> {
    let _ = member.stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(15), member.task)
        .await
        .ok()
        .map(|joined| joined.expect("member task"))
}

/// Starts a member as the binary does: it restarts from what its data dir
/// on `disk` holds, and bootstraps from `config` when that is empty. The WAL writes segments of
/// `segment_bytes` (small ones make purges frequent). A data dir the member
/// refuses to open fails the test, naming the member and the reason: after
/// a crash, that refusal is what the tests look for.
pub fn start(
    config: ResolvedConfig,
    disk: &Disk,
    segment_bytes: u64,
    listeners: Listeners,
) -> Member {
    let name = config.name.clone();
    let opened = match open_member_on(
        Arc::new(disk.fs.clone()),
        disk.engine(),
        config,
        segment_bytes,
    ) {
        Ok(opened) => opened,
        Err(error) => panic!("member {name} refused to open its data dir: {error}"),
    };
    let (config, storage, raft) = (opened.config, opened.storage, opened.raft);
    let client = listeners.client[0].local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(
        config,
        listeners,
        storage.log,
        storage.state,
        raft,
        async move {
            let _ = stopped.await;
        },
    ));
    Member { stop, task, client }
}

/// Every key under `k/` and its value as the member at `client` answers
/// one range request: linearizable, or its own applied state when
/// `serializable`. An error says whether connecting or the request failed.
pub async fn keys(
    client: SocketAddr,
    serializable: bool,
) -> Result<BTreeMap<String, String>, String> {
    let mut kv = pb::kv_client::KvClient::connect(addr_url(client))
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let response = kv
        .range(pb::RangeRequest {
            key: b"k/".to_vec().into(),
            range_end: b"k0".to_vec().into(),
            serializable,
            ..pb::RangeRequest::default()
        })
        .await
        .map_err(|status| format!("range: {status}"))?;
    Ok(response
        .into_inner()
        .kvs
        .into_iter()
        .map(|pair| {
            (
                String::from_utf8_lossy(&pair.key).into_owned(),
                String::from_utf8_lossy(&pair.value).into_owned(),
            )
        })
        .collect())
}

/// A listed member: id, name, peer URLs, client URLs.
pub type ListedMember = (u64, String, Vec<String>, Vec<String>);

/// The members as the member at `client` lists them, in its order.
pub async fn member_list(client: SocketAddr) -> Result<Vec<ListedMember>, String> {
    let mut cluster = pb::cluster_client::ClusterClient::connect(addr_url(client))
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let members = cluster
        .member_list(pb::MemberListRequest::default())
        .await
        .map_err(|status| format!("member list: {status}"))?
        .into_inner()
        .members;
    Ok(members
        .into_iter()
        .map(|member| {
            (
                member.id,
                member.name,
                member.peer_ur_ls,
                member.client_ur_ls,
            )
        })
        .collect())
}

/// An encoded put of `key` = `value`, as a log entry carries it (after
/// the proposal's header).
pub fn put_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    use prost::Message as _;
    InternalRequest {
        request: Some(internal_request::Request::Put(pb::PutRequest {
            key: key.to_vec().into(),
            value: value.to_vec().into(),
            ..pb::PutRequest::default()
        })),
    }
    .encode_to_vec()
}

/// A conf change entry of term 1 at `index`, with no context (as the
/// bootstrap entries are).
pub fn conf_change(index: u64, change: ConfChangeKind, node_id: u64) -> Entry {
    Entry {
        term: 1,
        index,
        kind: EntryKind::ConfChange,
        data: ConfChange {
            change,
            node_id,
            context: Bytes::new(),
        }
        .encode(),
    }
}

/// A TCP forwarder standing for a member's peer address, so that a test can
/// cut every connection to a member the way its death would (an in-process
/// "crash" leaves the dead member's accepted peer connections served by
/// their own tasks, which outlive `run`).
pub struct Proxy {
    connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn spawn(listen: SocketAddr, target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind proxy");
        let connections: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connection = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().expect("connections").push(connection);
            }
        });
        Proxy {
            connections,
            accept,
        }
    }

    /// Closes every connection through the proxy (new ones are accepted).
    pub fn cut(&self) {
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
