//! A member flooded with more writes than it can take, through the real KV
//! service (called in process, no sockets): once with an apply slower than
//! its commits, once with a disk slower than its clients. It refuses the
//! excess with etcd's `too many requests`, every queue stays within its
//! bound, memory stays bounded, and it answers again once the flood is over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_server::Kv;
use raft::{Entry, HardState, Raft, SnapshotMetadata};
use server::node::{
    inbox, raft_config, LogStorage, Node, NodeOptions, StateMachine, StorageError, APPLY_GAP_MAX,
    INPUT_QUEUE_MAX, PENDING_PROPOSALS_MAX,
};
use server::peer::{LocalIdentity, Transport};
use server::services::{KvService, ServiceContext};
use server::state::{KvStateMachine, SharedState};
use tonic::{Code, Request};

/// Concurrent clients, each sending one put.
const CLIENTS: usize = 30_000;
/// Bytes of each put's value.
const VALUE_BYTES: usize = 1024;
/// How long the slow state machine takes per entry: ~10,000 entries a
/// second, far below what the raft thread commits with a log in memory.
const SLOW_APPLY: Duration = Duration::from_micros(100);
/// How long the slow disk takes per persist.
const SLOW_PERSIST: Duration = Duration::from_millis(100);
/// Allowed growth of the resident set's peak over the flood. The clients
/// themselves (30,000 tasks in this process) take about 30 MiB, 10,000
/// admitted writes about as much; an unbounded member held every client's
/// write at once (135 MiB measured before the bounds).
const RSS_GROWTH_MAX_KIB: u64 = 96 * 1024;

/// The log in memory, each persist that writes something taking `delay`.
struct MemoryLog {
    delay: Duration,
}

impl LogStorage for MemoryLog {
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        _: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        if !self.delay.is_zero() && (hard_state.is_some() || !entries.is_empty()) {
            std::thread::sleep(self.delay);
        }
        Ok(())
    }

    fn compacted(&mut self, _: &SnapshotMetadata) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The real state machine, each entry taking `.1` more.
struct SlowApply(KvStateMachine, Duration);

impl StateMachine for SlowApply {
    fn apply(&mut self, index: u64, term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        if !payload.is_empty() && !self.1.is_zero() {
            std::thread::sleep(self.1);
        }
        self.0.apply(index, term, payload)
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError> {
        self.0.apply_conf_change(entry)
    }

    fn reflects(&self, index: u64) -> bool {
        self.0.reflects(index)
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        self.0.commit()
    }

    fn persist(&mut self) -> Result<(), StorageError> {
        self.0.persist()
    }

    fn install_received(&mut self, snapshot: &SnapshotMetadata) -> Result<bool, StorageError> {
        self.0.install_received(snapshot)
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        self.0.install_snapshot(snapshot)
    }

    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }
}

