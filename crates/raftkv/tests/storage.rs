//! The storage of a member, black-box: real `raftkv server` processes
//! (`common/mod.rs`) driven through raftkv's own client.
//!
//! - [`memory_is_bounded_by_the_working_set_and_a_full_restart_serves_within_seconds`]:
//!   a member's resident memory after a load several times larger than the
//!   bound, then a full cluster restart: how soon it serves, and every key
//!   back with its last value.
//! - [`kill_9_loses_no_acknowledged_write`]: seeded rounds of kill -9 (one
//!   member, the leader, or all three) under concurrent writers, some rounds
//!   with snapshots every 200 entries; every acknowledged write reads back
//!   and the members' `HashKV` at one revision agree.
//! - [`storage_at_scale_against_raftkv_and_etcd`]: only with
//!   `RAFTKV_STORAGE_BIG=1` (issue #12's 400,000 keys × 2 KiB) and/or
//!   `RAFTKV_STORAGE_ETCD=1` (the same load against etcd 3.4 too, one table
//!   of numbers).
//!
//! One test at a time (they load two cores with three members each, and one
//! measures memory).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Client, ClientConfig};
use common::{
    env_flag, env_number, mib, require_tool, seed_from_env, wait_for, Memory, ServerKind,
    TestCluster,
};
use nemesis::rng::Rng;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A bulk load: `keys` distinct keys, each written `passes` times with a
/// value of `value_size` bytes (the last pass's value is the one that must
/// read back).
#[derive(Clone, Copy, Debug)]
struct Load {
    keys: u64,
    value_size: usize,
    passes: u32,
    /// Puts in flight at once.
    in_flight: usize,
}

impl Load {
    /// Bytes of keys and values written, every pass.
    fn bytes_written(&self) -> u64 {
        self.keys * (KEY_PREFIX.len() as u64 + 8 + self.value_size as u64) * u64::from(self.passes)
    }

    /// Bytes of the last values only (what a compacted store holds).
    fn bytes_live(&self) -> u64 {
        self.bytes_written() / u64::from(self.passes)
    }
}

/// Test 1's default: 200,000 keys of 1 KiB, each written four times.
const DEFAULT_LOAD: Load = Load {
    keys: 200_000,
    value_size: 1024,
    passes: 4,
    in_flight: 256,
};

/// Issue #12's run (`RAFTKV_STORAGE_BIG=1`): 400,000 keys of 2 KiB, each
/// written once.
const BIG_LOAD: Load = Load {
    keys: 400_000,
    value_size: 2048,
    passes: 1,
    in_flight: 256,
};

const KEY_PREFIX: &str = "load/";

/// The bound on each member's resident memory after [`DEFAULT_LOAD`]. See
/// the test's doc comment for the reasoning.
const RSS_BOUND_MIB: u64 = 336;

/// A full restart must serve a linearizable read within this long of the
/// members' start (2-core CI machine, three members starting at once).
const RESTART_BOUND: Duration = Duration::from_secs(15);

/// `--snapshot-count` of the load tests (the default): the Raft log a
/// member keeps in memory between compactions is at most this many entries
/// plus `--snapshot-catchup-entries` (default 5,000).
const LOAD_SNAPSHOT_COUNT: &str = "10000";

/// The quota for the load tests (etcd's maximum, 8 GiB): the default 2 GiB
/// is near what etcd's bbolt file grows to under [`BIG_LOAD`].
const LOAD_QUOTA_BYTES: &str = "8589934592";

fn key_of(n: u64) -> String {
    format!("{KEY_PREFIX}{n:08}")
}

