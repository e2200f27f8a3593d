//! Three nodes in one process over real loopback gRPC, with in-memory log
//! storage and a trivial state machine: the driver, the transport and the
//! Raft core working together.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::peer::peer_server::PeerServer;
use raft::{Entry, HardState, Raft, SnapshotMetadata};
use server::node::{
    inbox, raft_config, LogStorage, Node, NodeHandle, NodeOptions, StateMachine, StorageError,
};
use server::peer::{LocalIdentity, PeerService, Transport};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Default)]
struct MemoryLog {
    entries: Vec<Entry>,
    /// Milliseconds every persist that writes something takes, like a slow
    /// disk; settable while the member runs.
    persist_delay_ms: Arc<AtomicU64>,
}

impl LogStorage for MemoryLog {
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        _snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        let delay = self.persist_delay_ms.load(Ordering::SeqCst);
        if delay > 0 && (hard_state.is_some() || !entries.is_empty()) {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if let Some(first) = entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend_from_slice(entries);
        }
        Ok(())
    }

    fn compacted(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        self.entries.retain(|entry| entry.index > snapshot.index);
        Ok(())
    }
}

/// Records every payload applied; answers with the entry's index.
#[derive(Clone, Default)]
struct Recorder {
    applied: Arc<Mutex<Vec<Bytes>>>,
    applied_index: u64,
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, _term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        if !payload.is_empty() {
            self.applied.lock().expect("test lock").push(payload);
        }
        self.applied_index = index;
        Ok(Bytes::from(index.to_string()))
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError> {
        self.applied_index = entry.index;
        Ok(())
    }

