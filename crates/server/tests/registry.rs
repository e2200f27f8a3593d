//! The member registry is replicated state: it comes only from applied
//! entries (the bootstrap conf changes, each member's publish) or a
//! snapshot of them, never from a member's own `--initial-cluster`. Real
//! members (`server::run`) over loopback gRPC, their log on `CrashFs`, their
//! engine in a temporary directory, where the registry's records are read
//! once the member stopped.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bind, conf_change, start, url, Disk, ListedMember, Member};
use proto::etcdserverpb as pb;
use raft::ConfChangeKind;
use server::config::{ResolvedConfig, ServerConfig};
use server::node::StateMachine;
use server::server::Listeners;
use server::state::{KvStateMachine, SharedState};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);

/// WAL segments of 1 MiB: purges play no part in these tests.
const SEGMENT_BYTES: u64 = 1 << 20;

/// A config for `name` whose peer URLs are those of `peer` listeners.
fn config(
    name: &str,
    client: &TcpListener,
    peer: &[&TcpListener],
    initial_cluster: &str,
) -> ResolvedConfig {
    ServerConfig {
        listen_client_urls: vec![url(client)],
        listen_peer_urls: peer.iter().map(|listener| url(listener)).collect(),
        initial_cluster: Some(initial_cluster.to_string()),
        ..common::member_config(name, 5, 5)
    }
    .resolve()
    .expect("valid config")
}

async fn stop(member: Member) {
    let _ = member.stop.send(());
    member
        .task
        .await
        .expect("member task")
        .expect("member stopped cleanly");
}

async fn put_until<F: FnMut() -> bool>(client: SocketAddr, what: &str, mut done: F) {
    let mut kv = pb::kv_client::KvClient::connect(format!("http://{client}"))
        .await
        .expect("connect");
    let started = Instant::now();
    let mut round = 0u64;
    while !done() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        // Failures (no leader yet) are retried: the condition decides.
        let _ = kv
            .put(pb::PutRequest {
                key: format!("key-{round}").into_bytes().into(),
                value: b"value".to_vec().into(),
                ..pb::PutRequest::default()
            })
            .await;
        round += 1;
    }
}

/// The members as the member at `client` lists them, sorted (the order is
/// not what these tests compare).
async fn member_list(client: SocketAddr) -> Vec<ListedMember> {
    let mut members = common::member_list(client).await.expect("member list");
    members.sort();
    members
}

/// The registry's records as the engine in `engine` holds them (the member
/// using it has stopped): what every member's state and snapshots carry.
fn registry_records(engine: &std::path::Path) -> std::collections::BTreeMap<u64, Vec<u8>> {
    let state = SharedState::open(engine, &mvcc::StoreOptions::default()).expect("open engine");
    let records = state
        .read()
        .expect("state")
        .store
        .members()
        .expect("members");
    records
}

/// A state machine on an engine in a temporary directory of its own.
fn state_machine() -> (tempfile::TempDir, SharedState, KvStateMachine) {
    let dir = tempfile::tempdir().expect("engine dir");
    let state = SharedState::open(dir.path(), &mvcc::StoreOptions::default()).expect("open");
    let machine = KvStateMachine::new(state.clone()).expect("state machine");
    (dir, state, machine)
}

/// Whether the member at `client` lists every one of `ids` with a name
/// (their publishes applied there).
async fn all_published(client: SocketAddr, ids: &[u64]) -> bool {
    match common::member_list(client).await {
        Ok(members) => ids.iter().all(|id| {
            members
                .iter()
                .any(|(member, name, _, _)| member == id && !name.is_empty())
        }),
        Err(_) => false,
    }
}

/// A member restarted with an `--initial-cluster` naming a member the
/// cluster never had: before the registry was replicated state, that
/// member was merged into the restored snapshot's registry, listed by
/// `MemberList` and written into this member's next snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_another_initial_cluster_keeps_the_registry_the_log_made() {
    let fs = Disk::new();
    let (client, peer, stranger) = (bind().await, bind().await, bind().await);
    let alone = format!("a={}", url(&peer));
    let first = config("a", &client, &[&peer], &alone);
    let client_url_a = url(&client);
    let member_id = first.member_id;
    let stranger_url = url(&stranger);
    drop(stranger);
    let member = start(
        first,
        &fs,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    wait_published(member.client, &[member_id]).await;
    // Writes past a few snapshots (every 5 entries) and compactions.
    let mut written = 0;
    put_until(member.client, "some writes", || {
        written += 1;
        written > 12
    })
    .await;
    let before = member_list(member.client).await;
    assert_eq!(before.len(), 1, "{before:?}");
    stop(member).await;
    let first_records = registry_records(fs.engine());
    let peer_url_a = before[0].2[0].clone();

    // Restart on the same data with a config that adds a member "c". The
    // peer URL stays the one the member's id comes from; it listens
    // elsewhere (nothing dials a lone member). Its advertised client URL
    // stays too, so that its publish changes nothing.
    let (client, peer) = (bind().await, bind().await);
    let second = ServerConfig {
        listen_client_urls: vec![url(&client)],
        advertise_client_urls: vec![client_url_a],
        listen_peer_urls: vec![url(&peer)],
        initial_advertise_peer_urls: vec![peer_url_a.clone()],
        initial_cluster: Some(format!("a={peer_url_a},c={stranger_url}")),
        ..common::member_config("a", 5, 5)
    }
    .resolve()
    .expect("valid config");
    assert_eq!(second.member_id, member_id);
    assert_eq!(second.initial_members.len(), 2);
    let member = start(
        second,
        &fs,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client],
            peer: vec![peer],
        },
    );
    let mut written = 0;
    put_until(member.client, "more writes, past another snapshot", || {
        written += 1;
        written > 12
    })
    .await;
    let after = member_list(member.client).await;
    stop(member).await;
    assert_eq!(after, before, "MemberList after the restart");
    assert_eq!(
        registry_records(fs.engine()),
        first_records,
        "the registry the engine holds"
    );
}