/// The process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Samples the resident set every 2 ms on a thread of its own until
/// stopped; returns the largest sample.
struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut most = rss_kib();
            while !stopped.load(Ordering::Relaxed) {
                most = most.max(rss_kib());
                std::thread::sleep(Duration::from_millis(2));
            }
            most.max(rss_kib())
        });
        RssSampler { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// One flood at a time: they share the process's resident set.
static ONE_FLOOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn put(key: String, value: &Bytes) -> Request<pb::PutRequest> {
    Request::new(pb::PutRequest {
        key: Bytes::from(key),
        value: value.clone(),
        ..Default::default()
    })
}

/// What one flood saw.
struct Flood {
    succeeded: usize,
    refused: usize,
    load: server::node::LoadReport,
    rss_growth_kib: u64,
}

/// Starts a one-member cluster whose apply takes `apply_delay` per entry
/// and whose persists take `persist_delay`, floods it with `CLIENTS`
/// concurrent puts, checks the bounds, and checks that it answers again.
async fn flood(name: &str, apply_delay: Duration, persist_delay: Duration) -> Flood {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().await;
    let identity = LocalIdentity {
        cluster_id: 1,
        member_id: 1,
    };
    let (peer_events, node_inbox) = inbox();
    let transport = Transport::new(identity, peer_events);
    let raft = Raft::bootstrap(raft_config(1, 10, 100, 1), &[1]).expect("bootstrap");
    let engine = tempfile::tempdir().expect("engine dir");
    let state = SharedState::open(engine.path(), &mvcc::StoreOptions::default()).expect("open");
    let state_machine = SlowApply(
        KvStateMachine::new(state.clone()).expect("state machine"),
        apply_delay,
    );
    let request_timeout = Duration::from_secs(120);
    let node = Node::start(
        raft,
        MemoryLog {
            delay: persist_delay,
        },
        state_machine,
        transport.clone(),
        node_inbox,
        NodeOptions {
            tick_interval: Duration::from_millis(10),
            request_timeout,
            snapshot_count: u64::MAX,
            snapshot_catchup_entries: 100,
        },
    );
    let handle = node.handle.clone();
    handle
        .wait_status(Instant::now() + Duration::from_secs(10), |status| {
            status.role_is_leader
        })
        .await
        .expect("a one-member cluster elects itself");
    let kv = Arc::new(KvService(ServiceContext {
        cluster_id: 1,
        member_id: 1,
        node: handle.clone(),
        state: state.downgrade(),
        transport,
        request_timeout,
        max_request_bytes: 1536 * 1024,
        max_txn_ops: 128,
        version: "test",
        unsafe_local_reads: false,
        quota_backend_bytes: u64::MAX,
    }));
    // Shared by every request: the clients' own memory stays small.
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);

    let rss_before = rss_kib();
    let sampler = RssSampler::start();
    let started = Instant::now();
    let succeeded = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::with_capacity(CLIENTS);
    for n in 0..CLIENTS {
        let kv = kv.clone();
        let request = put(format!("key-{n}"), &value);
        let (succeeded, refused) = (succeeded.clone(), refused.clone());
        clients.push(tokio::spawn(async move {
            match kv.put(request).await {
                Ok(_) => {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(status)
                    if status.code() == Code::ResourceExhausted
                        && status.message() == "etcdserver: too many requests" =>
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => panic!("a put failed with {status:?}"),
            }
        }));
    }
    for client in clients {
        client.await.expect("client task");
    }
    let flood_time = started.elapsed();
    let load = handle.load();
    let rss_peak = sampler.peak();
    let rss_after = rss_kib();
    let outcome = Flood {
        succeeded: succeeded.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        load,
        rss_growth_kib: rss_peak.saturating_sub(rss_before),
    };
    eprintln!(
        "flood ({name}): {CLIENTS} concurrent puts of {VALUE_BYTES} B in {flood_time:?}: \
         {} succeeded, {} refused with too many requests; \
         most pending proposals {} (bound {PENDING_PROPOSALS_MAX}), most inputs queued {} \
         (bound {INPUT_QUEUE_MAX}), largest apply gap {} (bound {APPLY_GAP_MAX}); \
         RSS {rss_before} KiB before, peak {rss_peak} KiB, {rss_after} KiB after",
        outcome.succeeded,
        outcome.refused,
        load.most_pending_proposals,
        load.most_input_queued,
        load.most_apply_gap,
    );

    assert_eq!(outcome.succeeded + outcome.refused, CLIENTS);
    assert!(outcome.refused > 0, "the flood was never refused");
    assert!(
        load.most_pending_proposals <= PENDING_PROPOSALS_MAX,
        "{} proposals waited at once",
        load.most_pending_proposals
    );
    assert!(load.most_input_queued <= INPUT_QUEUE_MAX);
    // Writes admitted just under the gap bound may all commit before any of
    // them applies.
    assert!(
        load.most_apply_gap <= APPLY_GAP_MAX + PENDING_PROPOSALS_MAX as u64,
        "the applier fell {} entries behind",
        load.most_apply_gap
    );
    assert!(
        outcome.rss_growth_kib <= RSS_GROWTH_MAX_KIB,
        "the resident set's peak grew by {} KiB during the flood",
        outcome.rss_growth_kib
    );

    // Once the backlog is applied the member answers again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match kv.put(put("after the flood".to_string(), &value)).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(Instant::now() < deadline, "still refused: {status:?}");
                handle
                    .wait_applied(
                        handle.status().commit_index,
                        Instant::now() + Duration::from_secs(30),
                    )
                    .await
                    .expect("the applier catches up");
            }
            Err(status) => panic!("the put after the flood failed: {status:?}"),
        }
    }
    assert_eq!(handle.load().pending_proposals, 0);
    tokio::task::spawn_blocking(move || node.stop())
        .await
        .expect("stop");
    outcome
}

/// The applier cannot keep up: writes are refused once it trails the
/// commit index by more than etcd's 5,000 entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_applies_slowly_refuses_writes_past_the_apply_gap() {
    let outcome = flood("slow apply", SLOW_APPLY, Duration::ZERO).await;
    assert!(outcome.load.most_apply_gap > APPLY_GAP_MAX / 2);
}

/// The disk cannot keep up: writes wait for their sync, and past
/// `PENDING_PROPOSALS_MAX` of them new ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_a_slow_disk_refuses_writes_past_the_pending_bound() {
    let outcome = flood("slow disk", Duration::ZERO, SLOW_PERSIST).await;
    assert_eq!(
        outcome.load.most_pending_proposals, PENDING_PROPOSALS_MAX,
        "the flood filled the pending bound"
    );
}
