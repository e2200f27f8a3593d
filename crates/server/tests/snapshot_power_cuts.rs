//! Acknowledged writes survive a power cut at any point of snapshotting.
//! A whole member (`server::run`), its log on `CrashFs`, takes writes from
//! several clients while snapshots (engine syncs), compactions and WAL
//! purges run all the time (a snapshot every 4 entries, 2 KiB segments);
//! at a moment chosen by the seed its log's disk loses power (everything
//! unsynced is lost, torn writes kept in part), and it restarts on what
//! survived, with its engine as the process left it. It must start, and
//! every write a client saw acknowledged must be there.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bind, start, url, Disk};
use proto::etcdserverpb as pb;
use server::server::Listeners;

const DEADLINE: Duration = Duration::from_secs(30);

/// Small WAL segments: purges happen all the time.
const SEGMENT_BYTES: u64 = 2048;

/// Every key with prefix `k/` and its value, linearizably, retried until a
/// leader answers.
async fn all_keys(client: SocketAddr) -> BTreeMap<String, String> {
    let started = Instant::now();
    loop {
        match common::keys(client, false).await {
            Ok(keys) => return keys,
            Err(error) => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "no answer after restart: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn one_crash(seed: u64) {
    let mut fs = Disk::new();
    let (client, peer) = (bind().await, bind().await);
    let peer_url = url(&peer);
    let member = start(
        common::lone_member_config(&client, &peer, &peer_url),
        &fs,
        SEGMENT_BYTES,
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
            let mut kv = common::kv_client(client).await;
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
        common::lone_member_config(&client, &peer, &peer_url),
        &fs,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    let present = all_keys(member.client).await;
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

/// No acknowledged write is lost, and the member restarts, whatever step
/// of writing, recording, purging or removing snapshots the power cut hit:
/// eight seeds by default, `RAFTKV_POWER_CUT_RUNS` for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_at_any_point_of_snapshotting() {
    let runs: u64 = std::env::var("RAFTKV_POWER_CUT_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(8);
    for seed in 1..=runs {
        one_crash(seed).await;
    }
}
