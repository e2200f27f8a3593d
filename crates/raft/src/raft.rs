//! The Raft state machine: roles, elections, replication, commitment,
//! reads, leadership transfer and membership.
//!
//! `step` first handles what every role shares (terms, votes), then hands the
//! message to the role's own step function. Only the `become_*` functions
//! change the role.
//!
//! Persistence rules, relied on throughout (see `Ready` for the contract):
//! * A vote response and an append acknowledgement go out only after the
//!   hard state and entries they depend on are durable
//!   (`Ready::persisted_messages`). A vote forgotten in a crash could be
//!   given twice in one term; an acknowledged entry forgotten could let a
//!   leader commit something a majority does not have.
//! * A candidate counts its own vote only once its new term and self-vote
//!   are durable (in `advance`), for the same reason.
//! * A leader's own log counts toward commitment only up to what it has
//!   persisted, so it can replicate entries before writing them itself.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, RejectHint};
use crate::progress::{Inflights, Progress, ProgressState};
use crate::quorum::{self, VoteResult};
use crate::read_index::{ReadIndexQueue, ReadRequest};
use crate::rng::SplitMix64;
use crate::types::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, NodeId, Snapshot,
    SnapshotMetadata, NO_NODE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth reporting to the driver when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: NodeId,
    pub role: Role,
}

/// A linearizable read is safe once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: u64,
}

