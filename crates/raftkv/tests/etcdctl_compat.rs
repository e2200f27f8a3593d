//! etcdctl compatibility: real `raftkv server` processes driven by the real
//! `etcdctl` 3.4 (Debian package `etcd-client`). Each test here checks what
//! etcdctl prints or does against raftkv; raftkv's own behaviour (durability,
//! failover, catch-up) is tested through raftkv's client in `cluster.rs`.
//!
//! Without `etcdctl` on PATH these tests skip loudly, unless
//! `RAFTKV_REQUIRE_TOOLS=1` (set by `.ci/run`) or `CI=true`, where they fail.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{raftkv_cli, TestCluster};

/// The real etcdctl, run against a [`TestCluster`].
struct Etcdctl {
    path: PathBuf,
}

impl Etcdctl {
    /// `None` (after saying so loudly) when the test may skip.
    fn find(test: &str) -> Option<Etcdctl> {
        common::require_tool("etcdctl", "etcd-client", test).map(|path| Etcdctl { path })
    }

    fn at(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(&self.path);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn etcdctl");
        if let Some(input) = stdin {
            if let Some(mut pipe) = child.stdin.take() {
                pipe.write_all(input.as_bytes())
                    .expect("write etcdctl stdin");
            }
        }
        child.wait_with_output().expect("etcdctl output")
    }

    fn output(&self, cluster: &TestCluster, args: &[&str]) -> Output {
        self.at(&cluster.endpoints(), args, None)
    }

    /// stdout of a command that must succeed.
    fn run(&self, cluster: &TestCluster, args: &[&str]) -> String {
        let output = self.output(cluster, args);
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The error line etcdctl prints for a command that must fail.
    fn fail(&self, cluster: &TestCluster, args: &[&str]) -> String {
        let output = self.output(cluster, args);
        assert!(
            !output.status.success(),
            "etcdctl {args:?} should have failed"
        );
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .find(|line| line.starts_with("Error:"))
            .unwrap_or_default()
            .to_string()
    }

    fn json(&self, cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["-w", "json"]);
        serde_json::from_str(&self.run(cluster, &args)).expect("etcdctl printed JSON")
    }
}

