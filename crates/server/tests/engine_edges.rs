//! The engine's edges, found by adversarial review of issue #12: keys at
//! its size limit, bad requests, an engine that lost its unsynced batches,
//! the quota and etcd's way out of it, and restarts after each.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{bind, start, url, Disk, Member};
use proto::etcdserverpb as pb;
use server::config::{ResolvedConfig, ServerConfig};
use server::server::Listeners;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);
const SEGMENT_BYTES: u64 = 64 * 1024;
/// mvcc's `MAX_KEY_BYTES` (USER_KEY_BYTES_MAX = (65_535 - 18) / 2).
const MAX_KEY: usize = 32_758;

async fn launch(disk: &Disk, peer_url: Option<String>) -> (Member, String) {
    let (client, peer) = (bind().await, bind().await);
    let peer_url = peer_url.unwrap_or_else(|| url(&peer));
    let member = start(
        common::lone_member_config(&client, &peer, &peer_url),
        disk,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    (member, peer_url)
}

async fn stop(member: Member) {
    let _ = member.stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), member.task).await;
}

async fn put_retry(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<pb::PutResponse, tonic::Status> {
    let started = Instant::now();
    loop {
        match kv
            .put(pb::PutRequest {
                key: key.clone().into(),
                value: value.clone().into(),
                ..pb::PutRequest::default()
            })
            .await
        {
            Ok(response) => return Ok(response.into_inner()),
            Err(status)
                if status.code() == tonic::Code::InvalidArgument
                    || started.elapsed() > DEADLINE =>
            {
                return Err(status)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn get(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
    key: &[u8],
) -> Option<Vec<u8>> {
    let started = Instant::now();
    loop {
        match kv
            .range(pb::RangeRequest {
                key: key.to_vec().into(),
                ..pb::RangeRequest::default()
            })
            .await
        {
            Ok(response) => {
                return response
                    .into_inner()
                    .kvs
                    .into_iter()
                    .next()
                    .map(|kv| kv.value.to_vec())
            }
            Err(status) => {
                assert!(started.elapsed() < DEADLINE, "range: {status}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Keys at the largest size the API accepts, of the bytes that escape
/// worst (zeros) and of bytes that do not escape, written, overwritten,
/// deleted and compacted across several engine syncs: the member must go
/// on serving them, and must restart from its engine and serve them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_at_the_size_limit_survive_writes_compaction_and_a_restart() {
    let disk = Disk::new();
    let (member, peer_url) = launch(&disk, None).await;
    let mut client = common::kv_client(member.client).await;
    let zeros = vec![0u8; MAX_KEY];
    let ones = vec![0xFFu8; MAX_KEY];
    let mut prefix_zeros = vec![0u8; MAX_KEY];
    prefix_zeros[0] = b'k';
    for round in 0..6u8 {
        for key in [&zeros, &ones, &prefix_zeros] {
            put_retry(&mut client, key.clone(), vec![round; 16])
                .await
                .expect("a key of the maximum size is accepted");
        }
    }
    assert_eq!(
        get(&mut client, &zeros).await,
        Some(vec![5u8; 16]),
        "zeros before txn"
    );
    assert_eq!(
        get(&mut client, &ones).await,
        Some(vec![5u8; 16]),
        "ones before txn"
    );
    assert_eq!(
        get(&mut client, &prefix_zeros).await,
        Some(vec![5u8; 16]),
        "k-zeros before txn"
    );
    // One more byte is refused with a clear error, the member lives on.
    let refused = put_retry(&mut client, vec![0u8; MAX_KEY + 1], b"x".to_vec())
        .await
        .expect_err("a key one byte too long is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // A transaction carrying a too-long key: refused before the log.
    let txn = client
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                key: vec![0u8; 70_000].into(),
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Version as i32,
                target_union: Some(pb::compare::TargetUnion::Version(0)),
                ..pb::Compare::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key: vec![0u8; 70_000].into(),
                        range_end: vec![0xFFu8; 70_000].into(),
                        prev_kv: true,
                    },
                )),
            }],
            ..pb::TxnRequest::default()
        })
        .await;
    eprintln!("txn with huge keys: {:?}", txn.as_ref().map(|_| ()));
    assert_eq!(
        get(&mut client, &zeros).await,
        Some(vec![5u8; 16]),
        "zeros after txn"
    );
    // Delete one of them, compact, go on writing (more syncs).
    let header = client
        .delete_range(pb::DeleteRangeRequest {
            key: ones.clone().into(),
            ..pb::DeleteRangeRequest::default()
        })
        .await
        .expect("delete")
        .into_inner()
        .header
        .expect("header");
    client
        .compact(pb::CompactionRequest {
            revision: header.revision,
            physical: true,
        })
        .await
        .expect("compact");
    assert_eq!(
        get(&mut client, &zeros).await,
        Some(vec![5u8; 16]),
        "zeros after compact"
    );
    for round in 0..8u8 {
        put_retry(&mut client, b"k/small".to_vec(), vec![round])
            .await
            .expect("put");
    }
    assert_eq!(get(&mut client, &zeros).await, Some(vec![5u8; 16]));
    assert_eq!(get(&mut client, &ones).await, None);
    // The transaction's delete held it.
    assert_eq!(get(&mut client, &prefix_zeros).await, None);
    drop(client);
    stop(member).await;

    let (member, _) = launch(&disk, Some(peer_url)).await;
    let mut client = common::kv_client(member.client).await;
    assert_eq!(get(&mut client, &zeros).await, Some(vec![5u8; 16]));
    assert_eq!(get(&mut client, &ones).await, None);
    // The transaction's delete held it.
    assert_eq!(get(&mut client, &prefix_zeros).await, None);
    assert_eq!(get(&mut client, b"k/small").await, Some(vec![7u8]));
    put_retry(&mut client, zeros.clone(), b"after".to_vec())
        .await
        .expect("put after restart");
    assert_eq!(get(&mut client, &zeros).await, Some(b"after".to_vec()));
    drop(client);
    stop(member).await;
}

fn config_with_quota(
    client: &TcpListener,
    peer: &TcpListener,
    peer_url: &str,
    quota: u64,
) -> ResolvedConfig {
    let mut config = common::lone_member_config(client, peer, peer_url);
    config.quota_backend_bytes = quota;
    config
}

async fn db_size(client: SocketAddr) -> i64 {
    let mut maintenance =
        pb::maintenance_client::MaintenanceClient::connect(format!("http://{client}"))
            .await
            .expect("connect");
    maintenance
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .db_size
}

/// Over the quota, etcd's way out works: delete, compact, defragment, and
/// writes come back (and stay back after a restart). Found by review: the
/// quota once counted fjall's journal, a write-ahead buffer that neither
/// deletes, compactions nor a restart shrink, so the member refused every
/// write for good; it now counts the engine's tables (or the versions'
/// bytes when more), which `Defragment` compacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_come_back_after_deleting_everything_and_compacting_over_the_quota() {
    // The size of a fresh engine, to set a quota a little above it.
    let probe = Disk::new();
    let (member, _) = launch(&probe, None).await;
    let mut client = common::kv_client(member.client).await;
    put_retry(&mut client, b"k/probe".to_vec(), b"v".to_vec())
        .await
        .expect("probe put");
    let fresh = db_size(member.client).await as u64;
    drop(client);
    stop(member).await;
    let quota = fresh + 512 * 1024;
    eprintln!("fresh engine: {fresh} bytes; quota {quota}");

    let disk = Disk::new();
    let (client_l, peer_l) = (bind().await, bind().await);
    let peer_url = url(&peer_l);
    let member = start(
        config_with_quota(&client_l, &peer_l, &peer_url, quota),
        &disk,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client_l],
            peer: vec![peer_l],
        },
    );
    let mut client = common::kv_client(member.client).await;
    let mut written = 0;
    let mut refused = None;
    for n in 0..2_000u32 {
        match client
            .put(pb::PutRequest {
                key: format!("k/{n:05}").into_bytes().into(),
                // Incompressible, as most real values are for the journal.
                value: noise(n, 16 * 1024).into(),
                ..pb::PutRequest::default()
            })
            .await
        {
            Ok(_) => {
                written += 1;
                if written % 100 == 1 {
                    eprintln!(
                        "after {written} puts: db_size {}",
                        db_size(member.client).await
                    );
                }
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                refused = Some(status);
                break;
            }
            Err(status) if written == 0 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = status;
            }
            Err(status) => panic!("put {n}: {status:?}"),
        }
    }
    let refused = refused.expect("the quota refuses writes");
    eprintln!(
        "{written} puts of 16 KiB before: {}; db_size {}",
        refused.message(),
        db_size(member.client).await
    );
    // What etcd's documentation tells an operator to do: delete, compact,
    // defragment.
    let deleted = client
        .delete_range(pb::DeleteRangeRequest {
            key: b"k/".to_vec().into(),
            range_end: b"k0".to_vec().into(),
            ..pb::DeleteRangeRequest::default()
        })
        .await
        .expect("deletes pass the quota")
        .into_inner();
    let revision = deleted.header.expect("header").revision;
    client
        .compact(pb::CompactionRequest {
            revision,
            physical: true,
        })
        .await
        .expect("compaction passes the quota");
    pb::maintenance_client::MaintenanceClient::connect(format!("http://{}", member.client))
        .await
        .expect("connect")
        .defragment(pb::DefragmentRequest {})
        .await
        .expect("defragment");
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(20) {
        match client
            .put(pb::PutRequest {
                key: b"k/after".to_vec().into(),
                value: b"small".to_vec().into(),
                ..pb::PutRequest::default()
            })
            .await
        {
            Ok(_) => {
                last = None;
                break;
            }
            Err(status) => last = Some(status),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let size_after = db_size(member.client).await;
    drop(client);
    stop(member).await;
    // A restart does not help either.
    let (client_l, peer_l) = (bind().await, bind().await);
    let member = start(
        config_with_quota(&client_l, &peer_l, &peer_url, quota),
        &disk,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client_l],
            peer: vec![peer_l],
        },
    );
    let mut client = common::kv_client(member.client).await;
    let after_restart = put_retry(&mut client, b"k/after".to_vec(), b"small".to_vec()).await;
    let size_restarted = db_size(member.client).await;
    drop(client);
    stop(member).await;
    assert!(
        last.is_none(),
        "no key left, every version compacted away, 20 s later writes are still refused \
         ({:?}); engine on disk {size_after} bytes, quota {quota}; after a restart: {:?}, \
         {size_restarted} bytes",
        last,
        after_restart.map(|_| ()),
    );
}

