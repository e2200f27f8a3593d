//! A whole Raft cluster in one thread, driven tick by tick from one seed.
//!
//! The cluster plays the driver for every node, following the Ready contract
//! to the letter, and runs the safety checker after every step. A crash
//! drops the node's Raft instance, its state machine and everything it had
//! not yet persisted; a restart rebuilds it from its durable storage.

use std::collections::BTreeMap;

use bytes::Bytes;
use raft::rng::SplitMix64;
use raft::{
    ConfChange, Config, LogPosition, Message, MessageBody, NodeId, Raft, RaftError, Ready, Role,
};

use crate::checker::{SafetyChecker, Violation};
use crate::network::{Network, NetworkFaults, SendOutcome};
use crate::node::{SimNode, StateMachine};

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub voters: usize,
    pub seed: u64,
    pub faults: NetworkFaults,
    pub election_timeout_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_message_bytes: u64,
    pub max_inflight_messages: usize,
    /// Chance, per Ready handled, that the node crashes part-way through it.
    pub crash_in_ready_per_mille: u64,
    #[cfg(debug_assertions)]
    pub faults_switches: raft::FaultSwitches,
}

impl ClusterOptions {
    pub fn new(voters: usize, seed: u64) -> Self {
        ClusterOptions {
            voters,
            seed,
            faults: NetworkFaults::RELIABLE,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_message_bytes: 64 * 1024,
            max_inflight_messages: 64,
            crash_in_ready_per_mille: 0,
            #[cfg(debug_assertions)]
            faults_switches: raft::FaultSwitches::default(),
        }
    }
}

/// Where in handling a Ready a simulated crash strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashPoint {
    /// After the immediate messages left, before anything was persisted.
    BeforePersist,
    /// After persisting and sending acknowledgements, before applying.
    BeforeApply,
}

pub struct Cluster {
    pub now_tick: u64,
    pub nodes: BTreeMap<NodeId, SimNode>,
    pub network: Network,
    pub options: ClusterOptions,
    rng: SplitMix64,
    checker: SafetyChecker,
    violation: Option<Violation>,
    /// Messages handed to the network, by kind.
    pub message_counts: BTreeMap<&'static str, u64>,
    /// Read requests in flight: id → (node asked, lowest acceptable index).
    pending_reads: BTreeMap<u64, (NodeId, u64)>,
    /// Reads answered: id → read index.
    pub completed_reads: BTreeMap<u64, u64>,
    next_request_id: u64,
    pub next_node_id: NodeId,
    pub crashes: u64,
}

