//! A member restarted on its data dir with other bootstrap flags keeps the
//! identity the data dir was created with (`server::identity`), and peers
//! keep theirs: found by review, when the member id and the cluster id were
//! still derived from the raw text of `--initial-cluster` on every start, so
//! a respelled URL for the same address (a trailing slash) gave the
//! restarted member another identity and it never worked again.
//!
//! Members start as the binary starts them, through
//! `server::server::open_member_on`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use proto::etcdserverpb as pb;
use server::config::{ResolvedConfig, ServerConfig};
use server::server::Listeners;
use tokio::net::TcpListener;

use common::{bind, url, Disk, Member};

/// The tests here rebind freed ports; run them one at a time so that one
/// test's `bind(":0")` cannot take the port another is about to rebind.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn config(
    name: &str,
    client: &TcpListener,
    peer: &TcpListener,
    advertise_peer: &str,
    initial_cluster: &str,
) -> ResolvedConfig {
    config_with_token(
        name,
        client,
        peer,
        advertise_peer,
        initial_cluster,
        &ServerConfig::default().initial_cluster_token,
    )
}

fn config_with_token(
    name: &str,
    client: &TcpListener,
    peer: &TcpListener,
    advertise_peer: &str,
    initial_cluster: &str,
    token: &str,
) -> ResolvedConfig {
    ServerConfig {
        name: name.to_string(),
        data_dir: Some(Path::new("/data").join(name)),
        listen_client_urls: vec![url(client)],
        listen_peer_urls: vec![url(peer)],
        initial_advertise_peer_urls: vec![advertise_peer.to_string()],
        initial_cluster: Some(initial_cluster.to_string()),
        initial_cluster_token: token.to_string(),
        heartbeat_interval: 20,
        election_timeout: 200,
        ..ServerConfig::default()
    }
    .resolve()
    .expect("valid config")
}

/// Segments as the binary's default would make them in a test this size.
const SEGMENT_BYTES: u64 = 1 << 20;

/// Starts a member on one client and one peer listener.
fn start(config: ResolvedConfig, fs: &Disk, client: TcpListener, peer: TcpListener) -> Member {
    let listeners = Listeners {
        client: vec![client],
        peer: vec![peer],
    };
    common::start(config, fs, SEGMENT_BYTES, listeners)
}

async fn stop(member: Member) {
    let _ = member.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), member.task).await;
}

