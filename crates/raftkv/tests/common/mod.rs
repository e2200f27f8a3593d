//! Real `raftkv server` processes on loopback, for the process tests.
//!
//! Every member listens on 127.0.0.1 with ports picked free at start; every
//! process is killed and reaped and its data removed when the cluster is
//! dropped, pass or fail. The cluster is driven through raftkv's own client
//! (`raftkv-client`): readiness, writes, reads, leader discovery and hash
//! comparison need no program the workspace does not build.
//!
//! A [`TestCluster`] can also run etcd itself ([`TestCluster::start_etcd`]),
//! for numbers to compare against raftkv's in one run. Each member's stderr
//! goes to a log file under the cluster's folder (never a pipe: a pipe
//! nobody reads fills up under a long load and blocks the member).
//!
//! Programs the workspace does not build (`etcdctl`, `etcd`) are found with
//! [`require_tool`]: when one is missing the test skips loudly, unless
//! `RAFTKV_REQUIRE_TOOLS=1` or `CI=true`, where it fails.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read as _, Seek as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Client, ClientConfig, ClientError};
use proto::etcdserverpb as pb;
use proto::mvccpb::KeyValue;

/// Whether a missing tool must fail the test instead of skipping it.
pub fn tools_required() -> bool {
    let set = |name: &str, values: &[&str]| {
        std::env::var(name).is_ok_and(|value| values.contains(&value.trim()))
    };
    set("RAFTKV_REQUIRE_TOOLS", &["1"]) || set("CI", &["true", "1"])
}

/// The path of `program` on PATH. When it is missing: a panic if tools are
/// required ([`tools_required`]), else a loud notice on stderr and `None`
/// (the caller returns: the test is skipped).
pub fn require_tool(program: &str, package: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            !tools_required(),
            "{test}: `{program}` is required (RAFTKV_REQUIRE_TOOLS=1 or CI=true) but not on \
             PATH (apt-get install {package})"
        );
        // Straight to stderr, past the harness's capture, so the skip shows
        // in a plain `cargo test` run.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPING {test}: `{program}` is not on PATH (apt-get install {package}); \
             RAFTKV_REQUIRE_TOOLS=1 or CI=true makes this a failure ***\n"
        );
    }
    found
}

/// A run's seed: `var` from the environment when set (a replay), else one
/// from the clock. Printed past the capture, with the command that replays
/// it.
pub fn seed_from_env(var: &str, test_file: &str, test: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be an unsigned integer, got {text:?}")),
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    let _ = writeln!(
        std::io::stderr(),
        "\n*** {test}: seed {seed} (replay: {var}={seed} cargo test -p raftkv --test \
         {test_file} {test}) ***\n"
    );
    seed
}

/// A number from the environment, or `default` when unset.
pub fn env_number(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be an unsigned integer, got {text:?}")),
        Err(_) => default,
    }
}

/// Whether `var` is set to `1` (or `true`).
pub fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|value| matches!(value.trim(), "1" | "true"))
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `condition` every 50 ms until it holds; panics naming `what` after
/// `within`.
pub fn wait_for(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for the client's async API inside a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The end of the range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

/// A range over every key starting with `prefix`.
pub fn prefix_range(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: prefix_end(prefix.as_bytes()),
        ..pb::RangeRequest::default()
    }
}

/// The server's own answer inside a client error (through "outcome
/// unknown" and "timed out" wrappers): its gRPC code and etcd's text.
pub fn server_answer(error: &ClientError) -> Option<(tonic::Code, &str)> {
    match error {
        ClientError::Server { code, message, .. } => Some((*code, message.as_str())),
        ClientError::Unknown { source } => server_answer(source),
        ClientError::Timeout { last: Some(last) } => server_answer(last),
        _ => None,
    }
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    /// Where its stderr goes, every run appended.
    pub log_path: PathBuf,
    /// The log file's length when the current run started.
    log_start: u64,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// Which server a [`TestCluster`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// `raftkv server`, the binary under test.
    Raftkv,
    /// etcd, at this path (a control: same flags, same load).
    Etcd(PathBuf),
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most that was ever resident.
    pub peak: u64,
    /// `RssAnon`: the heap's part of `rss`.
    pub anon: u64,
    /// `RssFile`: mapped files' part of `rss` (etcd's bbolt maps its
    /// database; raftkv maps nothing big).
    pub file: u64,
}

impl Memory {
    /// The process's memory now; `None` when it is gone.
    pub fn of(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(name))?;
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib * 1024)
        };
        Some(Memory {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
            anon: field("RssAnon:").unwrap_or(0),
            file: field("RssFile:").unwrap_or(0),
        })
    }
}

