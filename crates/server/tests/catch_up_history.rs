//! Found by adversarial review (issue #12), kept: a member that caught up by snapshot
//! (the leader's engine streamed and installed) must be indistinguishable
//! from the members that applied the log: same HashKV at every revision,
//! same history at old revisions, same compaction point, before and after
//! restarts.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{addr_url as url, Disk, Proxy};
use proto::etcdserverpb as pb;
use server::config::ResolvedConfig;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(40);

async fn kv(client: SocketAddr) -> Option<pb::kv_client::KvClient<tonic::transport::Channel>> {
    pb::kv_client::KvClient::connect(url(client)).await.ok()
}

/// Retries a request until it is acknowledged; returns the revision.
async fn put_acked(client: SocketAddr, key: &str, value: &str) -> i64 {
    let started = Instant::now();
    loop {
        if let Some(mut kv) = kv(client).await {
            if let Ok(response) = kv
                .put(pb::PutRequest {
                    key: key.as_bytes().to_vec().into(),
                    value: value.as_bytes().to_vec().into(),
                    ..pb::PutRequest::default()
                })
                .await
            {
                return response.into_inner().header.expect("header").revision;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "write {key} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_acked(client: SocketAddr, key: &str) -> i64 {
    let started = Instant::now();
    loop {
        if let Some(mut kv) = kv(client).await {
            if let Ok(response) = kv
                .delete_range(pb::DeleteRangeRequest {
                    key: key.as_bytes().to_vec().into(),
                    ..pb::DeleteRangeRequest::default()
                })
                .await
            {
                return response.into_inner().header.expect("header").revision;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "delete {key} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn compact_acked(client: SocketAddr, revision: i64) {
    let started = Instant::now();
    loop {
        if let Some(mut kv) = kv(client).await {
            match kv
                .compact(pb::CompactionRequest {
                    revision,
                    physical: true,
                })
                .await
            {
                Ok(_) => return,
                Err(status) if status.message().contains("compacted") => return,
                Err(_) => {}
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "compaction never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a member answers about its own state: (current revision, compact
/// revision, HashKV at each revision asked, every version under `k/` at
/// each revision asked), serializable.
type View = (
    i64,
    i64,
    Vec<Result<u32, String>>,
    Vec<Result<Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)>, String>>,
);

async fn view(client: SocketAddr, revisions: &[i64]) -> Option<View> {
    let mut maintenance = pb::maintenance_client::MaintenanceClient::connect(url(client))
        .await
        .ok()?;
    let current = maintenance
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .ok()?
        .into_inner();
    let mut hashes = Vec::new();
    for &revision in revisions {
        hashes.push(
            maintenance
                .hash_kv(pb::HashKvRequest { revision })
                .await
                .map(|answer| answer.into_inner().hash)
                .map_err(|status| status.message().to_string()),
        );
    }
    let mut kv = kv(client).await?;
    let mut ranges = Vec::new();
    for &revision in revisions {
        ranges.push(
            kv.range(pb::RangeRequest {
                key: b"k/".to_vec().into(),
                range_end: b"k0".to_vec().into(),
                revision,
                serializable: true,
                ..pb::RangeRequest::default()
            })
            .await
            .map(|answer| {
                answer
                    .into_inner()
                    .kvs
                    .into_iter()
                    .map(|kv| {
                        (
                            kv.key.to_vec(),
                            kv.value.to_vec(),
                            kv.create_revision,
                            kv.mod_revision,
                            kv.version,
                        )
                    })
                    .collect()
            })
            .map_err(|status| status.message().to_string()),
        );
    }
    Some((
        current.header.expect("header").revision,
        current.compact_revision,
        hashes,
        ranges,
    ))
}

/// Waits until the three members answer the same view.
async fn converge(what: &str, clients: &[SocketAddr], revisions: &[i64]) {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for &client in clients {
            views.push(view(client, revisions).await);
        }
        if views[0].is_some() && views.iter().all(|v| *v == views[0]) {
            return;
        }
        if started.elapsed() > DEADLINE {
            let summary: BTreeMap<usize, String> = views
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        i,
                        match v {
                            None => "no answer".to_string(),
                            Some((current, compacted, hashes, ranges)) => format!(
                                "rev {current} compacted {compacted} hashes {hashes:?} \
                                 range sizes {:?}",
                                ranges
                                    .iter()
                                    .map(|r| r.as_ref().map(Vec::len))
                                    .collect::<Vec<_>>()
                            ),
                        },
                    )
                })
                .collect();
            panic!("{what}: the members never agreed: {summary:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_caught_up_by_snapshot_answers_hashkv_and_history_as_the_others() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut addrs = Vec::new();
    for _ in 0..7 {
        addrs.push(free_addr().await);
    }
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
    let mut members = vec![
        common::restart_on(configs[0].clone(), &fs[0]).await,
        common::restart_on(configs[1].clone(), &fs[1]).await,
        common::restart_on(configs[2].clone(), &fs[2]).await,
    ];
    let a = members[0].client;
    put_acked(a, "k/start", "1").await;
    // History c takes part in: several versions, a delete.
    for i in 0..10 {
        put_acked(a, &format!("k/{:02}", i % 4), &format!("early-{i}")).await;
    }
    delete_acked(a, "k/03").await;
    let c = members.pop().expect("c");
    common::stop_within(c).await;
    proxy_c.cut();
    // History c misses: overwrites, deletes, re-creations, a compaction in
    // the middle that keeps some old versions and drops others.
    let mut revisions = Vec::new();
    for i in 0..30 {
        let revision = put_acked(a, &format!("k/{:02}", i % 7), &format!("late-{i}")).await;
        revisions.push(revision);
        if i % 5 == 4 {
            revisions.push(delete_acked(a, &format!("k/{:02}", (i + 2) % 7)).await);
        }
        if i == 15 {
            compact_acked(a, revision - 3).await;
        }
    }
    let last = *revisions.last().expect("revisions");
    let asked: Vec<i64> = vec![revisions[18], revisions[22], revisions[30], last];
    let c = common::restart_on(configs[2].clone(), &fs[2]).await;
    members.push(c);
    let clients: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    converge("after c caught up by snapshot", &clients, &asked).await;

    // c restarts from the installed engine.
    let c = members.pop().expect("c");
    common::stop_within(c).await;
    proxy_c.cut();
    members.push(common::restart_on(configs[2].clone(), &fs[2]).await);
    let later = put_acked(a, "k/after-restart", "x").await;
    let mut asked_later = asked.clone();
    asked_later.push(later);
    converge("after c restarted", &clients, &asked_later).await;

    // Everyone restarts.
    for member in members.drain(..) {
        common::stop_within(member).await;
    }
    proxy_c.cut();
    for (config, disk) in configs.iter().zip(&fs) {
        members.push(common::restart_on(config.clone(), disk).await);
    }
    let clients: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    let final_rev = put_acked(clients[1], "k/after-all", "y").await;
    asked_later.push(final_rev);
    converge("after every member restarted", &clients, &asked_later).await;
    for member in members {
        common::stop_within(member).await;
    }
}
/// The leader that sends the snapshot restarted since it compacted its log
/// (its log's disk lost power: unsynced commit indexes gone): its Raft
/// snapshot is the WAL's marker (no data), and what it streams is its
/// engine as reopened. The member catching up from it must end up
/// answering as the others, and restart from what it installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_caught_up_from_a_restarted_leader_answers_as_the_others() {
    let mut addrs = Vec::new();
    for _ in 0..7 {
        addrs.push(free_addr().await);
    }
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
    let mut members = vec![
        common::restart_on(configs[0].clone(), &fs[0]).await,
        common::restart_on(configs[1].clone(), &fs[1]).await,
        common::restart_on(configs[2].clone(), &fs[2]).await,
    ];
    put_acked(members[0].client, "k/start", "1").await;
    let c = members.pop().expect("c");
    common::stop_within(c).await;
    proxy_c.cut();
    let mut revisions = Vec::new();
    for i in 0..40 {
        revisions.push(
            put_acked(
                members[0].client,
                &format!("k/{:02}", i % 9),
                &format!("v-{i}"),
            )
            .await,
        );
        if i % 6 == 5 {
            revisions.push(delete_acked(members[0].client, &format!("k/{:02}", (i + 4) % 9)).await);
        }
        if i == 20 {
            compact_acked(members[0].client, revisions[revisions.len() - 4]).await;
        }
    }
    for member in members.drain(..) {
        common::stop_within(member).await;
    }
    let crashed: Vec<Disk> = fs.iter().map(|disk| disk.crash(Some(7))).collect();
    for i in 0..2 {
        members.push(common::restart_on(configs[i].clone(), &crashed[i]).await);
    }
    let more = put_acked(members[1].client, "k/more", "m").await;
    members.push(common::restart_on(configs[2].clone(), &crashed[2]).await);
    let clients: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    let asked = vec![revisions[25], revisions[40], more];
    converge("c caught up from a restarted leader", &clients, &asked).await;
    let c = members.pop().expect("c");
    common::stop_within(c).await;
    proxy_c.cut();
    members.push(common::restart_on(configs[2].clone(), &crashed[2]).await);
    let clients: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    let last = put_acked(clients[2], "k/last", "l").await;
    let mut asked = asked;
    asked.push(last);
    converge("c restarted after catching up", &clients, &asked).await;
    for member in members {
        common::stop_within(member).await;
    }
}

/// Writes, deletes and compactions go on while the member catches up by
/// snapshot (the leader streams a view while applying, the follower
/// installs while entries keep coming), for several rounds of falling
/// behind: every member must end up with the same HashKV and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catching_up_by_snapshot_under_concurrent_writes_and_compactions_converges() {
    let mut addrs = Vec::new();
    for _ in 0..7 {
        addrs.push(free_addr().await);
    }
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
    let mut members = vec![
        common::restart_on(configs[0].clone(), &fs[0]).await,
        common::restart_on(configs[1].clone(), &fs[1]).await,
        common::restart_on(configs[2].clone(), &fs[2]).await,
    ];
    let a = members[0].client;
    put_acked(a, "k/start", "1").await;
    let stop_writer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop_writer = stop_writer.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut revisions = Vec::new();
            // At least 40 writes however slow the machine: the checks below
            // look back 20 of them.
            while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) || revisions.len() <= 40 {
                revisions.push(put_acked(a, &format!("k/{:02}", i % 11), &format!("w-{i}")).await);
                if i % 7 == 3 {
                    revisions.push(delete_acked(a, &format!("k/{:02}", (i + 5) % 11)).await);
                }
                if i % 25 == 24 && revisions.len() > 10 {
                    compact_acked(a, revisions[revisions.len() - 8]).await;
                }
                i += 1;
            }
            revisions
        })
    };
    for round in 0..4 {
        let c = members.pop().expect("c");
        common::stop_within(c).await;
        proxy_c.cut();
        tokio::time::sleep(Duration::from_millis(300 + round * 100)).await;
        members.push(common::restart_on(configs[2].clone(), &fs[2]).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_writer.store(true, std::sync::atomic::Ordering::Relaxed);
    let revisions = writer.await.expect("writer");
    let n = revisions.len();
    assert!(n > 40, "only {n} writes");
    let last = put_acked(a, "k/end", "e").await;
    let asked = vec![revisions[n - 20], revisions[n - 5], last];
    let clients: Vec<SocketAddr> = members.iter().map(|m| m.client).collect();
    converge("after rounds of catching up under load", &clients, &asked).await;
    for member in members {
        common::stop_within(member).await;
    }
}

async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
}
