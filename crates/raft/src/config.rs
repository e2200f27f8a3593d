//! Tuning and identity of one Raft node.

use crate::types::{NodeId, NO_NODE};

/// Test-only switches that deliberately break the algorithm so that the
/// simulator's checkers can be shown to catch the breakage. They exist only
/// in builds with debug assertions, never in release builds.
#[cfg(debug_assertions)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSwitches {
    /// Grant votes without checking that the candidate's log is up to date.
    pub vote_ignores_log_up_to_date: bool,
    /// Commit any entry replicated on a majority, even one from an older term
    /// (the mistake Figure 8 of the Raft paper shows).
    pub commit_old_term_by_counting_replicas: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Base election timeout T; the actual timeout is drawn from [T, 2T).
    pub election_timeout_ticks: u64,
    pub heartbeat_interval_ticks: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Upper bound on the payload of one AppendEntries (at least one entry is
    /// always sent).
    pub max_message_bytes: u64,
    /// In-flight appends per follower in Replicate state, by count.
    pub max_inflight_messages: usize,
    /// In-flight appends per follower in Replicate state, by payload bytes.
    pub max_inflight_bytes: u64,
    /// Seed for the election-timeout generator.
    pub seed: u64,
    #[cfg(debug_assertions)]
    pub faults: FaultSwitches,
}

impl Config {
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_message_bytes: 1024 * 1024,
            max_inflight_messages: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            seed: id,
            #[cfg(debug_assertions)]
            faults: FaultSwitches::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NO_NODE {
            return Err(ConfigError("node id must not be 0 (0 means \"nobody\")"));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(ConfigError("heartbeat interval must be at least one tick"));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(ConfigError(
                "election timeout must be longer than the heartbeat interval",
            ));
        }
        if self.max_inflight_messages == 0 {
            return Err(ConfigError("max_inflight_messages must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid raft config: {0}")]
pub struct ConfigError(pub &'static str);