/// Key `n`'s value in `pass`: its number and pass, then pseudo-random
/// bytes (incompressible, as real values would be to the engine),
/// deterministic so the reader can recompute it.
fn value_of(n: u64, pass: u32, size: usize) -> Bytes {
    let mut rng = Rng::new(n ^ (u64::from(pass) << 40) ^ 0x5eed_0000_0000_0000);
    let mut value = format!("{n}.{pass}.").into_bytes();
    while value.len() < size {
        value.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    value.truncate(size);
    Bytes::from(value)
}

/// Clients of the running members, one preferring each member, so the
/// load's connections are spread over all of them.
fn spread_clients(cluster: &TestCluster, timeout: Duration) -> Vec<Client> {
    let endpoints = cluster.running_endpoints();
    (0..endpoints.len())
        .map(|first| {
            let mut rotated = endpoints.clone();
            rotated.rotate_left(first);
            let mut config = ClientConfig::new(rotated);
            config.request_timeout = timeout;
            Client::new(config).expect("client")
        })
        .collect()
}

/// Puts sent again by [`write_pass`]: how many times per key (the extra
/// sends whose outcome was unknown may each have added a version), and the
/// first errors seen.
#[derive(Default)]
struct Resent {
    per_key: HashMap<u64, u32>,
    errors: Vec<String>,
}

impl Resent {
    fn total(&self) -> u64 {
        self.per_key.values().map(|&count| u64::from(count)).sum()
    }
}

/// Writes every key of `load` once with `pass`'s value, `load.in_flight`
/// puts at a time. A put that fails is sent again, up to 5 times (the value
/// is the same, so the last value is; an overloaded member may refuse or
/// time out a few puts); each resend is recorded in `resent`.
fn write_pass(cluster: &TestCluster, load: Load, pass: u32, resent: &Arc<Mutex<Resent>>) {
    let clients = spread_clients(cluster, Duration::from_secs(30));
    let next = Arc::new(AtomicU64::new(0));
    cluster.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..load.in_flight {
            let client = clients[task % clients.len()].clone();
            let next = next.clone();
            let resent = resent.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= load.keys {
                        return Ok(());
                    }
                    let value = value_of(n, pass, load.value_size);
                    let mut attempt = 0;
                    while let Err(error) = client.put(key_of(n), value.clone()).await {
                        attempt += 1;
                        {
                            let mut resent = resent.lock().expect("resent");
                            *resent.per_key.entry(n).or_insert(0) += 1;
                            if resent.errors.len() < 5 {
                                resent.errors.push(format!("{}: {error}", key_of(n)));
                            }
                        }
                        if attempt == 5 {
                            return Err(format!("put {} (pass {pass}): {error}", key_of(n)));
                        }
                    }
                }
            }));
        }
        for task in tasks {
            if let Err(error) = task.await.expect("a writer task") {
                panic!("{error}");
            }
        }
    });
}

/// Reads every key of `load` back (pages of 1,000 at one revision) and
/// asserts each holds its last pass's value, with one version per pass
/// (plus at most one per resend of that key).
fn assert_every_key_has_its_last_value(
    cluster: &TestCluster,
    load: Load,
    resent: &Resent,
) -> Duration {
    let started = Instant::now();
    let (kvs, revision) = cluster.range_all(KEY_PREFIX, 1000);
    assert_eq!(
        kvs.len() as u64,
        load.keys,
        "every key written reads back (revision {revision})"
    );
    let last = load.passes - 1;
    for (n, kv) in (0..load.keys).zip(&kvs) {
        assert_eq!(kv.key, key_of(n).as_bytes(), "key {n} in key order");
        assert!(
            kv.value == value_of(n, last, load.value_size),
            "{} holds the value of pass {last} (version {}, {} bytes, starts {:?})",
            key_of(n),
            kv.version,
            kv.value.len(),
            String::from_utf8_lossy(&kv.value[..kv.value.len().min(16)])
        );
        let passes = i64::from(load.passes);
        let extra = i64::from(resent.per_key.get(&n).copied().unwrap_or(0));
        assert!(
            (passes..=passes + extra).contains(&kv.version),
            "{} was put once per pass ({passes}) and sent again {extra} times, but is at \
             version {}",
            key_of(n),
            kv.version
        );
    }
    started.elapsed()
}