/// Whether a put through `client` succeeds within `within`.
async fn put_succeeds(client: SocketAddr, within: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("never connected");
    while started.elapsed() < within {
        if let Ok(mut kv) = pb::kv_client::KvClient::connect(format!("http://{client}")).await {
            match kv
                .put(pb::PutRequest {
                    key: b"probe".to_vec().into(),
                    value: b"v".to_vec().into(),
                    ..pb::PutRequest::default()
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(status) => last = status.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// A one-member cluster restarted with its own peer URL written with a
/// trailing slash (the same address; the config parser accepts it) keeps
/// its member id, and serves writes on its old log. (Found by review: it
/// used to get another id, run Raft under it in a configuration that did
/// not contain it, and never serve a write again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_respelled_initial_cluster_keeps_the_member_working() {
    let _serial = serial().await;
    let fs = Disk::new();
    let (client, peer) = (bind().await, bind().await);
    let peer_url = url(&peer);
    let first = config("a", &client, &peer, &peer_url, &format!("a={peer_url}"));
    let first_id = first.member_id;
    let member = start(first, &fs, client, peer);
    put_succeeds(member.client, Duration::from_secs(20))
        .await
        .expect("the first run serves writes");
    stop(member).await;

    let (client, peer) = (bind().await, bind().await);
    let respelled = format!("{peer_url}/");
    let second = config("a", &client, &peer, &respelled, &format!("a={respelled}"));
    let second_id = second.member_id;
    let member = start(second, &fs, client, peer);
    let outcome = put_succeeds(member.client, Duration::from_secs(15)).await;
    stop(member).await;
    assert!(
        outcome.is_ok(),
        "restarted on its data dir with the same address spelled {respelled:?}, the member runs \
         as {second_id:x} instead of {first_id:x} (the id its log and configuration know) and \
         serves no write: {outcome:?}"
    );
}

/// A one-member cluster restarted with another `--initial-cluster-token`
/// (from which every id derives) keeps its member and cluster id: they come
/// from the data dir's identity record, not the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_cluster_token_keeps_the_member_working() {
    let _serial = serial().await;
    let fs = Disk::new();
    let (client, peer) = (bind().await, bind().await);
    let peer_url = url(&peer);
    let first = config("a", &client, &peer, &peer_url, &format!("a={peer_url}"));
    let (first_id, first_cluster) = (first.member_id, first.cluster_id);
    let member = start(first, &fs, client, peer);
    put_succeeds(member.client, Duration::from_secs(20))
        .await
        .expect("the first run serves writes");
    let ids = reported_ids(member.client).await;
    assert_eq!(ids, (first_cluster, first_id));
    stop(member).await;

    let (client, peer) = (bind().await, bind().await);
    let peer_url = url(&peer);
    let second = config_with_token(
        "a",
        &client,
        &peer,
        &peer_url,
        &format!("a={peer_url}"),
        "another-token",
    );
    assert_ne!(
        second.member_id, first_id,
        "the flags alone derive another id"
    );
    let member = start(second, &fs, client, peer);
    let outcome = put_succeeds(member.client, Duration::from_secs(15)).await;
    let ids = reported_ids(member.client).await;
    stop(member).await;
    assert!(
        outcome.is_ok(),
        "the restarted member serves writes: {outcome:?}"
    );
    assert_eq!(
        ids,
        (first_cluster, first_id),
        "the restarted member reports the ids its data dir was created with"
    );
}

/// (cluster id, member id) from a member's status.
async fn reported_ids(client: SocketAddr) -> (u64, u64) {
    let mut maintenance =
        pb::maintenance_client::MaintenanceClient::connect(format!("http://{client}"))
            .await
            .expect("connect");
    let header = maintenance
        .status(pb::StatusRequest::default())
        .await
        .expect("status")
        .into_inner()
        .header
        .expect("a response header");
    (header.cluster_id, header.member_id)
}

/// Members a and b; a is restarted with b's peer URL respelled (trailing
/// slash, same address). The cluster id and b's id stay what they were (a
/// takes them from its data dir, and b's URL derives its id in canonical
/// form), so a and b still accept each other's handshakes and the cluster
/// serves writes. (Found by review: both used to be recomputed from the
/// flag's text, and the two-member cluster lost its quorum for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_spelling_of_a_peer_keeps_the_cluster_id() {
    two_members_restart_a(true).await;
}

/// Control for the test above: the same restart with the flag unchanged
/// serves writes (so the harness, rebinding a's peer port, is not at fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_initial_cluster_serves_writes() {
    two_members_restart_a(false).await;
}

async fn two_members_restart_a(respell_b: bool) {
    let _serial = serial().await;
    let fs_a = Disk::new();
    let fs_b = Disk::new();
    let (client_a, peer_a, client_b, peer_b) =
        (bind().await, bind().await, bind().await, bind().await);
    let (url_a, url_b) = (url(&peer_a), url(&peer_b));
    let cluster = format!("a={url_a},b={url_b}");
    let config_a = config("a", &client_a, &peer_a, &url_a, &cluster);
    let config_b = config("b", &client_b, &peer_b, &url_b, &cluster);
    let cluster_id = config_a.cluster_id;
    let member_a = start(config_a, &fs_a, client_a, peer_a);
    let member_b = start(config_b, &fs_b, client_b, peer_b);
    put_succeeds(member_a.client, Duration::from_secs(20))
        .await
        .expect("the cluster serves writes");
    stop(member_a).await;

    // a comes back on its old peer address (b dials it there).
    let client_a = bind().await;
    let peer_a = common::rebind(
        url_a
            .trim_start_matches("http://")
            .parse()
            .expect("a's peer address"),
        Duration::from_secs(40),
    )
    .await;
    let respelled = if respell_b {
        format!("a={url_a},b={url_b}/")
    } else {
        cluster.clone()
    };
    let second = config("a", &client_a, &peer_a, &url_a, &respelled);
    let second_cluster_id = second.cluster_id;
    let member_a = start(second, &fs_a, client_a, peer_a);
    let outcome = put_succeeds(member_a.client, Duration::from_secs(15)).await;
    stop(member_a).await;
    stop(member_b).await;
    assert!(
        outcome.is_ok(),
        "a restarted with b's address spelled {url_b}/ computes cluster id \
         {second_cluster_id:x} instead of {cluster_id:x}; a and b no longer talk: {outcome:?}"
    );
}
