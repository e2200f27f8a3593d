//! The workload: concurrent clients doing put / get / compare-and-set on a
//! small key set through the etcd v3 gRPC API, each operation under a
//! timeout, every outcome recorded in the history with monotonic
//! timestamps.
//!
//! Classification of outcomes (the history must never claim more than the
//! client knows):
//! * a read that fails is dropped (it changed nothing);
//! * a write that fails with a status proving it never reached the log
//!   (`InvalidArgument`) is dropped;
//! * any other failed write — timeout, `Unavailable`, "leader changed",
//!   connection errors — is recorded with an unknown outcome: it may have
//!   taken effect at any point after its call, or never.
//!
//! Written values are unique per run (`<client>-<sequence>`), so a read
//! names the one write it saw. The recorder must never reorder or drop a
//! recorded operation, and never read any clock but its own `Instant`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use linearizability::{Operation, RegisterInput, RegisterOutput};
use proto::etcdserverpb as pb;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::rng::Rng;
use crate::NemesisError;

/// Shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: usize,
    /// Per-operation timeout; past it the outcome is unknown.
    pub op_timeout: Duration,
    /// Percent of operations that are gets; of the rest, `cas_percent`
    /// percent are compare-and-sets and the others puts.
    pub read_percent: u32,
    pub cas_percent: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 8,
            keys: 6,
            op_timeout: Duration::from_millis(1500),
            read_percent: 50,
            cas_percent: 50,
        }
    }
}

/// The key names used by a workload of `keys` keys.
pub fn key_names(keys: usize) -> Vec<Vec<u8>> {
    (0..keys).map(|k| format!("k{k}").into_bytes()).collect()
}

/// Which members the clients send reads and writes to. The nemesis may
/// narrow it (e.g. read only from an isolated leader); empty means all.
#[derive(Clone, Debug, Default)]
pub struct Route {
    pub reads: Vec<usize>,
    pub writes: Vec<usize>,
}

#[derive(Debug, Default)]
pub struct Routing(RwLock<Route>);

impl Routing {
    pub fn set(&self, route: Route) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = route;
    }

    pub fn reset(&self) {
        self.set(Route::default());
    }

    fn pick(&self, read: bool, members: usize, rng: &mut Rng) -> usize {
        let route = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let allowed = if read { &route.reads } else { &route.writes };
        if allowed.is_empty() {
            rng.index(members)
        } else {
            *rng.pick(allowed)
        }
    }
}

/// Counts of operations by kind and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    pub get_ok: u64,
    /// Failed reads, dropped from the history.
    pub get_failed: u64,
    pub put_ok: u64,
    pub put_unknown: u64,
    /// Definite failures, dropped from the history.
    pub put_failed: u64,
    pub cas_succeeded: u64,
    /// The comparison did not hold (a known outcome).
    pub cas_compare_failed: u64,
    pub cas_unknown: u64,
    pub cas_failed: u64,
}

impl OpStats {
    pub fn total(&self) -> u64 {
        self.ok() + self.failed() + self.unknown()
    }

    /// Operations with a known outcome (in the history).
    pub fn ok(&self) -> u64 {
        self.get_ok + self.put_ok + self.cas_succeeded + self.cas_compare_failed
    }

    /// Failed reads and definitely failed writes (not in the history).
    pub fn failed(&self) -> u64 {
        self.get_failed + self.put_failed + self.cas_failed
    }

    pub fn unknown(&self) -> u64 {
        self.put_unknown + self.cas_unknown
    }

    pub fn add(&mut self, other: &OpStats) {
        self.get_ok += other.get_ok;
        self.get_failed += other.get_failed;
        self.put_ok += other.put_ok;
        self.put_unknown += other.put_unknown;
        self.put_failed += other.put_failed;
        self.cas_succeeded += other.cas_succeeded;
        self.cas_compare_failed += other.cas_compare_failed;
        self.cas_unknown += other.cas_unknown;
        self.cas_failed += other.cas_failed;
    }

    /// `name: value` lines, as written to `verdict.txt`.
    pub fn lines(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("ops.total", self.total()),
            ("ops.ok", self.ok()),
            ("ops.failed", self.failed()),
            ("ops.unknown", self.unknown()),
            ("ops.get_ok", self.get_ok),
            ("ops.get_failed", self.get_failed),
            ("ops.put_ok", self.put_ok),
            ("ops.put_unknown", self.put_unknown),
            ("ops.put_failed", self.put_failed),
            ("ops.cas_succeeded", self.cas_succeeded),
            ("ops.cas_compare_failed", self.cas_compare_failed),
            ("ops.cas_unknown", self.cas_unknown),
            ("ops.cas_failed", self.cas_failed),
        ]
    }
}