/// Bytes that do not compress (xorshift).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn config_count(
    client: &TcpListener,
    peer: &TcpListener,
    peer_url: &str,
    snapshot_count: u64,
) -> ResolvedConfig {
    ServerConfig {
        listen_client_urls: vec![url(client)],
        listen_peer_urls: vec![url(peer)],
        initial_advertise_peer_urls: vec![peer_url.to_string()],
        initial_cluster: Some(format!("a={peer_url}")),
        ..common::member_config("a", snapshot_count, 2)
    }
    .resolve()
    .expect("valid config")
}

async fn launch_count(disk: &Disk, peer_url: &str, snapshot_count: u64) -> Member {
    let (client, peer) = (bind().await, bind().await);
    start(
        config_count(&client, &peer, peer_url, snapshot_count),
        disk,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    )
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn clear_dir(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("rm -r");
        } else {
            std::fs::remove_file(&path).expect("rm");
        }
    }
}

/// A power cut loses the engine's batches since its last sync (commits are
/// not fsynced), not only the log's unsynced tail. Simulated: the engine
/// as it was closed at the end of a first run (a state at or after its
/// last sync, and no sync happens in the second run: its snapshot count is
/// not reached), restored after a second run whose writes were all
/// acknowledged, together with a power cut of the log. The member must
/// restart and every acknowledged write must be there (replayed from the
/// log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_an_engine_that_lost_its_unsynced_batches() {
    for seed in 1..=4u64 {
        let disk = Disk::new();
        let peer_url = {
            let peer = bind().await;
            url(&peer)
        };
        let member = launch_count(&disk, &peer_url, 4).await;
        let mut client = common::kv_client(member.client).await;
        for n in 0..20u32 {
            put_retry(
                &mut client,
                format!("k/{n:03}").into_bytes(),
                b"first".to_vec(),
            )
            .await
            .expect("put");
        }
        drop(client);
        stop(member).await;
        let saved = tempfile::tempdir().expect("saved");
        copy_tree(disk.engine(), saved.path());

        let member = launch_count(&disk, &peer_url, 1_000_000).await;
        let mut client = common::kv_client(member.client).await;
        for n in 10..(30 + seed as u32 * 5) {
            put_retry(
                &mut client,
                format!("k/{n:03}").into_bytes(),
                b"second".to_vec(),
            )
            .await
            .expect("put");
        }
        drop(client);
        let crashed = disk.crash(Some(seed));
        stop(member).await;
        clear_dir(crashed.engine());
        copy_tree(saved.path(), crashed.engine());

        let member = launch_count(&crashed, &peer_url, 4).await;
        let mut client = common::kv_client(member.client).await;
        for n in 0..(30 + seed as u32 * 5) {
            let want: &[u8] = if n < 10 { b"first" } else { b"second" };
            assert_eq!(
                get(&mut client, format!("k/{n:03}").as_bytes())
                    .await
                    .as_deref(),
                Some(want),
                "seed {seed}: key {n}"
            );
        }
        drop(client);
        stop(member).await;
    }
}