/// A member's `HashKV` answer at one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashAt {
    pub hash: u32,
    pub compact_revision: i64,
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A cluster of real processes; dropping it kills them and removes the data.
pub struct TestCluster {
    pub members: Vec<Member>,
    pub root: PathBuf,
    pub server: ServerKind,
    /// Flags for every member's next start (a test may change them between
    /// restarts).
    pub extra_args: Vec<String>,
    /// RUST_LOG for raftkv members (their stderr goes to `log_path`).
    pub log_filter: String,
    runtime: tokio::runtime::Runtime,
}

impl TestCluster {
    /// Starts `size` members and waits until the cluster answers a write.
    pub fn start(size: usize, test_name: &str, extra_args: &[&str]) -> TestCluster {
        TestCluster::start_server(ServerKind::Raftkv, size, test_name, extra_args)
    }

    /// Starts `size` etcd members (the program at `etcd`) with the same
    /// harness: same ports, timings, readiness and cleanup.
    pub fn start_etcd(
        etcd: &Path,
        size: usize,
        test_name: &str,
        extra_args: &[&str],
    ) -> TestCluster {
        TestCluster::start_server(
            ServerKind::Etcd(etcd.to_path_buf()),
            size,
            test_name,
            extra_args,
        )
    }

    pub fn start_server(
        server: ServerKind,
        size: usize,
        test_name: &str,
        extra_args: &[&str],
    ) -> TestCluster {
        let root =
            std::env::temp_dir().join(format!("raftkv-it-{test_name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let members = (0..size)
            .map(|position| Member {
                name: format!("m{}", position + 1),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: root.join(format!("m{}", position + 1)),
                child: None,
                log_path: root.join(format!("m{}.log", position + 1)),
                log_start: 0,
            })
            .collect();
        std::fs::create_dir_all(&root).expect("create the cluster's folder");
        let mut cluster = TestCluster {
            members,
            root,
            server,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            log_filter: "warn,server::server=info".to_string(),
            runtime: runtime(),
        };
        for position in 0..size {
            cluster.start_member(position);
        }
        cluster.wait_until(
            Duration::from_secs(20),
            "the cluster answers writes",
            |cluster| cluster.put_ok("ready", "1"),
        );
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_member(&mut self, position: usize) {
        let initial_cluster = self.initial_cluster();
        let member = &self.members[position];
        // Fast timings keep tests short, unless the test chose its own.
        let timings: &[&str] = if self
            .extra_args
            .iter()
            .any(|arg| arg == "--heartbeat-interval")
        {
            &[]
        } else {
            &["--heartbeat-interval", "50", "--election-timeout", "500"]
        };
        let mut command = match &self.server {
            ServerKind::Raftkv => {
                let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv"));
                command.arg("server").env("RUST_LOG", &self.log_filter);
                command
            }
            ServerKind::Etcd(binary) => {
                let mut command = Command::new(binary);
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("ETCD") {
                        command.env_remove(name);
                    }
                }
                command
                    .args([
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{}", member.client_port),
                    ])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{}", member.peer_port),
                    ])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-outputs", "stderr"])
                    .args(["--log-level", "warn"]);
                command
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .unwrap_or_else(|error| panic!("open {}: {error}", member.log_path.display()));
        let log_start = log.metadata().map(|meta| meta.len()).unwrap_or(0);
        let child = command
            .args(["--name", &member.name])
            .args(["--data-dir", &member.data_dir.display().to_string()])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", member.client_port),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", member.peer_port),
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", "raftkv-it"])
            .args(timings)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a server");
        self.members[position].log_start = log_start;
        self.members[position].child = Some(child);
    }

    pub fn is_running(&self, position: usize) -> bool {
        self.members[position].child.is_some()
    }

    /// The process id of member `position`, when it runs.
    pub fn pid(&self, position: usize) -> Option<u32> {
        self.members[position].child.as_ref().map(Child::id)
    }

    /// Member `position`'s resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self, position: usize) -> u64 {
        self.memory(position).rss
    }

    /// Member `position`'s memory (current, peak, heap and file parts).
    pub fn memory(&self, position: usize) -> Memory {
        let pid = self
            .pid(position)
            .unwrap_or_else(|| panic!("member {position} is not running"));
        Memory::of(pid).unwrap_or_else(|| panic!("no /proc/{pid}/status for member {position}"))
    }

