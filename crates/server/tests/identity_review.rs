//! Adversarial review of the member identity record (review4). Each test
//! states what should hold; the failing ones show a defect.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use server::config::{member_id, InitialClusterState, ResolvedConfig, ServerConfig};
use server::identity;
use server::server::{open_member_on, ServerError};
use wal::crash_fs::CrashFs;

const CLUSTER: &str = "a=http://127.0.0.1:12380,b=http://127.0.0.1:22380,c=http://127.0.0.1:32380";

fn url_of(name: &str, cluster: &str) -> String {
    cluster
        .split(',')
        .find_map(|item| item.strip_prefix(&format!("{name}=")))
        .expect("listed")
        .to_string()
}

/// `name`'s flags, on the data dir `/data/<dir>`.
fn config(
    name: &str,
    dir: &str,
    cluster: &str,
    token: &str,
    state: InitialClusterState,
) -> ResolvedConfig {
    ServerConfig {
        name: name.to_string(),
        data_dir: Some(Path::new("/data").join(dir)),
        listen_client_urls: vec!["http://127.0.0.1:0".to_string()],
        listen_peer_urls: vec![url_of(name, cluster)],
        initial_cluster: Some(cluster.to_string()),
        initial_cluster_token: token.to_string(),
        initial_cluster_state: state,
        ..ServerConfig::default()
    }
    .resolve()
    .expect("valid config")
}

fn open(fs: &CrashFs, config: ResolvedConfig) -> Result<ResolvedConfig, ServerError> {
    open_member_on(Arc::new(fs.clone()), config, 1 << 20).map(|opened| opened.config)
}