/// The history being recorded, with the run's monotonic clock.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    ops: Mutex<Vec<Operation>>,
    stats: Mutex<OpStats>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            ops: Mutex::new(Vec::new()),
            stats: Mutex::new(OpStats::default()),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn record(&self, op: Operation) {
        self.ops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(op);
    }

    fn count(&self, update: impl FnOnce(&mut OpStats)) {
        update(
            &mut self
                .stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    pub fn stats(&self) -> OpStats {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn history(&self) -> Vec<Operation> {
        self.ops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Whether a failed write provably did not take effect.
fn definitely_not_applied(status: &Status) -> bool {
    // Rejected by validation before anything is proposed. Everything else,
    // including errors the server might raise before proposing, stays
    // unknown: a wrong "failed" would make the checker unsound.
    status.code() == Code::InvalidArgument
}

/// Reads `key` linearizably through `client`; the value or `None`.
pub async fn get(
    client: &mut KvClient<Channel>,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let request = pb::RangeRequest {
        key: Bytes::copy_from_slice(key),
        ..Default::default()
    };
    match tokio::time::timeout(timeout, client.range(request)).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(status)) => Err(status.to_string()),
        Ok(Ok(response)) => Ok(response
            .into_inner()
            .kvs
            .first()
            .map(|kv| kv.value.to_vec())),
    }
}

enum WriteOutcome<T> {
    Done(T),
    NotApplied,
    Unknown,
}

async fn write<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> WriteOutcome<T> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => WriteOutcome::Unknown,
        Ok(Err(status)) if definitely_not_applied(&status) => WriteOutcome::NotApplied,
        Ok(Err(_)) => WriteOutcome::Unknown,
        Ok(Ok(response)) => WriteOutcome::Done(response.into_inner()),
    }
}

/// What clients share besides the recorder: the last value anyone saw per
/// key, so compare-and-sets have a fair chance to succeed.
type LastSeen = Arc<Mutex<HashMap<usize, Option<Vec<u8>>>>>;

/// Running clients; [`Clients::stop`] ends them after their current
/// operation.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts `config.clients` clients against `client_urls`. Client ids
    /// are 1..=clients.
    pub fn start(
        config: &WorkloadConfig,
        client_urls: &[String],
        routing: Arc<Routing>,
        recorder: Arc<Recorder>,
        rng: &Rng,
    ) -> Result<Clients, NemesisError> {
        let stop = Arc::new(AtomicBool::new(false));
        let last_seen: LastSeen = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = Vec::new();
        for id in 1..=config.clients as u64 {
            // Each client has its own connections, like separate processes.
            let kv = client_urls
                .iter()
                .map(|url| crate::cluster::client_channel(url).map(KvClient::new))
                .collect::<Result<Vec<_>, _>>()?;
            let client = Client {
                id,
                config: config.clone(),
                keys: key_names(config.keys),
                kv,
                routing: routing.clone(),
                recorder: recorder.clone(),
                last_seen: last_seen.clone(),
                rng: rng.fork(1000 + id),
                stop: stop.clone(),
                sequence: 0,
            };
            tasks.push(tokio::spawn(client.run()));
        }
        Ok(Clients { stop, tasks })
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            // A client that panicked has already recorded what it did; the
            // panic itself shows in the test output.
            let _ = task.await;
        }
    }
}

struct Client {
    id: u64,
    config: WorkloadConfig,
    keys: Vec<Vec<u8>>,
    kv: Vec<KvClient<Channel>>,
    routing: Arc<Routing>,
    recorder: Arc<Recorder>,
    last_seen: LastSeen,
    rng: Rng,
    stop: Arc<AtomicBool>,
    sequence: u64,
}