    fn reflects(&self, index: u64) -> bool {
        index <= self.applied_index
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn persist(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn install_received(&mut self, snapshot: &SnapshotMetadata) -> Result<bool, StorageError> {
        self.applied_index = self.applied_index.max(snapshot.index);
        Ok(true)
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        assert!(
            self.applied_index >= snapshot.index,
            "installed before Raft recorded it"
        );
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// The index a `Recorder` answered a proposal with.
fn answered_index(answer: &Bytes) -> u64 {
    std::str::from_utf8(answer)
        .expect("utf-8")
        .parse()
        .expect("an index")
}

struct TestMember {
    node: Node,
    recorder: Recorder,
    persist_delay_ms: Arc<AtomicU64>,
}

async fn start_cluster() -> Vec<TestMember> {
    let ids = [1u64, 2, 3];
    let mut listeners = Vec::new();
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for _ in ids {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        addrs.push(listener.local_addr().expect("addr"));
        listeners.push(listener);
    }
    let mut members = Vec::new();
    for (position, listener) in listeners.into_iter().enumerate() {
        let id = ids[position];
        let identity = LocalIdentity {
            cluster_id: 9,
            member_id: id,
        };
        let (peer_events, node_inbox) = inbox();
        let service = PeerServer::new(PeerService::new(identity, peer_events.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        let transport = Transport::new(identity, peer_events);
        for (other_position, &other) in ids.iter().enumerate() {
            transport.set_peer(other, vec![format!("http://{}", addrs[other_position])]);
        }
        let raft = Raft::bootstrap(raft_config(id, 20, 200, id), &ids).expect("bootstrap");
        let recorder = Recorder::default();
        let persist_delay_ms = Arc::new(AtomicU64::new(0));
        let node = Node::start(
            raft,
            MemoryLog {
                entries: Vec::new(),
                persist_delay_ms: persist_delay_ms.clone(),
            },
            recorder.clone(),
            transport,
            node_inbox,
            NodeOptions {
                tick_interval: Duration::from_millis(20),
                request_timeout: Duration::from_secs(5),
                snapshot_count: 1000,
                snapshot_catchup_entries: 100,
            },
        );
        members.push(TestMember {
            node,
            recorder,
            persist_delay_ms,
        });
    }
    members
}

/// Waits until member 1 knows a leader, and the leader knows it leads.
async fn wait_for_leader(members: &[TestMember]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = members[0]
        .node
        .handle
        .wait_status(deadline, |status| status.leader != 0)
        .await
        .expect("a leader within 10 s");
    let position = (status.leader - 1) as usize;
    members[position]
        .node
        .handle
        .wait_status(deadline, |status| status.role_is_leader)
        .await
        .expect("the leader knows it leads");
    position
}

fn handle(members: &[TestMember], position: usize) -> NodeHandle {
    members[position].node.handle.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_commit_on_every_member_and_followers_forward() {
    let members = start_cluster().await;
    let leader = wait_for_leader(&members).await;
    let leader_handle = handle(&members, leader);

    let mut proposals = Vec::new();
    for n in 0..50 {
        let handle = leader_handle.clone();
        proposals.push(tokio::spawn(async move {
            handle
                .propose(format!("value-{n}").as_bytes(), Duration::from_secs(5))
                .await
        }));
    }
    for proposal in proposals {
        let result = proposal.await.expect("task");
        assert!(result.is_ok(), "{result:?}");
    }

    // A follower forwards the write to the leader and answers when it
    // applies the entry itself: the result is its own state machine's.
    let follower = (leader + 1) % 3;
    let follower_handle = handle(&members, follower);
    let at_follower = follower_handle
        .propose(b"at a follower", Duration::from_secs(5))
        .await
        .expect("a follower forwards writes to the leader");
    let index = answered_index(&at_follower);
    assert!(
        index > 50,
        "the forwarded write comes after the 50 others: {index}"
    );
    // The follower answers from its own apply, which may run ahead of the
    // leader's apply thread.
    leader_handle
        .wait_applied(index, std::time::Instant::now() + Duration::from_secs(5))
        .await
        .expect("the leader applies the forwarded write");
    let leader_log = members[leader]
        .recorder
        .applied
        .lock()
        .expect("lock")
        .clone();
    assert_eq!(
        leader_log.last().map(|b| &b[..]),
        Some(&b"at a follower"[..])
    );

    // A linearizable read at the follower sees every committed write.
    follower_handle
        .linearizable_read_barrier(Duration::from_secs(5))
        .await
        .expect("read barrier at a follower");
    assert_eq!(
        members[follower]
            .recorder
            .applied
            .lock()
            .expect("lock")
            .len(),
        51
    );

    for member in &members {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        member
            .node
            .handle
            .wait_applied(leader_handle.status().commit_index, deadline)
            .await
            .expect("every member applies");
    }
    let reference = members[leader]
        .recorder
        .applied
        .lock()
        .expect("lock")
        .clone();
    for member in &members {
        assert_eq!(*member.recorder.applied.lock().expect("lock"), reference);
    }
    for member in members {
        member.node.stop();
    }
}

/// A follower may answer a write as soon as it learns the entry is
/// committed. The leader it learned that from must already say so in its
/// status, even while its own disk is still busy with the same round:
/// reads that trust a member's status depend on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_publishes_a_commit_before_its_followers_learn_it() {
    let members = start_cluster().await;
    let leader = wait_for_leader(&members).await;
    let leader_handle = handle(&members, leader);
    leader_handle
        .propose(b"warm up", Duration::from_secs(5))
        .await
        .expect("a write through the leader");
    // The leader's persist now takes long enough that a follower applies
    // and answers well inside it.
    members[leader].persist_delay_ms.store(60, Ordering::SeqCst);
    let term = leader_handle.status().term;
    let follower_handle = handle(&members, (leader + 1) % 3);
    // A round where leadership moved (a loaded machine can stall a member
    // past the election timeout) proves nothing; it is not counted.
    let mut checked = 0;
    for round in 0..10 {
        let answer = follower_handle
            .propose(format!("round {round}").as_bytes(), Duration::from_secs(10))
            .await
            .expect("a write through a follower");
        let index = answered_index(&answer);
        let status = leader_handle.status();
        if status.term != term || !status.role_is_leader {
            continue;
        }
        assert!(
            status.commit_index >= index,
            "round {round}: a follower answered index {index} while the leader's status \
             still said commit index {}",
            status.commit_index
        );
        checked += 1;
        if checked == 3 {
            break;
        }
    }
    assert!(checked > 0, "leadership moved in every round");
    for member in members {
        member.node.stop();
    }
}

/// Fails every persist after the first `healthy` ones, like a disk whose
/// fsync starts failing.
struct FailingLog {
    healthy: usize,
}

impl LogStorage for FailingLog {
    fn persist(
        &mut self,
        _hard_state: Option<HardState>,
        _entries: &[Entry],
        _snapshot: Option<&SnapshotMetadata>,
    ) -> Result<(), StorageError> {
        if self.healthy == 0 {
            return Err(StorageError(
                "fdatasync: Input/output error (injected)".to_string(),
            ));
        }
        self.healthy -= 1;
        Ok(())
    }

    fn compacted(&mut self, _snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_node_and_nothing_more_is_acknowledged() {
    let identity = LocalIdentity {
        cluster_id: 9,
        member_id: 1,
    };
    let (peer_events, node_inbox) = inbox();
    let transport = Transport::new(identity, peer_events);
    let raft = Raft::bootstrap(raft_config(1, 20, 200, 1), &[1]).expect("bootstrap");
    let node = Node::start(
        raft,
        FailingLog { healthy: 40 },
        Recorder::default(),
        transport,
        node_inbox,
        NodeOptions {
            tick_interval: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            snapshot_count: u64::MAX,
            snapshot_catchup_entries: 100,
        },
    );
    let handle = node.handle.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    handle
        .wait_status(deadline, |status| status.role_is_leader)
        .await
        .expect("a one-member cluster elects itself");
    // Write until the injected failure; every write after it must fail.
    let mut failed = false;
    for n in 0..200 {
        match handle
            .propose(format!("w{n}").as_bytes(), Duration::from_secs(2))
            .await
        {
            Ok(_) => assert!(!failed, "a write was acknowledged after the log failed"),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "the injected sync failure must surface");
    tokio::time::timeout(Duration::from_secs(5), handle.stopped())
        .await
        .expect("the node stops by itself after a failed sync");
    node.stop();
}
