//! The real `etcdctl` (3.4, Debian package `etcd-client`) against the
//! generated servers: the strongest evidence that our .proto files put the
//! same bytes on the wire as etcd's own.
//!
//! Needs `etcdctl` on PATH. Without it the test says so loudly and passes,
//! unless `RAFTKV_REQUIRE_TOOLS=1` or `CI=true`, which make a missing tool a
//! failure (`.ci/run` sets the first after installing the package).

mod support;

use std::io::Write as _;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use support::TestServer;

/// Where `etcdctl` is, or `None` (after saying so) when the test may skip.
fn find_etcdctl() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("etcdctl"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        let required = std::env::var("RAFTKV_REQUIRE_TOOLS").is_ok_and(|value| value == "1")
            || std::env::var("CI").is_ok_and(|value| matches!(value.trim(), "true" | "1"));
        assert!(
            !required,
            "etcdctl not found on PATH and RAFTKV_REQUIRE_TOOLS=1 or CI=true (install Debian's \
             etcd-client)"
        );
        // Straight to stderr, past the test harness's output capture, so the
        // skip shows in a normal `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: etcdctl not found on PATH; install Debian's etcd-client to run \
             the etcdctl wire tests ***\n"
        );
    }
    found
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `etcdctl --endpoints=<endpoint> <args>`.
async fn etcdctl(etcdctl: &std::path::Path, endpoint: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(etcdctl);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=5s")
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("etcdctl {args:?} timed out"))
        .expect("etcdctl runs");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn assert_ok(args: &str, output: &Output) {
    assert!(
        output.success,
        "etcdctl {args} failed\nstdout: {}\nstderr: {}",
        output.stdout, output.stderr
    );
}

#[tokio::test]
async fn etcdctl_speaks_to_the_generated_servers() {
    let Some(etcdctl_path) = find_etcdctl() else {
        return;
    };
    let server = TestServer::start().await;
    // host:port, no scheme: see `endpoint_with_scheme_breaks_per_endpoint_calls`.
    let endpoint = server.address.to_string();
    let run = |args: &'static [&'static str]| etcdctl(&etcdctl_path, &endpoint, args);

    // KV.Range; the fake echoes the key with value "value".
    let get = run(&["get", "health", "--print-value-only"]).await;
    assert_ok("get", &get);
    assert_eq!(get.stdout.trim(), "value");

    // The header's fields decode where etcdctl expects them
    // (cluster 0xc1 = 193, member 7, revision 42, raft_term 3).
    let get_json = run(&["get", "health", "-w", "json"]).await;
    assert_ok("get -w json", &get_json);
    for fragment in [
        r#""cluster_id":193"#,
        r#""member_id":7"#,
        r#""revision":42"#,
        r#""raft_term":3"#,
        r#""key":"aGVhbHRo""#, // base64("health")
        r#""count":1"#,
    ] {
        assert!(
            get_json.stdout.contains(fragment),
            "{fragment} missing from {}",
            get_json.stdout
        );
    }

    // Maintenance.Status.
    let status = run(&["endpoint", "status", "-w", "json"]).await;
    assert_ok("endpoint status", &status);
    for fragment in [
        r#""version":"3.4.0""#,
        r#""leader":7"#,
        r#""raftIndex":100"#,
        r#""raftAppliedIndex":99"#,
    ] {
        assert!(
            status.stdout.contains(fragment),
            "{fragment} missing from {}",
            status.stdout
        );
    }

    // Cluster.MemberList.
    let members = run(&["member", "list"]).await;
    assert_ok("member list", &members);
    assert_eq!(
        members.stdout.trim(),
        "7, started, fake, http://127.0.0.1:2380, http://127.0.0.1:2379, false"
    );

    // Lease.LeaseKeepAlive (bidirectional stream); lease ids are hex.
    let keep_alive = run(&["lease", "keep-alive", "--once", "2a"]).await;
    assert_ok("lease keep-alive", &keep_alive);
    assert!(
        keep_alive
            .stdout
            .contains("lease 000000000000002a keepalived with TTL(10)"),
        "{}",
        keep_alive.stdout
    );

    // Watch.Watch (bidirectional stream): etcdctl prints each event as
    // type, key, value lines and never exits by itself.
    let mut watch = tokio::process::Command::new(&etcdctl_path)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["watch", "k"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("etcdctl runs");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("etcdctl watch printed an event within 30 s")
            .unwrap();
        printed.push(line.expect("etcdctl watch still running"));
    }
    assert_eq!(printed, ["PUT", "k", "v1"]);
    watch.kill().await.unwrap();

    // An error status reaches etcdctl with its message.
    let put = run(&["put", "k", "v"]).await;
    assert!(!put.success, "put should fail: {}", put.stdout);
    assert!(put.stderr.contains("not under test"), "{}", put.stderr);

    server.stop().await;
}

/// Calls through clientv3's balanced connection work with an
/// `http://host:port` endpoint, but calls that etcdctl 3.4 dials per endpoint
/// (`endpoint status`, `move-leader`, `--cluster` runs, which use the
/// members' advertised client URLs) use the gRPC target
/// `passthrough:///http://host:port`. grpc-go then sends the HTTP/2
/// `:authority` "http://host:port", which etcd's Go server accepts and the
/// `h2` crate under tonic rejects as malformed (RST_STREAM PROTOCOL_ERROR,
/// before any handler runs). Not a .proto problem: a transport one, for the
/// server to solve. Run with `--ignored` to see it.
#[tokio::test]
#[ignore = "known transport incompatibility: h2 rejects a scheme in :authority"]
async fn endpoint_with_scheme_breaks_per_endpoint_calls() {
    let Some(etcdctl_path) = find_etcdctl() else {
        return;
    };
    let server = TestServer::start().await;
    let endpoint = format!("http://{}", server.address);

    let get = etcdctl(&etcdctl_path, &endpoint, &["get", "health"]).await;
    assert_ok("get", &get);

    let status = etcdctl(&etcdctl_path, &endpoint, &["endpoint", "status"]).await;
    assert_ok("endpoint status", &status);

    server.stop().await;
}