impl Client {
    async fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let key = self.rng.index(self.keys.len());
            let succeeded = if self.rng.percent(self.config.read_percent) {
                self.get(key).await
            } else if self.rng.percent(self.config.cas_percent) {
                self.cas(key).await
            } else {
                self.put(key).await
            };
            if !succeeded {
                // Do not hammer a member that is down: an error from a dead
                // member comes back at once.
                tokio::time::sleep(self.rng.millis(20, 80)).await;
            }
        }
    }

    fn next_value(&mut self) -> Vec<u8> {
        self.sequence += 1;
        format!("{}-{}", self.id, self.sequence).into_bytes()
    }

    fn saw(&self, key: usize, value: Option<Vec<u8>>) {
        self.last_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, value);
    }

    fn unknown(&self, key: usize, call: u64, input: RegisterInput) {
        let mut op = Operation::unknown(self.id, self.keys[key].clone(), call, input);
        // For the reader of history.txt: when the client gave up (the
        // checker ignores it).
        op.ret = Some(self.recorder.now());
        self.recorder.record(op);
    }

    async fn get(&mut self, key: usize) -> bool {
        let member = self.routing.pick(true, self.kv.len(), &mut self.rng);
        let call = self.recorder.now();
        let result = get(
            &mut self.kv[member],
            &self.keys[key],
            self.config.op_timeout,
        )
        .await;
        let ret = self.recorder.now();
        match result {
            Ok(value) => {
                self.recorder.record(Operation {
                    client: self.id,
                    key: self.keys[key].clone(),
                    call,
                    ret: Some(ret),
                    input: RegisterInput::Get,
                    output: RegisterOutput::Get {
                        value: value.clone(),
                    },
                });
                self.recorder.count(|stats| stats.get_ok += 1);
                self.saw(key, value);
                true
            }
            Err(_) => {
                self.recorder.count(|stats| stats.get_failed += 1);
                false
            }
        }
    }

    async fn put(&mut self, key: usize) -> bool {
        let member = self.routing.pick(false, self.kv.len(), &mut self.rng);
        let value = self.next_value();
        let request = pb::PutRequest {
            key: Bytes::copy_from_slice(&self.keys[key]),
            value: Bytes::from(value.clone()),
            ..Default::default()
        };
        let input = RegisterInput::Put {
            value: value.clone(),
        };
        let call = self.recorder.now();
        let outcome = write(self.config.op_timeout, self.kv[member].put(request)).await;
        let ret = self.recorder.now();
        match outcome {
            WriteOutcome::Done(_) => {
                self.recorder.record(Operation {
                    client: self.id,
                    key: self.keys[key].clone(),
                    call,
                    ret: Some(ret),
                    input,
                    output: RegisterOutput::Put,
                });
                self.recorder.count(|stats| stats.put_ok += 1);
                self.saw(key, Some(value));
                true
            }
            WriteOutcome::NotApplied => {
                self.recorder.count(|stats| stats.put_failed += 1);
                false
            }
            WriteOutcome::Unknown => {
                self.unknown(key, call, input);
                self.recorder.count(|stats| stats.put_unknown += 1);
                false
            }
        }
    }

    async fn cas(&mut self, key: usize) -> bool {
        let member = self.routing.pick(false, self.kv.len(), &mut self.rng);
        let expected = self
            .last_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key)
            .cloned()
            .flatten();
        let new = self.next_value();
        let key_bytes = Bytes::copy_from_slice(&self.keys[key]);
        let compare = match &expected {
            Some(value) => pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key_bytes.clone(),
                target_union: Some(TargetUnion::Value(Bytes::from(value.clone()))),
                ..Default::default()
            },
            // "Absent": etcd compares the create revision with 0.
            None => pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key_bytes.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            },
        };
        let request = pb::TxnRequest {
            compare: vec![compare],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key_bytes,
                    value: Bytes::from(new.clone()),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let input = RegisterInput::Cas {
            expected,
            new: new.clone(),
        };
        let call = self.recorder.now();
        let outcome = write(self.config.op_timeout, self.kv[member].txn(request)).await;
        let ret = self.recorder.now();
        match outcome {
            WriteOutcome::Done(response) => {
                let succeeded = response.succeeded;
                self.recorder.record(Operation {
                    client: self.id,
                    key: self.keys[key].clone(),
                    call,
                    ret: Some(ret),
                    input,
                    output: RegisterOutput::Cas { succeeded },
                });
                if succeeded {
                    self.recorder.count(|stats| stats.cas_succeeded += 1);
                    self.saw(key, Some(new));
                } else {
                    self.recorder.count(|stats| stats.cas_compare_failed += 1);
                }
                true
            }
            WriteOutcome::NotApplied => {
                self.recorder.count(|stats| stats.cas_failed += 1);
                false
            }
            WriteOutcome::Unknown => {
                self.unknown(key, call, input);
                self.recorder.count(|stats| stats.cas_unknown += 1);
                false
            }
        }
    }
}