/// Where a proposal landed in the log. The proposal took effect iff the entry
/// applied at `index` has this `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// Why a request to the local node was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RaftError {
    #[error("not the leader (leader is {leader})")]
    NotLeader { leader: NodeId },
    #[error("no leader is known")]
    NoLeader,
    #[error("a leadership transfer to {target} is in progress")]
    TransferInProgress { target: NodeId },
    #[error("a membership change is still in progress")]
    ConfChangeInProgress,
    #[error("invalid membership change: {0}")]
    InvalidConfChange(&'static str),
    #[error("cannot transfer leadership to {target}: {reason}")]
    InvalidTransferTarget {
        target: NodeId,
        reason: &'static str,
    },
    #[error("snapshot index {index} is outside the applied log [{first}, {applied}]")]
    SnapshotOutOfRange {
        index: u64,
        first: u64,
        applied: u64,
    },
    #[error("log compaction to {index} is beyond the latest snapshot at {snapshot_index}")]
    CompactionBeyondSnapshot { index: u64, snapshot_index: u64 },
    #[error("inconsistent restart state: {0}")]
    InconsistentState(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the node must do now. See the crate documentation for the order in
/// which a driver handles the fields.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and then passed to advance()"]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    /// Persist before sending `persisted_messages`.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader: persist, then install into the state
    /// machine before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Append to durable storage. May start at or below the last index
    /// already stored: the stored suffix from `entries[0].index` on is
    /// replaced.
    pub entries: Vec<Entry>,
    /// May be sent at once, before anything in this Ready is durable.
    pub messages: Vec<Message>,
    /// Send only after `hard_state`, `entries` and `snapshot` are durable.
    pub persisted_messages: Vec<Message>,
    /// Apply in order, after `snapshot` is installed. Every one is in durable
    /// storage once this Ready's entries are.
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// What a node restarts from: its durable storage and its state machine's
/// applied index.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The latest durable snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The state machine's applied index (at least the snapshot index).
    pub applied: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    LeadershipTransfer,
}

/// How long a leader waits for a snapshot acknowledgement before assuming
/// it was lost, in election timeouts.
const SNAPSHOT_ACK_TIMEOUT_ELECTIONS: u64 = 4;

pub struct Raft {
    id: NodeId,
    config: Config,

    term: u64,
    vote: NodeId,
    leader: NodeId,
    role: Role,

    log: RaftLog,
    conf: ConfState,
    /// Membership as of each applied configuration change after the snapshot,
    /// so a snapshot below the applied index records the right membership.
    conf_history: Vec<(u64, ConfState)>,
    /// Membership at the snapshot point.
    snapshot_conf: ConfState,
    /// The latest snapshot, sent to followers whose next entry was compacted.
    snapshot: Option<Snapshot>,

    /// Leader only: one per member, including the leader itself.
    progress: BTreeMap<NodeId, Progress>,
    /// Candidate and pre-candidate only: answers received this campaign.
    votes: BTreeMap<NodeId, bool>,

    election_elapsed_ticks: u64,
    heartbeat_elapsed_ticks: u64,
    randomized_election_timeout_ticks: u64,

    /// Leader only: index of the last configuration change proposed. No new
    /// change is accepted until the state machine has applied past it, which
    /// also means an entry of the leader's own term has committed.
    pending_conf_index: u64,
    lead_transferee: Option<NodeId>,
    reads: ReadIndexQueue,

    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,

    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    /// Debug guard for the Ready contract: one Ready out at a time.
    ready_outstanding: bool,
    rng: SplitMix64,
}

impl Raft {
    /// A member of a brand-new cluster whose voters are `voters`. The initial
    /// membership is written into the log as entries at term 1, so that any
    /// member that later replays the log from the start learns it.
    ///
    /// The first Ready carries these entries; until it is durable the member
    /// has no state. A driver that crashes before then must bootstrap again
    /// (as it would with an empty data dir), never start with `new` and an
    /// empty state: replaying the membership entries one by one, such a
    /// member would briefly believe itself the only voter.
    pub fn bootstrap(config: Config, voters: &[NodeId]) -> Result<Self, RaftError> {
        let mut voters: Vec<NodeId> = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        if voters.is_empty() || voters.contains(&NO_NODE) {
            return Err(RaftError::InvalidConfChange(
                "bootstrap needs at least one voter and no id 0",
            ));
        }
        let mut raft = Raft::new(config, InitialState::default())?;
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(position, &voter)| Entry {
                term: 1,
                index: position as u64 + 1,
                kind: EntryKind::ConfChange,
                data: ConfChange {
                    change: ConfChangeKind::AddVoter,
                    node_id: voter,
                    context: Bytes::new(),
                }
                .encode(),
            })
            .collect();
        raft.log.append(&entries);
        raft.conf = ConfState::with_voters(voters.iter().copied());
        raft.term = 1;
        let last = raft.log.last_index();
        raft.log.commit_to(last);
        Ok(raft)
    }

    /// A node restarting from durable state (or joining with an empty one).
    pub fn new(config: Config, initial: InitialState) -> Result<Self, RaftError> {
        config.validate()?;
        let (offset, offset_term, snapshot_conf) = match &initial.snapshot {
            Some(snapshot) => (
                snapshot.metadata.index,
                snapshot.metadata.term,
                snapshot.metadata.conf_state.clone(),
            ),
            None => (0, 0, ConfState::default()),
        };
        if let Some(first) = initial.entries.first() {
            if first.index != offset + 1 {
                return Err(RaftError::InconsistentState(format!(
                    "first entry index {} does not follow the snapshot index {offset}",
                    first.index
                )));
            }
        }
        if let Some(pair) = initial
            .entries
            .windows(2)
            .find(|pair| pair[1].index != pair[0].index + 1)
        {
            return Err(RaftError::InconsistentState(format!(
                "log entries jump from index {} to {}",
                pair[0].index, pair[1].index
            )));
        }
        let last_index = offset + initial.entries.len() as u64;
        let applied = initial.applied.max(offset);
        if applied > last_index {
            return Err(RaftError::InconsistentState(format!(
                "state machine applied index {applied} is beyond the last log index {last_index}"
            )));
        }
        // Whatever the state machine applied was committed.
        let committed = initial.hard_state.commit.max(applied);
        let mut log = RaftLog::restore(offset, offset_term, initial.entries, committed);
        log.set_applied(applied);

        let seed = config.seed;
        let mut raft = Raft {
            id: config.id,
            term: initial.hard_state.term,
            vote: initial.hard_state.vote,
            leader: NO_NODE,
            role: Role::Follower,
            log,
            conf: snapshot_conf.clone(),
            conf_history: Vec::new(),
            snapshot_conf,
            snapshot: initial.snapshot,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: config.election_timeout_ticks,
            pending_conf_index: 0,
            lead_transferee: None,
            reads: ReadIndexQueue::default(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            previous_soft_state: SoftState {
                leader: NO_NODE,
                role: Role::Follower,
            },
            previous_hard_state: initial.hard_state,
            ready_outstanding: false,
            rng: SplitMix64::new(seed),
            config,
        };
        // Configuration changes the state machine already applied will not be
        // handed out again; replay them here.
        for index in offset + 1..=applied {
            if let Some(entry) = raft.log.entry(index).cloned() {
                if entry.kind == EntryKind::ConfChange {
                    raft.apply_conf_change_entry(&entry);
                }
            }
        }
        raft.become_follower(raft.term, NO_NODE);
        Ok(raft)
    }

    // ----- Accessors -------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn vote(&self) -> NodeId {
        self.vote
    }

    pub fn commit_index(&self) -> u64 {
        self.log.committed()
    }

    pub fn applied_index(&self) -> u64 {
        self.log.applied()
    }

    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    pub fn persisted_index(&self) -> u64 {
        self.log.persisted()
    }

    pub fn log_term(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }

    pub fn log_entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The leader's view of `id`'s replication, if this node leads.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }

    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.lead_transferee
    }

    pub fn pending_read_count(&self) -> usize {
        self.reads.pending_count()
    }

    fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
    }

    /// Test-only access to the fault switches.
    #[cfg(debug_assertions)]
    pub fn faults_mut(&mut self) -> &mut crate::config::FaultSwitches {
        &mut self.config.faults
    }

    // ----- Role transitions ------------------------------------------------

    fn reset(&mut self, term: u64) {
        if term != self.term {
            debug_assert!(
                term > self.term,
                "term must never decrease ({} -> {term})",
                self.term
            );
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.randomized_election_timeout_ticks = self.rng.range(
            self.config.election_timeout_ticks,
            2 * self.config.election_timeout_ticks,
        );
        self.votes.clear();
        self.progress.clear();
        self.lead_transferee = None;
        self.reads.clear();
    }

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        let was = self.role;
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if was != Role::Follower {
            tracing::info!(id = self.id, term, leader, "became follower");
        }
    }

    fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "a leader cannot become pre-candidate"
        );
        // A pre-candidate changes neither term nor vote: that is the point.
        self.votes.clear();
        self.leader = NO_NODE;
        self.role = Role::PreCandidate;
        tracing::debug!(id = self.id, term = self.term, "became pre-candidate");
    }

    fn become_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "a leader cannot become candidate"
        );
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
        tracing::info!(id = self.id, term = self.term, "became candidate");
    }

    fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "only a candidate can become leader (was {:?})",
            self.role
        );
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        let next = self.log.last_index() + 1;
        for &member in self.conf.voters.iter().chain(self.conf.learners.iter()) {
            let mut progress =
                Progress::new(next, self.new_inflights(), self.conf.is_learner(member));
            progress.recent_active = true;
            self.progress.insert(member, progress);
        }
        if let Some(own) = self.progress.get_mut(&self.id) {
            own.maybe_update(self.log.persisted());
            own.become_replicate();
        }
        // No configuration change until everything before the no-op, and the
        // no-op itself, is applied: that proves an entry of this term
        // committed (the single-server change safety rule).
        self.pending_conf_index = self.log.last_index() + 1;
        self.append_entries(vec![(EntryKind::Normal, Bytes::new())]);
        tracing::info!(id = self.id, term = self.term, "became leader");
    }

    fn new_inflights(&self) -> Inflights {
        Inflights::new(
            self.config.max_inflight_messages,
            self.config.max_inflight_bytes,
        )
    }

    // ----- Sending ---------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn send_after_persist(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.persisted_messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Sends `to` the entries it lacks (or a snapshot). With `allow_empty`
    /// false, nothing is sent when there is nothing new. Returns whether a
    /// message was sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() || (!allow_empty && progress.next_index > last_index) {
            return false;
        }
        let prev_log_index = progress.next_index - 1;
        let prev_log_term = self.log.term(prev_log_index);
        let entries = self
            .log
            .entries_from(progress.next_index, self.config.max_message_bytes);
        let (Some(prev_log_term), Some(entries)) = (prev_log_term, entries) else {
            return self.send_snapshot(to);
        };
        let commit = self.log.committed();
        let Some(progress) = self.progress.get_mut(&to) else {
            return false;
        };
        match progress.state {
            ProgressState::Replicate => {
                if let Some(last) = entries.last() {
                    let bytes = entries.iter().map(Entry::size_bytes).sum();
                    progress.next_index = last.index + 1;
                    progress.inflights.add(last.index, bytes);
                }
            }
            ProgressState::Probe => progress.probe_sent = true,
            ProgressState::Snapshot => unreachable!("paused progress checked above"),
        }
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.clone() else {
            panic!(
                "member {to} needs entries before index {} that were compacted, \
                 but no snapshot was recorded",
                self.log.first_index()
            );
        };
        let Some(progress) = self.progress.get_mut(&to) else {
            return false;
        };
        progress.become_snapshot(snapshot.metadata.index);
        tracing::debug!(
            id = self.id,
            to,
            index = snapshot.metadata.index,
            "sending snapshot"
        );
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    fn broadcast_append(&mut self) {
        let members: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for member in members {
            self.send_append(member, true);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let read_round = self.reads.in_flight_round();
        let committed = self.log.committed();
        let targets: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(&id, _)| id != self.id)
            .map(|(&id, progress)| (id, progress.match_index.min(committed)))
            .collect();
        for (to, commit) in targets {
            self.send(to, MessageBody::Heartbeat { commit, read_round });
        }
    }

    // ----- Time ------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.promotable()
            && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        {
            self.election_elapsed_ticks = 0;
            let kind = if self.config.pre_vote {
                CampaignKind::PreElection
            } else {
                CampaignKind::Election
            };
            self.campaign(kind);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;

        let snapshot_ack_timeout =
            SNAPSHOT_ACK_TIMEOUT_ELECTIONS * self.config.election_timeout_ticks;
        for progress in self.progress.values_mut() {
            if progress.state == ProgressState::Snapshot {
                progress.snapshot_elapsed_ticks += 1;
                if progress.snapshot_elapsed_ticks >= snapshot_ack_timeout {
                    progress.become_probe();
                }
            }
        }

        if self.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                tracing::warn!(
                    id = self.id,
                    term = self.term,
                    "lost contact with a quorum; stepping down"
                );
                self.become_follower(self.term, NO_NODE);
                return;
            }
            if let Some(target) = self.lead_transferee.take() {
                tracing::warn!(
                    id = self.id,
                    target,
                    "leadership transfer timed out; aborted"
                );
            }
        }

        if self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a majority of voters answered since the last check; resets the
    /// marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let mut active = 0;
        for voter in &self.conf.voters {
            if let Some(progress) = self.progress.get_mut(voter) {
                if *voter == id || progress.recent_active {
                    active += 1;
                }
                progress.recent_active = *voter == id;
            }
        }
        active >= quorum::majority(self.conf.voters.len())
    }

    // ----- Elections -------------------------------------------------------

    /// Starts an election now (as if the election timeout had passed).
    pub fn campaign_now(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        let kind = if self.config.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    fn campaign(&mut self, kind: CampaignKind) {
        if !self.promotable() {
            return;
        }
        let pre_vote = kind == CampaignKind::PreElection;
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            // A pre-vote changes nothing durable, so our own counts at once.
            self.votes.insert(self.id, true);
            if self.tally() == VoteResult::Won {
                self.campaign(CampaignKind::Election);
                return;
            }
            self.term + 1
        } else {
            // Our own vote counts in `advance`, once it is durable.
            self.become_candidate();
            self.term
        };
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let voters: Vec<NodeId> = self
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for voter in voters {
            self.send_with_term(
                voter,
                vote_term,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    leadership_transfer: kind == CampaignKind::LeadershipTransfer,
                },
            );
        }
    }

    fn tally(&self) -> VoteResult {
        quorum::tally(&self.conf.voters, |id| self.votes.get(&id).copied())
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match self.tally() {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(CampaignKind::Election);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => {}
        }
    }

    fn handle_vote_request(
        &mut self,
        m: &Message,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
    ) {
        // A node may vote again for the candidate it already voted for (the
        // response may have been lost), for anyone if it has neither voted
        // nor heard from a leader this term, and pre-vote for any future term.
        let can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && m.term > self.term);
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term);
        #[cfg(debug_assertions)]
        let log_ok = log_ok || self.config.faults.vote_ignores_log_up_to_date;
        tracing::debug!(
            id = self.id,
            from = m.from,
            term = m.term,
            pre_vote,
            granted = can_vote && log_ok,
            "vote request"
        );
        if can_vote && log_ok {
            // Answer in the candidate's term so it can count the vote.
            self.send_after_persist(
                m.from,
                m.term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: true,
                },
            );
            if !pre_vote {
                self.election_elapsed_ticks = 0;
                self.vote = m.from;
            }
        } else {
            self.send_after_persist(
                m.from,
                self.term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    // ----- Stepping messages -----------------------------------------------

    /// Feeds a message received from a peer.
    pub fn step(&mut self, m: Message) {
        debug_assert_eq!(m.to, self.id, "message delivered to the wrong node");
        if m.term > self.term {
            if let MessageBody::RequestVote {
                leadership_transfer,
                ..
            } = m.body
            {
                // Leader stickiness: while we hear from a live leader, a vote
                // request comes from a node that was cut off, and obeying it
                // would depose a working leader.
                let in_lease = self.config.check_quorum
                    && self.leader != NO_NODE
                    && self.election_elapsed_ticks < self.config.election_timeout_ticks;
                if in_lease && !leadership_transfer {
                    tracing::debug!(
                        id = self.id,
                        from = m.from,
                        "ignoring vote request inside leader lease"
                    );
                    return;
                }
            }
            match m.body {
                // Pre-votes are for a future term; they change nobody's term.
                MessageBody::RequestVote { pre_vote: true, .. } => {}
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader (one cut off while we moved on) must learn the
                // new term, or with CheckQuorum/PreVote it could keep us from
                // ever electing: tell it.
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    self.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.send_after_persist(
                        m.from,
                        self.term,
                        MessageBody::VoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return;
        }

        if let MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            ..
        } = m.body
        {
            self.handle_vote_request(&m, pre_vote, last_log_index, last_log_term);
            return;
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    fn step_leader(&mut self, m: Message) {
        if !self.progress.contains_key(&m.from) {
            return;
        }
        match m.body {
            MessageBody::AppendResponse { index, reject } => {
                self.handle_append_response(m.from, index, reject)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(m.from, read_round)
            }
            MessageBody::ReadIndex { request_id } => self.handle_read_request(ReadRequest {
                from: m.from,
                request_id,
            }),
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                tracing::error!(
                    id = self.id,
                    from = m.from,
                    term = self.term,
                    "another leader in my term"
                );
            }
            _ => {}
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, m.from);
                self.step_follower(m);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                // A granted pre-vote carries the term we would campaign in;
                // one for another term is left over from an earlier campaign.
                let stale_pre_vote = pre_vote && granted && m.term != self.term + 1;
                if pre_vote == (self.role == Role::PreCandidate) && !stale_pre_vote {
                    self.record_vote(m.from, granted);
                }
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => {
                self.election_elapsed_ticks = 0;
                self.leader = m.from;
                self.handle_append_entries(m.from, prev_log_index, prev_log_term, commit, &entries);
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed_ticks = 0;
                self.leader = m.from;
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed_ticks = 0;
                self.leader = m.from;
                self.handle_install_snapshot(m.from, snapshot);
            }
            MessageBody::TimeoutNow => {
                tracing::info!(id = self.id, from = m.from, "leader asked me to campaign");
                self.campaign(CampaignKind::LeadershipTransfer);
            }
            MessageBody::ReadIndexResponse { request_id, index } => {
                self.read_states.push(ReadState { request_id, index });
            }
            _ => {}
        }
    }

    fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        commit: u64,
        entries: &[Entry],
    ) {
        let term = self.term;
        if prev_log_index < self.log.committed() {
            // Everything up to our commit index matches any leader's log.
            let index = self.log.committed();
            self.send_after_persist(
                leader,
                term,
                MessageBody::AppendResponse {
                    index,
                    reject: None,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, commit, entries)
        {
            Some(last_new) => {
                self.send_after_persist(
                    leader,
                    term,
                    MessageBody::AppendResponse {
                        index: last_new,
                        reject: None,
                    },
                );
            }
            None => {
                let hint_index = self.log.find_conflict_by_term(
                    prev_log_index.min(self.log.last_index()),
                    prev_log_term,
                );
                let hint_term = self.log.term(hint_index).unwrap_or(0);
                self.send_after_persist(
                    leader,
                    term,
                    MessageBody::AppendResponse {
                        index: prev_log_index,
                        reject: Some(RejectHint {
                            index: hint_index,
                            term: hint_term,
                        }),
                    },
                );
            }
        }
    }

    fn handle_install_snapshot(&mut self, leader: NodeId, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        let term = snapshot.metadata.term;
        let acknowledged = if index <= self.log.committed() {
            self.log.committed()
        } else if self.log.match_term(index, term) {
            // We already have the snapshot's last entry: just learn it is
            // committed and keep the entries after it.
            self.log.commit_to(index);
            index
        } else {
            tracing::info!(id = self.id, index, term, "restoring snapshot from leader");
            self.conf = snapshot.metadata.conf_state.clone();
            self.snapshot_conf = self.conf.clone();
            self.conf_history.clear();
            self.log.restore_snapshot(snapshot.clone());
            self.snapshot = Some(snapshot);
            index
        };
        self.send_after_persist(
            leader,
            self.term,
            MessageBody::AppendResponse {
                index: acknowledged,
                reject: None,
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, index: u64, reject: Option<RejectHint>) {
        let next_probe = reject.map(|hint| {
            if hint.term > 0 {
                self.log.find_conflict_by_term(hint.index, hint.term)
            } else {
                hint.index
            }
        });
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if let Some(next_probe) = next_probe {
            if progress.maybe_decrease_to(index, next_probe) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from, true);
            }
            return;
        }

        let was_paused = progress.is_paused();
        let updated = progress.maybe_update(index);
        // A probe answered with the match we already knew still ends probing.
        let probe_confirmed =
            progress.state == ProgressState::Probe && progress.match_index == index;
        if !updated && !probe_confirmed {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot => {
                if progress.match_index >= progress.pending_snapshot {
                    progress.become_probe();
                }
            }
            ProgressState::Replicate => progress.inflights.free_up_to(index),
        }
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.send_append(from, true);
        }
        while self.send_append(from, false) {}

        if self.lead_transferee == Some(from)
            && self.progress.get(&from).map(|p| p.match_index) == Some(self.log.last_index())
        {
            tracing::info!(
                id = self.id,
                to = from,
                "transfer target caught up; sending TimeoutNow"
            );
            self.send(from, MessageBody::TimeoutNow);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        match progress.state {
            // The follower is reachable again: let the next probe go.
            ProgressState::Probe => progress.probe_sent = false,
            ProgressState::Replicate if progress.inflights.is_full() => {
                progress.inflights.free_first_one()
            }
            _ => {}
        }
        if progress.match_index < last_index {
            self.send_append(from, true);
        }
        if read_round != 0 && self.reads.ack(read_round, from) {
            self.maybe_release_reads();
        }
    }

    /// Advances the commit index to what a majority of voters has durable,
    /// if that entry is of the current term (Raft §5.4.2). Returns whether it
    /// moved.
    fn maybe_commit(&mut self) -> bool {
        let mut acknowledged: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|voter| self.progress.get(voter).map_or(0, |p| p.match_index))
            .collect();
        let index = quorum::committed_index(&mut acknowledged);
        if index == u64::MAX || index <= self.log.committed() {
            return false;
        }
        let of_current_term = self.log.term(index) == Some(self.term);
        #[cfg(debug_assertions)]
        let of_current_term =
            of_current_term || self.config.faults.commit_old_term_by_counting_replicas;
        if !of_current_term {
            return false;
        }
        self.log.commit_to(index);
        self.maybe_start_read_round();
        true
    }

    // ----- Proposals -------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(if self.leader == NO_NODE {
                RaftError::NoLeader
            } else {
                RaftError::NotLeader {
                    leader: self.leader,
                }
            });
        }
        if let Some(target) = self.lead_transferee {
            return Err(RaftError::TransferInProgress { target });
        }
        Ok(())
    }

    fn append_entries(&mut self, payloads: Vec<(EntryKind, Bytes)>) -> LogPosition {
        let mut index = self.log.last_index();
        let term = self.term;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .map(|(kind, data)| {
                index += 1;
                Entry {
                    term,
                    index,
                    kind,
                    data,
                }
            })
            .collect();
        debug_assert!(
            entries
                .first()
                .is_none_or(|e| e.index == self.log.last_index() + 1),
            "a leader never truncates its own log"
        );
        self.log.append(&entries);
        self.broadcast_append();
        LogPosition { index, term }
    }

    /// Appends `data` to the log if this node leads.
    pub fn propose(&mut self, data: Bytes) -> Result<LogPosition, RaftError> {
        self.check_can_propose()?;
        Ok(self.append_entries(vec![(EntryKind::Normal, data)]))
    }

    /// Appends several entries at once, sending one append per follower.
    /// Returns the position of the last one; they occupy consecutive indexes.
    pub fn propose_batch(&mut self, batch: Vec<Bytes>) -> Result<LogPosition, RaftError> {
        self.check_can_propose()?;
        if batch.is_empty() {
            return Ok(LogPosition {
                index: self.log.last_index(),
                term: self.term,
            });
        }
        Ok(self.append_entries(
            batch
                .into_iter()
                .map(|data| (EntryKind::Normal, data))
                .collect(),
        ))
    }

    /// Proposes a membership change. One at a time: refused while an earlier
    /// change is not yet applied.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogPosition, RaftError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied() {
            return Err(RaftError::ConfChangeInProgress);
        }
        match change.change {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner if change.node_id == NO_NODE => {
                return Err(RaftError::InvalidConfChange("node id 0 is reserved"));
            }
            ConfChangeKind::AddLearner if self.conf.is_voter(change.node_id) => {
                return Err(RaftError::InvalidConfChange(
                    "demoting a voter is not supported",
                ));
            }
            ConfChangeKind::Remove if !self.conf.contains(change.node_id) => {
                return Err(RaftError::InvalidConfChange("no such member"));
            }
            ConfChangeKind::Remove if self.conf.voters == [change.node_id] => {
                return Err(RaftError::InvalidConfChange("cannot remove the last voter"));
            }
            _ => {}
        }
        let position = self.append_entries(vec![(EntryKind::ConfChange, change.encode())]);
        self.pending_conf_index = position.index;
        Ok(position)
    }

    fn apply_conf_change_entry(&mut self, entry: &Entry) {
        match ConfChange::decode(&entry.data) {
            Ok(change) => self.apply_conf_change(entry.index, &change),
            // The leader validated it before appending; a bad entry in a
            // committed log is corruption we cannot apply around.
            Err(error) => panic!(
                "committed conf change at index {} is undecodable: {error}",
                entry.index
            ),
        }
    }

    fn apply_conf_change(&mut self, index: u64, change: &ConfChange) {
        let id = change.node_id;
        match change.change {
            ConfChangeKind::AddVoter => {
                self.conf.learners.retain(|&learner| learner != id);
                if !self.conf.voters.contains(&id) {
                    self.conf.voters.push(id);
                    self.conf.voters.sort_unstable();
                }
            }
            ConfChangeKind::AddLearner => {
                if !self.conf.contains(id) {
                    self.conf.learners.push(id);
                    self.conf.learners.sort_unstable();
                }
            }
            ConfChangeKind::Remove => {
                self.conf.voters.retain(|&voter| voter != id);
                self.conf.learners.retain(|&learner| learner != id);
            }
        }
        self.conf_history.push((index, self.conf.clone()));
        tracing::info!(id = self.id, index, ?change.change, node = id, voters = ?self.conf.voters, learners = ?self.conf.learners, "applied membership change");

        match self.role {
            Role::Leader => {
                if !self.conf.is_voter(self.id) {
                    tracing::info!(
                        id = self.id,
                        "removed from the voters while leading; stepping down"
                    );
                    // Hand over at once to a remaining voter that has our
                    // whole log, rather than leave the cluster leaderless
                    // for an election timeout (its members still honour our
                    // lease).
                    let last_index = self.log.last_index();
                    let successor = self.conf.voters.iter().copied().find(|voter| {
                        self.progress
                            .get(voter)
                            .is_some_and(|p| p.match_index == last_index)
                    });
                    if let Some(successor) = successor {
                        self.send(successor, MessageBody::TimeoutNow);
                    }
                    self.become_follower(self.term, NO_NODE);
                    return;
                }
                let next = self.log.last_index() + 1;
                let members: Vec<NodeId> = self
                    .conf
                    .voters
                    .iter()
                    .chain(self.conf.learners.iter())
                    .copied()
                    .collect();
                self.progress.retain(|member, _| members.contains(member));
                for &member in &members {
                    let is_learner = self.conf.is_learner(member);
                    let inflights = self.new_inflights();
                    let progress = self
                        .progress
                        .entry(member)
                        .or_insert_with(|| Progress::new(next, inflights, is_learner));
                    progress.is_learner = is_learner;
                }
                if self
                    .lead_transferee
                    .is_some_and(|target| !self.conf.is_voter(target))
                {
                    self.lead_transferee = None;
                }
                // The voter set changed, so the majority index may have too.
                self.maybe_commit();
                self.broadcast_append();
                self.maybe_release_reads();
            }
            Role::Candidate | Role::PreCandidate => {
                // A campaign under the new voter set is decided by later
                // answers, or by the next election timeout.
                if !self.promotable() {
                    self.become_follower(self.term, NO_NODE);
                }
            }
            Role::Follower => {}
        }
    }

    /// Membership as of `index` (which must be at or after the snapshot).
    fn conf_at(&self, index: u64) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or_else(|| self.snapshot_conf.clone(), |(_, conf)| conf.clone())
    }

    // ----- Reads -----------------------------------------------------------

    /// Asks for the index a linearizable read must wait for. The answer comes
    /// as a `ReadState` with this `request_id` in a later Ready, or never if
    /// leadership is lost (the caller times out and retries).
    pub fn read_index(&mut self, request_id: u64) -> Result<(), RaftError> {
        match self.role {
            Role::Leader => {
                self.handle_read_request(ReadRequest {
                    from: self.id,
                    request_id,
                });
                Ok(())
            }
            _ if self.leader != NO_NODE => {
                self.send(self.leader, MessageBody::ReadIndex { request_id });
                Ok(())
            }
            _ => Err(RaftError::NoLeader),
        }
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed()) == Some(self.term)
    }

    /// Every read waits for a heartbeat round that a quorum answers after the
    /// read arrived. There is deliberately no lease-based shortcut: a lease
    /// is safe only if it starts at the send time of the round a quorum
    /// acknowledged and ends before any follower's election timeout minus a
    /// clock-drift bound (Raft thesis §6.4), an assumption about clocks this
    /// crate does not make.
    fn handle_read_request(&mut self, request: ReadRequest) {
        self.reads.push(request);
        self.maybe_start_read_round();
    }

    /// Starts a confirmation round for waiting reads. Only once an entry of
    /// this term is committed: before that, our commit index may lag what an
    /// earlier leader committed.
    fn maybe_start_read_round(&mut self) {
        if self.role != Role::Leader || !self.committed_in_current_term() {
            return;
        }
        if self
            .reads
            .start_round(self.log.committed(), self.id)
            .is_some()
            && !self.maybe_release_reads()
        {
            self.broadcast_heartbeat();
        }
    }

    /// Answers the in-flight round if a quorum confirmed it; returns whether
    /// it did.
    fn maybe_release_reads(&mut self) -> bool {
        let voters = self.conf.voters.clone();
        let needed = quorum::majority(voters.len());
        let Some((index, requests)) = self.reads.complete_if(|acks| {
            voters.iter().filter(|voter| acks.contains(voter)).count() >= needed
        }) else {
            return false;
        };
        for request in requests {
            self.answer_read(request, index);
        }
        self.maybe_start_read_round();
        true
    }

    fn answer_read(&mut self, request: ReadRequest, index: u64) {
        if request.from == self.id {
            self.read_states.push(ReadState {
                request_id: request.request_id,
                index,
            });
        } else {
            self.send(
                request.from,
                MessageBody::ReadIndexResponse {
                    request_id: request.request_id,
                    index,
                },
            );
        }
    }

    // ----- Leadership transfer ---------------------------------------------

    /// Hands leadership to `target`: once its log is caught up it is told to
    /// campaign at once. Proposals are refused meanwhile; the transfer is
    /// abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Err(RaftError::InvalidTransferTarget {
                target,
                reason: "already the leader",
            });
        }
        if !self.conf.is_voter(target) {
            return Err(RaftError::InvalidTransferTarget {
                target,
                reason: "not a voter",
            });
        }
        if self.lead_transferee == Some(target) {
            return Ok(());
        }
        self.lead_transferee = Some(target);
        self.election_elapsed_ticks = 0;
        tracing::info!(id = self.id, target, "transferring leadership");
        let caught_up =
            self.progress.get(&target).map(|p| p.match_index) == Some(self.log.last_index());
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        Ok(())
    }

    // ----- Snapshots and compaction ----------------------------------------

    /// Records a snapshot of the state machine at `index` (applied, and not
    /// older than the current snapshot) and returns it with its metadata, for
    /// the driver to persist. Followers that need compacted entries get it.
    pub fn create_snapshot(&mut self, index: u64, data: Bytes) -> Result<Snapshot, RaftError> {
        let first = self.log.offset();
        let applied = self.log.applied();
        if index < first || index > applied {
            return Err(RaftError::SnapshotOutOfRange {
                index,
                first,
                applied,
            });
        }
        let Some(term) = self.log.term(index) else {
            return Err(RaftError::SnapshotOutOfRange {
                index,
                first,
                applied,
            });
        };
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index,
                term,
                conf_state: self.conf_at(index),
            },
            data,
        };
        self.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Drops log entries up to `index`, which the latest snapshot must cover.
    pub fn compact_log(&mut self, index: u64) -> Result<(), RaftError> {
        let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.metadata.index);
        if index > snapshot_index {
            return Err(RaftError::CompactionBeyondSnapshot {
                index,
                snapshot_index,
            });
        }
        if index <= self.log.offset() {
            return Ok(());
        }
        let conf = self.conf_at(index);
        self.log.compact_to(index);
        self.conf_history.retain(|(at, _)| *at > index);
        self.snapshot_conf = conf;
        Ok(())
    }

    /// The transport could not reach `id`: stop streaming to it and probe.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(progress) = self.progress.get_mut(&id) {
            if progress.state == ProgressState::Replicate {
                progress.become_probe();
            }
        }
    }

    /// The transport finished (or failed) sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: NodeId, delivered: bool) {
        if let Some(progress) = self.progress.get_mut(&id) {
            if progress.state == ProgressState::Snapshot {
                if !delivered {
                    progress.pending_snapshot = 0;
                }
                progress.become_probe();
                // Wait for the follower's answer (or a heartbeat) first.
                progress.probe_sent = true;
            }
        }
    }

    // ----- The Ready contract ----------------------------------------------

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// Whether `ready()` would return anything.
    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.previous_soft_state
            || self.hard_state() != self.previous_hard_state
            || self.log.has_unstable()
            || self.log.has_committed_to_apply(self.log.last_index())
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
    }

    /// Hands out everything the driver must do now.
    ///
    /// # Panics
    /// If the previous Ready has not been passed to `advance`.
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_outstanding,
            "ready() called again before advance() of the previous Ready"
        );
        self.ready_outstanding = true;

        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.take_unstable();
        // Entries handed out in this Ready are durable before the driver
        // applies, and earlier ones were confirmed by advance().
        let committed_entries = self.log.take_committed(self.log.last_index());
        for entry in &committed_entries {
            if entry.kind == EntryKind::ConfChange {
                self.apply_conf_change_entry(entry);
            }
        }

        let soft = self.soft_state();
        let soft_state = (soft != self.previous_soft_state).then_some(soft);
        self.previous_soft_state = soft;
        let hard = self.hard_state();
        let hard_state = (hard != self.previous_hard_state).then_some(hard);
        self.previous_hard_state = hard;

        Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Tells Raft the driver has persisted, sent and applied `ready`.
    pub fn advance(&mut self, ready: Ready) {
        assert!(
            self.ready_outstanding,
            "advance() without an outstanding Ready"
        );
        self.ready_outstanding = false;
        if let Some(last) = ready.entries.last() {
            self.log.persisted_to(last.index, last.term);
        }
        if let Some(hard_state) = ready.hard_state {
            // A candidate's own vote counts only once it is durable.
            if self.role == Role::Candidate
                && hard_state.term == self.term
                && hard_state.vote == self.id
            {
                self.record_vote(self.id, true);
            }
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted();
            let updated = self
                .progress
                .get_mut(&self.id)
                .is_some_and(|own| own.maybe_update(persisted));
            if updated && self.maybe_commit() {
                self.broadcast_append();
            }
        }
    }
}