#[test]
fn etcdctl_commands_against_a_three_member_cluster() {
    let Some(etcdctl) = Etcdctl::find("etcdctl_commands_against_a_three_member_cluster") else {
        return;
    };
    let cluster = TestCluster::start(3, "commands", &[]);
    let run = |args: &[&str]| etcdctl.run(&cluster, args);
    assert_eq!(run(&["put", "foo1", "bar1"]), "OK\n");
    run(&["put", "foo2", "bar2"]);
    run(&["put", "foo3", "bar3"]);
    assert_eq!(run(&["get", "foo1"]), "foo1\nbar1\n");
    assert_eq!(
        run(&["get", "foo", "--prefix", "--keys-only"]),
        "foo1\n\nfoo2\n\nfoo3\n\n"
    );
    assert_eq!(
        run(&["get", "foo", "--prefix", "--limit", "2"]),
        "foo1\nbar1\nfoo2\nbar2\n"
    );

    let json = etcdctl.json(&cluster, &["get", "foo", "--prefix"]);
    assert_eq!(json["count"], 3);
    let revision = json["header"]["revision"].as_i64().expect("revision");
    let first_put = json["kvs"][0]["mod_revision"]
        .as_i64()
        .expect("mod_revision");
    run(&["put", "foo1", "changed"]);
    assert_eq!(
        run(&["get", "foo1", &format!("--rev={first_put}")]),
        "foo1\nbar1\n",
        "a historical read sees the old value"
    );
    assert_eq!(run(&["get", "foo1", "--consistency=s"]), "foo1\nchanged\n");

    assert_eq!(run(&["del", "foo", "--prefix"]), "3\n");
    assert_eq!(run(&["get", "foo", "--prefix"]), "");

    run(&["put", "x", "1"]);
    let txn = etcdctl.at(
        &cluster.endpoints(),
        &["txn"],
        Some("value(\"x\") = \"1\"\n\nput y 2\n\nput z 3\n\n"),
    );
    assert_eq!(String::from_utf8_lossy(&txn.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(run(&["get", "y"]), "y\n2\n");

    assert_eq!(
        run(&["compaction", &revision.to_string()]),
        format!("compacted revision {revision}\n")
    );

    let members = etcdctl.json(&cluster, &["member", "list"]);
    let members = members["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for member in members {
        assert!(member["name"]
            .as_str()
            .is_some_and(|name| name.starts_with('m')));
        assert_eq!(member["clientURLs"].as_array().map(Vec::len), Some(1));
    }

    let statuses = etcdctl.json(&cluster, &["endpoint", "status"]);
    let statuses = statuses.as_array().expect("one status per endpoint");
    assert_eq!(statuses.len(), 3);
    let leaders: Vec<u64> = statuses
        .iter()
        .filter_map(|status| status["Status"]["leader"].as_u64())
        .collect();
    assert!(
        leaders.windows(2).all(|pair| pair[0] == pair[1]),
        "one leader: {leaders:?}"
    );
    let terms: Vec<u64> = statuses
        .iter()
        .filter_map(|status| status["Status"]["raft_term"].as_u64())
        .collect();
    assert!(
        terms.windows(2).all(|pair| pair[0] == pair[1]),
        "one term: {terms:?}"
    );

    // Every member applied the same history: their checksums agree, as
    // etcdctl prints them.
    cluster.wait_until(
        Duration::from_secs(10),
        "every member reports the same hashkv",
        |cluster| {
            let hashes = etcdctl.json(cluster, &["endpoint", "hashkv"]);
            let hashes: Vec<u64> = hashes
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .filter_map(|entry| entry["HashKV"]["hash"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            hashes.len() == 3 && hashes.windows(2).all(|pair| pair[0] == pair[1])
        },
    );

    let health = etcdctl.output(&cluster, &["endpoint", "health"]);
    assert!(health.status.success());
    assert_eq!(
        String::from_utf8_lossy(&health.stderr)
            .lines()
            .filter(|line| line.contains("is healthy"))
            .count(),
        3
    );
}

/// etcdctl prints etcd's error texts for raftkv's refusals. (The same
/// refusals, checked through raftkv's client, are in `cluster.rs`.)
#[test]
fn errors_carry_etcds_texts() {
    let Some(etcdctl) = Etcdctl::find("errors_carry_etcds_texts") else {
        return;
    };
    let cluster = TestCluster::start(
        3,
        "errors",
        &[
            "--max-request-bytes",
            "1024",
            "--quota-backend-bytes",
            "6000",
        ],
    );
    let run = |args: &[&str]| etcdctl.run(&cluster, args);
    let fail = |args: &[&str]| etcdctl.fail(&cluster, args);
    assert_eq!(
        fail(&["put", "", "v"]),
        "Error: etcdserver: key is not provided"
    );
    run(&["put", "k", "1"]);
    run(&["put", "k", "2"]);
    assert_eq!(
        fail(&["get", "k", "--rev=999"]),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
    let revision = etcdctl.json(&cluster, &["get", "k"])["header"]["revision"]
        .as_i64()
        .expect("revision");
    run(&["compaction", &revision.to_string()]);
    assert_eq!(
        fail(&["get", "k", &format!("--rev={}", revision - 1)]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        fail(&["compaction", &revision.to_string()]),
        "Error: etcdserver: mvcc: required revision has been compacted"
    );
    let duplicate = etcdctl.at(
        &cluster.endpoints(),
        &["txn"],
        Some("\nput a 1\nput a 2\n\n\n"),
    );
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr)
        .contains("etcdserver: duplicate key given in txn request"));
    let big = "v".repeat(2048);
    assert_eq!(
        fail(&["put", "big", &big]),
        "Error: etcdserver: request is too large"
    );
    // The space quota: writes that add data are refused, deletes are not.
    let value = "q".repeat(900);
    let refused = (0..20).find_map(|n| {
        let output = etcdctl.output(&cluster, &["put", &format!("quota-{n:02}"), &value]);
        (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
    });
    let refused = refused.expect("the quota stops writes within 20 puts of 900 bytes");
    assert!(
        refused.contains("Error: etcdserver: mvcc: database space exceeded"),
        "{refused}"
    );
    run(&["del", "quota-", "--prefix"]);
}

/// The raftkv CLI prints byte for byte what etcdctl prints. (Its own output
/// formats are checked without etcdctl in `cluster.rs`.)
#[test]
fn the_raftkv_cli_prints_what_etcdctl_prints() {
    let Some(etcdctl) = Etcdctl::find("the_raftkv_cli_prints_what_etcdctl_prints") else {
        return;
    };
    let cluster = TestCluster::start(3, "cli", &[]);
    // Writes run twice (ours, then etcdctl's), so each side gets its own
    // arguments where a write must find the same state.
    let pair =
        |args: &[&str], stdin: Option<&str>, their_args: &[&str], their_stdin: Option<&str>| {
            let ours = raftkv_cli(&cluster, args, stdin);
            let theirs = etcdctl.at(&cluster.endpoints(), their_args, their_stdin);
            assert_eq!(
                ours.status.success(),
                theirs.status.success(),
                "exit status of {args:?}: {}",
                String::from_utf8_lossy(&ours.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&theirs.stdout),
                "stdout of {args:?}"
            );
            ours
        };
    let same = |args: &[&str], stdin: Option<&str>| pair(args, stdin, args, stdin);
    same(&["put", "cli/a", "1"], None);
    same(&["put", "cli/b", "2"], None);
    same(&["put", "cli/c", "3"], None);
    same(&["get", "cli/a"], None);
    same(&["get", "cli/", "--prefix"], None);
    same(&["get", "cli/", "--prefix", "--limit=2"], None);
    same(&["get", "cli/", "--prefix", "--keys-only"], None);
    same(&["get", "cli/b", "--from-key"], None);
    same(&["get", "cli/a", "--consistency=s"], None);
    same(&["get", "cli/a", "--rev=2"], None);
    same(&["put", "cli/d", "4"], None);
    pair(&["del", "cli/c"], None, &["del", "cli/d"], None);
    pair(
        &["txn"],
        Some("value(\"cli/a\") = \"1\"\n\nput cli/a 10\nget cli/b\n\nput cli/a 20\n\n"),
        &["txn"],
        Some("value(\"cli/a\") = \"10\"\n\nput cli/a 11\nget cli/b\n\nput cli/a 20\n\n"),
    );
    same(&["get", "cli/a"], None);
    // JSON: the same key-values (headers name the answering member).
    let ours: serde_json::Value = serde_json::from_slice(
        &raftkv_cli(&cluster, &["get", "cli/", "--prefix", "-w", "json"], None).stdout,
    )
    .expect("raftkv printed JSON");
    let theirs = etcdctl.json(&cluster, &["get", "cli/", "--prefix"]);
    assert_eq!(ours["kvs"], theirs["kvs"]);
    assert_eq!(ours["count"], theirs["count"]);
    // Errors: etcd's text on stderr, non-zero exit.
    let failed = same(&["get", "cli/a", "--rev=999"], None);
    assert_eq!(
        String::from_utf8_lossy(&failed.stderr).trim(),
        "Error: etcdserver: mvcc: required revision is a future revision"
    );
}