/// What one run of [`run_load`] measured.
struct LoadReport {
    server: String,
    write_time: Duration,
    retries: u64,
    /// The first errors that made the load send a put again.
    resend_errors: Vec<String>,
    /// Each member's memory once every member has applied the load.
    after_load: Vec<Memory>,
    restart_to_first_read: Duration,
    verify_time: Duration,
    /// Each member's memory after the restart and the full read-back.
    after_restart: Vec<Memory>,
}

impl LoadReport {
    fn print(&self, load: Load) {
        let members = |memory: &[Memory]| {
            memory
                .iter()
                .map(|memory| {
                    format!(
                        "rss {:.0} MiB (heap {:.0}, files {:.0}; peak {:.0})",
                        mib(memory.rss),
                        mib(memory.anon),
                        mib(memory.file),
                        mib(memory.peak)
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        eprintln!(
            "\n=== {}: {} keys × {} B × {} passes = {:.0} MiB written ({:.0} MiB live)\n  \
             write: {:.1} s ({:.0} puts/s, {} sent again{})\n  \
             after the load:    {}\n  \
             full restart: first linearizable read {:.2} s after start; read-back of every key {:.1} s\n  \
             after the restart: {}\n",
            self.server,
            load.keys,
            load.value_size,
            load.passes,
            mib(load.bytes_written()),
            mib(load.bytes_live()),
            self.write_time.as_secs_f64(),
            (load.keys * u64::from(load.passes)) as f64 / self.write_time.as_secs_f64(),
            self.retries,
            if self.resend_errors.is_empty() {
                String::new()
            } else {
                format!(": {:?}", self.resend_errors)
            },
            members(&self.after_load),
            self.restart_to_first_read.as_secs_f64(),
            self.verify_time.as_secs_f64(),
            members(&self.after_restart),
        );
    }
}

/// Starts a 3-member cluster of `server`, writes `load`, measures every
/// member's memory once all have applied it, restarts the whole cluster
/// (SIGTERM all, start all), measures the time to the first linearizable
/// read and checks every key's last value. Correctness is asserted here;
/// the bounds are the caller's.
fn run_load(server: ServerKind, test_name: &str, load: Load) -> LoadReport {
    let label = match &server {
        ServerKind::Raftkv => "raftkv".to_string(),
        ServerKind::Etcd(path) => format!("etcd ({})", path.display()),
    };
    let args = [
        "--snapshot-count",
        LOAD_SNAPSHOT_COUNT,
        "--quota-backend-bytes",
        LOAD_QUOTA_BYTES,
    ];
    let mut cluster = TestCluster::start_server(server.clone(), 3, test_name, &args);
    let started = Instant::now();
    let resent = Arc::new(Mutex::new(Resent::default()));
    for pass in 0..load.passes {
        write_pass(&cluster, load, pass, &resent);
        eprintln!(
            "{label}: pass {pass} written after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let write_time = started.elapsed();
    // Every member has applied the whole load (and agrees on it) before
    // its memory is read.
    let revision = cluster
        .range(proto::etcdserverpb::RangeRequest {
            count_only: true,
            ..common::prefix_range(KEY_PREFIX)
        })
        .header
        .expect("a response header")
        .revision;
    cluster.assert_equal_hashes_at(revision, Duration::from_secs(60));
    let after_load = (0..3).map(|position| cluster.memory(position)).collect();

    for position in 0..3 {
        let (status, log) = cluster.terminate(position);
        if server == ServerKind::Raftkv {
            assert!(status.success(), "SIGTERM exits 0, got {status:?}\n{log}");
        }
    }
    let restarted = Instant::now();
    for position in 0..3 {
        cluster.start_member(position);
    }
    let restart_to_first_read = cluster.first_read_after(restarted, Duration::from_secs(120));
    let resent = std::mem::take(&mut *resent.lock().expect("resent"));
    let verify_time = assert_every_key_has_its_last_value(&cluster, load, &resent);
    let after_restart = (0..3).map(|position| cluster.memory(position)).collect();
    LoadReport {
        server: label,
        write_time,
        retries: resent.total(),
        resend_errors: resent.errors,
        after_load,
        restart_to_first_read,
        verify_time,
        after_restart,
    }
}

/// Memory bounded by the working set, not the data set; a full restart
/// serves again within seconds with every key's last value.
///
/// Load: 200,000 keys × 1 KiB, each written four times (pseudo-random
/// values, so compression cannot help): ~790 MiB of history, ~200 MiB live.
/// No compaction, so the whole history stays in the store.
///
/// Bound: each member's VmRSS ≤ 336 MiB, once every member has applied the
/// load (HashKV at its last revision answered and equal), and again after
/// the full restart and a read of every key. A member holding its history
/// in memory cannot meet it (the history is 2.35× the bound; the in-memory
/// store before issue #12 measured 950–960 MiB after three passes). The
/// engine-backed member's budget:
///   fjall block cache (`--backend-cache-bytes` default)     64 MiB
///   fjall memtables (active + up to four sealed, 16 MiB)   ≤ 80 MiB
///   key index in memory, ~300 B × 200,000 keys             ~60 MiB
///   Raft log in memory: ≤ (--snapshot-count 10,000 + 5,000
///     catch-up entries) × ~1.1 KiB                         ≤ 17 MiB
///   runtime, gRPC/HTTP/2, peer queues, WAL buffers,
///     allocator slack                                      ~60–100 MiB
/// Measured (debug build, four passes): 289–305 MiB after the load,
/// 246–252 MiB after the restart and read-back. For scale, etcd 3.4 under
/// the same load: heap 193–215 MiB after the load, 245–278 MiB after the
/// restart and read-back (its VmRSS, ~1 GB, is mostly its memory-mapped
/// bbolt file).
///
/// Restart: SIGTERM all three, start all three; the first linearizable read
/// must succeed within 15 s of the start (an engine opens its files and
/// replays at most --snapshot-count entries; it does not load the data set;
/// 15 s leaves room for a loaded 2-core CI machine). Then every one of the
/// 200,000 keys is read back (pages of 1,000 at one revision) with its
/// last value and version.
#[test]
fn memory_is_bounded_by_the_working_set_and_a_full_restart_serves_within_seconds() {
    let _serial = serial();
    let load = DEFAULT_LOAD;
    let report = run_load(ServerKind::Raftkv, "storage-memory", load);
    report.print(load);
    let bound = RSS_BOUND_MIB * 1024 * 1024;
    assert!(
        load.bytes_written() > bound,
        "the load ({:.0} MiB) is larger than the bound",
        mib(load.bytes_written())
    );
    let over: Vec<String> = [
        ("after the load", &report.after_load),
        ("after the restart", &report.after_restart),
    ]
    .into_iter()
    .flat_map(|(when, members)| {
        members
            .iter()
            .enumerate()
            .filter(|(_, memory)| memory.rss > bound)
            .map(move |(position, memory)| {
                format!("m{} {when}: {:.0} MiB", position + 1, mib(memory.rss))
            })
    })
    .collect();
    assert!(
        over.is_empty(),
        "members' resident memory after {:.0} MiB written must stay under {RSS_BOUND_MIB} MiB; \
         over it: {over:?}",
        mib(load.bytes_written())
    );
    assert!(
        report.restart_to_first_read <= RESTART_BOUND,
        "a full restart served its first linearizable read after {:.2} s (bound {RESTART_BOUND:?})",
        report.restart_to_first_read.as_secs_f64()
    );
}

/// Issue #12's numbers, only on request: `RAFTKV_STORAGE_BIG=1` runs
/// 400,000 keys × 2 KiB (each twice) against raftkv; `RAFTKV_STORAGE_ETCD=1`
/// runs the same load (the default one unless BIG) against etcd too
/// (`etcd` on PATH: Debian's etcd-server, 3.4), so the two can be compared
/// from one run. Prints memory per member and restart-to-first-read; asserts
/// only correctness (every key's last value after the restart).
#[test]
fn storage_at_scale_against_raftkv_and_etcd() {
    let big = env_flag("RAFTKV_STORAGE_BIG");
    let with_etcd = env_flag("RAFTKV_STORAGE_ETCD");
    if !big && !with_etcd {
        eprintln!(
            "storage_at_scale_against_raftkv_and_etcd: skipped (RAFTKV_STORAGE_BIG=1 for \
             400,000 keys × 2 KiB, RAFTKV_STORAGE_ETCD=1 to run etcd as well)"
        );
        return;
    }
    let _serial = serial();
    let load = if big { BIG_LOAD } else { DEFAULT_LOAD };
    let mut reports = vec![run_load(ServerKind::Raftkv, "storage-scale-raftkv", load)];
    reports[0].print(load);
    if with_etcd {
        if let Some(etcd) = require_tool(
            "etcd",
            "etcd-server",
            "storage_at_scale_against_raftkv_and_etcd",
        ) {
            reports.push(run_load(ServerKind::Etcd(etcd), "storage-scale-etcd", load));
            reports[1].print(load);
        }
    }
    eprintln!("server | write s | rss after load per member, MiB (heap) | restart to first read s");
    for report in &reports {
        let rss: Vec<String> = report
            .after_load
            .iter()
            .map(|memory| format!("{:.0} ({:.0})", mib(memory.rss), mib(memory.anon)))
            .collect();
        eprintln!(
            "{} | {:.1} | {} | {:.2}",
            report.server,
            report.write_time.as_secs_f64(),
            rss.join(" / "),
            report.restart_to_first_read.as_secs_f64()
        );
    }
}

/// How a round of [`kill_9_loses_no_acknowledged_write`] kills.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// One member, chosen by the seed.
    One,
    /// Whoever leads at that moment.
    Leader,
    /// All three, back to back.
    All,
}

/// Key `key`'s value: its name and the run's seed, padded to a length the
/// key decides (64–575 bytes), so a value read back proves which put wrote
/// it.
fn kill_value(seed: u64, key: &str) -> Bytes {
    let mut rng = Rng::new(
        seed ^ key
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(7) ^ u64::from(b)),
    );
    let mut value = format!("{key}@{seed}:").into_bytes();
    let size = 64 + rng.below(512) as usize;
    while value.len() < size {
        value.push(b'a' + rng.below(26) as u8);
    }
    Bytes::from(value)
}

/// Writers that put unique keys until stopped, recording every
/// acknowledged put.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Writers {
    fn start(cluster: &TestCluster, seed: u64, round: u64, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let clients = spread_clients(cluster, Duration::from_secs(5));
        let handle = cluster.handle();
        let tasks = (0..count)
            .map(|writer| {
                let client = clients[writer % clients.len()].clone();
                let stop = stop.clone();
                let acked = acked.clone();
                handle.spawn(async move {
                    let mut written = Vec::new();
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("kill/{round:03}/{writer:02}/{sequence:07}");
                        sequence += 1;
                        let value = kill_value(seed, &key);
                        if client.put(key.clone(), value).await.is_ok() {
                            written.push(key);
                            acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // Outcome unknown or refused: not recorded. A
                            // short pause keeps a writer from spinning while
                            // no member answers.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    written
                })
            })
            .collect();
        Writers { stop, acked, tasks }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` puts past the count now are acknowledged.
    fn wait_for_more(&self, more: u64, within: Duration, what: &str) {
        let target = self.acked() + more;
        wait_for(
            within,
            &format!("{more} more acknowledged puts ({what})"),
            || self.acked() >= target,
        );
    }

    /// Stops the writers; every acknowledged key.
    fn stop(self, cluster: &TestCluster) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        cluster.block_on(async {
            let mut all = Vec::new();
            for task in self.tasks {
                all.extend(task.await.expect("a writer task"));
            }
            all
        })
    }
}

/// kill -9 of one member, the leader, or the whole cluster loses no
/// acknowledged write.
///
/// Seeded rounds (`RAFTKV_KILL_ROUNDS`, default 5; the seed printed,
/// `RAFTKV_KILL_SEED` replays its choices): 16 writers put unique keys
/// and record each acknowledged put; once a seeded number of puts (100–1,600)
/// is acknowledged in the round, one member, the leader or all three are
/// SIGKILLed; the writers keep going; the killed members are restarted.
/// Members (re)start either with `--snapshot-count 200
/// --snapshot-catchup-entries 100` (a snapshot and log compaction every 200
/// entries, so kills land during that work and a member far behind needs
/// a snapshot) or with the defaults (no snapshot: the restart replays the
/// log); the first round always snapshots often. After each round: every
/// acknowledged put of every round reads back linearizably with its value,
/// every key present holds the value its put carried, and the members'
/// `HashKV` at the read's revision agree.
#[test]
fn kill_9_loses_no_acknowledged_write() {
    let _serial = serial();
    let seed = seed_from_env(
        "RAFTKV_KILL_SEED",
        "storage",
        "kill_9_loses_no_acknowledged_write",
    );
    let rounds = env_number("RAFTKV_KILL_ROUNDS", 5);
    let mut rng = Rng::new(seed);
    let frequent_snapshots = [
        "--snapshot-count",
        "200",
        "--snapshot-catchup-entries",
        "100",
    ];
    let mut cluster = TestCluster::start(3, "storage-kill", &frequent_snapshots);
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let kill = *rng.pick(&[Kill::One, Kill::Leader, Kill::All]);
        let snapshots = round == 0 || rng.percent(50);
        let kill_after = 100 + rng.below(1_500);
        let one = rng.index(3);
        cluster.extra_args = if snapshots {
            frequent_snapshots
                .iter()
                .map(|arg| arg.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let writers = Writers::start(&cluster, seed, round, 16);
        writers.wait_for_more(kill_after, Duration::from_secs(30), "before the kill");
        let victims: Vec<usize> = match kill {
            Kill::One => vec![one],
            Kill::Leader => vec![cluster.leader()],
            Kill::All => vec![0, 1, 2],
        };
        for &victim in &victims {
            cluster.kill(victim);
        }
        let acked_at_kill = writers.acked();
        if victims.len() < 3 {
            writers.wait_for_more(100, Duration::from_secs(20), "the survivors serve");
        }
        let restart = Instant::now();
        for &victim in &victims {
            cluster.start_member(victim);
        }
        writers.wait_for_more(100, Duration::from_secs(30), "after the restart");
        let served_after = restart.elapsed();
        let written = writers.stop(&cluster);
        acknowledged.extend(written);

        let (kvs, revision) = cluster.range_all("kill/", 1000);
        let present: HashMap<&[u8], &Bytes> =
            kvs.iter().map(|kv| (kv.key.as_ref(), &kv.value)).collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|key| present.get(key.as_bytes()).copied() != Some(&kill_value(seed, key)))
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed} round {round} ({kill:?} of {victims:?}): {} of {} acknowledged puts do \
             not read back with their value at revision {revision}, e.g. {:?}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(5)]
        );
        for kv in &kvs {
            let key = String::from_utf8_lossy(&kv.key);
            assert!(
                kv.value == kill_value(seed, &key),
                "seed {seed} round {round}: {key} holds a value no put carried"
            );
        }
        cluster.assert_equal_hashes_at(revision, Duration::from_secs(30));
        eprintln!(
            "round {round}: {kill:?} of {victims:?} after {acked_at_kill} acknowledged puts \
             (snapshots every 200: {snapshots}); served 100 more puts {:.2} s after the \
             restart; {} acknowledged in all, {} keys present, hashkv equal at revision \
             {revision}; {:.1} s",
            served_after.as_secs_f64(),
            acknowledged.len(),
            kvs.len(),
            started.elapsed().as_secs_f64()
        );
    }
}

/// MVCC compaction lets the engine give its space back: a history of
/// overwritten values fills each member's engine (`Status.db_size`, its
/// files on disk: tables and journal), a compaction at the last revision
/// removes every older version, and `Defragment` (a full compaction of the
/// engine's tables) returns their space at once. `db_size_in_use` (the
/// bytes of the versions kept) drops with the MVCC compaction itself. The
/// journal is not history: it holds what was written since its last
/// rotation (at most 64 MB a file), so the history is made larger than
/// that, and at least half of it must be given back. Every key still reads
/// its last value, and the members still agree (HashKV).
#[test]
fn compaction_and_defragment_give_the_engines_space_back() {
    let _serial = serial();
    let cluster = TestCluster::start(3, "storage-defragment", &[]);
    let client = cluster.client();
    const KEYS: u64 = 500;
    const PASSES: u32 = 40;
    const VALUE_BYTES: usize = 8 * 1024;
    cluster.block_on(async {
        for pass in 0..PASSES {
            let mut writes = Vec::new();
            for n in 0..KEYS {
                let client = client.clone();
                writes.push(tokio::spawn(async move {
                    client
                        .put(key_of(n), value_of(n, pass, VALUE_BYTES))
                        .await
                        .expect("put")
                }));
            }
            for write in writes {
                write.await.expect("writer");
            }
        }
    });
    let history = KEYS * PASSES as u64 * VALUE_BYTES as u64;
    let sizes = |cluster: &TestCluster| -> Vec<(i64, i64)> {
        (0..3)
            .map(|position| {
                let status = cluster
                    .block_on(cluster.member_client(position).status(0))
                    .expect("status");
                (status.db_size, status.db_size_in_use)
            })
            .collect()
    };
    // Every member applied the history: its engine holds all of it.
    let revision = cluster
        .block_on(client.get(key_of(0)))
        .expect("get")
        .expect("key 0")
        .mod_revision;
    let last = cluster.block_on(client.status(0)).expect("status");
    let current = last.header.expect("header").revision;
    assert!(current >= revision);
    cluster.assert_equal_hashes_at(current, Duration::from_secs(30));
    let before = sizes(&cluster);
    for (db_size, in_use) in &before {
        assert!(
            *in_use as u64 >= history && *db_size as u64 >= history / 2,
            "a member holds {in_use} bytes of versions in {db_size} bytes on disk after \
             {history} bytes of history: {before:?}"
        );
    }

    cluster.block_on(client.compact(current)).expect("compact");
    for position in 0..3 {
        cluster
            .block_on(cluster.member_client(position).defragment(0))
            .expect("defragment");
    }
    let after = sizes(&cluster);
    let live = KEYS * VALUE_BYTES as u64;
    for ((db_size, in_use), (db_before, _)) in after.iter().zip(&before) {
        assert!(
            (*in_use as u64) < live * 2,
            "after the compaction a member still counts {in_use} bytes of versions for \
             {live} bytes of last values: {after:?}"
        );
        assert!(
            (*db_size as u64) < *db_before as u64 - history / 2,
            "after the compaction and defragment a member's engine is {db_size} bytes on \
             disk, {db_before} before, after {history} bytes of history: {after:?} (before \
             {before:?})"
        );
    }
    for n in [0, KEYS / 2, KEYS - 1] {
        let kv = cluster
            .block_on(client.get(key_of(n)))
            .expect("get")
            .expect("key kept");
        assert_eq!(kv.value, value_of(n, PASSES - 1, VALUE_BYTES));
    }
    cluster.assert_equal_hashes_at(current, Duration::from_secs(30));
    println!("engine sizes (db_size, db_size_in_use) before {before:?}, after {after:?}");
}