/// Odd numbers in requests: each gets an answer (an error or not), and the
/// member goes on serving writes and reads, and restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_revisions_limits_and_bounds_are_answered_and_the_member_lives_on() {
    let disk = Disk::new();
    let (member, peer_url) = launch(&disk, None).await;
    let mut client = common::kv_client(member.client).await;
    for n in 0..10u8 {
        put_retry(&mut client, vec![b'k', b'/', n], vec![n])
            .await
            .expect("put");
    }
    let mut maintenance =
        pb::maintenance_client::MaintenanceClient::connect(format!("http://{}", member.client))
            .await
            .expect("connect");
    for revision in [i64::MIN, -1, i64::MAX] {
        let answer = maintenance.hash_kv(pb::HashKvRequest { revision }).await;
        eprintln!(
            "hash_kv({revision}): {:?}",
            answer.map(|a| a.into_inner().hash)
        );
    }
    for (revision, limit) in [
        (i64::MAX, 0),
        (i64::MIN, 0),
        (-1, -1),
        (0, i64::MIN),
        (0, i64::MAX),
    ] {
        let answer = client
            .range(pb::RangeRequest {
                key: b"k/".to_vec().into(),
                range_end: b"k0".to_vec().into(),
                revision,
                limit,
                min_mod_revision: i64::MAX,
                max_create_revision: -5,
                sort_order: 77,
                sort_target: -3,
                ..pb::RangeRequest::default()
            })
            .await;
        eprintln!(
            "range(rev {revision}, limit {limit}): {:?}",
            answer.map(|a| a.into_inner().count)
        );
    }
    for revision in [i64::MIN, -1, 0, i64::MAX] {
        let answer = client
            .compact(pb::CompactionRequest {
                revision,
                physical: true,
            })
            .await;
        eprintln!("compact({revision}): {:?}", answer.map(|_| ()));
    }
    let txn = client
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"k/".to_vec().into(),
                range_end: vec![0u8].into(),
                result: 99,
                target: -7,
                target_union: None,
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: b"k/".to_vec().into(),
                    revision: i64::MIN,
                    ..pb::RangeRequest::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: b"k/".to_vec().into(),
                    revision: i64::MAX,
                    ..pb::RangeRequest::default()
                })),
            }],
        })
        .await;
    eprintln!("txn: {:?}", txn.map(|a| a.into_inner().succeeded));
    put_retry(&mut client, b"k/alive".to_vec(), b"yes".to_vec())
        .await
        .expect("the member still takes writes");
    assert_eq!(get(&mut client, b"k/alive").await, Some(b"yes".to_vec()));
    drop(client);
    stop(member).await;
    let (member, _) = launch(&disk, Some(peer_url)).await;
    let mut client = common::kv_client(member.client).await;
    assert_eq!(get(&mut client, b"k/alive").await, Some(b"yes".to_vec()));
    assert_eq!(get(&mut client, &[b'k', b'/', 9]).await, Some(vec![9]));
    drop(client);
    stop(member).await;
}
