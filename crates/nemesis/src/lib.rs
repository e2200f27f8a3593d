//! Black-box nemesis tests for raftkv (test support only): real member
//! processes on this machine, faults injected from outside, concurrent
//! clients recording a history, and a linearizability verdict.
//!
//! One [`run`]:
//! 1. starts a cluster ([`cluster`]): raftkv members behind fault-injecting
//!    peer proxies ([`proxy`]), or etcd members as a control;
//! 2. runs clients ([`workload`]) doing put / get / compare-and-set on a
//!    few keys, while the nemesis ([`faults`]) kills, stops and partitions
//!    members on a seeded schedule;
//! 3. heals everything, restarts what is down, waits for the cluster, and
//!    reads every key through every member (linearizable reads, added to
//!    the history);
//! 4. checks the history with the `linearizability` crate, checks that
//!    every key's final value was written by some operation and that all
//!    members agree on it, and writes `history.txt`, `verdict.txt`,
//!    `faults.txt` and the members' logs into the output folder.
//!
//! "Every acknowledged write is accounted for" follows from the check over
//! the full history: the final reads are in it, so an acknowledged write
//! that vanished would have no linearization.
//!
//! This crate owns the harness. It must never be linked into the server,
//! never leave a process running or a data directory behind (the cluster's
//! Drop kills, reaps and removes), never listen on anything but loopback,
//! and never record more certainty than a client had (see [`workload`]).

pub mod cluster;
pub mod faults;
pub mod proxy;
pub mod rng;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linearizability::{
    check, format, CheckOptions, Counterexample, Operation, RegisterInput, RegisterOutput, Verdict,
};

pub use cluster::{Cluster, Flavor};
pub use faults::Profile;
pub use workload::{OpStats, WorkloadConfig};

/// Why a run could not be carried out (as opposed to a verdict).
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    #[error("setting up the run: {0}")]
    Setup(String),
    /// The cluster did not come back (or a member crashed): a finding
    /// about the system under test, reported with the output folder.
    #[error("the cluster did not recover: {0}")]
    Recovery(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the recorded history is malformed (a harness bug): {0}")]
    History(#[from] linearizability::HistoryError),
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Names the run in output.
    pub name: String,
    pub flavor: Flavor,
    pub members: usize,
    pub profile: Profile,
    /// How long the nemesis and the clients run.
    pub duration: Duration,
    pub seed: u64,
    pub workload: WorkloadConfig,
    /// --snapshot-count for the members (small values exercise snapshots).
    pub snapshot_count: u64,
    /// Where history, verdict and logs go (created).
    pub out_dir: PathBuf,
    /// Budget for the linearizability check.
    pub check_time_limit: Duration,
}

/// What a run found.
#[derive(Debug)]
pub struct RunReport {
    pub name: String,
    pub seed: u64,
    pub out_dir: PathBuf,
    /// Time the clients and the nemesis actually ran.
    pub nemesis_time: Duration,
    pub ops: OpStats,
    pub final_reads: usize,
    pub faults: BTreeMap<String, u64>,
    /// The nemesis's timeline: (nanoseconds on the history's clock, what
    /// happened).
    pub fault_events: Vec<(u64, String)>,
    pub verdict: Verdict,
    /// Findings besides the checker's verdict (final values nobody wrote,
    /// members disagreeing, the cluster not recovering).
    pub anomalies: Vec<String>,
    pub check_time: Duration,
}

impl RunReport {
    /// Linearizable and nothing else amiss.
    pub fn passed(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable) && self.anomalies.is_empty()
    }

    pub fn counterexample(&self) -> Option<&Counterexample> {
        match &self.verdict {
            Verdict::NotLinearizable(counterexample) => Some(counterexample),
            _ => None,
        }
    }

    /// A few lines for the test output.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect();
        format!(
            "run {} (seed {}): {:.1}s, ops {} (ok {}, failed {}, unknown {}), final reads {}, faults [{}], verdict {}, anomalies {}, check {:.2}s\n  output: {}",
            self.name,
            self.seed,
            self.nemesis_time.as_secs_f64(),
            self.ops.total(),
            self.ops.ok(),
            self.ops.failed(),
            self.ops.unknown(),
            self.final_reads,
            faults.join(" "),
            verdict_name(&self.verdict),
            self.anomalies.len(),
            self.check_time.as_secs_f64(),
            self.out_dir.display()
        )
    }
}

fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Linearizable => "LINEARIZABLE",
        Verdict::NotLinearizable(_) => "NOT LINEARIZABLE",
        Verdict::Unknown(_) => "UNDECIDED (check budget ran out)",
    }
}

/// Client id of the final reads through member `position`.
fn final_reader(position: usize) -> u64 {
    1_000_000 + position as u64
}

/// A read of a key through a member after healing.
struct FinalRead {
    key: Vec<u8>,
    member: usize,
    value: Option<Vec<u8>>,
}

