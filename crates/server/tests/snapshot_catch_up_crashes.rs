//! A follower that crashes while catching up by snapshot restarts and
//! converges. Of three members, `c` falls behind the leader's log and comes
//! back while writes go on, so that it catches up by snapshot (the leader's
//! engine streamed into a new generation, installed by the apply thread,
//! then recorded by Raft: `Installed` marker) while its own snapshots
//! (engine syncs, log compactions) run too. Its log's disk loses power at a
//! moment of that chosen by the seed (a received generation being built, a
//! new generation installed, or a short wait), and it restarts on what
//! survived, its engine as the process left it. It must start, converge to
//! the leader's data, and list the same members, in the same order, as
//! every other member.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{addr_url as url, Disk, ListedMember, Proxy};
use proto::etcdserverpb as pb;
use server::config::ResolvedConfig;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(40);

async fn put(client: SocketAddr, key: &str, value: &str) -> bool {
    let Ok(mut kv) = pb::kv_client::KvClient::connect(url(client)).await else {
        return false;
    };
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..pb::PutRequest::default()
    })
    .await
    .is_ok()
}

/// Retries a put until it is acknowledged.
async fn put_acked(client: SocketAddr, key: &str, value: &str) {
    let started = Instant::now();
    while !put(client, key, value).await {
        assert!(
            started.elapsed() < DEADLINE,
            "write {key} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key under `k/` on the member at `client` (its own state when
/// `serializable`), if it answers.
async fn keys(client: SocketAddr, serializable: bool) -> Option<BTreeMap<String, String>> {
    common::keys(client, serializable).await.ok()
}

/// The list as the member returns it (order included), if it answers.
async fn member_list(client: SocketAddr) -> Option<Vec<ListedMember>> {
    common::member_list(client).await.ok()
}

async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn one_run(seed: u64) {
    let mut addrs = Vec::new();
    for _ in 0..7 {
        addrs.push(free_addr().await);
    }
    // c's peers reach it through a proxy (addrs[6]) that the test cuts when
    // c dies.
    let advertised = [addrs[1], addrs[3], addrs[6]];
    let proxy_c = Proxy::spawn(addrs[6], addrs[5]).await;
    let names = ["a", "b", "c"];
    let cluster = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name}={}", url(advertised[i])))
        .collect::<Vec<_>>()
        .join(",");
    let configs: Vec<ResolvedConfig> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            common::cluster_member_config(
                name,
                addrs[2 * i],
                addrs[2 * i + 1],
                advertised[i],
                &cluster,
            )
        })
        .collect();
    let fs: Vec<Disk> = (0..3).map(|_| Disk::new()).collect();
    let a = common::restart_on(configs[0].clone(), &fs[0]).await;
    let b = common::restart_on(configs[1].clone(), &fs[1]).await;
    let c = common::restart_on(configs[2].clone(), &fs[2]).await;
    let started = Instant::now();
    while !put(a.client, "k/start", "1").await {
        assert!(started.elapsed() < DEADLINE, "seed {seed}: no first write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // c falls behind the leader's log.
    common::stop_within(c).await;
    proxy_c.cut();
    let mut round = 0u64;
    let mut write = |count: u64| {
        let start = round;
        round += count;
        start..round
    };
    for i in write(40) {
        put_acked(a.client, &format!("k/{i:05}"), &format!("{seed}-{i}")).await;
    }
    // c comes back and catches up by snapshot while writes go on; its disk
    // loses power somewhere in that.
    let c = common::restart_on(configs[2].clone(), &fs[2]).await;
    let writer_client = a.client;
    let range = write(40);
    let writer = tokio::spawn(async move {
        for i in range {
            let _ = put(writer_client, &format!("k/{i:05}"), &format!("{seed}-{i}")).await;
        }
    });
    // Cut the power when c's engine directory shows a received generation
    // being built beside the live one (mode 0), a newly installed one
    // (mode 1), or after a short wait (mode 2).
    let engine_dir = fs[2].engine().to_path_buf();
    let generations = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&engine_dir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("db-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let before = generations();
    let mode = seed % 3;
    let wait_started = Instant::now();
    loop {
        let names = generations();
        let hit = match mode {
            0 => names.len() > before.len(),
            1 => names.iter().any(|name| !before.contains(name)) && names.len() == 1,
            _ => wait_started.elapsed() >= Duration::from_millis((seed * 7) % 40),
        };
        if hit || wait_started.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let wait = wait_started.elapsed();
    let crashed = fs[2].crash(Some(seed));
    proxy_c.cut();
    common::stop_within(c).await;
    proxy_c.cut();
    let _ = writer.await;
    let c = common::restart_on(configs[2].clone(), &crashed).await;
    for i in write(10) {
        put_acked(a.client, &format!("k/{i:05}"), &format!("{seed}-{i}")).await;
    }

    // Converge: c's own data equals the leader's, and all three list the
    // same registry in the same order.
    let started = Instant::now();
    loop {
        let leader = keys(a.client, false).await;
        let on_c = keys(c.client, true).await;
        let lists = [
            member_list(a.client).await,
            member_list(b.client).await,
            member_list(c.client).await,
        ];
        let same_data = leader.is_some() && leader == on_c;
        let same_lists = lists[0].is_some()
            && lists.iter().all(|list| *list == lists[0])
            && lists[0].as_ref().is_some_and(|list| {
                list.len() == 3 && list.iter().all(|member| !member.1.is_empty())
            });
        if same_data && same_lists {
            break;
        }
        if started.elapsed() > DEADLINE {
            let missing = match (&leader, &on_c) {
                (Some(leader), Some(on_c)) => leader
                    .iter()
                    .filter(|(key, value)| on_c.get(*key) != Some(value))
                    .map(|(key, _)| key.clone())
                    .take(5)
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            };
            panic!(
                "seed {seed} (crash after {wait:?}): c never converged: data equal {same_data} \
                 (leader {} keys, c {} keys, missing on c e.g. {missing:?}); lists equal \
                 {same_lists}: {lists:?}",
                leader.as_ref().map_or(0, BTreeMap::len),
                on_c.as_ref().map_or(0, BTreeMap::len),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped_c = common::stop_within(c).await;
    common::stop_within(a).await;
    common::stop_within(b).await;
    assert!(
        matches!(stopped_c, Some(Ok(()))),
        "seed {seed}: c did not stop cleanly: {stopped_c:?}"
    );
}

/// The crash-and-converge run for six seeds by default,
/// `RAFTKV_CATCH_UP_CRASH_RUNS` for more; `RUST_LOG` shows the members' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_crashed_while_catching_up_by_snapshot_restarts_and_converges() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let runs: u64 = std::env::var("RAFTKV_CATCH_UP_CRASH_RUNS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(6);
    for seed in 1..=runs {
        one_run(seed).await;
    }
}
