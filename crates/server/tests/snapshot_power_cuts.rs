//! Adversarial review: whole members (`server::run`) on `CrashFs`, crashed
//! (power cut: everything unsynced is lost, torn writes kept in part) at a
//! random moment while writes, snapshots, compactions, purges and snapshot
//! file removals run, then restarted on what survived. Every write a client
//! saw acknowledged must be there after the restart, and the member must
//! start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::etcdserverpb as pb;
use raft::Raft;
use server::config::{ResolvedConfig, ServerConfig};
use server::node::raft_config;
use server::server::{bootstrap_raft, run, Listeners, ServerError};
use server::storage::open_member_storage_on;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wal::crash_fs::CrashFs;

const DEADLINE: Duration = Duration::from_secs(30);

struct Member {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
    client: SocketAddr,
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

fn url(listener: &TcpListener) -> String {
    format!("http://{}", listener.local_addr().expect("addr"))
}

/// Member `a` of a one-member cluster whose id comes from `peer_url`; it
/// listens on the given listeners (a restart listens elsewhere).
fn config(client: &TcpListener, peer: &TcpListener, peer_url: &str) -> ResolvedConfig {
    ServerConfig {
        name: "a".to_string(),
        data_dir: Some(Path::new("/data").join("a")),
        listen_client_urls: vec![url(client)],
        listen_peer_urls: vec![url(peer)],
        initial_advertise_peer_urls: vec![peer_url.to_string()],
        initial_cluster: Some(format!("a={peer_url}")),
        heartbeat_interval: 20,
        election_timeout: 200,
        snapshot_count: 4,
        snapshot_catchup_entries: 2,
        ..ServerConfig::default()
    }
    .resolve()
    .expect("valid config")
}

fn start(config: ResolvedConfig, fs: &CrashFs, listeners: Listeners) -> Member {
    // Small segments: purges happen all the time.
    let mut storage = match open_member_storage_on(Arc::new(fs.clone()), &config.data_dir, 2048) {
        Ok(storage) => storage,
        Err(error) => panic!("the member refused to restart after a crash: {error}"),
    };
    let raft = match storage.initial.take() {
        Some(initial) => Raft::new(
            raft_config(
                config.member_id,
                config.heartbeat_interval_ms,
                config.election_timeout_ms,
                config.member_id,
            ),
            initial,
        )
        .expect("restart raft"),
        None => bootstrap_raft(&config).expect("bootstrap"),
    };
    let client = listeners.client[0].local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(
        config,
        listeners,
        storage.log,
        storage.snapshots,
        storage.restored,
        raft,
        async move {
            let _ = stopped.await;
        },
    ));
    Member { stop, task, client }
}

async fn kv(client: SocketAddr) -> pb::kv_client::KvClient<tonic::transport::Channel> {
    let started = Instant::now();
    loop {
        match pb::kv_client::KvClient::connect(format!("http://{client}")).await {
            Ok(kv) => return kv,
            Err(error) => {
                assert!(started.elapsed() < DEADLINE, "connect: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every key with prefix `k/` and its value, linearizably, retried until a
/// leader answers.
async fn all_keys(client: SocketAddr) -> Vec<(String, String)> {
    let mut kv = kv(client).await;
    let started = Instant::now();
    loop {
        let answer = kv
            .range(pb::RangeRequest {
                key: b"k/".to_vec().into(),
                range_end: b"k0".to_vec().into(),
                ..pb::RangeRequest::default()
            })
            .await;
        match answer {
            Ok(response) => {
                return response
                    .into_inner()
                    .kvs
                    .into_iter()
                    .map(|pair| {
                        (
                            String::from_utf8_lossy(&pair.key).into_owned(),
                            String::from_utf8_lossy(&pair.value).into_owned(),
                        )
                    })
                    .collect()
            }
            Err(status) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "no answer after restart: {status}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn one_crash(seed: u64) {
    let mut fs = CrashFs::new();
    let (client, peer) = (bind().await, bind().await);
    let peer_url = url(&peer);
    let member = start(
        config(&client, &peer, &peer_url),
        &fs,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..3u64 {
        let acknowledged = acknowledged.clone();
        let client = member.client;
        writers.push(tokio::spawn(async move {
            let mut kv = kv(client).await;
            let mut failures = 0;
            for round in 0u64.. {
                let key = format!("k/{writer}/{round:06}");
                let value = format!("v{seed}-{round}");
                match kv
                    .put(pb::PutRequest {
                        key: key.clone().into_bytes().into(),
                        value: value.clone().into_bytes().into(),
                        ..pb::PutRequest::default()
                    })
                    .await
                {
                    Ok(_) => acknowledged.lock().expect("acks").push((key, value)),
                    Err(_) => {
                        failures += 1;
                        if failures > 200 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    // Let it run through several snapshots, then cut the power.
    let started = Instant::now();
    let wanted = 40 + (seed * 37) % 160;
    while acknowledged.lock().expect("acks").len() < wanted as usize {
        assert!(started.elapsed() < DEADLINE, "the member made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fs = fs.crash(Some(seed));
    let acked_at_crash = acknowledged.lock().expect("acks").len();
    // The dead process: whatever it still answers was synced before the
    // crash (its file handles fail now), so it counts too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for writer in &writers {
        writer.abort();
    }
    let _ = member.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), member.task).await;
    let acked: Vec<(String, String)> = acknowledged.lock().expect("acks").clone();

    let (client, peer) = (bind().await, bind().await);
    let member = start(
        config(&client, &peer, &peer_url),
        &fs,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    let present: std::collections::BTreeMap<String, String> =
        all_keys(member.client).await.into_iter().collect();
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(key, value)| present.get(key) != Some(value))
        .collect();
    let _ = member.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), member.task).await;
    assert!(
        lost.is_empty(),
        "seed {seed}: {} of {} acknowledged writes ({acked_at_crash} at the crash) are gone \
         after the restart, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}

/// HELD if it passes: no acknowledged write lost, and the member restarts,
/// whatever step of writing, recording, purging or removing snapshots the
/// power cut hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_at_any_point_of_snapshotting() {
    let runs: u64 = std::env::var("REVIEW_CRASH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8);
    for seed in 1..=runs {
        one_crash(seed).await;
    }
}