/// Waits until the member at `client` lists every one of `ids` published.
async fn wait_published(client: SocketAddr, ids: &[u64]) {
    let started = Instant::now();
    while !all_published(client, ids).await {
        assert!(
            started.elapsed() < DEADLINE,
            "members {ids:x?} were not all published within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two members whose configurations list the same cluster differently (the
/// order of a member's two peer URLs): before the registry was replicated
/// state, each seeded it from its own configuration and their registries
/// (and snapshots) differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_configured_differently_hold_identical_registries() {
    let fs_a = Disk::new();
    let fs_b = Disk::new();
    let (client_a, peer_a1, peer_a2) = (bind().await, bind().await, bind().await);
    let (client_b, peer_b) = (bind().await, bind().await);
    let (a1, a2, b) = (url(&peer_a1), url(&peer_a2), url(&peer_b));
    let config_a = config(
        "a",
        &client_a,
        &[&peer_a1, &peer_a2],
        &format!("a={a1},a={a2},b={b}"),
    );
    let config_b = config("b", &client_b, &[&peer_b], &format!("b={b},a={a2},a={a1}"));
    assert_eq!(config_a.cluster_id, config_b.cluster_id, "one cluster");
    let ids = [config_a.member_id, config_b.member_id];
    let member_a = start(
        config_a,
        &fs_a,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client_a],
            peer: vec![peer_a1, peer_a2],
        },
    );
    let member_b = start(
        config_b,
        &fs_b,
        SEGMENT_BYTES,
        Listeners {
            client: vec![client_b],
            peer: vec![peer_b],
        },
    );
    wait_published(member_a.client, &ids).await;
    wait_published(member_b.client, &ids).await;
    let list_a = member_list(member_a.client).await;
    let list_b = member_list(member_b.client).await;
    stop(member_a).await;
    stop(member_b).await;
    assert_eq!(list_a, list_b, "MemberList on both members");
    let records_a = registry_records(fs_a.engine());
    assert_eq!(
        records_a,
        registry_records(fs_b.engine()),
        "the registry both engines hold"
    );
    let listed_a = list_a
        .iter()
        .find(|(id, _, _, _)| *id == ids[0])
        .expect("a listed");
    assert_eq!(
        listed_a.2,
        vec![a1, a2],
        "a's peer URLs as a advertises them"
    );
}

/// The state machine alone: the registry is what the bootstrap entries and
/// publishes make it, whatever a member's configuration says.
#[test]
fn the_registry_is_built_by_applying_the_bootstrap_entries_and_publishes() {
    let (_dir, state, mut machine) = state_machine();
    for (index, id) in [(1u64, 10u64), (2, 20), (3, 30)] {
        machine
            .apply_conf_change(&conf_change(index, ConfChangeKind::AddVoter, id))
            .expect("apply");
    }
    machine
        .apply(4, 1, publish(20, "b", &["http://b:2380"]))
        .expect("publish");
    machine
        .apply_conf_change(&conf_change(5, ConfChangeKind::Remove, 30))
        .expect("remove");
    // A late publish of the removed member does not bring it back.
    machine
        .apply(6, 1, publish(30, "c", &["http://c:2380"]))
        .expect("publish");
    let registry = state.read().expect("state").members.clone();
    assert_eq!(registry.keys().copied().collect::<Vec<_>>(), [10, 20]);
    assert_eq!(registry[&20].name, "b");
    assert_eq!(registry[&20].peer_urls, ["http://b:2380"]);
    assert!(registry[&10].name.is_empty(), "not published yet");
}

/// The applier stops at an entry that is not the applied index plus one
/// (a gap or a repeat), naming both indexes, and applies nothing of it.
#[test]
fn an_entry_out_of_order_stops_the_state_machine_with_both_indexes() {
    let (_dir, state, mut machine) = state_machine();
    machine
        .apply_conf_change(&conf_change(1, ConfChangeKind::AddVoter, 10))
        .expect("apply 1");
    machine.apply(2, 1, Bytes::new()).expect("apply 2");
    let gap = machine
        .apply(4, 1, publish(10, "a", &[]))
        .expect_err("a gap must stop the applier");
    assert!(gap.to_string().contains("entry 4"), "{gap}");
    assert!(gap.to_string().contains("after entry 2"), "{gap}");
    let repeat = machine
        .apply_conf_change(&conf_change(2, ConfChangeKind::AddVoter, 99))
        .expect_err("a repeat must stop the applier");
    assert!(repeat.to_string().contains("entry 2"), "{repeat}");
    let state = state.read().expect("state");
    assert_eq!(state.applied_index, 2);
    assert!(
        state.members[&10].name.is_empty(),
        "the gap entry was not applied"
    );
    assert!(
        !state.members.contains_key(&99),
        "the repeat was not applied"
    );
}

fn publish(member_id: u64, name: &str, peer_urls: &[&str]) -> Bytes {
    use prost::Message as _;
    use proto::internal::{internal_request, InternalRequest, MemberAttributes};
    Bytes::from(
        InternalRequest {
            request: Some(internal_request::Request::Publish(MemberAttributes {
                member_id,
                name: name.to_string(),
                client_urls: vec![format!("http://{name}:2379")],
                peer_urls: peer_urls.iter().map(|url| url.to_string()).collect(),
            })),
        }
        .encode_to_vec(),
    )
}