/// Member a's data dir, restarted by mistake with `--name b` (b's flags,
/// same `--initial-cluster`): the record says this data dir is member a.
/// Either the start is refused (the recorded name-to-id map says `b` is
/// another id), or at least no two initial members share an id. Got: the
/// config hands `b` the id of `a` while `a` keeps it too, so the transport's
/// address for a's id is overwritten with b's URL (`set_peer` in
/// `server::run`) and b's real id has no address.
#[test]
fn a_data_dir_restarted_under_another_members_name_gives_two_members_one_id() {
    let fs = CrashFs::new();
    let first = open(
        &fs,
        config("a", "m", CLUSTER, "t", InitialClusterState::New),
    )
    .expect("first start");
    let a_id = first.member_id;
    // The crash before the first entries reach the WAL, as after any kill
    // right after start.
    let fs = fs.crash(None);
    let renamed = open(
        &fs,
        config("b", "m", CLUSTER, "t", InitialClusterState::New),
    );
    match renamed {
        Err(_) => {} // refusing is fine
        Ok(config) => {
            let ids: Vec<u64> = config.initial_members.iter().map(|m| m.id).collect();
            let unique: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(
                unique.len(),
                ids.len(),
                "member a's data dir started as `b`: member id {a_id:x}, initial members {:?}",
                config
                    .initial_members
                    .iter()
                    .map(|m| (m.name.clone(), format!("{:x}", m.id)))
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// `--initial-cluster-state=existing` on an empty data dir is refused
/// (JoinUnsupported) — but only after the identity record was written. A
/// start that refused must leave the data dir as it found it: the
/// operator's corrected restart (another token here) must derive its ids
/// from its own flags, as on any fresh data dir. Got: the refused start's
/// ids are pinned forever, and the corrected member runs under a cluster id
/// no peer shares.
#[test]
fn a_refused_join_leaves_no_identity_record_behind() {
    let fs = CrashFs::new();
    let refused = open(
        &fs,
        config("a", "j", CLUSTER, "typo", InitialClusterState::Existing),
    );
    assert!(
        matches!(refused, Err(ServerError::JoinUnsupported { .. })),
        "{:?}",
        refused.err()
    );
    let left = identity::read(&fs, Path::new("/data/j")).expect("readable");
    let corrected = config("a", "j", CLUSTER, "t", InitialClusterState::New);
    let opened = open(&fs, corrected.clone()).expect("corrected start");
    assert_eq!(
        (opened.member_id, opened.cluster_id),
        (corrected.member_id, corrected.cluster_id),
        "the corrected first real start runs under the refused start's ids \
         (record left by the refused start: {left:?})"
    );
}

/// A bare IPv6 `host:port` that `parse_url` accepts as [::1]:2380 (Rust's
/// `ToSocketAddrs` splits at the last colon) canonicalises to
/// `http://::1:2380`, not `http://[::1]:2380`: one address, two ids, and the
/// "listed twice" check lets two members share one address.
#[test]
fn a_bare_ipv6_address_is_the_same_member_as_its_bracketed_form() {
    let parsed = server::config::parse_url("initial-cluster", "::1:2380").expect("accepted");
    assert_eq!(parsed, "[::1]:2380".parse().expect("addr"));
    assert_eq!(
        member_id(&["::1:2380".to_string()], "t"),
        member_id(&["[::1]:2380".to_string()], "t"),
        "one address, two ids: {} vs {}",
        server::config::canonical_url("::1:2380"),
        server::config::canonical_url("[::1]:2380")
    );
    let twice = ServerConfig {
        name: "m1".to_string(),
        listen_peer_urls: vec!["http://[::1]:2380".to_string()],
        initial_cluster: Some("m1=http://[::1]:2380,m2=::1:2380".to_string()),
        ..ServerConfig::default()
    }
    .resolve();
    assert!(twice.is_err(), "two members at [::1]:2380 were accepted");
}

/// etcd 3.4 derives, for `--name default
/// --initial-advertise-peer-urls http://localhost:2380
/// --initial-cluster default=http://localhost:2380
/// --initial-cluster-token etcd-cluster`, member id 8e9e05c52164694d and
/// cluster id cdf818194e3a8c32 (sha1 of the URLs and token; sha1 of the
/// member ids; see etcdserver/api/membership/member.go and cluster.go
/// `genID`) — the very ids identity.rs's doc example shows. `etcdctl member
/// list` against raftkv with the same flags prints other ids (FNV-1a, and a
/// cluster id that hashes the token too).
#[test]
fn the_same_flags_derive_etcds_ids() {
    let resolved = ServerConfig {
        name: "default".to_string(),
        listen_peer_urls: vec!["http://localhost:2380".to_string()],
        initial_cluster: Some("default=http://localhost:2380".to_string()),
        initial_cluster_token: "etcd-cluster".to_string(),
        ..ServerConfig::default()
    }
    .resolve()
    .expect("valid");
    assert_eq!(
        (
            format!("{:x}", resolved.member_id),
            format!("{:x}", resolved.cluster_id)
        ),
        (
            "8e9e05c52164694d".to_string(),
            "cdf818194e3a8c32".to_string()
        )
    );
}

/// A crash right after the record is written and before the bootstrap
/// entries reach the WAL: the restart with the same flags runs under the
/// same ids and bootstraps (this one should hold).
#[test]
fn a_crash_between_the_record_and_the_first_entries_restarts_with_the_same_ids() {
    let fs = CrashFs::new();
    let flags = config("a", "c", CLUSTER, "t", InitialClusterState::New);
    let first = open(&fs, flags.clone()).expect("first");
    for seed in [None, Some(1), Some(7)] {
        let after = fs.crash(seed);
        let again = open(&after, flags.clone()).expect("restart after the crash");
        assert_eq!(again.member_id, first.member_id);
        assert_eq!(again.cluster_id, first.cluster_id);
        assert_eq!(again.initial_members, first.initial_members);
    }
}

/// The first start's fsyncs fail at each step of writing the record (and
/// after), then the power is cut with torn unsynced writes: the next start
/// with the same flags must start (no panic, no "damaged" record) under the
/// flags' ids.
#[test]
fn a_crash_mid_record_leaves_no_record_or_the_whole_one() {
    let flags = config("a", "t", CLUSTER, "t", InitialClusterState::New);
    for failing_after in 0..6 {
        for seed in [None, Some(3), Some(11)] {
            let fs = CrashFs::new();
            fs.fail_syncs_after(failing_after);
            let _ = open(&fs, flags.clone());
            let after = fs.crash(seed);
            after.fail_syncs_after(1 << 40); // the new boot's disk works
            let again = open(&after, flags.clone()).unwrap_or_else(|error| {
                panic!("sync failure after {failing_after}, seed {seed:?}: {error}")
            });
            assert_eq!(
                (again.member_id, again.cluster_id),
                (flags.member_id, flags.cluster_id)
            );
        }
    }
}