    /// What member `position` logged since its current (or last) start.
    pub fn log_of_run(&self, position: usize) -> String {
        let member = &self.members[position];
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&member.log_path) {
            if file
                .seek(std::io::SeekFrom::Start(member.log_start))
                .is_ok()
            {
                let mut bytes = Vec::new();
                let _ = file.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        text
    }

    /// A handle of the cluster's runtime, to spawn client tasks that run
    /// while the test kills and restarts members.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// The running members' client endpoints, comma-separated (etcdctl's
    /// and the raftkv CLI's `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.running_endpoints().join(",")
    }

    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|member| member.child.is_some())
            .map(Member::endpoint)
            .collect()
    }

    /// Runs a future on the cluster's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A client of every running member, failing over between them.
    pub fn client(&self) -> Client {
        let mut config = ClientConfig::new(self.running_endpoints());
        config.request_timeout = Duration::from_secs(10);
        Client::new(config).expect("client of the running members")
    }

    /// A client of one member only (no failover): for what that member
    /// itself holds or says.
    pub fn member_client(&self, position: usize) -> Client {
        let mut config = ClientConfig::new([self.members[position].endpoint()]);
        config.request_timeout = Duration::from_secs(2);
        Client::new(config).expect("client of one member")
    }

    /// Puts through the running members; whether it was acknowledged.
    pub fn put_ok(&self, key: &str, value: &str) -> bool {
        let client = self.client();
        self.block_on(client.put(key.to_string(), value.to_string()))
            .is_ok()
    }

    /// A put that must be acknowledged.
    pub fn put(&self, key: &str, value: &str) -> pb::PutResponse {
        let client = self.client();
        self.block_on(client.put(key.to_string(), value.to_string()))
            .unwrap_or_else(|error| panic!("put {key}={value}: {error}"))
    }

    /// A linearizable range that must succeed, through the running members.
    pub fn range(&self, request: pb::RangeRequest) -> pb::RangeResponse {
        let client = self.client();
        self.block_on(client.range(request.clone()))
            .unwrap_or_else(|error| panic!("range {request:?}: {error}"))
    }

    /// `key`'s value read serializably at member `position` (what that
    /// member has applied), or `None` when absent or it does not answer.
    pub fn serializable_value(&self, position: usize, key: &str) -> Option<Bytes> {
        let client = self.member_client(position);
        let request = pb::RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            serializable: true,
            ..pb::RangeRequest::default()
        };
        self.block_on(client.range(request))
            .ok()
            .and_then(|response| response.kvs.into_iter().next())
            .map(|kv| kv.value)
    }

    /// How many keys start with `prefix`, read serializably at member
    /// `position`; `None` when it does not answer.
    pub fn serializable_count(&self, position: usize, prefix: &str) -> Option<i64> {
        let client = self.member_client(position);
        let request = pb::RangeRequest {
            limit: 1,
            serializable: true,
            ..prefix_range(prefix)
        };
        self.block_on(client.range(request))
            .ok()
            .map(|response| response.count)
    }

    /// `Maintenance.Status` of each running member, by position.
    pub fn statuses(&self) -> Vec<(usize, Result<pb::StatusResponse, ClientError>)> {
        (0..self.members.len())
            .filter(|&position| self.is_running(position))
            .map(|position| {
                let client = self.member_client(position);
                (position, self.block_on(client.status(0)))
            })
            .collect()
    }

    /// Member `position`'s id, from its own status.
    pub fn member_id(&self, position: usize) -> u64 {
        let client = self.member_client(position);
        let status = self
            .block_on(client.status(0))
            .unwrap_or_else(|error| panic!("status of member {position}: {error}"));
        status.header.expect("a response header").member_id
    }

    /// The position of the leader, when every running member answers its
    /// status and all name the same running member as leader.
    pub fn agreed_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for (position, status) in self.statuses() {
            let status = status.ok()?;
            ids.push((position, status.header?.member_id));
            leaders.push(status.leader);
        }
        let leader = *leaders.first()?;
        if leader == 0 || leaders.iter().any(|other| *other != leader) {
            return None;
        }
        ids.iter()
            .find(|(_, id)| *id == leader)
            .map(|(position, _)| *position)
    }

    /// The leader's position, waiting (up to 10 s) until the running
    /// members agree on one.
    pub fn leader(&self) -> usize {
        let mut found = None;
        self.wait_until(
            Duration::from_secs(10),
            "the running members agree on a leader",
            |cluster| {
                found = cluster.agreed_leader();
                found.is_some()
            },
        );
        found.expect("a leader")
    }

    /// `HashKV` (current revision) of each running member; `None` when one
    /// does not answer.
    pub fn hashes(&self) -> Option<Vec<u32>> {
        (0..self.members.len())
            .filter(|&position| self.is_running(position))
            .map(|position| {
                let client = self.member_client(position);
                self.block_on(client.hash_kv(0, 0))
                    .ok()
                    .map(|response| response.hash)
            })
            .collect()
    }

    /// Waits until every running member reports the same `HashKV`.
    pub fn wait_for_equal_hashes(&self, within: Duration) {
        let running = self.running_endpoints().len();
        let mut last = None;
        self.wait_until(within, "every member reports the same hashkv", |cluster| {
            last = cluster.hashes();
            last.as_ref().is_some_and(|hashes| {
                hashes.len() == running && hashes.windows(2).all(|pair| pair[0] == pair[1])
            })
        });
    }

    /// `HashKV` at `revision` of each running member, by position: the
    /// hash and compact revision, or the member's error (a member that has
    /// not applied `revision` yet answers "future revision").
    pub fn hashes_at(&self, revision: i64) -> Vec<(usize, Result<HashAt, ClientError>)> {
        (0..self.members.len())
            .filter(|&position| self.is_running(position))
            .map(|position| {
                let client = self.member_client(position);
                let answer = self
                    .block_on(client.hash_kv(0, revision))
                    .map(|response| HashAt {
                        hash: response.hash,
                        compact_revision: response.compact_revision,
                    });
                (position, answer)
            })
            .collect()
    }

    /// Waits until every running member answers `HashKV` at `revision`
    /// (each has applied it), then asserts that they all agree: members
    /// that applied the same log hold the same history up to `revision`.
    pub fn assert_equal_hashes_at(&self, revision: i64, within: Duration) {
        let mut last = Vec::new();
        self.wait_until(
            within,
            &format!("every running member answers hashkv at revision {revision}"),
            |cluster| {
                last = cluster.hashes_at(revision);
                last.iter().all(|(_, answer)| answer.is_ok())
            },
        );
        let answers: Vec<(usize, HashAt)> = last
            .into_iter()
            .map(|(position, answer)| (position, answer.expect("checked above")))
            .collect();
        assert!(
            answers.windows(2).all(|pair| pair[0].1 == pair[1].1),
            "members disagree on hashkv at revision {revision} (by position): {answers:?}"
        );
    }

    /// Every key under `prefix` with its value, in key order: linearizable
    /// range reads of at most `page` keys each, all at the revision of the
    /// first (one consistent view however many pages). Returns the keys and
    /// that revision.
    pub fn range_all(&self, prefix: &str, page: i64) -> (Vec<KeyValue>, i64) {
        let client = self.client();
        let end = prefix_end(prefix.as_bytes());
        let mut start = Bytes::copy_from_slice(prefix.as_bytes());
        let mut revision = 0;
        let mut all = Vec::new();
        loop {
            let request = pb::RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                limit: page,
                revision,
                ..pb::RangeRequest::default()
            };
            let response = self
                .block_on(client.range(request))
                .unwrap_or_else(|error| panic!("range from {start:?} under {prefix:?}: {error}"));
            if revision == 0 {
                revision = response
                    .header
                    .as_ref()
                    .expect("a response header")
                    .revision;
            }
            let more = response.more;
            let Some(last) = response.kvs.last() else {
                break;
            };
            // The next page starts just after the last key of this one.
            let mut next = last.key.to_vec();
            next.push(0);
            start = Bytes::from(next);
            all.extend(response.kvs);
            if !more {
                break;
            }
        }
        (all, revision)
    }

    /// Waits until a linearizable read through the running members
    /// succeeds; returns how long that took from `since` (e.g. when the
    /// members were started).
    pub fn first_read_after(&self, since: Instant, within: Duration) -> Duration {
        let mut config = ClientConfig::new(self.running_endpoints());
        config.request_timeout = Duration::from_millis(500);
        let client = Client::new(config).expect("client of the running members");
        let mut served = None;
        self.wait_until(within, "a linearizable read succeeds", |cluster| {
            let read = cluster.block_on(client.range(pb::RangeRequest {
                key: Bytes::from_static(b"first-read"),
                ..pb::RangeRequest::default()
            }));
            if read.is_ok() {
                served = Some(since.elapsed());
            }
            read.is_ok()
        });
        served.expect("served")
    }

    pub fn wait_until(
        &self,
        within: Duration,
        what: &str,
        mut condition: impl FnMut(&TestCluster) -> bool,
    ) {
        wait_for(within, what, || condition(self));
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, position: usize) {
        if let Some(mut child) = self.members[position].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns the exit status and what the member logged.
    pub fn terminate(&mut self, position: usize) -> (ExitStatus, String) {
        let mut child = self.members[position].child.take().expect("member running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, self.log_of_run(position));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("member {position} did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data_dir(&self, position: usize) -> &Path {
        &self.members[position].data_dir
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for position in 0..self.members.len() {
            self.kill(position);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `raftkv <args>` (the binary's etcdctl-style client commands) against
/// the cluster's running members.
pub fn raftkv_cli(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(args)
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftkv");
    if let Some(input) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("raftkv output")
}