/// What the live part of a run hands to the verdict.
struct Recorded {
    history: Vec<Operation>,
    ops: OpStats,
    final_reads: usize,
    nemesis_time: Duration,
    faults: faults::FaultLog,
    finals: Vec<FinalRead>,
    member_names: Vec<String>,
    /// The cluster failed to recover; the history up to then is still
    /// checked and saved.
    recovery_error: Option<String>,
}

/// Runs the cluster, the clients and the nemesis, then checks and writes
/// the verdict. Blocks; builds its own Tokio runtime.
pub fn run(config: &RunConfig) -> Result<RunReport, NemesisError> {
    std::fs::create_dir_all(&config.out_dir)?;
    eprintln!(
        "nemesis: run {} ({} x{}, profile {}, {:?}), seed {}; output in {}",
        config.name,
        config.flavor.name(),
        config.members,
        config.profile.name(),
        config.duration,
        config.seed,
        config.out_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let recorded = runtime.block_on(drive(config))?;
    // Stop the runtime (proxies, channels) before the CPU-heavy check.
    drop(runtime);

    let started = Instant::now();
    let options = CheckOptions {
        time_limit: Some(config.check_time_limit),
        ..Default::default()
    };
    let verdict = check(&recorded.history, &options)?;
    let check_time = started.elapsed();

    let mut anomalies = final_value_anomalies(&recorded);
    if let Some(error) = &recorded.recovery_error {
        anomalies.push(error.clone());
    }
    let report = RunReport {
        name: config.name.clone(),
        seed: config.seed,
        out_dir: config.out_dir.clone(),
        nemesis_time: recorded.nemesis_time,
        ops: recorded.ops.clone(),
        final_reads: recorded.final_reads,
        faults: recorded.faults.counts.clone(),
        fault_events: recorded.faults.events.clone(),
        verdict,
        anomalies,
        check_time,
    };
    write_outputs(config, &recorded, &report)?;
    eprintln!("nemesis: {}", report.summary());
    Ok(report)
}

async fn drive(config: &RunConfig) -> Result<Recorded, NemesisError> {
    let data_root = std::env::temp_dir().join(format!(
        "raftkv-nemesis-{}-{}-{}",
        config.name,
        std::process::id(),
        config.seed
    ));
    let cluster = Cluster::start(
        config.flavor.clone(),
        config.members,
        config.snapshot_count,
        data_root,
        &config.out_dir,
    )
    .await?;
    let rng = rng::Rng::new(config.seed);
    let recorder = Arc::new(workload::Recorder::new());
    let routing = Arc::new(workload::Routing::default());
    let member_names: Vec<String> = cluster.members().iter().map(|m| m.name.clone()).collect();

    let mut nemesis = faults::Nemesis {
        cluster: &cluster,
        routing: &routing,
        recorder: &recorder,
        profile: config.profile,
        rng: rng.fork(1),
        log: faults::FaultLog::default(),
    };
    nemesis.prepare().await;
    let clients = workload::Clients::start(
        &config.workload,
        &cluster.client_urls(),
        routing.clone(),
        recorder.clone(),
        &rng,
    )?;
    let started = Instant::now();
    let nemesis_result = nemesis.run(started + config.duration).await;
    clients.stop().await;
    let nemesis_time = started.elapsed();
    let mut fault_log = nemesis.log;

    // Heal, then read every key through every member.
    let mut recovery_error = nemesis_result.err().map(|error| error.to_string());
    routing.reset();
    let mut finals = Vec::new();
    match cluster.heal_all() {
        Err(error) => {
            recovery_error.get_or_insert(error.to_string());
        }
        Ok(()) => {
            fault_log.event(
                &recorder,
                "end of faults: heal all, restart and resume all".to_owned(),
            );
            match cluster.wait_ready(Duration::from_secs(60)).await {
                Err(error) => {
                    recovery_error.get_or_insert(error.to_string());
                }
                Ok(()) => {
                    if let Err(error) =
                        final_reads(&cluster, &recorder, config.workload.keys, &mut finals).await
                    {
                        recovery_error.get_or_insert(error);
                    }
                }
            }
        }
    }
    drop(cluster);
    let history = recorder.history();
    Ok(Recorded {
        final_reads: finals.len(),
        ops: recorder.stats(),
        history,
        nemesis_time,
        faults: fault_log,
        finals,
        member_names,
        recovery_error,
    })
}

/// Reads every key through every member (retrying each for up to 30 s) and
/// records the reads.
async fn final_reads(
    cluster: &Cluster,
    recorder: &workload::Recorder,
    keys: usize,
    finals: &mut Vec<FinalRead>,
) -> Result<(), String> {
    for (position, url) in cluster.client_urls().iter().enumerate() {
        let channel = cluster::client_channel(url).map_err(|error| error.to_string())?;
        let mut client = proto::etcdserverpb::kv_client::KvClient::new(channel);
        for key in workload::key_names(keys) {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let call = recorder.now();
                let result = workload::get(&mut client, &key, Duration::from_secs(2)).await;
                let ret = recorder.now();
                match result {
                    Ok(value) => {
                        recorder.record(Operation {
                            client: final_reader(position),
                            key: key.clone(),
                            call,
                            ret: Some(ret),
                            input: RegisterInput::Get,
                            output: RegisterOutput::Get {
                                value: value.clone(),
                            },
                        });
                        finals.push(FinalRead {
                            key: key.clone(),
                            member: position,
                            value,
                        });
                        break;
                    }
                    Err(error) if Instant::now() >= deadline => {
                        return Err(format!(
                            "member {} did not answer a linearizable read of {} within 30 s after healing: {error}",
                            cluster.members()[position].name,
                            String::from_utf8_lossy(&key)
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    Ok(())
}

/// Final values must agree across members and have been written by some
/// operation of the history (acknowledged or not).
fn final_value_anomalies(recorded: &Recorded) -> Vec<String> {
    let mut written: BTreeMap<&[u8], Vec<&[u8]>> = BTreeMap::new();
    for op in &recorded.history {
        match &op.input {
            RegisterInput::Put { value } | RegisterInput::Cas { new: value, .. } => {
                written.entry(&op.key).or_default().push(value)
            }
            RegisterInput::Get => {}
        }
    }
    let mut anomalies = Vec::new();
    let mut by_key: BTreeMap<&[u8], Vec<&FinalRead>> = BTreeMap::new();
    for read in &recorded.finals {
        by_key.entry(&read.key).or_default().push(read);
    }
    for (key, reads) in by_key {
        let shown = |value: &Option<Vec<u8>>| match value {
            Some(v) => linearizability::display_value(v),
            None => "absent".to_owned(),
        };
        if let Some(first) = reads.first() {
            if reads.iter().any(|read| read.value != first.value) {
                let all: Vec<String> = reads
                    .iter()
                    .map(|read| {
                        format!(
                            "{}={}",
                            recorded.member_names[read.member],
                            shown(&read.value)
                        )
                    })
                    .collect();
                anomalies.push(format!(
                    "key {}: members disagree after healing: {}",
                    linearizability::display_value(key),
                    all.join(", ")
                ));
            }
        }
        for read in &reads {
            let Some(value) = &read.value else {
                continue;
            };
            let known = written
                .get(key)
                .is_some_and(|values| values.contains(&value.as_slice()));
            if !known {
                anomalies.push(format!(
                    "key {}: member {} holds {}, which no operation wrote",
                    linearizability::display_value(key),
                    recorded.member_names[read.member],
                    linearizability::display_value(value)
                ));
            }
        }
    }
    anomalies
}

fn write_outputs(
    config: &RunConfig,
    recorded: &Recorded,
    report: &RunReport,
) -> Result<(), NemesisError> {
    let dir = &config.out_dir;
    format::save_history(dir.join("history.txt"), &recorded.history)?;
    std::fs::write(dir.join("faults.txt"), recorded.faults.timeline())?;

    // `name: value` lines first (easy to aggregate across runs), then prose.
    let mut text = String::new();
    let _ = writeln!(text, "run: {}", config.name);
    let _ = writeln!(text, "flavor: {}", config.flavor.name());
    let _ = writeln!(text, "members: {}", config.members);
    let _ = writeln!(text, "profile: {}", config.profile.name());
    let _ = writeln!(text, "seed: {}", config.seed);
    let _ = writeln!(
        text,
        "nemesis_secs: {:.3}",
        report.nemesis_time.as_secs_f64()
    );
    let _ = writeln!(text, "clients: {}", config.workload.clients);
    let _ = writeln!(text, "keys: {}", config.workload.keys);
    for (name, value) in report.ops.lines() {
        let _ = writeln!(text, "{name}: {value}");
    }
    let _ = writeln!(text, "final_reads: {}", report.final_reads);
    let _ = writeln!(text, "history_ops: {}", recorded.history.len());
    for (kind, count) in &report.faults {
        let _ = writeln!(text, "faults.{kind}: {count}");
    }
    let _ = writeln!(text, "check_secs: {:.3}", report.check_time.as_secs_f64());
    let _ = writeln!(text, "verdict: {}", verdict_name(&report.verdict));
    let _ = writeln!(text, "anomalies: {}", report.anomalies.len());
    let _ = writeln!(text);
    for anomaly in &report.anomalies {
        let _ = writeln!(text, "anomaly: {anomaly}");
    }
    match &report.verdict {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(counterexample) => {
            let _ = writeln!(text, "counterexample:\n{counterexample}");
        }
        Verdict::Unknown(undecided) => {
            let keys: Vec<String> = undecided
                .keys
                .iter()
                .map(|k| linearizability::display_value(k))
                .collect();
            let _ = writeln!(
                text,
                "undecided keys after {} steps: {}",
                undecided.steps,
                keys.join(", ")
            );
        }
    }
    std::fs::write(dir.join("verdict.txt"), text)?;
    Ok(())
}