impl Cluster {
    pub fn new(options: ClusterOptions) -> Self {
        let mut rng = SplitMix64::new(options.seed);
        let voters: Vec<NodeId> = (1..=options.voters as NodeId).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let config = node_config(&options, id, rng.next_u64());
            let raft = match Raft::bootstrap(config, &voters) {
                Ok(raft) => raft,
                Err(error) => panic!("bootstrapping node {id}: {error}"),
            };
            nodes.insert(
                id,
                SimNode {
                    raft: Some(raft),
                    storage: Default::default(),
                    state: StateMachine::default(),
                },
            );
        }
        let mut cluster = Cluster {
            now_tick: 0,
            nodes,
            network: Network::new(options.faults),
            rng,
            checker: SafetyChecker::default(),
            violation: None,
            message_counts: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            completed_reads: BTreeMap::new(),
            next_request_id: 1,
            next_node_id: options.voters as NodeId + 1,
            crashes: 0,
            options,
        };
        for id in voters {
            cluster.handle_ready(id);
        }
        cluster
    }

    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// The first safety violation seen, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Panics with the violation, for scenario tests.
    pub fn assert_safe(&self) {
        if let Some(violation) = &self.violation {
            panic!("safety violation (seed {}): {violation}", self.options.seed);
        }
    }

    fn fail(&mut self, result: Result<(), Violation>) {
        if let Err(violation) = result {
            if self.violation.is_none() {
                self.violation = Some(violation);
            }
        }
    }

    // ----- Observing -------------------------------------------------------

    pub fn raft(&self, id: NodeId) -> &Raft {
        match self.nodes.get(&id).and_then(|node| node.raft.as_ref()) {
            Some(raft) => raft,
            None => panic!("node {id} is not running"),
        }
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        match self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) {
            Some(raft) => raft,
            None => panic!("node {id} is not running"),
        }
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(SimNode::is_up)
    }

    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.is_up())
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn all_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, node)| node.raft.as_ref().map(|raft| (id, raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, _)| id)
    }

    /// Running nodes that believe they lead, whatever their term.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| {
                node.raft
                    .as_ref()
                    .is_some_and(|raft| raft.role() == Role::Leader)
            })
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn applied_index(&self, id: NodeId) -> u64 {
        self.nodes
            .get(&id)
            .map_or(0, |node| node.state.applied_index)
    }

    /// Ticks until every listed node has applied `index`.
    pub fn wait_applied(&mut self, nodes: &[NodeId], index: u64, max_ticks: u64) -> bool {
        let nodes = nodes.to_vec();
        self.run_until(max_ticks, |cluster| {
            nodes.iter().all(|&id| cluster.applied_index(id) >= index)
        })
    }

    /// Proposes `count` entries at the leader and waits until every running
    /// node applied them; returns the last position.
    pub fn commit_entries(&mut self, count: usize, max_ticks: u64) -> LogPosition {
        let Some(leader) = self.elect(max_ticks) else {
            panic!("no leader elected\n{}", self.describe());
        };
        let mut last = None;
        for n in 0..count {
            match self.propose(leader, Bytes::from(format!("entry-{}-{n}", self.now_tick))) {
                Ok(position) => last = Some(position),
                Err(error) => panic!("proposal at leader {leader} refused: {error}"),
            }
        }
        let Some(last) = last else {
            panic!("commit_entries needs at least one entry");
        };
        let up = self.up_nodes();
        if !self.wait_applied(&up, last.index, max_ticks) {
            panic!(
                "entries up to {} not applied everywhere\n{}",
                last.index,
                self.describe()
            );
        }
        last
    }

    /// The state digest of node `id` (equal digests: same applied history).
    pub fn state_digest(&self, id: NodeId) -> u64 {
        self.nodes.get(&id).map_or(0, |node| node.state.digest)
    }

    pub fn max_applied_index(&self) -> u64 {
        self.checker.max_applied_index()
    }

    pub fn count_messages(&self, kind: &str) -> u64 {
        self.message_counts.get(kind).copied().unwrap_or(0)
    }

    pub fn total_messages(&self) -> u64 {
        self.message_counts.values().sum()
    }

    pub fn reset_message_counts(&mut self) {
        self.message_counts.clear();
    }

    // ----- Driving ---------------------------------------------------------

    /// Advances time by one tick: delivers due messages, then ticks every
    /// running node.
    pub fn tick(&mut self) {
        self.now_tick += 1;
        self.deliver_due();
        for id in self.up_nodes() {
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.tick();
            }
            self.handle_ready(id);
        }
    }

    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Ticks until `condition` holds; returns whether it did within
    /// `max_ticks`.
    pub fn run_until(
        &mut self,
        max_ticks: u64,
        mut condition: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        for _ in 0..max_ticks {
            if condition(self) {
                return true;
            }
            self.tick();
        }
        condition(self)
    }

    /// Runs until some node leads; returns it.
    pub fn elect(&mut self, max_ticks: u64) -> Option<NodeId> {
        self.run_until(max_ticks, |cluster| cluster.leader().is_some());
        self.leader()
    }

    fn deliver_due(&mut self) {
        for message in self.network.take_due(self.now_tick) {
            self.deliver(message);
        }
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        let Some(raft) = self.nodes.get_mut(&to).and_then(|node| node.raft.as_mut()) else {
            if is_snapshot {
                self.report_snapshot(from, to, false);
            }
            return;
        };
        raft.step(message);
        self.handle_ready(to);
        if is_snapshot {
            self.report_snapshot(from, to, true);
        }
    }

    fn report_snapshot(&mut self, leader: NodeId, target: NodeId, delivered: bool) {
        if let Some(raft) = self
            .nodes
            .get_mut(&leader)
            .and_then(|node| node.raft.as_mut())
        {
            raft.report_snapshot(target, delivered);
            self.handle_ready(leader);
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for message in messages {
            *self
                .message_counts
                .entry(message.body.kind_name())
                .or_insert(0) += 1;
            let (from, to) = (message.from, message.to);
            let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            if self.network.send(message, self.now_tick, &mut self.rng) == SendOutcome::Dropped
                && is_snapshot
            {
                // A snapshot goes over its own stream; the transport notices
                // when that fails.
                if let Some(raft) = self
                    .nodes
                    .get_mut(&from)
                    .and_then(|node| node.raft.as_mut())
                {
                    raft.report_snapshot(to, false);
                }
            }
        }
    }

    /// Handles every Ready the node has, as a real driver would.
    pub fn handle_ready(&mut self, id: NodeId) {
        loop {
            let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            let ready = raft.ready();
            let crash = self.pick_crash_point();
            self.handle_one_ready(id, ready, crash);
        }
    }

    fn pick_crash_point(&mut self) -> Option<CrashPoint> {
        if self.options.crash_in_ready_per_mille == 0
            || self.rng.range(0, 1000) >= self.options.crash_in_ready_per_mille
        {
            return None;
        }
        Some(if self.rng.range(0, 2) == 0 {
            CrashPoint::BeforePersist
        } else {
            CrashPoint::BeforeApply
        })
    }

    fn handle_one_ready(&mut self, id: NodeId, mut ready: Ready, crash: Option<CrashPoint>) {
        let messages = std::mem::take(&mut ready.messages);
        self.send_all(messages);
        if crash == Some(CrashPoint::BeforePersist) {
            self.crash(id);
            return;
        }

        // Persist snapshot, entries and hard state (one "sync").
        let mut persist_result = Ok(());
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(snapshot) = &ready.snapshot {
                node.storage.install_snapshot(snapshot.clone());
            }
            if !ready.entries.is_empty() {
                node.storage.append(&ready.entries);
                for entry in &ready.entries {
                    let predecessor_term = node.storage.term(entry.index - 1).unwrap_or(0);
                    let result = self.checker.observe_persisted(id, entry, predecessor_term);
                    if result.is_err() {
                        persist_result = result;
                        break;
                    }
                }
            }
            if let Some(hard_state) = ready.hard_state {
                node.storage.hard_state = hard_state;
            }
        }
        self.fail(persist_result);

        let persisted_messages = std::mem::take(&mut ready.persisted_messages);
        self.send_all(persisted_messages);
        if crash == Some(CrashPoint::BeforeApply) {
            self.crash(id);
            return;
        }

        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot_into_state_machine(id, &snapshot.data, snapshot.metadata.index);
        }
        for entry in &ready.committed_entries {
            self.apply(id, entry);
        }
        for read in &ready.read_states {
            self.complete_read(id, read.request_id, read.index);
        }
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|node| node.raft.as_mut()) {
            raft.advance(ready);
        }
        self.check_node(id);
    }

    fn install_snapshot_into_state_machine(&mut self, id: NodeId, data: &[u8], index: u64) {
        let Some(state) = StateMachine::decode(data) else {
            self.fail(Err(Violation(format!(
                "node {id} received an undecodable snapshot"
            ))));
            return;
        };
        if state.applied_index != index {
            self.fail(Err(Violation(format!(
                "node {id}: snapshot metadata index {index} but data at {}",
                state.applied_index
            ))));
        }
        if let Some(expected) = self.checker.digest_at(index) {
            if expected != state.digest {
                self.fail(Err(Violation(format!(
                    "State Machine Safety: node {id} installed a snapshot at {index} whose state differs \
                     from what was applied there"
                ))));
            }
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.state = state;
        }
    }

    fn apply(&mut self, id: NodeId, entry: &raft::Entry) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if entry.index != node.state.applied_index + 1 {
            let applied = node.state.applied_index;
            self.fail(Err(Violation(format!(
                "node {id} applied index {} right after {applied}: entries skipped or reordered",
                entry.index
            ))));
            return;
        }
        node.state.apply(entry);
        let digest = node.state.digest;
        let node_term = node.raft.as_ref().map_or(0, Raft::term);
        let result = self.checker.observe_applied(id, node_term, entry, digest);
        self.fail(result);
        // Every live leader of a later term must hold what was just applied.
        let checks: Vec<Result<(), Violation>> = self
            .nodes
            .iter()
            .filter_map(|(&leader, node)| node.raft.as_ref().map(|raft| (leader, raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .map(|(leader, raft)| {
                self.checker.check_leader_has(
                    leader,
                    raft.term(),
                    raft.first_index(),
                    entry.index,
                    raft.log_term(entry.index),
                )
            })
            .collect();
        for check in checks {
            self.fail(check);
        }
    }

    fn complete_read(&mut self, id: NodeId, request_id: u64, index: u64) {
        let Some((asked, lowest)) = self.pending_reads.remove(&request_id) else {
            return;
        };
        if asked != id {
            self.fail(Err(Violation(format!(
                "read {request_id} asked at node {asked} was answered at node {id}"
            ))));
        }
        if index < lowest {
            self.fail(Err(Violation(format!(
                "Linearizability: read {request_id} at node {id} got index {index}, but index {lowest} \
                 was applied before it was asked"
            ))));
        }
        self.completed_reads.insert(request_id, index);
    }

    /// Per-step checks of one node's exposed state.
    fn check_node(&mut self, id: NodeId) {
        let Some(raft) = self.nodes.get(&id).and_then(|node| node.raft.as_ref()) else {
            return;
        };
        if raft.role() != Role::Leader {
            return;
        }
        let term = raft.term();
        let first_index = raft.first_index();
        let mut result = self.checker.observe_leader(id, term);
        if result.is_ok() {
            result = self
                .checker
                .check_leader_log(id, term, first_index, |index| raft.log_term(index));
        }
        self.fail(result);
    }

    // ----- Client actions --------------------------------------------------

    pub fn propose(&mut self, id: NodeId, data: Bytes) -> Result<LogPosition, RaftError> {
        let result = self.raft_mut(id).propose(data);
        self.handle_ready(id);
        result
    }

    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        change: ConfChange,
    ) -> Result<LogPosition, RaftError> {
        if let raft::ConfChangeKind::AddLearner | raft::ConfChangeKind::AddVoter = change.change {
            self.ensure_node(change.node_id);
        }
        let result = self.raft_mut(id).propose_conf_change(change);
        self.handle_ready(id);
        result
    }

    /// Asks node `id` for a linearizable read; returns the request id.
    pub fn read_index(&mut self, id: NodeId) -> Result<u64, RaftError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let lowest = self.checker.max_applied_index();
        self.raft_mut(id).read_index(request_id)?;
        self.pending_reads.insert(request_id, (id, lowest));
        self.handle_ready(id);
        Ok(request_id)
    }

    pub fn transfer_leadership(&mut self, leader: NodeId, target: NodeId) -> Result<(), RaftError> {
        let result = self.raft_mut(leader).transfer_leadership(target);
        self.handle_ready(leader);
        result
    }

    /// Snapshots node `id`'s state machine at its applied index, keeps
    /// `keep_entries` entries before it for lagging followers, and compacts.
    pub fn compact(&mut self, id: NodeId, keep_entries: u64) -> Result<(), RaftError> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let index = node.state.applied_index;
        if index <= raft.first_index() {
            return Ok(());
        }
        let snapshot = raft.create_snapshot(index, node.state.encode())?;
        let compact_to = index
            .saturating_sub(keep_entries)
            .max(raft.first_index() - 1);
        raft.compact_log(compact_to)?;
        node.storage.save_local_snapshot(snapshot, compact_to);
        Ok(())
    }

    // ----- Faults ----------------------------------------------------------

    /// Kills node `id`: everything not yet persisted is lost.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if node.raft.take().is_some() {
                self.crashes += 1;
                tracing::info!(tick = self.now_tick, id, "sim: crash");
            }
            node.state = StateMachine::default();
        }
        // Reads asked at the crashed node will never be answered.
        self.pending_reads.retain(|_, (asked, _)| *asked != id);
    }

    /// Restarts node `id` from its durable storage.
    pub fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let options = self.options.clone();
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.raft.is_some() {
            return;
        }
        let initial = node.storage.initial_state();
        tracing::info!(tick = self.now_tick, id, hard_state = ?initial.hard_state, last = node.storage.last_index(), "sim: restart");
        node.state = match &initial.snapshot {
            Some(snapshot) => match StateMachine::decode(&snapshot.data) {
                Some(state) => state,
                None => panic!("node {id}: durable snapshot undecodable"),
            },
            None => StateMachine::default(),
        };
        // A founding member that crashed before its bootstrap was durable
        // has nothing on disk and bootstraps again, exactly as the server
        // does with an empty data dir. Starting it empty instead would make
        // it replay the membership entries one at a time and, for a moment,
        // believe itself the only voter.
        let never_persisted = initial.hard_state == raft::HardState::default()
            && initial.entries.is_empty()
            && initial.snapshot.is_none();
        let founding = id <= options.voters as NodeId;
        let restarted = if never_persisted && founding {
            let voters: Vec<NodeId> = (1..=options.voters as NodeId).collect();
            Raft::bootstrap(node_config(&options, id, seed), &voters)
        } else {
            Raft::new(node_config(&options, id, seed), initial)
        };
        match restarted {
            Ok(raft) => node.raft = Some(raft),
            Err(error) => panic!("restarting node {id}: {error}"),
        }
        self.handle_ready(id);
    }

    /// Creates a fresh, empty node `id` if it does not exist (joining).
    pub fn ensure_node(&mut self, id: NodeId) {
        if self.nodes.contains_key(&id) {
            return;
        }
        let seed = self.rng.next_u64();
        let raft = match Raft::new(node_config(&self.options, id, seed), Default::default()) {
            Ok(raft) => raft,
            Err(error) => panic!("creating node {id}: {error}"),
        };
        self.nodes.insert(
            id,
            SimNode {
                raft: Some(raft),
                storage: Default::default(),
                state: StateMachine::default(),
            },
        );
        self.next_node_id = self.next_node_id.max(id + 1);
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        let others = self.all_ids();
        self.network.isolate(id, &others);
    }

    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.network.partition(side_a, side_b);
    }

    pub fn heal(&mut self) {
        self.network.heal();
    }

    /// One line per node, for failure reports.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (&id, node) in &self.nodes {
            match &node.raft {
                None => out.push_str(&format!("  node {id}: down\n")),
                Some(raft) => {
                    let progress: Vec<String> = raft
                        .conf_state()
                        .voters
                        .iter()
                        .chain(raft.conf_state().learners.iter())
                        .filter_map(|&member| {
                            raft.progress(member).map(|p| {
                                format!(
                                    "{member}:{:?} m{} n{} paused={}",
                                    p.state,
                                    p.match_index,
                                    p.next_index,
                                    p.is_paused()
                                )
                            })
                        })
                        .collect();
                    out.push_str(&format!(
                        "  node {id}: {:?} term {} leader {} vote {} first {} last {} persisted {} commit {} applied {} \
                         voters {:?} learners {:?} progress [{}]\n",
                        raft.role(),
                        raft.term(),
                        raft.leader(),
                        raft.vote(),
                        raft.first_index(),
                        raft.last_index(),
                        raft.persisted_index(),
                        raft.commit_index(),
                        raft.applied_index(),
                        raft.conf_state().voters,
                        raft.conf_state().learners,
                        progress.join(", ")
                    ))
                }
            }
        }
        out
    }

    // ----- Liveness --------------------------------------------------------

    /// After the network healed: a leader is elected and a new proposal
    /// commits within `max_ticks`. Returns the ticks it took.
    pub fn check_liveness(&mut self, max_ticks: u64) -> Result<u64, Violation> {
        let start = self.now_tick;
        let mut proposed: Option<(NodeId, LogPosition)> = None;
        while self.now_tick - start <= max_ticks {
            if let Some((leader, position)) = proposed {
                let still_leading = self.is_up(leader) && self.raft(leader).role() == Role::Leader;
                if still_leading && self.raft(leader).commit_index() >= position.index {
                    if self.raft(leader).log_term(position.index) == Some(position.term) {
                        return Ok(self.now_tick - start);
                    }
                    proposed = None;
                } else if !still_leading {
                    proposed = None;
                }
            }
            if (self.now_tick - start).is_multiple_of(25) {
                tracing::debug!("liveness t+{}:\n{}", self.now_tick - start, self.describe());
            }
            if proposed.is_none() {
                if let Some(leader) = self.leader() {
                    let data = Bytes::from(format!("liveness-{}", self.now_tick));
                    if let Ok(position) = self.propose(leader, data) {
                        proposed = Some((leader, position));
                    }
                }
            }
            self.tick();
        }
        Err(Violation(format!(
            "Liveness: no proposal committed within {max_ticks} ticks after the network healed \
             (leader: {:?})\n{}",
            self.leader(),
            self.describe()
        )))
    }
}

fn node_config(options: &ClusterOptions, id: NodeId, seed: u64) -> Config {
    let mut config = Config::new(id);
    config.election_timeout_ticks = options.election_timeout_ticks;
    config.heartbeat_interval_ticks = options.heartbeat_interval_ticks;
    config.pre_vote = options.pre_vote;
    config.check_quorum = options.check_quorum;
    config.max_message_bytes = options.max_message_bytes;
    config.max_inflight_messages = options.max_inflight_messages;
    config.seed = seed;
    #[cfg(debug_assertions)]
    {
        config.faults = options.faults_switches;
    }
    config
}
